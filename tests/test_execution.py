"""Executors start and stop cleanly: a run that cannot start leaves nothing running."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from skyretriever.execution import ExecutionParameters, make_executor
from skyretriever.pipeline import Worker


def _wait_until(condition, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.slow
def test_a_dask_cluster_whose_start_fails_is_shut_down(tmp_path):
    # The data root cannot be made (a file is in the way): the check that workers see it
    # fails after the LocalCluster has started, and the cluster must not outlive the error.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data root should be\n")
    worker = Worker(None, [], None, str(blocker / "data"))
    executor = make_executor(worker, ExecutionParameters(scheduler="dask", workers=1), 1)
    threads_before = {t.ident for t in threading.enumerate()}
    with pytest.raises(OSError, match="not-a-folder"):
        with executor:
            pytest.fail("the executor started although its data root cannot exist")
    assert _wait_until(lambda: not multiprocessing.active_children()), \
        f"Dask worker processes still running: {multiprocessing.active_children()}"
    assert _wait_until(lambda: not [t for t in threading.enumerate()
                                    if t.ident not in threads_before and not t.daemon]), \
        [t.name for t in threading.enumerate() if t.ident not in threads_before]


def test_a_local_pool_whose_workers_cannot_start_is_shut_down(tmp_path):
    class NotImportable:                     # a class a spawned worker cannot unpickle
        pass

    worker = Worker(None, [], NotImportable(), str(tmp_path / "data"))
    pars = ExecutionParameters(scheduler="local", workers=2, start_method="spawn")
    executor = make_executor(worker, pars, 1)
    with pytest.raises(Exception, match="NotImportable|pickle|local object"):
        with executor:
            pytest.fail("the executor started although its workers cannot")
    assert _wait_until(lambda: not multiprocessing.active_children()), \
        f"worker processes still running: {multiprocessing.active_children()}"
