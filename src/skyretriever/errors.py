"""Why a run stops before its end: a full disk, a read-only place, a database gone.

A failure that belongs to one source (a bad archive answer, a file that cannot
be parsed) is recorded on that source and the run goes on. A failure of the
machine under the run is not: a full disk, a read-only data root or database,
a database that went away would fail every remaining source one by one. Such
failures raise :class:`RunStopped` (its message is one line that says what and
where); the command line prints it and exits with a status of its own. Batches
committed before the stop are kept, and the next run goes on from there.

This module sits at the bottom of the layers: it imports nothing of the project.

Examples
--------
>>> error = OSError(28, "No space left on device")
>>> is_disk_full(error)
True
>>> str(DiskFull("/data", 12, need_mb=200))
'disk full: /data, 12 MB free (need 200)'
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "DiskFull",
    "RunStopped",
    "check_free_space",
    "disk_full_from",
    "free_megabytes",
    "is_disk_full",
    "is_infrastructure_error",
]

#: errno values that mean "no room to write" (a full file system or a quota).
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
#: errno values of a write that fails for a reason of the machine, not of the source.
_INFRASTRUCTURE = _NO_SPACE | {errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO,
                               errno.ESTALE, errno.ENOTCONN, errno.ENODEV}
#: How the libraries under us say "no space" when they give no errno (SQLite, HDF5 text).
_NO_SPACE_TEXTS = ("no space left on device", "disk quota exceeded", "database or disk is full",
                   "errno = 28,", "errno = 122,")
_INFRASTRUCTURE_TEXTS = ("read-only file system", "readonly database", "permission denied",
                         "input/output error", "disk i/o error")
#: Below this many free bytes, a write error that names no cause (netCDF says only
#: "NetCDF: HDF error") is taken as the disk being full.
_NEARLY_FULL_BYTES = 1 << 20


class RunStopped(RuntimeError):
    """A run stopped before its end for a reason outside the sources (one-line message).

    Committed batches are kept; fix the cause (free space, permissions, the
    database) and run again to go on.
    """


class DiskFull(RunStopped):
    """No room left to write under ``path``.

    Parameters
    ----------
    path
        The folder or file that could not be written.
    free_mb
        Megabytes free on its file system when the stop was decided.
    need_mb
        The threshold (``execution.min_free_mb``) when the stop comes from the
        check before a batch.
    """

    def __init__(self, path: str | os.PathLike, free_mb: int, need_mb: int | None = None) -> None:
        self.path, self.free_mb, self.need_mb = str(path), int(free_mb), need_mb
        need = f" (need {need_mb})" if need_mb is not None else ""
        super().__init__(f"disk full: {self.path}, {self.free_mb} MB free{need}")

    def __reduce__(self):
        # raised in worker processes and pickled back to the driver
        return type(self), (self.path, self.free_mb, self.need_mb)


def _existing(path: str | os.PathLike) -> Path:
    """``path`` or its nearest existing parent (a folder may not exist yet)."""
    path = Path(path)
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _free_bytes(path: str | os.PathLike) -> int:
    try:
        return shutil.disk_usage(_existing(path)).free
    except OSError:
        return 0


def free_megabytes(path: str | os.PathLike) -> int:
    """Megabytes free for writing on the file system of ``path`` (or its nearest parent).

    Examples
    --------
    >>> free_megabytes("/") >= 0
    True
    """
    return _free_bytes(path) // (1 << 20)


def check_free_space(path: str | os.PathLike, need_mb: int) -> None:
    """Raise :class:`DiskFull` when fewer than ``need_mb`` megabytes are free at ``path``."""
    free = free_megabytes(path)
    if free < need_mb:
        raise DiskFull(path, free, need_mb=need_mb)


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error, its causes and contexts, and the driver error SQLAlchemy wraps (``orig``)."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__]
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException):
            todo.append(orig)


def is_disk_full(error: BaseException) -> bool:
    """Whether an error (or what caused it) means that the disk or a quota is full."""
    for current in _chain(error):
        if isinstance(current, DiskFull):
            return True
        if isinstance(current, OSError) and current.errno in _NO_SPACE:
            return True
        text = str(current).lower()
        if any(phrase in text for phrase in _NO_SPACE_TEXTS):
            return True
    return False


def is_infrastructure_error(error: BaseException) -> bool:
    """Whether an error comes from the machine (disk, permissions, I/O), not from a source.

    Examples
    --------
    >>> is_infrastructure_error(PermissionError(13, "Permission denied"))
    True
    >>> is_infrastructure_error(ValueError("no column mjd"))
    False
    """
    for current in _chain(error):
        if isinstance(current, OSError) and current.errno in _INFRASTRUCTURE:
            return True
        text = str(current).lower()
        if any(phrase in text for phrase in _NO_SPACE_TEXTS + _INFRASTRUCTURE_TEXTS):
            return True
    return False


def disk_full_from(error: BaseException, path: str | os.PathLike) -> DiskFull | None:
    """A :class:`DiskFull` for ``path`` when ``error`` means no space, else ``None``.

    Call it before cleaning up what the failed write left (a temporary file):
    an error without a cause (``NetCDF: HDF error``) counts as a full disk only
    when the file system of ``path`` is then nearly full.
    """
    if isinstance(error, DiskFull):
        return error
    if is_disk_full(error) or (isinstance(error, (OSError, RuntimeError))
                               and _free_bytes(path) < _NEARLY_FULL_BYTES):
        return DiskFull(_existing(path), free_megabytes(path))
    return None
