"""Properties: the summary of one source's analysis in one project and configuration."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from skyretriever.models.base import Base, utcnow
from skyretriever.models.display import describe_columns, html_table, loaded, rounded, shown

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
    >>> Properties(source_id=3, num_lightcurves=4, num_points=1234, best_snr=12.345,
    ...            ls_period=3.21094, transit_period=None)
    <Properties of source 3: 4 light curves, 1,234 points, best snr=12.3, LS period=3.211 d>
    """

    __tablename__ = "properties"
    __table_args__ = (
        sa.Index(None, "project", "cfg_hash", "best_snr"),
        sa.Index(None, "project", "cfg_hash", "transit_snr"),
        sa.Index(None, "project", "cfg_hash", "ml_score"),
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
    ml_score: Mapped[float | None] = mapped_column(
        doc="Classifier score (0 to 1) of the best transit candidate: the probability that it "
        "is a transit (None when the classifier is off or could not score it; the reason is "
        "in extra['ml_not_scored'])."
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

    def __repr__(self) -> str:
        parts = [f"{self.num_lightcurves} light curves" if self.num_lightcurves is not None
                 else None,
                 f"{self.num_points:,} points" if self.num_points is not None else None]
        for label, value, spec, unit in (("best snr", self.best_snr, ".1f", None),
                                         ("LS period", self.ls_period, ".4g", "d"),
                                         ("transit period", self.transit_period, ".4g", "d"),
                                         ("transit snr", self.transit_snr, ".1f", None)):
            text = rounded(value, spec, unit)
            if text is not None:
                parts.append(f"{label}={text}")
        if self.num_detections:
            plural = "" if self.num_detections == 1 else "s"
            parts.append(f"{self.num_detections} detection{plural}")
        shown = ", ".join(part for part in parts if part is not None)
        return f"<Properties of source {self.source_id}: {shown}>"

    def _repr_html_(self) -> str:
        source = loaded(self, "source")
        title = f"Properties of {source.name if source is not None else f'source {self.source_id}'}"
        return html_table(title, [
            ("light curves", self.num_lightcurves),
            ("points (good)", None if self.num_points is None else
             f"{self.num_points:,} ({self.num_good_points or 0:,})"),
            ("time span", rounded(self.time_span, ".1f", "d")),
            ("mean magnitude", rounded(self.mag_mean, ".3f", "mag")),
            ("median magnitude", rounded(self.mag_median, ".3f", "mag")),
            ("magnitude rms", rounded(self.mag_rms, ".3f", "mag")),
            ("flux scatter", rounded(self.flux_rms_ppm, ".0f", "ppm")),
            ("best S/N", rounded(self.best_snr, ".1f")),
            ("Lomb-Scargle period", rounded(self.ls_period, ".5g", "d")),
            ("Lomb-Scargle power", rounded(self.ls_power, ".3f")),
            ("false-alarm probability", rounded(self.ls_false_alarm, ".2g")),
            ("transit period", rounded(self.transit_period, ".5g", "d")),
            ("transit epoch", None if self.transit_epoch is None else
             f"MJD {rounded(self.transit_epoch, '.4f')}"),
            ("transit duration", rounded(None if self.transit_duration is None else
                                         self.transit_duration * 24, ".3g", "h")),
            ("transit depth", None if self.transit_depth is None else
             f"{rounded(self.transit_depth * 1e6, '.0f')} ppm"),
            ("transit S/N", rounded(self.transit_snr, ".1f")),
            ("transit SDE", rounded(self.transit_sde, ".1f")),
            ("detections", self.num_detections),
            ("injected (recovered)", None if not self.num_injected else
             f"{self.num_injected} ({self.num_recovered})"),
            ("quality flags", ", ".join(f"{name} {count}" for name, count in
                                        sorted((self.quality_counts or {}).items())) or None),
        ])


# How the report, `skyretriever show` and the reprs label these columns, their units and
# number formats (Column.info; see models.display).
describe_columns(Properties, {
    "has_data": shown("has data"),
    "num_lightcurves": shown("light curves"),
    "num_points": shown("epochs"),
    "num_good_points": shown("good epochs"),
    "time_span": shown("time span", "d", ".1f"),
    "mag_mean": shown("mean magnitude", "mag", ".3f"),
    "mag_median": shown("median magnitude", "mag", ".3f"),
    "mag_rms": shown("magnitude rms", "mag", ".4f"),
    "flux_rms_ppm": shown("flux scatter", "ppm", ".0f"),
    "best_snr": shown("best S/N", None, ".2f"),
    "ls_period": shown("Lomb-Scargle period", "d", ".6g"),
    "ls_power": shown("Lomb-Scargle power", None, ".3f"),
    "ls_false_alarm": shown("Lomb-Scargle false-alarm probability", None, ".2g"),
    "transit_period": shown("transit period", "d", ".6g"),
    "transit_epoch": shown("transit epoch", "MJD", ".5f"),
    "transit_duration": shown("transit duration", "d", ".4g"),
    "transit_depth": shown("transit depth (fraction of the flux)", None, ".3g"),
    "transit_snr": shown("transit S/N", None, ".2f"),
    "transit_sde": shown("transit SDE", None, ".1f"),
    "num_detections": shown("detections"),
    "num_injected": shown("injected events"),
    "num_recovered": shown("recovered injections"),
    "quality_counts": shown("epochs flagged, by quality check"),
    "extra": shown("other properties"),
    "created_at": shown("analysed"),
})
