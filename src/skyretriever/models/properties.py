"""Properties: the summary of one source's analysis in one project and configuration."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from skyretriever.models.base import Base, utcnow

if TYPE_CHECKING:
    from skyretriever.models.source import Source

__all__ = ["Properties"]


class Properties(Base):
    """Summary statistics of one source after analysis; one row per source.

    The columns people filter on are real columns; anything an extension adds
    goes in ``extra``.

    Examples
    --------
    >>> import sqlalchemy as sa
    >>> query = sa.select(Properties).where(Properties.best_snr > 8)
    >>> planets = sa.select(Properties).where(Properties.transit_snr > 10,
    ...                                       Properties.transit_period.between(1, 5))
    """

    __tablename__ = "properties"
    __table_args__ = (
        sa.Index(None, "project", "cfg_hash", "best_snr"),
        sa.Index(None, "project", "cfg_hash", "transit_snr"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, doc="Database id of this row.")
    source_id: Mapped[int] = mapped_column(
        sa.ForeignKey("sources.id", ondelete="CASCADE"),
        unique=True,
        doc="The source these properties describe (one row per source).",
    )
    project: Mapped[str] = mapped_column(doc="Project that made this row.")
    cfg_hash: Mapped[str] = mapped_column(sa.String(64), doc="Config hash of the project.")
    has_data: Mapped[bool] = mapped_column(doc="True when any observatory had data for the source.")
    num_lightcurves: Mapped[int] = mapped_column(doc="Number of light curves analysed.")
    num_points: Mapped[int] = mapped_column(doc="Number of epochs over all light curves.")
    num_good_points: Mapped[int] = mapped_column(doc="Epochs not flagged by the quality checks.")
    time_span: Mapped[float | None] = mapped_column(doc="Last minus first epoch (days).")
    mag_mean: Mapped[float | None] = mapped_column(doc="Mean magnitude of the good epochs.")
    mag_median: Mapped[float | None] = mapped_column(doc="Median magnitude of the good epochs.")
    mag_rms: Mapped[float | None] = mapped_column(
        doc="Standard deviation of the good magnitudes, about each light curve's own mean."
    )
    flux_rms_ppm: Mapped[float | None] = mapped_column(
        doc="Robust scatter of the normalised flux (1.4826 MAD), in parts per million."
    )
    best_snr: Mapped[float | None] = mapped_column(
        doc="Largest absolute robust S/N of any good epoch (the finder's score)."
    )
    ls_period: Mapped[float | None] = mapped_column(
        doc="Period of the highest Lomb-Scargle periodogram peak (days)."
    )
    ls_power: Mapped[float | None] = mapped_column(
        doc="Normalised Lomb-Scargle power of that peak (0 to 1)."
    )
    ls_false_alarm: Mapped[float | None] = mapped_column(
        doc="False-alarm probability of that peak (Baluev's bound)."
    )
    transit_period: Mapped[float | None] = mapped_column(
        doc="Period of the best transit candidate, detected or not (days)."
    )
    transit_epoch: Mapped[float | None] = mapped_column(
        doc="Mid-time of the best transit candidate's first transit in the data (MJD)."
    )
    transit_duration: Mapped[float | None] = mapped_column(
        doc="Duration of the best transit candidate (days)."
    )
    transit_depth: Mapped[float | None] = mapped_column(
        doc="Depth of the best transit candidate (fraction of the flux)."
    )
    transit_snr: Mapped[float | None] = mapped_column(
        doc="S/N of the best transit candidate (error allowing for correlated noise)."
    )
    transit_sde: Mapped[float | None] = mapped_column(
        doc="Signal detection efficiency of the best transit candidate's periodogram peak."
    )
    num_detections: Mapped[int] = mapped_column(doc="Number of real (not simulated) detections.")
    num_injected: Mapped[int] = mapped_column(
        default=0, server_default="0", doc="Number of events injected into the source's data."
    )
    num_recovered: Mapped[int] = mapped_column(
        default=0, server_default="0", doc="Number of injected events a finder recovered."
    )
    quality_counts: Mapped[dict[str, Any] | None] = mapped_column(
        doc="Epochs flagged by each quality check, by check name."
    )
    extra: Mapped[dict[str, Any] | None] = mapped_column(
        doc="Further properties an analysis or extension chose to keep."
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, doc="When the row was made (UTC).")

    source: Mapped[Source] = relationship(back_populates="properties", doc="The source.")
