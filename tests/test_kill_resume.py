"""Runs killed with SIGKILL at random moments, then run to the end, equal an uninterrupted run.

Each trial starts the project from nothing, kills the run (and its worker
processes) once a random number of sources is committed plus a random delay
(so the kill lands while downloading, reducing, writing files or committing),
runs it again to the end, and compares every row, file and histogram with an
uninterrupted run; the consistency checker must then find nothing.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from skyretriever import Project, database, storage
from skyretriever.checker import check_project
from skyretriever.database import Session
from skyretriever.models import (
    Detection,
    HistogramBatch,
    Lightcurve,
    Properties,
    RawPhotometry,
    Source,
)
from tests.helpers import snapshot

NUM_SOURCES = 40
WAIT = 0.05                  # seconds per download, one at a time: 0.2 s per batch of 4
TRIALS = 5                   # per scheduler and database: 20 kills in all


def _config(path: Path, data_root: Path, url: str, scheduler: str) -> Path:
    path.write_text(textwrap.dedent(f"""
        project: {{name: killed, obs_names: [demo], progress: false}}
        database: {{url: "{url}"}}
        data_root: "{data_root}"
        catalog: {{default: test, num_sources: {NUM_SOURCES}}}
        observatories:
          demo: {{wait_time: {WAIT}, download_workers: 1}}
        execution: {{scheduler: {scheduler}, workers: 2, batch_size: 4}}
    """))
    return path


def _done() -> int:
    with Session() as session:
        return session.scalar(sa.select(sa.func.count(Source.id)).where(Source.status == "done"))


def _run(config: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skyretriever", "run", str(config)],
                          capture_output=True, text=True, timeout=timeout)


def _start_afresh(data_root: Path) -> None:
    with Session() as session:
        for model in (Detection, Properties, Lightcurve, Source, RawPhotometry, HistogramBatch):
            session.execute(sa.delete(model))
        session.commit()
    for child in (data_root.iterdir() if data_root.exists() else ()):
        if child.is_dir():
            shutil.rmtree(child)


def _kill_at(config: Path, target: int, delay: float) -> int:
    """Start a run, SIGKILL it and its workers once ``target`` sources are done plus ``delay``."""
    process = subprocess.Popen([sys.executable, "-m", "skyretriever", "run", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while _done() < target and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return _done()


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["serial", "local"])
def test_killed_runs_finish_like_an_uninterrupted_run(tmp_path, database_url, data_root, scheduler):
    reference_root = tmp_path / "reference"
    reference_config = _config(tmp_path / "reference.yaml", reference_root,
                               f"sqlite:///{tmp_path / 'reference.db'}", scheduler)
    assert _run(reference_config).returncode == 0
    database.configure(f"sqlite:///{tmp_path / 'reference.db'}")
    reference = snapshot(Project(cfg_file=reference_config), reference_root)

    config = _config(tmp_path / "killed.yaml", data_root, database_url, scheduler)
    project = Project(cfg_file=config)
    database.upgrade()
    rng = random.Random(f"20261122-{scheduler}")
    done_at_kills = []
    for _ in range(TRIALS):
        _start_afresh(data_root)
        done_at_kills.append(_kill_at(config, rng.randint(0, NUM_SOURCES - 8),
                                      rng.uniform(0.0, 0.3)))
        final = _run(config)
        assert final.returncode == 0, final.stdout + final.stderr
        storage.configure(data_root)
        assert snapshot(project, data_root) == reference, f"after a kill at {done_at_kills[-1]}"
        report = check_project(project)
        assert report.clean, str(report)
        # Files half-written by the killed run were cleared when the final run started.
        assert not [p for p in data_root.rglob("*") if p.is_file() and p.name.endswith(
            storage.TEMP_SUFFIX)]
    # The kills landed at many different moments of the run, never after its end.
    assert all(done < NUM_SOURCES for done in done_at_kills)
    assert len(set(done_at_kills)) >= 3, done_at_kills
