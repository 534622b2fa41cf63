"""Detection: one event a finder found in a light curve (real or injected)."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from skyretriever import drawing
from skyretriever.models.base import Base, utcnow
from skyretriever.models.display import describe_columns, html_table, loaded, rounded, shown

if TYPE_CHECKING:
    from skyretriever.models.datasets import Lightcurve
    from skyretriever.models.source import Source

__all__ = ["Detection"]


class Detection(Base):
    """An event found by a finder, with its score, time window and peak.

    Simulated detections (``is_simulated``) come from injected events and
    carry the injected parameters in ``injected``.

    Examples
    --------
    >>> import sqlalchemy as sa
    >>> query = sa.select(Detection).where(Detection.snr > 10, ~Detection.is_simulated)
    >>> hot_jupiters = sa.select(Detection).where(Detection.period < 5, Detection.depth > 0.005)
    >>> Detection(id=51, observatory="tess", finder="transit", snr=27.399736, period=3.2109)
    <Detection 51 tess transit snr=27.4 period=3.21 d>
    >>> Detection(id=7, observatory="demo", finder="peak", snr=12.34, time_peak=58123.4567, sign=1)
    <Detection 7 demo peak snr=12.3 brightening at MJD 58123.46>
    """

    __tablename__ = "detections"
    __table_args__ = (
        sa.Index(None, "project", "cfg_hash", "is_simulated", "snr"),
        sa.Index(None, "source_id"),
        sa.Index(None, "project", "cfg_hash", "period"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, doc="Database id of this detection.")
    source_id: Mapped[int] = mapped_column(
        sa.ForeignKey("sources.id", ondelete="CASCADE"), doc="The source it was found in."
    )
    lightcurve_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("lightcurves.id", ondelete="CASCADE"),
        index=True,
        doc="The light curve it was found in (none for events spanning several).",
    )
    project: Mapped[str] = mapped_column(doc="Project that made this row.")
    cfg_hash: Mapped[str] = mapped_column(sa.String(64), doc="Config hash of the project.")
    finder: Mapped[str] = mapped_column(doc="Name of the finder that reported the event.")
    observatory: Mapped[str | None] = mapped_column(sa.String(20), doc="Observatory of the data.")
    filter: Mapped[str | None] = mapped_column(doc="Filter of the light curve.")
    is_simulated: Mapped[bool] = mapped_column(
        default=False, doc="True for events found in data with injected signals."
    )
    snr: Mapped[float] = mapped_column(doc="Signal-to-noise ratio (robust) of the event.")
    score: Mapped[float] = mapped_column(doc="The finder's score (equal to snr for the peak finder).")
    time_start: Mapped[float | None] = mapped_column(doc="Start of the event window (MJD).")
    time_end: Mapped[float | None] = mapped_column(doc="End of the event window (MJD).")
    time_peak: Mapped[float | None] = mapped_column(doc="Time of the most significant epoch (MJD).")
    peak_mag: Mapped[float | None] = mapped_column(doc="Magnitude at the peak epoch.")
    peak_flux: Mapped[float | None] = mapped_column(doc="Flux at the peak epoch.")
    num_points: Mapped[int] = mapped_column(doc="Epochs above threshold in the event.")
    sign: Mapped[int] = mapped_column(doc="+1 for brightening (flare), -1 for dimming (dip).")
    period: Mapped[float | None] = mapped_column(doc="Period of a periodic event (transit), days.")
    epoch: Mapped[float | None] = mapped_column(
        doc="Mid-time of the first transit in the data (MJD), for periodic events."
    )
    duration: Mapped[float | None] = mapped_column(doc="Duration of one transit (days).")
    depth: Mapped[float | None] = mapped_column(doc="Transit depth (fraction of the flux).")
    sde: Mapped[float | None] = mapped_column(
        doc="Signal detection efficiency: the height of the event's periodogram peak in "
        "standard deviations of the periodogram."
    )
    ml_score: Mapped[float | None] = mapped_column(
        doc="Classifier score (0 to 1) of a transit detection: the probability that it is a "
        "transit (None when the classifier is off or could not score it)."
    )
    injected: Mapped[dict[str, Any] | None] = mapped_column(
        doc="Parameters of the injected event, for simulated detections."
    )
    extra: Mapped[dict[str, Any] | None] = mapped_column(
        doc="Further values the finder reports (period, depth, ...)."
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, doc="When the row was made (UTC).")

    source: Mapped[Source] = relationship(back_populates="detections", doc="The source.")
    lightcurve: Mapped[Lightcurve | None] = relationship(doc="The light curve of the event.")

    def __repr__(self) -> str:
        parts: list[Any] = ["Detection", self.id, self.observatory, self.finder]
        if self.is_simulated:
            parts.append("simulated")
        if rounded(self.snr, ".1f") is not None:
            parts.append(f"snr={rounded(self.snr, '.1f')}")
        if rounded(self.period, ".3g") is not None:
            parts.append(f"period={rounded(self.period, '.3g', 'd')}")
        elif rounded(self.time_peak, ".2f") is not None:
            parts.append(f"{_SIGNS.get(self.sign, 'peak')} at MJD {rounded(self.time_peak, '.2f')}")
        return "<" + " ".join(str(part) for part in parts if part is not None) + ">"

    def _repr_html_(self) -> str:
        source = loaded(self, "source")
        window = None
        if self.time_start is not None and self.time_end is not None:
            window = f"MJD {rounded(self.time_start, '.4f')} to {rounded(self.time_end, '.4f')}"
        duration = rounded(self.duration, ".4g", "d")
        if duration is not None:
            duration += f" ({rounded(self.duration * 24, '.3g', 'h')})"
        return html_table(f"Detection {self.id if self.id is not None else ''}".strip(), [
            ("source", source.name if source is not None else None),
            ("finder", self.finder),
            ("observatory", self.observatory),
            ("filter", self.filter),
            ("simulated", "yes (injected event)" if self.is_simulated else None),
            ("S/N", rounded(self.snr, ".2f")),
            ("score", rounded(self.score, ".2f") if self.score != self.snr else None),
            ("kind", _SIGNS.get(self.sign)),
            ("window", window),
            ("peak", None if self.time_peak is None else f"MJD {rounded(self.time_peak, '.4f')}"),
            ("peak magnitude", rounded(self.peak_mag, ".3f", "mag")),
            ("peak flux", rounded(self.peak_flux, ".4g")),
            ("points", self.num_points),
            ("period", rounded(self.period, ".6g", "d")),
            ("epoch", None if self.epoch is None else f"MJD {rounded(self.epoch, '.5f')}"),
            ("duration", duration),
            ("depth", None if self.depth is None else f"{rounded(self.depth * 1e6, '.0f')} ppm"),
            ("SDE", rounded(self.sde, ".2f")),
            ("injected", _json(self.injected)),
            ("extra", _json(self.extra)),
        ])

    def plot(self, **kwargs: Any):
        """Plot the event on its light curve (a transit candidate folded on its period).

        Keyword arguments (``session``, ``filename``) go to
        :func:`skyretriever.plots.plot_detection`; returns the Figure.

        Examples
        --------
        >>> fig = detection.plot(filename="detection.png")              # doctest: +SKIP
        """
        return drawing.draw("detection", self, **kwargs)


_SIGNS = {1: "brightening", -1: "dimming"}


def _json(value: dict[str, Any] | None) -> str | None:
    return json.dumps(value, sort_keys=True, default=str) if value else None


# How the report, `skyretriever show` and the reprs label these columns (see models.display).
describe_columns(Detection, {
    "is_simulated": shown("in injected data"),
    "snr": shown("S/N", None, ".2f"),
    "score": shown("score", None, ".2f"),
    "time_start": shown("start", "MJD", ".4f"),
    "time_end": shown("end", "MJD", ".4f"),
    "time_peak": shown("peak", "MJD", ".4f"),
    "peak_mag": shown("peak magnitude", "mag", ".3f"),
    "num_points": shown("epochs"),
    "period": shown("period", "d", ".6g"),
    "epoch": shown("epoch", "MJD", ".5f"),
    "duration": shown("duration", "d", ".4g"),
    "depth": shown("depth", None, ".3g"),
    "sde": shown("SDE", None, ".1f"),
})
