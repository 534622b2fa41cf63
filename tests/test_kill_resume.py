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

from skyretriever import Project, database, storage
from tests.helpers import snapshot

NUM_SOURCES = 40
WAIT = 0.1                   # seconds per download, one at a time: about 4 s of work per run


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
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import skyretriever.project, skyretriever.cli"],
                   check=True)
    startup = time.perf_counter() - started
    assert _run(reference_config).returncode == 0
    database.configure(f"sqlite:///{tmp_path / 'reference.db'}")
    reference = snapshot(Project(cfg_file=reference_config), reference_root)

    config = _config(tmp_path / "killed.yaml", data_root, database_url, scheduler)
    project = Project(cfg_file=config)
    rng = random.Random(20261122)
    done_after_kills = []
    for _ in range(4):
        process = subprocess.Popen([sys.executable, "-m", "skyretriever", "run", str(config)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        # Past the start-up (imports), before the end of a full run's downloads.
        time.sleep(startup + NUM_SOURCES * WAIT * rng.uniform(0.1, 0.9))
        os.killpg(process.pid, signal.SIGKILL)                   # the run and its workers
        process.wait()
        done_after_kills.append(project.status()["sources"]["done"])
    assert any(0 < done < NUM_SOURCES for done in done_after_kills), done_after_kills
    final = _run(config)
    assert final.returncode == 0, final.stdout + final.stderr
    assert f"{NUM_SOURCES} sources" in final.stdout

    database.configure(database_url)
    storage.configure(data_root)
    assert snapshot(Project(cfg_file=config), data_root) == reference
    # Killed writers may leave temporary files (never a product file); each names its writer,
    # which is dead, so a checker can tell them from files being written right now.
    for leftover in data_root.rglob(f"*{storage.TEMP_SUFFIX}"):
        pid = int(leftover.name.split(".")[-3])
        assert not Path(f"/proc/{pid}").exists(), leftover
