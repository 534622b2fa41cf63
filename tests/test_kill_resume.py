"""A run killed with SIGKILL at random moments, then run to the end, equals an uninterrupted run."""

from __future__ import annotations

import os
import random
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
from skyretriever.models import Source
from tests.helpers import snapshot

NUM_SOURCES = 40
WAIT = 0.05                  # seconds per download, one at a time: 0.2 s per batch of 4


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


def _done(project: Project) -> int:
    with Session() as session:
        return session.scalar(sa.select(sa.func.count(Source.id)).where(Source.status == "done"))


def _run(config: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skyretriever", "run", str(config)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["serial", "local"])
def test_killed_runs_finish_like_an_uninterrupted_run(tmp_path, database_url, data_root, scheduler):
    # The uninterrupted reference, in its own SQLite database and data root.
    reference_root = tmp_path / "reference"
    reference_config = _config(tmp_path / "reference.yaml", reference_root,
                               f"sqlite:///{tmp_path / 'reference.db'}", scheduler)
    assert _run(reference_config).returncode == 0
    database.configure(f"sqlite:///{tmp_path / 'reference.db'}")
    reference = snapshot(Project(cfg_file=reference_config), reference_root)

    config = _config(tmp_path / "killed.yaml", data_root, database_url, scheduler)
    project = Project(cfg_file=config)
    database.upgrade()
    rng = random.Random(20261122)
    done_at_kills = []
    for _ in range(4):
        done = _done(project)
        if done >= NUM_SOURCES - 8:
            break
        target = rng.randint(done + 1, NUM_SOURCES - 8)
        process = subprocess.Popen([sys.executable, "-m", "skyretriever", "run", str(config)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        # Kill once `target` sources are committed, at a random moment of the next batch
        # (downloading, reducing, writing files or committing).
        deadline = time.monotonic() + 120
        while _done(project) < target and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        assert process.poll() is None, "the run ended before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)                   # the run and its workers
        process.wait()
        done_at_kills.append(_done(project))
    assert len(done_at_kills) >= 2 and all(0 < d < NUM_SOURCES for d in done_at_kills)
    final = _run(config)
    assert final.returncode == 0, final.stdout + final.stderr
    assert f"{NUM_SOURCES} sources" in final.stdout

    database.configure(database_url)
    storage.configure(data_root)
    project = Project(cfg_file=config)
    assert snapshot(project, data_root) == reference
    report = check_project(project)
    assert report.clean, str(report)
    # Files half-written by the killed runs were cleared when the final run started.
    assert not [p for p in data_root.rglob("*") if p.is_file() and p.name.endswith(
        storage.TEMP_SUFFIX)]
