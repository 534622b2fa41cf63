"""ZTF light curves by IRSA's API and by its HATS collection, side by side in one run.

Makes a simulated sky of catalog stars (random positions north of Dec -30, the
ZTF objects the simulated IRSA API serves), writes a HATS collection with
hats-import holding those objects plus background objects up to ``--objects``
in all, serves the API with ``--api-latency`` seconds per answer and the
bucket with ``--bucket-latency`` seconds per request, and downloads:

- route ``hats``: every catalog star, in batches of ``--batch`` along the
  catalog as it is (what the pipeline does: ``prepare_download`` per batch,
  then one parse per star);
- route ``api``: the first ``--api-sample`` stars, 4 at a time (the politeness
  limit), one cone search each.

Prints sources per second, requests and bytes per source (the bucket's
requests by kind), the peak memory (RSS) of the hats route and its RSS along
the catalog, the ratio of the two routes, and the projection for the 1.3
million white dwarfs of the default catalog. The simulated archives run in a
process of their own, so the memory and CPU measured are the routes'.

Building the collection is the slow part (minutes for a million objects): with
``--collection-dir`` it is kept in that folder, one subfolder per set of build
parameters (``--stars``, ``--objects``, ``--background-epochs``,
``--pixel-threshold``, ``--rows-per-group``, the seeds and hats-import's
version, recorded in ``bench-collection.json``), and the next run with the same
parameters reuses it.

Usage::

    python bench/ztf_hats.py                      # 10,000 stars, 1,000,000 objects
    python bench/ztf_hats.py --collection-dir ~/.cache/skyretriever-bench   # built once
    python bench/ztf_hats.py --stars 2000 --objects 200000 --api-sample 40
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa

from skyretriever.net import HttpClient, NetworkPolicy
from skyretriever.observatories.ztf import VirtualZTF
from skyretriever.storage import atomic_write
from skyretriever.testing import Faults, SimulatedArchives, SimulatedSky, SimulatedStar
from skyretriever.testing.hats import build_ztf_collection, ztf_collection_table
from skyretriever.testing.server import RequestRecord

WHITE_DWARFS = 1_300_000
MACHINES = (1, 4)
ADMIN = HttpClient(NetworkPolicy(max_attempts=3, backoff=0.2))
#: Part of a kept collection's parameters: raise it when the way it is built changes, so an
#: older folder is built again rather than reused.
COLLECTION_FORMAT = 1
SKY_SEED, BACKGROUND_SEED = 7, 11
HIGHEST_ORDER = 9


def make_sky(stars: int, seed: int = SKY_SEED) -> SimulatedSky:
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, stars)
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-29.0)), 1.0, stars)))
    return SimulatedSky([
        SimulatedStar(f"wd{i:06d}", float(ra[i]), float(dec[i]), gaia_id=10_000_000 + i,
                      gmag=float(rng.uniform(15.0, 19.5)), pmra=float(rng.normal(0, 60)),
                      pmdec=float(rng.normal(0, 60)))
        for i in range(stars)], seed=seed)


def background(count: int, epochs: int, seed: int = BACKGROUND_SEED) -> pa.Table:
    """``count`` objects spread over the ZTF sky with ``epochs`` epochs each (vectorised)."""
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, count)
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-29.0)), 1.0, count)))
    offsets = pa.array(np.arange(count + 1, dtype=np.int32) * epochs)
    total = count * epochs
    times = 58200.0 + np.tile(np.linspace(0, 2000, epochs), count) + rng.uniform(-1, 1, total)
    mag = rng.uniform(15, 21, count).repeat(epochs) + rng.normal(0, 0.05, total)

    def nested(values, dtype) -> pa.ListArray:
        return pa.ListArray.from_arrays(offsets, pa.array(np.asarray(values, dtype=dtype)))

    lightcurve = pa.StructArray.from_arrays(
        [nested(times, np.float64), nested(mag, np.float32),
         nested(np.full(total, 0.05), np.float32), nested(rng.normal(0.1, 0.02, total),
                                                          np.float32),
         nested(np.where(rng.random(total) < 0.04, 32768, 0), np.int32)],
        names=["hmjd", "mag", "magerr", "clrcoeff", "catflags"])
    return pa.table({
        "objectid": pa.array(900_000_000_000_000 + np.arange(count), type=pa.int64()),
        "filterid": pa.array(rng.integers(1, 3, count), type=pa.int8()),
        "fieldid": pa.array(rng.integers(250, 880, count), type=pa.int16()),
        "rcid": pa.array(rng.integers(0, 64, count), type=pa.int8()),
        "objra": pa.array(ra, type=pa.float32()),
        "objdec": pa.array(dec, type=pa.float32()),
        "nepochs": pa.array(np.full(count, epochs), type=pa.int64()),
        "lightcurve": lightcurve,
    })


def catalog_rows(sky: SimulatedSky, order: str = "random") -> list[dict]:
    """The catalog as Gaia positions (2016.0), in random order or by RA (as the white-dwarf
    catalog is, by its WDJ names)."""
    rows = []
    for star in sky.stars:
        ra, dec = star.position_at(2016.0)
        rows.append({"name": star.name, "ra": float(ra), "dec": float(dec),
                     "mag": star.gaia_magnitude, "pmra": star.pmra, "pmdec": star.pmdec,
                     "gaia_id": star.gaia_id})
    return sorted(rows, key=lambda row: row["ra"]) if order == "ra" else rows


def collection_parameters(args: argparse.Namespace) -> dict:
    """What the simulated collection is built from (a kept one is reused when they match)."""
    return {"format": COLLECTION_FORMAT, "stars": args.stars, "objects": args.objects,
            "background_epochs": args.background_epochs,
            "pixel_threshold": args.pixel_threshold, "rows_per_group": args.rows_per_group,
            "highest_order": HIGHEST_ORDER, "sky_seed": SKY_SEED,
            "background_seed": BACKGROUND_SEED, "hats_import": version("hats-import")}


def build(parameters: dict, root: Path) -> None:
    """Write the collection of ``parameters`` as the bucket folder ``root`` (hats-import)."""
    sky = make_sky(parameters["stars"], parameters["sky_seed"])
    own = ztf_collection_table(sky)
    filler = max(parameters["objects"] - own.num_rows, 0)
    table = pa.concat_tables([own, background(filler, parameters["background_epochs"],
                                              parameters["background_seed"])]) \
        if filler else own
    build_ztf_collection(sky, root, table=table, pixel_threshold=parameters["pixel_threshold"],
                         highest_order=parameters["highest_order"],
                         rows_per_group=parameters["rows_per_group"] or None)


def kept_collection(parameters: dict, folder: Path) -> tuple[Path, bool]:
    """The bucket folder of the collection of ``parameters`` in ``folder``, and whether it
    was there already. Built (in a child process, so its memory is not the routes') in
    ``folder/collection-<hash of the parameters>/`` unless that folder's
    ``bench-collection.json``, written last, records the same parameters."""
    key = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:12]
    home = folder / f"collection-{key}"
    record, root = home / "bench-collection.json", home / "ipac-irsa-ztf"
    if record.is_file() and json.loads(record.read_text()) == parameters:
        return root, True
    shutil.rmtree(home, ignore_errors=True)  # a build that did not finish
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(build, parameters, root).result()
    with atomic_write(record, beside=True) as temporary:
        temporary.write_text(json.dumps(parameters, indent=1, sort_keys=True) + "\n")
    return root, False


def serve(stars: int, root: Path, api_latency: float, bucket_latency: float,
          connection) -> None:
    """Serve the simulated IRSA API and bucket, send their URLs on ``connection`` and stop
    when it says so (run in a process of its own)."""
    with SimulatedArchives(make_sky(stars)) as archives:
        archives.add_irsa(faults=Faults(latency=api_latency))
        archives.add_ztf_hats(root, faults=Faults(latency=bucket_latency))
        connection.send({"api": archives.ztf_kwargs(), "hats": archives.ztf_hats_kwargs()})
        connection.recv()


@contextlib.contextmanager
def archives_process(stars: int, root: Path, api_latency: float, bucket_latency: float):
    """The simulated archives in a child process; yields the routes' parameters."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=serve, daemon=True,
                              args=(stars, root, api_latency, bucket_latency, theirs))
    process.start()
    try:
        yield ours.recv()
    finally:
        ours.send("stop")
        process.join(30)


def reset_stats(url: str) -> None:
    ADMIN.request("POST", url + "/_sim/stats/reset", data=b"")


def records(url: str) -> list[RequestRecord]:
    """The requests a simulated server handled since its statistics were reset."""
    summary = ADMIN.request_json("GET", url + "/_sim/stats", params={"log": "1"})
    if len(summary["log"]) < summary["requests"]:
        raise RuntimeError(f"{url} logged {len(summary['log'])} of {summary['requests']} "
                           "requests")
    return [RequestRecord(**record) for record in summary["log"]]


def bucket_requests(url: str, root: Path) -> tuple[Counter, Counter]:
    """The bucket's requests and the bytes it sent, by kind: ``listing``, ``HEAD``,
    ``footer`` (a partition file's tail), ``row groups`` (its other ranges), ``metadata``
    (the collection's other files) and ``failed`` (an error status, a retry follows)."""
    requests, sent = Counter(), Counter()
    for record in records(url):
        key = record.path.split("/", 2)[2] if record.path.count("/") > 1 else ""
        ranges = re.fullmatch(r"bytes=(\d+)-(\d+)", record.headers.get("range", "") or "")
        if record.status is None or record.status >= 400:
            kind, size = "failed", 0
        elif record.method == "HEAD":
            kind, size = "HEAD", 0
        elif not key:
            kind, size = "listing", 1024  # about a kilobyte a listing
        else:
            whole = (root / key).stat().st_size
            size = int(ranges.group(2)) - int(ranges.group(1)) + 1 if ranges else whole
            if not key.endswith(".parquet"):
                kind = "metadata"
            elif ranges and int(ranges.group(2)) + 1 >= whole:
                kind = "footer"
            else:
                kind = "row groups"
        requests[kind] += 1
        sent[kind] += size
    return requests, sent


class PeakMemory:
    """The largest resident set size of this process while it runs (sampled every 50 ms)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, process.memory_info().rss)
            time.sleep(0.05)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def run_hats(obs: VirtualZTF, rows: list[dict], batch: int) -> tuple[float, int, list[int]]:
    """Seconds, epochs, and the RSS after each batch."""
    start, epochs, peaks = time.perf_counter(), 0, []
    process = psutil.Process()
    for first in range(0, len(rows), batch):
        chunk = rows[first:first + batch]
        obs.prepare_download(chunk)
        for row in chunk:
            frame, _ = obs.parse(obs.fetch(row))
            epochs += len(frame)
        peaks.append(process.memory_info().rss)
    return time.perf_counter() - start, epochs, peaks


def run_api(obs: VirtualZTF, rows: list[dict]) -> tuple[float, int, int]:
    def one(row):
        answer = obs.fetch(row)
        frame, _ = obs.parse(answer)
        return len(frame), len(answer.text.encode())

    start = time.perf_counter()
    with ThreadPoolExecutor(obs.pars.max_connections_per_host) as pool:
        results = list(pool.map(one, rows))
    return (time.perf_counter() - start, sum(r[0] for r in results),
            sum(r[1] for r in results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stars", type=int, default=10_000)
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--background-epochs", type=int, default=24)
    parser.add_argument("--api-sample", type=int, default=100,
                        help="stars through the api route (0: the hats route alone)")
    parser.add_argument("--api-latency", type=float, default=2.0)
    parser.add_argument("--bucket-latency", type=float, default=0.05)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--pixel-threshold", type=int, default=20_000)
    parser.add_argument("--rows-per-group", type=int, default=1000,
                        help="objects per Parquet row group (0: one group per file)")
    parser.add_argument("--order", choices=("random", "ra"), default="random",
                        help="catalog order: random over the sky, or by RA (the white dwarfs)")
    parser.add_argument("--collection-dir", type=Path, default=None,
                        help="keep the built collection in this folder and reuse it when "
                             "built with the same parameters (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ztf-hats-bench-") as folder:
        t0 = time.perf_counter()
        root, reused = kept_collection(collection_parameters(args),
                                       args.collection_dir or Path(folder))
        sky = make_sky(args.stars)
        partitions = len(list(root.rglob("part0.snappy.parquet")))
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        print(f"collection ({args.rows_per_group or 'one row group'} objects per row group): "
              f"{args.objects:,} objects ({args.stars:,} catalog stars), {partitions} "
              f"partitions, {size / 1e6:.0f} MB, {'reused from' if reused else 'built in'} "
              f"{root.parent} in {time.perf_counter() - t0:.0f} s; catalog order: {args.order}")
        rows = catalog_rows(sky, args.order)
        with archives_process(args.stars, root, args.api_latency, args.bucket_latency) as urls:
            network = {"max_connections_per_host": 4, "max_attempts": 3, "backoff": 0.5}

            hats = VirtualZTF(**urls["hats"], **network)
            bucket = urls["hats"]["s3_endpoint_url"]
            reset_stats(bucket)
            before = psutil.Process().memory_info().rss
            with PeakMemory() as memory:
                seconds, epochs, peaks = run_hats(hats, rows, args.batch)
            requests, sent = bucket_requests(bucket, root)
            hats_rate = len(rows) / seconds
            total = sum(requests.values())
            print(f"hats: {len(rows):,} sources in {seconds:.1f} s = {hats_rate:.1f} sources/s; "
                  f"{total / len(rows):.3f} requests and {sum(sent.values()) / len(rows) / 1e3:.1f}"
                  f" kB per source; {epochs:,} epochs; peak RSS {memory.peak / 1e6:.0f} MB")
            print("  requests (bytes) by kind: " + ", ".join(
                f"{kind} {count:,} ({sent[kind] / 1e6:.1f} MB)"
                for kind, count in requests.most_common()))
            tenth = max(len(peaks) // 10, 1)
            print(f"  RSS before {before / 1e6:.0f}, after " + ", ".join(
                f"{min((i + 1) * args.batch, len(rows)):,}: {peaks[i] / 1e6:.0f}"
                for i in range(len(peaks)) if (i + 1) % tenth == 0 or i == 0) + " (MB)")
            cache = hats.hats_collection()
            print(f"  caches: {len(cache.footers)} footers {cache.footers.size / 1e6:.1f} MB, "
                  f"{len(cache.row_groups)} row groups {cache.row_groups.size / 1e6:.1f} MB")
            if not args.api_sample:
                return

            api = VirtualZTF(**urls["api"], **network)
            sample = rows[: args.api_sample]
            reset_stats(urls["api"]["irsa_url"])
            seconds, epochs, api_bytes = run_api(api, sample)
            api_requests = len(records(urls["api"]["irsa_url"]))
            api_rate = len(sample) / seconds
            print(f"api:  {len(sample):,} sources in {seconds:.1f} s = {api_rate:.2f} "
                  f"sources/s; {api_requests / len(sample):.2f} requests and "
                  f"{api_bytes / len(sample) / 1e3:.1f} kB per source; {epochs:,} epochs")
            print(f"hats / api: {hats_rate / api_rate:.0f}x")
            for machines in MACHINES:
                print(f"1.3 M white dwarfs on {machines} machine(s): hats "
                      f"{WHITE_DWARFS / hats_rate / machines / 3600:.1f} h, api "
                      f"{WHITE_DWARFS / api_rate / machines / 3600:.0f} h")


if __name__ == "__main__":
    main()
