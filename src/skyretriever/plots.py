"""Figures of light curves, raw photometry, sources, detections and histograms.

Every function returns a :class:`matplotlib.figure.Figure` (made with pyplot,
so close it with ``plt.close(fig)`` when making many) and takes ``filename``:
when given, the figure is also written there, in the format named by the
suffix (``.png``, ``.pdf``, ``.svg``, ...), to a temporary name first and then
renamed into place, so a reader never sees half a file. Without a display
(no ``DISPLAY`` or ``WAYLAND_DISPLAY``, no ``MPLBACKEND``) matplotlib's Agg
backend is used.

What the figures show:

- time on the x axis as ``MJD (TDB)`` for TESS, Kepler and K2 (barycentric
  Julian date minus 2400000.5) and as ``MJD`` for ZTF and the demo archive,
  ticked in absolute days (no offset such as ``+5.689e4``);
- measurements as dots with thin, faint error bars beneath them; a model
  (the transit's box) drawn over the points;
- magnitudes with the y axis inverted (brighter up), fluxes in the archive's
  unit (e-/s for TESS, Kepler and K2; microjansky for ZTF and demo);
- one colour per survey and filter, named in the legend; titles wrapped to
  fit inside the figure;
- epochs flagged by the quality mask (``qflag``) drawn faintly
  (alpha :data:`FLAGGED_ALPHA`), never hidden; points without a finite time or
  value are left out, missing errors are drawn as no error bar.

Examples
--------
>>> import sqlalchemy as sa
>>> from skyretriever.database import Session
>>> from skyretriever.models import Detection
>>> with Session() as session:                                          # doctest: +SKIP
...     detection = session.scalars(sa.select(Detection).order_by(Detection.snr.desc())).first()
...     fig = plot_detection(detection, filename="best.png")
...     fig = detection.source.plot(filename="best_source.pdf")
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from skyretriever import drawing, queries, storage
from skyretriever.analysis.histogram import EVENTS, VARIABLES, Histogram, recovery_efficiency
from skyretriever.analysis.series import detrend
from skyretriever.analysis.transit import TransitFinderParameters
from skyretriever.database import Session
from skyretriever.images.photometry import apertures, binned_to_frames, compare_cadences
from skyretriever.models import Detection, Lightcurve, RawImages, RawPhotometry, Source
from skyretriever.observatories import observatory_class
from skyretriever.parameters import ParameterError, unknown_key_message
from skyretriever.storage import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "FLAGGED_ALPHA",
    "is_transit",
    "plot_classifier_evaluation",
    "SAVE_DPI",
    "plot_detection",
    "plot_ffi_comparison",
    "plot_histogram",
    "plot_lightcurve",
    "plot_power_spectrum",
    "plot_raw_photometry",
    "plot_source",
    "plot_source_spectra",
    "plot_spectrogram",
    "reused_figures",
    "shared_sectors",
]

#: Opacity of epochs flagged by the quality mask (good epochs are opaque).
FLAGGED_ALPHA = 0.25

_SURVEY_NAMES = {"tess": "TESS", "kepler": "Kepler", "k2": "K2", "ztf": "ZTF", "demo": "demo"}
_SURVEY_ORDER = ("tess", "kepler", "k2", "ztf", "demo")
# Times of these missions are barycentric (TDB); ZTF's and the demo archive's are not.
_BARYCENTRIC = {"tess", "kepler", "k2"}
_FLUX_UNITS = {"tess": "e$^-$ s$^{-1}$", "kepler": "e$^-$ s$^{-1}$", "k2": "e$^-$ s$^{-1}$",
               "ztf": "µJy", "demo": "µJy"}
# Measurements are dots whatever the survey (a triangle reads as an upper limit); the surveys
# and filters differ by colour and legend.
_MARKER = "o"
# Error bars are drawn thin and faint under their points (and under any model line).
_ERROR_ALPHA = 0.35
_POINTS_ZORDER, _ERRORS_ZORDER, _MODEL_ZORDER = 2.0, 1.5, 8.0
# Figures are written at this resolution (pixels per inch), PNG with light compression:
# most of a report's time goes to drawing and encoding them.
SAVE_DPI = 100
# Single-axes figures made here are laid out by hand, in inches (matplotlib's constrained
# layout costs a second drawing pass per figure): room for the tick labels and axis labels on
# the left and below, for the title above and for the legend on the right.
_LEFT, _BOTTOM, _TOP_PAD, _RIGHT_PAD = 0.95, 0.65, 0.12, 0.12
_FILTER_COLOURS = {
    "g": "tab:green", "zg": "tab:green", "r": "tab:red", "zr": "tab:red",
    "i": "tab:brown", "zi": "tab:brown", "TESS": "tab:purple", "Kepler": "tab:blue",
    "B": "tab:blue", "V": "tab:olive", "R": "tab:orange",
}
# Filters in order of wavelength, for legends; others follow by name.
_FILTER_ORDER = ("B", "g", "zg", "V", "r", "zr", "R", "i", "zi", "Kepler", "TESS")
_OTHER_COLOURS = ("tab:cyan", "tab:pink", "tab:gray", "tab:olive", "tab:orange", "black")
# Quality columns of raw tables, by archive: TESS and ZTF (standardised) ``quality``,
# Kepler and K2 ``sap_quality``, IRSA's own ``catflags``.
_RAW_QUALITY_COLUMNS = ("quality", "sap_quality", "catflags")
# Flux columns of raw tables, best first: the mission pipelines' PDCSAP, then SAP, then ours.
_RAW_FLUX_COLUMNS = (("pdcsap_flux", "PDCSAP flux"), ("sap_flux", "SAP flux"), ("flux", "Flux"))

_HISTOGRAM_AXES = {
    "mag": "Magnitude (catalog, else light-curve mean)",
    "cadence": "Cadence (exposure time, s)",
    "filter": "Filter",
    "score": "Score (S/N; expected S/N for injected events)",
    "event": "Injected event",
}
_HISTOGRAM_COUNTS = ("lightcurves", "points", "scores", "detections", "injected", "recovered")
_HISTOGRAM_LABELS = {
    "lightcurves": "light curves scanned", "points": "good epochs scanned",
    "scores": "epochs by score", "detections": "real detections",
    "injected": "injected events", "recovered": "recovered injections",
}


# -- matplotlib --------------------------------------------------------------------------------
def _pyplot():
    """``matplotlib.pyplot``, on the Agg backend when there is no display and no choice made."""
    import matplotlib

    if ("matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND")
            and sys.platform.startswith("linux")
            and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))):
        chosen = getattr(matplotlib.rcParams, "_get_backend_or_none", lambda: None)()
        if chosen is None:
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# Single-axes figures kept for drawing again, by size (inside reused_figures()), else None.
_REUSED: dict[tuple[float, float], tuple[Figure, Axes]] | None = None


@contextlib.contextmanager
def reused_figures() -> Iterator[None]:
    """Inside the block, light curves, raw data and sources are drawn on one figure per
    size, wiped and drawn again, rather than on a new figure each time.

    Making a figure (its axes, ticks and labels) is a good part of the cost of a small
    plot: a caller writing many files (the report) saves it. A figure returned inside
    the block is valid only until the next plot; all of them are closed at its end.

    Examples
    --------
    >>> with reused_figures():                                          # doctest: +SKIP
    ...     for source in sources:
    ...         plot_source(source, filename=f"{source.name}.png")
    """
    global _REUSED
    previous, _REUSED = _REUSED, {}
    try:
        yield
    finally:
        for fig, _ in _REUSED.values():
            _pyplot().close(fig)
        _REUSED = previous


def _wipe(ax: Axes) -> None:
    """Take everything a plot function drew off ``ax`` (its ticks stay, to be used again)."""
    for artist in [*ax.lines, *ax.collections, *ax.patches, *ax.texts, *ax.images]:
        artist.remove()
    legend = ax.get_legend()
    if legend is not None:
        legend.remove()
    ax.set_title("")
    ax.set_xlabel("")
    ax.set_ylabel("")
    if ax.yaxis_inverted():
        ax.invert_yaxis()
    ax.set_prop_cycle(None)
    ax.relim()
    ax.set_autoscale_on(True)


def _new_axes(ax: Axes | None, figsize: tuple[float, float] = (10.0, 5.0)) -> tuple[Figure, Axes]:
    """The given axes, or new ones on a figure laid out by :func:`_finish` (no layout engine);
    inside :func:`reused_figures`, the figure of this size drawn before, wiped."""
    if ax is not None:
        return ax.figure, ax
    if _REUSED is not None and figsize in _REUSED:
        fig, ax = _REUSED[figsize]
        _wipe(ax)
        return fig, ax
    fig, ax = _pyplot().subplots(figsize=figsize)
    if _REUSED is not None:
        _REUSED[figsize] = (fig, ax)
    return fig, ax


def _renderer(fig: Figure) -> Any:
    """A renderer to measure text with (the canvas's own; Agg when it has none)."""
    get = getattr(fig.canvas, "get_renderer", None)
    if get is not None:
        return get()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return FigureCanvasAgg(fig).get_renderer()


def _wrap(fig: Figure, text: str, width: float, fontsize: Any) -> str:
    """``text`` broken into lines (at spaces, after commas first) each at most ``width`` pixels."""
    from matplotlib.text import Text

    probe = Text(0, 0, "", fontsize=fontsize, figure=fig)
    renderer = _renderer(fig)

    def fits(line: str) -> bool:
        probe.set_text(line)
        return probe.get_window_extent(renderer).width <= width

    if fits(text):
        return text
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if current and not fits(candidate):
            lines.append(current)
            current = word
        else:
            current = candidate
    lines.append(current)
    return "\n".join(lines)


def _title(ax: Axes, text: str, fraction: float = 0.94, **kwargs: Any) -> None:
    """Set the title of ``ax``, wrapped so that no line is wider than ``fraction`` of the
    figure (a layout engine then makes room for it)."""
    fig = ax.figure
    fontsize = kwargs.get("fontsize", _pyplot().rcParams["axes.titlesize"])
    ax.set_title(_wrap(fig, text, fraction * fig.bbox.width, fontsize), **kwargs)


def _plain_time(ax: Axes) -> None:
    """Tick labels of the time axis as plain absolute times (no ``+5.689e4`` offset)."""
    formatter = ax.xaxis.get_major_formatter()
    if hasattr(formatter, "set_useOffset"):
        formatter.set_useOffset(False)
        formatter.set_scientific(False)


def _finish(fig: Figure, ax: Axes, title: str, owned: bool, rows: int = 1, gap: float = 0.0
            ) -> None:
    """Title a figure of ``rows`` axes one above the other (``ax`` the top one, with the
    legend); place the axes of one made here (``owned``), ``gap`` inches apart.

    Fixed margins in inches on the left and below; above, room for the title (wrapped to
    twice the room between the middle of the axes and the nearer edge of the figure, so it
    never leaves the figure); on the right, room for the legend. Axes given by the caller
    stay where the caller put them (their title wrapped to the figure's width).
    """
    if not owned:
        _title(ax, title)
        return
    width, height = fig.get_size_inches()
    dpi = fig.dpi
    renderer = _renderer(fig)
    legend = ax.get_legend()
    right = _RIGHT_PAD
    if legend is not None:
        right += legend.get_window_extent(renderer).width / dpi + 0.1
    left = _LEFT / width
    right_edge = 1.0 - min(right, 0.45 * width) / width
    centre = 0.5 * (left + right_edge) * width * dpi
    room = 2.0 * min(centre, width * dpi - centre) - 0.2 * dpi
    ax.set_title(_wrap(fig, title, room, _pyplot().rcParams["axes.titlesize"]))
    title_height = ax.title.get_window_extent(renderer).height / dpi
    top = _TOP_PAD + title_height + 0.1
    axes_height = (height - top - _BOTTOM - (rows - 1) * gap) / rows
    fig.subplots_adjust(left=left, right=right_edge, bottom=_BOTTOM / height,
                        top=1.0 - top / height, hspace=gap / axes_height if rows > 1 else None)


def _save(fig: Figure, filename: str | os.PathLike | None, owned: bool = True) -> None:
    """Write ``fig`` to ``filename`` (format from its suffix) atomically; nothing without a name.

    When the figure cannot be written, a figure made here (``owned``) is closed:
    the caller gets the error, not the figure, and could not close it.
    """
    if filename is None:
        return
    try:
        _write(fig, Path(filename))
    except BaseException:
        if owned:
            _pyplot().close(fig)
        raise


def _write(fig: Figure, path: Path) -> None:
    fmt = path.suffix[1:].lower()
    if not fmt:
        raise ValueError(f"cannot save the figure to {str(path)!r}: the name has no suffix "
                         "to give the format (such as .png, .pdf or .svg)")
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"cannot save the figure to {str(path)!r}: unknown format {fmt!r}; "
                         f"use one of {', '.join(sorted(supported))}")
    with atomic_write(path) as temporary:
        options = {"pil_kwargs": {"compress_level": 1}} if fmt == "png" else {}
        fig.savefig(temporary, format=fmt, dpi=SAVE_DPI, **options)


# -- names and labels --------------------------------------------------------------------------
def _survey_name(observatory: str | None) -> str:
    if not observatory:
        return "unknown survey"
    return _SURVEY_NAMES.get(observatory.lower(), observatory)


def _series_label(observatory: str | None, band: str | None) -> str:
    """``ZTF zr``, ``demo g``; a mission whose filter is its own name once: ``TESS``."""
    survey = _survey_name(observatory)
    if band is None or str(band) in ("", survey, "nan", "None"):
        return survey
    return f"{survey} {band}"


def _time_label(observatories: Sequence[str | None]) -> str:
    kinds = {(obs or "").lower() in _BARYCENTRIC for obs in observatories}
    if kinds == {True}:
        return "MJD (TDB)"
    if kinds == {False}:
        return "MJD"
    barycentric = [_SURVEY_NAMES[o] for o in _SURVEY_ORDER
                   if o in {(obs or "").lower() for obs in observatories} and o in _BARYCENTRIC]
    return f"MJD (TDB for {', '.join(barycentric)})"


def _flux_label(observatories: Sequence[str | None], name: str = "Flux") -> str:
    units = {_FLUX_UNITS.get((obs or "").lower()) for obs in observatories}
    return f"{name} ({units.pop()})" if len(units) == 1 and None not in units else name


def _colour(band: str | None, used: dict[str, str], key: str | None = None) -> str:
    """The colour of a filter (the usual one, unless another series in ``used`` has it)."""
    key = str(band) if key is None else key
    if key not in used:
        taken = set(used.values())
        colour = _FILTER_COLOURS.get(str(band))
        if colour is None or colour in taken:
            colour = next((c for c in _OTHER_COLOURS if c not in taken),
                          _OTHER_COLOURS[len(used) % len(_OTHER_COLOURS)])
        used[key] = colour
    return used[key]


def _filter_rank(band: str | None) -> tuple[int, str]:
    text = str(band)
    return (_FILTER_ORDER.index(text) if text in _FILTER_ORDER else len(_FILTER_ORDER), text)


def _loaded(obj: Any, attribute: str) -> Any:
    """``obj.attribute``, or ``None`` where reading it would need a closed session."""
    state = sa.inspect(obj)
    if state.detached and attribute in state.unloaded:
        return None
    return getattr(obj, attribute)


def _lightcurve_source_name(lightcurve: Lightcurve) -> str:
    source = _loaded(lightcurve, "source")
    if source is not None:
        return source.name
    metadata = lightcurve._metadata or {}
    if metadata.get("source_name"):
        return str(metadata["source_name"])
    raw = _loaded(lightcurve, "raw_data")
    if raw is not None:
        return raw.source_name
    return f"source id {lightcurve.source_id}"


def _describe_lightcurve(lightcurve: Lightcurve) -> str:
    label = _series_label(lightcurve.observatory, lightcurve.filter)
    where = f", series {lightcurve.series_number} of {lightcurve.series_total}" \
        if lightcurve.series_number is not None and lightcurve.series_total else ""
    return f"light curve {lightcurve.id} ({label}{where})" if lightcurve.id is not None \
        else f"light curve ({label}{where})"


# -- the points of one series ------------------------------------------------------------------
@dataclass
class _Points:
    """Finite points of one series, with their errors (0 where unknown) and flags."""

    time: np.ndarray
    value: np.ndarray
    error: np.ndarray
    flagged: np.ndarray

    @classmethod
    def from_arrays(cls, time: Any, value: Any, error: Any = None, flagged: Any = None) -> _Points:
        time = np.asarray(time, dtype=float)
        value = np.asarray(value, dtype=float)
        error = np.full(len(time), np.nan) if error is None else np.asarray(error, dtype=float)
        flagged = np.zeros(len(time), bool) if flagged is None else np.asarray(flagged, dtype=bool)
        keep = np.isfinite(time) & np.isfinite(value)
        error = np.where(np.isfinite(error) & (error >= 0), error, 0.0)
        return cls(time[keep], value[keep], error[keep], flagged[keep])

    @classmethod
    def concatenate(cls, pieces: Sequence[_Points]) -> _Points:
        return cls(*(np.concatenate([getattr(p, name) for p in pieces]) if pieces else np.array([])
                     for name in ("time", "value", "error", "flagged")))

    def __len__(self) -> int:
        return len(self.time)


def _column(frame: pd.DataFrame, *names: str) -> np.ndarray | None:
    for name in names:
        if name in frame:
            return frame[name].to_numpy(dtype=float)
    return None


def _has_finite(frame: pd.DataFrame, name: str) -> bool:
    return name in frame and bool(np.isfinite(frame[name].to_numpy(dtype=float)).any())


def _qflag(frame: pd.DataFrame) -> np.ndarray:
    if "qflag" in frame:
        return frame["qflag"].to_numpy(dtype=bool)
    return np.zeros(len(frame), bool)


def _lightcurve_points(frame: pd.DataFrame, quantity: str) -> _Points:
    error = _column(frame, f"{quantity}_err")
    return _Points.from_arrays(frame["mjd"], frame[quantity], error, _qflag(frame))


def _draw(ax: Axes, points: _Points, label: str, colour: str, marker: str,
          markersize: float = 3.0) -> None:
    """The good points (labelled, opaque) and the flagged ones (faint, out of the legend).

    The data line of each has the gid ``good:<label>`` or ``flagged:<label>``.
    """
    from matplotlib.collections import LineCollection

    for kind, selected, alpha in (("good", ~points.flagged, 1.0),
                                  ("flagged", points.flagged, FLAGGED_ALPHA)):
        if not selected.any():
            continue
        time, value, error = points.time[selected], points.value[selected], points.error[selected]
        many = len(time) > 2000
        (line,) = ax.plot(time, value, linestyle="none", marker=marker, markersize=markersize,
                          markeredgewidth=0, color=colour, alpha=alpha, zorder=_POINTS_ZORDER,
                          label=label if kind == "good" else f"_{kind} {label}", rasterized=many)
        line.set_gid(f"{kind}:{label}")
        if (error > 0).any():
            # one segment per point (zero long where the error is unknown), built as an array:
            # much cheaper than errorbar()'s masked arrays
            segments = np.stack([np.column_stack([time, value - error]),
                                 np.column_stack([time, value + error])], axis=1)
            bars = LineCollection(segments, colors=colour, linewidths=0.5,
                                  alpha=alpha * _ERROR_ALPHA, zorder=_ERRORS_ZORDER,
                                  rasterized=many, label=f"_{kind} {label} errors")
            bars.set_gid(f"{kind}:{label}")
            ax.add_collection(bars, autolim=True)


def _flag_handle() -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], linestyle="none", marker="o", markersize=4, color="gray",
                  alpha=FLAGGED_ALPHA)


def _legend(ax: Axes, any_flagged: bool, flag_text: str = "flagged (qflag)") -> None:
    """The legend of ``ax``, outside it on the right (never over the data)."""
    handles, labels = ax.get_legend_handles_labels()
    if any_flagged:
        handles.append(_flag_handle())
        labels.append(flag_text)
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0.0, fontsize="small")


def _invert(ax: Axes) -> None:
    if not ax.yaxis_inverted():
        ax.invert_yaxis()


def _quantity(frame: pd.DataFrame, what: str) -> str:
    """``mag`` when the table has finite magnitudes, else ``flux``; an error when neither."""
    if _has_finite(frame, "mag"):
        return "mag"
    if _has_finite(frame, "flux"):
        return "flux"
    raise ValueError(f"{what}: no finite 'mag' or 'flux' values to plot "
                     f"(columns: {', '.join(map(str, frame.columns))})")


def _lightcurve_frame(lightcurve: Lightcurve) -> pd.DataFrame:
    what = _describe_lightcurve(lightcurve)
    if lightcurve._data is None and not (lightcurve.filename and lightcurve.key):
        raise ValueError(f"{what} has no data to plot: no table in memory and no file")
    frame = lightcurve.data
    if frame is None or len(frame) == 0:
        raise ValueError(f"{what} has no data to plot: its table is empty")
    if "mjd" not in frame:
        raise ValueError(f"{what} has no 'mjd' column to plot against "
                         f"(columns: {', '.join(map(str, frame.columns))})")
    return frame


# -- light curves ------------------------------------------------------------------------------
def plot_lightcurve(lightcurve: Lightcurve, ax: Axes | None = None,
                    filename: str | os.PathLike | None = None) -> Figure:
    """One light curve against time: magnitudes (inverted axis), or flux when it has none.

    Parameters
    ----------
    lightcurve
        A :class:`~skyretriever.models.Lightcurve` (its data is loaded from its
        file if needed).
    ax
        Axes to draw on; a new figure by default.
    filename
        Where to save the figure too (format from the suffix), written atomically.

    Returns
    -------
    matplotlib.figure.Figure
        The figure of ``ax`` (or the new one).

    Raises
    ------
    ValueError
        If the light curve has no data, no ``mjd`` column, or no finite
        magnitude or flux.

    Examples
    --------
    >>> from skyretriever.observatories import VirtualDemoObs
    >>> obs = VirtualDemoObs(empty_fraction=0, num_seasons=1)
    >>> lightcurve = obs.reduce(obs.download({"name": "star", "ra": 1.0, "dec": 2.0}))[0]
    >>> fig = plot_lightcurve(lightcurve)
    >>> fig.axes[0].get_xlabel(), bool(fig.axes[0].yaxis_inverted())
    ('MJD', True)
    """
    frame = _lightcurve_frame(lightcurve)
    what = _describe_lightcurve(lightcurve)
    quantity = _quantity(frame, what)
    points = _lightcurve_points(frame, quantity)
    owned = ax is None
    fig, ax = _new_axes(ax)
    label = _series_label(lightcurve.observatory, lightcurve.filter)
    _draw(ax, points, label, _colour(lightcurve.filter, {}), _MARKER)
    ax.set_xlabel(_time_label([lightcurve.observatory]))
    _plain_time(ax)
    if quantity == "mag":
        ax.set_ylabel("Magnitude (mag)")
        _invert(ax)
    else:
        ax.set_ylabel(_flux_label([lightcurve.observatory]))
    series = ""
    if lightcurve.series_number is not None and lightcurve.series_total:
        series = f", series {lightcurve.series_number} of {lightcurve.series_total}"
    simulated = " (simulated)" if lightcurve.is_simulated else ""
    _legend(ax, bool(points.flagged.any()))
    _finish(fig, ax, f"{_lightcurve_source_name(lightcurve)}: {label}{series}{simulated}", owned)
    _save(fig, filename, owned)
    return fig


def _raw_flags(raw: RawPhotometry, frame: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Epochs the observatory's default quality mask flags, and how the legend names them."""
    if "qflag" in frame:
        return frame["qflag"].to_numpy(dtype=bool), "flagged (qflag)"
    column = next((c for c in _RAW_QUALITY_COLUMNS if c in frame), None)
    if column is None:
        return np.zeros(len(frame), bool), ""
    quality = np.nan_to_num(frame[column].to_numpy(dtype=float)).astype(np.int64)
    try:
        mask = int(observatory_class(raw.observatory).QUALITY_PRESETS["default"])
    except (ParameterError, KeyError):
        return quality != 0, f"flagged ({column} ≠ 0)"
    return (quality & mask) != 0, f"flagged ({column}, default mask)"


def plot_raw_photometry(raw: RawPhotometry, ax: Axes | None = None,
                        filename: str | os.PathLike | None = None) -> Figure:
    """Raw photometry as the archive gave it: magnitudes if it has them, else flux.

    TESS, Kepler and K2 tables (flux columns, no magnitudes) are drawn as
    PDCSAP flux (else SAP flux) against time; ZTF and demo tables as
    magnitudes on an inverted axis. One series per filter; epochs that the
    observatory's default quality mask would flag are drawn faintly.

    Parameters
    ----------
    raw
        A :class:`~skyretriever.models.RawPhotometry` with data.
    ax
        Axes to draw on; a new figure by default.
    filename
        Where to save the figure too (format from the suffix), written atomically.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If the raw data is empty, or has no time or nothing to plot.

    Examples
    --------
    >>> from skyretriever.observatories import VirtualDemoObs
    >>> raw = VirtualDemoObs(empty_fraction=0).download({"name": "star", "ra": 1.0, "dec": 2.0})
    >>> fig = plot_raw_photometry(raw)
    >>> sorted(text.get_text() for text in fig.axes[0].get_legend().get_texts())[:2]
    ['demo g', 'demo r']
    """
    what = f"raw photometry of {raw.source_name!r} from {_survey_name(raw.observatory)}"
    if raw.is_empty:
        raise ValueError(f"{what} is empty (the archive had no data): nothing to plot")
    if raw._data is None and not (raw.filename and raw.key):
        raise ValueError(f"{what} has no data to plot: no table in memory and no file")
    frame = raw.data
    if frame is None or len(frame) == 0:
        raise ValueError(f"{what} has no data to plot: its table is empty")
    if "mjd" not in frame:
        raise ValueError(f"{what} has no 'mjd' column to plot against "
                         f"(columns: {', '.join(map(str, frame.columns))})")
    if _has_finite(frame, "mag"):
        quantity, error_names, ylabel = "mag", ("mag_err", "magerr"), "Magnitude (mag)"
    else:
        found = next(((c, n) for c, n in _RAW_FLUX_COLUMNS if _has_finite(frame, c)), None)
        if found is None:
            raise ValueError(f"{what}: no finite magnitudes or fluxes to plot "
                             f"(columns: {', '.join(map(str, frame.columns))})")
        quantity, error_names = found[0], (f"{found[0]}_err",)
        ylabel = _flux_label([raw.observatory], found[1])
    flags, flag_text = _raw_flags(raw, frame)
    error = _column(frame, *error_names)
    bands = frame["filter"].astype(str).to_numpy() if "filter" in frame else None
    owned = ax is None
    fig, ax = _new_axes(ax)
    colours: dict[str, str] = {}
    groups = [None] if bands is None else sorted(set(bands), key=_filter_rank)
    any_flagged = False
    for band in groups:
        rows = np.ones(len(frame), bool) if band is None else bands == band
        points = _Points.from_arrays(frame["mjd"].to_numpy(float)[rows],
                                     frame[quantity].to_numpy(float)[rows],
                                     None if error is None else error[rows], flags[rows])
        if not len(points):
            continue
        label = _series_label(raw.observatory, band)
        _draw(ax, points, label, _colour(band, colours),
              _MARKER)
        any_flagged |= bool(points.flagged.any())
    ax.set_xlabel(_time_label([raw.observatory]))
    _plain_time(ax)
    ax.set_ylabel(ylabel)
    if quantity == "mag":
        _invert(ax)
    _legend(ax, any_flagged, flag_text)
    _finish(fig, ax, f"{raw.source_name}: raw {_survey_name(raw.observatory)} photometry "
                     f"({raw.num_points or len(frame)} epochs)", owned)
    _save(fig, filename, owned)
    return fig


# -- sources -----------------------------------------------------------------------------------
@contextlib.contextmanager
def _database(obj: Any, session: Any) -> Iterator[Any]:
    """The session to read ``obj``'s relations with, or ``None`` when they can be read in memory.

    A given session is used as it is; an object still in its session (or never
    saved) needs none; a detached object gets a new session for the reading.
    """
    if session is not None:
        yield session
        return
    if not sa.inspect(obj).detached:
        yield None
        return
    with Session() as new_session:
        yield new_session


def _processed(lightcurves: Sequence[Lightcurve]) -> list[Lightcurve]:
    return [lc for lc in lightcurves if lc.was_processed is not False and not lc.is_simulated]


def _source_lightcurves(source: Source, session: Any) -> list[Lightcurve]:
    with _database(source, session) as reader:
        if reader is None or source.id is None:
            lightcurves = list(source.lightcurves)
        else:
            lightcurves = queries.source_lightcurves(reader, source.id)
    return _processed(lightcurves)


def _group_key(lightcurve: Lightcurve) -> tuple[int, str, tuple[int, str]]:
    observatory = (lightcurve.observatory or "").lower()
    rank = _SURVEY_ORDER.index(observatory) if observatory in _SURVEY_ORDER else len(_SURVEY_ORDER)
    return rank, observatory, _filter_rank(lightcurve.filter)


def plot_source(source: Source, session: Any = None, ax: Axes | None = None,
                filename: str | os.PathLike | None = None) -> Figure:
    """All processed light curves of a source on one time axis, in magnitudes.

    TESS, Kepler, K2, ZTF and demo light curves share the axis (MJD; TDB for
    the space missions); one colour and marker per survey and filter, so the
    sectors or seasons of one filter are one legend entry. Light curves with
    no finite magnitude are left out; simulated ones are never shown.

    Parameters
    ----------
    source
        A :class:`~skyretriever.models.Source`.
    session
        Session to read its light curves with; by default its own, or a new
        one if it is detached.
    ax
        Axes to draw on; a new figure by default.
    filename
        Where to save the figure too (format from the suffix), written atomically.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If the source has no processed light curve with magnitudes.

    Examples
    --------
    >>> from skyretriever.database import Session
    >>> with Session() as session:                                      # doctest: +SKIP
    ...     source = session.scalars(sa.select(Source).where(Source.name == "star_7")).one()
    ...     fig = plot_source(source, filename="star_7.png")
    """
    lightcurves = _source_lightcurves(source, session)
    if not lightcurves:
        raise ValueError(f"source {source.name!r} (id {source.id}) has no processed light "
                         f"curves to plot (status {source.status!r})")
    groups: dict[tuple, list[_Points]] = {}
    bands: dict[tuple, str | None] = {}
    for lightcurve in sorted(lightcurves, key=lambda lc: (_group_key(lc), lc.time_start or 0.0)):
        frame = lightcurve.data
        if frame is None or len(frame) == 0 or "mjd" not in frame or not _has_finite(frame, "mag"):
            continue
        key = _group_key(lightcurve)
        groups.setdefault(key, []).append(_lightcurve_points(frame, "mag"))
        bands[key] = lightcurve.filter
    if not groups:
        raise ValueError(f"source {source.name!r} (id {source.id}): none of its "
                         f"{len(lightcurves)} light curves has finite magnitudes to plot")
    owned = ax is None
    fig, ax = _new_axes(ax, figsize=(11.0, 5.0))
    colours: dict[str, str] = {}
    any_flagged = False
    for key, pieces in groups.items():
        points = _Points.concatenate(pieces)
        _, observatory, _ = key
        _draw(ax, points, _series_label(observatory, bands[key]),
              _colour(bands[key], colours, key=f"{observatory}:{bands[key]}"),
              _MARKER)
        any_flagged |= bool(points.flagged.any())
    ax.set_xlabel(_time_label([key[1] for key in groups]))
    _plain_time(ax)
    ax.set_ylabel("Magnitude (mag)")
    _invert(ax)
    surveys = ", ".join(dict.fromkeys(_survey_name(key[1]) for key in groups))
    _legend(ax, any_flagged)
    _finish(fig, ax, f"{source.name}: RA {source.ra:.5f}°, Dec {source.dec:+.5f}° "
                     f"({surveys}; {sum(len(p) for p in groups.values())} light curves)", owned)
    _save(fig, filename, owned)
    return fig


# -- detections --------------------------------------------------------------------------------
def is_transit(detection: Detection) -> bool:
    """Whether a detection is a periodic transit (a period, duration and epoch), not an event."""
    return all(value is not None and np.isfinite(value) and value > 0
               for value in (detection.period, detection.duration)) and detection.epoch is not None


def _detection_lightcurves(detection: Detection, session: Any) -> tuple[str, list[Lightcurve]]:
    """The source name and the light curves a detection came from (their data loaded)."""
    with _database(detection, session) as reader:
        if reader is None:
            source = detection.source
            lightcurve = detection.lightcurve
            candidates = list(source.lightcurves) if source is not None else []
        else:
            source = queries.by_id(reader, Source, detection.source_id)
            lightcurve = (queries.by_id(reader, Lightcurve, detection.lightcurve_id)
                          if detection.lightcurve_id is not None else None)
            candidates = queries.source_lightcurves(reader, detection.source_id)
        name = source.name if source is not None else f"source id {detection.source_id}"
        if lightcurve is not None:
            chosen = [lightcurve]
        else:
            # an event found in several light curves together (a transit over sectors):
            # those of its filter (and observatory, when the detection names one)
            chosen = [lc for lc in _processed(candidates)
                      if (detection.filter is None or lc.filter == detection.filter)
                      and (detection.observatory is None or lc.observatory == detection.observatory)]
        for lc in chosen:
            lc.data  # noqa: B018 - load while the rows are at hand
    if not chosen:
        raise ValueError(f"detection {detection.id} ({detection.finder}, source {name!r}) has no "
                         "light curve to plot: none is linked and none of the source's processed "
                         f"light curves has filter {detection.filter!r}")
    return name, chosen


def _span(ax: Axes, detection: Detection, label: str = "event window", colour: str = "tab:orange",
          alpha: float = 0.2) -> None:
    if detection.time_start is not None and detection.time_end is not None:
        span = ax.axvspan(detection.time_start, detection.time_end, color=colour,
                          alpha=alpha, label=label, zorder=0)
        span.set_gid("event window")


def plot_detection(detection: Detection, session: Any = None,
                   filename: str | os.PathLike | None = None) -> Figure:
    """A detection on its light curve; a transit candidate also folded on its period.

    A flare or dip (the peak finder and the like): the light curve, in
    magnitudes when it has them, with the event window (``time_start`` to
    ``time_end``) shaded and the peak marked, above a zoom on the window.

    A transit candidate (``period``, ``epoch`` and ``duration`` set, as the
    transit finder reports them): its light curves (all those of its filter
    when it was found in several) as normalised flux, each segment divided by
    a robust running mean fitted outside the transits, with the event window
    shaded and the mid-transit times ticked; below, the folded flux against
    phase (-0.5 to 0.5) and against hours from mid-transit, with the box model
    of the candidate's depth and duration.

    Parameters
    ----------
    detection
        A :class:`~skyretriever.models.Detection`.
    session
        Session to read its source and light curves with; by default its own,
        or a new one if it is detached.
    filename
        Where to save the figure too (format from the suffix), written atomically.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If the detection has no light curve with data to show it on.

    Examples
    --------
    >>> from skyretriever.database import Session
    >>> with Session() as session:                                      # doctest: +SKIP
    ...     best = session.scalars(sa.select(Detection).order_by(Detection.snr.desc())).first()
    ...     fig = plot_detection(best, filename="best.png")
    """
    if detection.finder == "zooniverse":
        fig = _plot_volunteers_box(detection, session)
        _save(fig, filename)
        return fig
    transit = is_transit(detection)
    name, lightcurves = _detection_lightcurves(detection, session)
    if transit:
        fig = _plot_transit(detection, name, lightcurves)
    else:
        fig = _plot_event(detection, name, lightcurves)
    _save(fig, filename)
    return fig


def _plot_volunteers_box(detection: Detection, session: Any = None) -> Figure:
    """A solar event's frame with the volunteers' consensus box, their number and agreement."""
    from astropy.io import fits
    from astropy.visualization import AsinhStretch, ImageNormalize, PercentileInterval
    from matplotlib.patches import Polygon

    extra = detection.extra or {}
    with contextlib.ExitStack() as stack:
        if session is None:
            session = stack.enter_context(Session())
        raw = queries.source_cutouts(session, detection.source_id, detection.observatory or "aia")
        source = queries.by_id(session, Source, detection.source_id)
        name = source.name if source is not None else str(detection.source_id)
        if raw is None or "fits" not in extra:
            raise ValueError(f"detection {detection.id} of {name!r}: no cutouts to show it on")
        path = storage.full_path(f"{raw.files_folder}/{extra['fits']}")
    data = fits.getdata(path).astype(float)
    fig, ax = _new_axes(None, figsize=(6.0, 6.0))
    norm = ImageNormalize(data, interval=PercentileInterval(99.5), stretch=AsinhStretch(0.1))
    ax.imshow(data, origin="lower", cmap="inferno", norm=norm)
    corners = np.asarray(extra.get("corners_fits") or [], dtype=float)
    if len(corners):
        ax.add_patch(Polygon(corners, closed=True, fill=False, edgecolor="cyan", linewidth=1.5))
    centre = extra.get("box_hpc") or {}
    ax.set_title(f"{name}  {detection.filter} A  {extra.get('time', '')}\n"
                 f"{extra.get('volunteers', 0)} of {extra.get('subject_volunteers', 0)} "
                 f"volunteers (agreement {float(extra.get('agreement', 0)):.0%}); box at "
                 f"({centre.get('x', float('nan')):.1f}, {centre.get('y', float('nan')):.1f}) "
                 "arcsec", fontsize=9)
    ax.set_xlabel("FITS x (pixels)")
    ax.set_ylabel("FITS y (pixels)")
    return fig


def _simulated_note(detection: Detection) -> str:
    if not detection.is_simulated:
        return ""
    kind = (detection.injected or {}).get("kind", "event")
    return f" [simulated: injected {kind}, not in the stored data]"


def _plot_event(detection: Detection, name: str, lightcurves: list[Lightcurve]) -> Figure:
    frames = [_lightcurve_frame(lc) for lc in lightcurves]
    quantity = "mag" if all(_has_finite(f, "mag") for f in frames) else "flux"
    what = f"detection {detection.id} of {name!r}"
    if not all(_has_finite(f, quantity) for f in frames):
        raise ValueError(f"{what}: its light curves have no finite magnitudes or fluxes to plot")
    points = _Points.concatenate([_lightcurve_points(f, quantity) for f in frames])
    observatory = detection.observatory or lightcurves[0].observatory
    band = detection.filter if detection.filter is not None else lightcurves[0].filter
    label = _series_label(observatory, band)
    fig, (full, zoom) = _pyplot().subplots(2, 1, figsize=(10.0, 7.5))
    colour = _colour(band, {})
    marker = _MARKER
    for ax in (full, zoom):
        _draw(ax, points, label, colour, marker)
        _span(ax, detection)
        if detection.time_peak is not None:
            ax.axvline(detection.time_peak, color="black", linestyle="--", linewidth=0.8,
                       label="peak epoch")
        ax.set_xlabel(_time_label([observatory]))
        _plain_time(ax)
        if quantity == "mag":
            ax.set_ylabel("Magnitude (mag)")
        else:
            ax.set_ylabel(_flux_label([observatory]))
    centre = detection.time_peak
    if detection.time_start is not None and detection.time_end is not None:
        low, high = detection.time_start, detection.time_end
    elif centre is not None:
        low = high = centre
    else:
        low, high = float(points.time.min()), float(points.time.max())
    cadence = float(np.median(np.diff(np.sort(points.time)))) if len(points) > 1 else 1.0
    pad = max(high - low, 10 * cadence, 1e-3)
    zoom.set_xlim(low - pad, high + pad)
    inside = (points.time >= low - pad) & (points.time <= high + pad)
    if inside.any():
        top = points.value[inside] + points.error[inside]
        bottom = points.value[inside] - points.error[inside]
        margin = 0.05 * max(float(top.max() - bottom.min()), 1e-6)
        zoom.set_ylim(float(bottom.min()) - margin, float(top.max()) + margin)
    zoom.set_title("around the event", fontsize="medium")
    if quantity == "mag":
        _invert(full)
        _invert(zoom)
    kind = "flare" if (detection.sign or 0) > 0 else "dip"
    _legend(full, bool(points.flagged.any()))
    _finish(fig, full, f"{name}: {detection.finder} finder, {kind} in {label}, "
                       f"S/N {detection.snr:.1f}{_simulated_note(detection)}", True, rows=2,
            gap=0.95)
    return fig


def _fold(times: np.ndarray, period: float, epoch: float) -> np.ndarray:
    """Phase in [-0.5, 0.5) with mid-transit at 0."""
    return np.mod((times - epoch) / period + 0.5, 1.0) - 0.5


def _normalised_flux(frame: pd.DataFrame, period: float, epoch: float, duration: float
                     ) -> _Points:
    """Flux over a robust running mean fitted outside the transits, segment by segment.

    Flagged epochs are divided by the trend of the good ones, interpolated.
    """
    pars = TransitFinderParameters()
    times = frame["mjd"].to_numpy(dtype=float)
    flux = frame["flux"].to_numpy(dtype=float)
    error = _column(frame, "flux_err")
    error = np.full(len(times), np.nan) if error is None else error
    flagged = _qflag(frame)
    usable = np.isfinite(times) & np.isfinite(flux) & (flux > 0)
    good = usable & ~flagged
    if good.sum() < 3:
        return _Points.from_arrays([], [])
    order = np.flatnonzero(good)[np.argsort(times[good], kind="stable")]
    t, f = times[order], flux[order]
    in_transit = np.abs(_fold(t, period, epoch)) * period < 0.75 * duration
    window = max(pars.detrend_window, 3.0 * duration)
    relative = detrend(t, f, pars.detrend, window, pars.segment_gap, ignore=in_transit)
    trend = f / relative
    result = np.full(len(times), np.nan)
    result[order] = relative
    others = usable & flagged
    if others.any():
        result[others] = flux[others] / np.interp(times[others], t, trend)
    scale = np.full(len(times), np.nan)
    scale[order] = trend
    if others.any():
        scale[others] = np.interp(times[others], t, trend)
    return _Points.from_arrays(times, result, error / scale, flagged)


def _box(ax: Axes, x_half_width: float, x_max: float, depth: float, label: str) -> None:
    x = [-x_max, -x_half_width, -x_half_width, x_half_width, x_half_width, x_max]
    y = [1.0, 1.0, 1.0 - depth, 1.0 - depth, 1.0, 1.0]
    (line,) = ax.plot(x, y, color="tab:red", linewidth=1.8, label=label, zorder=_MODEL_ZORDER)
    line.set_gid("box model")


def _binned(x: np.ndarray, y: np.ndarray, width: float, low: float, high: float
            ) -> tuple[np.ndarray, np.ndarray]:
    edges = np.arange(low, high + width, width)
    index = np.digitize(x, edges) - 1
    centres, medians = [], []
    for i in range(len(edges) - 1):
        values = y[index == i]
        if len(values):
            centres.append(0.5 * (edges[i] + edges[i + 1]))
            medians.append(np.median(values))
    return np.asarray(centres), np.asarray(medians)


def _plot_transit(detection: Detection, name: str, lightcurves: list[Lightcurve]) -> Figure:
    period, epoch, duration = float(detection.period), float(detection.epoch), float(detection.duration)
    depth = float(detection.depth) if detection.depth is not None and np.isfinite(detection.depth) \
        else 0.0
    what = f"transit candidate {detection.id} of {name!r}"
    frames = [_lightcurve_frame(lc) for lc in lightcurves]
    missing = [lc for lc, f in zip(lightcurves, frames) if not _has_finite(f, "flux")]
    if missing:
        raise ValueError(f"{what}: {_describe_lightcurve(missing[0])} has no finite flux to fold")
    points = _Points.concatenate([_normalised_flux(f, period, epoch, duration) for f in frames])
    if not len(points):
        raise ValueError(f"{what}: fewer than 3 good epochs with positive flux to fold")
    observatories = [lc.observatory for lc in lightcurves]
    bands = {lc.filter for lc in lightcurves}
    band = detection.filter if detection.filter is not None else (
        bands.pop() if len(bands) == 1 else None)
    surveys = list(dict.fromkeys(_survey_name(o) for o in observatories))
    label = " + ".join(surveys) + (f" {band}" if band not in (None, *surveys) else "")
    colour = _colour(band, {})
    marker = _MARKER

    fig = _pyplot().figure(figsize=(11.0, 8.0), layout="constrained")
    axes = fig.subplot_mosaic([["time", "time"], ["phase", "hours"]])
    ax_time, ax_phase, ax_hours = axes["time"], axes["phase"], axes["hours"]

    _draw(ax_time, points, label, colour, marker, markersize=2.0)
    _span(ax_time, detection, "event window (first to last transit)", "tab:gray", 0.1)
    low, high = float(points.time.min()), float(points.time.max())
    cycles = np.arange(np.ceil((low - epoch) / period), np.floor((high - epoch) / period) + 1)
    mids = epoch + cycles * period
    sorted_times = np.sort(points.time)
    nearest = np.clip(np.searchsorted(sorted_times, mids), 1, len(sorted_times) - 1)
    near = np.minimum(np.abs(sorted_times[nearest] - mids),
                      np.abs(sorted_times[nearest - 1] - mids)) < duration if len(sorted_times) > 1 \
        else np.ones(len(mids), bool)
    if near.any():
        ticks = ax_time.vlines(mids[near], 0.0, 0.06, transform=ax_time.get_xaxis_transform(),
                               color="tab:red", linewidth=0.8, label="mid-transit times")
        ticks.set_gid("mid-transit times")
    ax_time.set_xlabel(_time_label(observatories))
    _plain_time(ax_time)
    ax_time.set_ylabel("Normalised flux")

    phase = _fold(points.time, period, epoch)
    folded = _Points(phase, points.value, points.error, points.flagged)
    half_phase = 0.5 * duration / period
    model_label = f"box model: depth {depth * 1e6:.0f} ppm, duration {duration * 24:.2f} h"
    _draw(ax_phase, folded, label, colour, marker, markersize=1.5)
    _box(ax_phase, half_phase, 0.5, depth, model_label)
    ax_phase.set_xlim(-0.5, 0.5)
    ax_phase.set_xlabel(f"Phase (period {period:.5f} d)")
    ax_phase.set_ylabel("Normalised flux")

    hours = phase * period * 24.0
    limit = min(3.0 * duration, 0.5 * period) * 24.0
    near_transit = np.abs(hours) <= limit
    shown = _Points(hours[near_transit], points.value[near_transit],
                    points.error[near_transit], points.flagged[near_transit])
    _draw(ax_hours, shown, label, colour, marker, markersize=1.5)
    _box(ax_hours, 12.0 * duration, limit, depth, model_label)
    good = ~shown.flagged
    if good.sum() >= 3:
        centres, medians = _binned(shown.time[good], shown.value[good], duration * 24.0 / 8.0,
                                   -limit, limit)
        (binned,) = ax_hours.plot(centres, medians, "o", color="black", markersize=4,
                                  label="binned (median)", zorder=_MODEL_ZORDER - 1)
        binned.set_gid("binned")
    ax_hours.set_xlim(-limit, limit)
    ax_hours.set_xlabel("Hours from mid-transit")
    ax_hours.set_ylabel("Normalised flux")
    handles: dict[str, Any] = {}
    for ax in (ax_time, ax_phase, ax_hours):
        for handle, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, handle)
    if points.flagged.any():
        handles["flagged (qflag)"] = _flag_handle()
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncols=min(len(handles), 4), fontsize="small")

    _title(
        ax_time,
        f"{name}: transit candidate in {label}, P = {period:.5f} d, depth "
        f"{depth * 1e6:.0f} ppm, duration {duration * 24:.2f} h, S/N {detection.snr:.1f}"
        + (f", SDE {detection.sde:.1f}" if detection.sde is not None else "")
        + _simulated_note(detection))
    return fig


# -- histograms --------------------------------------------------------------------------------
def _histogram_axis(histogram: Histogram, along: str) -> tuple[np.ndarray, list[str] | None,
                                                               np.ndarray | None]:
    """Positions of the bins, their tick labels (categorical axes) and edges (numeric axes)."""
    if along == "mag":
        edges = histogram.mag_edges
        return 0.5 * (edges[:-1] + edges[1:]), None, edges
    if along == "score":
        edges = histogram.score_edges
        return 0.5 * (edges[:-1] + edges[1:]), None, edges
    if along == "cadence":
        edges = histogram.cadence_edges
        labels = [f"{lo:g}–{hi:g}" for lo, hi in zip(edges[:-1], edges[1:])]
        return np.arange(len(labels), dtype=float), labels, None
    labels = list(histogram.filters) if along == "filter" else list(EVENTS)
    return np.arange(len(labels), dtype=float), labels, None


def plot_histogram(histogram: Histogram | str | os.PathLike, along: str = "mag",
                   filename: str | os.PathLike | None = None) -> Figure:
    """Counts and recovery efficiency of a histogram along one of its dimensions.

    The upper panel has the counts of every variable that has the dimension
    (light curves and good epochs scanned, epochs by score, real detections,
    injected and recovered events), summed over the other dimensions, on a
    logarithmic axis. The lower panel has the recovery efficiency (recovered
    over injected) with its one-sigma Wilson interval, for each kind of
    injected event and all together; bins where nothing was injected have none.
    A histogram with no injected events at all has the upper panel only.

    Parameters
    ----------
    histogram
        A :class:`~skyretriever.analysis.histogram.Histogram`, or the path of
        its netCDF file.
    along
        The dimension: ``mag``, ``cadence``, ``filter``, ``score`` or ``event``.
    filename
        Where to save the figure too (format from the suffix), written atomically.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If ``along`` is not a dimension of the histogram.

    Examples
    --------
    >>> from skyretriever.analysis import Histogram
    >>> hist = Histogram()
    >>> for snr, found in [(4.2, False), (4.4, True), (12.1, True)]:
    ...     hist.add(hist.count_injection("flare", 15.0, 30.0, "g", snr, found))
    >>> fig = plot_histogram(hist, along="score")
    >>> fig.axes[1].get_ylabel()
    'Recovery efficiency'
    """
    if isinstance(histogram, (str, os.PathLike)):
        path = Path(histogram)
        if not path.exists():
            raise FileNotFoundError(f"no histogram file at {str(path)!r}")
        histogram = Histogram.load(path)
    if not isinstance(histogram, Histogram):
        raise TypeError(f"plot_histogram needs a Histogram or the path of its file, "
                        f"not {type(histogram).__name__}")
    if along not in _HISTOGRAM_AXES:
        raise ValueError(f"plot_histogram(along={along!r}): "
                         + unknown_key_message(along, _HISTOGRAM_AXES, "histogram dimension")
                         + f"; the dimensions are {', '.join(_HISTOGRAM_AXES)}")
    positions, ticks, edges = _histogram_axis(histogram, along)
    # The efficiency panel only when something was injected: no half-figure saying nothing.
    any_injected = histogram.total("injected") > 0
    if any_injected:
        fig, (ax_counts, ax_efficiency) = _pyplot().subplots(
            2, 1, figsize=(9.0, 7.5), sharex=True, layout="constrained")
    else:
        fig, ax_counts = _pyplot().subplots(figsize=(9.0, 4.5), layout="constrained")
        ax_efficiency = None

    variables = [v for v in _HISTOGRAM_COUNTS if along in VARIABLES[v]]
    drawn = []
    width = 0.8 / max(len(variables), 1)
    for number, variable in enumerate(variables):
        dims = VARIABLES[variable]
        values = histogram.counts[variable].sum(
            axis=tuple(i for i, dim in enumerate(dims) if dim != along)).astype(float)
        label = f"{_HISTOGRAM_LABELS[variable]} ({int(values.sum())})"
        if edges is not None:
            artist = ax_counts.stairs(np.where(values > 0, values, np.nan), edges, label=label,
                                      linewidth=1.5, linestyle=("-", "--", "-.", ":")[number % 4])
            artist.set_gid(f"counts:{variable}")
        else:
            offset = (number - (len(variables) - 1) / 2) * width
            bars = ax_counts.bar(positions + offset, values, width=width, label=label)
            for patch in bars:
                patch.set_gid(f"counts:{variable}")
        drawn.append(values)
    if any(v.sum() > 0 for v in drawn):
        ax_counts.set_yscale("log")
    else:
        ax_counts.text(0.5, 0.5, "no counts", transform=ax_counts.transAxes, ha="center")
    ax_counts.set_ylabel("Counts")
    _legend(ax_counts, False)

    kinds = [None] if along == "event" else [
        *(e for e in EVENTS if histogram.counts["injected"][EVENTS.index(e)].sum() > 0)]
    if along != "event" and len(kinds) > 1:
        kinds.append(None)
    if ax_efficiency is not None:
        for number, kind in enumerate(kinds):
            table = recovery_efficiency(histogram, along, kind)
            efficiency = table["efficiency"].to_numpy()
            low = table["efficiency_low"].to_numpy()
            high = table["efficiency_high"].to_numpy()
            shown = np.isfinite(efficiency)
            offset = 0.0 if edges is not None else (number - (len(kinds) - 1) / 2) * 0.15
            name = "all injected events" if kind is None else f"{kind}s"
            container = ax_efficiency.errorbar(
                positions[shown] + offset, efficiency[shown],
                yerr=np.vstack([efficiency[shown] - low[shown], high[shown] - efficiency[shown]]),
                fmt="o", markersize=4, capsize=2,
                label=f"{name} ({int(table['recovered'].sum())} of {int(table['injected'].sum())})")
            container.lines[0].set_gid(f"efficiency:{kind or 'all'}")
        _legend(ax_efficiency, False)
        ax_efficiency.set_ylim(-0.02, 1.05)
        ax_efficiency.set_ylabel("Recovery efficiency")
    bottom = ax_counts if ax_efficiency is None else ax_efficiency
    bottom.set_xlabel(_HISTOGRAM_AXES[along])
    if ticks is not None:
        bottom.set_xticks(positions, ticks)
    elif edges is not None:
        bottom.set_xlim(float(edges[0]), float(edges[-1]))
    _title(ax_counts, f"Histogram {histogram.name!r}: counts"
           + (" and recovery efficiency" if any_injected else "") + f" along {along}")
    _save(fig, filename)
    return fig


def plot_raw_images(raw: RawImages, sector: int | None = None, frame: int | None = None,
                    aperture_radius: float = 2.0, background_radius: float = 3.5,
                    ax: Axes | None = None, filename: str | os.PathLike | None = None) -> Figure:
    """One frame of a source's cutout with the photometric aperture and the background pixels.

    ``sector`` defaults to the first, ``frame`` to the median image of the sector;
    the aperture (the pixels the light curve sums) is outlined in red, the
    background pixels are dotted, the target is a cross.

    Raises
    ------
    ValueError
        If the raw images are empty or have no such sector.

    Examples
    --------
    >>> fig = plot_raw_images(raw, sector=1, filename="cutout.png")     # doctest: +SKIP
    """
    if raw.is_empty or (raw._data is None and not raw.filename):
        raise ValueError(f"the cutouts of {raw.source_name!r} ({raw.observatory}) are empty: "
                         "nothing to plot")
    cutouts = raw.data
    sector = min(cutouts) if sector is None else sector
    if sector not in cutouts:
        raise ValueError(f"{raw.source_name!r} has no cutout of sector {sector}; the sectors "
                         f"are {sorted(cutouts)}")
    cutout = cutouts[sector]
    image = (np.nanmedian(cutout.flux, axis=0) if frame is None
             else np.asarray(cutout.flux[frame], float))
    aperture, background, (row, column) = apertures(cutout, raw.ra, raw.dec, aperture_radius,
                                                    background_radius)
    owned = ax is None
    fig, ax = _new_axes(ax, figsize=(6.0, 5.5))
    shown = ax.imshow(image, origin="lower", cmap="viridis", interpolation="nearest")
    ztf = "obsjd" in cutout.extra  # a ZTF science-image cutout (one image a key)
    fig.colorbar(shown, ax=ax, label="counts (DN)" if ztf else "flux (electron / s)")
    ax.contour(aperture.astype(float), levels=[0.5], colors="red", linewidths=1.5)
    ax.contourf(background.astype(float), levels=[0.5, 1.5], colors="none", hatches=["..."])
    ax.plot([column], [row], marker="+", color="white", markersize=12)
    when = "median frame" if frame is None else f"frame {frame}"
    if ztf:
        what = (f"ZTF field {cutout.sector} {cutout.extra.get('filtercode') or ''} "
                f"(JD {cutout.extra['obsjd']:.4f})")
    else:
        what = f"TESS sector {sector} ({when})"
    ax.set_title(f"{raw.source_name}: {what}, aperture {aperture_radius:g} px")
    ax.set_xlabel(f"column (from {cutout.corner[1]})")
    ax.set_ylabel(f"row (from {cutout.corner[0]})")
    _save(fig, filename, owned)
    return fig


def _by_sector(lightcurves: Sequence[Lightcurve]) -> dict[int, pd.DataFrame]:
    frames: dict[int, list[pd.DataFrame]] = {}
    for lc in lightcurves:
        data = lc.data
        if "sector" not in data or not len(data):
            continue
        for sector, part in data.groupby("sector"):
            frames.setdefault(int(sector), []).append(part)
    return {sector: pd.concat(parts, ignore_index=True) for sector, parts in frames.items()}


def shared_sectors(ffi: Sequence[Lightcurve], short: Sequence[Lightcurve]) -> list[int]:
    """The TESS sectors both sets of light curves have points in."""
    return sorted(set(_by_sector(ffi)) & set(_by_sector(short)))


def plot_ffi_comparison(ffi: Sequence[Lightcurve], short: Sequence[Lightcurve],
                        filename: str | os.PathLike | None = None) -> Figure:
    """A star's FFI light curve beside its 2-minute one, a panel per sector both have.

    Both are divided by their medians; the 2-minute points are grey, their means
    over each FFI exposure a black line, the FFI light curve red dots. Each panel's
    title gives :func:`~skyretriever.images.photometry.compare_cadences`'s figures.

    Raises
    ------
    ValueError
        If the two have no sector in common.

    Examples
    --------
    >>> fig = plot_ffi_comparison(ffi_lightcurves, tess_lightcurves, "both.png")  # doctest: +SKIP
    """
    ffi_sectors, short_sectors = _by_sector(ffi), _by_sector(short)
    sectors = sorted(set(ffi_sectors) & set(short_sectors))
    if not sectors:
        raise ValueError(f"the FFI light curves (sectors {sorted(ffi_sectors)}) and the 2-minute "
                         f"ones (sectors {sorted(short_sectors)}) have no sector in common")
    fig, axes = _pyplot().subplots(len(sectors), 1, figsize=(10.0, 3.2 * len(sectors) + 0.6),
                                   squeeze=False)
    for ax, sector in zip(axes[:, 0], sectors):
        full, fast = ffi_sectors[sector], short_sectors[sector]
        good_full = full[~full["qflag"].to_numpy(bool)] if "qflag" in full else full
        good_fast = fast[~fast["qflag"].to_numpy(bool)] if "qflag" in fast else fast
        times = good_full["mjd"].to_numpy(float)
        exposure = float(np.median(np.diff(np.sort(times)))) if len(times) > 1 else 0.0
        binned = binned_to_frames(times, exposure, good_fast["mjd"].to_numpy(float),
                                  good_fast["flux"].to_numpy(float))
        fast_norm = np.nanmedian(binned)
        ax.plot(good_fast["mjd"], good_fast["flux"] / fast_norm, ".", color="0.7",
                markersize=2, label="2-minute", zorder=1)
        ax.plot(times, binned / fast_norm, "-", color="black", linewidth=1.2,
                label="2-minute, binned to the FFI cadence", zorder=2)
        ax.plot(times, good_full["flux"] / np.nanmedian(good_full["flux"]), "o", color="tab:red",
                markersize=3.5, label="FFI (aperture photometry)", zorder=3)
        agreement = compare_cadences(full, fast)
        ax.set_title(f"TESS sector {sector}: FFI against 2-minute binned, median |difference| "
                     f"{100 * agreement['median_abs_relative_difference']:.2f}%, r = "
                     f"{agreement['correlation']:.3f} ({agreement['frames']} frames)",
                     fontsize="medium")
        ax.set_ylabel("relative flux")
        ax.legend(loc="lower left", fontsize="small")
    axes[-1, 0].set_xlabel("MJD (TDB)")
    fig.tight_layout()
    _save(fig, filename)
    return fig


# What each object's .plot() draws (see skyretriever.drawing).
drawing.register("lightcurve", plot_lightcurve)
drawing.register("raw_photometry", plot_raw_photometry)
drawing.register("raw_images", plot_raw_images)
drawing.register("source", plot_source)
drawing.register("detection", plot_detection)
drawing.register("histogram", plot_histogram)


# -- the transit classifier: its evaluation, and spacekit's analyzer views ---------------------
def plot_classifier_evaluation(metadata: dict[str, Any], kind: str = "roc",
                               ax: Axes | None = None,
                               filename: str | os.PathLike | None = None) -> Figure:
    """The test-set evaluation a model file records (``skyretriever train``), beside the SDE.

    ``kind`` is ``roc`` (true against false positive rate, with AUC),
    ``precision_recall`` (with AUPRC and the recall at 99% precision) or
    ``confusion`` (the model's confusion matrix at its threshold, and the SDE's
    at the transit search's).
    """
    metrics = metadata.get("metrics") or {}
    if kind not in ("roc", "precision_recall", "confusion"):
        raise ValueError(f"kind must be roc, precision_recall or confusion, not {kind!r}")
    if not metrics:
        raise ValueError("the model file records no metrics")
    model_name = str(metadata.get("model", "model"))
    labels = {"model": f"{model_name} score", "sde": "transit search SDE"}
    if kind == "confusion":
        fig, axes = _pyplot().subplots(1, 2, figsize=(9.0, 4.0), layout="constrained")
        for axis, key in zip(axes, ("model", "sde")):
            matrix = np.array(metrics[key]["confusion"])
            axis.imshow(matrix, cmap="Blues")
            for (row, column), count in np.ndenumerate(matrix):
                axis.text(column, row, str(count), ha="center", va="center",
                          color="white" if count > matrix.max() / 2 else "black")
            axis.set_xticks([0, 1], ["not transit", "transit"])
            axis.set_yticks([0, 1], ["not transit", "transit"])
            axis.set_xlabel("predicted")
            axis.set_ylabel("true")
            axis.set_title(f"{labels[key]} >= {metrics[key]['threshold']:.3g}")
        _save(fig, filename)
        return fig
    fig, ax = _new_axes(ax, figsize=(6.0, 5.0))
    for key, style in (("model", "-"), ("sde", "--")):
        values = metrics[key]
        if kind == "roc":
            ax.plot(values["roc"]["false_positive_rate"], values["roc"]["true_positive_rate"],
                    style, label=f"{labels[key]} (AUC {values['auc']:.3f})")
        else:
            ax.plot(values["precision_recall"]["recall"],
                    values["precision_recall"]["precision"], style,
                    label=f"{labels[key]} (AUPRC {values['auprc']:.3f}, recall "
                          f"{values['recall_at_99_precision']:.2f} at 99% precision)")
    if kind == "roc":
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set_xlabel("False positive rate")
        ax.set_ylabel("True positive rate")
    else:
        ax.axhline(0.99, color="grey", linestyle=":")
        ax.set_xlabel("Recall")
        ax.set_ylabel("Precision")
    test = (metadata.get("data") or {}).get("parts", {}).get("test")
    ax.set_title(f"{model_name} on {test} held-out examples" if test else model_name)
    ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize="small")
    _save(fig, filename)
    return fig


def _relative_series(lightcurve: Lightcurve) -> tuple[np.ndarray, np.ndarray]:
    """Good epochs of a light curve: times and flux over its median, sorted by time."""
    frame = _lightcurve_frame(lightcurve)
    good = ~_qflag(frame) & np.isfinite(frame["mjd"].to_numpy(dtype=float))
    flux = frame["flux"].to_numpy(dtype=float)
    good &= np.isfinite(flux)
    times, flux = frame["mjd"].to_numpy(dtype=float)[good], flux[good]
    order = np.argsort(times, kind="stable")
    median = np.median(flux) if len(flux) else np.nan
    if not len(times) or not median > 0:
        raise ValueError(f"{_describe_lightcurve(lightcurve)} has no good epochs to plot")
    return times[order], flux[order] / median - 1.0


def _evenly_sampled(lightcurve: Lightcurve) -> tuple[np.ndarray, np.ndarray, float]:
    """Times, relative flux on an even grid at the median cadence (gaps as zeros), cadence."""
    times, flux = _relative_series(lightcurve)
    cadence = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    if not cadence > 0:
        raise ValueError(f"{_describe_lightcurve(lightcurve)} has too few epochs for a spectrum")
    count = int(np.floor((times[-1] - times[0]) / cadence + 0.5)) + 1
    even = np.zeros(count)
    even[np.clip(np.round((times - times[0]) / cadence).astype(int), 0, count - 1)] = flux
    return times, even, cadence


def plot_power_spectrum(lightcurve: Lightcurve, ax: Axes | None = None,
                        filename: str | os.PathLike | None = None) -> Figure:
    """The Fourier power spectrum of a light curve (spacekit's FFT view).

    The good epochs, relative to the median, are resampled onto an even grid
    at the median cadence (gaps filled with zeros) and transformed with
    :func:`numpy.fft.rfft`; power against frequency in cycles per day.
    """
    times, even, cadence = _evenly_sampled(lightcurve)
    power = np.abs(np.fft.rfft(even)) ** 2 / len(even)
    frequency = np.fft.rfftfreq(len(even), d=cadence)
    fig, ax = _new_axes(ax, figsize=(10.0, 4.0))
    ax.semilogy(frequency[1:], power[1:], lw=0.7)
    ax.set_xlabel("Frequency (cycles per day)")
    ax.set_ylabel("Power")
    ax.set_title(f"Fourier power spectrum: {_describe_lightcurve(lightcurve)}")
    _save(fig, filename)
    return fig


def plot_spectrogram(lightcurve: Lightcurve, segment_days: float | None = None,
                     ax: Axes | None = None,
                     filename: str | os.PathLike | None = None) -> Figure:
    """The flux spectrogram over time (spacekit's ``make_specgram``): power per frequency and time.

    The light curve is resampled at its median cadence (gaps as zeros) and cut
    into overlapping segments of ``segment_days`` (default: a tenth of the span,
    at least 64 epochs), each transformed (matplotlib's ``specgram``).
    """
    times, even, cadence = _evenly_sampled(lightcurve)
    if len(even) < 64:
        raise ValueError(f"{_describe_lightcurve(lightcurve)} spans {len(even)} cadences; a "
                         "spectrogram needs at least 64")
    length = int(round((segment_days or (times[-1] - times[0]) / 10) / cadence))
    length = max(64, min(length, len(even)))
    fig, ax = _new_axes(ax, figsize=(10.0, 4.0))
    _, _, _, image = ax.specgram(even, NFFT=length, Fs=1.0 / cadence, noverlap=length // 2,
                                 xextent=(times[0], times[-1]), cmap="viridis")
    fig.colorbar(image, ax=ax, label="Power (dB)")
    ax.set_xlabel(_time_label([lightcurve.observatory]))
    ax.set_ylabel("Frequency (cycles per day)")
    ax.set_title(f"Spectrogram: {_describe_lightcurve(lightcurve)}")
    _save(fig, filename)
    return fig


SPECTRAL_KINDS = {"spectrogram": plot_spectrogram, "power_spectrum": plot_power_spectrum}


def plot_source_spectra(source: Source, kind: str = "power_spectrum", session: Any = None,
                        filename: str | os.PathLike | None = None, most: int = 4) -> Figure:
    """The power spectrum or spectrogram of each processed light curve of a source, stacked.

    One panel per light curve (in survey, filter and time order), at most
    ``most`` of them; light curves too short for the plot are left out.

    Raises
    ------
    ValueError
        If ``kind`` is neither ``power_spectrum`` nor ``spectrogram``, or no
        light curve of the source can be drawn so.

    Examples
    --------
    >>> with Session() as session:                                      # doctest: +SKIP
    ...     source = session.scalars(sa.select(Source).where(Source.name == "star_7")).one()
    ...     fig = plot_source_spectra(source, "spectrogram", filename="star_7_spectra.png")
    """
    if kind not in SPECTRAL_KINDS:
        raise ValueError(f"no spectral plot {kind!r}: use {' or '.join(SPECTRAL_KINDS)}")
    lightcurves = sorted(_source_lightcurves(source, session),
                         key=lambda lc: (_group_key(lc), lc.time_start or 0.0))
    drawable, reasons = [], []
    for lightcurve in lightcurves:
        try:
            cadences = len(_evenly_sampled(lightcurve)[1])
        except ValueError as error:
            reasons.append(str(error))
            continue
        if kind == "spectrogram" and cadences < 64:
            reasons.append(f"{_describe_lightcurve(lightcurve)}: fewer than 64 cadences")
            continue
        drawable.append(lightcurve)
    if not drawable:
        raise ValueError(f"source {source.name!r} has no light curve to draw a "
                         f"{kind.replace('_', ' ')} of"
                         + (f" ({'; '.join(reasons[:3])})" if reasons else ""))
    drawable = drawable[:most]
    fig, axes = _pyplot().subplots(len(drawable), 1, figsize=(10.0, 3.2 * len(drawable) + 0.6),
                                   layout="constrained", squeeze=False)
    try:
        for ax, lightcurve in zip(axes[:, 0], drawable):
            SPECTRAL_KINDS[kind](lightcurve, ax=ax)
        fig.suptitle(f"{source.name}: {kind.replace('_', ' ')} of {len(drawable)} of "
                     f"{len(lightcurves)} light curves")
    except BaseException:
        _pyplot().close(fig)
        raise
    _save(fig, filename)
    return fig
