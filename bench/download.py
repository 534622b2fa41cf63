"""Download benchmark: skyretriever against lightkurve's search-and-download loop.

Both fetch every 2-min SPOC light curve of the same TESS stars from the same
simulated archives (``python -m skyretriever.testing serve``, run in its own
process), with the same latency added to every request. skyretriever runs
``Project.run(analyze=False)`` (download, store, reduce); lightkurve runs
``search_lightcurve(...).download_all()`` star after star (search, download,
read), with astroquery's URLs pointed at the simulator.

The ideal is what the per-host connection limit allows: the busiest host's
requests, ``max_connections_per_host`` at a time, each taking the latency.

Examples
--------
    python bench/download.py                          # 200 stars, 3 sectors, 150 ms
    python bench/download.py --stars 50 --lightkurve-stars 10
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
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
               str(args.latency), "--catalog", str(catalog), "--prepare-files", "--seed", "1"]
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


def request_counts(urls: dict[str, str]) -> dict[str, int]:
    return {"MAST": stats(urls["mast_url"])["requests"], "S3": stats(urls["s3_endpoint_url"])["requests"]}


def run_skyretriever(urls: dict[str, str], folder: Path, use_cloud: bool, connections: int
                     ) -> tuple[float, dict[str, int], int]:
    from skyretriever import Project

    root = folder / ("data_s3" if use_cloud else "data_https")
    project = Project(
        name="bench", cfg_file=False, data_root=str(root),
        database_url=f"sqlite:///{root}.db", obs_names=["TESS"], progress=False,
        catalog_kwargs={"kind": "file", "filename": urls["catalog"]},
        TESS={"mast_url": urls["mast_url"], "s3_endpoint_url": urls["s3_endpoint_url"],
              "use_cloud": use_cloud, "max_connections_per_host": connections},
    )
    reset(urls)
    begin = time.perf_counter()
    summary = project.run(analyze=False)
    elapsed = time.perf_counter() - begin
    if summary.failures:
        raise RuntimeError(f"skyretriever run had failures: {summary.failures[:3]}")
    return elapsed, request_counts(urls), summary.counts["reduced"]


def run_lightkurve(urls: dict[str, str], folder: Path, tics: list[int]) -> tuple[float, dict, int]:
    import lightkurve as lk
    from astroquery.mast import Observations

    connection = Observations._portal_api_connection
    connection.MAST_REQUEST_URL = urls["mast_url"] + "/api/v0/invoke"
    connection.COLUMNS_CONFIG_URL = urls["mast_url"] + "/portal/Mashup/Mashup.asmx/columnsconfig"
    connection.MAST_DOWNLOAD_URL = urls["mast_url"] + "/api/v0.1/Download/file"
    logging.getLogger("astroquery").setLevel(logging.ERROR)
    reset(urls)
    files = 0
    begin = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tic in tics:
            found = lk.search_lightcurve(f"TIC {tic}", author="SPOC", exptime=120)
            collection = found.download_all(download_dir=str(folder / "lightkurve"))
            files += len(collection) if collection is not None else 0
    elapsed = time.perf_counter() - begin
    return elapsed, request_counts(urls), files


def ideal_seconds(counts: dict[str, int], connections: int, latency: float) -> tuple[float, str]:
    host, requests = max(counts.items(), key=lambda item: item[1])
    seconds = math.ceil(requests / connections) * latency
    return seconds, f"{host}: {requests} requests / {connections} connections x {latency:.3f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stars", type=int, default=200)
    parser.add_argument("--sectors", type=int, default=3, help="TESS sectors per star")
    parser.add_argument("--days", type=float, default=2.0, help="days of data per sector file")
    parser.add_argument("--latency", type=float, default=0.15, help="seconds per request")
    parser.add_argument("--connections", type=int, default=8,
                        help="skyretriever's max_connections_per_host")
    parser.add_argument("--lightkurve-stars", type=int, default=None,
                        help="time lightkurve on only this many stars and scale up (default: all)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="skyretriever-bench-") as name:
        folder = Path(name)
        os.environ.setdefault("MPLCONFIGDIR", str(folder / "matplotlib"))
        process, urls = start_archives(args, folder)
        try:
            catalog = pd.read_csv(urls["catalog"])
            files = args.stars * args.sectors
            print(f"skyretriever download benchmark: {args.stars} TESS stars x {args.sectors} "
                  f"sectors = {files} light-curve files ({args.days:g} days each), "
                  f"{1000 * args.latency:.0f} ms latency per request")
            print(f"simulated archives (own process): MAST {urls['mast_url']}, "
                  f"S3 {urls['s3_endpoint_url']}")
            print()

            results = {}
            for label, use_cloud in (("skyretriever, S3 bucket + MAST", True),
                                     ("skyretriever, MAST HTTPS only", False)):
                elapsed, counts, reduced = run_skyretriever(urls, folder, use_cloud,
                                                            args.connections)
                ideal, how = ideal_seconds(counts, args.connections, args.latency)
                results[label] = elapsed
                print(f"{label:<36} {elapsed:8.1f} s   requests {counts}, "
                      f"{reduced} light curves")
                print(f"{'':<36} ideal {ideal:6.1f} s   ({how})  -> {elapsed / ideal:.2f}x ideal")

            subset = catalog["tic_id"].astype(int).tolist()
            if args.lightkurve_stars is not None:
                subset = subset[: args.lightkurve_stars]
            elapsed, counts, fetched = run_lightkurve(urls, folder, subset)
            scale = len(catalog) / len(subset)
            total = elapsed * scale
            ideal, how = ideal_seconds(counts, 1, args.latency)
            label = "lightkurve search + download_all loop"
            note = f" (measured {elapsed:.1f} s on {len(subset)} stars, scaled)" if scale != 1 else ""
            print(f"{label:<36} {total:8.1f} s{note}   requests {counts}, {fetched} light curves")
            print(f"{'':<36} ideal {ideal * scale:6.1f} s   (serial: {how})")
            print()
            for key, value in results.items():
                print(f"speed-up over lightkurve ({key}): {total / value:.1f}x")
        finally:
            process.terminate()
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
