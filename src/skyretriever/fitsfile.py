"""FITS files read fast: headers, structure checks and plain binary tables.

Light-curve files are plain FITS: a few headers and one binary table of
numbers. Reading them with astropy costs tens of milliseconds per file (it
builds objects for every card and column), which in a download thread holds
the interpreter's lock that every other download needs. This module reads
the headers' cards itself and maps the table onto a numpy structured array
in one step, falling back to astropy for tables that use what it does not
handle (scaled columns, variable-length arrays).

- :func:`scan_fits` walks the HDUs and checks the file is whole;
- :func:`validate_fits` and :func:`validate_fits_bytes` are that check as download
  validators (of a file, of a body in memory);
- :func:`read_fits_table` returns a binary table's columns and the headers;
- :func:`drop_repeated_cadences` keeps the first row of each cadence of a light
  curve (a file that holds a cadence twice must not count it as two points).

Examples
--------
>>> columns, hdus = read_fits_table("tess2018206045859-s0001-..._lc.fits", "LIGHTCURVE")  # doctest: +SKIP
>>> hdus[0].header["SECTOR"], columns["PDCSAP_FLUX"][:3]                                 # doctest: +SKIP
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FitsHDU", "InvalidFileError", "drop_repeated_cadences", "read_fits_table",
           "repeated_cadences", "scan_fits", "validate_fits", "validate_fits_bytes"]

BLOCK = 2880
CARD = 80
#: Keywords that describe a table's layout or the file's checksums, not what it holds.
STRUCTURAL_KEYWORD = re.compile(
    r"^(T(TYPE|FORM|UNIT|DISP|NULL|DIM|SCAL|ZERO)\d+|XTENSION|SIMPLE|BITPIX|NAXIS\d*|EXTEND|"
    r"PCOUNT|GCOUNT|TFIELDS|CHECKSUM|DATASUM|COMMENT|HISTORY|CONTINUE|)$"
)
_INTEGER = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([EeDd][+-]?\d+)?$")
_TFORM = re.compile(r"^\s*(\d*)([LXBIJKAEDCMPQ])")
_DTYPES = {"L": "i1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8",
           "C": ">c8", "M": ">c16"}


class InvalidFileError(ValueError):
    """A file is not a whole FITS file (cut short, an HTML page, a broken header)."""


@dataclass
class FitsHDU:
    """One header-and-data unit: its parsed header and where its data is in the file."""

    index: int
    header: dict[str, Any] = field(default_factory=dict)
    data_start: int = 0
    data_size: int = 0

    @property
    def name(self) -> str:
        """``EXTNAME``, or ``PRIMARY`` for the first HDU."""
        return str(self.header.get("EXTNAME") or ("PRIMARY" if self.index == 0 else ""))

    def described(self) -> dict[str, Any]:
        """The header without layout and checksum keywords (what is worth keeping as provenance)."""
        return {k: v for k, v in self.header.items() if not STRUCTURAL_KEYWORD.match(k)}


#: A string value: a quote, then characters with quotes doubled, then a quote (or the card's end).
_STRING_VALUE = re.compile(r"'((?:[^']|'')*)'?")
#: The keywords that say where each HDU's data is and how large it is (all a validation needs).
_LAYOUT_KEYWORD = re.compile(r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|PCOUNT|GCOUNT)$")


def _card_value(text: str) -> Any:
    """The value of a card's value field (after ``= ``): string, bool, int, float or ``None``."""
    text = text.strip()
    if text.startswith("'"):
        return _STRING_VALUE.match(text).group(1).replace("''", "'").rstrip()
    token = text.split("/", 1)[0].strip()
    if token in ("T", "F"):
        return token == "T"
    if _INTEGER.match(token):
        return int(token)
    if _FLOAT.match(token):
        return float(token.replace("D", "E").replace("d", "e"))
    return token or None


def _parse_header(cards: list[str], layout_only: bool = False) -> dict[str, Any]:
    """A header's values by keyword (the first card of a keyword counts); with ``layout_only``,
    only the keywords that place the data (:data:`_LAYOUT_KEYWORD`)."""
    header: dict[str, Any] = {}
    last_string_key = None
    for card in cards:
        keyword = card[:8].strip()
        if layout_only and not _LAYOUT_KEYWORD.match(keyword):
            continue
        if keyword == "CONTINUE" and last_string_key is not None:
            previous = header[last_string_key]
            if isinstance(previous, str) and previous.endswith("&"):
                header[last_string_key] = previous[:-1] + str(_card_value(card[8:]) or "")
            continue
        if card[8:10] != "= " or keyword in header:
            continue
        header[keyword] = _card_value(card[10:])
        last_string_key = keyword if isinstance(header[keyword], str) else None
    return header


def scan_fits(source: str | os.PathLike | bytes) -> list[FitsHDU]:
    """Every HDU of a FITS file (path or bytes), checking that the file is whole.

    Each header must end with ``END``; the first must start with ``SIMPLE =
    T``, the others with ``XTENSION``; and the file must end exactly where
    the sizes its headers declare say it does.

    Raises
    ------
    InvalidFileError
        Naming the file and what is wrong.
    """
    if isinstance(source, bytes):
        return _scan(source, "FITS data")
    return _scan(Path(source).read_bytes(), str(source))


def _scan(content: bytes | memoryview, where: str, layout_only: bool = False) -> list[FitsHDU]:
    size = len(content)
    hdus: list[FitsHDU] = []
    position = 0
    while position < size:
        number = len(hdus)
        expected = "SIMPLE" if number == 0 else "XTENSION"
        first = _text(content, position, position + 8).strip()
        if first != expected:
            start = _text(content, position, position + 40)
            raise InvalidFileError(f"{where}: HDU {number} does not start with {expected} "
                                   f"(not a FITS file; starts with {start!r})")
        cards: list[str] = []
        ended = False
        while not ended:
            text = _text(content, position, position + BLOCK)
            if len(text) < BLOCK:
                raise InvalidFileError(f"{where}: ends inside the header of HDU {number} (file "
                                       f"has {size} bytes; cut short, or not a FITS file)")
            position += BLOCK
            for start in range(0, BLOCK, CARD):
                card = text[start : start + CARD]
                if card[:8].strip() == "END":
                    ended = True
                    break
                cards.append(card)
        header = _parse_header(cards, layout_only)
        if number == 0 and header.get("SIMPLE") is not True:
            raise InvalidFileError(f"{where}: SIMPLE is not T (not a standard FITS file)")
        try:
            axes = [int(header[f"NAXIS{i}"]) for i in range(1, int(header["NAXIS"]) + 1)]
            bitpix = abs(int(header["BITPIX"]))
            pcount, gcount = int(header.get("PCOUNT", 0)), int(header.get("GCOUNT", 1))
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidFileError(f"{where}: HDU {number} has a broken header ({error})") from None
        elements = int(np.prod(axes)) if axes else 0
        data_size = bitpix // 8 * gcount * (pcount + elements) if axes else 0
        padded = -(-data_size // BLOCK) * BLOCK
        if position + padded > size:
            raise InvalidFileError(f"{where}: HDU {number} declares {data_size} bytes of data but "
                                   f"the file ends {size - position} bytes after its header "
                                   "(cut short)")
        hdus.append(FitsHDU(number, header, position, data_size))
        position += padded
    if not hdus:
        raise InvalidFileError(f"{where}: empty file")
    return hdus


def _text(content: bytes | memoryview, start: int, stop: int) -> str:
    """Bytes ``start:stop`` of ``content`` as ASCII text (what is not ASCII replaced)."""
    return bytes(content[start:stop]).decode("ascii", "replace")


def validate_fits(path: str | os.PathLike) -> None:
    """Raise :class:`InvalidFileError` unless ``path`` is a whole FITS file (a download validator).

    Examples
    --------
    >>> from skyretriever.net import HttpClient
    >>> HttpClient().download(url, "x.fits", validator=validate_fits)   # doctest: +SKIP
    """
    _scan(Path(path).read_bytes(), str(path), layout_only=True)


def validate_fits_bytes(content: bytes | memoryview) -> None:
    """:func:`validate_fits` of a file in memory (a validator of
    :meth:`~skyretriever.net.HttpClient.download_bytes`).

    Examples
    --------
    >>> validate_fits_bytes(b"<html>Service unavailable</html>")
    Traceback (most recent call last):
    ...
    skyretriever.fitsfile.InvalidFileError: FITS data: HDU 0 does not start with SIMPLE (not a FITS file; starts with '<html>Service unavailable</html>')
    """
    _scan(content, "FITS data", layout_only=True)


def _structured_dtype(header: dict[str, Any]) -> np.dtype | None:
    """The numpy dtype of one table row, or ``None`` if the table needs astropy."""
    names, formats, offsets = [], [], []
    offset = 0
    for number in range(1, int(header["TFIELDS"]) + 1):
        match = _TFORM.match(str(header.get(f"TFORM{number}", "")))
        if match is None:
            return None
        repeat = int(match.group(1) or 1)
        code = match.group(2)
        scaled = header.get(f"TSCAL{number}", 1) != 1 or header.get(f"TZERO{number}", 0) != 0
        if code in "PQ" or scaled:
            return None
        if code == "A":
            dtype, width = np.dtype(f"S{repeat}"), repeat
        elif code == "X":
            dtype, width = np.dtype(("u1", -(-repeat // 8))), -(-repeat // 8)
        else:
            base = np.dtype(_DTYPES[code])
            dtype = base if repeat == 1 else np.dtype((base, repeat))
            width = base.itemsize * repeat
        if width:
            names.append(str(header.get(f"TTYPE{number}", f"COL{number}")).strip())
            formats.append(dtype)
            offsets.append(offset)
        offset += width
    if offset != int(header["NAXIS1"]):
        return None
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": offset})


def read_fits_table(path: str | os.PathLike, name: str, content: bytes | None = None
                    ) -> tuple[dict[str, np.ndarray], list[FitsHDU]]:
    """The columns of binary table ``name`` (native byte order) and every HDU's header.

    Logical columns come back as booleans, character columns as ``str``. With
    ``content`` the file's bytes are those (``path`` then only names it in messages).

    Raises
    ------
    InvalidFileError
        If the file is not whole FITS, or has no binary table of that name.
    """
    if content is None:
        content = Path(path).read_bytes()
    hdus = _scan(content, str(path))
    table = next((hdu for hdu in hdus if hdu.name == name), None)
    if table is None or table.header.get("XTENSION") != "BINTABLE":
        raise InvalidFileError(f"{path}: no binary table named {name!r} "
                               f"(HDUs: {[hdu.name for hdu in hdus]})")
    dtype = _structured_dtype(table.header)
    if dtype is None:
        return _read_with_astropy(content, table.index), hdus
    rows = np.frombuffer(content, dtype=dtype, count=int(table.header["NAXIS2"]),
                         offset=table.data_start)
    columns: dict[str, np.ndarray] = {}
    for column in dtype.names:
        values = rows[column]
        kind = values.dtype.base.kind
        if kind == "S":
            columns[column] = np.char.rstrip(values.astype(str))
        elif values.dtype.base == np.dtype("i1"):
            columns[column] = values == ord("T")
        else:
            columns[column] = values.astype(values.dtype.base.newbyteorder("="))
    return columns, hdus


def _read_with_astropy(content: bytes, index: int) -> dict[str, np.ndarray]:
    from astropy.io import fits

    with fits.open(io.BytesIO(content), memmap=False) as hdul:
        data = hdul[index].data
        return {name: np.asarray(data[name]).astype(np.asarray(data[name]).dtype.newbyteorder("="))
                for name in data.columns.names}


def repeated_cadences(columns: dict[str, np.ndarray]) -> np.ndarray:
    """Which rows repeat a cadence of an earlier row: the same ``CADENCENO`` or the same ``TIME``.

    A missing (NaN) ``TIME`` repeats nothing: gaps are kept for the reduction to drop.

    Examples
    --------
    >>> repeated_cadences({"CADENCENO": np.array([5, 6, 6, 7]),
    ...                    "TIME": np.array([1.0, 2.0, 2.0, np.nan])}).tolist()
    [False, False, True, False]
    """
    length = len(next(iter(columns.values()))) if columns else 0
    repeated = np.zeros(length, dtype=bool)
    for name in ("CADENCENO", "TIME"):
        values = columns.get(name)
        if values is None or values.ndim != 1 or values.dtype.kind not in "iuf":
            continue
        usable = np.isfinite(values) if values.dtype.kind == "f" else np.ones(length, bool)
        index = np.flatnonzero(usable)
        picked = values[index]
        if len(picked) < 2 or bool((picked[1:] > picked[:-1]).all()):
            continue        # strictly increasing, as the missions write them: nothing repeats
        _, first = np.unique(picked, return_index=True)
        later = np.ones(len(index), dtype=bool)
        later[first] = False
        repeated[index[later]] = True
    return repeated


def drop_repeated_cadences(columns: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """The columns without the rows that repeat an earlier cadence, and how many went.

    A light-curve file (TESS, Kepler, K2) holds each cadence once; a file holding
    one twice (the same ``CADENCENO`` or ``TIME``) would give the reduction and
    the finders two independent points where there is one measurement. The first
    row of a cadence is kept; the caller records the count (the raw data's
    provenance keeps it with the file's headers).

    Examples
    --------
    >>> kept, dropped = drop_repeated_cadences({"CADENCENO": np.array([5, 6, 6]),
    ...                                         "TIME": np.array([1.0, 2.0, 2.0])})
    >>> kept["CADENCENO"].tolist(), dropped
    ([5, 6], 1)
    """
    repeated = repeated_cadences(columns)
    dropped = int(repeated.sum())
    if not dropped:
        return columns, 0
    return {name: values[~repeated] for name, values in columns.items()}, dropped
