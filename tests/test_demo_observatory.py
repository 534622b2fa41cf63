"""The demo observatory and the base reduction: determinism, splitting, numbering, quality flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skyretriever.models import RawPhotometry
from skyretriever.observatories import VirtualDemoObs
from skyretriever.parameters import ParameterError

ROW = {"name": "star", "ra": 10.0, "dec": 5.0, "mag": 14.0}


def test_downloads_are_deterministic_per_name_and_seed():
    obs = VirtualDemoObs(empty_fraction=0)
    first, _ = obs.download_from_observatory(ROW)
    again, _ = obs.download_from_observatory(dict(ROW))
    pd.testing.assert_frame_equal(first, again)
    other, _ = obs.download_from_observatory({**ROW, "name": "other"})
    assert not np.allclose(first["mag"], other["mag"])
    reseeded, _ = VirtualDemoObs(empty_fraction=0, seed=1).download_from_observatory(ROW)
    assert not np.allclose(first["mag"], reseeded["mag"])
    assert len(first) == 2 * 2 * 100
    assert abs(np.median(first.loc[first["filter"] == "r", "mag"]) - 14.0) < 0.01


def test_empty_fraction_and_flares_follow_their_parameters():
    obs = VirtualDemoObs(empty_fraction=0.3, flare_fraction=0.5)
    results = [obs.download_from_observatory({**ROW, "name": f"s{i}"}) for i in range(400)]
    empty = sum(len(frame) == 0 for frame, _ in results)
    flares = [alt["flare"] for frame, alt in results if "flare" in alt]
    assert 0.22 < empty / 400 < 0.38
    assert 0.4 < len(flares) / (400 - empty) < 0.6
    assert all(0.5 <= f["amplitude"] <= 2.5 for f in flares)


def test_reduce_splits_by_filter_and_gap_and_numbers_by_start_time():
    obs = VirtualDemoObs(empty_fraction=0, num_seasons=3)
    raw = obs.download(ROW)
    before = raw.data.copy()
    lightcurves = obs.reduce(raw)
    pd.testing.assert_frame_equal(raw.data, before)                 # raw data untouched
    assert len(lightcurves) == 6
    assert [lc.series_number for lc in lightcurves] == [1, 2, 3, 4, 5, 6]
    assert {lc.series_total for lc in lightcurves} == {6}
    starts = [lc.time_start for lc in lightcurves]
    assert starts == sorted(starts)
    for lc in lightcurves:
        assert lc.data["filter"].nunique() == 1 and lc.filter == lc.data["filter"].iloc[0]
        assert np.all(np.diff(lc.data["mjd"]) >= 0)
        assert np.all(np.diff(lc.data["mjd"]) <= obs.pars.reducer.gap)
        assert lc.num_points == len(lc.data) == 100
        assert lc.key.endswith(f"_reduction_{lc.series_number:02d}_of_06")
    assert sum(len(lc.data) for lc in lightcurves) == len(raw.data)


def test_a_smaller_gap_splits_seasons_further():
    wide = VirtualDemoObs(empty_fraction=0, num_seasons=1, filters=["r"])
    narrow = VirtualDemoObs(empty_fraction=0, num_seasons=1, filters=["r"], reducer={"gap": 2.0})
    raw = wide.download(ROW)
    assert len(wide.reduce(raw)) == 1
    pieces = narrow.reduce(raw)
    assert len(pieces) > 1
    gaps = [b.time_start - a.time_end for a, b in zip(pieces, pieces[1:])]
    assert min(gaps) > 2.0


def test_quality_bitmask_presets_and_integers_set_qflag():
    frame = pd.DataFrame({"mjd": [1.0, 2.0, 3.0], "mag": [15.0, 15.0, 15.0],
                          "mag_err": [0.01] * 3, "filter": ["r"] * 3, "quality": [0, 1, 4]})
    raw = RawPhotometry(data=frame, source_name="q", observatory="demo", ra=1.0, dec=1.0)
    flags = {
        preset: VirtualDemoObs(quality_bitmask=preset).reduce(raw)[0].data["qflag"].tolist()
        for preset in ("none", "default", "hardest", 4)
    }
    assert flags == {"none": [False, False, False], "default": [False, True, False],
                     "hardest": [False, True, True], 4: [False, False, True]}
    with pytest.raises(ParameterError, match="unknown preset 'hrad'; did you mean 'hard'"):
        VirtualDemoObs(quality_bitmask="hrad")


def test_epochs_without_a_time_are_dropped_and_fluxes_derived_from_magnitudes():
    frame = pd.DataFrame({"mjd": [1.0, np.nan, 3.0], "mag": [23.9, 20.0, 21.4],
                          "mag_err": [0.1, 0.1, 0.1], "filter": ["r"] * 3})
    raw = RawPhotometry(data=frame, source_name="n", observatory="demo", ra=1.0, dec=1.0)
    (lc,) = VirtualDemoObs().reduce(raw)
    assert lc.data["mjd"].tolist() == [1.0, 3.0]
    np.testing.assert_allclose(lc.data["flux"], [1.0, 10.0])              # microjansky, AB
    np.testing.assert_allclose(lc.data["flux_err"], [0.1 * np.log(10) / 2.5,
                                                     10 * 0.1 * np.log(10) / 2.5])


def test_an_empty_download_reduces_to_nothing():
    obs = VirtualDemoObs(empty_fraction=1.0)
    raw = obs.download(ROW)
    assert len(raw.data) == 0
    assert obs.reduce(raw) == []
