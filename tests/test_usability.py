"""What a user of the command line meets: one run per project at a time, logs for batch
jobs, paths relative to the config file, read-only commands that stay off the network."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from skyretriever import storage

REPOSITORY = Path(__file__).resolve().parent.parent


def _environment(**extra: str) -> dict[str, str]:
    """The environment of a subprocess: this checkout's sources first, no inherited roots."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("SKYRETRIEVER_DATA", "SKYRETRIEVER_DB_URL")}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(REPOSITORY / "src"), str(REPOSITORY), environment.get("PYTHONPATH", "")])
    environment.update(extra)
    return environment


def _skyretriever(*args: str, cwd: Path, timeout: float = 180, **extra: str
                  ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skyretriever", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env=_environment(**extra))


# -- one run of a project at a time ---------------------------------------------------------
def _slow_config(path: Path, data_root: Path, url: str, sources: int = 30) -> Path:
    path.write_text(textwrap.dedent(f"""
        project: {{name: locked, obs_names: [demo], progress: false}}
        database: {{url: "{url}"}}
        data_root: "{data_root}"
        catalog: {{default: test, num_sources: {sources}}}
        observatories:
          demo: {{wait_time: 0.2}}
        execution: {{scheduler: serial, batch_size: 5}}
    """))
    return path


def _wait_for_holder(data_root: Path, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list((data_root / storage.TEMP_FOLDER).glob("*/project-LOCKED.*.txt")):
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("the first run never took the project lock")


@pytest.mark.slow
def test_a_second_run_of_the_same_project_is_refused_naming_the_first(tmp_path, database_url,
                                                                      data_root):
    config = _slow_config(tmp_path / "locked.yaml", data_root, database_url)
    first = subprocess.Popen([sys.executable, "-m", "skyretriever", "run", str(config)],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=_environment())
    try:
        _wait_for_holder(data_root, first)
        clock = time.monotonic()
        second = _skyretriever("run", str(config), cwd=tmp_path, timeout=60)
        assert time.monotonic() - clock < 30          # at once, not after the first's work
        assert first.poll() is None, "the first run ended before the second was refused"
    finally:
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    assert second.returncode == 1, second.stdout + second.stderr
    [line] = second.stderr.strip().splitlines()
    assert "project folder 'LOCKED' is in use by a run of project 'locked'" in line, line
    assert f"pid {first.pid} on host {socket.gethostname()}, started " in line, line
    assert "sources in" not in second.stdout      # it did no work


@pytest.mark.slow
def test_slices_of_a_job_array_share_the_project_but_not_with_a_whole_run(
        tmp_path, database_url, data_root):
    config = _slow_config(tmp_path / "locked.yaml", data_root, database_url)
    first = subprocess.Popen([sys.executable, "-m", "skyretriever", "run", str(config),
                              "--start", "0", "--stop", "15"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=_environment())
    try:
        _wait_for_holder(data_root, first)
        whole = _skyretriever("run", str(config), cwd=tmp_path, timeout=60)
        other_slice = _skyretriever("run", str(config), "--start", "15", "--stop", "30",
                                    cwd=tmp_path)
    finally:
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    assert whole.returncode == 1 and "is in use by a run of project 'locked'" in whole.stderr
    assert other_slice.returncode == 0, other_slice.stdout + other_slice.stderr
    assert "15 sources" in other_slice.stdout
