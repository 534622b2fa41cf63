"""Histograms: cells, addition, files, efficiency, and serial and parallel runs adding up alike."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from skyretriever.analysis import Histogram, recovery_efficiency, update_histogram_file
from skyretriever.analysis.histogram import HistogramParameters
from skyretriever.database import Session
from skyretriever.models import Detection, Lightcurve, Properties


def _filled(seed: int) -> Histogram:
    rng = np.random.default_rng(seed)
    histogram = Histogram()
    for _ in range(30):
        histogram.add(histogram.count_lightcurve(rng.uniform(10, 20), rng.choice([30.0, 120.0]),
                                                 str(rng.choice(["g", "r", "TESS", "V"])),
                                                 rng.normal(0, 1, 50), [rng.uniform(5, 9)]))
        histogram.add(histogram.count_injection(str(rng.choice(["flare", "transit"])),
                                                rng.uniform(10, 20), 120.0, "TESS",
                                                rng.uniform(0, 20), bool(rng.random() < 0.5)))
    return histogram


def _sparse(histogram: Histogram) -> dict[str, dict[int, int]]:
    """The dense counts as a batch stores them: {variable: {flat index: count}}."""
    return {variable: {int(i): int(counts.ravel()[i]) for i in np.flatnonzero(counts)}
            for variable, counts in histogram.counts.items()}


def test_cells_land_where_their_values_say():
    histogram = Histogram()
    histogram.add(histogram.count_lightcurve(15.2, 120.0, "V", np.array([0.1, np.nan, 6.2])))
    dataset = histogram.to_xarray()
    points = dataset["points"].sel(mag=15.25, cadence=105.0, filter="other")
    assert int(points) == 2                                        # NaN scores are skipped
    assert int(dataset["scores"].sel(mag=15.25, filter="other", score=6.25).sum()) == 1
    histogram.add(histogram.count_injection("dip", None, None, None, 100.0, recovered=True))
    cell = histogram.to_xarray()["recovered"].sel(event="dip")
    # no magnitude: the faintest bin; no cadence: the first; S/N above the axis: the last
    assert int(cell.isel(mag=-1, cadence=0, score=-1).sel(filter="other")) == 1
    with pytest.raises(ValueError, match="unknown event kind 'planet'"):
        histogram.count_injection("planet", 12.0, 30.0, "g", 5.0, False)


def test_addition_is_elementwise_and_checks_bins_and_batches():
    a, b = _filled(1), _filled(2)
    total = a + b
    for variable in a.counts:
        assert np.array_equal(total.counts[variable], a.counts[variable] + b.counts[variable])
    assert total.total("injected") == 60 and total.total("lightcurves") == 60
    assert a + b == b + a
    with pytest.raises(ValueError, match="different bins"):
        a + Histogram(HistogramParameters(score_step=1.0))
    a.batch_ids, b.batch_ids = {1, 2}, {2, 3}
    with pytest.raises(ValueError, match="already hold batches"):
        a + b


def test_efficiency_is_recovered_over_injected_with_an_interval():
    histogram = Histogram()
    for snr, found in [(3.1, False), (3.2, False), (3.3, True), (3.4, False),
                       (9.1, True), (9.2, True), (9.3, True)]:
        histogram.add(histogram.count_injection("transit", 12.0, 120.0, "TESS", snr, found))
    histogram.add(histogram.count_injection("flare", 12.0, 30.0, "g", 9.2, False))
    table = recovery_efficiency(histogram, "score", event="transit")
    efficiency = table["efficiency"]
    assert float(efficiency.sel(score=3.25)) == 0.25
    assert float(efficiency.sel(score=9.25)) == 1.0
    assert np.isnan(float(efficiency.sel(score=15.25)))            # nothing injected there
    low, high = float(table["efficiency_low"].sel(score=3.25)), float(
        table["efficiency_high"].sel(score=3.25))
    assert 0.05 < low < 0.25 < high < 0.6                          # Wilson, one sigma, n = 4
    assert float(histogram.efficiency("score").sel(score=9.25)["efficiency"]) == 0.75
    by_filter = recovery_efficiency(histogram, "filter", cadence=105.0)
    assert by_filter["injected"].sel(filter="TESS").item() == 7
    assert by_filter["injected"].sel(filter="g").item() == 0       # 30 s is another cadence bin
    with pytest.raises(ValueError, match="cannot keep axis 'colour'"):
        recovery_efficiency(histogram, "colour")
    with pytest.raises(ValueError, match="cannot select on 'band'"):
        recovery_efficiency(histogram, "score", band="g")


def test_files_round_trip_and_batches_are_folded_in_once(tmp_path):
    histogram = _filled(3)
    path = tmp_path / "histograms_analysis.nc"
    histogram.save(path)
    loaded = Histogram.load(path)
    assert loaded == histogram and loaded.total("recovered") == histogram.total("recovered")
    assert list(loaded.to_xarray()["event"].values) == ["transit", "flare", "dip"]
    pars = HistogramParameters()
    batches = [(7, _sparse(_filled(4))), (8, _sparse(_filled(5)))]
    first = update_histogram_file(tmp_path / "h.nc", pars, "analysis", batches[:1])
    both = update_histogram_file(tmp_path / "h.nc", pars, "analysis", batches)
    again = update_histogram_file(tmp_path / "h.nc", pars, "analysis", batches)
    assert first.batch_ids == {7} and both.batch_ids == again.batch_ids == {7, 8}
    assert again == _filled(4) + _filled(5)                        # not counted twice


def test_files_from_before_injections_load_with_none_injected(tmp_path):
    path = tmp_path / "old.nc"
    old = _filled(6)
    old.counts["injected"][:] = old.counts["recovered"][:] = 0
    old.batch_ids = {1, 2}
    old.to_xarray().drop_vars(["injected", "recovered"]).to_netcdf(path, engine="netcdf4")
    loaded = Histogram.load(path)
    assert loaded == old and loaded.batch_ids == {1, 2}
    assert loaded.total("lightcurves") == 30 and loaded.total("injected") == 0


def test_serial_and_parallel_runs_make_the_same_histograms(project_factory):
    """The histogram of a run is the sum of its workers'; how the work is spread does not matter."""
    analysis = {"num_injections": 2, "finders": ["peak"],
                "simulator": {"flare": {"snr": [3, 30], "decay_time": [0.5, 3]}}}
    serial = project_factory("serial_run", analysis_kwargs=analysis)
    parallel = project_factory("parallel_run", analysis_kwargs=analysis,
                               execution_kwargs={"scheduler": "local", "workers": 2,
                                                 "batch_size": 7})
    assert serial.run().counts["failed"] == 0
    assert parallel.run().counts["failed"] == 0
    one, other = Histogram.load(serial.histogram_path()), Histogram.load(parallel.histogram_path())
    assert one == other
    assert len(other.batch_ids) == 3 and len(one.batch_ids) == 1   # 20 sources: 3 batches of 7
    with Session() as session:
        with_data = session.scalar(sa.select(sa.func.count(Properties.id)).where(
            Properties.project == "serial_run", Properties.has_data))
        lightcurves = session.scalar(sa.select(sa.func.count(Lightcurve.id)).where(
            Lightcurve.project == "serial_run"))
        simulated = session.scalar(sa.select(sa.func.count(Detection.id)).where(
            Detection.project == "serial_run", Detection.is_simulated))
        recovered = session.scalar(sa.select(sa.func.sum(Properties.num_recovered)).where(
            Properties.project == "serial_run"))
    assert one.total("lightcurves") == lightcurves
    assert one.total("injected") == 2 * with_data                  # every injection counted
    assert one.total("recovered") == simulated == recovered > 0
