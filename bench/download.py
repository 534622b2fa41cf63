"""Download benchmark: skyretriever against lightkurve's search-and-download loop.

Both fetch every 2-min SPOC light curve of the same TESS stars from the same
simulated archives (``python -m skyretriever.testing serve``, run in its own
process), with the same latency added to every request. skyretriever runs
``Project.run(analyze=False)`` (download, store, reduce) by the S3 bucket and by
MAST HTTPS; lightkurve runs ``search_lightcurve(...).download_all()`` star after
star (search, download, read), with astroquery's URLs pointed at the simulator.

With ``--real-files [DIR]`` every file served is a copy of a real mission light
curve (a 2 MB, 20,000-cadence SPOC sector from altaipony's sdist; see
``bench/real_files.py``, which fetches them into DIR, by default
``~/.cache/skyretriever/real-files``) with the simulated star's identity in its
headers; without it, the simulator's own small files.

The ideal is what the per-host connection limit allows: the busiest host's
requests, ``max_connections_per_host`` at a time, each taking the latency.
Each route's CPU seconds per file (this process and its worker processes) are
printed beside it, and a serial run over ``--profile-sources`` stars (one
thread, the same pipeline) gives the CPU seconds per file by stage: download,
parse, raw write, hash, reduce, reduced write (plus MAST queries, database and
the rest), timed with ``time.thread_time`` around the functions of each stage.
``--cprofile`` adds the functions that cost most in a second serial run without
latency (cProfile); ``--stages-only`` runs only these serial runs (no routes, no
lightkurve), and prints the HDF5 bytes on disk per light-curve file.
``SKYRETRIEVER_HDF5_COMPRESSION=blosc|gzip|lzf|none`` chooses how the tables are compressed.

Examples
--------
    python bench/download.py                          # 200 stars, 3 sectors, 150 ms
    python bench/download.py --stars 50 --lightkurve-stars 10
    python bench/download.py --real-files --stars 50 --sectors 2 --lightkurve-stars 10 --cprofile
    python bench/download.py --real-files --stars 40 --sectors 2 --profile-sources 40 --stages-only
    python bench/download.py --cadence 20 --days 27 --stars 20 --sectors 2 --lightkurve-stars 5
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import logging
import math
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from skyretriever.net import HttpClient, NetworkPolicy

ADMIN = HttpClient(NetworkPolicy(max_attempts=3, backoff=0.2))


def start_archives(args: argparse.Namespace, folder: Path) -> tuple[subprocess.Popen, dict]:
    """The simulated archives in a process of their own; returns it and its URLs."""
    catalog = folder / "catalog.csv"
    command = [sys.executable, "-m", "skyretriever.testing", "serve", "--stars", str(args.stars),
               "--sectors", str(args.sectors), "--days", str(args.days), "--latency",
               str(args.latency), "--catalog", str(catalog), "--prepare-files", "--seed", "1",
               "--cadence", str(args.cadence)]
    if args.real_files:
        # Every copy stays in memory (2 MB each), so none is made again while timing.
        megabytes = max(512, 2.5 * args.stars * args.sectors)
        command += ["--real-files", str(args.real_files), "--cache-mb", str(megabytes)]
    else:       # every file made beforehand stays in memory too (a 20-second sector: 11.7 MB)
        megabytes = max(512, 1.2 * args.stars * args.sectors * (11.7 if args.cadence == 20 else 2)
                        * args.days / 27)
        command += ["--cache-mb", str(megabytes)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("{"):
            return process, json.loads(line)
    raise RuntimeError("the simulated archives did not start")


def stats(url: str) -> dict[str, Any]:
    return ADMIN.request_json("GET", url + "/_sim/stats")


def reset(urls: dict[str, str]) -> None:
    for key in ("mast_url", "s3_endpoint_url"):
        ADMIN.request("POST", urls[key] + "/_sim/stats/reset", data=b"")


def set_latency(urls: dict[str, str], latency: float) -> None:
    for key in ("mast_url", "s3_endpoint_url"):
        ADMIN.request("POST", urls[key] + "/_sim/faults",
                      data=json.dumps({"latency": latency}).encode())


def request_counts(urls: dict[str, str]) -> dict[str, int]:
    return {"MAST": stats(urls["mast_url"])["requests"], "S3": stats(urls["s3_endpoint_url"])["requests"]}


def cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended (worker processes)."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                          resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def make_project(urls: dict[str, str], root: Path, use_cloud: bool, connections: int,
                 execution: dict[str, Any] | None = None, cadence: int = 120):
    from skyretriever import Project

    return Project(
        name="bench", cfg_file=False, data_root=str(root),
        database_url=f"sqlite:///{root}.db", obs_names=["TESS"], progress=False,
        catalog_kwargs={"kind": "file", "filename": urls["catalog"]},
        execution_kwargs=execution or {},
        TESS={"mast_url": urls["mast_url"], "s3_endpoint_url": urls["s3_endpoint_url"],
              "use_cloud": use_cloud, "max_connections_per_host": connections,
              "cadences": [cadence]},
    )


def run_skyretriever(urls: dict[str, str], folder: Path, use_cloud: bool, connections: int,
                     cadence: int) -> tuple[float, dict[str, int], int, float]:
    project = make_project(urls, folder / ("data_s3" if use_cloud else "data_https"),
                           use_cloud, connections, cadence=cadence)
    reset(urls)
    cpu = cpu_seconds()
    begin = time.perf_counter()
    summary = project.run(analyze=False)
    elapsed = time.perf_counter() - begin
    cpu = cpu_seconds() - cpu
    if summary.failures:
        raise RuntimeError(f"skyretriever run had failures: {summary.failures[:3]}")
    return elapsed, request_counts(urls), summary.counts["reduced"], cpu


#: The stages of a source's way from the archive to its reduced light curve.
STAGES = ("run setup", "MAST queries", "download", "parse", "raw write", "hash", "reduce", "reduced write",
          "database", "other")


_INHERITED = object()


class StageClock:
    """CPU time of one thread by stage: functions wrapped so that the time inside them
    (less what nested wrapped functions take) goes to their stage."""

    def __init__(self) -> None:
        self.seconds: Counter = Counter()
        self._stack: list[str] = []
        self._mark = 0.0
        self._restore: list[tuple[Any, str, Any]] = []

    def _switch(self, stage: str | None) -> None:
        now = time.thread_time()
        if self._stack:
            self.seconds[self._stack[-1]] += now - self._mark
        if stage is None:
            self._stack.pop()
        else:
            self._stack.append(stage)
        self._mark = now

    def wrap(self, owner: Any, name: str, stage: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._switch(stage)
            try:
                return original(*args, **kwargs)
            finally:
                self._switch(None)

        own = owner.__dict__.get(name, _INHERITED) if isinstance(owner, type) else original
        self._restore.append((owner, name, own))
        setattr(owner, name, timed)

    def restore(self) -> None:
        for owner, name, original in reversed(self._restore):
            if original is _INHERITED:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        self._restore.clear()


def instrument(clock: StageClock) -> None:
    """Wrap the functions of each stage (as the pipeline calls them) in ``clock``."""
    from skyretriever import database, pipeline, project, storage
    from skyretriever.catalogs.catalog import Catalog
    from skyretriever.models import RawPhotometry
    from skyretriever.observatories import mast
    from skyretriever.observatories.base import VirtualObservatory

    for name in ("_update_context", "check_name_unique", "_check_products_match",
                 "write_config", "_check_free_space"):
        clock.wrap(project.Project, name, "run setup")
    clock.wrap(Catalog, "load", "run setup")
    for name in ("upgrade", "check_writable", "check_still_there"):
        clock.wrap(database, name, "run setup")
    clock.wrap(storage, "clean_temporary", "run setup")
    clock.wrap(mast.VirtualMAST, "prepare_download", "MAST queries")
    clock.wrap(mast.VirtualMAST, "fetch", "download")           # files fetched and read
    clock.wrap(mast.VirtualMAST, "parse", "parse")              # checks, concat
    clock.wrap(mast.VirtualMAST, "fetch_file", "download")
    clock.wrap(mast, "read_lightcurve_fits", "parse")
    clock.wrap(RawPhotometry, "save", "raw write")
    clock.wrap(storage, "file_sha256", "hash")
    clock.wrap(storage, "_sha256_of", "hash")
    clock.wrap(VirtualObservatory, "reduce", "reduce")
    clock.wrap(pipeline, "save_lightcurves", "reduced write")
    clock.wrap(project, "plan_batch", "database")
    clock.wrap(project, "write_batch", "database")


def profile_stages(urls: dict[str, str], folder: Path, sources: int, use_cloud: bool,
                   connections: int, with_cprofile: bool, cadence: int
                   ) -> tuple[int, dict[str, float], float, pstats.Stats | None]:
    """CPU seconds by stage of a serial run (one thread) over the first ``sources`` stars;
    returns the files, the seconds by stage, the run's wall time and, with
    ``with_cprofile``, a second serial run's cProfile statistics (CPU time)."""
    clock = StageClock()
    instrument(clock)
    try:
        project = make_project(urls, folder / "data_profile", use_cloud, connections,
                               {"scheduler": "serial"}, cadence)
        begin, cpu = time.perf_counter(), time.thread_time()
        summary = project.run(stop=sources, analyze=False)
        total_cpu, elapsed = time.thread_time() - cpu, time.perf_counter() - begin
    finally:
        clock.restore()
    if summary.failures:
        raise RuntimeError(f"profiled run had failures: {summary.failures[:3]}")
    seconds = dict(clock.seconds)
    seconds["other"] = total_cpu - sum(seconds.values())
    root = folder / "data_profile"
    for kind, pattern in (("raw", "raw/*/RA*/*_photometry_*"), ("reduced", "projects/*/RA*/*.h5")):
        sizes = [path.stat().st_size for path in root.glob(pattern)]
        print(f"{kind} files: {len(sizes)}, {sum(sizes) / 1e6:.2f} MB, "
              f"{sum(sizes) / 1e6 / max(summary.counts['reduced'], 1):.3f} MB per light-curve file")
    statistics = None
    if with_cprofile:
        # Without latency, so that cProfile's clock (wall time: its CPU clocks cost more
        # than the small functions they time) counts little waiting.
        set_latency(urls, 0.0)
        project = make_project(urls, folder / "data_cprofile", use_cloud, connections,
                               {"scheduler": "serial"}, cadence)
        profiler = cProfile.Profile()
        profiler.enable()
        project.run(stop=sources, analyze=False)
        profiler.disable()
        statistics = pstats.Stats(profiler)
    return summary.counts["reduced"], seconds, elapsed, statistics


def print_stages(files: int, seconds: dict[str, float], elapsed: float, route: str) -> None:
    total = sum(seconds.values())
    print(f"CPU per file by stage (serial run, one thread, {route}, {files} files, "
          f"{elapsed:.1f} s wall):")
    print(f"  {'stage':<15} {'ms per file':>11} {'share':>7}")
    for stage in STAGES:
        value = seconds.get(stage, 0.0)
        print(f"  {stage:<15} {1000 * value / files:11.1f} {100 * value / total:6.1f}%")
    print(f"  {'total':<15} {1000 * total / files:11.1f}")


def print_hot_functions(statistics: pstats.Stats, files: int, most: int = 25) -> None:
    """The functions with the most CPU time of their own, and the stages' entry points."""
    rows = []
    for (filename, line, name), (_, calls, own, cumulative, _) in statistics.stats.items():
        path = Path(filename)
        where = f"{path.parent.name}/{path.name}:{line}" if line else filename
        rows.append((own, cumulative, calls, f"{where}({name})", "/skyretriever/" in filename,
                     name))
    print(f"functions by own time (cProfile, serial run without latency, {files} files; "
          "ms per file):")
    print(f"  {'own':>7} {'cumul.':>7} {'calls':>7}  function")
    for own, cumulative, calls, label, _, _ in sorted(rows, reverse=True)[:most]:
        print(f"  {1000 * own / files:7.2f} {1000 * cumulative / files:7.2f} {calls:7d}  {label}")
    entries = {"prepare_download", "fetch_file", "validate_fits", "read_lightcurve_fits",
               "fetch", "parse", "write_files_table", "save", "write_tables", "write_table_parts",
               "_frame_to_records", "_columns_to_records",
               "_create_dataset", "reduce", "standardize", "save_lightcurves", "plan_batch",
               "write_batch", "check_target", "download", "download_with"}
    print("skyretriever's stage functions (cumulative, ms per file):")
    for _, cumulative, calls, label, ours, name in sorted(rows, key=lambda row: -row[1]):
        if ours and name in entries:
            print(f"  {1000 * cumulative / files:7.2f} {calls:7d}  {label}")


def run_lightkurve(urls: dict[str, str], folder: Path, tics: list[int], cadence: int
                   ) -> tuple[float, dict, int, float]:
    import lightkurve as lk
    from astroquery.mast import Observations

    connection = Observations._portal_api_connection
    connection.MAST_REQUEST_URL = urls["mast_url"] + "/api/v0/invoke"
    connection.COLUMNS_CONFIG_URL = urls["mast_url"] + "/portal/Mashup/Mashup.asmx/columnsconfig"
    connection.MAST_DOWNLOAD_URL = urls["mast_url"] + "/api/v0.1/Download/file"
    logging.getLogger("astroquery").setLevel(logging.ERROR)
    reset(urls)
    files = 0
    cpu = cpu_seconds()
    begin = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tic in tics:
            found = lk.search_lightcurve(f"TIC {tic}", author="SPOC", exptime=cadence)
            collection = found.download_all(download_dir=str(folder / "lightkurve"))
            files += len(collection) if collection is not None else 0
    elapsed = time.perf_counter() - begin
    return elapsed, request_counts(urls), files, cpu_seconds() - cpu


def ideal_seconds(counts: dict[str, int], connections: int, latency: float) -> tuple[float, str]:
    host, requests = max(counts.items(), key=lambda item: item[1])
    seconds = math.ceil(requests / connections) * latency
    return seconds, f"{host}: {requests} requests / {connections} connections x {latency:.3f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stars", type=int, default=200)
    parser.add_argument("--sectors", type=int, default=3, help="TESS sectors per star")
    parser.add_argument("--cadence", type=int, choices=(120, 20), default=120,
                        help="TESS light curves of 2-minute (120) or 20-second (20) cadence; "
                             "20-second files are simulated (no real one is at hand): use "
                             "--days 27 for files of a real sector's size")
    parser.add_argument("--days", type=float, default=2.0,
                        help="days of data per simulated sector file (not with --real-files)")
    parser.add_argument("--latency", type=float, default=0.15, help="seconds per request")
    parser.add_argument("--connections", type=int, default=8,
                        help="skyretriever's max_connections_per_host")
    parser.add_argument("--lightkurve-stars", type=int, default=None,
                        help="time lightkurve on only this many stars and scale up (default: all)")
    parser.add_argument("--real-files", nargs="?", const="", default=None, metavar="DIR",
                        help="serve copies of real mission files from DIR (default: the cache "
                             "of bench/real_files.py, fetched there if missing)")
    parser.add_argument("--profile-sources", type=int, default=10,
                        help="stars in the serial run timed by stage (0: none)")
    parser.add_argument("--stages-only", action="store_true",
                        help="only the serial run by stage (and --cprofile): no routes, no lightkurve")
    parser.add_argument("--stages-route", choices=("s3", "https"), default="s3",
                        help="the route of the serial run by stage: the S3 bucket (MAST for "
                             "what it lacks) or MAST HTTPS only")
    parser.add_argument("--cprofile", action="store_true",
                        help="also profile a serial run with cProfile and list the hot functions")
    args = parser.parse_args()
    if args.real_files is not None and args.cadence != 120:
        parser.error("--real-files has 2-minute files only; leave it out with --cadence 20")
    if args.real_files is not None:
        from skyretriever.testing.realfiles import default_cache, fetch_real_files

        folder = Path(args.real_files) if args.real_files else default_cache()
        fetch_real_files(folder)           # checks the files (fetches them if missing)
        args.real_files = folder

    with tempfile.TemporaryDirectory(prefix="skyretriever-bench-") as name:
        folder = Path(name)
        os.environ.setdefault("MPLCONFIGDIR", str(folder / "matplotlib"))
        process, urls = start_archives(args, folder)
        try:
            catalog = pd.read_csv(urls["catalog"])
            files = args.stars * args.sectors
            what = (f"copies of real SPOC 2-min files from {args.real_files}" if args.real_files
                    else f"simulated {args.cadence}-s files, {args.days:g} days each")
            print(f"skyretriever download benchmark: {args.stars} TESS stars x {args.sectors} "
                  f"sectors = {files} light-curve files ({what}), "
                  f"{1000 * args.latency:.0f} ms latency per request, {os.cpu_count()} cores")
            print(f"simulated archives (own process): MAST {urls['mast_url']}, "
                  f"S3 {urls['s3_endpoint_url']}")
            print()

            if not args.stages_only:
                results = {}
                for label, use_cloud in (("skyretriever, S3 bucket + MAST", True),
                                         ("skyretriever, MAST HTTPS only", False)):
                    elapsed, counts, reduced, cpu = run_skyretriever(urls, folder, use_cloud,
                                                                     args.connections, args.cadence)
                    ideal, how = ideal_seconds(counts, args.connections, args.latency)
                    results[label] = elapsed
                    print(f"{label:<38} {elapsed:8.1f} s   requests {counts}, "
                          f"{reduced} light curves, CPU {1000 * cpu / max(reduced, 1):.0f} ms per file")
                    print(f"{'':<38} ideal {ideal:6.1f} s   ({how})  -> {elapsed / ideal:.2f}x ideal")

                subset = catalog["tic_id"].astype(int).tolist()
                if args.lightkurve_stars is not None:
                    subset = subset[: args.lightkurve_stars]
                elapsed, counts, fetched, cpu = run_lightkurve(urls, folder, subset, args.cadence)
                scale = len(catalog) / len(subset)
                total = elapsed * scale
                ideal, how = ideal_seconds(counts, 1, args.latency)
                label = "lightkurve search + download_all loop"
                note = f" (measured {elapsed:.1f} s on {len(subset)} stars, scaled)" if scale != 1 else ""
                print(f"{label:<38} {total:8.1f} s{note}   requests {counts}, {fetched} light "
                      f"curves, CPU {1000 * cpu / max(fetched, 1):.0f} ms per file")
                print(f"{'':<38} ideal {ideal * scale:6.1f} s   (serial: {how})  -> "
                      f"{total / (ideal * scale):.2f}x ideal")
                print()
                for key, value in results.items():
                    print(f"speed-up over lightkurve ({key}): {total / value:.1f}x")

            if args.profile_sources > 0:
                print()
                use_cloud = args.stages_route == "s3"
                reduced, seconds, elapsed, statistics = profile_stages(
                    urls, folder, args.profile_sources, use_cloud, args.connections,
                    args.cprofile, args.cadence)
                print_stages(reduced, seconds, elapsed,
                             "S3 bucket + MAST" if use_cloud else "MAST HTTPS only")
                if statistics is not None:
                    print()
                    print_hot_functions(statistics, reduced)
        finally:
            process.terminate()
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
