"""Clear stops: a full disk, a read-only data root or database, a database gone, a dead driver.

A failure of the machine under a run (not of one source) stops the run with
one line that says what and where, leaves nothing half-written, and a later
run, once the cause is fixed, ends as an uninterrupted run would. Worker
processes never outlive their driver.

The disk-full and read-only trials use real small file systems (tmpfs mounts,
read-only remounts and bind mounts), which need root: without it they skip,
except under ``CI=true``, where they must run. Runs that hit a full disk run
in a subprocess, as ``skyretriever run`` does: HDF5 is not to be called again
in a process where it failed for lack of space.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import h5py
import pytest
import sqlalchemy as sa

from skyretriever import Project, database, storage
from skyretriever.database import Session
from skyretriever.errors import DiskFull, is_disk_full
from skyretriever.models import Source
from tests.helpers import snapshot

NUM_SOURCES = 40


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _mount(*arguments: str) -> None:
    subprocess.run(["mount", *arguments], check=True, capture_output=True, text=True)


def _unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points made by a test (unmounted afterwards, last first); skips without root."""
    made: list[Path] = []
    probe = Path(f"/tmp/skyretriever-mount-probe-{uuid.uuid4().hex[:8]}")
    probe.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe))
    except (subprocess.CalledProcessError, FileNotFoundError) as error:
        reason = getattr(error, "stderr", "") or str(error)
        if _in_ci():
            pytest.fail(f"mounting a tmpfs is not permitted here ({reason.strip()}); CI=true "
                        "runs these tests as root", pytrace=False)
        pytest.skip(f"mounting a tmpfs needs root ({reason.strip()})")
    else:
        _unmount(probe)
    finally:
        probe.rmdir()
    yield made
    for path in reversed(made):
        _unmount(path)


def _tmpfs(mounts: list[Path], path: Path, megabytes: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path))
    mounts.append(path)
    return path


def _read_only(mounts: list[Path], path: Path) -> None:
    """Make ``path`` (a folder or a file) read-only with a read-only bind mount over it."""
    _mount("--bind", str(path), str(path))
    mounts.append(path)
    _mount("-o", "remount,ro,bind", str(path))


def _fill(folder: Path, leave_bytes: int) -> Path:
    """Write a filler file that leaves about ``leave_bytes`` free on the file system."""
    filler = folder / "filler.bin"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    size = max(0, free - leave_bytes)
    with open(filler, "wb") as handle:
        block = b"\0" * (1 << 20)
        while size > 0:
            size -= handle.write(block[: min(size, len(block))])
    return filler


def _config(path: Path, data_root: Path, url: str, scheduler: str = "serial",
            execution: str = "", demo: str = "", name: str = "stops",
            num_sources: int = NUM_SOURCES) -> Path:
    path.write_text(textwrap.dedent(f"""
        project: {{name: {name}, obs_names: [demo], progress: false}}
        database: {{url: "{url}"}}
        data_root: "{data_root}"
        catalog: {{default: test, num_sources: {num_sources}}}
        observatories:
          demo: {{download_workers: 2{demo}}}
        execution: {{scheduler: {scheduler}, workers: 2, batch_size: 10{execution}}}
    """))
    return path


def _command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "skyretriever", *arguments]


def _run(config: Path, *options: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(_command(*options, "run", str(config)), capture_output=True, text=True,
                          timeout=timeout)


def _one_line_stop(process: subprocess.CompletedProcess) -> str:
    """The run stopped with exit status 1 (not a signal) and one line on stderr; returns it."""
    assert process.returncode == 1, (process.returncode, process.stdout, process.stderr)
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr
    assert "Traceback" not in process.stderr
    return lines[0]


def _reference(tmp_path: Path, scheduler: str = "serial") -> dict:
    root = tmp_path / "reference"
    config = _config(tmp_path / "reference.yaml", root, f"sqlite:///{tmp_path / 'reference.db'}",
                     scheduler)
    finished = _run(config)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    database.configure(f"sqlite:///{tmp_path / 'reference.db'}")
    return snapshot(Project(cfg_file=config), root)


def _state(config: Path, root: Path) -> dict:
    project = Project(cfg_file=config)
    storage.configure(root)
    return snapshot(project, root)


def _output_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.h5"))


def _no_half_written_files(root: Path) -> None:
    assert not [p for p in root.rglob(f"*{storage.TEMP_SUFFIX}") if p.is_file()]
    for path in root.rglob("*.h5"):
        with h5py.File(path, "r") as handle:     # every file in place is complete
            assert list(handle.keys())


def _sources(url: str) -> list[tuple[str, str, str | None]]:
    database.configure(url)
    if not sa.inspect(database.get_engine()).has_table("sources"):
        return []                                 # stopped before the schema was made
    with Session() as session:
        return sorted(session.execute(sa.select(Source.name, Source.status, Source.error)).all())


# -- full disk -----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["serial", "local"])
def test_disk_full_at_an_hdf5_write_stops_with_the_message_and_a_later_run_finishes(
        tmp_path, mounts, scheduler):
    reference = _reference(tmp_path)
    needed = _output_bytes(tmp_path / "reference")
    root = _tmpfs(mounts, tmp_path / "small", 20)
    url = f"sqlite:///{tmp_path / 'run.db'}"
    config = _config(tmp_path / "run.yaml", root, url, scheduler, ", min_free_mb: 0")
    filler = _fill(root, needed // 3)            # room for about a third of the files

    stopped = _run(config)
    line = _one_line_stop(stopped)                # exit 1, not -11 (SIGSEGV)
    assert f"disk full: {root}" in line and " MB free" in line, line
    _no_half_written_files(root)
    states = _sources(url)
    assert any(status == "done" for _, status, _ in states)         # it got some way
    assert len([s for s in states if s[1] == "done"]) < NUM_SOURCES
    # the batch the full disk interrupted says why
    assert any(status == "failed" and error.startswith("disk full:")
               for _, status, error in states), states

    filler.unlink()
    finished = _run(config)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert _state(config, root) == reference


def test_a_batch_is_not_begun_below_the_free_space_threshold(tmp_path, mounts):
    root = _tmpfs(mounts, tmp_path / "small", 20)
    url = f"sqlite:///{tmp_path / 'run.db'}"
    config = _config(tmp_path / "run.yaml", root, url, execution=", min_free_mb: 50")
    line = _one_line_stop(_run(config))
    free = DiskFull(root, 0).path
    assert line.startswith(f"skyretriever: run stopped: disk full: {free}, ")
    assert "MB free (need 50)" in line
    assert not list(root.rglob("*.h5"))           # nothing of the batch was written
    assert _sources(url) == []


@pytest.mark.slow
def test_disk_full_at_the_histogram_write_stops_with_the_message(tmp_path, mounts):
    reference = _reference(tmp_path)
    root = _tmpfs(mounts, tmp_path / "small", 20)
    url = f"sqlite:///{tmp_path / 'run.db'}"
    config = _config(tmp_path / "run.yaml", root, url, execution=", min_free_mb: 0")
    assert _run(config).returncode == 0
    histogram = Project(cfg_file=config).histogram_path()
    histogram.unlink()                            # the next run must write it again
    filler = _fill(root, 0)

    line = _one_line_stop(_run(config))           # every source skipped; only the .nc is written
    assert f"disk full: {histogram.parent}" in line, line
    assert not histogram.exists()
    _no_half_written_files(root)

    filler.unlink()
    assert _run(config).returncode == 0
    assert _state(config, root) == reference


@pytest.mark.slow
def test_disk_full_at_a_sqlite_commit_stops_with_the_message(tmp_path, mounts):
    reference = _reference(tmp_path)
    folder = _tmpfs(mounts, tmp_path / "dbdisk", 20)
    url = f"sqlite:///{folder / 'run.db'}"
    root = tmp_path / "data"
    config = _config(tmp_path / "run.yaml", root, url, execution=", min_free_mb: 0")
    upgraded = subprocess.run(_command("db", "upgrade", str(config)), capture_output=True,
                              text=True)
    assert upgraded.returncode == 0, upgraded.stderr
    filler = _fill(folder, 48 * 1024)           # room to open it, not to commit a batch

    line = _one_line_stop(_run(config))
    assert f"disk full: {folder}" in line, line
    assert "INSERT" not in line and "UPDATE" not in line       # no SQL in the message
    assert list(root.rglob("*.h5"))               # a batch was worked: its commit failed
    _no_half_written_files(root)

    filler.unlink()
    finished = _run(config)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert _state(config, root) == reference


def test_disk_full_at_the_config_files_stops_with_the_message(tmp_path, mounts):
    root = _tmpfs(mounts, tmp_path / "small", 2)
    url = f"sqlite:///{tmp_path / 'run.db'}"
    config = _config(tmp_path / "run.yaml", root, url, execution=", min_free_mb: 0")
    _fill(root, 0)
    line = _one_line_stop(_run(config))
    folder = root / storage.project_path("STOPS")
    assert f"disk full: {folder}, 0 MB free" in line, line
    assert [p.name for p in folder.iterdir()] == []      # no config.yaml half-written
    assert not [p for p in root.rglob(f"*{storage.TEMP_SUFFIX}") if p.is_file()]
    assert _sources(url) == []


def test_a_process_whose_hdf5_file_met_a_full_disk_goes_on_and_exits_cleanly(tmp_path, mounts):
    """HDF5 that fails a write at file close crashes the process (SIGSEGV) when it next
    cleans up: files are built in memory and written by Python, so HDF5 never fails."""
    root = _tmpfs(mounts, tmp_path / "small", 1)
    script = textwrap.dedent(f"""
        import os
        import pandas as pd
        from skyretriever import storage
        from skyretriever.errors import DiskFull
        storage.configure({str(root)!r})
        frame = pd.DataFrame({{"mjd": range(2000), "mag": [1.5] * 2000}})
        try:
            for i in range(1000):
                storage.write_tables(f"DEMO/RA001/f{{i}}.h5", {{"k": (frame, None)}})
        except DiskFull as error:
            print("stopped:", error, flush=True)
        for i in range(3):
            os.unlink(storage.full_path(f"DEMO/RA001/f{{i}}.h5"))
        info = storage.write_tables("DEMO/RA001/again.h5", {{"k": (frame, None)}})
        print("again:", len(storage.read_table(info.filename, "k", info.checksum)[0]),
              flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr)   # not -11
    stopped, again = done.stdout.strip().splitlines()
    assert stopped.startswith(f"stopped: disk full: {root}, ") and stopped.endswith(" MB free")
    assert again == "again: 2000"
    assert not [p for p in root.rglob(f"*{storage.TEMP_SUFFIX}") if p.is_file()]


def test_disk_full_is_recognised_from_errno_and_from_the_libraries_words():
    assert is_disk_full(OSError(28, "No space left on device"))
    assert is_disk_full(OSError(122, "Disk quota exceeded"))
    wrapped = RuntimeError("commit failed")
    wrapped.__cause__ = Exception("database or disk is full")
    assert is_disk_full(wrapped)
    assert not is_disk_full(OSError(13, "Permission denied"))
    assert not is_disk_full(ValueError("no column mjd"))


# -- read-only places, found at start ------------------------------------------------------
def test_a_read_only_data_root_is_reported_before_any_source(tmp_path, mounts):
    root = _tmpfs(mounts, tmp_path / "small", 5)
    _mount("-o", "remount,ro", str(root))
    url = f"sqlite:///{tmp_path / 'run.db'}"
    config = _config(tmp_path / "run.yaml", root, url)
    line = _one_line_stop(_run(config))
    assert line == (f"skyretriever: run stopped: data root '{root}' is not writable: Read-only "
                    "file system; committed batches are kept, run again once this is fixed")
    assert _sources(url) == []                    # no source was tried
    verbose = _run(config, "-v")                  # -v adds the traceback before the line
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stderr and "OSError: [Errno 30]" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1] == line


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_read_only_sqlite_database_is_reported_before_any_source(tmp_path, mounts, what):
    folder = tmp_path / "db"
    folder.mkdir()
    url = f"sqlite:///{folder / 'run.db'}"
    config = _config(tmp_path / "run.yaml", tmp_path / "data", url)
    assert subprocess.run(_command("db", "upgrade", str(config))).returncode == 0
    # no journal files left beside it: the folder may then be read-only too
    for extra in folder.glob("run.db-*"):
        extra.unlink()
    _read_only(mounts, folder / "run.db" if what == "file" else folder)

    line = _one_line_stop(_run(config))
    place = folder / "run.db" if what == "file" else folder
    assert line.startswith(f"skyretriever: run stopped: database is read-only: the SQLite "
                           f"{what} '{place}' cannot be written"), line
    assert len(line) < 300
    assert not list((tmp_path / "data").rglob("*.h5"))   # no source was tried


@pytest.fixture
def postgres_role(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A login role on the test database: (its URL, its name); dropped afterwards."""
    database.configure(postgres_url)
    database.upgrade()
    name = f"skyretriever_norights_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE ROLE "{name}" LOGIN'))
    url = sa.engine.make_url(postgres_url).set(username=name, password=None)
    yield url.render_as_string(hide_password=False), name
    with admin.connect() as connection:
        connection.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :name"
        ), {"name": name})
        connection.execute(sa.text(f'DROP OWNED BY "{name}"'))
        connection.execute(sa.text(f'DROP ROLE "{name}"'))
    admin.dispose()
    database.configure("sqlite:///:memory:")


@pytest.mark.parametrize("rights", ["none", "read"])
def test_a_postgresql_user_without_rights_is_reported_before_any_source(
        tmp_path, postgres_url, postgres_role, rights):
    url, role = postgres_role
    if rights == "read":
        admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"'))
        admin.dispose()
    done = _run(_config(tmp_path / "run.yaml", tmp_path / "data", url), timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line
    assert "permission denied for table" in line, line
    assert sa.engine.make_url(url).render_as_string(hide_password=True) in line
    if rights == "read":
        assert "cannot be written" in line
    assert not list((tmp_path / "data").rglob("*.h5"))
    database.configure(postgres_url)
    with Session() as session:
        assert session.scalar(sa.select(sa.func.count(Source.id))) == 0


# -- errors in a row, a database file gone -------------------------------------------------
def test_infrastructure_errors_in_a_row_stop_the_run(tmp_path, mounts):
    root = tmp_path / "data"
    raw = root / storage.raw_folder("demo")
    raw.mkdir(parents=True)
    _read_only(mounts, raw)                       # raw data cannot be written, the root can
    url = f"sqlite:///{tmp_path / 'run.db'}"
    config = _config(tmp_path / "run.yaml", root, url,
                     execution=", max_infrastructure_errors: 3")
    line = _one_line_stop(_run(config))
    assert "3 sources in a row failed for a reason of the machine" in line, line
    assert "Read-only file system" in line
    states = _sources(url)
    # the run stopped in its first batch (10 sources) instead of failing all 40 one by one
    assert 0 < len(states) <= 10, states
    assert all(status == "failed" and "in a row" in error for _, status, error in states)


@pytest.mark.slow
def test_a_sqlite_file_deleted_during_the_run_stops_it(tmp_path):
    database_file = tmp_path / "run.db"
    url = f"sqlite:///{database_file}"
    config = _config(tmp_path / "run.yaml", tmp_path / "data", url, demo=", wait_time: 0.1",
                     execution=", batch_size: 2")
    process = subprocess.Popen(_command("run", str(config)), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    done = 0
    while done < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            done = len([s for s in _sources(url) if s[1] == "done"])
        except sa.exc.OperationalError:
            done = 0
    database.configure("sqlite:///:memory:")
    for path in tmp_path.glob("run.db*"):
        path.unlink()
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stdout + stderr
    assert f"database file '{database_file}' was deleted during the run" in stderr, stderr
    assert "done 40" not in stdout


@pytest.mark.slow
def test_a_postgresql_database_dropped_during_the_run_stops_it(tmp_path):
    from tests.conftest import POSTGRES_ADMIN_URL

    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"skyretriever_gone_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as error:
        admin.dispose()
        if _in_ci():
            pytest.fail(f"PostgreSQL is not reachable: {error}", pytrace=False)
        pytest.skip("PostgreSQL is not reachable")
    url = sa.engine.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(False)
    config = _config(tmp_path / "run.yaml", tmp_path / "data", url, demo=", wait_time: 0.1",
                     execution=", batch_size: 2")
    process = subprocess.Popen(_command("run", str(config)), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        done = 0
        while done < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                done = len([s for s in _sources(url) if s[1] == "done"])
            except sa.exc.OperationalError:
                done = 0
        database.configure("sqlite:///:memory:")
        with admin.connect() as connection:                  # the database goes away
            connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    assert process.returncode == 1, stdout + stderr
    line = stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line
    redacted = sa.engine.make_url(url).render_as_string(hide_password=True)
    assert line.startswith(f"skyretriever: run stopped: database {redacted} failed: "), line
    assert "SELECT" not in line and "INSERT" not in line


# -- workers die with their driver ---------------------------------------------------------
def _descendants(pid: int) -> list[int]:
    psutil = pytest.importorskip("psutil")
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pid: int) -> bool:
    psutil = pytest.importorskip("psutil")
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["local", "dask"])
def test_workers_exit_when_their_driver_is_killed(tmp_path, scheduler):
    url = f"sqlite:///{tmp_path / 'run.db'}"
    config = _config(tmp_path / "run.yaml", tmp_path / "data", url, scheduler,
                     demo=", wait_time: 0.05", num_sources=400)
    driver = subprocess.Popen(_command("run", str(config)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while time.monotonic() < deadline and driver.poll() is None:
            workers = _descendants(driver.pid)
            if len(workers) >= 2 and any(s[1] == "done" for s in _sources(url)):
                break
            time.sleep(0.2)
        assert driver.poll() is None and len(workers) >= 2, workers
        os.kill(driver.pid, signal.SIGKILL)       # the driver only, not its process group
        driver.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.2)
        assert not [pid for pid in workers if _alive(pid)]
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_the_errors_module_examples_run():
    import doctest

    import skyretriever.errors

    result = doctest.testmod(skyretriever.errors, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0

