"""Files: the data root, file naming, atomic HDF5 writes, checksums and loading.

Every product file is written to a temporary name beside its final place and
renamed into place only when complete, so a reader (or a run that was killed)
never sees half a file. The SHA-256 and size of the file go into the database
row that points at it, and :func:`read_table` checks them before it returns
data: a file that fails the check is treated as missing and made again.

A table is stored as one HDF5 compound dataset per key (one row per epoch),
with the column kinds and any metadata as JSON attributes. This keeps a
100-point light curve to a few kilobytes.

Layout (``DATA_ROOT`` from :func:`configure`, ``$SKYRETRIEVER_DATA`` or ``./data``)::

    DATA_ROOT/raw/<OBS>/RA<ddd>/<OBS>_photometry_<source>_<identity>.h5      raw, key <source>
    DATA_ROOT/projects/<PROJECT>[_<cfg_hash>]/RA<ddd>/<OBS>_photometry_<source>_reduced.h5
        keys <source>_reduction_XX_of_YY

Raw data and project folders live in separate namespaces (``raw/`` and
``projects/``), so a project named like an observatory never shares a folder
with its raw data. ``<identity>`` is a short hash of the target and the download
parameters (see :class:`~skyretriever.models.RawPhotometry`): two stars that share
a name, or one star downloaded with other parameters, never share a file. Data
roots made before these namespaces existed are moved into them by
:func:`migrate_layout`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import socket
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import h5py
import numpy as np
import pandas as pd

__all__ = [
    "ChecksumError",
    "StorageError",
    "TEMP_FOLDER",
    "TEMP_SUFFIX",
    "FileCheck",
    "FileInfo",
    "configure",
    "data_root",
    "file_lock",
    "file_sha256",
    "full_path",
    "PROJECTS_FOLDER",
    "RAW_FOLDER",
    "migrate_layout",
    "project_folder_name",
    "project_path",
    "ra_folder",
    "raw_filename",
    "read_table",
    "read_table_keys",
    "reduced_filename",
    "reduction_key",
    "sanitize_name",
    "clean_temporary",
    "temporary_path",
    "writer_alive",
    "check_file",
    "verify_file",
    "write_tables",
]

TEMP_SUFFIX = ".tmp"
TEMP_FOLDER = ".tmp"
#: Top-level folders of the data root: raw data by observatory, and project folders.
RAW_FOLDER = "raw"
PROJECTS_FOLDER = "projects"
MAX_NAME_LENGTH = 80
_COMPRESS_ABOVE_BYTES = 64 * 1024
_LARGEST_ATTRIBUTE = 60_000
_METADATA_SUFFIX = ".metadata"
_DESCRIPTION = "skyretriever"          # attribute: JSON with the column kinds and the metadata
_SAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._+-]+")
_HOST = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()) or "host"

_state: dict[str, Path | None] = {"data_root": None}
_TEMPORARY_FOLDERS: dict[tuple[Path, int], Path] = {}


class StorageError(RuntimeError):
    """A product file is missing, unreadable or not where it should be."""


class ChecksumError(StorageError):
    """A product file's SHA-256 or size differs from the one in its database row."""


def configure(root: str | os.PathLike | None = None) -> Path:
    """Set the data root for this process and return it (absolute).

    ``None`` means ``$SKYRETRIEVER_DATA`` or else ``./data``.
    """
    if root is None:
        root = os.environ.get("SKYRETRIEVER_DATA") or "data"
    path = Path(root).expanduser().resolve()
    _state["data_root"] = path
    return path


def data_root() -> Path:
    """The data root in use (configured on first use if nobody set it)."""
    root = _state["data_root"]
    return root if root is not None else configure()


def sanitize_name(name: Any) -> str:
    """Turn a source name into a safe, bounded piece of a file name.

    Path separators, ``..``, NUL and other characters outside ``[A-Za-z0-9._+-]``
    become ``_``; leading dots are dropped; the result is at most 80 characters.
    When anything had to change, a short hash of the original name is appended,
    so two different names never share a file. The database keeps the original.

    Examples
    --------
    >>> sanitize_name("TIC 25155310")[:13]
    'TIC_25155310_'
    >>> sanitize_name("Gaia_DR3_123")
    'Gaia_DR3_123'
    >>> "/" in sanitize_name("../../etc/passwd")
    False
    """
    original = str(name)
    text = unicodedata.normalize("NFKD", original).encode("ascii", "ignore").decode("ascii")
    text = _SAFE_CHARACTERS.sub("_", text).lstrip(".")
    text = re.sub(r"\.{2,}", "_", text)
    if text == original and 0 < len(text) <= MAX_NAME_LENGTH:
        return text
    digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{text[: MAX_NAME_LENGTH - 11]}_{digest}" if text else f"_{digest}"


def ra_folder(ra: float) -> str:
    """``RA000`` to ``RA359``: the folder of one degree of right ascension."""
    if ra is None or not math.isfinite(ra):
        raise StorageError(f"right ascension {ra!r} is not a finite number")
    return f"RA{int(math.floor(ra)) % 360:03d}"


def project_folder_name(project: str, cfg_hash: str | None, version_control: bool) -> str:
    """``WD_FLARES`` or, with version control, ``WD_FLARES_<cfg_hash>``."""
    base = sanitize_name(project).upper()
    return f"{base}_{cfg_hash}" if version_control and cfg_hash else base


def project_path(folder: str) -> str:
    """Path of a project folder (from :func:`project_folder_name`) relative to the data root."""
    return f"{PROJECTS_FOLDER}/{folder}"


def raw_filename(observatory: str, source_name: str, ra: float, identity: str = "") -> str:
    """Path of a raw-data file relative to the data root (POSIX separators).

    ``identity`` (a short hash of the target and the download parameters) ends the
    name, so products of different stars or parameters never share a file.

    Examples
    --------
    >>> raw_filename("demo", "S1", 10.7, "0a1b2c3d4e")
    'raw/DEMO/RA010/DEMO_photometry_S1_0a1b2c3d4e.h5'
    """
    obs = observatory.upper()
    suffix = f"_{identity}" if identity else ""
    return (f"{RAW_FOLDER}/{obs}/{ra_folder(ra)}/"
            f"{obs}_photometry_{sanitize_name(source_name)}{suffix}.h5")


def reduced_filename(project_folder: str, observatory: str, source_name: str, ra: float) -> str:
    """Path of a reduced-data file relative to the data root (POSIX separators)."""
    obs = observatory.upper()
    return (
        f"{project_path(project_folder)}/{ra_folder(ra)}/"
        f"{obs}_photometry_{sanitize_name(source_name)}_reduced.h5"
    )


def reduction_key(source_name: str, number: int, total: int) -> str:
    """``<source>_reduction_01_of_03``: the key of one reduced light curve."""
    return f"{sanitize_name(source_name)}_reduction_{number:02d}_of_{total:02d}"


def full_path(relative: str | os.PathLike) -> Path:
    """Absolute path of a file named relative to the data root; refuses to leave the root."""
    relative = PurePosixPath(str(relative).replace(os.sep, "/"))
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise StorageError(f"refusing a product path outside the data root: {str(relative)!r}")
    return data_root().joinpath(*relative.parts)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileInfo:
    """What the database keeps about one product file."""

    filename: str
    checksum: str
    file_size: int
    #: Modification time (ns) of the file as written: an unchanged time lets a resumed run
    #: trust the file without reading it.
    mtime_ns: int | None = None


def verify_file(path: str | os.PathLike, checksum: str | None, file_size: int | None = None) -> bool:
    """True when the file exists and has the expected size and SHA-256."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return False
    if file_size is not None and size != file_size:
        return False
    return checksum is None or file_sha256(path) == checksum


@dataclass(frozen=True)
class FileCheck:
    """The outcome of :func:`check_file`."""

    #: The file exists and matches its row.
    intact: bool
    #: Its modification time now, when intact and different from the row's (to record).
    new_mtime_ns: int | None = None


def check_file(path: str | os.PathLike, checksum: str | None, file_size: int | None,
               mtime_ns: int | None, full: bool = False) -> FileCheck:
    """Whether a product file still matches its row, reading it only when it must.

    The size must match. A file whose modification time is the one recorded when
    it was written counts as intact without being read (the SHA-256 is checked
    again whenever its data is loaded, and by ``skyretriever check``); otherwise,
    or with ``full``, its SHA-256 decides. A file that was touched or copied but
    is unchanged comes back intact with its new time, for the caller to record.

    Examples
    --------
    >>> info = write_tables("raw/DEMO/RA010/y.h5", {"y": (pd.DataFrame({"mjd": [1.0]}), None)})
    >>> path = full_path(info.filename)
    >>> check_file(path, info.checksum, info.file_size, info.mtime_ns).intact
    True
    >>> os.utime(path, ns=(1, 1))                     # touched: read once, time recorded anew
    >>> check_file(path, info.checksum, info.file_size, info.mtime_ns)
    FileCheck(intact=True, new_mtime_ns=1)
    """
    try:
        status = os.stat(path)
    except OSError:
        return FileCheck(False)
    if file_size is not None and status.st_size != file_size:
        return FileCheck(False)
    if status.st_mtime_ns == mtime_ns and not full:
        return FileCheck(True)
    if checksum is not None and file_sha256(path) != checksum:
        return FileCheck(False)
    return FileCheck(True, None if status.st_mtime_ns == mtime_ns else status.st_mtime_ns)


def _column_for_hdf5(values: np.ndarray) -> tuple[np.ndarray, str]:
    kind = values.dtype.kind
    if kind in "OUS":
        text = np.array(["" if v is None else str(v) for v in values], dtype=str) if kind == "O" \
            else values.astype(str)
        try:  # ASCII text (filters, ids) converts in one step; UTF-8 encoding is ten times slower
            encoded = text.astype(np.bytes_) if len(text) else np.zeros(0, dtype="S1")
        except UnicodeEncodeError:
            encoded = np.char.encode(text, "utf-8")
        if encoded.dtype.itemsize == 0:
            encoded = encoded.astype("S1")
        return encoded, "str"
    if kind == "b":
        return values.astype(np.bool_), "bool"
    if kind in "iuf":
        return values, kind
    if kind == "M":
        return values.astype("datetime64[ns]").astype(np.int64), "datetime64[ns]"
    raise StorageError(f"cannot store a column of dtype {values.dtype} in HDF5")


def _frame_to_records(frame: pd.DataFrame) -> tuple[np.ndarray, list[list[str]]]:
    columns, kinds, fields = [], [], []
    for name in frame.columns:
        values, kind = _column_for_hdf5(np.asarray(frame[name].to_numpy()))
        columns.append(values)
        kinds.append([str(name), kind])
        fields.append((str(name), values.dtype))
    records = np.empty(len(frame), dtype=fields)
    for (name, _), values in zip(fields, columns):
        records[name] = values
    return records, kinds


def _records_to_frame(records: np.ndarray, kinds: list[list[str]]) -> pd.DataFrame:
    data = {}
    for name, kind in kinds:
        values = records[name]
        if kind == "str":
            try:
                data[name] = values.astype(str).astype(object)
            except UnicodeDecodeError:
                data[name] = np.char.decode(values, "utf-8").astype(object)
        elif kind == "datetime64[ns]":
            data[name] = values.astype("datetime64[ns]")
        else:
            data[name] = values
    return pd.DataFrame(data, columns=[name for name, _ in kinds], copy=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


_HDF5_TYPES: dict[np.dtype, Any] = {}


def _create_dataset(handle: h5py.File, key: str, records: np.ndarray) -> h5py.Dataset:
    """One table as a compound dataset; large ones compressed.

    Small tables go through h5py's low-level API with a cached HDF5 type, which
    halves the cost of the many small files a catalog run writes.
    """
    if records.nbytes > _COMPRESS_ABOVE_BYTES:
        return handle.create_dataset(key, data=records, compression="gzip", compression_opts=4,
                                     shuffle=True)
    hdf5_type = _HDF5_TYPES.get(records.dtype)
    if hdf5_type is None:
        hdf5_type = _HDF5_TYPES[records.dtype] = h5py.h5t.py_create(records.dtype, logical=True)
    space = h5py.h5s.create_simple((len(records),))
    # No modification times in the file: the same table always gives the same bytes.
    properties = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    properties.set_obj_track_times(False)
    dataset = h5py.h5d.create(handle.id, key.encode("utf-8"), hdf5_type, space, dcpl=properties)
    if len(records):
        dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, records)
    return h5py.Dataset(dataset)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (POSIX advisory lock) while inside the block.

    Serialises writers of one file across processes of this machine (and across
    machines on file systems with working ``flock``).
    """
    lock_path = Path(f"{path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def temporary_path(final: str | os.PathLike) -> Path:
    """Where a file is written before it is renamed to ``final``.

    Under the data root that is ``DATA_ROOT/.tmp/<host>.<pid>/<name>.<random>.tmp``: one
    folder per writing process, on the same file system as the final place (so the
    rename is atomic), and easy to clear when that process has died
    (:func:`clean_temporary`). Outside the data root it is beside ``final``.
    """
    final = Path(final)
    token = secrets.token_hex(4)
    root = data_root()
    if not final.is_relative_to(root):
        return final.with_name(f"{final.name}.{_HOST}.{os.getpid()}.{token}{TEMP_SUFFIX}")
    key = (root, os.getpid())
    folder = _TEMPORARY_FOLDERS.get(key)
    if folder is None:
        folder = root / TEMP_FOLDER / f"{_HOST}.{os.getpid()}"
        folder.mkdir(parents=True, exist_ok=True)
        _TEMPORARY_FOLDERS[key] = folder
    return folder / f"{final.name}.{token}{TEMP_SUFFIX}"


def writer_alive(folder_name: str) -> bool | None:
    """Whether the process that owns a temporary folder (``<host>.<pid>``) is alive.

    ``None`` when it ran on another host, where this process cannot tell.
    """
    host, _, pid = folder_name.rpartition(".")
    if host != _HOST or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed process whose parent died too stays a zombie until something reaps it
    # (some container inits never do): it writes nothing more, so it counts as dead.
    try:
        state = Path(f"/proc/{int(pid)}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def clean_temporary() -> list[Path]:
    """Delete the temporary folders of writers on this host that have died; returns them.

    A run calls this when it starts, so files half-written by a killed run never
    linger. Folders of live writers and of other hosts are left alone.
    """
    base = data_root() / TEMP_FOLDER
    removed = []
    if not base.exists():
        return removed
    for folder in base.iterdir():
        if folder.is_dir() and writer_alive(folder.name) is False:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def write_tables(
    relative: str,
    tables: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any] | None]],
) -> FileInfo:
    """Write tables to one HDF5 file atomically and return its name, SHA-256 and size.

    Parameters
    ----------
    relative
        Path relative to the data root (from :func:`raw_filename` or :func:`reduced_filename`).
    tables
        ``{key: (frame, metadata)}``; metadata is any JSON-able mapping kept with the table.

    The file is written under a temporary name in the same folder and renamed
    into place, replacing any older file of that name in one step.

    Examples
    --------
    >>> import pandas as pd
    >>> info = write_tables("raw/DEMO/RA010/x.h5", {"x": (pd.DataFrame({"mjd": [1.0]}), {"a": 1})})
    >>> read_table(info.filename, "x", info.checksum)[1]
    {'a': 1}
    """
    final = full_path(relative)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(final)
    try:
        with h5py.File(temporary, "w") as handle:
            for key, (frame, metadata) in tables.items():
                records, kinds = _frame_to_records(frame)
                dataset = _create_dataset(handle, key, records)
                text = json.dumps(dict(metadata or {}), default=_json_default)
                description = {"columns": kinds}
                if len(text) < _LARGEST_ATTRIBUTE:
                    description["metadata"] = json.loads(text)
                else:  # HDF5 attributes are limited to 64 kB: long headers go in a dataset
                    handle.create_dataset(f"{key}{_METADATA_SUFFIX}",
                                          data=np.frombuffer(text.encode(), dtype=np.uint8))
                dataset.attrs[_DESCRIPTION] = json.dumps(description)
        checksum = file_sha256(temporary)
        status = temporary.stat()           # the rename keeps the inode, its size and time
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return FileInfo(filename=str(relative), checksum=checksum, file_size=status.st_size,
                    mtime_ns=status.st_mtime_ns)


def read_table(
    relative: str, key: str, checksum: str | None = None, file_size: int | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Load one table and its metadata, checking the file's size and SHA-256 first.

    Raises
    ------
    StorageError
        If the file or key is missing or unreadable.
    ChecksumError
        If the file's size or SHA-256 differs from what the database holds.
    """
    path = full_path(relative)
    if checksum is not None or file_size is not None:
        if not path.exists():
            raise StorageError(f"product file {str(path)!r} is missing")
        if not verify_file(path, checksum, file_size):
            raise ChecksumError(
                f"product file {str(path)!r} does not match the checksum in its database "
                "row (changed or damaged on disk); the next run will make it again"
            )
    try:
        with h5py.File(path, "r") as handle:
            if key not in handle:
                raise StorageError(f"product file {str(path)!r} has no table {key!r}")
            dataset = handle[key]
            description = json.loads(dataset.attrs[_DESCRIPTION])
            kinds = description["columns"]
            if "metadata" in description:
                metadata = description["metadata"]
            else:
                metadata = json.loads(handle[f"{key}{_METADATA_SUFFIX}"][()].tobytes())
            records = dataset[()]
    except (OSError, KeyError, ValueError) as error:
        raise StorageError(f"cannot read table {key!r} of {str(path)!r}: {error}") from None
    return _records_to_frame(records, kinds), metadata


def read_table_keys(relative: str) -> list[str]:
    """The table keys stored in a product file."""
    path = full_path(relative)
    try:
        with h5py.File(path, "r") as handle:
            return [key for key in handle.keys() if not key.endswith(_METADATA_SUFFIX)]
    except OSError as error:
        raise StorageError(f"cannot read {str(path)!r}: {error}") from None


# -- the layout of older data roots ----------------------------------------------------------
#: What marks a top-level folder of an old data root as a project folder.
_PROJECT_MARKERS = ("config.yaml", "settings.yaml")
_OLD_MAST_FOLDERS = ("TESS", "K2", "KEPLER")


def _old_raw_file(folder: Path, path: Path) -> bool:
    """Whether ``path`` (in an old top-level ``folder``) is raw data: ``RA*/<F>_photometry_*.h5``."""
    relative = path.relative_to(folder)
    return (len(relative.parts) == 2 and relative.parts[0].startswith("RA")
            and path.name.startswith(f"{folder.name}_photometry_")
            and path.name.endswith(".h5") and not path.name.endswith("_reduced.h5"))


def _is_old_project_folder(folder: Path) -> bool:
    if any((folder / marker).is_file() for marker in _PROJECT_MARKERS):
        return True
    if any(folder.glob("histograms_*.nc")):
        return True
    return any(folder.glob("RA*/*_reduced.h5"))


def _move(source: Path, target: Path, moved: list[tuple[str, str]]) -> None:
    """Rename one file into the new layout (atomic); a file already there is left alone."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    moved.append((source.as_posix(), target.as_posix()))


def _remove_empty_folders(folder: Path) -> None:
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()


def migrate_layout() -> list[tuple[str, str]]:
    """Move the files of a data root made by skyretriever before ``raw/`` and ``projects/``.

    Old raw files ``DATA_ROOT/<OBS>/RA<ddd>/<OBS>_photometry_<name>.h5`` (and
    ``<OBS>/fits``) go to ``DATA_ROOT/raw/<OBS>/...``; old project folders (with a
    ``config.yaml``, ``settings.yaml``, histograms or reduced files) go to
    ``DATA_ROOT/projects/<FOLDER>/...``, file by file, keeping their names. Folders
    that are neither (the user's own) are left alone. The database rows are rewritten
    by migration 0005 (:func:`skyretriever.database.upgrade`).

    Each file is moved by one rename, and a file already in its new place is never
    replaced, so a migration killed at any point finishes when run again; running it
    on a migrated root does nothing. Returns ``(old, new)`` paths of the files moved.

    Examples
    --------
    >>> migrate_layout()                     # a root already in the new layout
    []
    """
    root = data_root()
    moved: list[tuple[str, str]] = []
    if not root.is_dir():
        return moved
    for folder in sorted(root.iterdir()):
        if (not folder.is_dir() or folder.is_symlink() or folder.name.startswith(".")
                or folder.name in (RAW_FOLDER, PROJECTS_FOLDER)):
            continue
        files = [p for p in folder.rglob("*") if p.is_file() or p.is_symlink()]
        raw = [p for p in files if _old_raw_file(folder, p)]
        fits = folder / "fits"
        if folder.name in _OLD_MAST_FOLDERS and fits.is_dir():
            raw += [p for p in files if p.is_relative_to(fits)]
        # A project folder whose move was cut short is recognised by its new folder.
        is_project = (_is_old_project_folder(folder)
                      or (root / PROJECTS_FOLDER / folder.name).is_dir())
        for path in raw:
            _move(path, root / RAW_FOLDER / folder.name / path.relative_to(folder), moved)
        if is_project:
            taken = set(raw)
            for path in files:
                if path not in taken and (path.exists() or path.is_symlink()):
                    _move(path, root / PROJECTS_FOLDER / folder.name / path.relative_to(folder),
                          moved)
        if raw or is_project:
            _remove_empty_folders(folder)
    return moved
