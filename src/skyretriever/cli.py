"""The ``skyretriever`` command: run a project, show its status, migrate the database.

Every command takes the project's YAML file, which names the project, the
database and the data root.

Examples
--------
    skyretriever run configs/demo.yaml
    skyretriever run configs/wd_flares.yaml --start 0 --stop 10000
    skyretriever status configs/demo.yaml
    skyretriever check configs/demo.yaml --repair
    skyretriever db upgrade configs/demo.yaml

Exit status: 0 when everything asked for was done, 3 when a run finished but
some sources failed (their reasons are listed and stored), 4 when ``check``
found problems (repaired or not), 1 on an error that stopped the command (bad
configuration, unreachable database), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from skyretriever import __version__

__all__ = ["main"]

EXIT_FAILED_SOURCES = 3
EXIT_PROBLEMS_FOUND = 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skyretriever",
        description="Download, reduce and analyse time-series photometry for a catalog of stars.",
    )
    parser.add_argument("--version", action="version", version=f"skyretriever {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a project (resumable)")
    run.add_argument("config", help="the project's YAML file")
    run.add_argument("--start", type=int, default=None, help="first catalog row (from 0)")
    run.add_argument("--stop", type=int, default=None, help="row after the last one")
    run.add_argument("--source", action="append", dest="sources", metavar="NAME",
                     help="run only this source (repeatable)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    status = commands.add_parser("status", help="counts per stage and observatory, and failures")
    status.add_argument("config", help="the project's YAML file")
    status.add_argument("--format", choices=("text", "json"), default="text")
    status.add_argument("--failures", type=int, default=20, help="how many failures to list")

    check = commands.add_parser(
        "check", help="do the database and the files agree? (exit 0 only when they do)")
    check.add_argument("config", help="the project's YAML file")
    check.add_argument("--repair", action="store_true",
                       help="fix what can be fixed and say what was done")
    check.add_argument("--no-checksums", action="store_true",
                       help="compare file sizes only (faster on big data roots)")

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    for name, text in (("upgrade", "create or migrate the schema to the newest version"),
                       ("current", "show the schema version of the database")):
        action = db_commands.add_parser(name, help=text)
        action.add_argument("config", nargs="?", help="a project's YAML file (for its database)")
        action.add_argument("--url", help="database URL (instead of a YAML file)")
    return parser


def _project(config: str, **kwargs):
    from skyretriever.project import Project

    return Project(cfg_file=config, **kwargs)


def _print_status(status: dict) -> None:
    print(f"project {status['project']}  cfg_hash {status['cfg_hash'][:16] or '(none)'}")
    print(f"  folder   {status['folder']}")
    print(f"  database {status['database']}")
    print(f"  catalog  {status['catalog_rows']} rows")
    sources = status["sources"]
    print(f"  sources  done {sources['done']}, failed {sources['failed']}, new {sources['new']}")
    print(f"  {'observatory':<12} {'raw':>8} {'empty':>8} {'lightcurves':>12}")
    for name, counts in status["observatories"].items():
        print(f"  {name:<12} {counts['raw']:>8} {counts['empty']:>8} {counts['lightcurves']:>12}")
    detections = status["detections"]
    print(f"  properties {status['properties']}, detections {detections['real']} real, "
          f"{detections['simulated']} simulated")
    if status["failures"]:
        print("  failures:")
        for name, error in status["failures"]:
            print(f"    {name}: {error}")


def _db(args: argparse.Namespace) -> int:
    from skyretriever import database

    if args.config:
        _project(args.config)
    elif args.url:
        database.configure(args.url)
    else:
        database.configure()
    if args.db_command == "upgrade":
        database.upgrade()
    print(f"{database.redact_url(database.get_url())}: schema {database.current_revision()} "
          f"(newest {database.head_revision()})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from skyretriever.catalogs.catalog import CatalogError
    from skyretriever.database import DatabaseError
    from skyretriever.parameters import ParameterError

    try:
        if args.command == "run":
            kwargs = {"progress": False} if args.no_progress else {}
            summary = _project(args.config, **kwargs).run(args.start, args.stop, args.sources)
            print(summary)
            return EXIT_FAILED_SOURCES if summary.counts["failed"] else 0
        if args.command == "status":
            status = _project(args.config).status(args.failures)
            if args.format == "json":
                print(json.dumps(status, indent=2))
            else:
                _print_status(status)
            return 0
        if args.command == "check":
            from skyretriever.checker import check_project

            report = check_project(_project(args.config), repair=args.repair,
                                   checksums=not args.no_checksums)
            print(report)
            return 0 if report.clean else EXIT_PROBLEMS_FOUND
        if args.command == "db":
            return _db(args)
    except (ParameterError, CatalogError, DatabaseError) as error:
        print(f"skyretriever: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("skyretriever: interrupted; committed batches are kept, run again to continue",
              file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
