"""A static HTML report of a project: summary, plots, top detections and one page per source.

:func:`write_report` writes plain files into one folder (by default
``<output folder>/report``): HTML pages, PNG images beside them and nothing
else. Every link is relative, so the folder can be copied or served anywhere;
nothing is loaded from the network (the table sorting is a few lines of inline
JavaScript). Every piece of text from the database or the configuration is
HTML-escaped, and file names come from :func:`skyretriever.storage.sanitize_name`,
so hostile source names (``<script>``, quotes, ``/``, ``..``) can neither run
nor leave the folder.

Layout of the report folder::

    index.html                     summary: sources by state, observatories, failures,
                                   time per step, histograms, top detections, config.yaml
    failures.html                  every failed source with its reason
    sources_1.html, sources_2.html ...   the sources, 500 per page (``per_page``)
    sources/<source>.html          one page per source: its properties, light curves,
                                   detections and plots
    sources/<source>.png           all light curves of the source
    sources/<event>_movie_<wave>.png   a solar event's movie (animated PNG) per wavelength,
                                   or its frames; <event>_box_<id>.png the volunteers'
                                   consensus box drawn on the frame they saw
    detections/<id>.png            a detection's plot, and <id>_thumb.png its thumbnail
    plots/histogram_<axis>.png     counts and recovery efficiency along mag, score, ...

The report is built in a temporary folder and renamed into place only when
complete, so a report that fails half-way never replaces a good one; the old
report is moved aside beside the new one (never into the temporary folders a
run clears) and put back if the swap was killed half-way
(:func:`skyretriever.storage.replace_folder`).

Examples
--------
>>> from skyretriever import Project
>>> from skyretriever.report import write_report
>>> proj = Project(cfg_file="configs/demo.yaml")          # doctest: +SKIP
>>> summary = proj.run()                                  # doctest: +SKIP
>>> write_report(proj, summary=summary)                   # doctest: +SKIP
PosixPath('.../data/DEMO/report/index.html')
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import html
import json
import logging
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote

from sqlalchemy import orm

from skyretriever import database, plots, queries, storage
from skyretriever._version import __version__
from skyretriever.analysis.classifier import ModelFileError, read_model_metadata
from skyretriever.analysis.histogram import Histogram
from skyretriever.execution import die_with_parent
from skyretriever.models import Detection, Lightcurve, Properties, RawImages, Source
from skyretriever.models.display import column_header, column_label, format_column, format_number
from skyretriever.observatories.base import ProjectContext
from skyretriever.progress import progress_bar
from skyretriever.solar.images import ImageMapping, draw_box

if TYPE_CHECKING:
    from skyretriever.project import Project, RunSummary

__all__ = [
    "DEFAULT_TOP",
    "DETECTION_PLOTS_PER_SOURCE",
    "HISTOGRAM_AXES",
    "MARKER_FILE",
    "SOURCES_PER_PAGE",
    "ReportError",
    "write_report",
]

log = logging.getLogger(__name__)

#: Sources listed on one page of the source list.
SOURCES_PER_PAGE = 500
#: Axes along which the histogram and efficiency plots are drawn.
HISTOGRAM_AXES = ("mag", "score", "cadence", "filter")
#: File that marks a folder as a skyretriever report (only such folders are replaced).
MARKER_FILE = ".skyretriever-report"
#: Detections per source page that get a plot of their own (the top ones by S/N).
DETECTION_PLOTS_PER_SOURCE = 3
#: Real detections with the highest S/N listed (and plotted) on the summary page by default.
DEFAULT_TOP = 20
_THUMBNAIL_SIZE = (320, 240)  # pixels at most; shown 160 CSS pixels wide, sharp on dense screens
_BATCH_SIZE = 200


class ReportError(RuntimeError):
    """The report cannot be written where it was asked for (or with what was given)."""


# -- HTML pieces ---------------------------------------------------------------------------
def _text(value: Any) -> str:
    """Any value as escaped HTML text (``None`` as nothing, times in UTC to the second)."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        value = value.strftime("%Y-%m-%d %H:%M:%S UTC")  # stored in UTC, without a zone
    return html.escape(str(value), quote=True)


def _href(*parts: str) -> str:
    """A relative URL from path pieces (already sanitised file names), escaped for an attribute."""
    return html.escape("/".join(quote(part) for part in parts), quote=True)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _number(value: Any, digits: int = 3) -> str:
    """A number for a table cell, rounded to ``digits`` decimals; blanks for missing values."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    number = _finite(value)
    if number is None:
        return "" if value is None else _text(value)
    return f"{number:.{digits}f}"


def _cell(value: Any, digits: int = 3) -> str:
    """A ``<td>``: numbers carry their full value in ``data-value`` for sorting."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = _finite(value)
        sort_value = "" if number is None else repr(number)
        return f'<td class="num" data-value="{sort_value}">{_number(value, digits)}</td>'
    if isinstance(value, bool):
        return f'<td data-value="{int(value)}">{_number(value)}</td>'
    return f"<td>{_text(value)}</td>"


def _column_cell(column: Any, value: Any) -> str:
    """A ``<td>`` of a model column's value, in the precision its metadata gives (no unit:
    the unit is in the column's header); numbers sort by their full value."""
    text = format_column(column, value, unit=False)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = _finite(value)
        sort_value = "" if number is None else repr(number)
        return f'<td class="num" data-value="{sort_value}">{_text(text)}</td>'
    return _cell(value)


def _header_row(columns: Iterable[tuple[str, str]]) -> str:
    """``<thead>`` of a sortable table from ``(label, "number" or "text")`` pairs."""
    cells = "".join(
        f'<th scope="col" data-type="{kind}" tabindex="0">{_text(label)}</th>'
        for label, kind in columns
    )
    return f"<thead><tr>{cells}</tr></thead>"


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1200px;
padding:0 1em 3em;color:#1d1d1f;background:#fff;line-height:1.4}
nav{padding:.6em 0;border-bottom:1px solid #ccc;margin-bottom:1em}
nav a{margin-right:1.2em}
h1{font-size:1.5em;word-break:break-all}h2{font-size:1.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em;max-width:100%}
th,td{border:1px solid #d0d0d0;padding:.25em .4em;text-align:left;vertical-align:middle;
overflow-wrap:anywhere}
th{font-weight:600;overflow-wrap:normal}td.num{white-space:nowrap}
td.error{min-width:14em}
td.num{text-align:right;font-variant-numeric:tabular-nums}
thead th{background:#eef1f5}
table.sortable thead th{cursor:pointer;user-select:none}
table.sortable thead th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable thead th[aria-sort=descending]::after{content:" \\25BC"}
tbody tr:nth-child(even){background:#f8f9fb}
table.properties th{background:#f4f5f7;font-weight:normal}
table.properties td{overflow-wrap:anywhere}
img.plot{max-width:100%;height:auto;border:1px solid #ddd}
img.thumb{width:120px;height:auto;display:block}
pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:.85em}
.error{color:#a40000}.muted{color:#666}
.wide{overflow-x:auto}
.figures{display:flex;flex-wrap:wrap;gap:1em}.figures figure{margin:0}
"""

# Sorts any <table class="sortable"> by the clicked (or Enter/Space) header: numbers by
# data-value, text in the locale's order, blanks last either way; a second click reverses.
_SORT_SCRIPT = """
(function () {
  "use strict";
  function key(row, column, numeric) {
    var cell = row.cells[column];
    if (!cell) { return null; }
    var text = cell.hasAttribute("data-value") ? cell.getAttribute("data-value")
                                               : cell.textContent.trim();
    if (text === "") { return null; }
    if (numeric) { var x = parseFloat(text); return isNaN(x) ? null : x; }
    return text;
  }
  function sortTable(table, column, header) {
    var numeric = header.getAttribute("data-type") === "number";
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (row, index) {
      return {row: row, index: index, key: key(row, column, numeric)};
    });
    rows.sort(function (a, b) {
      if (a.key === null || b.key === null) {
        if (a.key === b.key) { return a.index - b.index; }
        return a.key === null ? 1 : -1;
      }
      var order = numeric ? a.key - b.key : String(a.key).localeCompare(String(b.key));
      if (!ascending) { order = -order; }
      return order !== 0 ? order : a.index - b.index;
    });
    rows.forEach(function (item) { body.appendChild(item.row); });
    Array.prototype.forEach.call(header.parentNode.cells, function (cell) {
      cell.removeAttribute("aria-sort");
    });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    if (!table.tHead || !table.tBodies.length) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header, column) {
      header.addEventListener("click", function () { sortTable(table, column, header); });
      header.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          sortTable(table, column, header);
        }
      });
    });
  });
})();
"""


def _page_start(handle: TextIO, title: str, root: str, page_count: int) -> None:
    """Write the head of a page and its navigation; ``root`` is the relative way to the top."""
    handle.write(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_text(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f'<nav><a href="{root}index.html">Summary</a>'
        f'<a href="{root}index.html#detections">Top detections</a>'
        f'<a href="{root}sources_1.html">Sources ({page_count} page'
        f'{"s" if page_count != 1 else ""})</a>'
        f'<a href="{root}failures.html">Failures</a></nav>\n<main>\n'
    )


def _page_end(handle: TextIO) -> None:
    handle.write(
        f'</main>\n<footer class="muted"><p>Written by skyretriever {_text(__version__)}.</p>'
        f"</footer>\n<script>{_SORT_SCRIPT}</script>\n</body>\n</html>\n"
    )


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


# -- what the report shows -----------------------------------------------------------------
def _draw(function: str, path: Path, args: tuple, kwargs: dict[str, Any],
          thumbnail: Path | None) -> str | None:
    """Draw one figure into ``path`` (and a small copy into ``thumbnail``); None when it
    worked, else why not (and nothing is left half-made)."""
    import matplotlib.pyplot as plt

    figure = None
    try:
        figure = getattr(plots, function)(*args, filename=path, **kwargs)
        if thumbnail is not None:  # scaled from the PNG: much cheaper than drawing again
            from PIL import Image

            with Image.open(path) as image:
                image.thumbnail(_THUMBNAIL_SIZE, Image.Resampling.LANCZOS)
                image.save(thumbnail, compress_level=1)
    except Exception as error:  # one bad file or value must not stop the whole report
        log.debug("report: no %s for %s", function, path.name, exc_info=True)
        path.unlink(missing_ok=True)
        if thumbnail is not None:
            thumbnail.unlink(missing_ok=True)
        return f"{type(error).__name__}: {error}"
    finally:
        if figure is not None:
            plt.close(figure)
    return None


_DRAWN = {"source": (Source, "plot_source"), "detection": (Detection, "plot_detection")}


def _draw_row(kind: str, row_id: int, path: Path, thumbnail: Path | None) -> str | None:
    """In a worker process: read the source or detection ``row_id`` and draw it."""
    model, function = _DRAWN[kind]
    with database.Session() as session:
        row = queries.by_id(session, model, row_id)
        if row is None:
            return f"{kind} {row_id} is no longer in the database"
        return _draw(function, path, (row,), {"session": session}, thumbnail)


# What a drawing worker keeps for its life: its figures, drawn again for each source.
_WORKER_STATE = contextlib.ExitStack()


def _start_worker(parent: int) -> None:
    die_with_parent(parent)  # a report killed half-way leaves no worker drawing on
    _WORKER_STATE.enter_context(plots.reused_figures())


def _reusing_figures() -> contextlib.AbstractContextManager:
    return plots.reused_figures()


def _worker_count(workers: int | None) -> int:
    """Processes that draw the figures: ``workers``, by default one per core (at most 4)."""
    if workers is None:
        workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1, 4)
    return workers


class _Plotter:
    """Makes the figures (through :mod:`skyretriever.plots`) and remembers what failed.

    With more than one worker (on Linux), sources' and detections' figures are drawn in
    forked worker processes, each reading its row by id, while the pages are written here;
    otherwise they are drawn here, from the rows already loaded.
    """

    def __init__(self, enabled: bool, workers: int = 1) -> None:
        self.enabled = enabled
        self.failures: list[tuple[str, str]] = []
        self.made = 0
        self._pool: Any = None
        if enabled and workers > 1 and sys.platform.startswith("linux"):
            self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                             initializer=_start_worker, initargs=(os.getpid(),))

    def __enter__(self) -> _Plotter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _record(self, what: str, error: str | None) -> bool:
        if error is not None:
            log.warning("report: no plot of %s: %s", what, error)
            self.failures.append((what, error))
            return False
        self.made += 1
        return True

    def make(self, what: str, function: str, path: Path, *args: Any,
             thumbnail: Path | None = None, **kwargs: Any) -> bool:
        """Draw one figure here, now; False on failure (remembered with its reason)."""
        if not self.enabled:
            return False
        return self._record(what, _draw(function, path, args, kwargs, thumbnail))

    def submit(self, what: str, kind: str, row: Source | Detection, session: orm.Session,
               path: Path, thumbnail: Path | None = None) -> Any:
        """Start drawing a source or detection; :meth:`result` says whether it worked."""
        if self._pool is None:
            return what, _draw(_DRAWN[kind][1], path, (row,), {"session": session}, thumbnail)
        return what, self._pool.submit(_draw_row, kind, row.id, path, thumbnail)

    def result(self, pending: Any) -> bool:
        """Whether a figure :meth:`submit` started was made (waiting for it if need be)."""
        what, outcome = pending
        if isinstance(outcome, Future):
            try:
                outcome = outcome.result()
            except Exception as error:  # a worker that died (killed, out of memory...)
                outcome = f"{type(error).__name__}: {error}"
        return self._record(what, outcome)


def _source_file(name: str) -> str:
    """File name stem of a source's page and plot (sanitised, never a path)."""
    return storage.sanitize_name(name)


def _source_link(name: str, root: str) -> str:
    return f'<a href="{root}{_href("sources", _source_file(name) + ".html")}">{_text(name)}</a>'


def _iter_sources(context: ProjectContext, batch_size: int
                  ) -> Iterator[tuple[orm.Session, list[Source]]]:
    """The project's sources in batches (by id), each batch in its own short session."""
    last_id = 0
    while True:
        with database.Session() as session:
            sources = queries.sources_after(session, context, last_id, batch_size)
            if not sources:
                return
            yield session, sources
            last_id = sources[-1].id
            session.expunge_all()
        # ORM objects hold reference cycles: free each batch now rather than whenever the
        # collector next runs, so memory stays flat over any number of sources.
        del sources
        gc.collect()


def _config_section(project: Project) -> tuple[str, str, str]:
    """``config.yaml`` as written by the last run (or as it would be), its hash and a note."""
    path = project.output_folder / "config.yaml"
    current = project.cfg_hash
    if path.exists():
        data = path.read_bytes()
        written = hashlib.sha256(data).hexdigest()
        note = ""
        if written != current:
            note = (f"The project's configuration has changed since this file was written: "
                    f"it now hashes to {current}. Run the project to bring the folder up to date.")
        return data.decode("utf-8", "replace"), written, note
    return (project.config_text(), current,
            "config.yaml is not written yet (the project has not run): this is what a run writes.")


def _activity(context: ProjectContext) -> tuple[dt.datetime | None, dt.datetime | None]:
    with database.Session() as session:
        return queries.activity_span(session, context)


def _top_detections(context: ProjectContext, top: int) -> list[dict[str, Any]]:
    """The ``top`` real detections by S/N, as plain values (and the ids for their plots)."""
    if top == 0:
        return []
    with database.Session() as session:
        return [_detection_values(d) for d in queries.top_detections(session, context, top)]


def _detection_values(detection: Detection, series: dict[int, int] | None = None
                      ) -> dict[str, Any]:
    """Plain values of a detection; ``series`` maps light-curve ids to series numbers
    (otherwise the light curve is read through the relationship)."""
    if series is not None:
        number = series.get(detection.lightcurve_id)
    else:
        number = detection.lightcurve.series_number if detection.lightcurve is not None else None
    return {
        "id": detection.id,
        "source": detection.source.name,
        "finder": detection.finder,
        "observatory": detection.observatory,
        "filter": detection.filter,
        "series": number,
        "snr": detection.snr,
        "score": detection.score,
        "time_peak": detection.time_peak,
        "time_start": detection.time_start,
        "time_end": detection.time_end,
        "window": (detection.time_end - detection.time_start
                   if detection.time_end is not None and detection.time_start is not None
                   else None),
        "peak_mag": detection.peak_mag,
        "num_points": detection.num_points,
        "sign": detection.sign,
        "period": detection.period,
        "duration": detection.duration,
        "depth": detection.depth,
        "is_simulated": detection.is_simulated,
    }


_DETECTION = Detection.__table__.c


def _event_kind(values: dict[str, Any]) -> str:
    if values["period"] is not None:
        return "transit"
    return {1: "flare", -1: "dip"}.get(values["sign"], "event")


def _detection_columns(rows: Iterable[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    """``(header, kind, cell)`` of the detection tables: labels and units from the model's
    column metadata; the transit columns only when some row is a transit candidate (so the
    table fits a 1280-pixel screen without scrolling sideways)."""
    rows = list(rows)

    def of(name: str) -> tuple[str, str, Any]:
        column = _DETECTION[name]
        kind = "text" if name in ("finder",) else "number"
        return column_header(column), kind, lambda v, c=column, n=name: _column_cell(c, v[n])

    columns = [
        of("snr"),
        ("event", "text", lambda v: _cell(_event_kind(v))),
        of("finder"),
        ("data", "text", lambda v: _cell(_data_label(v))),
        of("time_peak"),
        ("window (d)", "number", lambda v: _cell_number(v["window"], ".3g")),
        of("peak_mag"),
        of("num_points"),
    ]
    if any(v["period"] is not None for v in rows):
        columns += [of("period"), of("duration"), of("depth")]
    return columns


def _data_label(values: dict[str, Any]) -> str:
    """``demo g, series 2``: where a detection was found."""
    parts = [p for p in (values["observatory"], values["filter"]) if p]
    text = " ".join(str(p) for p in parts) or "several light curves"
    return text + (f", series {values['series']}" if values["series"] is not None else "")


def _cell_number(value: Any, spec: str) -> str:
    number = _finite(value)
    if number is None:
        return '<td class="num" data-value=""></td>'
    return f'<td class="num" data-value="{number!r}">{_text(format_number(number, spec))}</td>'


def _detection_cells(values: dict[str, Any], columns: list[tuple[str, str, Any]]) -> str:
    return "".join(cell(values) for _, _, cell in columns)


def _thumbnail_cell(detection_id: int, root: str, have_plot: bool, alt: str) -> str:
    if not have_plot:
        return '<td class="muted">no plot</td>'
    full = _href("detections", f"{detection_id}.png")
    thumb = _href("detections", f"{detection_id}_thumb.png")
    return (f'<td><a href="{root}{full}"><img class="thumb" src="{root}{thumb}" '
            f'alt="{_text(alt)}"></a></td>')


# -- the pages -----------------------------------------------------------------------------
def _write_index(path: Path, project: Project, status: dict[str, Any], context: ProjectContext,
                 summary: RunSummary | None, top_rows: list[dict[str, Any]],
                 plotted: dict[int, bool], histograms: list[tuple[str, str | None]],
                 histogram_note: str, plotter: _Plotter, page_count: int,
                 failure_count: int,
                 classifier: tuple[list[tuple[str, str | None]], str] | None = None) -> None:
    config_text, config_hash, config_note = _config_section(project)
    first, last = _activity(context)
    with open(path, "w", encoding="utf-8") as handle:
        _page_start(handle, f"skyretriever report: {context.name}", "", page_count)
        write = handle.write
        write(f"<h1>Project {_text(context.name)}</h1>\n")
        generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        write('<table class="properties" id="run">')
        rows = [
            ("cfg_hash (SHA-256 of config.yaml)", config_hash),
            ("rows filed under cfg_hash", context.cfg_hash or "(none: version control is off)"),
            ("output folder", status["folder"]),
            ("database", status["database"]),
            ("catalog rows", status["catalog_rows"]),
            ("first row written", first),
            ("last row changed", last),
            ("report written", generated),
        ]
        for label, value in rows:
            write(f"<tr><th>{_text(label)}</th><td>{_text(value)}</td></tr>")
        write("</table>\n")

        write('<h2 id="states">Sources by state</h2>\n<table id="source-states"><thead><tr>'
              "<th>state</th><th>sources</th></tr></thead><tbody>")
        for state, count in status["sources"].items():
            write(f"<tr><td>{_text(state)}</td>{_cell(count)}</tr>")
        total_sources = sum(status["sources"].values())
        write(f"<tr><th>all</th>{_cell(total_sources)}</tr></tbody></table>\n")
        write(f'<p>Properties of {_text(status["properties"])} sources; detections: '
              f'{_text(status["detections"]["real"])} real, '
              f'{_text(status["detections"]["simulated"])} in injected data.</p>\n')

        write('<h2 id="observatories">Observatories</h2>\n<table id="observatory-counts">'
              "<thead><tr><th>observatory</th><th>raw data</th><th>of which empty</th>"
              "<th>light curves</th></tr></thead><tbody>")
        for name, counts in status["observatories"].items():
            write(f"<tr><td>{_text(name)}</td>{_cell(counts['raw'])}{_cell(counts['empty'])}"
                  f"{_cell(counts['lightcurves'])}</tr>")
        write("</tbody></table>\n")

        write('<h2 id="time">Time per step</h2>\n')
        if summary is not None and summary.seconds:
            write('<table id="step-times"><thead><tr><th>step</th><th>seconds</th></tr>'
                  "</thead><tbody>")
            for step, seconds in summary.seconds.items():
                write(f"<tr><td>{_text(step)}</td>{_cell(float(seconds), 2)}</tr>")
            write("</tbody></table>\n")
            counts = summary.counts
            write(f"<p>That run: {_text(counts.get('sources', 0))} sources, done "
                  f"{_text(counts.get('done', 0))}, skipped {_text(counts.get('skipped', 0))}, "
                  f"empty {_text(counts.get('empty', 0))}, failed "
                  f"{_text(counts.get('failed', 0))}.</p>\n")
        else:
            write('<p class="muted">Not recorded: the database keeps no timings. Pass the '
                  "RunSummary of a run (<code>write_report(project, summary=project.run())"
                  "</code>) to show them.</p>\n")

        write(f'<h2 id="failures">Failures ({_text(failure_count)})</h2>\n')
        if status["failures"]:
            write('<table id="failure-list"><thead><tr><th>source</th><th>reason</th></tr>'
                  "</thead><tbody>")
            for name, reason in status["failures"]:
                write(f'<tr><td>{_source_link(name, "")}</td>'
                      f'<td class="error">{_text(reason)}</td></tr>')
            write("</tbody></table>\n")
            if failure_count > len(status["failures"]):
                write(f'<p><a href="failures.html">All {_text(failure_count)} failures</a></p>\n')
        else:
            write("<p>None.</p>\n")

        write('<h2 id="histograms">Histograms and recovery efficiency</h2>\n')
        if histograms:
            write('<div class="figures">')
            for axis, image in histograms:
                if image is not None:
                    write(f'<figure><a href="{_href("plots", image)}"><img class="plot" '
                          f'src="{_href("plots", image)}" alt="histogram along {_text(axis)}" '
                          f'width="560"></a><figcaption>along {_text(axis)}</figcaption>'
                          "</figure>")
                else:
                    write(f'<p class="error">No plot along {_text(axis)} (see below).</p>')
            write("</div>\n")
        write(f'<p class="muted">{_text(histogram_note)}</p>\n')

        if classifier is not None:
            images, classifier_note = classifier
            write('<h2 id="classifier">Transit classifier</h2>\n')
            if images:
                write('<div class="figures">')
                for kind, image in images:
                    if image is not None:
                        write(f'<figure><a href="{_href("plots", image)}"><img class="plot" '
                              f'src="{_href("plots", image)}" alt="classifier {_text(kind)}" '
                              f'width="420"></a><figcaption>{_text(kind)}</figcaption>'
                              "</figure>")
                write("</div>\n")
            write(f'<p class="muted">{_text(classifier_note)}</p>\n')

        write(f'<h2 id="detections">Top {_text(len(top_rows))} detections by S/N</h2>\n')
        if top_rows:
            detection_columns = _detection_columns(top_rows)
            columns = [("rank", "number"), ("plot", "text"), ("source", "text")]
            columns += [(label, kind) for label, kind, _ in detection_columns]
            write('<div class="wide"><table class="sortable" id="top-detections">'
                  f"{_header_row(columns)}<tbody>")
            for rank, values in enumerate(top_rows, 1):
                alt = f"detection {values['id']} of {values['source']}"
                write(f'<tr data-detection="{values["id"]}">{_cell(rank)}'
                      f'{_thumbnail_cell(values["id"], "", plotted.get(values["id"], False), alt)}'
                      f'<td>{_source_link(values["source"], "")}</td>'
                      f"{_detection_cells(values, detection_columns)}</tr>\n")
            write('</tbody></table></div>\n<p class="muted">Click a column header to sort.</p>\n')
        else:
            write("<p>No detections.</p>\n")

        if plotter.failures:
            write(f'<section id="plot-failures"><h2>Plots not made ({len(plotter.failures)})'
                  "</h2>\n<ul>")
            for what, reason in plotter.failures[:200]:
                write(f'<li>{_text(what)}: <span class="error">{_text(reason)}</span></li>')
            if len(plotter.failures) > 200:
                write(f"<li>... and {len(plotter.failures) - 200} more (in the log)</li>")
            write("</ul></section>\n")

        write('<h2 id="config">Configuration (config.yaml)</h2>\n')
        if config_note:
            write(f"<p>{_text(config_note)}</p>\n")
        write(f"<pre>{_text(config_text)}</pre>\n")
        _page_end(handle)


def _write_failures(path: Path, context: ProjectContext, page_count: int, batch_size: int,
                    bar: Any) -> int:
    """Every failed source and its reason, streamed in batches; returns how many."""
    count = 0
    with contextlib.closing(bar), open(path, "w", encoding="utf-8") as handle:
        _page_start(handle, f"Failures: {context.name}", "", page_count)
        handle.write(f"<h1>Failed sources of {_text(context.name)}</h1>\n")
        handle.write('<table class="sortable" id="all-failures">'
                     f'{_header_row([("catalog row", "number"), ("source", "text"), ("reason", "text")])}'
                     "<tbody>")
        last_id = 0
        while True:
            with database.Session() as session:
                rows = queries.failed_sources_after(session, context, last_id, batch_size)
            if not rows:
                break
            for _, index, name, reason in rows:
                handle.write(f"<tr>{_cell(index)}<td>{_source_link(name, '')}</td>"
                             f'<td class="error">{_text(reason)}</td></tr>\n')
            count += len(rows)
            bar.update(len(rows))
            last_id = rows[-1][0]
        handle.write("</tbody></table>\n")
        if not count:
            handle.write("<p>No source failed.</p>\n")
        _page_end(handle)
    return count


_SOURCE_FIELDS = ("status", "error", "cat_index", "ra", "dec", "mag", "mag_err", "mag_filter",
                  "pmra", "pmdec", "tic_id", "epic_id", "kic_id", "gaia_id", "ztf_oid", "healpix",
                  "created_at", "modified_at")
_PROPERTY_FIELDS = tuple(
    name for name in Properties.__table__.columns.keys()
    if name not in ("id", "source_id", "project", "cfg_hash", "created_at")
)
_RAW_FIELDS = ("observatory", "is_empty", "num_points", "time_start", "time_end")
_LIGHTCURVE_FIELDS = ("observatory", "filter", "series_number", "num_points", "num_good_points",
                      "time_start", "time_end", "exptime", "mag_mean", "mag_rms", "is_simulated")


def _properties_table(model: Any, row: Any, names: Iterable[str], table_id: str,
                      keep_missing: Iterable[str] = ()) -> str:
    """Two columns, label and value, for ``names`` of ``row``: the labels, units and precision
    of the model's column metadata (``Lomb-Scargle period | 36.2925 d``); missing values left
    out, except those in ``keep_missing``; the column's description as a tooltip."""
    columns = model.__table__.c
    cells = []
    for name in names:
        column = columns[name]
        value = getattr(row, name)
        if value is None and name not in keep_missing:
            continue
        if isinstance(value, (dict, list)):
            if not value:
                continue
            shown = f"<code>{_text(format_column(column, value))}</code>"
        else:
            shown = _text(format_column(column, value))
        cells.append(f'<tr><th title="{_text(column.doc or "")}">{_text(column_label(column))}'
                     f"</th><td>{shown}</td></tr>")
    return f'<table class="properties" id="{table_id}">{"".join(cells)}</table>\n'


def _submit_detection(plotter: _Plotter, detection: Detection, source_name: str,
                      session: orm.Session, folder: Path, plotted: dict[int, bool],
                      pending: dict[int, Any]) -> None:
    """Start drawing a detection and its thumbnail, once (``plotted`` remembers whether it
    worked, ``pending`` holds it until :func:`_settle` knows)."""
    if detection.id not in plotted and detection.id not in pending:
        pending[detection.id] = plotter.submit(
            f"detection {detection.id} of {source_name!r}", "detection", detection, session,
            folder / f"{detection.id}.png", folder / f"{detection.id}_thumb.png")


def _settle(plotter: _Plotter, ids: Iterable[int], plotted: dict[int, bool],
            pending: dict[int, Any]) -> None:
    for detection_id in ids:
        if detection_id in pending:
            plotted[detection_id] = plotter.result(pending.pop(detection_id))


def _best_real(source: Source, source_plots: bool) -> list[Detection]:
    """The real detections of a source that get a plot on its page (the best by S/N)."""
    real = sorted((d for d in source.detections if not d.is_simulated),
                  key=lambda d: (-d.snr, d.id))
    return real[:DETECTION_PLOTS_PER_SOURCE if source_plots else 0]


#: Frames of a wavelength shown on an event's page when it has no movie.
EVENT_FRAMES_SHOWN = 8


def _event_section(folder: Path, source: Source, stem: str, session: orm.Session,
                   observatories: dict[str, Any]) -> str:
    """A solar event's movie (or frames) and its volunteers' consensus boxes with their
    agreement; empty for a source without AIA cutouts (or images)."""
    obs = observatories.get("aia")
    raw = queries.source_cutouts(session, source.id) if obs is not None else None
    if raw is None or raw.is_empty:
        return ""
    images = storage.full_path(obs.images_folder(raw))
    try:
        entries = json.loads((images / "images.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return '<h2>Images</h2>\n<p class="muted">No images made yet.</p>\n'
    parts = ["<h2>Images</h2>\n"]
    for wave in sorted({e["wavelength"] for e in entries}):
        frames = [e for e in entries if e["wavelength"] == wave]
        span = f"{len(frames)} frames, {frames[0]['time']} to {frames[-1]['time']}"
        movie = images / f"movie_{wave}.png"
        if movie.is_file():
            name = f"{stem}_movie_{wave}.png"
            shutil.copyfile(movie, folder / name)
            parts.append(f'<figure><img class="plot" id="event-movie-{wave}" src="{_href(name)}"'
                         f' alt="movie of {_text(source.name)} at {wave} A" width="400">'
                         f"<figcaption>{wave} &Aring;: {_text(span)} (animated)</figcaption>"
                         "</figure>\n")
            continue
        shown = frames[::max(1, math.ceil(len(frames) / EVENT_FRAMES_SHOWN))]
        parts.append('<div class="figures">')
        for number, entry in enumerate(shown):
            name = f"{stem}_frame_{wave}_{number}.png"
            shutil.copyfile(images / entry["image"], folder / name)
            parts.append(f'<figure><img class="event-frame" src="{_href(name)}" alt="frame '
                         f'{number} at {wave} A" width="200"><figcaption>{_text(entry["time"])}'
                         "</figcaption></figure>")
        parts.append(f"</div><p>{wave} &Aring;: {_text(span)}</p>\n")
    marked = sorted((d for d in source.detections if d.finder == "zooniverse"),
                    key=lambda d: (-d.score, d.id))
    parts.append(f"<h2>Volunteers' boxes ({len(marked)})</h2>\n")
    if not marked:
        parts.append('<p class="muted">No box that volunteers agree on (or no classifications '
                     "imported: skyretriever zooniverse import).</p>\n")
        return "".join(parts)
    heads = [("detection", "number"), ("subject", "text"), ("wavelength (A)", "number"),
             ("frame time", "text"), ("volunteers", "number"), ("agreement", "number"),
             ("centre x (arcsec)", "number"), ("centre y (arcsec)", "number"),
             ("width x height (arcsec)", "text"), ("answers", "text")]
    rows, figures = [], []
    by_frame = {(e["fits"], str(e["wavelength"])): e for e in entries}
    for detection in marked:
        extra = detection.extra or {}
        box = extra.get("box_hpc") or {}
        answers = "; ".join(f"{k} ({v})" for k, v in sorted((extra.get("answers") or {}).items()))
        agreement = float(extra.get("agreement", 0.0))
        rows.append(
            f'<tr data-detection="{detection.id}">{_cell(detection.id)}'
            f"{_cell(extra.get('subject_key'))}{_cell(_wavelength(detection.filter))}"
            f"{_cell(extra.get('time'))}"
            f'<td class="num" data-value="{extra.get("volunteers", 0)}">'
            f"{extra.get('volunteers', 0)} of {extra.get('subject_volunteers', 0)}</td>"
            f'<td class="num agreement" data-value="{agreement:.4f}">{agreement:.0%}</td>'
            f"{_cell(box.get('x'), 1)}{_cell(box.get('y'), 1)}"
            f"<td>{_number(box.get('width'), 1)} &times; {_number(box.get('height'), 1)}</td>"
            f"<td>{_text(answers)}</td></tr>\n")
        entry = by_frame.get((extra.get("fits"), str(detection.filter)))
        corners = extra.get("corners_fits")
        if entry is None or not corners:
            continue
        mapping = ImageMapping.from_json(entry["mapping"])
        x, y = mapping.from_fits(*zip(*corners))
        name = f"{stem}_box_{detection.id}.png"
        draw_box(images / entry["image"], list(zip(x, y)), folder / name)
        figures.append(f'<figure><img class="plot consensus-box" id="consensus-{detection.id}" '
                       f'src="{_href(name)}" alt="consensus box {detection.id}" width="400">'
                       f"<figcaption>detection {detection.id}: {extra.get('volunteers', 0)} of "
                       f"{extra.get('subject_volunteers', 0)} volunteers drew this box "
                       f"(agreement {agreement:.0%}), {_text(extra.get('time'))}"
                       "</figcaption></figure>")
    parts.append(f'<div class="wide"><table class="sortable" id="volunteer-boxes">'
                 f"{_header_row(heads)}<tbody>{''.join(rows)}</tbody></table></div>\n")
    if figures:
        parts.append(f'<div class="figures">{"".join(figures)}</div>\n')
    return "".join(parts)


def _wavelength(value: Any) -> Any:
    return int(value) if str(value).isdigit() else value


def _cutout_shown(raw: RawImages) -> str:
    """Which image of a source's cutouts the report shows (the plot's default)."""
    if raw.observatory == "ztf":
        return "its first science image"
    return f"median frame of sector {min(raw.sectors or [0])}"


def _cadence_pair(session: orm.Session, source: Source
                  ) -> tuple[list[Lightcurve], list[Lightcurve]]:
    """A star's FFI (``tessffi``) and 2-minute (``tess``) light curves, one set its own and
    the other from the project that has it (a project holds one data type)."""
    own = {"tessffi": [], "tess": []}
    for lc in source.lightcurves:
        if lc.observatory in own and not lc.is_simulated:
            own[lc.observatory].append(lc)
    if own["tessffi"] and not own["tess"]:
        own["tess"] = queries.counterpart_lightcurves(session, source, "tess")
    elif own["tess"] and not own["tessffi"]:
        own["tessffi"] = queries.counterpart_lightcurves(session, source, "tessffi")
    return own["tessffi"], own["tess"]


def _write_source_page(folder: Path, source: Source, list_page: int, page_count: int,
                       plotter: _Plotter, source_plots: bool, has_plot: bool,
                       plotted: dict[int, bool], session: orm.Session,
                       observatories: dict[str, Any]) -> None:
    stem = _source_file(source.name)
    image = f"{stem}.png"
    real = sorted((d for d in source.detections if not d.is_simulated),
                  key=lambda d: (-d.snr, d.id))

    parts: list[str] = []
    add = parts.append
    add(f'<p class="muted"><a href="../index.html">Summary</a> &rsaquo; '
        f'<a href="../sources_{list_page}.html">Sources, page {list_page}</a></p>\n')
    add(f'<h1 id="source-name">{_text(source.name)}</h1>\n')
    if has_plot:
        add(f'<figure><a href="{_href(image)}"><img class="plot" id="source-plot" '
            f'src="{_href(image)}" alt="light curves of {_text(source.name)}"></a></figure>\n')
    elif not source.lightcurves:
        add('<p class="muted">No light curves.</p>\n')
    elif not (plotter.enabled and source_plots):
        add('<p class="muted">Plots were not asked for.</p>\n')
    else:
        add('<p class="error">The plot of the light curves could not be made '
            '(the reason is on the summary page).</p>\n')

    for raw in queries.source_raw_images(session, source.id) if source_plots else []:
        # The image cutout with the aperture the light curves were made with.
        cutout = f"{stem}_{raw.observatory}_cutout.png"
        if plotter.make(f"cutout of {source.name!r} ({raw.observatory})", "plot_raw_images",
                        folder / cutout, raw):
            add(f'<figure><a href="{_href(cutout)}"><img class="plot" id="cutout-plot" '
                f'src="{_href(cutout)}" alt="image cutout of {_text(source.name)}"></a>'
                f"<figcaption>{_text(raw.observatory)} cutout ({_cutout_shown(raw)}) with the "
                "photometric aperture</figcaption></figure>\n")

    ffi, short = _cadence_pair(session, source) if source_plots else ([], [])
    if ffi and short and plots.shared_sectors(ffi, short):
        # The FFI light curve beside the 2-minute one (the other is in another project).
        both = f"{stem}_ffi_2min.png"
        if plotter.make(f"FFI and 2-minute light curves of {source.name!r}",
                        "plot_ffi_comparison", folder / both, ffi, short):
            add(f'<figure><a href="{_href(both)}"><img class="plot" id="ffi-comparison-plot" '
                f'src="{_href(both)}" alt="FFI and 2-minute light curves of '
                f'{_text(source.name)}"></a><figcaption>The FFI light curve (tessffi) beside '
                "the 2-minute one (tess), binned to the FFI cadence</figcaption></figure>\n")

    if source_plots:
        add(_event_section(folder, source, stem, session, observatories))

    if source_plots and source.lightcurves and any(plots.is_transit(d) for d in real):
        # spacekit's analyzer views, for the sources where something periodic was found
        for kind, caption in (("power_spectrum", "Fourier power spectrum"),
                              ("spectrogram", "spectrogram")):
            spectrum = f"{stem}_{kind}.png"
            if plotter.make(f"{caption} of {source.name!r}", "plot_source_spectra",
                            folder / spectrum, source, kind, session=session):
                add(f'<figure><a href="{_href(spectrum)}"><img class="plot" '
                    f'id="{kind.replace("_", "-")}-plot" src="{_href(spectrum)}" '
                    f'alt="{caption} of {_text(source.name)}"></a><figcaption>{caption} of '
                    f"each light curve</figcaption></figure>\n")

    add("<h2>Catalog and state</h2>\n")
    add(_properties_table(Source, source, [*_SOURCE_FIELDS, "cat_extra"], "source-properties",
                          keep_missing=("status",)))

    add("<h2>Properties</h2>\n")
    properties = source.properties
    if properties is None:
        add('<p class="muted">Not analysed yet.</p>\n')
    else:
        add(_properties_table(Properties, properties, _PROPERTY_FIELDS, "analysis-properties"))

    add("<h2>Raw data</h2>\n")
    if source.raw_photometry:
        raws = sorted(source.raw_photometry, key=lambda r: r.observatory)
        raw_columns = type(raws[0]).__table__.c
        heads = "".join(f"<th>{_text(column_header(raw_columns[name]))}</th>"
                        for name in _RAW_FIELDS)
        add(f'<table id="raw-data"><thead><tr>{heads}<th>filters</th></tr></thead><tbody>')
        for raw in raws:
            cells = "".join(_column_cell(raw_columns[name], getattr(raw, name))
                            for name in _RAW_FIELDS)
            add(f"<tr>{cells}<td>{_text(', '.join(map(str, raw.filters or [])))}</td></tr>")
        add("</tbody></table>\n")
    else:
        add('<p class="muted">None downloaded yet.</p>\n')

    add(f"<h2>Light curves ({len(source.lightcurves)})</h2>\n")
    if source.lightcurves:
        lc_columns = Lightcurve.__table__.c
        heads = [(column_header(lc_columns[name]),
                  "number" if lc_columns[name].type.python_type in (int, float) else "text")
                 for name in _LIGHTCURVE_FIELDS]
        add(f'<table class="sortable" id="lightcurves">{_header_row(heads)}<tbody>')
        for lc in source.lightcurves:
            add("<tr>" + "".join(_column_cell(lc_columns[name], getattr(lc, name))
                                 for name in _LIGHTCURVE_FIELDS) + "</tr>\n")
        add("</tbody></table>\n")

    simulated = len(source.detections) - len(real)
    add(f"<h2>Detections ({len(real)} real, {simulated} in injected data)</h2>\n")
    if source.detections:
        ordered = sorted(source.detections, key=lambda d: (d.is_simulated, -d.snr, d.id))
        series = {lc.id: lc.series_number for lc in source.lightcurves}
        rows = [(detection, _detection_values(detection, series)) for detection in ordered]
        detection_columns = _detection_columns(values for _, values in rows)
        columns = [("plot", "text"), ("in injected data", "text")]
        columns += [(label, kind) for label, kind, _ in detection_columns]
        add(f'<div class="wide"><table class="sortable" id="source-detections">'
            f"{_header_row(columns)}<tbody>")
        for detection, values in rows:
            alt = f"detection {detection.id} of {source.name}"
            add(f'<tr data-detection="{detection.id}">'
                f'{_thumbnail_cell(detection.id, "../", plotted.get(detection.id, False), alt)}'
                f"{_cell(bool(detection.is_simulated))}"
                f"{_detection_cells(values, detection_columns)}</tr>\n")
        add("</tbody></table></div>\n")
        drawn = [d for d in real if plotted.get(d.id)]
        if drawn:
            add('<div class="figures">')
            for detection in drawn:
                image = _href("detections", f"{detection.id}.png")
                add(f'<figure><a href="../{image}"><img class="plot" src="../{image}" '
                    f'alt="detection {detection.id}" width="640"></a><figcaption>detection '
                    f"{detection.id}: S/N {_number(detection.snr, 1)}</figcaption></figure>")
            add("</div>\n")

    with open(folder / f"{stem}.html", "w", encoding="utf-8") as handle:
        _page_start(handle, f"{source.name} ({source.project})", "../", page_count)
        handle.write("".join(parts))
        _page_end(handle)


class _SourceList:
    """The paginated list of sources, written row by row as sources stream past."""

    def __init__(self, folder: Path, project: str, page_count: int, per_page: int) -> None:
        self.folder, self.project, self.page_count = folder, project, page_count
        self.per_page = per_page
        self.page = 0
        self.rows_on_page = 0
        self.handle: TextIO | None = None

    def _open(self) -> None:
        self.close()
        self.page += 1
        self.handle = open(self.folder / f"sources_{self.page}.html", "w", encoding="utf-8")
        _page_start(self.handle, f"Sources of {self.project}, page {self.page}", "",
                    self.page_count)
        self.handle.write(f"<h1>Sources of {_text(self.project)}</h1>\n{self._pager()}")
        source, properties = Source.__table__.c, Properties.__table__.c
        columns = [("catalog row", "number"), ("source", "text"), ("state", "text"),
                   *((column_header(source[name]), "number") for name in ("ra", "dec", "mag")),
                   ("light curves", "number"),
                   *((column_header(properties[name]), "number")
                     for name in ("best_snr", "num_detections", "transit_snr", "transit_period")),
                   ("error", "text")]
        self.handle.write('<div class="wide"><table class="sortable" id="sources">'
                          f"{_header_row(columns)}<tbody>")
        self.rows_on_page = 0

    def _pager(self) -> str:
        links = []
        if self.page > 1:
            links.append(f'<a href="sources_{self.page - 1}.html" rel="prev">previous</a>')
        links.append(f"page {self.page} of {self.page_count}")
        if self.page < self.page_count:
            links.append(f'<a href="sources_{self.page + 1}.html" rel="next">next</a>')
        return f'<p class="pager">{" &middot; ".join(links)}</p>\n'

    def add(self, source: Source) -> int:
        """List one source; returns the number of the page it is on."""
        if self.handle is None or self.rows_on_page >= self.per_page:
            self._open()
        properties = source.properties
        real = sum(1 for d in source.detections if not d.is_simulated)
        columns, analysis = Source.__table__.c, Properties.__table__.c

        def analysed(name: str) -> str:
            return _column_cell(analysis[name], getattr(properties, name) if properties else None)

        self.handle.write(
            f"<tr>{_cell(source.cat_index)}<td>{_source_link(source.name, '')}</td>"
            f"<td>{_text(source.status)}</td>{_column_cell(columns.ra, source.ra)}"
            f"{_column_cell(columns.dec, source.dec)}{_column_cell(columns.mag, source.mag)}"
            f"{_cell(len(source.lightcurves))}{analysed('best_snr')}{_cell(real)}"
            f"{analysed('transit_snr')}{analysed('transit_period')}"
            f'<td class="error">{_text(source.error)}</td></tr>\n'
        )
        self.rows_on_page += 1
        return self.page

    def close(self) -> None:
        if self.handle is None:
            return
        self.handle.write("</tbody></table></div>\n" + self._pager())
        _page_end(self.handle)
        self.handle.close()
        self.handle = None

    def finish(self) -> None:
        """Close the last page; with no sources at all, still write an (empty) first page."""
        if self.page == 0:
            self._open()
        self.close()


def _histogram_plots(project: Project, folder: Path, plotter: _Plotter, show: bool
                     ) -> tuple[list[tuple[str, str | None]], str]:
    path = project.histogram_path()
    if not path.exists():
        return [], "No histogram file yet (it is written at the end of a run with analysis)."
    if not plotter.enabled:
        return [], f"Plots were not asked for; the counts are in {path.name}."
    try:
        histogram = Histogram.load(path)
    except Exception as error:
        plotter.failures.append((f"histogram file {path.name}", f"{type(error).__name__}: {error}"))
        return [], f"The histogram file {path.name} could not be read."
    lightcurves = histogram.total("lightcurves")
    injected = histogram.total("injected")
    note = (f"From {path.name}: {lightcurves} light curves scanned, "
            f"{histogram.total('detections')} detections, {injected} injected events "
            f"({histogram.total('recovered')} recovered).")
    if not lightcurves and not injected:
        return [], note + " Nothing to plot."
    images: list[tuple[str, str | None]] = []
    bar = progress_bar(len(HISTOGRAM_AXES), show, f"report {project.context.name}: histograms",
                       unit="figure")
    try:
        for axis in HISTOGRAM_AXES:
            name = f"histogram_{axis}.png"
            made = plotter.make(f"histogram along {axis}", "plot_histogram", folder / name,
                                histogram, along=axis)
            images.append((axis, name if made else None))
            bar.update(1)
    finally:
        bar.close()
    if not injected:
        note += " Nothing was injected, so there is no recovery efficiency to show."
    return images, note


def _classifier_plots(project: Project, folder: Path, plotter: _Plotter
                      ) -> tuple[list[tuple[str, str | None]], str] | None:
    """The test-set evaluation of the project's classifier model (None when it has none)."""
    pars = project.analysis.pars.classifier
    if not pars.enabled:
        return None
    try:
        metadata = read_model_metadata(pars.model_file)
    except ModelFileError as error:
        return [], str(error)
    images: list[tuple[str, str | None]] = []
    if plotter.enabled and metadata.get("metrics"):
        for kind in ("roc", "precision_recall", "confusion"):
            name = f"classifier_{kind}.png"
            made = plotter.make(f"classifier {kind}", "plot_classifier_evaluation",
                                folder / name, metadata, kind)
            images.append((kind.replace("_", "-"), name if made else None))
    metrics = (metadata.get("metrics") or {}).get("model") or {}
    data = metadata.get("data") or {}
    note = (f"Model {metadata.get('model')} from {pars.model_file}: trained on "
            f"{data.get('examples', '?')} examples of {data.get('sources', '?')} sources; on "
            f"the held-out test set AUC {_number(metrics.get('auc'))}, recall "
            f"{_number(metrics.get('recall_at_99_precision'))} at 99% precision. Sources with "
            f"ml_score >= {pars.threshold:g} count as transits.")
    return images, note


# -- putting it in place -------------------------------------------------------------------
def _check_target(target: Path) -> None:
    if target.exists() or target.is_symlink():
        if not target.is_dir() or target.is_symlink():
            raise ReportError(f"report folder {str(target)!r} exists and is not a folder")
        if not (target / MARKER_FILE).is_file() and any(target.iterdir()):
            raise ReportError(
                f"report folder {str(target)!r} exists and is not a skyretriever report "
                f"(no {MARKER_FILE} file); refusing to replace it: choose another folder or "
                "empty this one"
            )


def _swap_into_place(built: Path, target: Path) -> None:
    """Rename the finished report to ``target``; the old one goes only once the new one is in."""
    storage.restore_folder(target)
    _check_target(target)  # again: the folder may have appeared while the report was built
    storage.replace_folder(built, target)


def write_report(project: Project, folder: str | os.PathLike | None = None,
                 top: int = DEFAULT_TOP, *,
                 summary: RunSummary | None = None, plots: bool = True,
                 source_plots: bool = True, progress: bool | None = None,
                 per_page: int = SOURCES_PER_PAGE, batch_size: int = _BATCH_SIZE,
                 workers: int | None = None) -> Path:
    """Write the static HTML report of a project and return the path of its ``index.html``.

    Parameters
    ----------
    project
        The project; its database and data root are the ones it configured.
    folder
        Where the report goes; default ``<project output folder>/report``. An
        existing folder is replaced only if it holds a skyretriever report.
    top
        How many of the real detections with the highest S/N the summary lists and
        plots (:data:`DEFAULT_TOP`).
    summary
        The :class:`~skyretriever.project.RunSummary` of a run, to show its time
        per step (the database keeps no timings).
    plots
        Draw the figures (``False`` writes the pages only, much faster).
    source_plots
        Also draw each source's light curves and its best detections on its page
        (``False`` keeps only the histograms and the top detections' plots: the
        figures of every source are most of the time a report takes).
    progress
        Show a progress bar for each stage (top detections, histograms, sources,
        failures); default the project's ``progress``.
    per_page
        Sources per page of the source list.
    batch_size
        Sources read from the database at a time (memory stays flat).
    workers
        Processes that draw the figures (forked, Linux only); default one per core,
        at most 4; 1 draws them in this process.

    Returns
    -------
    pathlib.Path
        ``<folder>/index.html``.

    Raises
    ------
    ReportError
        If ``folder`` exists and is not a skyretriever report.
    ValueError
        If ``top``, ``per_page`` or ``batch_size`` is not a suitable integer.

    Examples
    --------
    >>> from skyretriever import Project
    >>> proj = Project(cfg_file="configs/demo.yaml")                   # doctest: +SKIP
    >>> index = write_report(proj, summary=proj.run(), top=20)         # doctest: +SKIP
    >>> index.name                                                     # doctest: +SKIP
    'index.html'
    """
    for name, value, least in (("top", top, 0), ("per_page", per_page, 1),
                               ("batch_size", batch_size, 1), ("workers", workers, 1)):
        if name == "workers" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"write_report: {name} must be a whole number >= {least}, "
                             f"not {value!r}")
    status = project.status(max_failures=20)
    context = project.context
    target = Path(folder).expanduser().resolve() if folder is not None \
        else storage.ensure_inside_root(project.output_folder / "report")
    storage.restore_folder(target)   # a report killed while it replaced the old one
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()

    built = storage.temporary_path(target)
    built.mkdir(parents=True)
    try:
        _build(built, project, status, context, summary, top, plots, source_plots, progress,
               per_page, batch_size, workers)
        _swap_into_place(built, target)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    log.info("report of %s written to %s in %.1f s", context.name, target,
             time.perf_counter() - begin)
    return target / "index.html"


def _build(built: Path, project: Project, status: dict[str, Any], context: ProjectContext,
           summary: RunSummary | None, top: int, plots: bool, source_plots: bool,
           progress: bool | None, per_page: int, batch_size: int, workers: int | None) -> None:
    for name in ("sources", "detections", "plots"):
        (built / name).mkdir()
    with _Plotter(plots, _worker_count(workers)) as plotter, _reusing_figures():
        _build_with(built, project, status, context, summary, top, plotter, source_plots,
                    progress, per_page, batch_size)


def _build_with(built: Path, project: Project, status: dict[str, Any], context: ProjectContext,
                summary: RunSummary | None, top: int, plotter: _Plotter, source_plots: bool,
                progress: bool | None, per_page: int, batch_size: int) -> None:
    total_sources = sum(status["sources"].values())
    page_count = max(1, math.ceil(total_sources / per_page))
    show = project.pars.progress if progress is None else progress

    top_rows = _top_detections(context, top)
    plotted: dict[int, bool] = {}
    pending: dict[int, Any] = {}
    if plotter.enabled and top_rows:
        bar = progress_bar(len(top_rows), show, f"report {context.name}: top detections",
                           unit="plot")
        try:
            for values in top_rows:
                with database.Session() as session:  # one each: their light curves' data goes
                    _submit_detection(plotter, queries.by_id(session, Detection, values["id"]),
                                      values["source"], session, built / "detections", plotted,
                                      pending)
            for values in top_rows:
                _settle(plotter, [values["id"]], plotted, pending)
                bar.update(1)
        finally:
            bar.close()
    histograms, histogram_note = _histogram_plots(project, built / "plots", plotter, show)
    classifier = _classifier_plots(project, built / "plots", plotter)

    bar = progress_bar(total_sources, show, f"report {context.name}: sources")
    source_list = _SourceList(built, context.name, page_count, per_page)
    try:
        for session, sources in _iter_sources(context, batch_size):
            # Start every figure of the batch (in the workers, if any), then write the pages
            # in order as their figures are done.
            images = {}
            for source in sources:
                if source.lightcurves and source_plots and plotter.enabled:
                    images[source.id] = plotter.submit(
                        f"source {source.name!r}", "source", source, session,
                        built / "sources" / f"{_source_file(source.name)}.png")
                if plotter.enabled:
                    for detection in _best_real(source, source_plots):
                        _submit_detection(plotter, detection, source.name, session,
                                          built / "detections", plotted, pending)
                for lightcurve in source.lightcurves:  # a plot here loaded the data: let it go
                    lightcurve.data = None
            for source in sources:
                has_plot = source.id in images and plotter.result(images.pop(source.id))
                _settle(plotter, [d.id for d in _best_real(source, source_plots)], plotted,
                        pending)
                page = source_list.add(source)
                _write_source_page(built / "sources", source, page, page_count, plotter,
                                   source_plots, has_plot, plotted, session,
                                   project.observatories)
                bar.update(1)
    finally:
        source_list.finish()
        bar.close()
    failure_count = _write_failures(built / "failures.html", context, page_count, batch_size,
                                    progress_bar(status["sources"].get("failed", 0), show,
                                                 f"report {context.name}: failures"))
    _write_index(built / "index.html", project, status, context, summary, top_rows, plotted,
                 histograms, histogram_note, plotter, page_count, failure_count,
                 classifier)
    _write_text(built / MARKER_FILE, json.dumps({
        "project": context.name, "cfg_hash": context.cfg_hash,
        "written": dt.datetime.now(dt.UTC).isoformat(), "skyretriever_version": __version__,
    }) + "\n")
