"""Files: the data root, file naming, atomic HDF5 writes, checksums and loading.

Every file skyretriever writes (products, histograms, figures, configurations,
downloads) goes through :func:`atomic_write`: it is written to a temporary name
on the file system of its final place and renamed into place only when complete,
so a reader (or a run that was killed) never sees half a file; a report is built
in a temporary folder and swapped in whole (:func:`replace_folder`). The SHA-256
and size of a product file go into the database row that points at it, and
:func:`read_table` checks them before it returns data: a file that fails the
check is treated as missing and made again.

A table is stored as one HDF5 compound dataset per key (one row per epoch),
with the column kinds and any metadata as JSON attributes; tables of the same
columns (a source's light curves) can be the parts of one dataset instead. This keeps a
100-point light curve to a few kilobytes. Tables above 64 kB are compressed
(:func:`set_compression`: by default Blosc's LZ4 after the byte shuffle, HDF5
filter 32001, which h5py opens once ``hdf5plugin`` is imported and PyTables
opens as it is; ``gzip`` for files every HDF5 reader opens); whatever the
setting a file was written with, it reads the same way.

Layout (``DATA_ROOT`` from :func:`configure`, ``$SKYRETRIEVER_DATA`` or ``./data``)::

    DATA_ROOT/raw/<OBS>/RA<ddd>/<OBS>_photometry_<source>_<identity>.h5      raw, key <source>
    DATA_ROOT/raw/<OBS>/RA<ddd>/<OBS>_photometry_<source>_<identity>.tar     raw kept as the
        archive's files (TESS, Kepler, K2): a tar of them after a JSON description
    DATA_ROOT/projects/<PROJECT>[_<cfg_hash>]/RA<ddd>/<OBS>_photometry_<source>_reduced.h5
        keys <source>_reduction_XX_of_YY: the parts of one table (:func:`write_table_parts`)
    DATA_ROOT/.tmp/<host>.<pid>/                 files being written by one process
    DATA_ROOT/quarantine/<time>-<pid>/<relative path>  what ``check --repair`` moved aside

Every path is resolved before it is written: a product path whose real path leaves
the data root (through a symbolic link) is refused with a :class:`StorageError`.

Writers are identified by locks, not by process ids: each writing process makes
its own temporary folder and holds an ``flock`` on the folder's lock file for as
long as it lives, so a folder is a dead writer's exactly when its lock can be
taken (:func:`writer_alive`), whatever host or PID namespace the writer was in.
Runs hold a shared lock on the data root and ``check --repair`` the exclusive
one (:func:`data_root_lock`), so a repair never runs during a run.

Raw data and project folders live in separate namespaces (``raw/`` and
``projects/``), so a project named like an observatory never shares a folder
with its raw data. ``<identity>`` is a short hash of the target and the download
parameters (see :class:`~skyretriever.models.RawPhotometry`): two stars that share
a name, or one star downloaded with other parameters, never share a file. Data
roots made before these namespaces existed are moved into them by
:func:`migrate_layout`.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import socket
import tarfile
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import h5py
import hdf5plugin
import numpy as np
import pandas as pd

from skyretriever.errors import DiskFull, RunStopped, disk_full_from, is_disk_full

__all__ = [
    "atomic_write",
    "read_arrays",
    "write_arrays",
    "ChecksumError",
    "DataRootBusy",
    "StorageError",
    "QUARANTINE_FOLDER",
    "TEMP_FOLDER",
    "WRITER_LOCK",
    "TEMP_SUFFIX",
    "PARTIAL_SUFFIX",
    "FileCheck",
    "FileInfo",
    "configure",
    "data_root",
    "data_root_lock",
    "ensure_inside_root",
    "file_lock",
    "file_sha256",
    "full_path",
    "is_raw_filename",
    "is_reduced_filename",
    "PROJECTS_FOLDER",
    "RAW_FOLDER",
    "migrate_layout",
    "project_folder_name",
    "project_path",
    "quarantine",
    "quarantine_batch",
    "ra_folder",
    "raw_filename",
    "raw_files",
    "raw_folder",
    "read_table",
    "read_table_keys",
    "register_file_reader",
    "reduced_filename",
    "replace_folder",
    "restore_folder",
    "reduction_key",
    "sanitize_name",
    "clean_temporary",
    "clean_temporary_counted",
    "current_compression",
    "compression_of",
    "temporary_path",
    "writer_alive",
    "check_file",
    "COMPRESSIONS",
    "COMPRESSION_VARIABLE",
    "set_compression",
    "verify_file",
    "walk_files",
    "write_files_table",
    "write_tables",
    "write_table_parts",
    "FILES_SUFFIX",
    "files_filename",
    "raw_file_on_disk",
]

TEMP_SUFFIX = ".tmp"
#: Ends the name of a file written beside its final place (``atomic_write(..., beside=True)``).
PARTIAL_SUFFIX = ".part"
TEMP_FOLDER = ".tmp"
#: Where ``check --repair`` moves what it would otherwise delete.
QUARANTINE_FOLDER = "quarantine"
#: The lock file in each writer's temporary folder, locked by its writer for as long as it lives.
WRITER_LOCK = "writer.lock"
#: In a writer's temporary folder: what holds the data-root lock (for the message of the others).
_HOLDER_FILE = "holder.{token}.txt"
#: The data-root lock file (``<name>.lock``; runs share it, ``check --repair`` takes it alone).
_ROOT_LOCK = ".skyretriever-run"
#: Top-level folders of the data root: raw data by observatory, and project folders.
RAW_FOLDER = "raw"
PROJECTS_FOLDER = "projects"
MAX_NAME_LENGTH = 80
_COMPRESS_ABOVE_BYTES = 64 * 1024
_LARGEST_ATTRIBUTE = 60_000
_METADATA_SUFFIX = ".metadata"
#: The dataset of a file of table parts (:func:`write_table_parts`): every part's rows.
_PARTS = "skyretriever.parts"
_DESCRIPTION = "skyretriever"          # attribute: JSON with the column kinds and the metadata
_SAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._+-]+")
_HOST = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()) or "host"

log = logging.getLogger(__name__)

_state: dict[str, Path | None] = {"data_root": None}
#: Set when an HDF5 write of this process failed for lack of space: HDF5 may then crash
#: the process (SIGSEGV) on its next call, so it is never called again here.
_HDF5_UNUSABLE: dict[str, DiskFull | None] = {"error": None}
_TEMPORARY_FOLDERS: dict[tuple[Path, int], Path] = {}
#: The open, locked lock files of this process's temporary folders (held until it exits).
_WRITER_LOCKS: dict[tuple[Path, int], Any] = {}
_WRITER_FOLDER_LOCK = threading.Lock()


class StorageError(RuntimeError):
    """A product file is missing, unreadable or not where it should be."""


class ChecksumError(StorageError):
    """A product file's SHA-256 or size differs from the one in its database row."""


class DataRootBusy(StorageError):
    """The data-root lock is held by another process (a run, or ``check --repair``)."""


#: Folders of the operating system a data root may not be in (or be): a run writes and
#: ``check --repair`` moves files under its data root. The root folder ``/`` itself too.
_SYSTEM_FOLDERS = tuple(Path(folder) for folder in (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin",
    "/sys", "/usr", "/var/lib", "/var/log", "/var/cache", "/var/spool", "/var/run",
    "/private/etc", "/private/var/db", "/System", "/Library"))
#: Set to 1 to use a data root in a system folder anyway.
_ALLOW_SYSTEM_ROOT = "SKYRETRIEVER_ALLOW_SYSTEM_DATA_ROOT"


def configure(root: str | os.PathLike | None = None) -> Path:
    """Set the data root for this process and return it (absolute, symbolic links resolved).

    ``None`` means ``$SKYRETRIEVER_DATA`` or else ``./data``.

    Raises
    ------
    StorageError
        If the root (after resolving links) is ``/`` or inside a system folder
        (``/usr``, ``/etc``, ``/var/lib``...), unless the environment variable
        ``SKYRETRIEVER_ALLOW_SYSTEM_DATA_ROOT`` is ``1``.

    Examples
    --------
    >>> configure("/usr/share/stars")
    Traceback (most recent call last):
    ...
    skyretriever.storage.StorageError: data root '/usr/share/stars' is in the system folder /usr...
    """
    if root is None:
        root = os.environ.get("SKYRETRIEVER_DATA") or "data"
    path = Path(root).expanduser().resolve()
    if os.environ.get(_ALLOW_SYSTEM_ROOT, "") != "1":
        system = next((folder for folder in _SYSTEM_FOLDERS
                       if path == folder or folder in path.parents), None)
        if system is not None or path == Path(path.anchor):
            where = f"the system folder {system}" if system else "the root of the file system"
            really = "" if str(root) == str(path) else f" (really {path})"
            raise StorageError(
                f"data root {str(root)!r}{really} is in {where}; choose a folder of your own "
                f"(data_root), or set {_ALLOW_SYSTEM_ROOT}=1 to use it anyway")
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


def raw_folder(observatory: str) -> str:
    """The folder of an observatory's raw-data files, relative to the data root."""
    return f"{RAW_FOLDER}/{observatory.upper()}"


def project_path(folder: str) -> str:
    """Path of a project folder (from :func:`project_folder_name`) relative to the data root."""
    return f"{PROJECTS_FOLDER}/{folder}"


def raw_filename(observatory: str, source_name: str, ra: float, identity: str = "",
                 data_type: str = "photometry") -> str:
    """Path of a raw-data file relative to the data root (POSIX separators).

    ``identity`` (a short hash of the target and the download parameters) ends the
    name, so products of different stars or parameters never share a file; the
    data type (``photometry``...) follows the observatory.

    Examples
    --------
    >>> raw_filename("demo", "S1", 10.7, "0a1b2c3d4e")
    'raw/DEMO/RA010/DEMO_photometry_S1_0a1b2c3d4e.h5'
    """
    obs = observatory.upper()
    suffix = f"_{identity}" if identity else ""
    return (f"{raw_folder(observatory)}/{ra_folder(ra)}/"
            f"{obs}_{data_type}_{sanitize_name(source_name)}{suffix}.h5")


def reduced_filename(project_folder: str, observatory: str, source_name: str, ra: float,
                     data_type: str = "photometry") -> str:
    """Path of a reduced-data file relative to the data root (POSIX separators)."""
    obs = observatory.upper()
    return (
        f"{project_path(project_folder)}/{ra_folder(ra)}/"
        f"{obs}_{data_type}_{sanitize_name(source_name)}_reduced.h5"
    )


_SAFE_NAME = r"[A-Za-z0-9._+-]+"


def is_raw_filename(relative: str, observatory: str, data_type: str = "photometry") -> bool:
    """Whether a path relative to the data root is named like a raw file of ``observatory``
    (and of ``data_type``).

    The names :func:`raw_filename` makes (and their ``.tar`` form, :func:`files_filename`),
    and nothing else: never a reduced file (``*_reduced.h5``), even where raw and reduced
    files share a folder.

    Examples
    --------
    >>> is_raw_filename(raw_filename("demo", "S1", 10.5), "demo")
    True
    >>> is_raw_filename(reduced_filename("DEMO", "demo", "S1", 10.5), "demo")
    False
    """
    obs, folder = re.escape(observatory.upper()), re.escape(raw_folder(observatory))
    kind = re.escape(data_type)
    return (re.fullmatch(rf"{folder}/RA\d{{3}}/{obs}_{kind}_{_SAFE_NAME}\.(h5|tar)", relative)
            is not None and not relative.endswith("_reduced.h5"))


def raw_file_on_disk(relative: str) -> str | None:
    """The file on disk of the raw product :func:`raw_filename` names ``relative``: the
    archive of kept files (:func:`files_filename`), else the HDF5 file; ``None`` if neither
    exists."""
    for name in (files_filename(relative), relative):
        # Looked for where it would be, and checked (links resolved) only when it is there:
        # most sources of a run have no file yet, and resolving a path costs a system call
        # per folder on the way.
        if _joined(name).exists():
            full_path(name)
            return name
    return None


def is_reduced_filename(relative: str, project_folder: str) -> bool:
    """Whether a path relative to the data root is named like a reduced file of a project folder.

    Examples
    --------
    >>> is_reduced_filename(reduced_filename("DEMO", "demo", "S1", 10.5), project_path("DEMO"))
    True
    >>> is_reduced_filename("projects/DEMO/RA010/notes_reduced.txt", project_path("DEMO"))
    False
    """
    folder = re.escape(project_folder)
    return re.fullmatch(rf"{folder}/RA\d{{3}}/[A-Z0-9_]+_[a-z]+_{_SAFE_NAME}_reduced\.h5",
                        relative) is not None


def walk_files(folder: str | os.PathLike,
               on_link: Callable[[Path], None] | None = None) -> list[str]:
    """The regular files under ``folder``, sorted, never reached through a symbolic link.

    Names are relative to the data root (POSIX separators), or absolute for a
    folder outside it. A symbolic link met (``folder`` itself, or a file or
    folder in it) is not followed but given to ``on_link``. A missing folder
    holds no files.

    Examples
    --------
    >>> info = write_tables("raw/DEMO/RA010/w.h5", {"w": (pd.DataFrame({"mjd": [1.0]}), None)})
    >>> info.filename in walk_files(data_root() / "raw")
    True
    """
    folder = Path(folder)
    root = data_root()
    found: list[str] = []
    if folder.is_symlink():
        if on_link is not None:
            on_link(folder)
        return found
    pending = [folder] if folder.is_dir() else []
    while pending:
        try:
            listing = os.scandir(pending.pop())
        except FileNotFoundError:      # removed while we looked
            continue
        with listing as entries:
            for entry in entries:      # the types come with the listing: no stat per file
                path = Path(entry.path)
                if entry.is_symlink():
                    if on_link is not None:
                        on_link(path)
                elif entry.is_dir(follow_symlinks=False):
                    pending.append(path)
                elif entry.is_file(follow_symlinks=False):
                    found.append(path.relative_to(root).as_posix() if path.is_relative_to(root)
                                 else str(path))
    return sorted(found)


def raw_files(observatory: str, on_link: Callable[[Path], None] | None = None,
              data_type: str = "photometry") -> list[str]:
    """The raw files of an observatory (and data type) on disk, relative to the data root, sorted.

    Only names :func:`raw_filename` gives (:func:`is_raw_filename`), never
    reached through a symbolic link (each link met goes to ``on_link``, see
    :func:`walk_files`).

    Examples
    --------
    >>> frame = pd.DataFrame({"mjd": [1.0]})
    >>> info = write_tables(raw_filename("demo", "S9", 10.0), {"S9": (frame, None)})
    >>> info.filename in raw_files("demo")
    True
    """
    return [relative for relative in walk_files(data_root() / raw_folder(observatory), on_link)
            if is_raw_filename(relative, observatory, data_type)]


def reduction_key(source_name: str, number: int, total: int) -> str:
    """``<source>_reduction_01_of_03``: the key of one reduced light curve."""
    return f"{sanitize_name(source_name)}_reduction_{number:02d}_of_{total:02d}"


def ensure_inside_root(path: str | os.PathLike) -> Path:
    """``path`` (absolute) if its real path, links resolved, is inside the data root.

    Raises
    ------
    StorageError
        If the path, or a symbolic link on its way, leads out of the data root.
    """
    path = Path(path)
    root = data_root()
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(Path(os.path.realpath(root))):
        raise StorageError(
            f"refusing to write {str(path)!r}: it leads to {str(real)!r}, outside the data root "
            f"{str(root)!r} (a symbolic link inside the data root points elsewhere; replace it "
            "with a folder, or make the data root itself that other place)")
    return path


def full_path(relative: str | os.PathLike) -> Path:
    """Absolute path of a file named relative to the data root; refuses to leave the root.

    Neither ``..`` nor a symbolic link inside the root can lead out of it (see
    :func:`ensure_inside_root`).
    """
    return ensure_inside_root(_joined(relative))


def _joined(relative: str | os.PathLike) -> Path:
    """The data root joined with ``relative``, refused if it is absolute or holds ``..``
    (links not resolved: :func:`full_path` does that)."""
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


def _encode_text(text: list[str] | np.ndarray) -> np.ndarray:
    """Strings as fixed-width UTF-8 bytes (``S1`` at least: HDF5 has no zero-width strings)."""
    try:  # ASCII text (filters, ids) converts in one step; UTF-8 encoding is ten times slower
        encoded = np.array(text, dtype=np.bytes_) if len(text) else np.zeros(0, dtype="S1")
    except UnicodeEncodeError:
        encoded = np.char.encode(np.asarray(text, dtype=str), "utf-8")
    return encoded.astype("S1") if encoded.dtype.itemsize == 0 else encoded


def _all_equal(values: np.ndarray, value: str) -> bool:
    """Whether every entry of an object array equals ``value`` (``False`` where one cannot
    be compared, such as ``pd.NA``)."""
    try:
        return bool((values == value).all())
    except (TypeError, ValueError):
        return False


def _object_text(values: np.ndarray) -> np.ndarray:
    """An object column as UTF-8 bytes: ``str(value)``, ``""`` for ``None``.

    A column of strings only (a band, a sequence name: a few distinct values over
    tens of thousands of rows) is converted by its distinct values, not row by row.
    """
    first = values[0] if len(values) else None
    if isinstance(first, str) and _all_equal(values, first):
        # One value in every row (a light curve's band): encoded once, a third of the time.
        encoded = _encode_text([first])
        return np.full(len(values), encoded[0], dtype=encoded.dtype)
    if pd.api.types.infer_dtype(values, skipna=False) == "string":
        codes, distinct = pd.factorize(values)
        return _encode_text(list(distinct))[codes]
    return _encode_text(["" if v is None else str(v) for v in values])


def _column_for_hdf5(values: np.ndarray) -> tuple[np.ndarray, str]:
    kind = values.dtype.kind
    if kind == "O":
        return _object_text(values), "str"
    if kind in "US":
        return _encode_text(values.astype(str)), "str"
    if kind == "b":
        return values.astype(np.bool_, copy=False), "bool"
    if kind in "iuf":
        return values, kind
    if kind == "M":
        return values.astype("datetime64[ns]").astype(np.int64), "datetime64[ns]"
    raise StorageError(f"cannot store a column of dtype {values.dtype} in HDF5")


#: Bytes of records filled at a time (:func:`_frame_to_records`).
_RECORD_BLOCK_BYTES = 512 * 1024


def _without_attrs(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame``, or a view of it without ``attrs`` (pandas deep-copies them into every
    column taken)."""
    if frame.attrs:
        frame = frame.copy(deep=False)
        frame.attrs = {}
    return frame


def _frame_to_records(frame: pd.DataFrame, scratch: bool = False
                      ) -> tuple[np.ndarray, list[list[str]]]:
    frame = _without_attrs(frame)
    return _columns_to_records({name: frame[name].to_numpy() for name in frame.columns}, scratch)


#: Records of at least this many bytes are made in this thread's scratch memory, reused from
#: table to table (:func:`_scratch_records`), and of at most the second number.
_SCRATCH_BYTES = (1 << 20, 64 << 20)
_SCRATCH = threading.local()


def _scratch_records(rows: int, dtype: np.dtype) -> np.ndarray:
    """An uninitialised array of records in memory this thread reuses for the next one.

    New memory costs a page fault per 4 kB the first time it is written (the
    records of a 20-second TESS light curve, 14 MB, about 5 ms of them; more on
    a virtual machine whose memory is still new to it); the largest records made
    so far in this thread stay allocated instead. The array is valid until this
    thread asks for the next one.
    """
    size = rows * dtype.itemsize
    memory = getattr(_SCRATCH, "memory", None)
    if memory is None or len(memory) < size:
        memory = _SCRATCH.memory = np.empty(size, dtype=np.uint8)
    return np.ndarray((rows,), dtype=dtype, buffer=memory)


def _columns_to_records(table: Mapping[Any, np.ndarray], scratch: bool = False
                        ) -> tuple[np.ndarray, list[list[str]]]:
    """The rows of named columns (of one length) as records, and each column's kind.

    With ``scratch``, large records are made in this thread's scratch memory
    (:func:`_scratch_records`): the caller is done with them before it makes others.
    """
    columns, kinds, fields = [], [], []
    for name, column in table.items():
        values, kind = _column_for_hdf5(np.asarray(column))
        columns.append(values)
        kinds.append([str(name), kind])
        fields.append((str(name), values.dtype))
    rows, dtype = len(columns[0]) if columns else 0, np.dtype(fields)
    if (scratch and not dtype.hasobject
            and _SCRATCH_BYTES[0] <= rows * dtype.itemsize <= _SCRATCH_BYTES[1]):
        records = _scratch_records(rows, dtype)
    else:
        records = np.empty(rows, dtype=dtype)
    # Filled a block of rows at a time, each block small enough to stay in the processor's
    # cache while every column is written into it: a 116,640-row light curve in less than
    # half the time of filling each column over the whole table.
    step = max(1, _RECORD_BLOCK_BYTES // max(records.dtype.itemsize, 1))
    for start in range(0, len(records), step):
        block = records[start : start + step]
        for (name, _), values in zip(fields, columns):
            block[name] = values[start : start + step]
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

#: How tables larger than 64 kB are compressed (:func:`set_compression`).
COMPRESSIONS = ("blosc", "gzip", "lzf", "none")
#: The environment variable naming the compression (worker processes inherit it).
COMPRESSION_VARIABLE = "SKYRETRIEVER_HDF5_COMPRESSION"
_DEFAULT_COMPRESSION = "blosc"
#: Bytes per chunk of a compressed table: small enough for the byte shuffle to stay in
#: the processor's cache, large enough for deflate to find long runs.
_CHUNK_BYTES = 64 * 1024
_FILTERS: dict[str, dict[str, Any]] = {
    # LZ4 level 5 after Blosc's byte shuffle, one thread (the same table, the same bytes):
    # a 20,000-epoch TESS light curve in 3.7 ms of CPU, against 27 ms for deflate level 1,
    # 8% larger; it reads back in a third of deflate's time.
    "blosc": dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)),
    # Level 1 with the byte shuffle: as small as level 4 within 1%, a quarter less CPU.
    "gzip": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
    "lzf": {"compression": "lzf", "shuffle": True},
    "none": {},
}


def set_compression(name: str | None) -> str:
    """Choose how this process (and the worker processes it starts) compresses large tables.

    ``blosc`` (the default: LZ4 after Blosc's byte shuffle) costs about a seventh
    of ``gzip``'s CPU for files about 8% larger, and is read by h5py with
    ``import hdf5plugin`` (this module imports it) and by PyTables; ``gzip``
    (deflate level 1 after the byte shuffle) gives files every HDF5 reader
    opens, about 2.9 times smaller than ``none``; ``lzf`` is between them and
    only h5py (or HDF5 with the LZF plugin) reads it; ``none`` costs least CPU
    and is largest. Files written with any of them are read the same way;
    ``None`` restores the default.
    The choice is kept in ``$SKYRETRIEVER_HDF5_COMPRESSION``, so processes started
    afterwards use it too. Returns the compression now in use.

    Examples
    --------
    >>> set_compression("none")
    'none'
    >>> set_compression(None)
    'blosc'
    >>> set_compression("zstd")
    Traceback (most recent call last):
    ...
    ValueError: unknown HDF5 compression 'zstd'; choose one of blosc, gzip, lzf, none
    """
    if name is None:
        os.environ.pop(COMPRESSION_VARIABLE, None)
        return current_compression()
    os.environ[COMPRESSION_VARIABLE] = _checked_compression(name)
    return name


def current_compression() -> str:
    """The compression of large tables in this process (:func:`set_compression`)."""
    return _checked_compression(os.environ.get(COMPRESSION_VARIABLE) or _DEFAULT_COMPRESSION,
                                f"${COMPRESSION_VARIABLE} is {{name!r}}")


def compression_of(dataset: h5py.Dataset) -> str:
    """Which of :data:`COMPRESSIONS` a dataset was written with (``other`` for none of them).

    >>> info = write_tables("raw/DEMO/RA010/c.h5", {"x": (pd.DataFrame({"t": np.arange(9e3)}), {})})
    >>> with h5py.File(full_path(info.filename)) as handle:
    ...     compression_of(handle["x"])
    'blosc'
    """
    properties = dataset.id.get_create_plist()
    codes = {properties.get_filter(index)[0] for index in range(properties.get_nfilters())}
    if not codes:
        return "none"
    if hdf5plugin.BLOSC_ID in codes:
        return "blosc"
    return dataset.compression if dataset.compression in COMPRESSIONS else "other"


def _checked_compression(name: str, what: str = "unknown HDF5 compression {name!r}") -> str:
    if name not in COMPRESSIONS:
        raise ValueError(f"{what.format(name=name)}; choose one of {', '.join(COMPRESSIONS)}")
    return name


def _create_dataset(handle: h5py.File, key: str, records: np.ndarray,
                    filters: Mapping[str, Any]) -> h5py.Dataset:
    """One table as a compound dataset; large ones compressed with ``filters``.

    Small tables go through h5py's low-level API with a cached HDF5 type, which
    halves the cost of the many small files a catalog run writes.
    """
    if filters and records.nbytes > _COMPRESS_ABOVE_BYTES:
        rows = max(1, min(len(records), _CHUNK_BYTES // max(records.dtype.itemsize, 1)))
        return handle.create_dataset(key, data=records, chunks=(rows,), **filters)
    hdf5_type = _HDF5_TYPES.get(records.dtype)
    if hdf5_type is None:
        hdf5_type = _HDF5_TYPES[records.dtype] = h5py.h5t.py_create(records.dtype, logical=True)
    space = h5py.h5s.create_simple((len(records),))
    # No modification times in the file: the same table always gives the same bytes.
    properties = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    properties.set_obj_track_times(False)
    dataset = h5py.h5d.create(handle.id, key.encode("utf-8"), hdf5_type, space, dcpl=properties)
    if len(records):
        # The file's type has the records' own layout: writing the bytes as they are skips
        # HDF5's member-by-member conversion of a compound, which is most of a small write.
        dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, records, mtype=dataset.get_type())
    return h5py.Dataset(dataset)


#: HDF5 types of a text attribute: in the file (UTF-8, variable length) and in memory.
_TEXT_FILE_TYPE = h5py.h5t.py_create(h5py.string_dtype(), logical=True)
_TEXT_MEMORY_TYPE = h5py.h5t.py_create(h5py.string_dtype())


def _write_text_attribute(dataset: h5py.Dataset, name: str, text: str) -> None:
    """``dataset.attrs[name] = text`` through the low-level API (the same bytes, half the time)."""
    attribute = h5py.h5a.create(dataset.id, name.encode("utf-8"), _TEXT_FILE_TYPE,
                                h5py.h5s.create_simple(()))
    attribute.write(np.asarray(text, dtype=h5py.string_dtype()), mtype=_TEXT_MEMORY_TYPE)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, shared: bool = False, blocking: bool = True
              ) -> Iterator[None]:
    """Hold a lock on ``<path>.lock`` (POSIX advisory ``flock``) while inside the block.

    Exclusive by default (serialises writers of one file across processes of this
    machine, and across machines on file systems with working ``flock``); ``shared``
    lets other shared holders in and keeps exclusive ones out.

    Raises
    ------
    BlockingIOError
        With ``blocking=False``, when the lock is held elsewhere (at once, without waiting).
    """
    lock_path = Path(f"{path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _writer_folder() -> Path:
    """This process's temporary folder, made and locked on first use (lock held until exit).

    A forked child inherits its parent's open lock file (so the parent's folder stays
    alive while the child lives, which errs on the safe side) but makes and locks a
    folder of its own, because the folder is keyed by the process id.
    """
    root = data_root()
    key = (root, os.getpid())
    folder = _TEMPORARY_FOLDERS.get(key)
    if folder is not None:
        return folder
    # Threads of one process share its folder; two of them locking it apart would deadlock
    # (flock locks of two open files conflict even within one process).
    with _WRITER_FOLDER_LOCK:
        folder = _TEMPORARY_FOLDERS.get(key)
        return folder if folder is not None else _make_writer_folder(root, key)


def _make_writer_folder(root: Path, key: tuple[Path, int]) -> Path:
    name = f"{_HOST}.{os.getpid()}"
    while True:
        folder = ensure_inside_root(root / TEMP_FOLDER / name)
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / WRITER_LOCK, "a")  # held for the process's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # A live process of the same host name and pid (another container) owns it,
            # or a cleaner is removing a dead namesake: take another name.
            handle.close()
            name = f"{_HOST}.{os.getpid()}.{secrets.token_hex(4)}"
            continue
        except OSError as error:  # a file system without flock: nobody can tell, nobody clears
            log.warning("cannot lock %s (%s): other runs cannot tell this writer is alive",
                        folder / WRITER_LOCK, error)
            break
        # A cleaner may have removed the folder between our mkdir and our lock: the file
        # locked must be the one in the folder.
        try:
            same = os.stat(folder / WRITER_LOCK).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    if not _TEMPORARY_FOLDERS:
        atexit.register(_remove_own_folders)
    _WRITER_LOCKS[key] = handle
    _TEMPORARY_FOLDERS[key] = folder
    return folder


def _remove_own_folders() -> None:
    """At exit, remove this process's temporary folders that hold nothing but their lock."""
    for (_root, pid), folder in list(_TEMPORARY_FOLDERS.items()):
        if pid != os.getpid():
            continue                                  # a parent's, inherited by a fork
        with contextlib.suppress(OSError):
            if [p.name for p in folder.iterdir()] == [WRITER_LOCK]:
                (folder / WRITER_LOCK).unlink()
                folder.rmdir()


def _after_fork_in_child() -> None:
    global _WRITER_FOLDER_LOCK
    _WRITER_FOLDER_LOCK = threading.Lock()   # another thread may have held it at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


def temporary_path(final: str | os.PathLike) -> Path:
    """Where a file is written before it is renamed to ``final``.

    Under the data root that is ``DATA_ROOT/.tmp/<host>.<pid>/<name>.<random>.tmp``
    (``<host>.<pid>.<random>`` when a live namesake in another container has that one): one
    folder per writing process, locked by it while it lives, on the same file system as
    the final place (so the rename is atomic), and easy to clear when that process has
    died (:func:`clean_temporary`). Outside the data root it is beside ``final``.
    """
    final = Path(final)
    token = secrets.token_hex(4)
    root = data_root()
    if not final.is_relative_to(root):
        return final.with_name(f"{final.name}.{_HOST}.{os.getpid()}.{token}{TEMP_SUFFIX}")
    return _writer_folder() / f"{final.name}.{token}{TEMP_SUFFIX}"


def _partial_path(final: Path) -> Path:
    """``.<name>.<pid>.<random>.part`` beside ``final`` (see :func:`atomic_write`'s ``beside``)."""
    return final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")


@contextlib.contextmanager
def atomic_write(final: str | os.PathLike, *, beside: bool = False,
                 disk_full_at: str | os.PathLike | None = None) -> Iterator[Path]:
    """Write ``final`` all at once: the block writes the temporary path it is given.

    The temporary file is on the file system of ``final`` (its folder is made
    first). When the block ends without an error it is renamed to ``final``,
    replacing any older file in one step; on any error (an interruption too)
    it is removed and ``final`` is left as it was. Nothing is checked about
    where ``final`` leads: a caller writing under the data root resolves it
    first (:func:`full_path`, :func:`ensure_inside_root`).

    Parameters
    ----------
    final
        Where the file goes.
    beside
        Write the temporary file beside ``final`` as ``.<name>.<pid>.<random>.part``
        (downloads and unpacked catalogs) rather than in this process's writer
        folder :func:`temporary_path` gives under the data root.
    disk_full_at
        Where a full disk is measured: an error that means no space there
        (:func:`~skyretriever.errors.disk_full_from`, looked at before the
        temporary file is removed) is raised as :class:`~skyretriever.errors.DiskFull`.
        ``None``: errors go through as they are.

    Examples
    --------
    >>> final = full_path("notes/hello.txt")
    >>> with atomic_write(final) as temporary:
    ...     _ = temporary.write_text("hello")
    >>> final.read_text()
    'hello'
    >>> with atomic_write(final) as temporary:
    ...     _ = temporary.write_text("half")
    ...     raise ValueError("stopped")
    Traceback (most recent call last):
    ...
    ValueError: stopped
    >>> final.read_text()
    'hello'
    """
    final = Path(final)
    temporary = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = _partial_path(final) if beside else temporary_path(final)
        yield temporary
        os.replace(temporary, final)
    except BaseException as error:
        full = (disk_full_from(error, disk_full_at)
                if disk_full_at is not None and isinstance(error, Exception) else None)
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
        if full is None or full is error:
            raise
        raise full from error


def writer_alive(folder: str | os.PathLike) -> bool:
    """Whether the writer of a temporary folder (``DATA_ROOT/.tmp/<name>``) is alive.

    It is while some process holds the lock on the folder's :data:`WRITER_LOCK`
    (its writer, or a child forked from it): a test of the lock, not of a process
    id, so it holds across hosts and PID namespaces. A folder with no lock file,
    or whose lock can be taken, is a dead writer's. ``folder`` is a path, or a
    folder name under ``DATA_ROOT/.tmp``.
    """
    folder = Path(folder)
    if not folder.is_absolute():
        folder = data_root() / TEMP_FOLDER / folder
    lock = folder / WRITER_LOCK
    if folder.is_symlink() or not lock.is_file() or lock.is_symlink():
        return False
    try:
        handle = open(lock, "rb")  # closed by the with below
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:              # held (or no flock on this file system: cannot tell)
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


@contextlib.contextmanager
def _dead_writer_folders() -> Iterator[list[Path]]:
    """The temporary folders of dead writers, each locked by this process inside the block.

    Holding their locks keeps a new process that reuses a dead one's folder name out
    until the folder is gone (:func:`_writer_folder` checks it locked the file that is
    still there).
    """
    base = data_root() / TEMP_FOLDER
    dead: list[Path] = []
    with contextlib.ExitStack() as stack:
        if base.is_dir() and not base.is_symlink():
            for folder in sorted(base.iterdir()):
                if folder.is_symlink() or not folder.is_dir():
                    continue
                handle = open(folder / WRITER_LOCK, "a")  # closed at once, or when done
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    handle.close()
                    continue                        # its writer lives (or cannot tell)
                stack.callback(handle.close)
                dead.append(folder)
        yield dead


def clean_temporary() -> list[Path]:
    """Delete the temporary folders of writers that have died; returns them.

    A run calls this when it starts, so files half-written by a killed run never
    linger. Folders whose writer holds its lock are left alone, on any host.
    """
    return list(clean_temporary_counted())


def clean_temporary_counted() -> dict[Path, int]:
    """:func:`clean_temporary`, saying how many half-written files each folder held.

    Most folders of finished processes are empty (their writers left nothing
    behind); a count of zero tells them from a run that died mid-write.
    """
    with _dead_writer_folders() as dead:
        counts = {}
        for folder in dead:
            with contextlib.suppress(OSError):
                counts[folder] = sum(1 for entry in folder.iterdir()
                                     if entry.name != WRITER_LOCK)
            counts.setdefault(folder, 0)
            shutil.rmtree(folder, ignore_errors=True)
        return counts


def quarantine_batch() -> str:
    """A new name for one repair's quarantine folder: UTC time and process id."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"


def quarantine(path: str | os.PathLike, batch: str | None = None) -> Path:
    """Move a file or folder under the data root to ``DATA_ROOT/quarantine/<batch>/<relative>``.

    What a repair would have deleted is kept there instead, for the user to look at
    and delete. ``batch`` names one repair (default: a new :func:`quarantine_batch`).
    Returns the new path.
    """
    batch = batch or quarantine_batch()
    path = Path(path)
    root = data_root()
    relative = path.relative_to(root)
    target = root / QUARANTINE_FOLDER / batch / relative
    ensure_inside_root(target.parent)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(path, target)
    return target


def _previous(target: Path) -> Path:
    return target.with_name(f".{target.name}.previous")


def restore_folder(target: str | os.PathLike) -> Path | None:
    """Finish a :func:`replace_folder` that was killed half-way; returns a folder put back.

    Killed between its two renames, the old folder waits under ``.<name>.previous``
    beside ``target``: it goes back in place. Killed after them, the new folder is in
    place and the old one is only then removed.
    """
    target = Path(target)
    previous = _previous(target)
    if not previous.is_dir() or previous.is_symlink():
        return None
    if target.exists() or target.is_symlink():
        shutil.rmtree(previous, ignore_errors=True)
        return None
    os.rename(previous, target)
    log.warning("put back %s, which a replacement killed half-way had moved aside", target)
    return target


_RENAME_EXCHANGE = 2          # linux/fs.h
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2`` with ``RENAME_EXCHANGE``).

    ``False`` where the system or the file system cannot (nothing was done then).
    """
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
                 _RENAME_EXCHANGE) == 0:
        return True
    number = ctypes.get_errno()
    if number in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(number, os.strerror(number), str(second))


def replace_folder(built: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the complete folder ``built`` to ``target``, replacing any older one.

    At every instant ``target`` holds the old folder or the new one. Where the system
    can swap two paths in one step (Linux), the new folder and the old one trade
    places and the old one, now at ``built``, is removed. Elsewhere the old folder is
    renamed to ``.<name>.previous`` beside ``target``, the new one into place, and only
    then is the old one removed; if the process dies between the renames,
    :func:`restore_folder` (called first by the next replacement) puts the old folder
    back. The old one is never in the temporary folders that runs clear.
    """
    built, target = Path(built), Path(target)
    restore_folder(target)
    if not target.exists():
        os.rename(built, target)
        return
    if _exchange(built, target):
        shutil.rmtree(built, ignore_errors=True)
        return
    previous = _previous(target)
    os.rename(target, previous)
    try:
        os.rename(built, target)
    except BaseException:
        os.rename(previous, target)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def _holders(root: Path, note: str) -> list[str]:
    """What the live holders of a lock said they were (their notes named by ``note``)."""
    base = root / TEMP_FOLDER
    found = []
    for text_file in sorted(base.glob(f"*/{note.format(token='*')}")) if base.is_dir() else []:
        if writer_alive(text_file.parent):
            with contextlib.suppress(OSError):
                found.append(text_file.read_text().strip())
    return found


@contextlib.contextmanager
def _lock_naming_holder(lock_name: str, note: str, holder: str, shared: bool,
                        busy: Callable[[list[str]], Exception],
                        host_and_time: bool = True) -> Iterator[None]:
    """Take ``DATA_ROOT/<lock_name>`` at once or raise ``busy(holders)``; note who holds it.

    The note (``holder``, process id, and unless ``host_and_time`` is false the host
    and start time) is a file named ``note`` in this process's writer folder, so it
    is read only while its writer lives.
    """
    root = data_root()
    lock = file_lock(root / lock_name, shared=shared, blocking=False)
    try:
        lock.__enter__()
    except BlockingIOError:
        raise busy(_holders(root, note) or ["another process"]) from None
    text_file = None
    try:
        try:
            since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
            where = f" on host {socket.gethostname()}, started {since}" if host_and_time else ""
            text_file = _writer_folder() / note.format(token=secrets.token_hex(4))
            text_file.write_text(f"{holder} (pid {os.getpid()}{where})\n")
        except OSError:
            # A full or read-only disk: the lock holds all the same, only the others'
            # message cannot name the holder (the run then stops with its own message).
            log.debug("could not note the holder of %s", lock_name, exc_info=True)
        yield
    finally:
        if text_file is not None:
            text_file.unlink(missing_ok=True)
        lock.__exit__(None, None, None)


@contextlib.contextmanager
def data_root_lock(holder: str, exclusive: bool = False) -> Iterator[None]:
    """Hold the data root's run lock: shared for runs, exclusive for ``check --repair``.

    Never waits: when the lock cannot be had, :class:`DataRootBusy` says at once who
    holds it. The data root (not one project) is locked because raw files are shared
    between the projects that use it.

    Parameters
    ----------
    holder
        What takes the lock, as the others' messages will name it, e.g.
        ``"a run of project 'demo'"`` (the process id is added).

    Examples
    --------
    >>> with data_root_lock("a run of project 'demo'"):
    ...     with data_root_lock("check --repair of project 'demo'", exclusive=True):
    ...         pass
    Traceback (most recent call last):
    ...
    skyretriever.storage.DataRootBusy: a run of project 'demo' (pid ...) is using ...
    """
    root = data_root()

    def busy(holders: list[str]) -> DataRootBusy:
        return DataRootBusy(f"{' and '.join(holders)} is using {str(root)!r}; try again when "
                            "it ends")

    with _lock_naming_holder(_ROOT_LOCK, _HOLDER_FILE, holder, not exclusive, busy,
                             host_and_time=False):
        yield


def _refuse_after_disk_full() -> None:
    """Raise :class:`RunStopped` when an HDF5 write of this process failed for lack of space."""
    error = _HDF5_UNUSABLE["error"]
    if error is not None:
        raise RunStopped(f"{error}; HDF5 is not called again in this process (pid "
                         f"{os.getpid()}) after a write failed for lack of space") from error


def write_tables(
    relative: str,
    tables: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any] | None]],
    compression: str | None = None,
) -> FileInfo:
    """Write tables to one HDF5 file atomically and return its name, SHA-256 and size.

    Parameters
    ----------
    relative
        Path relative to the data root (from :func:`raw_filename` or :func:`reduced_filename`).
    tables
        ``{key: (frame, metadata)}``; metadata is any JSON-able mapping kept with the table.
    compression
        How tables above 64 kB are compressed (``gzip``, ``lzf``, ``none``); ``None``:
        this process's choice (:func:`set_compression`).

    The file is written under a temporary name in the same folder and renamed
    into place, replacing any older file of that name in one step.

    Raises
    ------
    DiskFull
        When the file system is full (or a quota reached): the temporary file
        is removed. The file is made by HDF5 in memory and written by Python,
        so HDF5 never meets the full disk; should an HDF5 call itself report
        one, this process calls HDF5 no more (later calls raise
        :class:`~skyretriever.errors.RunStopped`): after a failed write at file
        close HDF5 crashes the process (SIGSEGV) when it next cleans up.

    Examples
    --------
    >>> import pandas as pd
    >>> info = write_tables("raw/DEMO/RA010/x.h5", {"x": (pd.DataFrame({"mjd": [1.0]}), {"a": 1})})
    >>> read_table(info.filename, "x", info.checksum)[1]
    {'a': 1}
    """
    _refuse_parts_key(relative, tables)
    final = full_path(relative)
    filters = _FILTERS[_checked_compression(compression or current_compression())]
    # One table's records may be in scratch memory (the common case of one large table).
    converted = {key: (_frame_to_records(frame, scratch=len(tables) == 1), metadata)
                 for key, (frame, metadata) in tables.items()}
    with _file_in_memory(final) as (handle, image):
        for key, ((records, kinds), metadata) in converted.items():
            _write_described(handle, key, records, kinds, filters, "metadata",
                             dict(metadata or {}))
    return _place_file(relative, final, image[0])


def _refuse_parts_key(relative: str, tables: Mapping[str, Any]) -> None:
    if _PARTS in tables:
        raise StorageError(f"{_PARTS!r} names the parts of a table (write_table_parts), not a "
                           f"table of its own: choose another key for {relative!r}")


def _write_described(handle: h5py.Group, key: str, records: np.ndarray, kinds: list[list[str]],
                     filters: Mapping[str, Any], name: str, value: Any) -> None:
    """One table as a dataset, described by the JSON ``{"columns": kinds, name: value}``.

    The description is an attribute; HDF5 limits those to 64 kB, so a longer
    ``value`` (a long FITS header) goes in the dataset ``<key>.metadata`` instead.
    """
    dataset = _create_dataset(handle, key, records, filters)
    text = json.dumps(value, default=_json_default)
    columns = json.dumps({"columns": kinds})[:-1]
    if len(text) < _LARGEST_ATTRIBUTE:
        # {"columns": ..., name: ...} without parsing the value again
        description = f'{columns}, {json.dumps(name)}: {text}}}'
    else:
        handle.create_dataset(f"{key}{_METADATA_SUFFIX}",
                              data=np.frombuffer(text.encode(), dtype=np.uint8))
        description = f"{columns}}}"
    _write_text_attribute(dataset, _DESCRIPTION, description)


def _read_described(handle: h5py.Group, key: str, name: str) -> tuple[list[list[str]], Any]:
    """The column kinds and the ``name`` value of a dataset :func:`_write_described` wrote."""
    description = json.loads(handle[key].attrs[_DESCRIPTION])
    if name in description:
        return description["columns"], description[name]
    return description["columns"], json.loads(handle[f"{key}{_METADATA_SUFFIX}"][()].tobytes())


def write_table_parts(
    relative: str,
    tables: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any] | None]],
    compression: str | None = None,
) -> FileInfo:
    """Write tables as the parts of one HDF5 table (their rows back to back), atomically.

    Takes what :func:`write_tables` takes and is read the same way
    (:func:`read_table` of a key gives that table's rows and metadata; the
    file's keys are the tables'), but tables of the same columns cost one
    table's conversion and one dataset, not one each: a source's light curves
    (four of 100 epochs) are written in 1.9 ms instead of 2.5. Tables whose
    columns or types differ, or that have no columns, are written as
    :func:`write_tables` does.

    Examples
    --------
    >>> one, two = pd.DataFrame({"mjd": [1.0, 2.0]}), pd.DataFrame({"mjd": [3.0]})
    >>> info = write_table_parts("raw/DEMO/RA010/p.h5", {"a": (one, {"n": 1}), "b": (two, None)})
    >>> read_table_keys(info.filename)
    ['a', 'b']
    >>> frame, metadata = read_table(info.filename, "b", info.checksum)
    >>> frame["mjd"].tolist(), metadata
    ([3.0], {})
    """
    _refuse_parts_key(relative, tables)
    names = list(next(iter(tables.values()))[0].columns) if tables else []
    # Each table's columns, taken from a view without ``attrs`` (which pandas would
    # deep-copy into every column taken).
    columns = [[frame[name].to_numpy() for name in names] if list(frame.columns) == names
               else None for frame in map(_without_attrs, (frame for frame, _ in tables.values()))]
    if (len(columns) < 2 or not names or None in columns
            or any([v.dtype for v in table] != [v.dtype for v in columns[0]]
                   for table in columns[1:])):
        return write_tables(relative, tables, compression)
    final = full_path(relative)
    filters = _FILTERS[_checked_compression(compression or current_compression())]
    records, kinds = _columns_to_records({name: np.concatenate(arrays)
                                          for name, arrays in zip(names, zip(*columns))},
                                         scratch=True)
    ends = np.cumsum([len(table[0]) if table else 0 for table in columns]).tolist()
    parts = [[key, start, stop, dict(metadata or {})] for (key, (_, metadata)), start, stop
             in zip(tables.items(), [0, *ends[:-1]], ends)]
    with _file_in_memory(final) as (handle, image):
        _write_described(handle, _PARTS, records, kinds, filters, "parts", parts)
    return _place_file(relative, final, image[0])


@contextlib.contextmanager
def _file_in_memory(final: Path) -> Iterator[tuple[h5py.Group, list[bytes]]]:
    """:func:`_memory_file` for the product ``final``, HDF5's own full-disk error made
    :class:`DiskFull` (and HDF5 not called again in this process, see :func:`write_tables`).

    HDF5 builds the file in memory and Python writes its bytes: a full disk then fails
    a plain write, never HDF5's own (after which HDF5 crashes the process at exit).
    """
    _refuse_after_disk_full()
    try:
        with _memory_file(f"{final.name}.in-memory") as made:
            yield made
    except Exception as error:
        full = disk_full_from(error, data_root()) if is_disk_full(error) else None
        if full is None:
            raise
        _HDF5_UNUSABLE["error"] = full
        raise full from error


def _place_file(relative: str, final: Path, *pieces: bytes | memoryview) -> FileInfo:
    """Write a file's bytes (``pieces`` one after the other, never joined) under a temporary
    name, rename it to ``final``, describe it."""
    checksum = _sha256_of(pieces)
    with atomic_write(final, disk_full_at=data_root()) as temporary:
        with open(temporary, "wb") as handle:
            for piece in pieces:
                handle.write(piece)
        status = temporary.stat()           # the rename keeps the inode, its size and time
    return FileInfo(filename=str(relative), checksum=checksum, file_size=status.st_size,
                    mtime_ns=status.st_mtime_ns)


def _sha256_of(pieces: Sequence[bytes | memoryview]) -> str:
    """Hex SHA-256 of the bytes of ``pieces`` one after the other."""
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    return digest.hexdigest()


#: File access and creation properties of an in-memory HDF5 file, as h5py makes them, by
#: process (made once: h5py's ``File()`` builds them again for every file).
_MEMORY_FILE_PROPERTIES: dict[int, tuple[Any, Any]] = {}
#: HDF5 grows a file in memory by blocks of this size (h5py's own). Blocks of the data's size
#: were slower in every case measured (best of 8, one process): a 20-second TESS source's
#: 27 MB of records in 18.0 ms growing by 64 kB against 23.9 (compressed) and 7.5 against
#: 39.4 (not compressed: a file a little larger than its data took two such blocks and a
#: copy), a 2-minute light curve's 2.3 MB in 1.9 against 2.2: a block is memory touched.
_MEMORY_BLOCK = 64 * 1024


@contextlib.contextmanager
def _memory_file(name: str) -> Iterator[tuple[h5py.Group, list[bytes]]]:
    """An HDF5 file in memory: yields its root group and a list that gets the file's bytes.

    The same file as ``h5py.File(name, "w", driver="core", backing_store=False)``
    with its properties made once per process.
    """
    properties = _MEMORY_FILE_PROPERTIES.get(os.getpid())
    if properties is None:
        with h5py.File(name, "w", driver="core", backing_store=False,
                       block_size=_MEMORY_BLOCK) as handle:
            properties = (handle.id.get_access_plist(), handle.id.get_create_plist())
        _MEMORY_FILE_PROPERTIES[os.getpid()] = properties
    access, creation = properties
    file_id = h5py.h5f.create(name.encode("utf-8"), h5py.h5f.ACC_TRUNC, fapl=access,
                              fcpl=creation)
    try:
        image: list[bytes] = []
        yield h5py.Group(h5py.h5g.open(file_id, b"/")), image
        h5py.h5f.flush(file_id)
        image.append(file_id.get_file_image())
    finally:
        file_id.close()


def _checked_product(relative: str, checksum: str | None, file_size: int | None) -> Path:
    """The product file's path, after checking its size and SHA-256 against its row."""
    _refuse_after_disk_full()
    path = full_path(relative)
    if checksum is not None or file_size is not None:
        if not path.exists():
            raise StorageError(f"product file {str(path)!r} is missing")
        if not verify_file(path, checksum, file_size):
            raise ChecksumError(
                f"product file {str(path)!r} does not match the checksum in its database "
                "row (changed or damaged on disk); the next run will make it again"
            )
    return path


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
    path = _checked_product(relative, checksum, file_size)
    if path.suffix == FILES_SUFFIX:
        return _table_from_archive(path, key)
    try:
        with h5py.File(path, "r") as handle:
            if key not in handle or key == _PARTS:       # a part of one table, if anything
                if _PARTS in handle:
                    kinds, parts = _read_described(handle, _PARTS, "parts")
                    for part, start, stop, metadata in parts:
                        if part == key:
                            return _records_to_frame(handle[_PARTS][start:stop], kinds), metadata
                raise StorageError(f"product file {str(path)!r} has no table {key!r}")
            dataset = handle[key]
            if isinstance(dataset, h5py.Group):
                return _table_from_files(path, key, dataset)
            kinds, metadata = _read_described(handle, key, "metadata")
            records = dataset[()]
    except (OSError, KeyError, ValueError) as error:
        raise StorageError(f"cannot read table {key!r} of {str(path)!r}: {error}") from None
    return _records_to_frame(records, kinds), metadata


#: Readers of tables kept as the files they were read from (:func:`write_files_table`), by
#: name: ``reader(files, options) -> DataFrame`` with ``files`` a list of (name, bytes).
_FILE_READERS: dict[str, Callable[[list[tuple[str, bytes]], dict[str, Any]], pd.DataFrame]] = {}
_READER = "reader"


def register_file_reader(name: str, reader: Callable[[list[tuple[str, bytes]], dict[str, Any]],
                                                     pd.DataFrame]) -> None:
    """Name the function that makes a table of files kept by :func:`write_files_table`.

    The module that writes such files registers its reader when it is imported
    (the MAST observatories register ``mast-lightcurves``).
    """
    _FILE_READERS[name] = reader


def write_files_table(relative: str, key: str, files: Sequence[tuple[str, bytes]], reader: str,
                      options: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
                      ) -> FileInfo:
    """Keep a table as the files it was read from (an archive's FITS files, byte for byte).

    The files are kept as they came, in one tar archive (:func:`files_filename`:
    ``relative`` with ``.tar`` for its suffix) after a JSON member
    (``skyretriever.json``) naming the registered ``reader``
    (:func:`register_file_reader`), the ``options`` it needs, the table's ``key``
    and ``metadata``; :func:`read_table` then returns ``reader(files, options)``
    and ``metadata``, as for a table written by :func:`write_tables`. Storing the
    files costs one write of their bytes and their SHA-256, where a table costs
    converting and compressing every column. ``tar xf`` gives the files back. A
    product of the same name written as HDF5 by an earlier version is removed once
    the archive is in place.

    Examples
    --------
    >>> register_file_reader("lines", lambda files, options: pd.DataFrame(
    ...     {options["column"]: [line for _, data in files for line in data.decode().split()]}))
    >>> info = write_files_table("raw/DEMO/RA010/y.h5", "y", [("a.txt", b"1 2"), ("b.txt", b"3")],
    ...                          "lines", {"column": "word"}, {"source_name": "y"})
    >>> info.filename
    'raw/DEMO/RA010/y.tar'
    >>> frame, metadata = read_table(info.filename, "y", info.checksum)
    >>> list(frame["word"]), metadata
    (['1', '2', '3'], {'source_name': 'y'})
    >>> import tarfile
    >>> tarfile.open(full_path(info.filename)).getnames()
    ['skyretriever.json', 'a.txt', 'b.txt']
    """
    description = {"key": key, _READER: reader, "files": [name for name, _ in files],
                   "options": dict(options), "metadata": dict(metadata or {})}
    text = json.dumps(description, default=_json_default).encode("utf-8")
    pieces: list[bytes | memoryview] = [*_tar_member(_FILES_DESCRIPTION, text)]
    for name, content in files:
        pieces += _tar_member(sanitize_name(name), content)
    written = sum(len(piece) for piece in pieces)
    # Two empty blocks end the archive; tar's own writers pad it to whole records.
    end = 2 * tarfile.BLOCKSIZE
    pieces.append(bytes(end + (-(written + end)) % tarfile.RECORDSIZE))
    name = files_filename(relative)
    info = _place_file(name, full_path(name), *pieces)
    if name != relative:
        full_path(relative).unlink(missing_ok=True)
    return info


#: The suffix of a product kept as the files it was read from (:func:`write_files_table`).
FILES_SUFFIX = ".tar"
#: The first member of such a product: what :func:`read_table` needs, as JSON.
_FILES_DESCRIPTION = "skyretriever.json"


def files_filename(relative: str) -> str:
    """The name :func:`write_files_table` gives a product named ``relative``.

    >>> files_filename("raw/TESS/RA084/TESS_photometry_pi_Men_0a1b2c3d4e.h5")
    'raw/TESS/RA084/TESS_photometry_pi_Men_0a1b2c3d4e.tar'
    """
    return str(PurePosixPath(relative).with_suffix(FILES_SUFFIX))


def _tar_member(name: str, content: bytes | memoryview) -> list[bytes | memoryview]:
    """A tar member's header, its content as it is, and the zeros that end its last block
    (no modification time: the same files always give the same bytes)."""
    member = tarfile.TarInfo(name)
    member.size, member.mode, member.mtime = len(content), 0o644, 0
    header = member.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    return [header, content, bytes(-len(content) % tarfile.BLOCKSIZE)]


def _table_from_archive(path: Path, key: str) -> tuple[pd.DataFrame, dict]:
    """The table of a :func:`write_files_table` archive, made by its reader."""
    description, files = _read_archive(path)
    if description.get("key") != key:
        raise StorageError(f"product file {str(path)!r} has no table {key!r}")
    return _table_of_files(path, key, description, files)


def _read_archive(path: Path, with_files: bool = True
                  ) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """The description and the files of a :func:`write_files_table` archive."""
    try:
        with tarfile.open(path, "r:") as archive:
            first = archive.next()
            if first is None or first.name != _FILES_DESCRIPTION:
                raise StorageError(f"{str(path)!r} is not a product of kept files (its first "
                                   f"member is not {_FILES_DESCRIPTION})")
            description = json.loads(archive.extractfile(first).read())
            files = []
            if with_files:
                members = archive.getmembers()[1:]
                if len(members) != len(description["files"]):
                    raise StorageError(f"{str(path)!r} holds {len(members)} files, its "
                                       f"description names {len(description['files'])}")
                files = [(name, archive.extractfile(member).read())
                         for name, member in zip(description["files"], members)]
    except (OSError, tarfile.TarError, KeyError, ValueError, AttributeError) as error:
        raise StorageError(f"cannot read {str(path)!r}: {error}") from None
    return description, files


def _table_from_files(path: Path, key: str, group: h5py.Group) -> tuple[pd.DataFrame, dict]:
    """The table of a group of files kept in HDF5 (by versions before the archives)."""
    meta_name = _METADATA_SUFFIX.lstrip(".")
    description = json.loads(group[meta_name][()].tobytes()) if meta_name in group else {}
    files = [(file_name, group[str(number)][()].tobytes())
             for number, file_name in enumerate(description.get("files", []))]
    return _table_of_files(path, key, description, files)


def _table_of_files(path: Path, key: str, description: Mapping[str, Any],
                    files: list[tuple[str, bytes]]) -> tuple[pd.DataFrame, dict]:
    """``reader(files, options)`` of a product of kept files, and its metadata."""
    name = description.get(_READER)
    reader = _FILE_READERS.get(name)
    if reader is None:
        raise StorageError(f"table {key!r} of {str(path)!r} is kept as files for reader "
                           f"{name!r}, which is not registered (import the module that wrote it)")
    try:
        frame = reader(files, description.get("options") or {})
    except (OSError, KeyError, ValueError) as error:
        raise StorageError(f"cannot read table {key!r} of {str(path)!r} from its files: "
                           f"{error}") from None
    return frame, description.get("metadata") or {}


def read_table_keys(relative: str) -> list[str]:
    """The table keys stored in a product file."""
    _refuse_after_disk_full()
    path = full_path(relative)
    if path.suffix == FILES_SUFFIX:
        return [_read_archive(path, with_files=False)[0].get("key")]
    try:
        with h5py.File(path, "r") as handle:
            keys = [key for key in handle.keys()
                    if not key.endswith(_METADATA_SUFFIX) and key != _PARTS]
            if _PARTS in handle:
                keys += [part[0] for part in _read_described(handle, _PARTS, "parts")[1]]
            return keys
    except (OSError, KeyError, ValueError) as error:
        raise StorageError(f"cannot read {str(path)!r}: {error}") from None



def write_arrays(relative: str, groups: Mapping[str, tuple[Mapping[str, np.ndarray],
                                                        Mapping[str, Any] | None]],
                 compression: str | None = None) -> FileInfo:
    """Write groups of named arrays (image cubes) to one HDF5 file atomically.

    ``groups`` is ``{key: ({name: array}, metadata)}``: each key becomes an HDF5
    group holding one dataset per array (compressed as :func:`write_tables`
    does above 64 kB) and the metadata as JSON. Written in memory, then to a
    temporary name and renamed into place, as :func:`write_tables`.

    Examples
    --------
    >>> info = write_arrays("raw/DEMO/RA010/x_images.h5",
    ...                     {"s1": ({"flux": np.ones((2, 3, 3), np.float32)}, {"sector": 1})})
    >>> arrays, metadata = read_arrays(info.filename, "s1", info.checksum)
    >>> arrays["flux"].shape, metadata
    ((2, 3, 3), {'sector': 1})
    """
    final = full_path(relative)
    filters = _FILTERS[_checked_compression(compression or current_compression())]
    with _file_in_memory(final) as (handle, image):
        for key, (arrays, metadata) in groups.items():
            group = handle.create_group(key)
            for name, values in arrays.items():
                values = np.ascontiguousarray(values)
                options = filters if values.nbytes > _COMPRESS_ABOVE_BYTES and values.ndim else {}
                group.create_dataset(name, data=values, track_times=False, **options)
            text = json.dumps(dict(metadata or {}), default=_json_default)
            group.create_dataset(_METADATA_SUFFIX.lstrip("."),
                                 data=np.frombuffer(text.encode(), dtype=np.uint8))
    return _place_file(relative, final, image[0])


def read_arrays(relative: str, key: str | None = None, checksum: str | None = None,
                file_size: int | None = None
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]] | dict[str, tuple]:
    """The arrays and metadata of one group of a :func:`write_arrays` file (every group when
    ``key`` is None, by key), checking the file's size and SHA-256 first.

    Raises
    ------
    StorageError
        If the file or key is missing or unreadable.
    ChecksumError
        If the file's size or SHA-256 differs from what the database holds.
    """
    path = _checked_product(relative, checksum, file_size)
    meta_name = _METADATA_SUFFIX.lstrip(".")
    try:
        with h5py.File(path, "r") as handle:
            keys = list(handle.keys()) if key is None else [key]
            found = {}
            for name in keys:
                if name not in handle or not isinstance(handle[name], h5py.Group):
                    raise StorageError(f"product file {str(path)!r} has no array group {name!r}")
                group = handle[name]
                arrays = {item: group[item][()] for item in group if item != meta_name}
                metadata = json.loads(group[meta_name][()].tobytes()) if meta_name in group else {}
                found[name] = (arrays, metadata)
    except (OSError, KeyError, ValueError) as error:
        raise StorageError(f"cannot read arrays of {str(path)!r}: {error}") from None
    return found if key is None else found[key]


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
                or folder.name in (RAW_FOLDER, PROJECTS_FOLDER, QUARANTINE_FOLDER)):
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


# -- the project lock --------------------------------------------------------------------------
#: Names the lock file of one project folder (``DATA_ROOT/.skyretriever-project-<FOLDER>.lock``).
_PROJECT_LOCK = ".skyretriever-project-{folder}"
#: In a writer's temporary folder: what holds a project's lock.
_PROJECT_HOLDER_FILE = "project-{folder}.{token}.txt"


class ProjectBusy(StorageError):
    """Another run holds the lock of the same project folder."""


@contextlib.contextmanager
def project_lock(folder: str, holder: str, shared: bool = False) -> Iterator[None]:
    """Hold the lock of one project folder (from :func:`project_folder_name`) while inside.

    A run of a whole project holds it alone; runs of parts of it (the slices of a job
    array) share it, so they run together but never beside a whole run. Never waits:
    when the lock cannot be had, :class:`ProjectBusy` names the holders (what they are,
    process id, host and start time).

    Examples
    --------
    >>> with project_lock("DEMO", "a run of project 'demo'"):
    ...     with project_lock("DEMO", "a run of project 'demo'"):
    ...         pass
    Traceback (most recent call last):
    ...
    skyretriever.storage.ProjectBusy: project folder 'DEMO' is in use by a run of project 'demo' ...
    """
    root = data_root()

    def busy(holders: list[str]) -> ProjectBusy:
        return ProjectBusy(f"project folder {folder!r} is in use by {' and '.join(holders)} "
                           f"(data root {str(root)!r}); wait for it to end, or stop it, before "
                           "running the project again")

    with _lock_naming_holder(_PROJECT_LOCK.format(folder=folder),
                             _PROJECT_HOLDER_FILE.replace("{folder}", folder), holder, shared,
                             busy):
        yield
