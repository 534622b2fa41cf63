"""``python -m skyretriever.testing``: serve the simulated archives, or run a project on them.

``serve`` starts the simulated MAST portal, S3 bucket, IRSA (ZTF) and catalog
services (Gaia and Exoplanet Archive TAP, the white-dwarf catalogue), prints
their URLs (and, last, one JSON line for scripts), optionally writes a
catalog of the simulated stars, and serves until interrupted.

``run CONFIG`` starts them over a sky made for the ready projects
(:meth:`SimulatedSky.for_projects`: white dwarfs and planet hosts), runs the
project of ``CONFIG`` with every archive URL pointed at them (a data root of
its own, ``data/simulated`` by default), prints the run's summary and the
commands that look at its results (``status``, ``sources``, ``detections``,
``show``, ``report``, ``check``, with ``--data-root`` and ``--database``: they
read what the run made and never touch the network), and stops.

Examples
--------
    python -m skyretriever.testing serve --stars 200 --sectors 3 --latency 0.15
    python -m skyretriever.testing serve --catalog sim.csv --unavailable-rate 0.1
    python -m skyretriever.testing serve --real-files ~/.cache/skyretriever/real-files
    python -m skyretriever.testing run configs/wd_flares.yaml --stars 40
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from skyretriever.parameters import load_yaml
from skyretriever.project import Project
from skyretriever.testing.archives import SimulatedArchives
from skyretriever.testing.realfiles import RealFileCopies
from skyretriever.testing.server import FAULT_KINDS, Faults
from skyretriever.testing.sky import SimulatedSky


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m skyretriever.testing",
                                     description="Simulated archives on the loopback interface.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="start the simulated archives (MAST, S3, IRSA, catalogs)")
    serve.add_argument("--stars", type=int, default=20, help="number of simulated stars")
    serve.add_argument("--sectors", type=int, default=2, help="TESS sectors per star")
    serve.add_argument("--cadence", type=int, choices=(120, 20), default=120,
                       help="seconds between the TESS light curves' epochs (2-minute or 20-second)")
    serve.add_argument("--days", type=float, default=3.0,
                       help="days covered by each sector's file")
    serve.add_argument("--empty-fraction", type=float, default=0.0,
                       help="fraction of stars without any data")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--mast-port", type=int, default=0)
    serve.add_argument("--s3-port", type=int, default=0)
    serve.add_argument("--catalog", help="write a CSV catalog of the stars here")
    serve.add_argument("--real-files", metavar="DIR",
                       help="serve copies of the real light-curve files (*.fits) in DIR, each "
                            "with its star's identity in the headers, instead of simulated "
                            "ones (python bench/real_files.py fetches some)")
    serve.add_argument("--cache-mb", type=float, default=512.0,
                       help="megabytes of FITS files kept in memory (with --prepare-files, make "
                            "it hold them all, or evicted files are made again while serving)")
    serve.add_argument("--prepare-files", action="store_true",
                       help="make every FITS file before serving (so timing excludes it)")
    serve.add_argument("--latency", type=float, default=0.0, help="seconds added to each request")
    serve.add_argument("--retry-after", type=int, default=1,
                       help="Retry-After seconds sent with 503 and 429")
    serve.add_argument("--stall", type=float, default=2.0,
                       help="seconds a request hit by the timeout fault stalls")
    serve.add_argument("--faults-per-request", type=int, default=None,
                       help="at most this many faulty answers to the same request")
    for kind in FAULT_KINDS:
        serve.add_argument(f"--{kind}-rate", type=float, default=0.0,
                           help=f"fraction of requests that get the {kind} fault")
    run = commands.add_parser("run", help="run a project (YAML) against simulated archives")
    run.add_argument("config", help="the project's YAML file (e.g. configs/wd_flares.yaml)")
    run.add_argument("--stars", type=int, default=40, help="number of simulated stars")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--data-root", default=str(Path("data") / "simulated"),
                     help="data root of the simulated run (default data/simulated)")
    return parser


def run_project(args: argparse.Namespace) -> int:
    """Run the project of ``args.config`` with its archives pointed at simulated ones."""
    config = load_yaml(args.config)
    obs_names = (config.get("project") or {}).get("obs_names") or ["demo"]
    sky = SimulatedSky.for_projects(args.stars, seed=args.seed)
    data_root = Path(args.data_root)
    with SimulatedArchives(sky) as archives:
        archives.add_irsa()
        archives.add_catalogs(max_sync_rows=None)
        where = {}
        for name in obs_names:
            if name.lower() == "ztf":
                where[name] = archives.ztf_kwargs()
            elif name.lower() in ("tess", "k2", "kepler"):
                where[name] = archives.observatory_kwargs()
        database_url = f"sqlite:///{data_root.resolve() / 'skyretriever.db'}"
        project = Project(cfg_file=args.config, data_root=str(data_root),
                          database_url=database_url,
                          catalog_kwargs=archives.catalog_kwargs(
                              cache_dir=str(data_root / "catalogs")), **where)
        summary = project.run()
        first = project.catalog.get_rows(0, 1)
    print(summary)
    print(_looking_commands(args.config, project.data_root, database_url,
                            first[0]["name"] if first else None))
    return 3 if summary.failures else 0


def _command_prefix() -> str:
    """How to call ``skyretriever`` from here: the script beside this Python, or ``-m``."""
    script = Path(sys.executable).parent / "skyretriever"
    if script.is_file() and os.access(script, os.X_OK):
        try:
            return shlex.quote(str(script.relative_to(Path.cwd())))
        except ValueError:
            return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m skyretriever"


def _looking_commands(config: str, data_root: Path, database_url: str,
                      source: str | None) -> str:
    """The commands that look at the simulated project's results, as they are to be typed."""
    where = (f"--data-root {shlex.quote(str(data_root))} "
             f"--database {shlex.quote(database_url)}")
    command = f"{_command_prefix()} {{}} {shlex.quote(config)}"
    lines = ["look at the results (they are read from the simulated run's data root and "
             "database; no archive is asked):"]
    for action, extra in (("status", ""), ("sources", " --limit 10"),
                          ("detections", " --limit 10"),
                          ("show", f" {shlex.quote(source)}" if source else None),
                          ("report", ""), ("check", "")):
        if extra is not None:
            lines.append(f"  {command.format(action)}{extra} {where}")
    return "\n".join(lines)


def serve(args: argparse.Namespace) -> int:
    real_files = RealFileCopies.from_folder(args.real_files) if args.real_files else None
    sky = SimulatedSky.random(args.stars, seed=args.seed, sectors_per_star=args.sectors,
                              tess_cadence="fast" if args.cadence == 20 else "short",
                              empty_fraction=args.empty_fraction, days_per_sector=args.days,
                              real_files=real_files, cache_bytes=int(args.cache_mb * 1024**2))
    faults = Faults(latency=args.latency, retry_after=args.retry_after, seed=args.seed,
                    stall=args.stall,
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
        archives.add_irsa(faults)
        archives.add_catalogs(faults)
        print("skyretriever simulated archives")
        print(f"  MAST portal (mast_url):        {archives.mast_url}")
        print(f"  S3 endpoint (s3_endpoint_url): {archives.s3_endpoint_url}  bucket stpubdata")
        print(f"  IRSA ZTF (irsa_url):           {archives.irsa.url}")
        print(f"  catalogs (gaia_tap_url...):    {archives.catalogs.url}")
        print(f"  {len(sky.stars)} stars, {len(sky.files)} light-curve files"
              + (f" (copies of the real files in {args.real_files})" if args.real_files else "")
              + (f", catalog {args.catalog}" if args.catalog else ""))
        print("  statistics: GET <url>/_sim/stats; faults: POST <url>/_sim/faults; Ctrl-C stops")
        print(json.dumps({"mast_url": archives.mast_url,
                          "s3_endpoint_url": archives.s3_endpoint_url,
                          **archives.ztf_kwargs(), **archives.catalog_kwargs(),
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
    if args.command == "run":
        return run_project(args)
    return 2  # pragma: no cover - argparse rejects other commands


if __name__ == "__main__":
    sys.exit(main())
