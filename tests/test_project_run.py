"""Project.run end to end on the demo observatory, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any, ClassVar

import numpy as np
import pytest
import sqlalchemy as sa

from skyretriever import storage
from skyretriever.analysis import Histogram
from skyretriever.database import Session
from skyretriever.models import (
    Detection,
    HistogramBatch,
    Lightcurve,
    Properties,
    RawPhotometry,
    Source,
)
from skyretriever.observatories import VirtualDemoObs, register_observatory
from tests.helpers import snapshot


@register_observatory
class FlakyDemoObs(VirtualDemoObs):
    """The demo archive, failing on demand for chosen sources (a test double of an archive)."""

    name = "flaky"
    failing: ClassVar[set[str]] = set()
    calls: ClassVar[Counter] = Counter()

    def fetch(self, cat_row: dict[str, Any]):
        type(self).calls[cat_row["name"]] += 1
        if cat_row["name"] in self.failing:
            raise ConnectionError(f"archive refused {cat_row['name']}")
        return super().fetch(cat_row)


@pytest.fixture
def flaky():
    FlakyDemoObs.failing = set()
    FlakyDemoObs.calls = Counter()
    yield FlakyDemoObs
    FlakyDemoObs.failing = set()


def test_run_makes_every_row_and_file(project_factory):
    proj = project_factory()
    summary = proj.run()
    assert summary.counts["sources"] == 20
    assert summary.counts["failed"] == 0
    assert summary.counts["done"] == 20
    assert [count for count, _ in summary.progress] == [20]      # one batch committed
    assert 0 < summary.progress[0][1] <= summary.elapsed
    with Session() as session:
        sources = session.scalars(sa.select(Source)).all()
        assert {s.status for s in sources} == {"done"}
        raws = session.scalars(sa.select(RawPhotometry)).all()
        assert len(raws) == 20
        empty = [r for r in raws if r.is_empty]
        assert summary.counts["empty"] == len(empty) > 0
        assert all(r.filename is None for r in empty)
        for raw in raws:
            if not raw.is_empty:
                assert raw.is_intact()
                assert len(raw.data) == raw.num_points == 400
        lightcurves = session.scalars(sa.select(Lightcurve)).all()
        assert len(lightcurves) == 4 * (20 - len(empty))
        assert summary.counts["reduced"] == len(lightcurves)
        assert session.scalar(sa.select(sa.func.count(Properties.id))) == 20
        first = session.scalars(sa.select(Source).where(Source.lightcurves.any())).first()
        by_number = sorted(first.lightcurves, key=lambda lc: lc.series_number)
        assert [lc.series_number for lc in by_number] == [1, 2, 3, 4]
        assert [lc.time_start for lc in by_number] == sorted(lc.time_start for lc in by_number)
        assert first.lightcurves[0].data["qflag"].dtype == bool
        detections = session.scalars(sa.select(Detection)).all()
        assert detections, "the demo archive puts flares in 20% of sources"
        assert all(d.lightcurve.source_id == d.source_id for d in detections)
        for detection in detections:
            data = detection.lightcurve.data
            peak = data.loc[data["mjd"] == detection.time_peak]
            assert len(peak) == 1 and peak["mag"].iloc[0] == pytest.approx(detection.peak_mag)
    assert summary.statements < 40, "one batch: a bounded number of statements, not per source"


def test_flares_put_in_by_the_archive_are_found(project_factory):
    proj = project_factory(catalog_kwargs={"default": "test", "num_sources": 40},
                           demo={"flare_amplitude": [1.5, 2.5], "flare_decay": [3.0, 4.0]})
    proj.run()
    obs = proj.observatories["demo"]
    with Session() as session:
        found = {(d.source.name, round(d.time_peak, 6)) for d in session.scalars(sa.select(Detection))}
        names_found = {name for name, _ in found}
    flared = []
    for row in proj.catalog.get_rows():
        _, altdata = obs.download_from_observatory(row)
        if "flare" in altdata:
            flared.append((row["name"], altdata["flare"]["peak_mjd"]))
    assert len(flared) >= 4
    assert all(name in names_found for name, _ in flared)
    # no detections in sources without a flare
    assert names_found <= {name for name, _ in flared}


def test_a_second_run_does_no_downloads_reductions_or_analysis(project_factory, flaky):
    proj = project_factory(obs_names=["flaky"])
    proj.run()
    before = snapshot(proj)
    mtimes = {p: p.stat().st_mtime_ns for p in proj.data_root.rglob("*.h5")}
    calls = sum(flaky.calls.values())
    summary = proj.run()
    assert summary.counts["skipped"] == 20
    assert (summary.counts["downloaded"], summary.counts["reduced"],
            summary.counts["analyzed"]) == (0, 0, 0)
    assert sum(flaky.calls.values()) == calls
    assert {p: p.stat().st_mtime_ns for p in proj.data_root.rglob("*.h5")} == mtimes
    assert snapshot(proj) == before
    assert summary.statements == 0


def test_a_failure_is_recorded_the_run_goes_on_and_the_next_run_retries(project_factory, flaky):
    proj = project_factory(obs_names=["flaky"])
    names = [row["name"] for row in proj.catalog.get_rows()]
    flaky.failing = {names[3], names[11]}
    summary = proj.run()
    assert summary.counts["failed"] == 2 and summary.counts["done"] == 18
    assert sorted(summary.failures) == sorted(
        (name, f"download (flaky): ConnectionError: archive refused {name}")
        for name in flaky.failing
    )
    assert "archive refused" in str(summary)
    with Session() as session:
        failed = session.scalars(sa.select(Source).where(Source.status == "failed")).all()
        assert {s.name for s in failed} == flaky.failing
        assert all(s.properties is None and not s.lightcurves for s in failed)
    status = proj.status()
    assert status["sources"] == {"done": 18, "failed": 2, "new": 0}
    assert {name for name, _ in status["failures"]} == flaky.failing
    flaky.failing = set()
    calls = Counter(flaky.calls)
    retry = proj.run()
    assert retry.counts["done"] == 2 and retry.counts["skipped"] == 18
    assert retry.counts["downloaded"] == 2
    assert {n for n in flaky.calls if flaky.calls[n] > calls[n]} == {names[3], names[11]}
    with Session() as session:
        assert session.scalar(sa.select(sa.func.count()).where(Source.status == "done")) == 20
        assert session.scalar(sa.select(sa.func.count(Source.error)).where(
            Source.error.is_not(None))) == 0


def test_damaged_or_missing_files_are_made_again(project_factory, flaky):
    proj = project_factory(obs_names=["flaky"])
    proj.run()
    reference = snapshot(proj)
    with Session() as session:
        raw = session.scalars(sa.select(RawPhotometry).where(~RawPhotometry.is_empty)).first()
        other = session.scalars(
            sa.select(RawPhotometry).where(~RawPhotometry.is_empty,
                                           RawPhotometry.source_name != raw.source_name)
        ).first()
        lc = session.scalars(sa.select(Lightcurve).join(Source).where(
            Source.name == other.source_name)).first()
    raw.get_fullname().unlink()                                   # raw file lost
    path = lc.get_fullname()                                      # reduced file damaged
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))
    calls = Counter(flaky.calls)
    summary = proj.run()
    assert summary.counts["downloaded"] == 1
    assert {n for n in flaky.calls if flaky.calls[n] > calls[n]} == {raw.source_name}
    assert summary.counts["reduced"] == 8                          # both sources' light curves
    assert summary.counts["analyzed"] == 2 and summary.counts["skipped"] == 18
    after = snapshot(proj)
    assert after == reference                     # histograms too: counted once, not twice


def _file_times(model) -> dict[int, tuple[int | None, int]]:
    """Each row's recorded file time, and the file's time on disk."""
    with Session() as session:
        rows = session.scalars(sa.select(model).where(model.filename.is_not(None))).all()
        return {row.id: (row.file_mtime_ns, row.get_fullname().stat().st_mtime_ns)
                for row in rows}


def test_rows_record_the_time_of_their_files(project_factory):
    proj = project_factory()
    proj.run()
    for model in (RawPhotometry, Lightcurve):
        times = _file_times(model)
        assert len(times) >= 10
        assert all(recorded == on_disk for recorded, on_disk in times.values()), model


def test_resume_trusts_size_and_time_and_reads_a_file_whose_time_changed(project_factory, flaky):
    from skyretriever.checker import check_project

    proj = project_factory(obs_names=["flaky"])
    proj.run()
    reference = snapshot(proj)
    with Session() as session:
        raw = session.scalars(sa.select(RawPhotometry).where(~RawPhotometry.is_empty)).first()
        lc = session.scalars(sa.select(Lightcurve).join(Source).where(
            Source.name != raw.source_name)).first()
    # Damaged in place with its size and time put back: only a full read can tell.
    path = raw.get_fullname()
    before = path.stat()
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    # Touched but unchanged: read once, found intact, its new time recorded.
    touched = lc.get_fullname()
    os.utime(touched, ns=(1_000_000_000, 2_000_000_000))
    calls = sum(flaky.calls.values())

    summary = proj.run()
    assert summary.counts["skipped"] == 20 and sum(flaky.calls.values()) == calls
    with Session() as session:
        rows = session.scalars(sa.select(Lightcurve).where(Lightcurve.filename == lc.filename))
        assert {row.file_mtime_ns for row in rows} == {2_000_000_000}

    report = check_project(proj)                      # the checker reads every file
    assert report.counts() == Counter({"checksum mismatch": 1})
    assert report.findings[0].where.endswith(raw.filename)
    proj.execution.verify_files = "full"
    summary = proj.run()
    assert summary.counts["downloaded"] == 1 and summary.counts["skipped"] == 19
    assert sum(flaky.calls.values()) == calls + 1
    assert snapshot(proj) == reference


def test_rows_without_file_times_are_checked_once_and_given_them(project_factory):
    proj = project_factory()
    proj.run()
    with Session() as session:                        # as written before migration 0004
        for model in (RawPhotometry, Lightcurve):
            session.execute(sa.update(model).values(file_mtime_ns=None))
        session.commit()
    summary = proj.run()
    assert summary.counts["skipped"] == 20 and summary.counts["downloaded"] == 0
    for model in (RawPhotometry, Lightcurve):
        assert all(recorded == on_disk for recorded, on_disk in _file_times(model).values())


def test_files_left_without_rows_are_adopted_not_downloaded_again(project_factory, flaky):
    proj = project_factory(obs_names=["flaky"])
    proj.run()
    reference = snapshot(proj)
    with Session() as session:                      # as if the commit never happened
        for model in (Detection, Properties, Lightcurve, Source, RawPhotometry, HistogramBatch):
            session.execute(sa.delete(model))
        session.commit()
    proj.histogram_path().unlink()
    calls = sum(flaky.calls.values())
    summary = proj.run()
    non_empty = sum(1 for raw in reference["raw"] if not raw[2])
    assert sum(flaky.calls.values()) - calls == 20 - non_empty      # only the empty ones
    assert summary.counts["downloaded"] == 20 - non_empty
    assert snapshot(proj) == reference


def test_populate_sources_rebuilds_raw_rows_from_files(project_factory):
    proj = project_factory()
    proj.run()
    with Session() as session:
        expected = sorted((r.source_name, r.checksum, r.num_points, r.ra)
                          for r in session.scalars(sa.select(RawPhotometry).where(
                              ~RawPhotometry.is_empty)))
        session.execute(sa.delete(RawPhotometry))
        session.commit()
    assert proj.observatories["demo"].populate_sources() == len(expected)
    assert proj.observatories["demo"].populate_sources() == 0
    with Session() as session:
        rebuilt = sorted((r.source_name, r.checksum, r.num_points, r.ra)
                         for r in session.scalars(sa.select(RawPhotometry)))
    assert rebuilt == expected


def test_start_stop_and_source_names_select_rows(project_factory):
    proj = project_factory(execution_kwargs={"batch_size": 3})
    first = proj.run(5, 12)
    assert first.counts["sources"] == 7
    names = [row["name"] for row in proj.catalog.get_rows()]
    with Session() as session:
        assert sorted(session.scalars(sa.select(Source.name))) == names[5:12]
        assert sorted(session.scalars(sa.select(Source.cat_index))) == list(range(5, 12))
    chosen = proj.run(source_names=[names[0], names[19], "not in the catalog"])
    assert chosen.counts["sources"] == 2
    everything = proj.run()
    assert everything.counts["skipped"] == 9 and everything.counts["done"] == 11


def test_version_control_keeps_configurations_apart(project_factory):
    one = project_factory(version_control=True)
    one.run()
    two = project_factory(version_control=True, analysis_kwargs={"finder": {"snr_threshold": 1e6}})
    summary = two.run()
    assert summary.counts["skipped"] == 0 and summary.counts["downloaded"] == 0  # raw is shared
    assert one.output_folder != two.output_folder
    assert one.output_folder.name == f"TEST_PROJECT_{one.cfg_hash}"
    with Session() as session:
        hashes = Counter(session.scalars(sa.select(Source.cfg_hash)))
        assert hashes == {one.cfg_hash: 20, two.cfg_hash: 20}
        assert session.scalar(sa.select(sa.func.count(RawPhotometry.id))) == 20
        assert session.scalar(sa.select(sa.func.count(Detection.id)).join(Source).where(
            Source.cfg_hash == two.cfg_hash)) == 0


def test_histograms_count_every_scanned_point_once(project_factory):
    proj = project_factory(execution_kwargs={"batch_size": 6})
    proj.run()
    histogram = Histogram.load(proj.histogram_path())
    with Session() as session:
        good = session.scalar(sa.select(sa.func.sum(Properties.num_good_points)))
        lightcurves = session.scalar(sa.select(sa.func.count(Lightcurve.id)))
        real = session.scalar(sa.select(sa.func.count(Detection.id)))
        batches = session.scalars(sa.select(HistogramBatch.id)).all()
    assert len(batches) == 4 and histogram.batch_ids == set(batches)
    assert histogram.total("points") == histogram.total("scores") == good
    assert histogram.total("lightcurves") == lightcurves
    assert histogram.total("detections") == real
    proj.run()
    assert Histogram.load(proj.histogram_path()) == histogram
    proj.histogram_path().unlink()                     # lost file: rebuilt from the batches
    proj.update_histograms()
    assert Histogram.load(proj.histogram_path()) == histogram


def test_histograms_hold_a_batch_committed_before_a_crash(project_factory):
    proj = project_factory(execution_kwargs={"batch_size": 10})
    proj.run(0, 10)
    partial = Histogram.load(proj.histogram_path())
    proj.histogram_path().unlink()
    partial.save(proj.histogram_path())
    proj.run(10, 20)                                   # commits batch 2, then folds it in
    full = Histogram.load(proj.histogram_path())
    assert full.total("lightcurves") > partial.total("lightcurves")
    with Session() as session:
        assert full.total("lightcurves") == session.scalar(sa.select(sa.func.count(Lightcurve.id)))


def test_a_custom_analysis_class_loads_from_extensions(project_factory):
    proj = project_factory(analysis_module="extensions.custom_analysis",
                           analysis_class="AmplitudeAnalysis",
                           analysis_kwargs={"min_amplitude": 0.5})
    assert type(proj.analysis).__name__ == "AmplitudeAnalysis"
    proj.run()
    with Session() as session:
        for properties in session.scalars(sa.select(Properties).where(Properties.has_data)):
            assert properties.extra["amplitude_mag"] > 0
            assert properties.extra["variable"] == (properties.extra["amplitude_mag"] >= 0.5)


def test_fetch_source_and_fetch_all_sources(project_factory):
    proj = project_factory()
    obs = proj.observatories["demo"]
    row = proj.catalog.get_row(0)
    raw, lightcurves = obs.fetch_source(row, save=False)
    assert raw.id is None and (raw.is_empty or len(lightcurves) == 4)
    with Session() as session:
        assert session.scalar(sa.select(sa.func.count(Source.id))) == 0
    summary = obs.fetch_all_sources(0, 5)
    assert summary.counts["sources"] == 5 and summary.counts["analyzed"] == 0
    with Session() as session:
        assert session.scalar(sa.select(sa.func.count(Properties.id))) == 0
        assert set(session.scalars(sa.select(Source.status))) == {"new"}
        assert session.scalar(sa.select(sa.func.count(Lightcurve.id))) > 0
    full = proj.run(0, 5)                              # analysis follows, no new downloads
    assert full.counts["downloaded"] == 0 and full.counts["analyzed"] == 5


def _forget_everything(project) -> None:
    with Session() as session:
        for model in (Detection, Properties, Lightcurve, Source, RawPhotometry, HistogramBatch):
            session.execute(sa.delete(model))
        session.commit()
    for path in list(project.data_root.rglob("*.h5")) + [project.histogram_path()]:
        path.unlink()


@pytest.mark.slow
def test_serial_local_and_dask_schedulers_give_identical_results(project_factory):
    def run(scheduler: str):
        project = project_factory(
            name="same", catalog_kwargs={"default": "test", "num_sources": 30},
            execution_kwargs={"scheduler": scheduler, "workers": 2, "batch_size": 7},
        )
        summary = project.run()
        assert summary.counts["done"] == 30 and summary.counts["downloaded"] == 30
        result = snapshot(project)
        _forget_everything(project)
        return result

    reference = run("serial")
    # Batches are the same under every scheduler, so the histogram batches match too.
    assert run("local") == reference
    assert run("dask") == reference


def test_the_data_of_rows_loads_lazily_and_is_checked(project_factory):
    proj = project_factory()
    proj.run()
    with Session() as session:
        lc = session.scalars(sa.select(Lightcurve)).first()
        assert lc._data is None
        data = lc.data
        assert len(data) == lc.num_points and lc._data is not None
        assert np.isclose(data.loc[~data["qflag"], "mag"].mean(), lc.mag_mean)
        assert lc.get_fullname() == storage.full_path(lc.filename)
        lc.delete_data_from_disk()
        assert not lc.get_fullname().exists() and not lc.is_intact()
