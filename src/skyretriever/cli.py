"""The ``skyretriever`` command: run a project, query its results, check and migrate it.

Every command takes the project's YAML file first (CONFIG): it names the
project, the database and the data root, so it says where the rows are.

Examples
--------
    skyretriever run configs/demo.yaml
    skyretriever run configs/wd_flares.yaml --start 0 --stop 10000
    skyretriever status configs/demo.yaml
    skyretriever sources configs/demo.yaml --where 'mag < 15 and dec > -30' --format csv
    skyretriever detections configs/demo.yaml --min-snr 10 --real --limit 20
    skyretriever show configs/demo.yaml demo_0042 --plot demo_0042.png
    skyretriever show configs/demo.yaml demo_0042 --plot demo_0042_fft.png --plot-kind power_spectrum
    skyretriever report configs/demo.yaml --top 50
    skyretriever check configs/demo.yaml --repair
    skyretriever get "TIC 25155310" --obs TESS --format csv > tic25155310.csv
    skyretriever train configs/transits_demo.yaml --examples 2000
    skyretriever sources configs/transits_demo.yaml --where 'ml_score > 0.9'
    skyretriever db upgrade configs/demo.yaml

``--where`` takes a condition over the columns of the rows listed, such as
``mag < 15 and dec > -30``, ``snr >= 7 or finder == "transit"``,
``observatory in ("tess", "ztf")`` or ``not is_simulated``; see
:mod:`skyretriever.query`. The query commands only read the database.

Exit status: 0 when everything asked for was done, 3 when a run finished but
some sources failed (their reasons are listed and stored), 4 when ``check``
found problems (repaired or not), 1 on an error that stopped the command (bad
configuration or filter, unreachable database, unknown source, or a run stopped by
the machine under it: a full disk, a read-only data root or database, the
database gone; one line says what and where, ``-v`` adds the traceback), 2 on
bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from skyretriever import database, queries
from skyretriever._version import __version__
from skyretriever.catalogs.catalog import CatalogError
from skyretriever.catalogs.names import RESOLVER_URL
from skyretriever.checker import check_project
from skyretriever.database import DatabaseError
from skyretriever.errors import RunStopped
from skyretriever.fetching import DEFAULT_PROJECT, FetchFailed, fetch
from skyretriever.models import Detection, Lightcurve, Properties, Source
from skyretriever.models.display import column_unit, format_column
from skyretriever.net import NetworkError
from skyretriever.parameters import ParameterError
from skyretriever.plots import (
    SPECTRAL_KINDS,
    plot_classifier_evaluation,
    plot_source,
    plot_source_spectra,
)
from skyretriever.progress import PROGRESS_LOGGER
from skyretriever.project import Project
from skyretriever.query import FilterError, filter_columns, parse_filter
from skyretriever.report import DEFAULT_TOP, write_report
from skyretriever.storage import StorageError, file_sha256
from skyretriever.zooniverse import (
    ZooniverseError,
    export_lightcurve_subjects,
    export_subject_set,
    import_classifications,
    upload_subject_set,
)

__all__ = ["DETECTION_COLUMNS", "SOURCE_COLUMNS", "CommandError", "main"]

EXIT_FAILED_SOURCES = 3
EXIT_PROBLEMS_FOUND = 4

#: Columns of ``skyretriever sources`` (Source columns, then Properties columns); every one
#: of them is also a name ``--where`` knows.
SOURCE_COLUMNS = ("id", "name", "ra", "dec", "mag", "status", "num_lightcurves", "num_points",
                  "best_snr", "num_detections", "ml_score", "error")
#: Columns of ``skyretriever detections`` (``name`` is the source's name).
DETECTION_COLUMNS = ("id", "name", "observatory", "filter", "finder", "is_simulated", "snr",
                     "sign", "time_peak", "time_start", "time_end", "peak_mag", "period",
                     "depth", "ml_score")

# How text tables show floats, by column name (others: 6 significant digits).
_FLOAT_FORMATS = {
    "ra": ".5f", "dec": ".5f", "mag": ".3f", "peak_mag": ".3f", "mag_mean": ".3f",
    "mag_median": ".3f", "mag_rms": ".4f", "mag_err": ".4f", "snr": ".2f", "best_snr": ".2f",
    "score": ".2f", "transit_snr": ".2f", "time_peak": ".4f", "time_start": ".4f",
    "time_end": ".4f", "period": ".6g", "depth": ".4g", "ml_score": ".3f",
}
_CONFIG_HELP = "the project's YAML file (it names the database, so it comes first)"


class CommandError(Exception):
    """A command cannot do what was asked (unknown source, database not made yet, ...)."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, not {value}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, not {text!r}")
    return value


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
    run.add_argument("--redo", action="store_true",
                     help="remake the project's results when its configuration, catalog or "
                          "code version changed (without version control)")
    run.add_argument("--log", metavar="FILE",
                     help="also write the log to FILE (appended), with a progress line every "
                          "execution.log_interval seconds")

    status = commands.add_parser("status", help="counts per stage and observatory, and failures")
    status.add_argument("config", help="the project's YAML file")
    status.add_argument("--format", choices=("text", "json"), default="text")
    status.add_argument("--failures", type=int, default=20, help="how many failures to list")

    formats = ("text", "csv", "json")
    sources = commands.add_parser(
        "sources", help="list the project's sources (with their properties)",
        description="List the sources of the project, in catalog order, with columns "
                    f"{', '.join(SOURCE_COLUMNS)}. CONFIG comes first: it names the database.")
    sources.add_argument("config", metavar="CONFIG", help=_CONFIG_HELP)
    sources.add_argument("--where", metavar="EXPR",
                         help="condition over Source and Properties columns, e.g. "
                              "'mag < 15 and dec > -30' or 'best_snr > 10'")
    sources.add_argument("--limit", type=_positive_int, metavar="N", help="at most N rows")
    sources.add_argument("--format", choices=formats, default="text")

    detections = commands.add_parser(
        "detections", help="list the project's detections, highest S/N first",
        description="List the detections of the project, highest S/N first, with columns "
                    f"{', '.join(DETECTION_COLUMNS)} (name: the source's). CONFIG comes "
                    "first: it names the database.")
    detections.add_argument("config", metavar="CONFIG", help=_CONFIG_HELP)
    detections.add_argument("--min-snr", type=_finite_float, metavar="X",
                            help="only detections with snr >= X")
    kind = detections.add_mutually_exclusive_group()
    kind.add_argument("--simulated", action="store_true",
                      help="only detections of injected events")
    kind.add_argument("--real", action="store_true", help="only real detections")
    detections.add_argument("--where", metavar="EXPR",
                            help="condition over Detection columns (and Source columns), e.g. "
                                 "'snr >= 7 or finder == \"transit\"'")
    detections.add_argument("--limit", type=_positive_int, metavar="N", help="at most N rows")
    detections.add_argument("--format", choices=formats, default="text")

    show = commands.add_parser(
        "show", help="everything about one source: catalog, raw data, light curves, "
                     "properties, detections",
        description="Show one source of the project: its catalog values, raw data per "
                    "observatory, light curves, properties and detections. CONFIG comes "
                    "first: it names the database.")
    show.add_argument("config", metavar="CONFIG", help=_CONFIG_HELP)
    show.add_argument("source", metavar="SOURCE", help="the source's name, as in the catalog")
    show.add_argument("--plot", metavar="FILE",
                      help="also plot its light curves to FILE (format from the suffix: "
                           ".png, .pdf, .svg)")
    show.add_argument("--plot-kind", choices=("lightcurves", *SPECTRAL_KINDS),
                      default="lightcurves",
                      help="what --plot draws: the light curves on one time axis, or each "
                           "light curve's Fourier power spectrum or spectrogram (spacekit's "
                           "analyzer views); default %(default)s")
    show.add_argument("--format", choices=("text", "json"), default="text")

    report = commands.add_parser(
        "report", help="write the project's HTML report and print the path of index.html")
    report.add_argument("config", metavar="CONFIG", help=_CONFIG_HELP)
    report.add_argument("--top", type=_positive_int, metavar="N", default=DEFAULT_TOP,
                        help="how many real detections with the highest S/N the summary "
                             "lists and plots (default %(default)s)")
    report.add_argument("--no-source-plots", dest="source_plots", action="store_false",
                        help="leave out each source's own plots (its light curves and best "
                             "detections): most of the time a report takes")

    get = commands.add_parser(
        "get", help="one target by name or position, no catalog needed: download, reduce and "
                    "analyse it, and list (or print) its light curves")
    get.add_argument("name", nargs="?", metavar="NAME",
                     help="the target's name, resolved by MAST ('TIC 25155310', 'KIC 8462852')")
    get.add_argument("--ra", metavar="RA", help="right ascension (degrees or 12h30m00s), "
                                                "instead of resolving the name")
    get.add_argument("--dec", metavar="DEC", help="declination (degrees or +45d30m00s)")
    get.add_argument("--obs", action="append", dest="observatories", metavar="OBS",
                     help="an observatory to ask (TESS, K2, Kepler, ZTF, demo); repeat for "
                          "more; default TESS")
    get.add_argument("--config", metavar="CONFIG",
                     help="a project's YAML file whose settings to use (data root, database, "
                          "observatory parameters); its catalog is not run")
    get.add_argument("--project", metavar="NAME",
                     help=f"the project to run into (default: the config's, else "
                          f"{DEFAULT_PROJECT!r})")
    get.add_argument("--resolver-url", default=RESOLVER_URL, metavar="URL",
                     help="the name resolver (default MAST's)")
    get.add_argument("--no-analysis", action="store_true", help="download and reduce only")
    get.add_argument("--format", choices=("text", "csv"), default="text",
                     help="text: one line per light curve; csv: every point of every light "
                          "curve, with its observatory, filter and series")

    check = commands.add_parser(
        "check", help="do the database and the files agree? (exit 0 only when they do)")
    check.add_argument("config", help="the project's YAML file")
    check.add_argument("--repair", action="store_true",
                       help="fix what can be fixed and say what was done")
    check.add_argument("--no-checksums", action="store_true",
                       help="compare file sizes only (faster on big data roots)")

    ffi = commands.add_parser(
        "ffi", help="download every calibrated TESS FFI of a sector, camera and CCD (resumable)")
    ffi.add_argument("config", help="the project's YAML file (with a TESSFFI observatory)")
    ffi.add_argument("--sector", type=_positive_int, required=True)
    ffi.add_argument("--camera", type=int, choices=(1, 2, 3, 4), required=True)
    ffi.add_argument("--ccd", type=int, choices=(1, 2, 3, 4), required=True)
    train = commands.add_parser(
        "train", help="train the transit classifier on the project's own light curves",
        description="Make examples from the project's analysed light curves (injected "
                    "transits; the stars as they are, with flares, dips and eclipsing "
                    "binaries), train analysis.classifier.model on them, write "
                    "analysis.classifier.model_file, and print the test-set evaluation "
                    "beside the transit search's SDE. Figures go to <model_file>_figures/.")
    train.add_argument("config", metavar="CONFIG", help=_CONFIG_HELP)
    train.add_argument("--examples", type=_positive_int, metavar="N",
                       help="examples to make (default: analysis.classifier.training.examples)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    zooniverse = commands.add_parser(
        "zooniverse", help="solar events: export a subject set, import classifications")
    zooniverse_commands = zooniverse.add_subparsers(dest="zooniverse_command", required=True,
                                                    metavar="ACTION")
    export = zooniverse_commands.add_parser(
        "export", help="write the images and manifest.csv panoptes-cli uploads")
    export.add_argument("config", help="the project's YAML file")
    export.add_argument("--output", metavar="DIR",
                        help="the subject-set folder (default: zooniverse/ in the project folder)")
    export.add_argument("--frames-per-subject", type=_positive_int, default=5, metavar="N")
    export.add_argument("--overlap", type=int, default=1, metavar="N")
    export.add_argument("--wavelength", type=int, metavar="ANGSTROM")
    classifications = zooniverse_commands.add_parser(
        "import", help="aggregate a Panoptes classification export into detections")
    classifications.add_argument("config", help="the project's YAML file")
    classifications.add_argument("classifications", metavar="CSV",
                                 help="the classification export (CSV)")
    classifications.add_argument("--workflow", type=int, metavar="ID",
                                 help="keep only this workflow's classifications")
    classifications.add_argument("--subject-set", metavar="DIR",
                                 help="the exported folder (default: zooniverse/ in the project "
                                      "folder)")

    upload = zooniverse_commands.add_parser(
        "upload", help="upload the exported folder to a Panoptes project (resumable; "
                       "credentials from $PANOPTES_USERNAME / $PANOPTES_PASSWORD or "
                       "~/.panoptes/config.yml)")
    upload.add_argument("config", help="the project's YAML file")
    upload.add_argument("--project", required=True, metavar="ID",
                        help="the Zooniverse project's id")
    upload.add_argument("--subject-set", required=True, metavar="NAME",
                        help="the subject set's display name (found in the project or made)")
    upload.add_argument("--folder", metavar="DIR",
                        help="the exported folder (default: zooniverse/ in the project folder)")

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    for name, text in (("upgrade", "create or migrate the schema to the newest version"),
                       ("current", "show the schema version of the database")):
        action = db_commands.add_parser(name, help=text)
        action.add_argument("config", nargs="?", help="a project's YAML file (for its database)")
        action.add_argument("--url", help="database URL (instead of a YAML file)")
    # -v after the command too (skyretriever run -v CONFIG); SUPPRESS keeps the top-level value.
    for command in [*commands.choices.values(), *db_commands.choices.values(),
                    *zooniverse_commands.choices.values()]:
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="log more, and show the traceback of an error (also allowed "
                                  "before the command)")
    # Where the rows and files are, over the config's data_root and database (paths given
    # here are relative to the working folder; those in the config, to the config's folder).
    for command in [*(c for name, c in commands.choices.items()
                      if name not in ("db", "zooniverse")),
                    *db_commands.choices.values(), *zooniverse_commands.choices.values()]:
        command.add_argument("--data-root", metavar="DIR",
                             help="data root to use instead of the config's data_root")
        command.add_argument("--database", metavar="URL",
                             help="database URL to use instead of the config's database.url")
    return parser


def _project(args: argparse.Namespace, **kwargs) -> Project:
    """The project of ``args.config``, with ``--data-root`` and ``--database`` applied."""
    if getattr(args, "data_root", None):
        kwargs["data_root"] = args.data_root
    if getattr(args, "database", None):
        kwargs["database_url"] = args.database
    return Project(cfg_file=args.config, **kwargs)


def _offline_project(args: argparse.Namespace) -> Project:
    """The project of ``args.config`` for a command that reads what runs made: the catalog's
    hash comes from the project folder's ``config.yaml``, never from the network."""
    return _project(args).use_recorded_catalog()


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
        shown, failed = len(status["failures"]), sources["failed"]
        print("  failures:" if shown >= failed else f"  failures (first {shown} of {failed}):")
        for name, error in status["failures"]:
            print(f"    {_printable(name)}: {_printable(error)}")


def _db(args: argparse.Namespace) -> int:
    if args.config:
        _project(args)
    elif args.database or args.url:
        database.configure(args.database or args.url)
    else:
        database.configure()
    if args.db_command == "upgrade":
        database.upgrade()
    print(f"{database.redact_url(database.get_url())}: schema {database.current_revision()} "
          f"(newest {database.head_revision()})")
    return 0


# -- the query commands ---------------------------------------------------------------------
def _printable(value: Any) -> str:
    """``value`` as text for a terminal: control characters (newlines, escapes) made visible."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _plain(value: Any) -> Any:
    """A value as JSON can hold it: non-finite floats become None, times ISO text."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _text_cell(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, _FLOAT_FORMATS.get(name, ".6g"))
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (dict, list)):
        return _printable(json.dumps(value, sort_keys=True))
    return _printable(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                headers: Sequence[str] | None = None) -> list[str]:
    """Lines of an aligned table: numbers right-aligned, everything else left-aligned.

    ``headers`` (default: the column names) head the columns.
    """
    headers = list(columns) if headers is None else list(headers)
    cells = [[_text_cell(column, row[column]) for column in columns] for row in rows]
    lines = []
    widths = [max([len(header)] + [len(line[i]) for line in cells])
              for i, header in enumerate(headers)]
    numeric = [any(_is_number(row[column]) for row in rows)
               and all(_is_number(row[column]) or row[column] is None for row in rows)
               for column in columns]
    for line in [headers, *cells]:
        parts = [cell.rjust(width) if right else cell.ljust(width)
                 for cell, width, right in zip(line, widths, numeric)]
        lines.append("  ".join(parts).rstrip())
    return lines


def _write_rows(rows: list[dict[str, Any]], columns: Sequence[str], output: str,
                noun: str, truncated: bool) -> None:
    """Print rows as an aligned table with a count, as CSV (header first) or as a JSON list."""
    if output == "json":
        print(json.dumps([{c: _plain(row[c]) for c in columns} for row in rows], indent=2,
                         allow_nan=False))
        return
    if output == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row[c] is None else _plain(row[c]) for c in columns])
        return
    if rows:
        for line in _text_table(rows, columns):
            print(line)
    plural = noun if len(rows) == 1 else f"{noun}s"
    print(f"{len(rows)} {plural}" + (" (more with a higher --limit)" if truncated else ""))


def _read_only_project(args: argparse.Namespace):
    """The project of ``args.config``, after checking its database has the current schema.

    The query commands never create or migrate tables: an empty or outdated
    database is an error saying what to run. They never touch the network either.
    """
    config = args.config
    project = _offline_project(args)
    current, head = database.current_revision(), database.head_revision()
    where = database.redact_url(project.database_url)
    if current is None:
        raise CommandError(f"the database {where} has no skyretriever tables yet; run "
                           f"'skyretriever run {config}' first")
    if current != head:
        raise CommandError(f"the database {where} has schema {current}, and this version of "
                           f"skyretriever reads {head}; run 'skyretriever db upgrade {config}'")
    return project


@contextlib.contextmanager
def _query_errors(project: Any) -> Iterator[None]:
    """A database error while querying becomes one line naming the database (no SQL, no trace)."""
    try:
        yield
    except sa.exc.SQLAlchemyError as error:
        lines = str(getattr(error, "orig", None) or error).strip().splitlines()
        reason = lines[0] if lines else type(error).__name__
        password = sa.engine.make_url(project.database_url).password
        if password:
            reason = reason.replace(str(password), "***")
        raise CommandError(
            f"the query failed on the database {database.redact_url(project.database_url)}: "
            f"{reason if len(reason) <= 300 else reason[:297] + '...'}") from None


def _fetch(project: Any, read: Callable[[Any, int | None], list[dict[str, Any]]],
           limit: int | None) -> tuple[list[dict[str, Any]], bool]:
    """The rows ``read(session, most)`` gives (at most ``limit``), and whether more were left."""
    with _query_errors(project), database.Session() as session:
        rows = read(session, None if limit is None else limit + 1)
    truncated = limit is not None and len(rows) > limit
    return rows[:limit] if truncated else rows, truncated


def _sources(args: argparse.Namespace) -> int:
    # The filter is read before anything touches the database.
    condition = parse_filter(args.where, Source, Properties, where="--where") \
        if args.where is not None else None
    project = _read_only_project(args)
    context = project.context
    columns = filter_columns(Source, Properties)
    rows, truncated = _fetch(project, lambda session, most: queries.source_table(
        session, context, [columns[name] for name in SOURCE_COLUMNS], condition, most),
        args.limit)
    _write_rows(rows, SOURCE_COLUMNS, args.format, "source", truncated)
    return 0


def _detections(args: argparse.Namespace) -> int:
    condition = parse_filter(args.where, Detection, Source, where="--where") \
        if args.where is not None else None
    project = _read_only_project(args)
    context = project.context
    columns = filter_columns(Detection, Source)
    simulated = bool(args.simulated) if args.simulated or args.real else None
    rows, truncated = _fetch(project, lambda session, most: queries.detection_table(
        session, context, [columns[name] for name in DETECTION_COLUMNS], args.min_snr,
        simulated, condition, most), args.limit)
    _write_rows(rows, DETECTION_COLUMNS, args.format, "detection", truncated)
    return 0


_SHOWN_RAW = ("observatory", "is_empty", "num_points", "time_start", "time_end", "filters",
              "filename")
_SHOWN_LIGHTCURVES = ("id", "observatory", "filter", "series_number", "series_total",
                      "is_simulated", "num_points", "num_good_points", "time_start", "time_end",
                      "exptime", "mag_mean", "mag_rms")


def _row_values(row: Any, skip: Sequence[str] = ()) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in row.__table__.columns
            if column.key not in skip}


def _headers(model: Any, columns: Sequence[str]) -> list[str]:
    """Column names with the unit the model gives them: ``exptime (s)``, ``time_start (MJD)``."""
    table = model.__table__.c
    return [f"{name} ({column_unit(table[name])})"
            if name in table and column_unit(table[name]) else name for name in columns]


def _find_source(session: Any, context: Any, name: str, config: str) -> Source:
    source = queries.source_named(session, context, name)
    if source is not None:
        return source
    similar = queries.similar_source_names(session, context, name, limit=5)
    hint = f"; similar names: {', '.join(repr(n) for n in similar)}" if similar else (
        f"; list them with 'skyretriever sources {config}'")
    raise CommandError(f"no source named {name!r} in project {context.name!r}{hint}")


def _show(args: argparse.Namespace) -> int:
    project = _read_only_project(args)
    context = project.context
    with _query_errors(project), database.Session() as session:
        source = _find_source(session, context, args.source, args.config)
        catalog = _row_values(source, skip=("project", "cfg_hash"))
        raw = [_row_values(r) for r in sorted(source.raw_photometry, key=lambda r: r.observatory)]
        lightcurves = [_row_values(lc) for lc in source.lightcurves]
        properties = (_row_values(source.properties, skip=("id", "source_id", "project",
                                                           "cfg_hash"))
                      if source.properties is not None else None)
        detections = [{**_row_values(d), "name": source.name}
                      for d in sorted(source.detections, key=lambda d: (-d.snr, d.id))]
        if args.format == "json":
            plot = _plot(source, session, args.plot, args.plot_kind) if args.plot else None
            print(json.dumps({
                "project": context.name, "cfg_hash": context.cfg_hash,
                "source": {k: _plain(v) for k, v in catalog.items()},
                "raw_photometry": [{k: _plain(v) for k, v in r.items()} for r in raw],
                "lightcurves": [{k: _plain(v) for k, v in lc.items()} for lc in lightcurves],
                "properties": ({k: _plain(v) for k, v in properties.items()}
                               if properties is not None else None),
                "detections": [{k: _plain(v) for k, v in d.items()} for d in detections],
                "plot": plot,
            }, indent=2, allow_nan=False))
            return 0
        print(f"source {_printable(source.name)} (project {context.name}, "
              f"cfg_hash {context.cfg_hash[:16] or '(none)'})")
        _print_pairs("catalog", catalog, Source)
        print(f"raw data: {len(raw)} observator{'y' if len(raw) == 1 else 'ies'}")
        raw_class = type(source.raw_photometry[0]) if source.raw_photometry else None
        for line in _text_table(raw, _SHOWN_RAW, _headers(raw_class, _SHOWN_RAW)) if raw else []:
            print(f"  {line}")
        print(f"light curves: {len(lightcurves)}")
        for line in _text_table(lightcurves, _SHOWN_LIGHTCURVES,
                                _headers(Lightcurve, _SHOWN_LIGHTCURVES)) if lightcurves else []:
            print(f"  {line}")
        if properties is None:
            print("properties: none (not analysed yet)")
        else:
            _print_pairs("properties", properties, Properties)
        print(f"detections: {len(detections)}")
        for line in _text_table(detections, DETECTION_COLUMNS,
                                _headers(Detection, DETECTION_COLUMNS)) if detections else []:
            print(f"  {line}")
        if args.plot:  # after the text, so a source that cannot be plotted is still shown
            sys.stdout.flush()
            print(f"plot saved to {_plot(source, session, args.plot, args.plot_kind)}")
    return 0


def _print_pairs(title: str, values: Mapping[str, Any], model: Any) -> None:
    """A section of ``name  value unit`` lines (``ls_period  36.2925 d``), leaving out empty
    values; numbers in the precision and unit the model gives the column."""
    shown = {k: v for k, v in values.items() if v is not None and v != {} and v != []}
    print(f"{title}:")
    width = max((len(k) for k in shown), default=0)
    columns = model.__table__.c
    for key, value in shown.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        text = format_column(columns[key], value) if number and key in columns else None
        print(f"  {key:<{width}}  {_text_cell(key, value) if text is None else _printable(text)}")


def _plot(source: Any, session: Any, filename: str, kind: str = "lightcurves") -> str:
    try:
        if kind == "lightcurves":
            figure = plot_source(source, session=session, filename=filename)
        else:
            figure = plot_source_spectra(source, kind, session=session, filename=filename)
    except (OSError, ValueError) as error:
        raise CommandError(f"--plot {filename}: {error}") from None
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:  # a figure made through pyplot stays open until closed
        pyplot.close(figure)
    return str(filename)


def _report(args: argparse.Namespace) -> int:
    project = _read_only_project(args)
    print(write_report(project, top=args.top, source_plots=args.source_plots))
    return 0


class _StderrFilter(logging.Filter):
    """What stderr shows: warnings (everything under ``-v``), and the progress lines of
    runs where stderr is no terminal (a terminal has the bar instead)."""

    def __init__(self, verbose: bool, progress_lines: bool) -> None:
        super().__init__()
        self.verbose, self.progress_lines = verbose, progress_lines

    def filter(self, record: logging.LogRecord) -> bool:
        return (self.verbose or record.levelno >= logging.WARNING
                or (self.progress_lines and record.name == PROGRESS_LOGGER))


@contextlib.contextmanager
def _logging(verbose: bool, log_file: str | None) -> Iterator[None]:
    """Log to stderr (and to ``log_file``) while the command runs; undone afterwards."""
    root = logging.getLogger()
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setFormatter(formatter)
    terminal = bool(getattr(sys.stderr, "isatty", lambda: False)())
    to_stderr.addFilter(_StderrFilter(verbose, progress_lines=not terminal))
    handlers: list[logging.Handler] = [to_stderr]
    if log_file:
        try:
            to_file = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as error:
            raise CommandError(f"--log {log_file}: {error.strerror or error}") from None
        to_file.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
        to_file.setLevel(logging.DEBUG if verbose else logging.INFO)
        handlers.append(to_file)
    level = root.level
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)


def _get(args: argparse.Namespace) -> int:
    kwargs: dict[str, Any] = {}
    if args.data_root:
        kwargs["data_root"] = args.data_root
    if args.database:
        kwargs["database_url"] = args.database
    try:
        curves = fetch(args.name, ra=args.ra, dec=args.dec,
                       observatories=args.observatories or ["TESS"], cfg_file=args.config,
                       project=args.project, resolver_url=args.resolver_url,
                       analyze=not args.no_analysis, **kwargs)
    except NetworkError as error:   # the name resolver, after its retries
        raise CommandError(str(error)) from error
    if args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        columns = ["observatory", "filter", "series"]
        header: list[str] | None = None
        for curve in curves:
            frame = curve.data
            if list(frame.columns) != header:
                header = list(frame.columns)
                writer.writerow([*columns, *header])
            for values in frame.itertuples(index=False):
                writer.writerow([curve.observatory, curve.filter, curve.series_number,
                                 *("" if _missing(v) else _plain(v) for v in values)])
        return 0
    target = args.name or f"RA {args.ra}, Dec {args.dec}"
    if not curves:
        print(f"{_printable(target)}: no light curves from "
              f"{', '.join(args.observatories or ['TESS'])}")
        return 0
    print(f"{_printable(target)}: {len(curves)} light curve(s)")
    for curve in curves:
        print(f"  {_printable(repr(curve))}  {curve.filename}")
    return 0


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
def _train(args: argparse.Namespace) -> int:
    """``skyretriever train``: fit the classifier, print its evaluation, save its figures."""
    project = _project(args)
    try:
        metadata = project.train(args.examples, show_progress=not args.no_progress)
    except ValueError as error:
        if isinstance(error, ParameterError):
            raise
        raise CommandError(str(error)) from None
    for line in training_report(metadata):
        print(line)
    model_file = Path(project.analysis.pars.classifier.model_file)
    folder = model_file.with_name(model_file.name + "_figures")
    import matplotlib.pyplot as plt

    for kind in ("roc", "precision_recall", "confusion"):
        plt.close(plot_classifier_evaluation(metadata, kind, filename=folder / f"{kind}.png"))
    print(f"model file {model_file} (sha256 {file_sha256(model_file)[:16]}), "
          f"metadata {model_file.name}.json, figures in {folder}")
    return 0


def training_report(metadata: Mapping[str, Any]) -> list[str]:
    """Lines saying what ``skyretriever train`` made and how well the model does on the test set."""
    data, seconds = metadata["data"], metadata["seconds"]
    parts = data["parts"]
    lines = [
        f"{metadata['model']} model: {data['examples']} examples ({data['positives']} with a "
        f"transit) from {data['sources']} sources in {seconds['examples']:.1f} s; "
        f"train {parts['train']}, validation {parts['validation']}, test {parts['test']}; "
        f"fitted in {seconds['fit']:.1f} s",
    ]
    if data["dropped"]:
        lines.append("  not made: " + ", ".join(f"{reason} {count}" for reason, count
                                                in data["dropped"].items()))
    lines.append(f"  {'score':<12} {'AUC':>6} {'AUPRC':>6} {'recall@99%prec':>15} "
                 f"{'threshold':>9}  confusion [[TN FP] [FN TP]]")
    for key, name in (("model", f"{metadata['model']}"), ("sde", "SDE")):
        m = metadata["metrics"][key]
        lines.append(f"  {name:<12} {m['auc']:6.3f} {m['auprc']:6.3f} "
                     f"{m['recall_at_99_precision']:15.3f} {m['threshold']:9.3g}  "
                     f"{m['confusion']}")
    return lines




def _close(figure: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)


def _zooniverse(args: argparse.Namespace) -> int:
    project = _offline_project(args)
    default = project.output_folder / "zooniverse"
    if args.zooniverse_command == "export":
        output = Path(args.output) if args.output else default
        if all(obs.data_type == "photometry" for obs in project.observatories.values()):
            # Light curves: a subject per source with its plot (as Planet Hunters TESS does).
            manifest = export_lightcurve_subjects(
                project, output, lambda source, session, path: _close(
                    plot_source(source, session=session, filename=path)))
        else:
            manifest = export_subject_set(project, output,
                                          frames_per_subject=args.frames_per_subject,
                                          overlap=args.overlap, wavelength=args.wavelength)
        print(manifest)
        return 0
    if args.zooniverse_command == "upload":
        counts = upload_subject_set(Path(args.folder) if args.folder else default, args.project,
                                    args.subject_set)
        print(", ".join(f"{value} {name}" for name, value in counts.items()))
        return 0
    counts = import_classifications(
        project, args.classifications,
        Path(args.subject_set) if args.subject_set else default, workflow=args.workflow)
    print(", ".join(f"{value} {name}" for name, value in counts.items()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        with _logging(args.verbose, getattr(args, "log", None)):
            return _command(args)
    except CommandError as error:   # the log file cannot be opened
        print(f"skyretriever: error: {error}", file=sys.stderr)
        return 1


def _command(args: argparse.Namespace) -> int:
    try:
        if args.command == "run":
            kwargs = {"progress": False} if args.no_progress else {}
            project = _project(args, **kwargs)
            new = " (new: nothing downloaded there yet)" if project.data_root_is_new() else ""
            print(f"project {project.pars.name}: data root {project.data_root}{new}, database "
                  f"{database.redact_url(project.database_url)}", flush=True)
            summary = project.run(args.start, args.stop, args.sources, redo=args.redo)
            print(summary)
            return EXIT_FAILED_SOURCES if summary.counts["failed"] else 0
        if args.command == "status":
            status = _offline_project(args).status(args.failures)
            if args.format == "json":
                print(json.dumps(status, indent=2))
            else:
                _print_status(status)
            return 0
        if args.command == "check":
            report = check_project(_offline_project(args), repair=args.repair,
                                   checksums=not args.no_checksums)
            print(report)
            return 0 if report.clean else EXIT_PROBLEMS_FOUND
        if args.command == "db":
            return _db(args)
        if args.command == "ffi":
            done = _project(args).download_ffis(args.sector, args.camera, args.ccd)
            print(done)
            return EXIT_FAILED_SOURCES if done.failures else 0
        if args.command == "zooniverse":
            return _zooniverse(args)
        commands = {"sources": _sources, "detections": _detections, "show": _show,
                    "report": _report, "get": _get, "train": _train}
        if args.command in commands:
            return commands[args.command](args)
    except RunStopped as error:
        if args.verbose:
            logging.getLogger("skyretriever").exception("the run stopped")
        print(f"skyretriever: run stopped: {error}; committed batches are kept, run again "
              "once this is fixed", file=sys.stderr)
        return 1
    except FetchFailed as error:
        print(f"skyretriever: failed: {error}", file=sys.stderr)
        return EXIT_FAILED_SOURCES
    except (ParameterError, CatalogError, DatabaseError, FilterError, StorageError,
            CommandError, ZooniverseError) as error:
        if args.verbose:
            logging.getLogger("skyretriever").exception("the command failed")
        print(f"skyretriever: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader (head, less) left; say nothing more
        try:
            sys.stdout = open(os.devnull, "w")  # Python flushes stdout at exit
        except OSError:
            pass
        return 1
    except KeyboardInterrupt:
        print("skyretriever: interrupted; committed batches are kept, run again to continue",
              file=sys.stderr)
        return 130
    except Exception as error:  # anything else (a network failure...): one line, -v the trace
        if args.verbose:
            logging.getLogger("skyretriever").exception("the command failed")
        text = " ".join(str(error).split()) or type(error).__name__
        print(f"skyretriever: error: {type(error).__name__}: "
              f"{text if len(text) <= 500 else text[:497] + '...'}"
              + ("" if args.verbose else " (-v shows the traceback)"), file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
