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

Prints sources per second, requests and bytes per source, the peak memory
(RSS) of the hats route, the ratio of the two routes, and the projection for
the 1.3 million white dwarfs of the default catalog.

Usage::

    python bench/ztf_hats.py                      # 10,000 stars, 1,000,000 objects
    python bench/ztf_hats.py --stars 2000 --objects 200000 --api-sample 40
"""

from __future__ import annotations

import argparse
import re
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa

from skyretriever.observatories.ztf import VirtualZTF
from skyretriever.testing import Faults, SimulatedArchives, SimulatedSky, SimulatedStar
from skyretriever.testing.hats import build_ztf_collection, ztf_collection_table

WHITE_DWARFS = 1_300_000
MACHINES = (1, 4)


def make_sky(stars: int, seed: int = 7) -> SimulatedSky:
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, stars)
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(-29.0)), 1.0, stars)))
    return SimulatedSky([
        SimulatedStar(f"wd{i:06d}", float(ra[i]), float(dec[i]), gaia_id=10_000_000 + i,
                      gmag=float(rng.uniform(15.0, 19.5)), pmra=float(rng.normal(0, 60)),
                      pmdec=float(rng.normal(0, 60)))
        for i in range(stars)], seed=seed)


def background(count: int, epochs: int, seed: int = 11) -> pa.Table:
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


def bucket_bytes(server, root: Path) -> int:
    """Bytes the bucket sent: each ranged GET's range, each whole GET's file (listings ~1 kB)."""
    total = 0
    for record in server.records:
        if record.method != "GET":
            continue
        ranges = re.fullmatch(r"bytes=(\d+)-(\d+)", record.headers.get("range", "") or "")
        if ranges:
            total += int(ranges.group(2)) - int(ranges.group(1)) + 1
        elif record.path.count("/") > 1:
            path = root / record.path.split("/", 2)[2]
            total += path.stat().st_size if path.is_file() else 0
        else:
            total += 1024
    return total


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
    parser.add_argument("--api-sample", type=int, default=100)
    parser.add_argument("--api-latency", type=float, default=2.0)
    parser.add_argument("--bucket-latency", type=float, default=0.05)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--pixel-threshold", type=int, default=20_000)
    parser.add_argument("--rows-per-group", type=int, default=1000,
                        help="objects per Parquet row group (0: one group per file)")
    parser.add_argument("--order", choices=("random", "ra"), default="random",
                        help="catalog order: random over the sky, or by RA (the white dwarfs)")
    parser.add_argument("--collection", type=Path, default=None,
                        help="build the collection in this folder, or reuse the one there "
                             "(built with the same --stars, --objects and layout options)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ztf-hats-bench-") as folder:
        root = (args.collection or Path(folder)) / "ipac-irsa-ztf"
        t0 = time.perf_counter()
        sky = make_sky(args.stars)
        if not (root / "contributed").is_dir():
            own = ztf_collection_table(sky)
            filler = max(args.objects - own.num_rows, 0)
            table = pa.concat_tables([own, background(filler, args.background_epochs)]) \
                if filler else own
            build_ztf_collection(sky, root, table=table, pixel_threshold=args.pixel_threshold,
                                 highest_order=9, rows_per_group=args.rows_per_group or None)
            del table, own
        partitions = len(list(root.rglob("part0.snappy.parquet")))
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        print(f"collection ({args.rows_per_group or 'one row group'} objects per row group): "
              f"{args.objects:,} objects ({args.stars:,} catalog stars), {partitions} "
              f"partitions, {size / 1e6:.0f} MB, ready in {time.perf_counter() - t0:.0f} s; "
              f"catalog order: {args.order}")
        rows = catalog_rows(sky, args.order)
        with SimulatedArchives(sky) as archives:
            archives.add_irsa(faults=Faults(latency=args.api_latency))
            archives.add_ztf_hats(root, faults=Faults(latency=args.bucket_latency))
            network = {"max_connections_per_host": 4, "max_attempts": 3, "backoff": 0.5}

            hats = VirtualZTF(**archives.ztf_hats_kwargs(**network))
            archives.reset_stats()
            with PeakMemory() as memory:
                seconds, epochs, peaks = run_hats(hats, rows, args.batch)
            requests = archives.ztf_hats.count()
            sent = bucket_bytes(archives.ztf_hats, root)
            hats_rate = len(rows) / seconds
            print(f"hats: {len(rows):,} sources in {seconds:.1f} s = {hats_rate:.1f} sources/s; "
                  f"{requests / len(rows):.3f} requests and {sent / len(rows) / 1e3:.1f} kB "
                  f"per source; {epochs:,} epochs; peak RSS {memory.peak / 1e6:.0f} MB "
                  f"(after the first batch {peaks[0] / 1e6:.0f} MB, after the last "
                  f"{peaks[-1] / 1e6:.0f} MB)")

            api = VirtualZTF(**archives.ztf_kwargs(**network))
            sample = rows[: args.api_sample]
            archives.reset_stats()
            seconds, epochs, sent = run_api(api, sample)
            requests = archives.irsa.count()
            api_rate = len(sample) / seconds
            print(f"api:  {len(sample):,} sources in {seconds:.1f} s = {api_rate:.2f} "
                  f"sources/s; {requests / len(sample):.2f} requests and "
                  f"{sent / len(sample) / 1e3:.1f} kB per source; {epochs:,} epochs")
            print(f"hats / api: {hats_rate / api_rate:.0f}x")
            for machines in MACHINES:
                print(f"1.3 M white dwarfs on {machines} machine(s): hats "
                      f"{WHITE_DWARFS / hats_rate / machines / 3600:.1f} h, api "
                      f"{WHITE_DWARFS / api_rate / machines / 3600:.0f} h")


if __name__ == "__main__":
    main()
