"""Throughput of the whole pipeline on the demo observatory.

Runs a project over N synthetic sources (``wait_time=0``, about 100 points per
light curve: 2 filters x 2 seasons x 100 epochs) and prints, per database:
sources per second, SQL statements per source, bytes on disk per source, peak
memory, and the time of a resumed run over the finished project.

Usage::

    python bench/pipeline.py 1000                        # SQLite and PostgreSQL
    python bench/pipeline.py 10000 --backend sqlite --scheduler serial
    python bench/pipeline.py 10000 --backend postgresql --scheduler all   # serial, local, dask
    python bench/pipeline.py 10000 --backend sqlite --against f7d13db   # this tree and that commit

``--against REF`` measures the code of git commit REF in the same run (checked out
in a temporary worktree, run in a subprocess with the same options, turn about with
this tree's runs, ``--rounds`` times each) and prints both figures and their ratio.

A Dask run needs PostgreSQL (the run refuses SQLite with a clear message); it
starts a LocalCluster of ``--workers`` processes on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

POSTGRES_ADMIN = os.environ.get("SKYRETRIEVER_TEST_POSTGRES",
                                "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


class StatementCounter:
    """Counts SQL statements sent by this process (the driver owns every write)."""

    def __init__(self) -> None:
        self.count = 0
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", self._count)

    def _count(self, *_args) -> None:
        self.count += 1


def folder_bytes(path: Path, skip_suffixes: tuple[str, ...] = ()) -> tuple[int, int]:
    """Total bytes and number of files below ``path``.

    Walks with ``os.walk``: Python 3.11's ``Path.rglob`` keeps every path it has
    yielded in a set (about 90 MB for 180,000 files), which would show up in the
    driver's peak memory as if the pipeline had used it.
    """
    total = files = 0
    for folder, _, names in os.walk(path):
        for name in names:
            if not name.endswith(skip_suffixes):
                total += os.stat(os.path.join(folder, name)).st_size
                files += 1
    return total, files


def peak_memory_mb() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest child (MB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def pace(progress: list[tuple[int, float]], n: int, parts: int = 10) -> list[float]:
    """Sources per second in each tenth of the run (from the summary's per-batch progress)."""
    rates, last_count, last_time = [], 0, 0.0
    for count, seconds in progress:
        if count >= (len(rates) + 1) * n / parts and seconds > last_time:
            rates.append((count - last_count) / (seconds - last_time))
            last_count, last_time = count, seconds
    return rates


def make_database(backend: str, root: Path) -> tuple[str, callable]:
    if backend == "sqlite":
        return f"sqlite:///{root / 'bench.db'}", lambda: None
    admin = sa.create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"skyretriever_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        from skyretriever import database

        database.configure("sqlite:///:memory:")
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return sa.engine.make_url(POSTGRES_ADMIN).set(database=name).render_as_string(False), drop


#: What each analysis setting runs on every source (see --analysis).
ANALYSES = {
    "baseline": {"periodogram": {"enabled": False}},   # quality checks, peak finder, properties
    "full": {},                                         # the defaults: + Lomb-Scargle periodogram
}


def run(n: int, backend: str, scheduler: str, workers: int | None, batch_size: int,
        analysis: str = "baseline") -> dict:
    from skyretriever import Project

    root = Path(tempfile.mkdtemp(prefix="skyretriever-bench-"))
    url, drop = make_database(backend, root)
    counter = StatementCounter()
    try:
        project = Project(
            name="bench", cfg_file=False, data_root=str(root / "data"), database_url=url,
            progress=False, catalog_kwargs={"default": "test", "num_sources": n},
            demo={"wait_time": 0.0}, analysis_kwargs=ANALYSES[analysis],
            execution_kwargs={"scheduler": scheduler, "workers": workers, "batch_size": batch_size},
        )
        start = time.perf_counter()
        summary = project.run()
        elapsed = time.perf_counter() - start
        statements = counter.count
        own, children = peak_memory_mb()     # before anything else runs in this process
        files_bytes, files = folder_bytes(root / "data", (".db", ".db-wal", ".db-shm", ".lock"))
        start = time.perf_counter()
        resumed = project.run()
        resume_seconds = time.perf_counter() - start
        resume_own, _ = peak_memory_mb()
        assert summary.counts["done"] == n, summary
        assert resumed.counts["skipped"] == n, resumed
        return {
            "backend": backend, "scheduler": scheduler, "n": n,
            "seconds": elapsed, "rate": n / elapsed,
            "statements_per_source": statements / n,
            "statements_per_batch": statements / max(1, -(-n // batch_size)),
            "bytes_per_source": files_bytes / n, "files_per_source": files / n,
            "resume_seconds": resume_seconds,
            "peak_driver_mb": own, "peak_worker_mb": children, "peak_resume_mb": resume_own,
            "steps": summary.seconds,
            "pace": pace(summary.progress, n),
        }
    finally:
        drop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=1000, help="number of sources")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--scheduler", choices=("serial", "local", "dask", "all"), default="local")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--analysis", choices=tuple(ANALYSES), default="baseline",
                        help="baseline: quality checks, peak finder and properties (the work "
                             "of issue 2's comparison); full: the defaults, with the "
                             "Lomb-Scargle periodogram of every source")
    parser.add_argument("--against", metavar="REF",
                        help="also measure git commit REF in the same run and print the ratio")
    parser.add_argument("--rounds", type=int, default=2,
                        help="with --against: runs of each tree, taken in turn (best kept)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.json:
        result = run(args.n, args.backend, args.scheduler, args.workers, args.batch_size,
                     args.analysis)
        print(json.dumps(result))
        return
    if args.against:
        compare(args)
        return
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    schedulers = ("serial", "local", "dask") if args.scheduler == "all" else (args.scheduler,)
    print(f"demo pipeline, N = {args.n}, scheduler {args.scheduler}, analysis {args.analysis}, "
          f"{os.cpu_count()} cores")
    rates: dict[tuple[str, str], float] = {}
    for backend in backends:
        for scheduler in schedulers:
            if scheduler == "dask" and backend == "sqlite":
                print(f"{'sqlite':>10} {'dask':>6}: not run (a Dask run needs PostgreSQL)")
                continue
            r = run(args.n, backend, scheduler, args.workers, args.batch_size, args.analysis)
            rates[backend, scheduler] = r["rate"]
            report(backend, scheduler, r, args.batch_size)
    for (backend, scheduler), rate in rates.items():
        serial = rates.get((backend, "serial"))
        if serial and scheduler != "serial":
            print(f"speed-up over serial ({backend}, {scheduler}): {rate / serial:.2f}x")


def compare(args: argparse.Namespace) -> None:
    """Measure this tree and git commit ``args.against`` in turn, and print both."""
    if args.backend == "both" or args.scheduler == "all":
        raise SystemExit("--against needs one --backend and one --scheduler")
    here = Path(__file__).resolve().parents[1]
    other = Path(tempfile.mkdtemp(prefix="skyretriever-against-"))
    subprocess.run(["git", "-C", str(here), "worktree", "add", "--detach", str(other),
                    args.against], check=True, capture_output=True)
    trees = {"this tree": here, args.against: other}
    options = [str(args.n), "--backend", args.backend, "--scheduler", args.scheduler,
               "--batch-size", str(args.batch_size), "--analysis", args.analysis, "--json"]
    if args.workers:
        options += ["--workers", str(args.workers)]
    print(f"demo pipeline, N = {args.n}, {args.backend}, scheduler {args.scheduler}, "
          f"analysis {args.analysis}, {os.cpu_count()} cores: this tree against "
          f"{args.against}, {args.rounds} rounds each, taken in turn")
    best: dict[str, dict] = {}
    try:
        for round_ in range(args.rounds):
            for label, tree in trees.items():
                environment = dict(os.environ, PYTHONPATH=str(tree / "src"))
                done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *options],
                                      env=environment, cwd=tree, check=True,
                                      capture_output=True, text=True)
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"round {round_ + 1}, {label}: {r['rate']:.1f} sources/s "
                      f"({r['seconds']:.1f} s), resume {r['resume_seconds']:.2f} s", flush=True)
                if label not in best or r["rate"] > best[label]["rate"]:
                    best[label] = r
    finally:
        subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(other)],
                       capture_output=True)
    for label, r in best.items():
        print(f"best of {label}:")
        report(args.backend, args.scheduler, r, args.batch_size)
    ratio = best["this tree"]["rate"] / best[args.against]["rate"]
    print(f"this tree / {args.against}: {ratio:.3f} ({(ratio - 1) * 100:+.1f}% sources/s)")


def report(backend: str, scheduler: str, r: dict, batch_size: int) -> None:
    """Print one run's figures."""
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in r["steps"].items())
    print(f"{backend:>10} {scheduler:>6}: {r['rate']:7.1f} sources/s ({r['seconds']:.1f} s); "
          f"{r['statements_per_source']:.3f} SQL statements/source "
          f"({r['statements_per_batch']:.1f} per batch of {batch_size}); "
          f"{r['bytes_per_source'] / 1024:.1f} kB and {r['files_per_source']:.1f} files "
          f"on disk/source; peak memory {r['peak_driver_mb']:.0f} MB driver, "
          f"{r['peak_worker_mb']:.0f} MB largest worker; resume {r['resume_seconds']:.2f} s "
          f"(driver peak after it {r['peak_resume_mb']:.0f} MB)")
    print(f"{'':>12}steps: {steps}")
    print(f"{'':>12}sources/s in each tenth of the run: "
          + " ".join(f"{rate:.0f}" for rate in r["pace"]))


if __name__ == "__main__":
    main()
