"""Detection: one event a finder found in a light curve (real or injected)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from skyretriever import drawing
from skyretriever.models.base import Base, utcnow

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
    injected: Mapped[dict[str, Any] | None] = mapped_column(
        doc="Parameters of the injected event, for simulated detections."
    )
    extra: Mapped[dict[str, Any] | None] = mapped_column(
        doc="Further values the finder reports (period, depth, ...)."
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, doc="When the row was made (UTC).")

    source: Mapped[Source] = relationship(back_populates="detections", doc="The source.")
    lightcurve: Mapped[Lightcurve | None] = relationship(doc="The light curve of the event.")

    def plot(self, **kwargs: Any):
        """Plot the event on its light curve (a transit candidate folded on its period).

        Keyword arguments (``session``, ``filename``) go to
        :func:`skyretriever.plots.plot_detection`; returns the Figure.

        Examples
        --------
        >>> fig = detection.plot(filename="detection.png")              # doctest: +SKIP
        """
        return drawing.draw("detection", self, **kwargs)
