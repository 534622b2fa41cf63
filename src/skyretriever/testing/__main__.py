"""``python -m skyretriever.testing serve``: start the simulated MAST portal and S3 bucket.

Prints the URLs (and, last, one JSON line for scripts), optionally writes a
catalog of the simulated stars, and serves until interrupted.

Examples
--------
    python -m skyretriever.testing serve --stars 200 --sectors 3 --latency 0.15
    python -m skyretriever.testing serve --catalog sim.csv --unavailable-rate 0.1
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence

from skyretriever.testing.archives import SimulatedArchives
from skyretriever.testing.server import FAULT_KINDS, Faults
from skyretriever.testing.sky import SimulatedSky


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m skyretriever.testing",
                                     description="Simulated archives on the loopback interface.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="start the simulated MAST portal and S3 bucket")
    serve.add_argument("--stars", type=int, default=20, help="number of simulated stars")
    serve.add_argument("--sectors", type=int, default=2, help="TESS sectors per star")
    serve.add_argument("--days", type=float, default=3.0,
                       help="days covered by each sector's file")
    serve.add_argument("--empty-fraction", type=float, default=0.0,
                       help="fraction of stars without any data")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--mast-port", type=int, default=0)
    serve.add_argument("--s3-port", type=int, default=0)
    serve.add_argument("--catalog", help="write a CSV catalog of the stars here")
    serve.add_argument("--prepare-files", action="store_true",
                       help="make every FITS file before serving (so timing excludes it)")
    serve.add_argument("--latency", type=float, default=0.0, help="seconds added to each request")
    serve.add_argument("--retry-after", type=int, default=1,
                       help="Retry-After seconds sent with 503 and 429")
    serve.add_argument("--faults-per-request", type=int, default=None,
                       help="at most this many faulty answers to the same request")
    for kind in FAULT_KINDS:
        serve.add_argument(f"--{kind}-rate", type=float, default=0.0,
                           help=f"fraction of requests that get the {kind} fault")
    return parser


def serve(args: argparse.Namespace) -> int:
    sky = SimulatedSky.random(args.stars, seed=args.seed, sectors_per_star=args.sectors,
                              empty_fraction=args.empty_fraction, days_per_sector=args.days)
    faults = Faults(latency=args.latency, retry_after=args.retry_after, seed=args.seed,
                    faults_per_request=args.faults_per_request,
                    **{f"{kind}_rate": getattr(args, f"{kind}_rate") for kind in FAULT_KINDS})
    if args.prepare_files:
        print(f"making {len(sky.files)} FITS files...", flush=True)
        sky.prepare_files()
    if args.catalog:
        sky.catalog().to_csv(args.catalog, index=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with SimulatedArchives(sky, faults, mast_port=args.mast_port, s3_port=args.s3_port) as archives:
        print("skyretriever simulated archives")
        print(f"  MAST portal (mast_url):        {archives.mast_url}")
        print(f"  S3 endpoint (s3_endpoint_url): {archives.s3_endpoint_url}  bucket stpubdata")
        print(f"  {len(sky.stars)} stars, {len(sky.files)} light-curve files"
              + (f", catalog {args.catalog}" if args.catalog else ""))
        print("  statistics: GET <url>/_sim/stats; faults: POST <url>/_sim/faults; Ctrl-C stops")
        print(json.dumps({"mast_url": archives.mast_url,
                          "s3_endpoint_url": archives.s3_endpoint_url,
                          "catalog": args.catalog}), flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2  # pragma: no cover - argparse rejects other commands


if __name__ == "__main__":
    sys.exit(main())
