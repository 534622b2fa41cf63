"""RawImages: the image data type (cutouts of full-frame images, one file per source).

One row and one HDF5 file per (source name, observatory, download parameters,
target), like raw photometry (:class:`~skyretriever.models.raw.RawData`). The
file holds one group per sector (``s0001``...; ZTF: one per science image, ``s0000``
in time order, see :mod:`skyretriever.images.ibe`), each a :class:`Cutout`: the
cutout cube (``flux``, ``flux_err``: frames x rows x columns, electron/s),
``time`` (BTJD, mid-exposure), ``timecorr``, ``cadenceno``, ``quality``, the
cutout's WCS and the cube's primary header. ``data`` is loaded lazily (after the
file's size and SHA-256 are checked) as ``{sector: Cutout}``;
:meth:`RawImages.to_lightkurve` gives a lightkurve ``TessTargetPixelFile`` and
:meth:`RawImages.plot` draws a frame with the aperture.

Examples
--------
>>> import numpy as np
>>> cube = np.ones((3, 5, 5), np.float32)
>>> cutout = Cutout(sector=1, camera=1, ccd=3, time=np.arange(3.0) + 1325.0,
...                 timecorr=np.zeros(3), cadenceno=np.arange(3), flux=cube,
...                 flux_err=cube * 0.1, quality=np.zeros(3, np.int32),
...                 wcs_header="", primary_header="", corner=(10, 20))
>>> raw = RawImages(source_name="star", observatory="tessffi", ra=10.0, dec=5.0,
...                 data={1: cutout})
>>> raw.compute_summaries(); raw.num_points, raw.sectors, raw.cutout_size
(3, [1], 5)
>>> [(row.group, row.sector, row.num_frames) for row in raw.sector_rows]
[('s0001', 1, 3)]

Each group of the file is also a row of ``raw_image_sectors``
(:class:`RawImageSector`: sector, camera, CCD, frames, times, cutout size, group
name), made by :meth:`RawImages.compute_summaries` and written with the row, so
a query can ask which sources have a cutout of a sector without opening files.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from skyretriever import drawing, storage
from skyretriever.models.base import Base, plain_value, utcnow
from skyretriever.models.raw import RawData, register_data_type, target_key

__all__ = ["BTJD_TO_MJD", "Cutout", "FFIFile", "RawImageSector", "RawImages", "cutout_hdulist",
           "group_name"]

#: MJD = BTJD + this (BJD - 2457000 to JD - 2400000.5).
BTJD_TO_MJD = 2457000.0 - 2400000.5
_ARRAYS = ("time", "timecorr", "cadenceno", "flux", "flux_err", "quality")


@dataclass
class Cutout:
    """One sector's cutout: the pixel cube, its times and flags, and where it lies."""

    sector: int
    camera: int
    ccd: int
    #: Mid-exposure times, BTJD (BJD - 2457000, TDB).
    time: np.ndarray
    timecorr: np.ndarray
    cadenceno: np.ndarray
    #: frames x rows x columns, electron/s.
    flux: np.ndarray
    flux_err: np.ndarray
    #: The cube's DQUALITY flags of each frame.
    quality: np.ndarray
    #: The cutout's WCS as FITS header text (pixel 1,1 is the cutout's first pixel).
    wcs_header: str
    #: The cube's primary header as FITS header text.
    primary_header: str
    #: 0-based (row, column) of the cutout's first pixel in the CCD image.
    corner: tuple[int, int]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the cutout."""
        return int(self.flux.shape[1]), int(self.flux.shape[2])

    def wcs(self):
        """The cutout's WCS (astropy)."""
        from astropy.io import fits
        from astropy.wcs import WCS

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return WCS(fits.Header.fromstring(self.wcs_header))

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(getattr(self, name)) for name in _ARRAYS}

    def metadata(self) -> dict[str, Any]:
        return {"sector": self.sector, "camera": self.camera, "ccd": self.ccd,
                "wcs_header": self.wcs_header, "primary_header": self.primary_header,
                "corner": [int(v) for v in self.corner], "extra": self.extra}

    @classmethod
    def from_stored(cls, arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> Cutout:
        return cls(sector=int(metadata["sector"]), camera=int(metadata["camera"]),
                   ccd=int(metadata["ccd"]), wcs_header=metadata["wcs_header"],
                   primary_header=metadata["primary_header"],
                   corner=tuple(int(v) for v in metadata["corner"]),
                   extra=dict(metadata.get("extra") or {}),
                   **{name: arrays[name] for name in _ARRAYS})


def group_name(key: int) -> str:
    """The HDF5 group of a raw-images file holding the cutout of this key (``s0014``)."""
    return f"s{int(key):04d}"


def cutout_hdulist(cutout: Cutout, name: str = "", ra: float | None = None,
                   dec: float | None = None):
    """A cutout as a target-pixel file (astrocut's layout: PRIMARY, PIXELS, APERTURE)."""
    from astropy.io import fits

    primary = fits.PrimaryHDU(header=fits.Header.fromstring(cutout.primary_header)
                              if cutout.primary_header else None)
    header = primary.header
    header["TELESCOP"], header["INSTRUME"] = "TESS", "TESS Photometer"
    header["SECTOR"], header["CAMERA"], header["CCD"] = cutout.sector, cutout.camera, cutout.ccd
    header["OBJECT"] = name
    header["BJDREFI"], header["BJDREFF"], header["TIMEUNIT"] = 2457000, 0.0, "d"
    if ra is not None and dec is not None:
        header["RA_OBJ"], header["DEC_OBJ"] = ra, dec
    frames, rows, columns = cutout.flux.shape
    image = f"{columns * rows}E"
    dims = f"({columns},{rows})"
    table = fits.BinTableHDU.from_columns([
        fits.Column("TIME", "D", "d", array=cutout.time),
        fits.Column("TIMECORR", "E", "d", array=cutout.timecorr),
        fits.Column("CADENCENO", "J", array=cutout.cadenceno),
        fits.Column("FLUX", image, "e-/s", dim=dims, array=cutout.flux),
        fits.Column("FLUX_ERR", image, "e-/s", dim=dims, array=cutout.flux_err),
        fits.Column("FLUX_BKG", image, "e-/s", dim=dims,
                    array=np.zeros_like(cutout.flux)),
        fits.Column("FLUX_BKG_ERR", image, "e-/s", dim=dims,
                    array=np.zeros_like(cutout.flux)),
        fits.Column("QUALITY", "J", array=cutout.quality),
        fits.Column("POS_CORR1", "E", "pixel", array=np.zeros(frames, np.float32)),
        fits.Column("POS_CORR2", "E", "pixel", array=np.zeros(frames, np.float32)),
    ], name="PIXELS")
    wcs_header = cutout.wcs().to_header(relax=True)
    # The pixel columns carry the WCS too (as lightkurve reads it from TESScut files).
    for number in (4, 5, 6):
        for short, long in (("CTYP", "CTYPE"), ("CRVL", "CRVAL"), ("CRPX", "CRPIX"),
                            ("CDLT", "CDELT"), ("CUNI", "CUNIT")):
            for axis in (1, 2):
                key = f"{long}{axis}"
                if key in wcs_header:
                    table.header[f"{axis}{short}{number}"] = wcs_header[key]
    aperture = fits.ImageHDU(np.ones((rows, columns), np.int32), header=wcs_header,
                             name="APERTURE")
    aperture.header["CRVAL1P"], aperture.header["CRVAL2P"] = (cutout.corner[1] + 1,
                                                              cutout.corner[0] + 1)
    return fits.HDUList([primary, table, aperture])


@register_data_type
class RawImages(RawData, Base):
    """The image cutouts one observatory has for one target: one group per sector in one file.

    ``data`` is ``{sector: Cutout}`` (loaded lazily, checksum first); a source
    whose position falls on no image has ``is_empty=True`` and no file, so it
    is not asked for again.
    """

    data_type = "images"
    __tablename__ = "raw_images"

    id: Mapped[int] = mapped_column(primary_key=True, doc="Database id of this raw-images row.")
    num_points: Mapped[int] = mapped_column(default=0, doc="Number of frames, all sectors.")
    time_start: Mapped[float | None] = mapped_column(doc="First frame (MJD, TDB).")
    time_end: Mapped[float | None] = mapped_column(doc="Last frame (MJD, TDB).")
    sectors: Mapped[list[Any] | None] = mapped_column(doc="Sectors held in the file.")
    cutout_size: Mapped[int | None] = mapped_column(doc="Rows (and columns) of the cutouts.")
    sector_rows: Mapped[list[RawImageSector]] = relationship(
        back_populates="raw", cascade="all, delete-orphan", passive_deletes=True,
        order_by="RawImageSector.key",
        doc="One row per group of the file (a sector of TESS, an image of ZTF).")

    def __init__(self, data: dict[int, Cutout] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if data is not None:
            self._data = data

    # -- the data ------------------------------------------------------------------------
    def load(self) -> dict[int, Cutout]:
        """Read every sector's cutout (checking the file's size and SHA-256 first)."""
        if not self.filename:
            raise storage.StorageError(f"{self!r} has no file to load data from")
        groups = storage.read_arrays(self.filename, None, self.checksum, self.file_size)
        self._data = _cutouts(groups)
        self._metadata = {}
        return self._data

    @property
    def data(self) -> dict[int, Cutout]:
        """``{sector: Cutout}``, loaded from disk on first access."""
        if self._data is None:
            self.load()
        return self._data

    @data.setter
    def data(self, value: dict[int, Cutout]) -> None:
        self._data = value

    def column_values(self) -> dict[str, Any]:
        """Every column but ``id`` and ``created_at``, as plain values (for SQL, or a new row)."""
        values = {c.key: plain_value(getattr(self, c.key)) for c in self.__table__.columns
                  if c.key not in ("id", "created_at")}
        values["altdata"] = self.altdata or {}
        values["sectors"] = list(self.sectors or [])
        values["is_empty"] = bool(self.is_empty)
        # Not a column: the rows of raw_image_sectors, written with this row (queries.upsert_raw_rows).
        values["sector_rows"] = [row.column_values() for row in self.sector_rows]
        return values

    def update_from(self, values: dict[str, Any]) -> None:
        """Bring this row up to ``values``; its sector rows are updated by key in place (a
        replaced collection would be inserted before the old rows are deleted)."""
        values = dict(values)
        wanted = {int(row["key"]): row for row in values.pop("sector_rows", [])}
        super().update_from(values)
        for row in list(self.sector_rows):
            if row.key not in wanted:
                self.sector_rows.remove(row)
        held = {row.key: row for row in self.sector_rows}
        for key, row_values in sorted(wanted.items()):
            if key in held:
                for name, value in row_values.items():
                    setattr(held[key], name, value)
            else:
                self.sector_rows.append(RawImageSector(**row_values))

    @validates("sector_rows")
    def _sector_row(self, _key: str, row: RawImageSector | dict[str, Any]) -> RawImageSector:
        """Rows given as values (``column_values()["sector_rows"]``) become rows."""
        return row if isinstance(row, RawImageSector) else RawImageSector(**row)

    def compute_summaries(self) -> None:
        """Fill ``num_points``, ``time_start``, ``time_end``, ``sectors``, ``cutout_size`` and
        one :class:`RawImageSector` per group (``sector_rows``)."""
        self.sector_rows = [RawImageSector.of_cutout(key, cutout)
                            for key, cutout in sorted((self._data or {}).items())]
        cutouts = list((self._data or {}).values())
        self.sectors = sorted({int(c.sector) for c in cutouts})
        self.num_points = int(sum(len(c.time) for c in cutouts))
        times = np.concatenate([np.asarray(c.time, float) for c in cutouts]) if cutouts else []
        times = np.asarray(times)[np.isfinite(times)] if len(times) else np.array([])
        self.time_start = float(times.min() + BTJD_TO_MJD) if len(times) else None
        self.time_end = float(times.max() + BTJD_TO_MJD) if len(times) else None
        self.cutout_size = max((c.shape[0] for c in cutouts), default=None)

    def save(self) -> None:
        """Write every sector's cutout to this source's raw file atomically (none: ``is_empty``)."""
        self.compute_summaries()
        if not self._data:
            self.is_empty = True
            self.filename = self.key = self.checksum = self.file_size = self.file_mtime_ns = None
            return
        self.is_empty = False
        if not self.target_key:
            self.target_key = target_key(self.cross_ids, self.ra, self.dec)
        relative = storage.raw_filename(self.observatory, self.source_name, self.ra,
                                        self.identity, self.data_type)
        identity = {"source_name": self.source_name, "observatory": self.observatory,
                    "ra": self.ra, "dec": self.dec, "download_hash": self.download_hash,
                    "target_key": self.target_key, "cross_ids": self.cross_ids or {},
                    "altdata": self.altdata or {}}
        # Groups are named by the key of ``data`` (the sector for TESS, the image for ZTF).
        groups = {group_name(key): (cutout.arrays(), {**cutout.metadata(), "key": int(key),
                                                     "source": identity})
                  for key, cutout in sorted(self._data.items())}
        info = storage.write_arrays(relative, groups)
        self.key = ",".join(groups)
        self.filename, self.checksum, self.file_size = info.filename, info.checksum, info.file_size
        self.file_mtime_ns = info.mtime_ns

    @classmethod
    def from_file(cls, relative: str) -> RawImages | None:
        """The raw images of a raw file, as a new row (not in a session); ``None`` if unreadable."""
        try:
            groups = storage.read_arrays(relative)
            if not groups:
                return None
            first = next(iter(groups.values()))[1]["source"]
            cutouts = _cutouts(groups)
            raw = cls(data=cutouts, source_name=first["source_name"],
                      observatory=first["observatory"], ra=float(first["ra"]),
                      dec=float(first["dec"]), download_hash=first.get("download_hash"),
                      target_key=first.get("target_key") or "",
                      cross_ids=first.get("cross_ids") or {}, altdata=first.get("altdata") or {})
            raw.compute_summaries()
            raw.is_empty = False
            raw.filename, raw.key = relative, ",".join(groups)
            path = storage.full_path(relative)
            status = path.stat()
            raw.checksum, raw.file_size = storage.file_sha256(path), status.st_size
            raw.file_mtime_ns = status.st_mtime_ns
        except (storage.StorageError, KeyError, TypeError, ValueError, OSError):
            return None
        return raw

    # -- for other tools -----------------------------------------------------------------
    def to_lightkurve(self, sector: int | None = None):
        """One sector's cutout (the first when ``sector`` is None) as a ``TessTargetPixelFile``.

        Examples
        --------
        >>> tpf = raw.to_lightkurve(sector=1)                           # doctest: +SKIP
        >>> tpf.to_lightcurve(aperture_mask="threshold").plot()        # doctest: +SKIP
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            import lightkurve
        cutouts = self.data
        if not cutouts:
            raise ValueError(f"{self.source_name}: no cutouts ({self.observatory})")
        if sector is None:
            sector = min(cutouts)
        if sector not in cutouts:
            raise ValueError(f"{self.source_name}: no cutout of sector {sector}; "
                             f"the sectors are {sorted(cutouts)}")
        hdulist = cutout_hdulist(cutouts[sector], self.source_name, self.ra, self.dec)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return lightkurve.TessTargetPixelFile(hdulist)

    def plot(self, **kwargs: Any):
        """Draw one frame of a cutout with the aperture (``sector``, ``frame``, ``ax``, ``filename``)."""
        return drawing.draw("raw_images", self, **kwargs)

    def __repr__(self) -> str:
        sectors = ",".join(str(s) for s in (self.sectors or []))
        return (f"<RawImages {self.source_name} {self.observatory}: sectors [{sectors}], "
                f"{self.num_points or 0:,} frames, {self.cutout_size or 0} px>")


def _cutouts(groups: dict[str, tuple[dict[str, np.ndarray], dict[str, Any]]]
             ) -> dict[int, Cutout]:
    """The stored groups as ``{key: Cutout}`` (files written before keys were stored: the sector)."""
    return {int(meta.get("key", meta["sector"])): Cutout.from_stored(arrays, meta)
            for arrays, meta in groups.values()}


class RawImageSector(Base):
    """One group of a raw-images file: a sector's cutout (TESS), or one science image (ZTF).

    Made from the file's cutouts by :meth:`RawImages.compute_summaries` and written
    with its :class:`RawImages` row (deleted with it), so which sources have a
    cutout of a sector is a query (``queries.sources_with_cutouts``), not a file scan.
    """

    __tablename__ = "raw_image_sectors"
    __table_args__ = (sa.UniqueConstraint("raw_images_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True, doc="Database id of this row.")
    raw_images_id: Mapped[int] = mapped_column(
        sa.ForeignKey("raw_images.id", ondelete="CASCADE"), index=True,
        doc="The raw-images row (and file) this group belongs to.")
    key: Mapped[int] = mapped_column(
        doc="Key of the cutout in the file: the sector (TESS), the image's number in time "
            "order (ZTF).")
    group: Mapped[str] = mapped_column(doc="Name of the HDF5 group holding it (s0014).")
    sector: Mapped[int] = mapped_column(index=True,
                                        doc="TESS sector; for ZTF the science image's field.")
    camera: Mapped[int] = mapped_column(doc="TESS camera; for ZTF the CCD (ccdid).")
    ccd: Mapped[int] = mapped_column(doc="CCD of the TESS camera; for ZTF the quadrant (qid).")
    num_frames: Mapped[int] = mapped_column(doc="Frames of the cutout (1 for a ZTF image).")
    time_start: Mapped[float | None] = mapped_column(doc="First frame (MJD; TDB for TESS, UTC "
                                                         "for ZTF).")
    time_end: Mapped[float | None] = mapped_column(doc="Last frame (MJD).")
    cutout_rows: Mapped[int] = mapped_column(doc="Rows of the cutout (pixels).")
    cutout_columns: Mapped[int] = mapped_column(doc="Columns of the cutout (pixels).")
    raw: Mapped[RawImages] = relationship(back_populates="sector_rows",
                                          doc="The raw-images row.")

    @classmethod
    def of_cutout(cls, key: int, cutout: Cutout) -> RawImageSector:
        """The row of the group ``key`` of a file, holding ``cutout``."""
        times = np.asarray(cutout.time, float)
        times = times[np.isfinite(times)]
        rows, columns = cutout.shape
        return cls(key=int(key), group=group_name(key), sector=int(cutout.sector),
                   camera=int(cutout.camera), ccd=int(cutout.ccd), num_frames=len(cutout.time),
                   time_start=float(times.min() + BTJD_TO_MJD) if len(times) else None,
                   time_end=float(times.max() + BTJD_TO_MJD) if len(times) else None,
                   cutout_rows=rows, cutout_columns=columns)

    def column_values(self) -> dict[str, Any]:
        """Every column but the ids, as plain values."""
        return {c.key: plain_value(getattr(self, c.key)) for c in self.__table__.columns
                if c.key not in ("id", "raw_images_id")}

    def __repr__(self) -> str:
        return (f"<RawImageSector {self.group}: sector {self.sector}, camera {self.camera}, "
                f"CCD {self.ccd}, {self.num_frames} frames, "
                f"{self.cutout_rows}x{self.cutout_columns} px>")


class FFIFile(Base):
    """One full-frame image downloaded in bulk (``skyretriever ffi``): where it came from and is."""

    __tablename__ = "ffi_files"

    id: Mapped[int] = mapped_column(primary_key=True, doc="Database id of this file.")
    sector: Mapped[int] = mapped_column(index=True, doc="TESS sector.")
    camera: Mapped[int] = mapped_column(doc="TESS camera (1-4).")
    ccd: Mapped[int] = mapped_column(doc="CCD of the camera (1-4).")
    key: Mapped[str] = mapped_column(unique=True, doc="Key of the file in the public bucket.")
    filename: Mapped[str] = mapped_column(doc="Path of the file, relative to the data root.")
    checksum: Mapped[str] = mapped_column(sa.String(64), doc="Hex SHA-256 of the file.")
    file_size: Mapped[int] = mapped_column(sa.BigInteger, doc="Size of the file in bytes.")
    route: Mapped[str] = mapped_column(sa.String(8),
                                       doc="Where it was fetched from: s3 (the bucket) or https "
                                           "(MAST's archive, when the bucket failed).")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow,
                                                    doc="When it was recorded (UTC).")
