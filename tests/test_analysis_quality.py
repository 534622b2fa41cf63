"""QualityChecker: every check flags what it should, counts it, and leaves the input alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skyretriever.analysis import QualityChecker
from skyretriever.parameters import ParameterError


def _frame(n: int = 100, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    flux = 1000 + rng.standard_normal(n)
    return pd.DataFrame({
        "mjd": 60000 + np.arange(n) / 10,
        "flux": flux,
        "flux_err": np.ones(n),
        "mag": 23.9 - 2.5 * np.log10(flux),
        "mag_err": np.full(n, 0.001),
        "filter": np.where(np.arange(n) % 2, "g", "r"),
        "quality": np.zeros(n, dtype=np.int32),
        "qflag": np.zeros(n, dtype=bool),
        "ra": 150.0 + 1e-5 * rng.standard_normal(n),
        "dec": 2.0 + 1e-5 * rng.standard_normal(n),
    })


def test_each_check_flags_its_epochs_and_counts_them_once():
    frame = _frame()
    frame.loc[3, "qflag"] = True                      # the reducer's quality mask
    frame.loc[4, "quality"] = 64                      # a bit only the checker's mask has
    frame.loc[5, "flux_err"] = np.nan
    frame.loc[6, "flux"] = -5.0
    frame.loc[7, ["mag", "filter"]] = (10.0, "r")     # saturated in r
    frame.loc[9, ["mag", "filter"]] = (10.0, "g")     # g has no limit
    frame.loc[10, "ra"] += 1e-3                       # 100 sigma off in position
    frame.loc[11, ["qflag", "flux"]] = (True, -1.0)   # two problems, counted once
    before = frame.copy()
    checker = QualityChecker(quality_bitmask=64, saturation_mag={"r": 12.0})
    checked, counts = checker.check(frame)
    flagged = set(np.flatnonzero(checked["qflag"]))
    assert flagged == {3, 4, 5, 6, 7, 10, 11}
    assert counts == {"quality_flags": 3, "non_finite": 1, "negative_flux": 1, "saturation": 1,
                      "position_outliers": 1, "min_points": 0}
    assert sum(counts.values()) == len(flagged)
    pd.testing.assert_frame_equal(frame, before)      # the input is untouched
    assert checked is not frame


def test_checks_can_be_switched_off():
    frame = _frame()
    frame.loc[2, "qflag"] = True
    frame.loc[6, "flux"] = -5.0
    frame.loc[10, "ra"] += 1e-3
    checked, counts = QualityChecker(quality_flags=False, negative_flux=False,
                                     position_sigma=None).check(frame)
    assert not checked["qflag"].any()
    assert set(counts) == {"non_finite", "min_points"}


def test_position_outliers_use_each_axis_and_survive_the_ra_wrap():
    frame = _frame(200)
    frame["ra"] = (359.99999 + 2e-5 * np.random.default_rng(1).standard_normal(200)) % 360
    assert frame["ra"].min() < 1 and frame["ra"].max() > 359   # straddles 0
    frame.loc[50, "dec"] += 5e-4
    checked, counts = QualityChecker().check(frame)
    assert np.flatnonzero(checked["qflag"]).tolist() == [50]
    centroids = pd.DataFrame({"mjd": np.arange(100.0), "flux": np.ones(100),
                              "mom_centr1": 500 + 0.01 * np.random.default_rng(2).standard_normal(100),
                              "mom_centr2": np.full(100, 700.0)})
    centroids.loc[20, "mom_centr1"] += 1.0
    # a constant axis has no scatter to judge by: that pair is skipped, not divided by zero
    _, counts = QualityChecker().check(centroids)
    assert counts["position_outliers"] == 0
    centroids["mom_centr2"] += 0.01 * np.random.default_rng(3).standard_normal(100)
    checked, counts = QualityChecker().check(centroids)
    assert counts["position_outliers"] == 1 and checked.loc[20, "qflag"]


def test_too_few_good_epochs_flags_the_whole_light_curve():
    frame = _frame(8)
    frame.loc[:4, "qflag"] = True
    checked, counts = QualityChecker(min_points=5).check(frame)
    assert checked["qflag"].all() and counts["min_points"] == 3
    checked, counts = QualityChecker(min_points=3).check(frame)
    assert checked["qflag"].sum() == 5 and counts["min_points"] == 0


def test_bad_quality_settings_are_named():
    with pytest.raises(ParameterError, match="position_sigma"):
        QualityChecker(position_sigma=-1)
    with pytest.raises(ParameterError, match="did you mean 'saturation_mag'"):
        QualityChecker(saturation=12.0)
