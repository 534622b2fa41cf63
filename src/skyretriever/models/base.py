"""The declarative base shared by every table, and the file-backed dataset behaviour."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from skyretriever import storage

__all__ = ["Base", "FileBacked", "JSONType", "plain_value", "utcnow"]

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """The current time in UTC, without time zone (as stored)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def plain_value(value: Any) -> Any:
    """A plain Python value for the database: numpy scalars as Python ones, NaN and infinities as None.

    Examples
    --------
    >>> plain_value(np.float32(1.5)), plain_value(float("nan")), plain_value("x")
    (1.5, None, 'x')
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


class Base(DeclarativeBase):
    """Declarative base: typed columns, JSON as JSONB on PostgreSQL, named constraints."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
        float: sa.Double(),
        str: sa.Text(),
        dt.datetime: sa.DateTime(),
    }

    def __repr__(self) -> str:
        fields = []
        for name in ("id", "name", "source_name", "observatory", "key", "snr"):
            if name in self.__mapper__.columns:
                fields.append(f"{name}={getattr(self, name)!r}")
        return f"{type(self).__name__}({', '.join(fields)})"


class FileBacked:
    """Columns and methods of a row whose data lives in an HDF5 file.

    ``data`` is loaded lazily the first time it is read, after the file's size
    and SHA-256 are checked against the row.
    """

    filename: Mapped[str | None] = mapped_column(
        doc="Path of the HDF5 file, relative to the data root (POSIX separators)."
    )
    key: Mapped[str | None] = mapped_column(doc="Key of this table inside the HDF5 file.")
    checksum: Mapped[str | None] = mapped_column(
        sa.String(64), doc="Hex SHA-256 of the whole file, checked when the data is loaded."
    )
    file_size: Mapped[int | None] = mapped_column(
        sa.BigInteger, doc="Size of the file in bytes, checked when the data is loaded."
    )
    file_mtime_ns: Mapped[int | None] = mapped_column(
        sa.BigInteger,
        doc="Modification time of the file (ns since 1970) when written or last verified; a "
            "resumed run trusts a file of this size and time without reading it.",
    )

    # Plain class attributes (not columns): the loaded table and its metadata.
    _data = None
    _metadata = None

    def get_fullname(self) -> Path | None:
        """Absolute path of the file under the current data root, or ``None`` if there is none."""
        return storage.full_path(self.filename) if self.filename else None

    def load(self) -> pd.DataFrame:
        """Read the data from disk (checking the file) and keep it on the object.

        Raises
        ------
        skyretriever.storage.ChecksumError
            If the file no longer matches its row.
        """
        if not self.filename or not self.key:
            raise storage.StorageError(f"{self!r} has no file to load data from")
        frame, metadata = storage.read_table(self.filename, self.key, self.checksum, self.file_size)
        self._data, self._metadata = frame, metadata
        return frame

    @property
    def data(self) -> pd.DataFrame:
        """The table as a pandas DataFrame, loaded from disk on first access."""
        if self._data is None:
            self.load()
        return self._data

    @data.setter
    def data(self, frame: pd.DataFrame) -> None:
        self._data = frame

    @property
    def file_metadata(self) -> dict[str, Any]:
        """Metadata stored with the table in the file (loaded with the data)."""
        if self._metadata is None:
            if self.filename and self.key:
                self.load()
            else:
                self._metadata = {}
        return self._metadata

    def is_intact(self) -> bool:
        """True when the file exists and matches the row's size and SHA-256."""
        path = self.get_fullname()
        return path is not None and storage.verify_file(path, self.checksum, self.file_size)

    def delete_data_from_disk(self) -> None:
        """Remove the file (if any); the row keeps its columns until deleted or updated."""
        path = self.get_fullname()
        if path is not None:
            path.unlink(missing_ok=True)
