"""How the work is spread: serially, or on threads and worker processes of one machine.

Downloads are I/O bound and run on threads of the driver process; reduction
and analysis are CPU bound and run in worker processes. The pools are made
once per run (never per batch), so a slow source holds up only its own slot.
Workers get the project's observatories and analysis once, when they start,
and return small plain results; only the driver writes to the database.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal

from skyretriever.parameters import Parameters, parameter
from skyretriever.pipeline import SourceResult, SourceTask, Worker, download_source

__all__ = ["ExecutionParameters", "Executor", "make_executor"]


class ExecutionParameters(Parameters):
    """How the work of a run is spread (none of these change results)."""

    scheduler: Literal["serial", "local"] = parameter(
        "local", "serial (one thread, for debugging), or local (threads and worker processes).",
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
    batch_size: int = parameter(
        500, "Catalog rows per batch: one set of queries and one commit per batch.",
        critical=False, ge=1,
    )
    start_method: Literal["fork", "spawn", "forkserver"] | None = parameter(
        None, "How worker processes start (default: fork on Linux, spawn elsewhere).",
        critical=False,
    )


_WORKER: Worker | None = None


def _initialize_worker(worker: Worker) -> None:
    global _WORKER
    _WORKER = worker
    worker.setup()


def _process_in_worker(task: SourceTask, reduce: bool, analyze: bool) -> SourceResult:
    return _WORKER.process(task, reduce=reduce, analyze=analyze)


def _ready() -> int:
    return os.getpid()


class Executor:
    """Runs the download stage and the CPU stage of a batch; use as a context manager."""

    def __init__(self, worker: Worker, pars: ExecutionParameters, download_threads: int) -> None:
        self.worker = worker
        self.pars = pars
        self.download_threads = pars.download_threads or download_threads
        self.serial = pars.scheduler == "serial"
        self._threads: ThreadPoolExecutor | None = None
        self._processes: ProcessPoolExecutor | None = None

    def __enter__(self) -> Executor:
        if self.serial:
            self.worker.setup()
            return self
        # Processes first: forked while this process has no other threads running.
        self._start_processes()
        self._threads = ThreadPoolExecutor(self.download_threads, thread_name_prefix="download")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close(cancel=exc_info[0] is not None)

    def close(self, cancel: bool = False) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=cancel)
            self._threads = None
        if self._processes is not None:
            self._processes.shutdown(wait=True, cancel_futures=cancel)
            self._processes = None

    def _start_processes(self) -> None:
        method = self.pars.start_method or ("fork" if sys.platform.startswith("linux") else "spawn")
        workers = self.pars.workers or os.cpu_count() or 1
        self._processes = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context(method),
            initializer=_initialize_worker,
            initargs=(self.worker,),
        )
        # Start every worker now (fork copies no running threads this way).
        for future in [self._processes.submit(_ready) for _ in range(workers)]:
            future.result()

    def run_batch(self, tasks: list[SourceTask], reduce: bool, analyze: bool,
                  on_result: Callable[[SourceResult], None]) -> list[SourceResult]:
        """Download, then reduce and analyse every task of a batch; results in completion order."""
        observatories = self.worker.observatories
        results: list[SourceResult] = []

        def finish(result: SourceResult) -> None:
            results.append(result)
            on_result(result)

        if self.serial:
            for task in tasks:
                download_source(task, observatories, reduce)
                finish(self.worker.process(task, reduce=reduce, analyze=analyze))
            return results
        downloads = [self._threads.submit(download_source, task, observatories, reduce)
                     for task in tasks]
        processing: dict[Future, tuple[SourceTask, ProcessPoolExecutor]] = {}
        for future in as_completed(downloads):
            task = future.result()
            if task.skip:
                finish(self.worker.process(task, reduce=reduce, analyze=analyze))
                continue
            if self._processes is None:
                self._start_processes()
            processing[self._processes.submit(_process_in_worker, task, reduce, analyze)] = (
                task, self._processes
            )
        for future in as_completed(list(processing)):
            task, pool = processing[future]
            try:
                finish(future.result())
            except BrokenProcessPool as error:
                # A worker died (killed, out of memory): the sources it held are recorded as
                # failed (the next run retries them) and a new pool takes the remaining work.
                if pool is self._processes:
                    self._processes.shutdown(wait=False, cancel_futures=True)
                    self._processes = None
                finish(SourceResult(row=task.row, raw_new=task.raw_new, status="failed",
                                    error=f"worker process died: {error}"))
        return results


def make_executor(worker: Worker, pars: ExecutionParameters, download_threads: int) -> Executor:
    """The executor for ``execution.scheduler``."""
    return Executor(worker, pars, download_threads)
