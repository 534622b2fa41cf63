"""The peak finder: event windows, multi-epoch events, dips, detrending, and false alarms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from skyretriever.analysis import Finder
from skyretriever.analysis.series import median
from skyretriever.analysis.simulator import dip_model, flare_model
from skyretriever.analysis.synthetic import sector_lightcurve, signal_times


def _noise(n: int = 2000, seed: int = 0, sigma: float = 0.01) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"mjd": 60000 + np.arange(n) / 100, "flux": 1 + sigma * rng.standard_normal(n),
                         "qflag": np.zeros(n, dtype=bool)})


def test_a_flare_is_one_event_whose_window_covers_its_decay():
    frame = _noise()
    times = frame["mjd"].to_numpy()
    frame["flux"] *= flare_model(times, times[500], 0.2, 0.005, 0.05)
    before = frame.copy()
    detections, snr = Finder().find(frame)
    pd.testing.assert_frame_equal(frame, before)
    assert len(detections) == 1
    flare = detections[0]
    assert flare["time_peak"] == times[500] and flare["sign"] == 1
    assert flare["snr"] == pytest.approx(20, rel=0.1)              # 0.2 / 0.01
    # the window runs down to S/N 2: on the rise, the epoch before the peak (0.2 e^-2,
    # 2.7 sigma) is in; on the decay, 2 = 20 exp(-t / 0.05) gives t = 0.115 days
    assert flare["time_start"] == times[499]
    assert flare["time_end"] - times[500] == pytest.approx(0.115, abs=0.03)
    assert flare["num_points"] == np.sum((times >= flare["time_start"]) & (times <= flare["time_end"]))
    assert np.nanargmax(snr) == 500


def test_a_long_faint_event_is_found_only_by_averaging_epochs():
    frame = _noise()
    frame.loc[1000:1030, "flux"] += 0.02                # 2 sigma per epoch over 31 epochs
    single = Finder(multi_epoch_sizes=[]).find(frame)[0]
    assert single == []
    detections = Finder().find(frame)[0]
    assert len(detections) == 1
    event = detections[0]
    times = frame["mjd"].to_numpy()
    assert times[995] <= event["time_start"] <= times[1005]
    assert times[1025] <= event["time_end"] <= times[1035]
    assert event["score"] > 5.5


def test_dips_are_reported_only_when_asked():
    frame = _noise()
    times = frame["mjd"].to_numpy()
    frame["flux"] *= dip_model(times, times[700], 0.1, 0.05)
    assert Finder().find(frame)[0] == []
    detections = Finder(find_dips=True).find(frame)[0]
    assert [d["sign"] for d in detections] == [-1]
    assert detections[0]["time_start"] < times[700] < detections[0]["time_end"]


def test_flagged_epochs_are_not_searched_and_short_light_curves_are_skipped():
    frame = _noise()
    frame.loc[300, "flux"] = 5.0
    frame.loc[300, "qflag"] = True
    detections, snr = Finder().find(frame)
    assert detections == [] and np.isnan(snr[300])
    short = _noise(8)
    short.loc[3, "flux"] = 5.0
    detections, snr = Finder().find(short)                       # fewer than min_points=10
    assert detections == [] and np.isnan(snr).all()


def test_detrending_removes_slow_variability_before_the_search():
    frame = _noise(3000, sigma=0.002)
    times = frame["mjd"].to_numpy()
    frame["flux"] *= 1 + 0.05 * np.sin(2 * np.pi * (times - times[0]) / 10)  # 5%, 10 days
    frame["flux"] *= flare_model(times, times[1500], 0.02, 0.002, 0.02)
    plain = Finder().find(frame)[0]
    detrended = Finder(detrend_window=0.5).find(frame)[0]
    assert len(detrended) == 1 and detrended[0]["time_peak"] == times[1500]
    assert all(d["time_peak"] != times[1500] for d in plain)     # the 2% flare drowns


@pytest.mark.parametrize("noise", ["white", "red"])
def test_acceptance_pure_noise_gives_at_most_1_percent_false_events(noise):
    """100 TESS-like sectors (18,720 epochs at 2-min cadence) of noise, default parameters.

    Red: 500 ppm decorrelating over 1.2 hours, on 1000 ppm of white noise;
    the multi-epoch averages are judged against their own scatter, so they
    do not turn it into events. The peak finder is fast, so this costs ~3 s.
    """
    red = {"red_ppm": 500.0, "red_timescale": 0.05} if noise == "red" else {}
    finder = Finder()
    false = sum(bool(finder.find(sector_lightcurve(np.random.default_rng(2000 + i), **red))[0])
                for i in range(100))
    assert false <= 1


def test_single_epoch_window_ends_at_gaps_in_the_ordering_not_at_flagged_epochs():
    times = signal_times(days=1.0, cadence_minutes=10.0, gaps=())
    frame = pd.DataFrame({"mjd": times[::-1].copy(), "flux": 1 + 0.001 * np.sin(np.arange(144)),
                          "qflag": np.zeros(144, bool)})           # reversed order on purpose
    frame.loc[70, "flux"] = 1.05
    detections = Finder().find(frame)[0]
    assert len(detections) == 1 and detections[0]["time_peak"] == frame.loc[70, "mjd"]


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(np.float64, st.integers(0, 60),
                  elements=st.floats(allow_nan=True, allow_infinity=True, width=64)))
def test_the_median_of_the_checks_and_finders_is_numpys_to_the_bit(values):
    """The checks, finders and properties take their medians from series.median, made for
    speed: it must give np.median's number exactly (NaN where numpy gives NaN)."""
    with np.errstate(all="ignore"):
        expected = float(np.median(values)) if len(values) else float("nan")
    found = median(values)
    assert (np.isnan(found) and np.isnan(expected)) or found == expected
    assert isinstance(found, float)
