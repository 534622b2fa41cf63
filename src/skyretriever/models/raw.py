"""What every kind of raw data has in common, and the registry of data types.

A *data type* is a kind of raw data an observatory downloads: ``photometry``
today (:class:`~skyretriever.models.datasets.RawPhotometry`), images and solar
events to come. Each data type is a table whose model mixes in :class:`RawData`
(the identity columns: which target, which observatory, which download
parameters; the HDF5 file of :class:`~skyretriever.models.base.FileBacked`) and
registers itself with :func:`register_data_type`. An observatory names the data
type it downloads (``VirtualObservatory.data_type``); the pipeline finds the
table through :func:`raw_data_class` and the analysis through
``Analysis.analyze(data_type, ...)``, so a new data type is added beside
photometry, not as a second pipeline (docs/architecture.md has the recipe).

Examples
--------
>>> from skyretriever.models import raw_data_class
>>> raw_data_class("photometry").__tablename__
'raw_photometry'
>>> raw_data_class("spectra")
Traceback (most recent call last):
...
ValueError: no data type 'spectra': the data types are cutouts, images, photometry
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from skyretriever.healpix import angular_distance
from skyretriever.models.base import FileBacked, utcnow

__all__ = ["RawData", "cross_ids_disagree", "data_types", "raw_data_class", "raw_file_identity",
           "register_data_type", "target_key"]

#: Digits of the position in a target key: 1e-6 degree (3.6 milliarcseconds).
_KEY_DECIMALS = 6

_DATA_TYPES: dict[str, type[RawData]] = {}


def target_key(cross_ids: dict[str, Any] | None, ra: float, dec: float) -> str:
    """A short hex key of a target's identity: its cross-ids and its position.

    Two catalog rows get the same key only when they give the same cross-ids and
    the same position (to 1e-6 degree); the key names raw products apart, while
    which product a source may reuse is decided by :meth:`RawData.matches`.

    Examples
    --------
    >>> target_key({"tic_id": 25155310}, 10.0, 5.0) == target_key({"tic_id": 25155310}, 10.0, 5.0)
    True
    >>> target_key(None, 10.0, 5.0) == target_key(None, 10.0, 5.0001)
    False
    """
    basis = {"cross_ids": {k: str(v) for k, v in sorted((cross_ids or {}).items())},
             "ra": round(float(ra), _KEY_DECIMALS), "dec": round(float(dec), _KEY_DECIMALS)}
    text = json.dumps(basis, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def raw_file_identity(download_hash: str | None, key: str | None) -> str:
    """Short hex hash of a raw product's download hash and target key (ends its file name)."""
    return hashlib.sha256(f"{download_hash or ''}:{key or ''}".encode()).hexdigest()[:10]


def cross_ids_disagree(first: dict[str, Any] | None, second: dict[str, Any] | None) -> list[str]:
    """The cross-id columns both give, with different values (empty: they do not disagree).

    Examples
    --------
    >>> cross_ids_disagree({"tic_id": 1, "gaia_id": 5}, {"tic_id": 2})
    ['tic_id']
    >>> cross_ids_disagree({"tic_id": 1}, {"gaia_id": 5})
    []
    """
    first, second = first or {}, second or {}
    return sorted(k for k in first.keys() & second.keys()
                  if first[k] is not None and second[k] is not None
                  and str(first[k]) != str(second[k]))


class RawData(FileBacked):
    """The columns and rules every raw-data table shares (mixed into each data type's model).

    One row and one file per (source name, observatory, download parameters,
    target): the ``download_hash`` of the parameters that change what is
    downloaded and the ``target_key`` of the target (cross-ids and position, see
    :func:`target_key`). Rows are shared by every project that asks for the same
    target with the same parameters; a source reuses one only when
    :meth:`matches` says it is the same target and download. A subclass sets
    ``data_type`` and adds the summaries of its kind of data.
    """

    #: The name of the data type (``photometry``...): names files and dispatches the steps.
    data_type: ClassVar[str] = ""

    @declared_attr.directive
    def __table_args__(cls) -> tuple:
        """The identity every raw table keeps unique: one row per name, observatory,
        download and target (``uq_<table>_identity``)."""
        return (sa.UniqueConstraint("source_name", "observatory", "download_hash", "target_key",
                                    name=f"uq_{cls.__tablename__}_identity"),)

    source_name: Mapped[str] = mapped_column(
        index=True, doc="Name of the source (as in the catalog) this data belongs to."
    )
    observatory: Mapped[str] = mapped_column(
        sa.String(20), doc="Observatory name in lower case (demo, tess, k2, kepler, ztf)."
    )
    ra: Mapped[float] = mapped_column(doc="Right ascension used for the download (degrees).")
    dec: Mapped[float] = mapped_column(doc="Declination used for the download (degrees).")
    download_hash: Mapped[str | None] = mapped_column(
        sa.String(32),
        doc="Hash of the observatory's parameters that change what is downloaded (none on rows "
            "made before it was recorded: such rows are never reused).",
    )
    target_key: Mapped[str] = mapped_column(
        sa.String(32), default="", server_default=sa.text("''"),
        doc="Hash of the target's cross-ids and position (see target_key()).",
    )
    cross_ids: Mapped[dict[str, Any] | None] = mapped_column(
        doc="Cross-ids of the target asked for (tic_id, gaia_id...), from the catalog row."
    )
    is_empty: Mapped[bool] = mapped_column(
        default=False, doc="True when the archive has no data for this source."
    )
    altdata: Mapped[dict[str, Any] | None] = mapped_column(
        doc="Provenance: archive, data release, product ids, FITS headers."
    )
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, doc="When the row was made (UTC).")

    @property
    def identity(self) -> str:
        """Short hash of (download_hash, target_key): ends the raw file's name."""
        return raw_file_identity(self.download_hash, self.target_key)

    def update_from(self, values: dict[str, Any]) -> None:
        """Bring this row up to ``values`` (a product's :meth:`column_values`, same identity)."""
        for key, value in values.items():
            setattr(self, key, value)

    @staticmethod
    def matches(values: dict[str, Any], download_hash: str, ra: float, dec: float,
                cross_ids: dict[str, Any] | None, radius: float) -> str | None:
        """Why a raw product (row or file values) is not this target and download, or None.

        The same target and download means: the same ``download_hash``, a position
        within ``radius`` arcsec, and cross-ids that do not disagree.

        Examples
        --------
        >>> values = {"download_hash": "ab", "ra": 10.0, "dec": 5.0, "cross_ids": {"tic_id": 1}}
        >>> RawData.matches(values, "ab", 10.0, 5.0002, {"tic_id": 1}, 2.0) is None
        True
        >>> RawData.matches(values, "ab", 10.0, 5.0, {"tic_id": 2}, 2.0)
        'cross-ids differ (tic_id)'
        """
        if values.get("download_hash") is None:
            return "made before download parameters were recorded"
        if values["download_hash"] != download_hash:
            return "other download parameters"
        distance = float(angular_distance(values["ra"], values["dec"], ra, dec)) * 3600.0
        if not distance <= radius:
            return f"another position ({distance:.2f} arcsec away)"
        differ = cross_ids_disagree(values.get("cross_ids"), cross_ids)
        if differ:
            return f"cross-ids differ ({', '.join(differ)})"
        return None


def register_data_type(cls: type[RawData]) -> type[RawData]:
    """Class decorator: make ``cls`` the raw-data table of its ``data_type``."""
    if not cls.data_type:
        raise ValueError(f"{cls.__name__} names no data_type")
    _DATA_TYPES[cls.data_type] = cls
    sa.event.listen(cls, "after_delete", _delete_dependents)
    return cls


def _delete_dependents(mapper, connection, target: RawData) -> None:
    """A raw row deleted through the ORM takes its links and light curves with it.

    Links and light curves point at the raw table of their observatory's data
    type, so no foreign key can cascade: they are matched by id and observatory.
    """
    tables = mapper.local_table.metadata.tables
    for name in ("source_raw_data", "lightcurves"):
        table = tables.get(name)
        if table is not None:
            connection.execute(sa.delete(table).where(table.c.raw_id == target.id,
                                                      table.c.observatory == target.observatory))


def data_types() -> tuple[str, ...]:
    """The names of the registered data types."""
    return tuple(sorted(_DATA_TYPES))


def raw_data_class(data_type: str) -> type[RawData]:
    """The raw-data model of a data type, or a ValueError naming the known ones."""
    try:
        return _DATA_TYPES[data_type]
    except KeyError:
        raise ValueError(f"no data type {data_type!r}: the data types are "
                         f"{', '.join(data_types())}") from None
