"""Simulator: distributions, event models, injection, matching, and injection-recovery efficiency."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skyretriever.analysis import Analysis, Histogram, Simulator, recovery_efficiency
from skyretriever.analysis.simulator import Distribution, dip_model, flare_model, transit_model
from skyretriever.analysis.synthetic import as_lightcurve, sector_lightcurve
from skyretriever.parameters import ParameterError


def _frames(seed: int = 0, count: int = 1, **kwargs) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    kwargs.setdefault("cadence_minutes", 10.0)
    return [sector_lightcurve(rng, start=58325.3 + 28 * i, **kwargs) for i in range(count)]


# -- distributions -----------------------------------------------------------------------------
def test_distribution_shorthands_and_draws():
    rng = np.random.default_rng(0)
    assert Distribution.model_validate(3).draw(rng) == 3.0
    uniform = Distribution.model_validate([2, 4])
    draws = np.array([uniform.draw(rng) for _ in range(2000)])
    assert draws.min() >= 2 and draws.max() <= 4 and draws.mean() == pytest.approx(3, abs=0.05)
    log = Distribution(kind="loguniform", low=1, high=100)
    draws = np.array([log.draw(rng) for _ in range(2000)])
    assert np.median(draws) == pytest.approx(10, rel=0.15)      # the geometric middle
    normal = Distribution(kind="normal", mean=0, sigma=1, low=-0.5, high=0.5)
    draws = np.array([normal.draw(rng) for _ in range(500)])
    assert draws.min() == -0.5 and draws.max() == 0.5            # clipped to its range


@pytest.mark.parametrize(("values", "message"), [
    ({"kind": "loguniform", "low": 0, "high": 1}, "low must be positive"),
    ({"kind": "uniform", "low": 2, "high": 1}, "high (1.0) is below low (2.0)"),
    ({"kind": "uniforn"}, "kind"),
])
def test_bad_distributions_say_what_is_wrong(values, message):
    with pytest.raises(ParameterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Simulator(transit={"period": values})


def test_bad_event_kinds_are_refused():
    with pytest.raises(ParameterError, match="unknown kind 'planet'"):
        Simulator(events={"planet": 1.0})
    with pytest.raises(ParameterError, match="positive frequency"):
        Simulator(events={"flare": 0.0})


def test_injections_need_a_finder_that_finds_them():
    with pytest.raises(ParameterError, match="add 'transit' to analysis.finders"):
        Analysis(num_injections=1, simulator={"events": {"transit": 1.0}})
    with pytest.raises(ParameterError, match="find_dips: true"):
        Analysis(num_injections=1, simulator={"events": {"dip": 1.0}})
    Analysis(num_injections=1, finders=["peak", "transit"], simulator={"events": {"transit": 1}})


# -- models ------------------------------------------------------------------------------------
def test_transit_model_shapes():
    times = np.linspace(-0.2, 0.2, 401)
    box = transit_model(times, 5.0, 0.0, 0.2, 0.01)
    assert box.min() == pytest.approx(0.99) and np.sum(box < 1) == pytest.approx(200, abs=2)
    trapezoid = transit_model(times, 5.0, 0.0, 0.2, 0.01, ingress=0.2)
    assert trapezoid.min() == pytest.approx(0.99)
    assert trapezoid[np.argmin(np.abs(times + 0.08))] == pytest.approx(1 - 0.01 * 0.5, abs=3e-4)
    darkened = transit_model(times, 5.0, 0.0, 0.2, 0.01, ingress=0.1, impact_parameter=0.0,
                             limb_darkening=(0.4, 0.25))
    assert darkened.min() == pytest.approx(0.99)                 # full depth at the centre
    assert darkened[np.argmin(np.abs(times + 0.075))] > 0.99 + 0.001  # shallower near the limb
    assert transit_model(np.array([5.0, 10.0]), 5.0, 0.0, 0.2, 0.01).tolist() == [0.99, 0.99]


def test_flare_and_dip_models():
    times = np.array([-0.03, -0.01, 0.0, 0.1, 0.3])
    flare = flare_model(times, 0.0, 0.2, rise_time=0.01, decay_time=0.1)
    assert flare.tolist() == pytest.approx([1 + 0.2 * np.exp(-3), 1 + 0.2 * np.exp(-1), 1.2,
                                            1 + 0.2 * np.exp(-1), 1 + 0.2 * np.exp(-3)])
    dip = dip_model(np.array([0.0, 0.5, 2.0]), 0.0, 0.2, duration=1.0)
    assert dip.tolist() == pytest.approx([0.8, 0.9, 1 - 0.2 * 2.0 ** -16])


# -- drawing and injecting --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["transit", "flare", "dip"])
def test_drawn_events_have_the_requested_snr(kind):
    frames = _frames(count=2, noise_ppm=2000)
    simulator = Simulator(events={kind: 1.0}, **{kind: {"snr": 12.0}})
    event = simulator.draw(frames, simulator.random_state("a star"))
    assert event.kind == kind
    assert event.snr == pytest.approx(12.0, rel=0.02)
    # the same S/N measured independently: the models against the 2000 ppm noise
    # (a transit goes into both sectors, a flare or dip into one light curve)
    assert len(event.models) == (2 if kind == "transit" else 1)
    signal = sum(float(np.sum((model - 1) ** 2)) for model in event.models.values())
    assert np.sqrt(signal) / 2000e-6 == pytest.approx(12.0, rel=0.05)
    record = event.record()
    assert record["kind"] == kind and record["expected_snr"] == event.snr


def test_transit_durations_follow_the_period_and_star():
    simulator = Simulator(events={"transit": 1}, transit={
        "period": 365.25, "impact_parameter": 0.0, "stellar_density": 1.0, "snr": 10})
    event = simulator._draw_transit({0: simulator._data(_frames(days=900, cadence_minutes=600,
                                                                 gaps=())[0])},
                                    np.random.default_rng(0))
    assert event.parameters["duration"] * 24 == pytest.approx(13.0, rel=0.03)  # the Earth: 13 h


def test_draws_depend_only_on_the_seed_and_source_name():
    frames = _frames()
    simulator = Simulator(events={"flare": 1, "dip": 1})
    first = simulator.draw(frames, simulator.random_state("star A")).record()
    again = simulator.draw(frames, simulator.random_state("star A")).record()
    other = simulator.draw(frames, simulator.random_state("star B")).record()
    reseeded = Simulator(events={"flare": 1, "dip": 1}, seed=1)
    third = reseeded.draw(frames, reseeded.random_state("star A")).record()
    assert first == again and first != other and first != third


def test_injection_changes_copies_only_and_keeps_flux_and_magnitude_consistent():
    frames = _frames(count=2)
    before = [frame.copy() for frame in frames]
    simulator = Simulator(events={"flare": 1}, flare={"snr": 50})
    event = simulator.draw(frames, simulator.random_state("x"))
    injected = simulator.inject(frames, event)
    for frame, copy in zip(frames, before):
        pd.testing.assert_frame_equal(frame, copy)
    home, other = event.home, 1 - event.home
    assert injected[other] is frames[other]                      # untouched light curve
    ratio = injected[home]["flux"] / frames[home]["flux"]
    flagged = frames[home]["qflag"].to_numpy()
    assert np.allclose(ratio[flagged].dropna(), 1.0)             # flagged epochs left alone
    assert ratio.max() == pytest.approx(1 + event.parameters["amplitude"], rel=0.05)
    delta_mag = injected[home]["mag"] - frames[home]["mag"]
    assert np.allclose(delta_mag.dropna(), -2.5 * np.log10(ratio.dropna()))


def test_matching_rules():
    simulator = Simulator(period_tolerance=0.01)
    frames = _frames()
    transit = Simulator(events={"transit": 1}).draw(frames, np.random.default_rng(1))
    period, epoch = transit.parameters["period"], transit.parameters["epoch"]
    good = {"period": period * 1.005, "epoch": epoch + 3 * period, "duration": 0.1, "score": 9}
    assert simulator.match(transit, good)
    assert not simulator.match(transit, dict(good, period=period * 1.02))
    assert not simulator.match(transit, dict(good, epoch=epoch + 0.5 * period))
    assert not simulator.match(transit, {"period": None, "score": 20, "sign": -1})
    flare = Simulator(events={"flare": 1}).draw(frames, np.random.default_rng(2))
    hit = {"lightcurve_index": flare.home, "sign": 1, "score": 8, "period": None,
           "time_start": flare.time_start + 0.001, "time_end": flare.time_start + 0.01}
    assert simulator.match(flare, hit)
    assert not simulator.match(flare, dict(hit, sign=-1))
    assert not simulator.match(flare, dict(hit, lightcurve_index=flare.home + 1))
    assert not simulator.match(flare, dict(hit, time_start=flare.time_end + 0.1,
                                           time_end=flare.time_end + 0.2))
    assert simulator.best_match(flare, [hit, dict(hit, score=12), dict(hit, sign=-1)])["score"] == 12


# -- in the analysis ---------------------------------------------------------------------------
def test_simulated_detections_carry_what_was_injected():
    lightcurves = [as_lightcurve(frame) for frame in _frames(count=2)]
    before = [lightcurve.data.copy() for lightcurve in lightcurves]
    analysis = Analysis(num_injections=4, simulator={"flare": {"snr": 40}})
    result = analysis.analyze_photometry(lightcurves, {"name": "flaring star", "mag": 11.0})
    simulated = [d for d in result.detections if d["is_simulated"]]
    assert result.properties["num_injected"] == 4
    assert result.properties["num_recovered"] == len(simulated) == 4     # S/N 40: all found
    for detection in simulated:
        injected = detection["injected"]
        assert injected["kind"] == "flare" and injected["expected_snr"] == pytest.approx(40, rel=0.02)
        assert detection["time_start"] <= injected["peak_time"] + 3 * injected["decay_time"]
        assert detection["finder"] == "peak" and detection["lightcurve_index"] in (0, 1)
    assert all(not d["is_simulated"] and d["injected"] is None
               for d in result.detections if d not in simulated)
    histogram = Histogram(analysis.pars.histogram)
    histogram.add(result.histogram)
    assert histogram.total("injected") == 4 and histogram.total("recovered") == 4
    for lightcurve, copy in zip(lightcurves, before):             # the data were not touched
        pd.testing.assert_frame_equal(lightcurve.data, copy)


def _efficiency_curve(event: str, analysis: Analysis, sources: int, seed: int,
                      cadence: float) -> tuple[Histogram, int]:
    histogram = Histogram(analysis.pars.histogram)
    detections = 0
    for index in range(sources):
        frame = sector_lightcurve(np.random.default_rng(seed + index), cadence_minutes=cadence,
                                  mag=10.2 + index % 5, noise_ppm=1000)
        result = analysis.analyze_photometry([as_lightcurve(frame)],
                                             {"name": f"star {index}", "mag": 10.2 + index % 5})
        histogram.add(result.histogram)
        detections += sum(d["is_simulated"] for d in result.detections)
    return histogram, detections


def _coarse(table, edges):
    """Injected and recovered summed over coarse S/N bins."""
    score = table["score"].values
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (score >= low) & (score < high)
        rows.append((int(table["injected"].values[inside].sum()),
                     int(table["recovered"].values[inside].sum())))
    return rows


@pytest.mark.slow
def test_acceptance_flare_efficiency_rises_with_snr_and_histograms_sum_to_injections():
    """80 sectors (10-min cadence) x 5 flares of S/N 2-20: the efficiency rises from ~0 to ~1.

    400 injections put about 70 in each S/N bin of width 3, enough to see a
    rise of 0.15 between bins; the flare search is fast, so this takes ~15 s.
    """
    analysis = Analysis(num_injections=5, simulator={
        "events": {"flare": 1.0},
        "flare": {"snr": [2, 20], "rise_time": 0.005, "decay_time": [0.02, 0.2]},
    })
    histogram, simulated = _efficiency_curve("flare", analysis, 80, 500, 10.0)
    assert histogram.total("injected") == 400                       # every injection counted
    assert histogram.total("recovered") == simulated                # once each
    table = recovery_efficiency(histogram, "score", event="flare")
    assert int(table["injected"].sum()) == 400
    rows = _coarse(table, [2, 5, 8, 11, 14, 17, 20])
    efficiency = [recovered / injected for injected, recovered in rows]
    assert all(injected >= 40 for injected, _ in rows)
    assert efficiency[0] < 0.2 and efficiency[-1] > 0.9
    assert all(b >= a - 0.05 for a, b in zip(efficiency, efficiency[1:]))  # rises (within noise)
    by_mag = recovery_efficiency(histogram, "mag", event="flare")
    counted = by_mag["injected"].values
    assert by_mag["mag"].values[counted > 0].tolist() == [10.25, 11.25, 12.25, 13.25, 14.25]
    assert counted.tolist().count(80) == 5                        # 16 stars x 5 flares each


@pytest.mark.slow
def test_acceptance_transit_efficiency_rises_with_snr():
    """24 sectors (30-min cadence) x 3 transits of S/N 2-14, searched by the whole analysis."""
    analysis = Analysis(finders=["peak", "transit"], num_injections=3, simulator={
        "events": {"transit": 1.0},
        "transit": {"snr": [2, 14], "period": {"kind": "loguniform", "low": 0.5, "high": 8}},
    })
    histogram, simulated = _efficiency_curve("transit", analysis, 24, 900, 30.0)
    assert histogram.total("injected") == 72
    assert histogram.total("recovered") == simulated
    table = recovery_efficiency(histogram, "score", event="transit")
    rows = _coarse(table, [2, 5.5, 9, 14])
    assert [injected for injected, _ in rows] == [15, 28, 29]
    efficiency = [recovered / injected for injected, recovered in rows]
    # measured: 0/15, 15/28 and 28/29. Around the S/N threshold of 7 some are found from
    # an expected S/N of 6: the best of many trial periods, phases and durations fits the
    # noise too, by about +1.
    assert efficiency[0] < 0.2 < efficiency[1] < 0.8 < efficiency[2]
