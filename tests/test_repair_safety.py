"""A repair that never destroys, writers told apart by their locks, and a report swap without a gap.

Issue 14, findings 1-4 and 10: ``check --repair`` deleted the demo's reduced files
(project ``demo`` and observatory ``demo`` shared ``DATA_ROOT/DEMO`` before raw data and
projects got folders of their own), the files of a
run's batch not yet committed, every ``*.tmp`` file under the data root and files
behind a symbolic link; and a run cleared a live run's temporary folders when its pid
was not alive in this PID namespace. Also: an unreadable histogram file stopped every
run and check, and a report killed between its two renames lost the old report.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from skyretriever import Project, storage
from skyretriever.analysis import Histogram
from skyretriever.checker import check_project
from skyretriever.cli import main
from skyretriever.report import write_report

#: The demo observatory's raw folder and the demo project's folder, relative to the data root.
RAW = storage.raw_folder("demo")
PROJECT = storage.project_path("DEMO")


def _listing(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under the root (links not followed) with its size and SHA-256."""
    files = {}
    for parent, _folders, names in os.walk(root):
        for name in names:
            path = Path(parent, name)
            if path.is_file() and not path.is_symlink():
                files[path.relative_to(root).as_posix()] = (
                    path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return files


def _demo(project_factory, **kwargs) -> Project:
    """A project named ``demo`` on the ``demo`` observatory (folders ``raw/DEMO``, ``projects/DEMO``)."""
    kwargs.setdefault("catalog_kwargs", {"default": "test", "num_sources": 30})
    return project_factory(name="demo", obs_names=["demo"], **kwargs)


# -- finding 1: the demo followed by check is clean, and repair changes nothing ------------------
def test_check_after_a_clean_demo_run_is_clean_and_repair_changes_nothing(project_factory,
                                                                          data_root):
    project = _demo(project_factory, execution_kwargs={"scheduler": "local", "workers": 2})
    summary = project.run()
    assert summary.counts["failed"] == 0 and summary.counts["done"] > 20
    assert project.output_folder == data_root / PROJECT
    reduced = sorted(data_root.glob(f"{PROJECT}/RA*/*_reduced.h5"))
    assert len(reduced) > 10

    report = check_project(project)
    assert report.clean, str(report)
    before = _listing(data_root)
    repaired = check_project(project, repair=True)
    assert repaired.clean, str(repaired)
    assert _listing(data_root) == before
    assert not (data_root / storage.QUARANTINE_FOLDER).exists()
    assert all(path.is_file() for path in reduced)


# -- finding 3: the user's own *.tmp files -------------------------------------------------------
def test_the_users_tmp_files_survive_repair(project_factory, data_root):
    project = _demo(project_factory)
    project.run()
    mine = {
        data_root / "notes.tmp": b"my notes",
        data_root / RAW / "rsync_inprogress.tmp": b"half a copy",
        data_root / RAW / "RA010" / "rsync_inprogress.tmp": b"another",
        data_root / PROJECT / "RA010" / "rsync_inprogress.tmp": b"a third",
        data_root / "incoming" / "x.h5.tmp": b"a download of mine",
    }
    for path, content in mine.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    report = check_project(project, repair=True)
    assert report.clean, str(report)
    assert {path: path.read_bytes() for path in mine} == mine


def test_only_files_named_as_products_and_owned_by_no_row_are_quarantined(project_factory,
                                                                          data_root):
    project = _demo(project_factory)
    project.run()
    other = project_factory(name="other", obs_names=["demo"],
                            catalog_kwargs={"default": "test", "num_sources": 4})
    other.run()                        # its raw files are shared; its reduced files are its own
    stray = data_root / PROJECT / "RA010" / "DEMO_photometry_nobody_reduced.h5"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"made by nobody")
    foreign = data_root / RAW / "RA010" / "my_table.h5"              # not a name we write
    foreign.parent.mkdir(parents=True, exist_ok=True)
    foreign.write_bytes(b"the user's")
    before = _listing(data_root)

    report = check_project(project, repair=True)
    assert [(f.kind, f.where) for f in report.findings] == [
        ("file without row", f"{PROJECT}/RA010/DEMO_photometry_nobody_reduced.h5")], str(report)
    moved = report.findings[0].repair
    assert moved.startswith(f"moved to {storage.QUARANTINE_FOLDER}/") and moved.endswith(
        f"/{PROJECT}/RA010/DEMO_photometry_nobody_reduced.h5")
    target = data_root / moved.removeprefix("moved to ")
    assert target.read_bytes() == b"made by nobody" and not stray.exists()
    after = _listing(data_root)
    assert {k: v for k, v in before.items()
            if k != f"{PROJECT}/RA010/DEMO_photometry_nobody_reduced.h5"} \
        == {k: v for k, v in after.items() if not k.startswith(storage.QUARANTINE_FOLDER)}
    assert check_project(other).clean and check_project(project).clean


# -- finding 2: repair during a run is refused -----------------------------------------------------
def test_repair_is_refused_while_a_run_uses_the_data_root(database_url, data_root, tmp_path,
                                                          capsys):
    config = tmp_path / "slow.yaml"
    config.write_text(yaml.safe_dump({
        "project": {"name": "slow", "obs_names": ["demo"], "progress": False},
        "database": {"url": database_url}, "data_root": str(data_root),
        "catalog": {"default": "test", "num_sources": 24},
        "observatories": {"demo": {"wait_time": 0.15}},
        "execution": {"scheduler": "serial", "batch_size": 4},
    }))
    process = subprocess.Popen([sys.executable, "-m", "skyretriever", "run", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(data_root.glob(f"{RAW}/RA*/DEMO_photometry_*.h5")):   # on batch 1
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        before = _listing(data_root / RAW)
        assert main(["check", str(config), "--repair"]) == 1
        message = capsys.readouterr().err
        assert f"a run of project 'slow' (pid {process.pid}) is using {str(data_root)!r}; " \
               "try again when it ends" in message, message
        assert process.poll() is None, "the run ended before the repair was tried"
        assert set(before) <= set(_listing(data_root / RAW))           # nothing was moved
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert main(["check", str(config)]) == 0, capsys.readouterr().out
    assert main(["check", str(config), "--repair"]) == 0


def test_a_run_does_not_start_while_a_repair_holds_the_data_root(project_factory, data_root):
    project = _demo(project_factory)
    with storage.data_root_lock("check --repair of project 'demo'", exclusive=True), \
            pytest.raises(storage.DataRootBusy, match=r"check --repair of project 'demo' "
                          rf"\(pid {os.getpid()}\) is using"):
        project.run()
    assert not list(data_root.glob(f"{RAW}/RA*/*.h5"))
    assert project.run().counts["done"] > 0                    # and once it is over, it runs


# -- finding 4: a symbolic link inside the data root ---------------------------------------------
def test_a_link_out_of_the_data_root_is_neither_followed_by_repair_nor_written_through(
        project_factory, data_root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "DEMO_photometry_stranger.h5").write_bytes(b"someone else's file")
    (outside / "keep.txt").write_text("keep me")
    project = _demo(project_factory)
    project.run()
    (data_root / RAW / "RA359").symlink_to(outside, target_is_directory=True)
    before = _listing(outside)

    report = check_project(project, repair=True)
    assert [(f.kind, f.where) for f in report.findings] == [("symbolic link", f"{RAW}/RA359")], \
        str(report)
    assert str(outside) in report.findings[0].detail
    assert _listing(outside) == before

    with pytest.raises(storage.StorageError, match="outside the data root"):
        storage.full_path(f"{RAW}/RA359/DEMO_photometry_x.h5")
    # A run looks for a file to adopt where it would be: found through the link, it is
    # refused, not read; nothing there is nothing to adopt.
    with pytest.raises(storage.StorageError, match="outside the data root"):
        storage.raw_file_on_disk(f"{RAW}/RA359/DEMO_photometry_stranger.h5")
    assert storage.raw_file_on_disk(f"{RAW}/RA359/DEMO_photometry_nobody.h5") is None
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (data_root / storage.project_path("LINKED")).symlink_to(elsewhere, target_is_directory=True)
    linked = project_factory(name="linked", obs_names=["demo"],
                             catalog_kwargs={"default": "test", "num_sources": 3})
    with pytest.raises(storage.StorageError, match="outside the data root"):
        linked.run()
    assert list(elsewhere.iterdir()) == []


# -- finding 10 and writers: a temporary folder is alive while its lock is held ------------------
HOLDER = """
import fcntl, os, sys
folder = sys.argv[1]
os.makedirs(folder, exist_ok=True)
handle = open(os.path.join(folder, sys.argv[2]), "a")
fcntl.flock(handle, fcntl.LOCK_EX)
open(os.path.join(folder, "half.h5.abcd.tmp"), "w").write("half")
print("holding", flush=True)
sys.stdin.read()
"""

WRITER = """
import sys
from skyretriever import storage
storage.configure(sys.argv[1])
half = storage.temporary_path(storage.full_path("DEMO/RA001/x.h5"))
half.write_bytes(b"half")
print(half.parent, flush=True)
sys.stdin.read()
"""


def _hold(folder: Path) -> subprocess.Popen:
    """Another process (another namespace, for all this one can tell) holding a folder's lock."""
    lock_name = storage.WRITER_LOCK
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), lock_name],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "holding"
    return process


def _release(process: subprocess.Popen) -> None:
    process.stdin.close()
    process.wait(timeout=30)
    process.stdout.close()


def test_a_live_writer_of_another_process_is_never_cleared(data_root):
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(data_root)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    folder = Path(process.stdout.readline().strip())
    assert folder.name == f"{storage._HOST}.{process.pid}" and folder.is_dir()
    assert storage.writer_alive(folder.name) is True
    assert folder not in storage.clean_temporary() and folder.is_dir()
    process.kill()                                         # killed half-way through a file
    process.wait()
    process.stdout.close()
    process.stdin.close()
    assert storage.writer_alive(folder.name) is False
    assert folder in storage.clean_temporary() and not folder.exists()


def test_a_folder_named_for_a_live_pid_without_its_lock_is_a_dead_writers(data_root):
    mine = storage.temporary_path(storage.full_path("DEMO/RA001/x.h5")).parent
    claimed = data_root / storage.TEMP_FOLDER / f"{storage._HOST}.1"     # pid 1 is alive
    claimed.mkdir(parents=True)
    (claimed / "half.h5.abcd.tmp").write_bytes(b"half")
    assert storage.writer_alive(claimed.name) is False
    assert storage.clean_temporary() == [claimed]
    assert not claimed.exists() and mine.is_dir() and storage.writer_alive(mine.name)


def test_two_hosts_of_one_name_in_other_pid_namespaces_keep_their_folders(data_root):
    """Finding 10: the folder's name says a pid that is dead here, or that is another process
    here; only the lock says whether its writer (in its own namespace) is alive."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    base = data_root / storage.TEMP_FOLDER
    dead_pid_here = base / f"{storage._HOST}.{gone}"
    live_pid_here = base / f"{storage._HOST}.{os.getppid()}"
    holders = [_hold(dead_pid_here), _hold(live_pid_here)]
    try:
        assert storage.clean_temporary() == []
        assert dead_pid_here.is_dir() and live_pid_here.is_dir()
        assert storage.writer_alive(dead_pid_here.name) and storage.writer_alive(live_pid_here.name)
    finally:
        for process in holders:
            _release(process)
    assert storage.clean_temporary() == sorted([dead_pid_here, live_pid_here])
    assert not dead_pid_here.exists() and not live_pid_here.exists()


def test_a_live_namesake_in_another_container_keeps_its_folder(data_root):
    """Same host name, same pid, another PID namespace: this process writes elsewhere."""
    namesake = data_root / storage.TEMP_FOLDER / f"{storage._HOST}.{os.getpid()}"
    holder = _hold(namesake)
    try:
        mine = storage.temporary_path(storage.full_path("DEMO/RA001/x.h5")).parent
        assert mine != namesake and mine.name.startswith(f"{namesake.name}.")
        assert storage.writer_alive(mine.name) and storage.writer_alive(namesake.name)
        assert storage.clean_temporary() == []
        assert (namesake / "half.h5.abcd.tmp").read_text() == "half"
    finally:
        _release(holder)
    assert storage.clean_temporary() == [namesake] and mine.is_dir()


def test_the_checker_leaves_live_writers_alone_and_quarantines_dead_ones(project_factory,
                                                                         data_root):
    project = _demo(project_factory)
    project.run()
    base = data_root / storage.TEMP_FOLDER
    live = base / f"{storage._HOST}.999999998"
    holder = _hold(live)
    dead = base / f"{storage._HOST}.1"
    dead.mkdir()
    (dead / "half.h5.abcd.tmp").write_bytes(b"half")
    try:
        report = check_project(project, repair=True)
        assert [(f.kind, f.where) for f in report.findings] == [
            ("temporary file", f"{storage.TEMP_FOLDER}/{dead.name}")], str(report)
        assert (live / "half.h5.abcd.tmp").is_file()
    finally:
        _release(holder)
    moved = data_root / report.findings[0].repair.removeprefix("moved to ")
    assert (moved / "half.h5.abcd.tmp").read_bytes() == b"half"


def _forked_writer(queue, release) -> None:
    queue.put(str(storage.temporary_path(storage.full_path("DEMO/RA001/x.h5")).parent))
    release.wait(30)


def test_a_forked_worker_locks_a_folder_of_its_own(data_root):
    parent = storage.temporary_path(storage.full_path("DEMO/RA001/x.h5")).parent
    context = multiprocessing.get_context("fork")
    queue, release = context.Queue(), context.Event()
    child = context.Process(target=_forked_writer, args=(queue, release))
    child.start()
    try:
        folder = Path(queue.get(timeout=30))
        assert folder != parent and folder.name == f"{storage._HOST}.{child.pid}"
        assert storage.writer_alive(folder.name) and storage.writer_alive(parent.name)
        assert storage.clean_temporary() == []
    finally:
        release.set()
        child.join(30)
    assert storage.writer_alive(parent.name) and not storage.writer_alive(folder.name)
    assert storage.clean_temporary() == [folder] and parent.is_dir()


# -- damaged histogram ---------------------------------------------------------------------------
def test_an_unreadable_histogram_is_rebuilt_by_repair_and_by_the_run(project_factory, data_root,
                                                                     caplog):
    project = _demo(project_factory)
    project.run()
    path = project.histogram_path()
    good = Histogram.load(path)
    assert good.total("lightcurves") > 0
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 300)                       # damaged

    report = check_project(project)
    assert [f.kind for f in report.findings] == ["histogram"], str(report)
    assert "unreadable" in report.findings[0].detail
    repaired = check_project(project, repair=True)
    assert "rebuilt from the" in repaired.findings[0].repair
    assert Histogram.load(path) == good and check_project(project).clean
    assert len(list((data_root / storage.QUARANTINE_FOLDER).rglob(path.name))) == 1

    path.write_bytes(b"not netCDF at all")
    with caplog.at_level(logging.WARNING, logger="skyretriever.project"):
        summary = project.run()
    assert summary.counts["failed"] == 0
    assert "rebuilt from the committed batches" in caplog.text
    assert Histogram.load(path) == good and check_project(project).clean


# -- report swap ---------------------------------------------------------------------------------
KILLED_BETWEEN_RENAMES = """
import os, signal, sys
from skyretriever import Project, storage
from skyretriever.report import write_report

#: The demo observatory's raw folder and the demo project's folder, relative to the data root.
RAW = storage.raw_folder("demo")
PROJECT = storage.project_path("DEMO")
# as on a system that cannot swap two paths in one step: the old report is renamed aside
storage._exchange = lambda first, second: False
rename = os.rename
def rename_then_die(source, target):
    rename(source, target)
    if os.path.basename(str(source)) == "report":     # the old report has just moved aside
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = rename_then_die
write_report(Project(cfg_file=sys.argv[1]), top=0, plots=False, progress=False)
"""

KILLED_AFTER_THE_SWAP = """
import os, shutil, signal, sys
from skyretriever import Project
from skyretriever.report import MARKER_FILE, write_report
rename, rmtree = os.rename, shutil.rmtree
def never(source, target):
    if os.path.basename(str(source)) == "report":
        raise AssertionError("the old report was renamed away: a moment without a report")
    rename(source, target)
def die(path, *args, **kwargs):                  # the old report, swapped out, is removed next
    if os.path.exists(os.path.join(path, MARKER_FILE)):
        os.kill(os.getpid(), signal.SIGKILL)
    rmtree(path, *args, **kwargs)
os.rename, shutil.rmtree = never, die
write_report(Project(cfg_file=sys.argv[1]), top=0, plots=False, progress=False)
"""


def _swap_project(database_url: str, data_root: Path, tmp_path: Path) -> tuple[Path, Project]:
    config = tmp_path / "swap.yaml"
    config.write_text(yaml.safe_dump({
        "project": {"name": "swap", "obs_names": ["demo"], "progress": False},
        "database": {"url": database_url}, "data_root": str(data_root),
        "catalog": {"default": "test", "num_sources": 6},
        "execution": {"scheduler": "serial"},
    }))
    project = Project(cfg_file=str(config))
    project.run()
    return config, project


def test_a_report_killed_between_its_renames_keeps_the_old_report(database_url, data_root,
                                                                  tmp_path):
    config, project = _swap_project(database_url, data_root, tmp_path)
    index = write_report(project, plots=False, progress=False)
    target = index.parent
    good = _listing(target)

    process = subprocess.run([sys.executable, "-c", KILLED_BETWEEN_RENAMES, str(config)],
                             capture_output=True, text=True)
    assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
    assert project.run().counts["skipped"] == 6     # the next run clears dead writers' folders
    previous = target.with_name(f".{target.name}.previous")
    assert not target.exists() and _listing(previous) == good   # aside, and kept by the run
    restored = storage.restore_folder(target)       # what the next report does first
    assert restored == target and _listing(target) == good and not previous.exists()

    assert write_report(project, plots=False, progress=False) == index
    assert set(_listing(target)) == set(good)
    assert not list(target.parent.glob(".report*"))


def test_a_report_killed_right_after_its_swap_leaves_the_new_one(database_url, data_root,
                                                                 tmp_path):
    """Where paths can be swapped in one step there is no moment without a report."""
    config, project = _swap_project(database_url, data_root, tmp_path)
    index = write_report(project, plots=False, progress=False)
    target = index.parent
    old_marker = (target / ".skyretriever-report").read_text()
    process = subprocess.run([sys.executable, "-c", KILLED_AFTER_THE_SWAP, str(config)],
                             capture_output=True, text=True)
    assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
    new = _listing(target)
    assert (target / ".skyretriever-report").read_text() != old_marker    # the new report
    assert {"index.html", "failures.html", ".skyretriever-report"} <= set(new)
    assert project.run().counts["skipped"] == 6     # clears the old one, swapped out
    assert _listing(target) == new
    assert not list((data_root / storage.TEMP_FOLDER).rglob(".skyretriever-report"))
