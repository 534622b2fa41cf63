"""Source: one catalog row as seen by one project and configuration."""

from __future__ import annotations

import datetime as dt
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from skyretriever import drawing
from skyretriever.database import SmartSession
from skyretriever.healpix import angular_distance, cone_ranges
from skyretriever.models.base import Base, utcnow
from skyretriever.models.display import describe_columns, html_table, loaded, rounded, shown

if TYPE_CHECKING:
    from skyretriever.models.datasets import Lightcurve, RawPhotometry
    from skyretriever.models.detection import Detection
    from skyretriever.models.properties import Properties

__all__ = ["SOURCE_STATES", "Source"]

SOURCE_STATES = ("new", "done", "failed")
#: Ids per query when a cone search loads the rows inside the cone.
_IDS_PER_QUERY = 5000


class Source(Base):
    """A star from the catalog, unique per (name, project, cfg_hash).

    Raw data is shared by every project and is linked by the source name and
    observatory (``raw_photometry``); everything a project makes from it
    (light curves, properties, detections) hangs off this row by foreign key
    and is deleted with it.

    In a notebook a source shows itself as a table; ``source.to_lightkurve()``
    gives its light curves as a ``lightkurve.LightCurveCollection``.

    Examples
    --------
    >>> import sqlalchemy as sa
    >>> from skyretriever.database import Session
    >>> with Session() as session:                                  # doctest: +SKIP
    ...     done = session.scalars(sa.select(Source).where(Source.status == "done")).all()
    >>> Source(id=3, name="DEMO-0042", ra=150.1234, dec=2.2345, mag=15.2, status="done")
    <Source 3 'DEMO-0042' RA 150.12340 Dec +2.23450 mag 15.20 done>
    """

    __tablename__ = "sources"
    __table_args__ = (
        sa.UniqueConstraint("name", "project", "cfg_hash"),
        sa.Index(None, "project", "cfg_hash", "status"),
        sa.CheckConstraint("status IN ('new', 'done', 'failed')", name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, doc="Database id of this source row.")
    name: Mapped[str] = mapped_column(doc="Name of the source as in the catalog (not sanitised).")
    project: Mapped[str] = mapped_column(doc="Name of the project that made this row.")
    cfg_hash: Mapped[str] = mapped_column(
        sa.String(64),
        doc="SHA-256 of the project's config.yaml; empty when version control is off.",
    )
    cat_index: Mapped[int | None] = mapped_column(doc="Row number of the source in the catalog.")
    ra: Mapped[float] = mapped_column(doc="Right ascension (ICRS, degrees) from the catalog.")
    dec: Mapped[float] = mapped_column(doc="Declination (ICRS, degrees) from the catalog.")
    mag: Mapped[float | None] = mapped_column(doc="Catalog magnitude.")
    mag_err: Mapped[float | None] = mapped_column(doc="Uncertainty of the catalog magnitude.")
    mag_filter: Mapped[str | None] = mapped_column(doc="Band of the catalog magnitude.")
    pmra: Mapped[float | None] = mapped_column(doc="Proper motion in RA * cos(Dec) (mas/yr).")
    pmdec: Mapped[float | None] = mapped_column(doc="Proper motion in Dec (mas/yr).")
    tic_id: Mapped[int | None] = mapped_column(sa.BigInteger, doc="TESS Input Catalog id.")
    epic_id: Mapped[int | None] = mapped_column(sa.BigInteger, doc="K2 EPIC id.")
    kic_id: Mapped[int | None] = mapped_column(sa.BigInteger, doc="Kepler Input Catalog id.")
    gaia_id: Mapped[int | None] = mapped_column(sa.BigInteger, doc="Gaia DR3 source_id.")
    ztf_oid: Mapped[int | None] = mapped_column(sa.BigInteger, doc="ZTF object id.")
    frame: Mapped[str] = mapped_column(
        sa.String(20), default="icrs", server_default=sa.text("'icrs'"),
        doc="Frame of the target: 'icrs' (a star at ra, dec) or 'helioprojective' (a solar "
            "event at hpc_x, hpc_y; its ra, dec are where it was on the sky seen from Earth).",
    )
    hpc_x: Mapped[float | None] = mapped_column(
        doc="Helioprojective x of a solar event (arcsec, seen from Earth).")
    hpc_y: Mapped[float | None] = mapped_column(
        doc="Helioprojective y of a solar event (arcsec, seen from Earth).")
    start_time: Mapped[dt.datetime | None] = mapped_column(
        doc="Start of the target's time window (UTC), for events.")
    end_time: Mapped[dt.datetime | None] = mapped_column(
        doc="End of the target's time window (UTC), for events.")
    cat_extra: Mapped[dict[str, Any] | None] = mapped_column(
        doc="Other catalog columns of this row, kept as they were."
    )
    status: Mapped[str] = mapped_column(
        sa.String(10),
        default="new",
        doc="'new' (not finished), 'done' (every step finished) or 'failed' (see error).",
    )
    error: Mapped[str | None] = mapped_column(
        doc="Why the last run failed on this source (step, observatory and reason)."
    )
    healpix: Mapped[int | None] = mapped_column(
        sa.BigInteger,
        index=True,
        doc="Nested HEALPix pixel (order 16, about 3 arcsec) of the position: the cone-search index.",
    )
    counted: Mapped[bool] = mapped_column(
        default=False,
        doc="True once the source's counts are in the project's histograms (added only once).",
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, doc="When the row was made (UTC).")
    modified_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, doc="When the row last changed (UTC)."
    )

    # Distance (degrees) from the centre of the cone search that returned this source
    # (a plain attribute, not a column).
    distance = None

    @classmethod
    def cone_search_query(cls, ra: float, dec: float, radius: float, *columns: Any) -> sa.Select:
        """A query for the candidates of a cone (degrees): sources in the HEALPix pixels covering it.

        The candidates include a margin beyond ``radius``; :meth:`cone_search`
        keeps the ones truly inside. ``columns`` selects columns instead of
        whole rows. Add conditions to the query as you like.

        Only targets in the ICRS frame (stars) are searched; solar events are not.

        Raises
        ------
        ValueError
            If the position or radius is not a finite number on the sky.
        """
        ranges = cone_ranges(ra, dec, radius)
        return sa.select(*(columns or (cls,))).where(
            sa.or_(*(cls.healpix.between(lo, hi) for lo, hi in ranges)))

    @classmethod
    def cone_search(cls, ra: float, dec: float, radius: float, session: Any = None,
                    project: str | None = None, cfg_hash: str | None = None) -> list[Source]:
        """Sources within ``radius`` degrees of (``ra``, ``dec``), nearest first.

        Each returned source has ``distance`` (degrees) set. ``project`` and
        ``cfg_hash`` narrow the search to one project and configuration. Only
        the positions of the candidates are read at first; whole rows are
        loaded for the sources inside the cone.

        Examples
        --------
        >>> from skyretriever.database import Session
        >>> with Session() as session:                                   # doctest: +SKIP
        ...     near = Source.cone_search(150.1, 2.2, 10 / 3600, session=session)
        ...     [(s.name, round(s.distance * 3600, 2)) for s in near]
        """
        query = cls.cone_search_query(ra, dec, radius, cls.id, cls.ra, cls.dec).where(
            cls.frame == "icrs")
        scope = []
        if project is not None:
            scope.append(cls.project == project)
        if cfg_hash is not None:
            scope.append(cls.cfg_hash == cfg_hash)
        query = query.where(*scope)
        with SmartSession(session) as session:
            if project is not None and session.execute(sa.select(cls.id).where(
                    *scope, cls.frame != "icrs").limit(1)).first() is not None:
                raise ValueError(
                    f"cone search is for stars (ICRS positions): project {project!r} has solar "
                    "events (helioprojective frame) as sources; select them by time "
                    "(start_time, end_time) or helioprojective position (hpc_x, hpc_y)")
            candidates = session.execute(query).all()
            if not candidates:
                return []
            distances = angular_distance(ra, dec, np.array([c.ra for c in candidates]),
                                         np.array([c.dec for c in candidates]))
            inside = {c.id: float(d) for c, d in zip(candidates, distances) if d <= radius}
            ids = list(inside)
            found = []
            for first in range(0, len(ids), _IDS_PER_QUERY):
                found.extend(session.scalars(
                    sa.select(cls).where(cls.id.in_(ids[first:first + _IDS_PER_QUERY]))))
        for source in found:
            source.distance = inside[source.id]
        return sorted(found, key=lambda source: (source.distance, source.id))

    # source_raw_data.raw_id points into the raw table of the link's observatory's data
    # type (no foreign key): the photometry links are those whose raw_photometry row has
    # the link's observatory.
    raw_photometry: Mapped[list[RawPhotometry]] = relationship(
        secondary="source_raw_data",
        primaryjoin="Source.id == SourceRawData.source_id",
        secondaryjoin="and_(foreign(SourceRawData.raw_id) == RawPhotometry.id, "
                      "SourceRawData.observatory == RawPhotometry.observatory)",
        viewonly=True,
        doc="Raw data this source uses, one per observatory (shared by every project that "
            "asks for the same target with the same download parameters).",
    )
    lightcurves: Mapped[list[Lightcurve]] = relationship(
        back_populates="source",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="(Lightcurve.observatory, Lightcurve.series_number)",
        doc="Reduced light curves of this source in this project and configuration.",
    )
    properties: Mapped[Properties | None] = relationship(
        back_populates="source",
        cascade="all, delete-orphan",
        passive_deletes=True,
        uselist=False,
        doc="Summary statistics of the analysis of this source.",
    )
    detections: Mapped[list[Detection]] = relationship(
        back_populates="source",
        cascade="all, delete-orphan",
        passive_deletes=True,
        doc="Events found in the light curves of this source (real and simulated).",
    )

    def to_lightkurve(self, observatory: str | None = None):
        """This source's light curves as a ``lightkurve.LightCurveCollection``.

        One ``LightCurve`` per light curve of :attr:`lightcurves` (ordered by
        observatory and series), made by :meth:`Lightcurve.to_lightkurve`;
        ``observatory`` (``"tess"``...) keeps that observatory's only. Needs the
        source in a session (or its light curves loaded).

        Examples
        --------
        >>> collection = source.to_lightkurve("tess")                   # doctest: +SKIP
        >>> collection.stitch().plot()                                  # doctest: +SKIP
        """
        with warnings.catch_warnings():
            # lightkurve warns on import that an optional part (tpfmodel) is missing
            warnings.simplefilter("ignore", UserWarning)
            import lightkurve
        wanted = None if observatory is None else observatory.lower()
        return lightkurve.LightCurveCollection(
            [lc.to_lightkurve() for lc in self.lightcurves
             if wanted is None or lc.observatory == wanted])

    def __repr__(self) -> str:
        parts = ["Source", self.id, repr(self.name),
                 f"RA {rounded(self.ra, '.5f')}" if self.ra is not None else None,
                 f"Dec {rounded(self.dec, '+.5f')}" if self.dec is not None else None,
                 f"mag {rounded(self.mag, '.2f')}" if rounded(self.mag, ".2f") else None,
                 self.status]
        return "<" + " ".join(str(part) for part in parts if part is not None) + ">"

    def _repr_html_(self) -> str:
        lightcurves, detections = loaded(self, "lightcurves"), loaded(self, "detections")
        properties = loaded(self, "properties")
        magnitude = rounded(self.mag, ".3f", "mag")
        if magnitude is not None:
            error = rounded(self.mag_err, ".3f")
            magnitude += (f" \u00b1 {error}" if error else "") + (
                f" ({self.mag_filter})" if self.mag_filter else "")
        cross_ids = ", ".join(f"{name} {getattr(self, name)}" for name in
                              ("tic_id", "kic_id", "epic_id", "gaia_id", "ztf_oid")
                              if getattr(self, name) is not None)
        return html_table(f"Source {self.name}", [
            ("id", self.id),
            ("project", self.project),
            ("RA, Dec (ICRS)", f"{rounded(self.ra, '.6f', 'deg')}, {rounded(self.dec, '+.6f', 'deg')}"),
            ("magnitude", magnitude),
            ("proper motion", None if self.pmra is None or self.pmdec is None else
             f"{rounded(self.pmra, '.2f')}, {rounded(self.pmdec, '.2f')} mas/yr"),
            ("cross-ids", cross_ids or None),
            ("status", self.status),
            ("error", self.error),
            ("light curves", None if lightcurves is None else len(lightcurves)),
            ("detections", None if detections is None else len(detections)),
            ("best S/N", None if properties is None else rounded(properties.best_snr, ".1f")),
            ("distance", rounded(None if self.distance is None else self.distance * 3600,
                                 ".2f", "arcsec")),
        ])

    def plot(self, **kwargs: Any):
        """Plot every processed light curve of this source on one time axis, in magnitudes.

        Keyword arguments (``session``, ``ax``, ``filename``) go to
        :func:`skyretriever.plots.plot_source`; returns the Figure.

        Examples
        --------
        >>> fig = source.plot(filename="source.png")                    # doctest: +SKIP
        """
        return drawing.draw("source", self, **kwargs)


# How the report, `skyretriever show` and the reprs label these columns (see models.display).
describe_columns(Source, {
    "cat_index": shown("catalog row"),
    "ra": shown("RA", "deg", ".5f"),
    "dec": shown("Dec", "deg", ".5f"),
    "mag": shown("magnitude", "mag", ".3f"),
    "mag_err": shown("magnitude error", "mag", ".3f"),
    "mag_filter": shown("magnitude band"),
    "pmra": shown("proper motion in RA", "mas/yr", ".3f"),
    "pmdec": shown("proper motion in Dec", "mas/yr", ".3f"),
    "tic_id": shown("TIC"),
    "epic_id": shown("EPIC"),
    "kic_id": shown("KIC"),
    "gaia_id": shown("Gaia DR3"),
    "ztf_oid": shown("ZTF object id"),
    "cat_extra": shown("other catalog columns"),
    "status": shown("state"),
    "healpix": shown("HEALPix (order 16)"),
    "created_at": shown("created"),
    "modified_at": shown("modified"),
})
