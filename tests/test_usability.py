"""What a user of the command line meets: one run per project at a time, logs for batch
jobs, paths relative to the config file, read-only commands that stay off the network."""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from skyretriever import Project, storage
from skyretriever.parameters import load_yaml
from skyretriever.progress import Progress

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
          demo: {{wait_time: 0.4}}
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


# -- logs for batch jobs ----------------------------------------------------------------------
PROGRESS_LINE = re.compile(
    r"INFO skyretriever\.progress: logs: (\d+) of 30 sources \(done (\d+), skipped (\d+), "
    r"failed (\d+)\), [0-9.]+ per second, ETA (\d+:\d\d:\d\d|unknown)")


def test_the_eta_counts_the_work_left_not_the_rows_skipped():
    ticks = iter([0.0, 3.0, 13.0])
    progress = Progress(100, "demo", bar=True, log_every=None, clock=lambda: next(ticks, 13.0))
    progress.update(60, "skipped")               # found done in 3 s: no work
    progress.update(10)                          # ten sources worked in ten seconds
    assert progress.remaining == 30
    assert progress.eta() == pytest.approx(30.0)  # not 30 / (70 per 13 s) = 5.6 s
    assert progress.line() == ("demo: 70 of 100 sources (done 10, skipped 60, failed 0), "
                               "1.00 per second, ETA 0:00:30")
    assert progress._bar.total == 40             # the bar's total is the work, not the rows
    progress.close()


@pytest.mark.slow
def test_a_run_without_a_terminal_logs_progress_lines_and_to_a_log_file(tmp_path):
    config = tmp_path / "logs.yaml"
    config.write_text(textwrap.dedent("""
        project: {name: logs, obs_names: [demo]}
        data_root: data
        catalog: {default: test, num_sources: 30}
        observatories: {demo: {wait_time: 0.1}}
        execution: {scheduler: serial, batch_size: 10, log_interval: 0.5}
    """))
    log_file = tmp_path / "run.log"
    first = _skyretriever("run", str(config), "--stop", "12", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    result = _skyretriever("run", str(config), "--log", str(log_file), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [PROGRESS_LINE.search(line) for line in result.stderr.splitlines()]
    found = [match for match in lines if match]
    assert len(found) >= 2, result.stderr          # 18 sources at 0.1 s, a line each 0.5 s
    for match in found:
        total, done, skipped, failed = (int(match.group(i)) for i in range(1, 5))
        assert total == done + skipped + failed and failed == 0
        assert skipped == 12 or total < 12          # the first run's rows are skipped
    logged = log_file.read_text()
    assert len(PROGRESS_LINE.findall(logged)) == len(found)
    assert f"data root {tmp_path / 'data'}" in logged      # the run says where it works
    assert "sources in" in result.stdout and "skipped (already done) 12" in result.stdout


# -- paths relative to the config file ---------------------------------------------------------
def _small_repository(root: Path, rows: int = 12) -> Path:
    """``root/configs/small.yaml`` naming ``../data``, ``../catalogs/small.csv`` and
    ``../run.db``, as the shipped configs do; returns the config."""
    (root / "catalogs").mkdir(parents=True)
    (root / "configs").mkdir()
    lines = (REPOSITORY / "catalogs" / "demo.csv").read_text().splitlines()[: rows + 3]
    (root / "catalogs" / "small.csv").write_text("\n".join(lines) + "\n")
    config = root / "configs" / "small.yaml"
    config.write_text(textwrap.dedent("""
        project: {name: small, obs_names: [demo], progress: false}
        data_root: ../data
        database: {url: "sqlite:///../run.db"}
        catalog: {filename: ../catalogs/small.csv, mag_filter: Gaia_G, cache_dir: ../cache}
        execution: {scheduler: serial}
    """))
    return config


@pytest.mark.slow
def test_a_config_runs_from_any_working_folder_with_its_paths_from_its_own_folder(tmp_path):
    config = _small_repository(tmp_path / "repository")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first = _skyretriever("run", str(config), cwd=elsewhere)
    assert first.returncode == 0, first.stdout + first.stderr
    root, db = tmp_path / "repository" / "data", tmp_path / "repository" / "run.db"
    assert (f"project small: data root {root} (new: nothing downloaded there yet), database "
            f"sqlite:///{db}") in first.stdout
    assert "12 sources" in first.stdout and "failed 0" in first.stdout
    assert db.is_file() and (root / "projects" / "SMALL" / "config.yaml").is_file()
    assert list(elsewhere.iterdir()) == []          # nothing made in the working folder
    # The new data root was said (at the start and in the summary), on the first run only.
    assert f"note: the data root {root} was new" in first.stdout
    # From another folder, with the config given relatively: the same project, all done.
    again = _skyretriever("run", "repository/configs/small.yaml", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "skipped (already done) 12" in again.stdout and "new" not in again.stdout
    # Another data root (given on the command line: relative to the working folder) is new.
    moved = _skyretriever("run", str(config), "--data-root", "other", "--database",
                          f"sqlite:///{tmp_path / 'other.db'}", cwd=elsewhere)
    assert moved.returncode == 0, moved.stderr
    assert f"note: the data root {elsewhere / 'other'} was new" in moved.stdout
    # The same database with a new data root: the results' files are elsewhere; refused,
    # saying so (nothing is remade or changed).
    lost = _skyretriever("run", str(config), "--data-root", "third", cwd=elsewhere)
    assert lost.returncode == 1
    assert (f"the database sqlite:///{db} has results of project small, but the data root "
            f"{elsewhere / 'third'} is new (nothing downloaded there): their files are in "
            "another data root" in lost.stderr)
    assert not (elsewhere / "third" / "projects").exists()
    status = _skyretriever("status", str(config), cwd=elsewhere)
    assert "done 12" in status.stdout
    # The database is new, the data root not: said too (the files are adopted).
    new_db = _skyretriever("run", str(config), "--database", f"sqlite:///{tmp_path / 'new.db'}",
                           cwd=elsewhere)
    assert new_db.returncode == 0, new_db.stderr
    assert (f"note: the database sqlite:///{tmp_path / 'new.db'} had no results of project "
            f"small, although its folder {root / 'projects' / 'SMALL'} is in the data root"
            in new_db.stdout)


def test_the_config_hash_does_not_follow_the_folder_of_the_config(tmp_path, monkeypatch):
    first = _small_repository(tmp_path / "one")
    second = _small_repository(tmp_path / "two")
    monkeypatch.chdir(tmp_path)
    hashes = []
    for config in (first, second):
        project = Project(cfg_file=config)
        assert project.data_root == config.parent.parent / "data"
        assert project.catalog.pars.filename == str(config.parent.parent / "catalogs/small.csv")
        assert project.catalog.pars.cache_dir == str(config.parent.parent / "cache")
        assert str(project.database_url) == f"sqlite:///{config.parent.parent / 'run.db'}"
        assert "filename: ../catalogs/small.csv" in project.config_text()
        hashes.append(project.cfg_hash)
    assert hashes[0] == hashes[1]


def test_the_shipped_configs_find_their_files_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    demo = Project(cfg_file=REPOSITORY / "configs" / "demo.yaml")
    assert demo.data_root == (REPOSITORY / "data").resolve()
    assert len(demo.catalog) == 200                 # ../catalogs/demo.csv, from configs/
    extension = Project(cfg_file=REPOSITORY / "configs" / "extension_demo.yaml")
    assert type(extension.analysis).__name__ == "FlareRateAnalysis"   # module_path: [..]
    assert not list(tmp_path.iterdir())


# -- read-only commands stay off the network -----------------------------------------------------
class _CountingServer:
    """A loopback HTTP server that answers 503 to everything and counts what it was asked."""

    def __init__(self) -> None:
        counter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                counter.requests.append(f"{self.command} {self.path}")
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_HEAD = _answer

            def log_message(self, *args) -> None:
                pass

        self.requests: list[str] = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def counting_server():
    server = _CountingServer()
    yield server
    server.close()


@pytest.mark.slow
def test_simulate_prints_read_only_commands_that_work_without_the_network(tmp_path,
                                                                         counting_server):
    # The planet-host project, its archives (catalog, MAST, S3) pointed at a server that
    # counts requests: simulate points them at its simulated archives, nothing else may ask.
    settings = load_yaml(REPOSITORY / "configs" / "exoplanet_hosts.yaml")
    url = counting_server.url
    settings["catalog"].update(exoplanet_archive_url=url, gaia_tap_url=url, max_attempts=1)
    for name in settings["project"]["obs_names"]:
        settings["observatories"][name] = {**settings["observatories"][name], "mast_url": url,
                                           "s3_endpoint_url": url}
    config = tmp_path / "hosts.yaml"
    config.write_text(yaml.safe_dump(settings))
    simulated = subprocess.run(
        [sys.executable, "-m", "skyretriever.testing", "run", "hosts.yaml", "--stars", "8",
         "--data-root", "simulated"], cwd=tmp_path, capture_output=True, text=True,
        timeout=300, env=_environment())
    assert simulated.returncode == 0, simulated.stdout + simulated.stderr
    lines = simulated.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("look at the results"))
    commands = [shlex.split(line) for line in lines[start + 1:]]
    assert [command[1 if command[0].endswith("skyretriever") else 3] for command in commands] \
        == ["status", "sources", "detections", "show", "report", "check"]
    assert counting_server.requests == []
    for command in commands:
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                                timeout=120, env=_environment())
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        assert counting_server.requests == [], command
    status = subprocess.run(commands[0] + ["--format", "json"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env=_environment())
    counts = json.loads(status.stdout)
    assert counts["project"] == "exoplanet_hosts" and counts["sources"]["done"] >= 3
    assert counts["catalog_rows"] == counts["sources"]["done"]
    # Where the project never ran, the command says so in one line, still asking nobody.
    never = _skyretriever("status", "hosts.yaml", "--data-root", "empty", cwd=tmp_path)
    assert never.returncode == 1
    [line] = never.stderr.strip().splitlines()
    assert "project 'exoplanet_hosts' has no results made with this configuration in the data " \
           f"root '{tmp_path / 'empty'}'" in line, line
    assert counting_server.requests == []


def test_an_unexpected_error_is_one_line_and_its_traceback_comes_with_v(tmp_path,
                                                                       counting_server):
    config = tmp_path / "remote.yaml"
    config.write_text(textwrap.dedent(f"""
        project: {{name: remote, obs_names: [demo]}}
        data_root: data
        catalog: {{default: exoplanet_hosts, exoplanet_archive_url: "{counting_server.url}",
                   max_attempts: 1, cache_dir: cache}}
    """))
    quiet = _skyretriever("run", str(config), cwd=tmp_path, timeout=120)
    assert quiet.returncode == 1
    [line] = quiet.stderr.strip().splitlines()
    assert line.startswith("skyretriever: error: ") and "(-v shows the traceback)" in line
    loud = _skyretriever("run", "-v", str(config), cwd=tmp_path, timeout=120)
    assert loud.returncode == 1 and "Traceback (most recent call last)" in loud.stderr
