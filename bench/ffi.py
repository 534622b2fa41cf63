"""FFI cutout benchmark: the S3 route, the TESScut route and lightkurve's search_tesscut loop.

N stars on the simulated FFIs of 2 sectors (``skyretriever.testing.ffi``: cubes
made by astrocut's CubeFactory), 11x11 cutouts, ``--latency`` seconds added to
every request and ``--server-time`` seconds of server time per TESScut cutout.
The S3 and TESScut routes run ``VirtualTESSFFI.download`` on
``download_workers`` threads (as the pipeline's download stage does); lightkurve
runs ``search_tesscut(...).download_all(cutout_size=11)`` star after star, with
astroquery's TESScut URL pointed at the simulator.

Each route is printed beside its latency-bound ideal:

- S3: per cube, the header reads (once) and per cutout its row ranges, at most
  ``max_connections_per_host`` in flight, each taking the latency;
- TESScut: per star one sector query and one cutout per sector (latency plus
  server time), ``download_workers`` stars at once;
- lightkurve: the same requests one after the other.

Bytes read per cutout on the S3 route are printed against the cutout's own
size (flux and error planes).

Examples
--------
    python bench/ffi.py                        # 20 stars, 150 ms, 2 s per cutout
    python bench/ffi.py --stars 8 --lightkurve-stars 4
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from skyretriever import storage
from skyretriever.observatories.tessffi import VirtualTESSFFI
from skyretriever.testing.ffi import (
    PIXEL_ARCSEC,
    CubeBucketService,
    FFISky,
    FFIStar,
    TesscutService,
)
from skyretriever.testing.server import ArchiveServer, Faults


def _stars(count: int, seed: int = 0) -> list[FFIStar]:
    rng = np.random.default_rng(seed)
    spread = 25 * PIXEL_ARCSEC / 3600.0
    return [FFIStar(f"star{i:03d}", 100.0 + rng.uniform(-spread, spread) / math.cos(math.radians(30)),
                    -30.0 + rng.uniform(-spread, spread), tmag=float(rng.uniform(9, 13)))
            for i in range(count)]


def _run(obs: VirtualTESSFFI, stars: list[FFIStar], workers: int) -> tuple[float, list]:
    rows = [{"name": s.name, "ra": s.ra, "dec": s.dec} for s in stars]
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        raws = list(pool.map(obs.download, rows))
    return time.perf_counter() - start, raws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stars", type=int, default=20)
    parser.add_argument("--lightkurve-stars", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.15)
    parser.add_argument("--server-time", type=float, default=2.0)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4, help="download_workers")
    parser.add_argument("--connections", type=int, default=4,
                        help="max_connections_per_host (TESScut)")
    parser.add_argument("--s3-connections", type=int, default=16,
                        help="ranged reads in flight at once to the bucket")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="skyretriever-ffi-bench-"))
    storage.configure(folder / "data")
    stars = _stars(args.stars)
    built = time.perf_counter()
    sky = FFISky.simple(folder / "ffi", stars, sectors=(1, 2), frames=args.frames, shape=(80, 80))
    print(f"{args.stars} stars, 2 sectors of {args.frames} FFIs (80x80 px), 11x11 cutouts; "
          f"latency {args.latency * 1000:.0f} ms, TESScut {args.server_time:g} s per cutout; "
          f"{args.workers} download workers, {args.connections} connections per host "
          f"({args.s3_connections} to the bucket) "
          f"(simulated sky made in {time.perf_counter() - built:.1f} s)")
    faults = Faults(latency=args.latency)
    network = {"max_connections_per_host": args.connections, "max_attempts": 3, "backoff": 0.1}
    with ArchiveServer([TesscutService(sky, seconds_per_cutout=args.server_time),
                        CubeBucketService(sky)], faults=faults) as server:
        s3 = VirtualTESSFFI(route="s3", s3_endpoint_url=server.url,
                            s3_connections=args.s3_connections, **network)
        seconds, raws = _run(s3, stars, args.workers)
        cutouts = [c for raw in raws for c in raw.data.values()]
        ranges = sum(c.extra["ranges"] for c in cutouts)
        header_requests = server.count() - ranges
        ideal = (header_requests + math.ceil(ranges / args.s3_connections)) * args.latency
        ratio = np.mean([c.extra["bytes"] / (c.flux.size * 4 * c.extra.get("planes", 2))
                         for c in cutouts])
        print(f"S3 route       {seconds:7.2f} s  ideal {ideal:6.2f} s  ({len(cutouts)} cutouts, "
              f"{ranges} ranged reads, {header_requests} other requests; bytes read per cutout "
              f"{ratio:.2f}x its size)")

        tesscut = VirtualTESSFFI(route="tesscut", tesscut_url=server.url + "/tesscut", **network)
        seconds, raws = _run(tesscut, stars, args.workers)
        per_star = args.latency + 2 * (args.latency + args.server_time)
        ideal = math.ceil(len(stars) / min(args.workers, args.connections)) * per_star
        print(f"TESScut route  {seconds:7.2f} s  ideal {ideal:6.2f} s  "
              f"({sum(len(r.data) for r in raws)} cutouts)")

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import lightkurve
            from astropy.coordinates import SkyCoord
            from astroquery.mast.services import ServiceAPI

        # lightkurve makes a new TesscutClass per call: point the class's URL at the simulator.
        ServiceAPI.SERVICE_URL = server.url
        # lightkurve asks MAST's name resolver for the "ra dec" of each row, twice per cutout;
        # here the coordinates are parsed locally (which leaves those requests out of its time).
        lightkurve.search._resolve_object = lambda target: SkyCoord(target, unit="deg")
        chosen = stars[: args.lightkurve_stars]
        found = lightkurve.search.SearchResult()
        start = time.perf_counter()
        count = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for number, star in enumerate(chosen):
                # What SearchResult.download_all() does for each TESScut row (the portal search
                # before it is left out: it would only add to lightkurve's time).
                target = f"{star.ra} {star.dec}"
                for sector in (1, 2):
                    path = found._fetch_tesscut_path(target, sector, str(folder / f"lk{number}"),
                                                     11)
                    lightkurve.read(path)
                    count += 1
        seconds = time.perf_counter() - start
        ideal = len(chosen) * per_star
        scale = len(stars) / max(len(chosen), 1)
        print(f"lightkurve     {seconds:7.2f} s  ideal {ideal:6.2f} s  ({count} cutouts of "
              f"{len(chosen)} stars; {seconds * scale:.1f} s scaled to {len(stars)} stars)")


if __name__ == "__main__":
    main()
