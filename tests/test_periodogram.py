"""The Lomb-Scargle peak: the fast grid (nifty-ls) finds the peak astropy's exact sum finds."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.timeseries import LombScargle

from skyretriever.analysis.periodogram import PeriodogramParameters, lomb_scargle_peak


def _exact_peak(times, values, errors, pars: PeriodogramParameters) -> dict:
    """The same search with astropy's direct sum over every trial frequency (no approximation)."""
    span = times.max() - times.min()
    low, high = 2.0 / span, 1.0 / pars.min_period
    count = int(np.ceil((high - low) * span * pars.samples_per_peak)) + 1
    frequency = np.linspace(low, high, min(count, pars.max_frequencies))
    model = LombScargle(times, values, errors)
    best = int(np.argmax(model.power(frequency, method="cython")))
    step = frequency[1] - frequency[0]
    fine = np.linspace(frequency[best] - step, frequency[best] + step, 41)
    fine_power = model.power(fine, method="cython")
    peak = int(np.argmax(fine_power))
    return {"ls_period": 1.0 / fine[peak], "ls_power": fine_power[peak],
            "ls_false_alarm": model.false_alarm_probability(
                fine_power[peak], minimum_frequency=low, maximum_frequency=high)}


def _series(seed: int, points: int, span: float, period: float, amplitude: float,
            weighted: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(seed)
    # two seasons with a gap, as ground-based surveys and the demo observatory give
    times = np.sort(np.concatenate([rng.uniform(0, 0.4 * span, points // 2),
                                    rng.uniform(0.6 * span, span, points - points // 2)]))
    errors = rng.uniform(0.005, 0.03, points) if weighted else None
    noise = rng.standard_normal(points) * (errors if weighted else 0.01)
    values = 1 + amplitude * np.sin(2 * np.pi * times / period + seed) + noise
    return times, values, errors


@pytest.mark.parametrize("seed", range(12))
def test_peak_equals_the_exact_periodogram(seed):
    rng = np.random.default_rng(100 + seed)
    span = float(rng.uniform(5, 60))
    period = float(rng.uniform(0.08, span / 4))
    amplitude = float(rng.choice([0.0, 0.003, 0.02]))   # noise only, weak and strong signals
    times, values, errors = _series(seed, int(rng.integers(20, 300)), span, period, amplitude,
                                    weighted=seed % 2 == 0)
    pars = PeriodogramParameters()
    found = lomb_scargle_peak(times, values, errors, pars)
    expected = _exact_peak(times, values, errors, pars)
    assert found["ls_period"] == pytest.approx(expected["ls_period"], rel=1e-12)
    assert found["ls_power"] == pytest.approx(expected["ls_power"], rel=1e-9)
    assert found["ls_false_alarm"] == pytest.approx(expected["ls_false_alarm"], rel=1e-6)
    if amplitude == 0.02:                   # the true frequency, within a peak's width
        assert abs(1 / found["ls_period"] - 1 / period) < 1 / span


def test_single_precision_and_unsorted_input_give_the_same_peak():
    times, values, errors = _series(3, 200, 40.0, 2.3, 0.02, weighted=True)
    order = np.random.default_rng(0).permutation(len(times))
    reference = lomb_scargle_peak(times, values, errors)
    shuffled = lomb_scargle_peak(times[order].astype(np.float32).astype(np.float64),
                                 values[order].astype(np.float32), errors[order].astype(np.float32))
    assert reference["ls_period"] == pytest.approx(2.3, rel=0.01)
    assert shuffled["ls_period"] == pytest.approx(reference["ls_period"], rel=1e-6)
    assert shuffled["ls_power"] == pytest.approx(reference["ls_power"], rel=1e-4)


def test_max_frequencies_makes_the_grid_coarser_not_shorter():
    times, values, errors = _series(5, 300, 200.0, 0.37, 0.02, weighted=False)
    pars = PeriodogramParameters(max_frequencies=2_000)   # the full grid would be 27,000
    found = lomb_scargle_peak(times, values, errors, pars)
    assert found == pytest.approx(_exact_peak(times, values, errors, pars), rel=1e-6)
    assert found["ls_period"] == pytest.approx(0.37, rel=0.01)


def test_too_few_points_or_too_short_a_span_give_no_peak():
    empty = {"ls_period": None, "ls_power": None, "ls_false_alarm": None}
    times = np.linspace(0, 1, 9)
    assert lomb_scargle_peak(times, np.ones(9)) == empty
    short = np.linspace(0, 0.08, 50)                  # half the span is below min_period
    assert lomb_scargle_peak(short, np.sin(short * 80)) == empty
    with_nan = np.linspace(0, 30, 40)
    values = np.where(np.arange(40) < 31, np.nan, 1.0)   # only nine finite points
    assert lomb_scargle_peak(with_nan, values) == empty
