"""No stale results: without version control, products made otherwise are never "skipped".

A project without version control keeps one set of results in one folder. A
run whose parameters, code version or catalog differ from those its products
were made with must stop and say what changed (or, asked to, remake them), not
pass over old results as done.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import sqlalchemy as sa
import yaml

from skyretriever.database import Session
from skyretriever.models import Detection, HistogramBatch, Lightcurve, Source
from skyretriever.project import ConfigurationChanged, configuration_changes

FLARES = {"flare_fraction": 1.0, "empty_fraction": 0.0}


def _detection_snrs() -> list[float]:
    with Session() as session:
        return list(session.scalars(sa.select(Detection.snr).where(
            Detection.is_simulated.is_(False))))


def test_changed_analysis_parameters_stop_the_run_and_keep_the_results(project_factory):
    project_factory(demo=FLARES).run()
    before = _detection_snrs()
    assert before and min(before) < 50          # the demo's flares are far below S/N 50

    strict = project_factory(demo=FLARES, analysis_kwargs={"finder": {"snr_threshold": 50.0}})
    with pytest.raises(ConfigurationChanged) as caught:
        strict.run()
    message = str(caught.value)
    default = project_factory().analysis.critical_parameters()["peak"]["snr_threshold"]
    assert f"analysis.peak.snr_threshold: {default} -> 50.0" in message
    assert "--redo" in message and "version_control" in message
    assert sorted(_detection_snrs()) == sorted(before)        # nothing touched


def test_redo_remakes_the_results_under_the_new_parameters(project_factory):
    project_factory(demo=FLARES).run()
    strict = project_factory(demo=FLARES, analysis_kwargs={"finder": {"snr_threshold": 50.0}})
    summary = strict.run(redo=True)
    assert summary.counts["skipped"] == 0
    assert summary.counts["done"] == 20
    assert summary.counts["downloaded"] == 0          # raw data is shared and still fits
    assert all(snr >= 50 for snr in _detection_snrs())
    with Session() as session:
        assert session.scalar(sa.select(sa.func.count(Source.id))) == 20
        histogram_sources = session.scalar(sa.select(sa.func.sum(HistogramBatch.num_sources)))
    assert histogram_sources == 20                    # counted once, under the new parameters
    # The recorded configuration is the new one, so the next run skips everything.
    again = project_factory(demo=FLARES, analysis_kwargs={"finder": {"snr_threshold": 50.0}}).run()
    assert again.counts["skipped"] == 20


def test_a_moved_catalog_position_is_a_changed_catalog(project_factory, tmp_path):
    catalog = tmp_path / "stars.csv"
    rows = [f"S{i},{10 + i},{-5 + i},15.0" for i in range(1, 6)]
    catalog.write_text("name,ra,dec,mag\n" + "\n".join(rows) + "\n")
    kwargs = {"catalog_kwargs": {"filename": str(catalog)}, "demo": {"empty_fraction": 0.0}}
    assert project_factory(**kwargs).run().counts["done"] == 5
    rows[0] = "S1,205.7,30.0,15.0"
    catalog.write_text("name,ra,dec,mag\n" + "\n".join(rows) + "\n")
    with pytest.raises(ConfigurationChanged, match=r"catalog\.catalog_hash"):
        project_factory(**kwargs).run()
    summary = project_factory(**kwargs).run(redo=True)
    assert summary.counts["done"] == 5 and summary.counts["skipped"] == 0
    with Session() as session:
        moved = session.scalar(sa.select(Source).where(Source.name == "S1"))
        assert moved.ra == pytest.approx(205.7)
        # the raw data is the moved star's, not the old position's (raw data identity)
        assert [raw.ra for raw in moved.raw_photometry] == [pytest.approx(205.7)]
        assert {lc.raw_data.ra for lc in moved.lightcurves} == {moved.raw_photometry[0].ra}


def test_an_unchanged_configuration_skips_and_version_control_keeps_both(project_factory):
    project_factory().run()
    assert project_factory().run().counts["skipped"] == 20
    first = project_factory(version_control=True)
    first.run()
    second = project_factory(version_control=True, analysis_kwargs={"finder": {"snr_threshold": 9}})
    summary = second.run()                        # a folder of its own: nothing stale
    assert summary.counts["done"] == 20 and summary.counts["skipped"] == 0
    assert first.output_folder != second.output_folder


def test_results_without_their_recorded_configuration_are_not_trusted(project_factory):
    proj = project_factory()
    proj.run()
    (proj.output_folder / "config.yaml").unlink()
    with pytest.raises(ConfigurationChanged, match="config.yaml is missing"):
        project_factory().run()
    assert project_factory().run(redo=True).counts["done"] == 20
    with Session() as session:
        assert session.scalar(sa.select(sa.func.count(Lightcurve.id))) > 0


def test_the_command_line_stops_in_one_line_and_redoes_on_request(database_url, data_root,
                                                                   tmp_path):
    def config(threshold: float):
        path = tmp_path / "cli.yaml"
        path.write_text(yaml.safe_dump({
            "project": {"name": "cli_stale", "obs_names": ["demo"], "progress": False},
            "database": {"url": database_url}, "data_root": str(data_root),
            "catalog": {"default": "test", "num_sources": 10},
            "observatories": {"demo": {"wait_time": 0.0}},
            "analysis": {"finder": {"snr_threshold": threshold}},
            "execution": {"scheduler": "serial"},
        }))
        return str(path)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "skyretriever", "run", *args],
                              capture_output=True, text=True, timeout=300)

    assert run(config(5.0)).returncode == 0
    stopped = run(config(8.0))
    assert stopped.returncode == 1
    assert "Traceback" not in stopped.stderr
    assert "analysis.peak.snr_threshold: 5.0 -> 8.0" in stopped.stderr
    redone = run(config(8.0), "--redo")
    assert redone.returncode == 0, redone.stderr
    assert "done 10" in redone.stdout


def test_configuration_changes_lists_each_key_once_and_bounds_values():
    old = yaml.safe_dump({"observatories": {"ztf": {"bands": ["g"]}}, "x": "a" * 500})
    new = yaml.safe_dump({"observatories": {"ztf": {"bands": ["r"]}}, "x": "b" * 500, "y": 1})
    lines = configuration_changes(old, new)
    assert lines[0] == "observatories.ztf.bands: ['g'] -> ['r']"
    assert lines[1].startswith("x: 'aaa") and len(lines[1]) < 200
    assert lines[2] == "y: (none) -> 1"
