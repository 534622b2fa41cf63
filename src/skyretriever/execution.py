"""How the work is spread: serially, on one machine's cores, or on a Dask cluster.

Downloads are I/O bound and run on threads of the driver process (bounded per
archive by the HTTP layer); reduction and analysis are CPU bound and run in
worker processes: a local process pool, or the workers of a
``dask.distributed`` cluster. The pools are made once per run (never per
batch), so a slow source holds up only its own slot. Workers get the
project's observatories and analysis once and return small plain results;
only the driver writes to the database.

Examples
--------
In YAML::

    execution:
      scheduler: dask
      dask_address: tcp://scheduler.cluster:8786   # omit for a LocalCluster
"""

from __future__ import annotations

import abc
import logging
import multiprocessing
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal

from skyretriever import database
from skyretriever.analysis.training import (
    Examples,
    keep_example_input,
    make_example_chunk,
)
from skyretriever.errors import RunStopped
from skyretriever.parameters import ParameterError, Parameters, parameter
from skyretriever.pipeline import SourceResult, SourceTask, Worker, download_source

__all__ = ["DaskExecutor", "ExecutionParameters", "Executor", "LocalExecutor", "die_with_parent",
           "make_examples_in_processes", "make_executor", "run_in_processes"]

log = logging.getLogger(__name__)

#: Most sources handed to a CPU worker at once, and the fewest chunks per worker in a batch.
_MOST_PER_CHUNK = 8
_CHUNKS_PER_WORKER = 4


class ExecutionParameters(Parameters):
    """How the work of a run is spread (none of these change results)."""

    scheduler: Literal["serial", "local", "dask"] = parameter(
        "local",
        "serial (one thread, for debugging), local (threads and worker processes), "
        "or dask (a dask.distributed cluster).",
        critical=False,
    )
    workers: int | None = parameter(
        None, "Worker processes for reduction and analysis (default: the number of cores).",
        critical=False, ge=1,
    )
    download_threads: int | None = parameter(
        None, "Threads for downloads (default: the largest download_workers of the observatories).",
        critical=False, ge=1,
    )
    verify_files: Literal["quick", "full"] = parameter(
        "quick",
        "How a run decides that an existing product file is intact: quick trusts a file "
        "whose size and modification time match its row and reads (SHA-256) only the others; "
        "full reads every file. Loading data always checks the SHA-256, and so does "
        "`skyretriever check`.",
        critical=False,
    )
    batch_size: int = parameter(
        500, "Catalog rows per batch: one set of queries and one commit per batch.",
        critical=False, ge=1,
    )
    start_method: Literal["fork", "spawn", "forkserver"] | None = parameter(
        None, "How local worker processes start (default: fork on Linux, spawn elsewhere).",
        critical=False,
    )
    dask_address: str | None = parameter(
        None, "Address of a running Dask scheduler; none starts a LocalCluster of `workers`.",
        critical=False,
    )
    min_free_mb: int = parameter(
        200, "Megabytes that must be free on the data root (and a SQLite database's disk) "
        "before each batch; below that the run stops with 'disk full' before writing it.",
        critical=False, ge=0,
    )
    max_infrastructure_errors: int = parameter(
        5, "Sources in a row that may fail for a reason of the machine (permissions, I/O "
        "errors) before the run stops instead of failing every remaining source.",
        critical=False, ge=1,
    )
    log_interval: float = parameter(
        60.0, "Seconds between two progress lines in the log (where stderr is no terminal, "
        "and in `skyretriever run --log FILE`): done, skipped, failed, rate, ETA.",
        critical=False, gt=0,
    )


class Executor:
    """Runs the download stage and the CPU stage of each batch; use as a context manager.

    This base class runs everything in the calling thread (``scheduler: serial``).
    """

    def __init__(self, worker: Worker, pars: ExecutionParameters, download_threads: int) -> None:
        self.worker = worker
        self.pars = pars
        self.download_threads = pars.download_threads or download_threads
        self._threads: ThreadPoolExecutor | None = None

    def __enter__(self) -> Executor:
        self.worker.setup()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close(cancel=exc_info[0] is not None)

    def close(self, cancel: bool = False) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=cancel)
            self._threads = None

    def run_batch(self, tasks: list[SourceTask], reduce: bool, analyze: bool,
                  on_result: Callable[[SourceResult], None]) -> list[SourceResult]:
        """Download, then reduce and analyse every task of a batch; results in completion order."""
        results: list[SourceResult] = []
        for task in tasks:
            download_source(task, self.worker.observatories, reduce)
            results.append(self.worker.process(task, reduce=reduce, analyze=analyze))
            on_result(results[-1])
        return results


class _PoolExecutor(Executor, abc.ABC):
    """Downloads on driver threads feeding a pool of CPU workers (processes or a cluster)."""

    def __enter__(self) -> _PoolExecutor:
        # The CPU pool first: local workers are forked while no other thread runs.
        try:
            self._start_pool()
        except BaseException:
            self.close(cancel=True)   # a cluster started before a later check failed
            raise
        self._threads = ThreadPoolExecutor(self.download_threads, thread_name_prefix="download")
        return self

    @abc.abstractmethod
    def _start_pool(self) -> None:
        """Start the CPU workers."""

    @abc.abstractmethod
    def _submit(self, tasks: list[SourceTask], reduce: bool, analyze: bool) -> Any:
        """Send a few tasks to one CPU worker; returns a future of their results."""

    def _chunk_size(self, num_tasks: int) -> int:
        """Sources per submission: enough to make the cost of a hand-over small, few enough
        that every worker gets several chunks of a batch (so none waits at its end)."""
        workers = self.pars.workers or os.cpu_count() or 1
        return max(1, min(_MOST_PER_CHUNK, num_tasks // (_CHUNKS_PER_WORKER * workers)))

    @abc.abstractmethod
    def _completed(self, futures: Iterable[Any]) -> Iterator[Any]:
        """The futures in the order they finish."""

    def _lost(self, future: Any, error: BaseException) -> bool:
        """True when ``error`` means the worker was lost (not a bug in our code)."""
        return False

    def _discard_pool(self, future: Any) -> None:
        """Stop using the workers after one of them stopped the run (a full disk)."""

    def run_batch(self, tasks: list[SourceTask], reduce: bool, analyze: bool,
                  on_result: Callable[[SourceResult], None]) -> list[SourceResult]:
        results: list[SourceResult] = []

        def finish(result: SourceResult) -> None:
            results.append(result)
            on_result(result)

        downloads = [self._threads.submit(download_source, task, self.worker.observatories, reduce)
                     for task in tasks]
        # Downloaded sources go to the workers a few at a time: one hand-over (pickling,
        # queues, a wake-up of the driver) per chunk instead of per source keeps them busy.
        size = self._chunk_size(len(tasks))
        processing: dict[Any, list[SourceTask]] = {}
        ready: list[SourceTask] = []
        for future in as_completed(downloads):
            task = future.result()
            if task.skip:
                finish(self.worker.process(task, reduce=reduce, analyze=analyze))
                continue
            ready.append(task)
            if len(ready) >= size:
                processing[self._submit(ready, reduce, analyze)] = ready
                ready = []
        if ready:
            processing[self._submit(ready, reduce, analyze)] = ready
        for future in self._completed(list(processing)):
            chunk = processing[future]
            try:
                for result in future.result():
                    finish(result)
            except Exception as error:
                if isinstance(error, RunStopped):
                    # A worker that hit a full disk calls HDF5 no more: no worker of this
                    # pool is used again (a new pool is made if the executor is reused).
                    self._discard_pool(future)
                    raise
                if not self._lost(future, error):
                    raise
                # A worker died (killed, out of memory): its sources are recorded as failed,
                # the next run retries them, and the rest of the work goes on.
                for task in chunk:
                    finish(SourceResult(row=task.row, raw_new=task.raw_new, status="failed",
                                        error=f"worker process died: {error}"[:2000]))
        return results


_LOCAL_WORKER: Worker | None = None
_PR_SET_PDEATHSIG = 1
_WATCHED_PARENT: dict[str, int | None] = {"pid": None}


def _watch_parent(parent: int, interval: float) -> None:
    while True:
        time.sleep(interval)
        if os.getppid() != parent:
            os._exit(1)           # the driver is gone: nothing will collect what we make


def die_with_parent(expected_parent: int | None = None, interval: float = 1.0) -> None:
    """Make this (worker) process exit when its parent dies, even by SIGKILL.

    On Linux the kernel sends SIGKILL on the parent's death (``PR_SET_PDEATHSIG``);
    everywhere a daemon thread checks every ``interval`` seconds whether the
    parent changed (the process was re-parented). ``expected_parent``, when
    known, catches a parent that died before this was called. Safe to call again.
    """
    parent = os.getppid()
    if expected_parent is not None and parent != expected_parent:
        os._exit(1)               # the driver died before this worker got here
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the watchdog below still works
            pass
    if parent != os.getppid():
        os._exit(1)               # the parent died before the signal was armed
    if _WATCHED_PARENT["pid"] != parent:
        _WATCHED_PARENT["pid"] = parent
        threading.Thread(target=_watch_parent, args=(parent, interval), daemon=True,
                         name="parent-watchdog").start()


def _initialize_process(driver: int | None, setup: Callable[..., Any] | None,
                        setup_args: tuple[Any, ...]) -> None:
    die_with_parent(driver)
    if setup is not None:
        setup(*setup_args)


def run_in_processes(function: Callable[..., Any], calls: Sequence[tuple[Any, ...]],
                     workers: int, start_method: str | None = None,
                     setup: Callable[..., Any] | None = None, setup_args: tuple[Any, ...] = ()
                     ) -> Iterator[tuple[int, Any]]:
    """``function(*call)`` for each of ``calls`` in ``workers`` processes: (index, result) as each ends.

    ``setup(*setup_args)`` runs once in each process first; with the fork start
    method (the default on Linux) its arguments are inherited, not pickled, so
    large inputs are best given there. The processes end with this one. An
    exception of a call is raised here, and the calls not started are cancelled.
    """
    method = start_method or ("fork" if sys.platform.startswith("linux") else "spawn")
    with ProcessPoolExecutor(max_workers=max(1, workers),
                             mp_context=multiprocessing.get_context(method),
                             initializer=_initialize_process,
                             initargs=(os.getpid() if method != "forkserver" else None, setup,
                                       setup_args)) as pool:
        futures = {pool.submit(function, *call): index for index, call in enumerate(calls)}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:
                future.cancel()


def make_examples_in_processes(analysis: Any, stars: Any, number: int, seed: int, workers: int,
                               start_method: str | None = None, keep_series: bool = False,
                               progress: Callable[[int, str], None] | None = None,
                               chunk: int = 25) -> Examples:
    """:func:`~skyretriever.analysis.training.make_examples` in chunks on ``workers`` processes.

    The chunks (``chunk`` examples each, a few seconds of work) are joined in
    order: the examples are those one process makes (each draws from its own
    generator), whatever the number of workers. ``progress(n, "made" or
    "dropped")`` is called as each chunk ends.
    """
    begin = time.perf_counter()
    calls = [(first, min(chunk, number - first)) for first in range(0, number, chunk)]
    chunks: dict[int, Examples] = {}
    for index, made in run_in_processes(make_example_chunk, calls, workers, start_method,
                                        setup=keep_example_input,
                                        setup_args=(analysis, stars, seed, keep_series)):
        chunks[index] = made
        if progress is not None:
            progress(len(made), "made")
            progress(sum(made.dropped.values()), "dropped")
    joined = Examples.joined([chunks[index] for index in range(len(calls))])
    joined.seconds = time.perf_counter() - begin
    return joined


def _initialize_local_worker(worker: Worker, driver: int | None) -> None:
    global _LOCAL_WORKER
    die_with_parent(driver)
    _LOCAL_WORKER = worker
    worker.setup()


def _process_in_local_worker(tasks: list[SourceTask], reduce: bool, analyze: bool
                             ) -> list[SourceResult]:
    return [_LOCAL_WORKER.process(task, reduce=reduce, analyze=analyze) for task in tasks]


def _process_id() -> int:
    return os.getpid()


class LocalExecutor(_PoolExecutor):
    """Threads for downloads and a process pool for the CPU work (``scheduler: local``)."""

    _processes: ProcessPoolExecutor | None = None

    def _start_pool(self) -> None:
        method = self.pars.start_method or ("fork" if sys.platform.startswith("linux") else "spawn")
        workers = self.pars.workers or os.cpu_count() or 1
        self._processes = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context(method),
            initializer=_initialize_local_worker,
            # forkserver workers are children of the fork server, not of this driver
            initargs=(self.worker, os.getpid() if method != "forkserver" else None),
        )
        # Start every worker now (fork copies no running threads this way).
        for future in [self._processes.submit(_process_id) for _ in range(workers)]:
            future.result()

    def _submit(self, tasks: list[SourceTask], reduce: bool, analyze: bool) -> Future:
        if self._processes is None:
            self._start_pool()
        future = self._processes.submit(_process_in_local_worker, tasks, reduce, analyze)
        future.pool = self._processes
        return future

    def _completed(self, futures: Iterable[Future]) -> Iterator[Future]:
        return as_completed(futures)

    def _lost(self, future: Future, error: BaseException) -> bool:
        if not isinstance(error, BrokenProcessPool):
            return False
        if future.pool is self._processes:
            self._processes.shutdown(wait=False, cancel_futures=True)
            self._processes = None                     # a new pool for the next submission
        return True

    def _discard_pool(self, future: Future) -> None:
        if future.pool is self._processes:
            self._processes.shutdown(wait=True, cancel_futures=True)
            self._processes = None                     # a new pool for the next submission

    def close(self, cancel: bool = False) -> None:
        super().close(cancel)
        if self._processes is not None:
            self._processes.shutdown(wait=True, cancel_futures=cancel)
            self._processes = None


_DASK_WORKERS: dict[str, Worker] = {}


def _process_on_dask(worker: Worker, tasks: list[SourceTask], reduce: bool, analyze: bool
                     ) -> list[SourceResult]:
    key = worker.data_root
    if _DASK_WORKERS.get(key) is not worker:
        worker.setup()
        _DASK_WORKERS[key] = worker
    return [worker.process(task, reduce=reduce, analyze=analyze) for task in tasks]


def _prepare_dask_process(paths: list[str]) -> None:
    # Worker processes of a LocalCluster import the project's own modules (extensions/).
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)


def _can_see(path: str) -> bool:
    return os.path.exists(path)


class DaskExecutor(_PoolExecutor):
    """Threads for downloads and a ``dask.distributed`` cluster for the CPU work.

    With ``dask_address`` the run joins a running cluster, which needs the data
    root on a shared file system and a PostgreSQL database; otherwise it starts a
    ``LocalCluster`` of ``workers`` single-threaded processes for the run.
    """

    _client = None
    _cluster = None
    _worker_future = None

    def _start_pool(self) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:  # pragma: no cover - distributed is a pinned requirement
            raise ParameterError("execution.scheduler dask needs the 'distributed' package") from None
        address = self.pars.dask_address
        if address and database.get_url().get_backend_name() != "postgresql":
            raise ParameterError(
                "execution.scheduler is dask with a cluster at "
                f"{address!r}, but the database is {database.redact_url(database.get_url())}: "
                "a cluster needs a PostgreSQL database (database.url) that every machine reaches"
            )
        if address:
            self._client = Client(address, timeout="30s")
            self._client.run(_prepare_dask_process, [os.getcwd(), *sys.path])
        else:
            self._cluster = LocalCluster(
                n_workers=self.pars.workers or os.cpu_count() or 1, threads_per_worker=1,
                processes=True, dashboard_address=":0", silence_logs=logging.WARNING,
            )
            self._client = Client(self._cluster)
            self._client.run(_prepare_dask_process, [os.getcwd(), *sys.path])
            # The nannies of a LocalCluster live in this process and their workers are its
            # children: those go when it dies (distributed watches too; a cluster of our
            # own only: workers of a shared one outlive the run, and must).
            self._client.run(die_with_parent)
        self._check_shared_data_root()
        self._worker_future = self._client.scatter(self.worker, broadcast=True)

    def _check_shared_data_root(self) -> None:
        marker = os.path.join(self.worker.data_root, f".shared-check-{secrets.token_hex(6)}")
        os.makedirs(self.worker.data_root, exist_ok=True)
        with open(marker, "w") as handle:
            handle.write("skyretriever checks that workers see the data root\n")
        try:
            seen = self._client.run(_can_see, marker)
        finally:
            os.unlink(marker)
        blind = sorted(name for name, visible in seen.items() if not visible)
        if blind:
            raise ParameterError(
                f"the data root {self.worker.data_root!r} is not visible from Dask workers "
                f"{', '.join(blind)}; a cluster needs the data root on a file system every "
                "worker shares (set data_root to such a path)"
            )

    def _submit(self, tasks: list[SourceTask], reduce: bool, analyze: bool) -> Any:
        return self._client.submit(_process_on_dask, self._worker_future, tasks, reduce, analyze,
                                   pure=False)

    def _completed(self, futures: Iterable[Any]) -> Iterator[Any]:
        from distributed import as_completed as dask_completed

        futures = list(futures)
        return iter(dask_completed(futures)) if futures else iter(())

    def _lost(self, future: Any, error: BaseException) -> bool:
        from distributed.scheduler import KilledWorker

        return isinstance(error, KilledWorker)

    def close(self, cancel: bool = False) -> None:
        super().close(cancel)
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


def make_executor(worker: Worker, pars: ExecutionParameters, download_threads: int) -> Executor:
    """The executor for ``execution.scheduler``."""
    kinds = {"serial": Executor, "local": LocalExecutor, "dask": DaskExecutor}
    return kinds[pars.scheduler](worker, pars, download_threads)
