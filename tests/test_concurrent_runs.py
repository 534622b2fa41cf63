"""Several processes on one project at once: job arrays over slices, and the same run twice."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from skyretriever import Project, database, storage
from skyretriever.database import Session
from skyretriever.models import Detection, Lightcurve, Properties, RawPhotometry, Source
from tests.helpers import snapshot

NUM_SOURCES = 48


def _config(path: Path, data_root: Path, url: str) -> Path:
    path.write_text(textwrap.dedent(f"""
        project: {{name: concurrent, obs_names: [demo], progress: false}}
        database: {{url: "{url}"}}
        data_root: "{data_root}"
        catalog: {{default: test, num_sources: {NUM_SOURCES}}}
        observatories:
          demo: {{wait_time: 0.03}}
        execution: {{scheduler: serial, batch_size: 4}}
    """))
    return path


def _reference(tmp_path: Path) -> dict:
    root = tmp_path / "reference"
    config = _config(tmp_path / "reference.yaml", root, f"sqlite:///{tmp_path / 'reference.db'}")
    result = subprocess.run([sys.executable, "-m", "skyretriever", "run", str(config)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    database.configure(f"sqlite:///{tmp_path / 'reference.db'}")
    return snapshot(Project(cfg_file=config), root)


def _run_together(config: Path, slices: list[list[str]]) -> None:
    processes = [subprocess.Popen([sys.executable, "-m", "skyretriever", "run", str(config), *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for args in slices]
    ended = [(process.returncode, out + err) for process in processes
             for out, err in [process.communicate(timeout=300)]]
    if all(args for args in slices):      # slices (a job array) run side by side
        assert all(code == 0 for code, _ in ended), ended
        return
    # The same whole run twice: the one that comes second is refused at once (or, if the
    # first had ended already, finds everything done).
    assert any(code == 0 for code, _ in ended), ended
    for code, output in ended:
        assert code == 0 or (code == 1 and "is in use by a run of project 'concurrent'"
                             in output), output


def _check_no_duplicates() -> None:
    with Session() as session:
        assert session.scalar(sa.select(sa.func.count(Source.id))) == NUM_SOURCES
        assert session.scalar(sa.select(sa.func.count(RawPhotometry.id))) == NUM_SOURCES
        lightcurve_keys = session.execute(sa.select(
            Lightcurve.source_id, Lightcurve.observatory, Lightcurve.series_number)).all()
        assert len(lightcurve_keys) == len(set(lightcurve_keys))
        assert session.scalar(sa.select(sa.func.count(Properties.id))) == NUM_SOURCES
        detections = session.execute(sa.select(Detection.source_id, Detection.time_peak)).all()
        assert len(detections) == len(set(detections))


@pytest.mark.slow
@pytest.mark.parametrize("slices", [
    [["--start", "0", "--stop", "16"], ["--start", "16", "--stop", "32"],
     ["--start", "32", "--stop", "48"]],                                   # a job array
    [[], []],                                                              # the same run twice
    [["--start", "0", "--stop", "30"], ["--start", "18", "--stop", "48"]], # overlapping slices
], ids=["job-array", "same-run-twice", "overlapping"])
def test_concurrent_runs_equal_one_run(tmp_path, database_url, data_root, slices):
    reference = _reference(tmp_path)
    config = _config(tmp_path / "together.yaml", data_root, database_url)
    _run_together(config, slices)
    database.configure(database_url)
    storage.configure(data_root)
    project = Project(cfg_file=config)
    _check_no_duplicates()
    assert snapshot(project, data_root) == reference
