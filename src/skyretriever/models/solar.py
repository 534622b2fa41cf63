"""Solar events' raw data: SDO/AIA cutouts (data type ``cutouts``) and the cutout jobs.

:class:`RawCutouts` is one event's cutouts from one observatory (AIA), as
downloaded: ``data`` is the index of its frames (one row per FITS file: time,
wavelength, where it came from, its file under the data root, size and
SHA-256), kept in the raw HDF5 file like any raw table; the FITS files sit in
a folder beside it (:func:`cutout_folder`).

:class:`CutoutJob` is one request to a cutout service (JSOC's export with
``im_patch``, or the SSW cutout service): its parameters, the service's job
or request id, its state (``submitted``, ``polling``, ``done``, ``failed``),
times and error, written as soon as the service answers, so that a run killed
while jobs are pending polls them on the next run instead of asking again.

Examples
--------
>>> raw = RawCutouts(source_name="SOL2020-06-07", observatory="aia", ra=75.0, dec=22.6)
>>> raw.data = pd.DataFrame({"mjd": [59007.9, 59007.91], "wavelength": [304, 304]})
>>> raw.compute_summaries()
>>> raw.num_frames, raw.wavelengths
(2, [304])
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from skyretriever import storage
from skyretriever.models.base import Base, plain_value, utcnow
from skyretriever.models.raw import RawData, register_data_type, target_key

__all__ = ["JOB_STATES", "CutoutJob", "RawCutouts", "cutout_folder", "job_key"]

JOB_STATES = ("submitted", "polling", "done", "failed")


def cutout_folder(raw_filename: str) -> str:
    """The folder of an event's FITS files, beside its raw file (relative to the data root).

    Examples
    --------
    >>> cutout_folder("raw/AIA/RA075/AIA_cutouts_SOL1_0a1b2c3d4e.h5")
    'raw/AIA/RA075/AIA_cutouts_SOL1_0a1b2c3d4e_files'
    """
    return raw_filename[: -len(".h5")] + "_files"


def job_key(route: str, parameters: dict[str, Any]) -> str:
    """Short hex hash naming a job by its route and request parameters.

    Examples
    --------
    >>> job_key("ssw", {"xcen": 1}) == job_key("ssw", {"xcen": 1}) != job_key("jsoc", {"xcen": 1})
    True
    """
    text = json.dumps({"route": route, "parameters": parameters}, sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@register_data_type
class RawCutouts(RawData, Base):
    """One event's image cutouts from one observatory: the frame index, FITS files beside it."""

    data_type: ClassVar[str] = "cutouts"
    __tablename__ = "raw_cutouts"

    id: Mapped[int] = mapped_column(primary_key=True, doc="Database id of this raw-data row.")
    num_frames: Mapped[int] = mapped_column(default=0, doc="Number of FITS frames.")
    time_start: Mapped[float | None] = mapped_column(doc="First frame's time (MJD).")
    time_end: Mapped[float | None] = mapped_column(doc="Last frame's time (MJD).")
    wavelengths: Mapped[list[Any] | None] = mapped_column(
        doc="Wavelengths present (angstrom).")

    def __init__(self, data: pd.DataFrame | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if data is not None:
            self.data = data

    def compute_summaries(self) -> None:
        """Fill ``num_frames``, ``time_start``, ``time_end`` and ``wavelengths`` from ``data``."""
        frame = self._data
        if frame is None or len(frame) == 0:
            self.num_frames, self.time_start, self.time_end, self.wavelengths = 0, None, None, []
            return
        self.num_frames = int(len(frame))
        if "mjd" in frame:
            times = frame["mjd"].to_numpy(dtype=float)
            self.time_start, self.time_end = float(np.nanmin(times)), float(np.nanmax(times))
        if "wavelength" in frame:
            self.wavelengths = sorted(int(w) for w in set(frame["wavelength"].tolist()))

    def column_values(self) -> dict[str, Any]:
        """The row's columns but ``id``, as plain Python values (for SQL, or a new row)."""
        values = {c: plain_value(getattr(self, c)) for c in self.__table__.columns.keys()
                  if c not in ("id", "created_at")}
        values["wavelengths"] = list(self.wavelengths or [])
        values["altdata"] = self.altdata or {}
        values["cross_ids"] = self.cross_ids or {}
        return values

    @classmethod
    def from_file(cls, relative: str) -> RawCutouts | None:
        """The raw data of a raw file (its frame index), as a new row; ``None`` if unreadable.

        The FITS files beside it are checked to be there and whole; a frame index
        whose files are not all there is not adopted (the event is downloaded again).
        """
        try:
            keys = storage.read_table_keys(relative)
            if len(keys) != 1:
                return None
            frame, metadata = storage.read_table(relative, keys[0])
            folder = storage.full_path(cutout_folder(relative))
            for name, size in zip(frame["file"].tolist(), frame["file_size"].tolist()):
                path = folder / str(name)
                if not path.is_file() or path.stat().st_size != int(size):
                    return None
            raw = cls(data=frame, source_name=metadata["source_name"],
                      observatory=metadata["observatory"], ra=float(metadata["ra"]),
                      dec=float(metadata["dec"]), download_hash=metadata.get("download_hash"),
                      target_key=metadata.get("target_key") or "",
                      cross_ids=metadata.get("cross_ids") or {},
                      altdata=metadata.get("altdata") or {})
            raw.compute_summaries()
            raw.is_empty = False
            raw.filename, raw.key = relative, keys[0]
            path = storage.full_path(relative)
            status = path.stat()
            raw.checksum, raw.file_size = storage.file_sha256(path), status.st_size
            raw.file_mtime_ns = status.st_mtime_ns
        except (storage.StorageError, KeyError, TypeError, ValueError, OSError):
            return None
        return raw

    @property
    def raw_file(self) -> str:
        """Where the frame index goes (relative to the data root)."""
        return storage.raw_filename(self.observatory, self.source_name, self.ra,
                                    self.identity, self.data_type)

    @property
    def files_folder(self) -> str:
        """Where the FITS files go (relative to the data root)."""
        return cutout_folder(self.raw_file)

    def fits_paths(self) -> list[str]:
        """The FITS files of the frames, relative to the data root, in frame order."""
        return [f"{self.files_folder}/{name}" for name in self.data["file"].tolist()]

    def save(self) -> None:
        """Write the frame index atomically (the FITS files are already in place)."""
        self.compute_summaries()
        if self._data is None or len(self._data) == 0:
            self.is_empty = True
            self.filename = self.key = self.checksum = self.file_size = self.file_mtime_ns = None
            return
        self.is_empty = False
        if not self.target_key:
            self.target_key = target_key(self.cross_ids, self.ra, self.dec)
        self.key = storage.sanitize_name(self.source_name)
        metadata = {
            "source_name": self.source_name, "observatory": self.observatory, "ra": self.ra,
            "dec": self.dec, "download_hash": self.download_hash, "target_key": self.target_key,
            "cross_ids": self.cross_ids or {}, "altdata": self.altdata or {},
        }
        info = storage.write_tables(self.raw_file, {self.key: (self._data, metadata)})
        self.filename, self.checksum, self.file_size = info.filename, info.checksum, info.file_size
        self.file_mtime_ns = info.mtime_ns


class CutoutJob(Base):
    """One request to a cutout service, from submission to its files (or its failure)."""

    __tablename__ = "cutout_jobs"
    __table_args__ = (
        sa.UniqueConstraint("route", "request_key"),
        sa.CheckConstraint("state IN ('submitted', 'polling', 'done', 'failed')", name="state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, doc="Database id of this job.")
    observatory: Mapped[str] = mapped_column(sa.String(20), doc="Observatory (aia).")
    route: Mapped[str] = mapped_column(sa.String(10), doc="Service: 'jsoc' or 'ssw'.")
    source_name: Mapped[str] = mapped_column(index=True, doc="The event the job is for.")
    request_key: Mapped[str] = mapped_column(
        sa.String(32), doc="Hash of the route and parameters (see job_key()): one job per key.")
    parameters: Mapped[dict[str, Any]] = mapped_column(
        doc="What was asked for (position, field of view, times, wavelengths; never the email).")
    job_id: Mapped[str | None] = mapped_column(
        doc="The service's id: JSOC's request id or the SSW job id.")
    state: Mapped[str] = mapped_column(
        sa.String(10), default="submitted",
        doc="'submitted' (the service took it), 'polling', 'done' or 'failed'.")
    polls: Mapped[int] = mapped_column(default=0, doc="How many times the job was polled.")
    files: Mapped[list[Any] | None] = mapped_column(
        doc="The URLs of the job's files, once the service lists them.")
    error: Mapped[str | None] = mapped_column(doc="Why the job failed (the service's reason).")
    submitted_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, doc="When the service took the job (UTC).")
    updated_at: Mapped[dt.datetime] = mapped_column(
        default=utcnow, doc="When the job's row last changed (UTC).")
    finished_at: Mapped[dt.datetime | None] = mapped_column(
        doc="When the job ended, done or failed (UTC).")

    def __repr__(self) -> str:
        return (f"<CutoutJob {self.id} {self.route} {self.source_name!r} {self.job_id} "
                f"{self.state}>")
