"""Catalog tables read a chunk at a time, so memory stays flat however long the file is.

A reader cuts one table (a CSV, FITS, HDF5 or Parquet file, or a pandas table
already in memory) into raw chunks of :data:`CHUNK_ROWS` rows: chunk ``i``
holds rows ``i * chunk_rows`` to ``(i + 1) * chunk_rows``. Every chunk comes
out as the whole-file reader of the format would have made those rows (the
same pandas and astropy calls, the same types), and any chunk can be read
without reading the ones before it: Parquet row groups, FITS and HDF5 row
ranges are read directly; a CSV file is entered at a byte offset recorded
for every chunk (checked against the rows seen when the catalog was first
read) or, where that is not possible (compressed files, quoted line breaks),
by reading forward from the start.

A :class:`ChunkedTable` is a reader with a change applied to each chunk (a
remote catalog's cuts, its source names) and an optional cap on its rows;
that is what a catalog loader returns for a table too large to hold.

Examples
--------
>>> frame = pd.DataFrame({"name": list("abcde"), "ra": range(5), "dec": range(5)})
>>> reader = FrameReader(frame, chunk_rows=2)
>>> [list(chunk["name"]) for chunk in reader.chunks()]
[['a', 'b'], ['c', 'd'], ['e']]
>>> [list(chunk["name"]) for chunk in reader.chunks(2)]
[['e']]
"""

from __future__ import annotations

import abc
import bz2
import contextlib
import gc
import gzip
import io
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skyretriever import storage
from skyretriever.catalogs.errors import CatalogError

__all__ = [
    "CHUNK_ROWS",
    "CSV_OPTIONS",
    "ChunkedTable",
    "CsvReader",
    "FitsReader",
    "FrameReader",
    "Hdf5Reader",
    "ParquetReader",
    "TableReader",
    "open_table_file",
    "table_format",
]

#: Rows per chunk: a few MB of a pandas table with a few text columns.
CHUNK_ROWS = 20_000
#: How catalog CSV files are read: only empty fields are missing (names such as "NA"
#: or "nan" stay names), lines from "#" on are comments. A field is kept as written, white
#: space included (a name " lead" is not "lead"; numbers may have spaces around them);
#: the header's names are taken without the white space around them.
CSV_OPTIONS: dict[str, Any] = {"comment": "#", "keep_default_na": False, "na_values": [""]}
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zip", ".xz", ".zst", ".tar")
_SCAN_BLOCK = 1 << 20
_PARQUET_BUFFER = 1 << 16


def table_format(path: Path) -> str | None:
    """The format named by a file's extension (``csv``, ``fits``, ``hdf5``, ``parquet``), or None.

    Examples
    --------
    >>> table_format(Path("stars.fits.gz")), table_format(Path("x.pq")), table_format(Path("x.y"))
    ('fits', 'parquet', None)
    """
    suffixes = "".join(path.suffixes).lower()
    if suffixes.endswith((".csv", ".csv.gz", ".txt")):
        return "csv"
    if suffixes.endswith((".fits", ".fit", ".fits.gz", ".fts")):
        return "fits"
    if suffixes.endswith((".h5", ".hdf5", ".hdf")):
        return "hdf5"
    if suffixes.endswith((".parquet", ".pq")):
        return "parquet"
    return None


def open_table_file(path: str | Path, file_format: str, *, hdf5_path: str | None = None,
                    chunk_rows: int | None = None, scratch_dir: str | Path | None = None
                    ) -> TableReader:
    """A reader for a catalog file in ``file_format`` (``csv``, ``fits``, ``hdf5``, ``parquet``).

    ``scratch_dir`` is where a compressed FITS file is unpacked (once) so that its
    rows can be read in ranges; by default a temporary file removed with the reader.

    Raises
    ------
    CatalogError
        If the file cannot be opened as that format.
    """
    path = Path(path)
    if file_format == "csv":
        return CsvReader(path, chunk_rows=chunk_rows)
    if file_format == "parquet":
        return ParquetReader(path, chunk_rows=chunk_rows)
    if file_format == "fits":
        return FitsReader(path, chunk_rows=chunk_rows, scratch_dir=scratch_dir)
    if file_format == "hdf5":
        return Hdf5Reader(path, hdf5_path=hdf5_path, chunk_rows=chunk_rows)
    raise CatalogError(f"catalog file {str(path)!r}: unknown format {file_format!r}")


class TableReader(abc.ABC):
    """Raw chunks of one table, in order; chunk ``i`` starts at row ``i * chunk_rows``.

    Subclasses set :attr:`what`, :attr:`rows` (once known) and implement
    :meth:`empty` and :meth:`_chunks`.
    """

    #: The start of every error message about this table.
    what: str = "cannot read the catalog"
    #: Number of rows, once known (a CSV file's only after :meth:`scan`).
    rows: int | None = None
    #: At least the number of rows, if known before :meth:`scan` (to size arrays once).
    row_bound: int | None = None
    #: Whether :meth:`scan` must read to the end even when the caller needs fewer rows.
    needs_full_scan: bool = False
    #: Set by a :meth:`scan` that learnt something changing earlier chunks: scan again.
    rescan_needed: bool = False

    def __init__(self, chunk_rows: int | None = None) -> None:
        self.chunk_rows = int(chunk_rows or CHUNK_ROWS)
        if self.chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")

    @abc.abstractmethod
    def empty(self) -> pd.DataFrame:
        """The table's columns, with their types, and no rows."""

    def scan(self) -> Iterator[pd.DataFrame]:
        """Every chunk from the first: the pass that checks the rows when a catalog loads."""
        return self.chunks(0)

    def chunks(self, first: int = 0) -> Iterator[pd.DataFrame]:
        """Chunks ``first``, ``first + 1``, ... to the end of the table."""
        return self._guarded(self._chunks(max(0, int(first))))

    @abc.abstractmethod
    def _chunks(self, first: int) -> Iterator[pd.DataFrame]:
        """Chunks ``first``, ``first + 1``, ... to the end, unguarded (each reader's own)."""

    def _guarded(self, chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        with self._reading():
            yield from chunks

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Any failure to read becomes a CatalogError that names the file and format."""
        try:
            yield
        except CatalogError:
            raise
        except Exception as error:
            raise CatalogError(f"{self.what}: {error}") from None

    def _chunk_count(self) -> int:
        return -(-(self.rows or 0) // self.chunk_rows)


class FrameReader(TableReader):
    """A pandas table already in memory (what a loader returned), in chunks.

    Examples
    --------
    >>> reader = FrameReader(pd.DataFrame({"x": [1, 2, 3]}), chunk_rows=2)
    >>> [len(chunk) for chunk in reader.chunks()]
    [2, 1]
    """

    def __init__(self, frame: pd.DataFrame, chunk_rows: int | None = None) -> None:
        super().__init__(chunk_rows)
        self.frame = frame
        self.rows = self.row_bound = len(frame)

    def empty(self) -> pd.DataFrame:
        return self.frame.iloc[:0]

    def _chunks(self, first: int) -> Iterator[pd.DataFrame]:
        for start in range(first * self.chunk_rows, self.rows, self.chunk_rows):
            yield self.frame.iloc[start : start + self.chunk_rows]


# -- CSV -----------------------------------------------------------------------------------------
def refuse_nul_bytes(path: Path, refuse: bool = True) -> int | None:
    """pandas cuts a CSV field at a NUL byte without a word; refuse such files instead.

    Returns the number of lines (a bound on the rows; None for a gzipped file,
    which is not looked into).
    """
    if path.suffix == ".gz":
        return None
    line, offset = 1, 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            where = block.find(b"\x00") if refuse else -1
            if where >= 0:
                line += block.count(b"\n", 0, where)
                raise CatalogError(f"catalog file {str(path)!r} has a NUL byte on line {line} "
                                   f"(byte {offset + where}); remove it, it cannot be in a name")
            line += block.count(b"\n")
            offset += len(block)
    return line


def _csv_kind(values: pd.Series) -> str:
    """What pandas made of a CSV column in one chunk: int, uint, float, all-missing, bool, text.

    ``i-`` is an int column with a negative value; ``b`` is also text holding only
    True/False and missing values (what pandas makes of a bool column with gaps).
    """
    kind = values.dtype.kind
    if kind == "i":
        return "i-" if bool((values.to_numpy() < 0).any()) else "i"
    if kind == "u":
        return "u"
    if kind == "f":
        return "n" if bool(values.isna().all()) else "f"
    if kind == "b":
        return "b"
    present = values.dropna()
    if len(present) and all(isinstance(value, (bool, np.bool_)) for value in present):
        return "b"
    return "o"


def _csv_whole_file_type(kinds: set[str]) -> Any:
    """The type pandas gives a column read whole, from what it made of each chunk.

    None when the chunks' own values already equal those of the whole-file read
    (as Python values): only where they differ must the chunks be read again with
    the type forced. Whole-file pandas falls back from int to uint to float to
    bool to text; a column that is text in one chunk is text everywhere.

    Examples
    --------
    >>> _csv_whole_file_type({"i", "n"}), _csv_whole_file_type({"i", "o"})
    (<class 'numpy.float64'>, <class 'object'>)
    >>> _csv_whole_file_type({"b", "n"}) is None, _csv_whole_file_type({"i-", "u"})
    (True, <class 'object'>)
    """
    if len(kinds) <= 1 or kinds <= {"b", "n"} or kinds <= {"o", "n"}:
        return None
    if "o" in kinds or "b" in kinds:
        return object
    if "f" in kinds or "n" in kinds:
        return np.float64
    if "u" in kinds:
        return object if "i-" in kinds else np.uint64
    return None  # "i" and "i-": both int64


def _fingerprint(chunk: pd.DataFrame) -> tuple[int, int] | None:
    """Hashes of a chunk's first and last rows, to check a chunk read from elsewhere."""
    if not len(chunk):
        return None
    try:
        hashes = pd.util.hash_pandas_object(chunk.iloc[[0, -1]], index=False).to_numpy()
    except (TypeError, ValueError):
        return None
    return int(hashes[0]), int(hashes[1])


#: Separators a catalog file's header may use instead of commas.
_OTHER_SEPARATORS = (";", "\t", "|")


def _sniff_separator(path: Path) -> str | None:
    """The separator of a text file whose header line has no comma but ``;``, tab or ``|``.

    Only the first line that is not a comment is looked at (uncompressed files), so
    a comma-separated file is never reread in another way.
    """
    if path.suffix.lower() in _COMPRESSED_SUFFIXES:
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            header = next((line for line in handle if line.strip() and not line.startswith("#")),
                          "")
    except OSError:
        return None
    if "," in header:
        return None
    counts = {separator: header.count(separator) for separator in _OTHER_SEPARATORS}
    best = max(counts, key=counts.get)
    return best if counts[best] > 0 else None


class CsvReader(TableReader):
    """A CSV file read ``chunk_rows`` rows at a time with pandas.

    pandas guesses each column's type from the rows it reads at once; read in
    chunks it may guess differently per chunk (a column of names that are numbers
    in one chunk only). :meth:`scan` notes what each chunk held; where the
    chunks disagree it asks for a second scan with the type the whole-file read
    would have given (:func:`_csv_whole_file_type`), used for every read after.

    Parameters
    ----------
    path
        The CSV file (compressed by extension, as pandas reads it).
    options
        Options of ``pandas.read_csv`` (default :data:`CSV_OPTIONS`).
    what
        Start of error messages (default: "cannot read catalog file '<path>' as csv").
    refuse_nul
        Refuse a file with a NUL byte (pandas would cut the field there silently).
    empty_ok
        An empty file is a table without columns instead of an error.
    chunk_rows
        Rows per chunk (default :data:`CHUNK_ROWS`).
    """

    needs_full_scan = True

    def __init__(self, path: str | Path, *, options: dict[str, Any] | None = None,
                 what: str | None = None, refuse_nul: bool = True, empty_ok: bool = False,
                 chunk_rows: int | None = None) -> None:
        super().__init__(chunk_rows)
        self.path = Path(path)
        self.options = dict(CSV_OPTIONS if options is None else options)
        if options is None and "sep" not in self.options:
            separator = _sniff_separator(self.path)
            if separator is not None:
                self.options["sep"] = separator
        self.what = what or f"cannot read catalog file {str(self.path)!r} as csv"
        lines = refuse_nul_bytes(self.path, refuse_nul)
        if self.path.suffix.lower() not in _COMPRESSED_SUFFIXES:
            self.row_bound = lines
        self._types: dict[str, Any] = {}
        self._scanned = False
        self._fingerprints: list[tuple[int, int] | None] = []
        # Byte offset of every chunk's first row: None until needed, False if unusable.
        self._offsets: list[int] | None | bool = None
        with self._reading():
            try:
                self._empty = pd.read_csv(self.path, nrows=0, **self.options)
            except pd.errors.EmptyDataError:
                if not empty_ok:
                    raise
                self._empty = pd.DataFrame()
                self.rows = 0
        # "name, ra, dec": the header's names without their spaces (unless that makes two alike)
        self._names: list[str] | None = None
        stripped = [str(column).strip() for column in self._empty.columns]
        if stripped != list(self._empty.columns) and len(set(stripped)) == len(stripped):
            self._names = stripped
            self._empty.columns = stripped
        self.columns = list(self._empty.columns)

    def empty(self) -> pd.DataFrame:
        return self._empty

    def _read(self, source: Any, **options: Any) -> pd.io.parsers.TextFileReader:
        if self._names is not None and "names" not in options:
            options.update(names=self._names, header=0)
        return pd.read_csv(source, chunksize=self.chunk_rows, low_memory=False,
                           dtype=self._types or None, **self.options, **options)

    def scan(self) -> Iterator[pd.DataFrame]:
        return self._guarded(self._scan())

    def _scan(self) -> Iterator[pd.DataFrame]:
        if not self.columns:
            return
        first_scan = not self._scanned
        kinds: dict[str, set[str]] = {column: set() for column in self.columns}
        fingerprints, rows = [], 0
        with self._read(self.path) as chunks:
            for chunk in chunks:
                if first_scan:
                    for column in chunk.columns:
                        kinds.setdefault(column, set()).add(_csv_kind(chunk[column]))
                fingerprints.append(_fingerprint(chunk))
                rows += len(chunk)
                yield chunk
        self.rows, self._fingerprints, self._scanned = rows, fingerprints, True
        self._offsets = None
        types = {column: kind for column, found in kinds.items()
                 if (kind := _csv_whole_file_type(found)) is not None}
        self.rescan_needed = bool(first_scan and types)
        if self.rescan_needed:
            self._types = types

    def _chunks(self, first: int) -> Iterator[pd.DataFrame]:
        if not self.columns or (self._scanned and first >= self._chunk_count()):
            return
        if first > 0 and self._offsets is None:
            self._offsets = self._chunk_offsets() or False
        if first > 0 and self._offsets:
            chunks = self._chunks_from_offset(first)
            checked = next(chunks, None)
            if checked is not None:
                yield checked
                yield from chunks
                return
            self._offsets = False  # the lines are not the rows: read from the start
        with self._read(self.path) as chunks:
            for index, chunk in enumerate(chunks):
                if index >= first:
                    yield chunk

    def _chunks_from_offset(self, first: int) -> Iterator[pd.DataFrame]:
        """Chunks from a recorded byte offset; yields nothing if the first is not as scanned."""
        offsets = self._offsets
        if not isinstance(offsets, list) or first >= len(offsets):
            return
        expected = min(self.chunk_rows, (self.rows or 0) - first * self.chunk_rows)
        with open(self.path, "rb") as handle:
            handle.seek(offsets[first])
            try:
                chunks = self._read(handle, header=None, names=self.columns)
                chunk = next(chunks, None)
            except ValueError:  # pandas' parser errors, text cut in a character
                return
            with chunks:
                seen = None if chunk is None else _fingerprint(chunk)
                if (seen is None or len(chunk) != expected or list(chunk.columns) != self.columns
                        or seen != self._fingerprints[first]):
                    return
                yield chunk
                yield from chunks

    def _chunk_offsets(self) -> list[int] | None:
        """Byte offsets of rows 0, chunk_rows, 2 * chunk_rows, ... if lines are rows.

        A line is a row unless it is empty, blank or starts with "#" (as pandas
        skips them); the first row is the header. A file with a carriage return
        alone, or a compressed one, gets no offsets. Quoted fields that hold line
        breaks make the offsets wrong, which reading checks (row count and the
        first and last rows of the chunk).
        """
        if not self._scanned or self.path.suffix.lower() in _COMPRESSED_SUFFIXES:
            return None
        comment = self.options.get("comment")
        skipped = [10, 13] + ([ord(comment)] if comment else [])
        step, offsets, record, base, carry = self.chunk_rows, [], 0, 0, b""
        with open(self.path, "rb") as handle:
            while True:
                block = handle.read(_SCAN_BLOCK)
                data = carry + block
                end = data.rfind(b"\n") + 1 if block else len(data)
                if end == 0:
                    if not block:
                        break
                    carry = data
                    continue
                part = np.frombuffer(data, dtype=np.uint8, count=end)
                after = np.flatnonzero(part == 13) + 1
                if np.any(part[after[after < end]] != 10):
                    return None  # a carriage return alone ends a line for pandas
                stops = np.flatnonzero(part == 10)
                if not block and (not len(stops) or stops[-1] != end - 1):
                    stops = np.append(stops, end)  # the last line has no line break
                starts = np.concatenate(([0], stops[:-1] + 1)).astype(np.int64)
                first_byte = part[starts]
                is_row = ~np.isin(first_byte, skipped)
                for index in np.flatnonzero(np.isin(first_byte, (9, 32))):
                    is_row[index] = bool(bytes(part[starts[index] : stops[index]]).strip(b" \t\r"))
                numbers = record + np.cumsum(is_row) - 1  # record number of each line
                wanted = is_row & (numbers >= 1) & ((numbers - 1) % step == 0)
                offsets.extend(int(base + start) for start in starts[wanted])
                record += int(is_row.sum())
                base += end
                carry = data[end:]
                if not block:
                    break
        rows = self.rows or 0
        if record - 1 != rows or len(offsets) != -(-rows // step):
            return None
        return offsets


# -- Parquet -------------------------------------------------------------------------------------
class ParquetReader(TableReader):
    """A Parquet file read in batches (``pyarrow.parquet.ParquetFile.iter_batches``).

    Chunks are cut at multiples of ``chunk_rows`` whatever the row groups; a chunk
    is entered at its row group. An integer column with a missing value anywhere
    in the file is made float in every chunk, as the whole-file read makes it.
    """

    def __init__(self, path: str | Path, chunk_rows: int | None = None) -> None:
        super().__init__(chunk_rows)
        import pyarrow.parquet as pq

        self.path = Path(path)
        self.what = f"cannot read catalog file {str(self.path)!r} as parquet"
        with self._reading(), pq.ParquetFile(self.path) as file:
            meta = file.metadata
            sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            self._group_starts = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
            self.rows = self.row_bound = int(meta.num_rows)
            self._schema = file.schema_arrow
            self._float_columns = self._integers_with_gaps(file)
            self._empty = self._to_pandas(self._schema.empty_table())

    def _integers_with_gaps(self, file: Any) -> set[str]:
        import pyarrow as pa

        meta, found = file.metadata, set()
        leaves = {}
        if meta.num_row_groups:
            group = meta.row_group(0)
            leaves = {group.column(j).path_in_schema: j for j in range(group.num_columns)}
        for field in self._schema:
            if not pa.types.is_integer(field.type) or field.name not in leaves:
                continue
            for index in range(meta.num_row_groups):
                column = meta.row_group(index).column(leaves[field.name])
                stats = column.statistics
                if stats is not None and stats.has_null_count:
                    gaps = stats.null_count
                else:
                    gaps = file.read_row_group(index, columns=[field.name]).column(0).null_count
                if gaps:
                    found.add(field.name)
                    break
        return found

    def _to_pandas(self, table: Any) -> pd.DataFrame:
        frame = table.to_pandas()
        for name in self._float_columns:
            dtype = frame[name].dtype if name in frame.columns else None
            if isinstance(dtype, np.dtype) and dtype.kind in "iu":  # not pandas' Int64
                frame[name] = frame[name].astype(np.float64)
        return frame

    def empty(self) -> pd.DataFrame:
        return self._empty

    def _chunks(self, first: int) -> Iterator[pd.DataFrame]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        start, size = first * self.chunk_rows, self.chunk_rows
        if start >= self.rows:
            return
        group = int(np.searchsorted(self._group_starts, start, side="right")) - 1
        skip = start - int(self._group_starts[group])
        pending, pending_rows = [], 0
        metadata = self._schema.metadata
        # Buffered reads: a row group's column chunks are read a piece at a time, not whole
        # (a file written in one row group of a million rows stays cheap to read).
        with pq.ParquetFile(self.path, buffer_size=_PARQUET_BUFFER) as file:
            groups = range(group, file.metadata.num_row_groups)
            for batch in file.iter_batches(batch_size=size, row_groups=groups, use_threads=False):
                if skip:
                    if batch.num_rows <= skip:
                        skip -= batch.num_rows
                        continue
                    batch, skip = batch.slice(skip), 0
                pending.append(batch)
                pending_rows += batch.num_rows
                while pending_rows >= size:
                    table = pa.Table.from_batches(pending).replace_schema_metadata(metadata)
                    yield self._to_pandas(table.slice(0, size))
                    rest = table.slice(size)
                    pending, pending_rows = rest.to_batches(), rest.num_rows
            if pending_rows:
                table = pa.Table.from_batches(pending).replace_schema_metadata(metadata)
                yield self._to_pandas(table)


# -- FITS and HDF5 (through astropy) -------------------------------------------------------------
def _decode_bytes(frame: pd.DataFrame, columns: list[str], padded: bool) -> pd.DataFrame:
    """FITS and HDF5 text columns arrive as bytes; make them text.

    FITS pads text with spaces, which are not part of the value (its standard says
    so): those trailing spaces go (``padded``). Leading spaces are the value's own
    and stay, as everything does in HDF5: a name is kept exactly.
    """
    def decode(value: Any) -> Any:
        if not isinstance(value, bytes):
            return value
        text = value.decode("utf-8", "replace")
        return text.rstrip(" ") if padded else text

    for column in columns:
        if column in frame.columns:
            frame[column] = frame[column].map(decode)
    return frame


def _byte_columns(frame: pd.DataFrame) -> list[str]:
    """Columns whose first value is bytes: the whole-file reader decoded those (and only those)."""
    return [column for column in frame.columns if frame[column].dtype == object
            and len(frame) and isinstance(frame[column].iloc[0], bytes)]


def _table_to_frame(table: Any) -> pd.DataFrame:
    names = [name for name in table.colnames if len(table[name].shape) <= 1]
    return table[names].to_pandas()


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class FitsReader(TableReader):
    """The first table of a FITS file, read in row ranges.

    A chunk's rows are read from the file as bytes and given, behind the table's
    header (with the chunk's row count), to ``Table.read(format="fits")``: each
    chunk is what the whole-file read makes of those rows (NaN and empty text
    masked, TNULL integers masked, scaled columns, trailing spaces removed), then
    ``to_pandas()``. A compressed file (gzip, bzip2) is unpacked first: into
    ``scratch_dir`` (kept, and reused while newer than the file), or into a
    temporary file removed with the reader.
    """

    def __init__(self, path: str | Path, chunk_rows: int | None = None,
                 scratch_dir: str | Path | None = None) -> None:
        super().__init__(chunk_rows)
        from astropy.io import fits

        self.source = Path(path)
        self.what = f"cannot read catalog file {str(self.source)!r} as fits"
        with self._reading():
            self.path = self._unpacked(scratch_dir)
            with fits.open(self.path, memmap=False, lazy_load_hdus=True) as hdus:
                index = next((i for i, hdu in enumerate(hdus)
                              if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU))), None)
                if index is None:
                    raise ValueError("No table found")
                self._header = hdus[index].header.copy()
                self._data_start = int(hdus.fileinfo(index)["datLoc"])
            self.rows = self.row_bound = int(self._header["NAXIS2"])
            self._row_bytes = int(self._header["NAXIS1"])
            # Variable-length arrays live in a heap after the rows: every chunk takes it.
            self._heap = int(self._header.get("PCOUNT", 0))
            self._heap_start = int(self._header.get("THEAP", self._row_bytes * self.rows))
            self._primary = fits.PrimaryHDU().header.tostring().encode("ascii")
            self._text_columns: list[str] = []
            self._empty = self._read(0, 0)
            self._text_columns = _byte_columns(self._read(0, min(1, self.rows)))

    def _unpacked(self, scratch_dir: str | Path | None) -> Path:
        with open(self.source, "rb") as handle:
            magic = handle.read(3)
        if magic[:2] == b"\x1f\x8b":
            opener: Callable[..., Any] = gzip.open
        elif magic == b"BZh":
            opener = bz2.open
        else:
            return self.source
        if scratch_dir is not None:
            target = Path(scratch_dir) / f"{self.source.name}.unpacked.fits"
            if target.exists() and target.stat().st_mtime_ns >= self.source.stat().st_mtime_ns:
                return target
            with storage.atomic_write(target, beside=True) as temporary, \
                    opener(self.source, "rb") as packed, open(temporary, "wb") as unpacked:
                shutil.copyfileobj(packed, unpacked, 1 << 20)
            return target
        handle_number, name = tempfile.mkstemp(prefix="skyretriever_catalog_", suffix=".fits")
        weakref.finalize(self, _remove, name)
        with opener(self.source, "rb") as packed, os.fdopen(handle_number, "wb") as unpacked:
            shutil.copyfileobj(packed, unpacked, 1 << 20)
        return Path(name)

    def empty(self) -> pd.DataFrame:
        return self._empty

    def _read(self, start: int, stop: int, handle: Any = None) -> pd.DataFrame:
        from astropy.table import Table

        if handle is None:
            with open(self.path, "rb") as handle:
                return self._read(start, stop, handle)
        count = stop - start
        handle.seek(self._data_start + start * self._row_bytes)
        data = handle.read(count * self._row_bytes)
        header = self._header.copy()
        header["NAXIS2"] = count
        if self._heap:
            handle.seek(self._data_start + self._heap_start)
            data += handle.read(self._heap)
            if "THEAP" in header:
                header["THEAP"] = count * self._row_bytes
        data += b"\0" * (-len(data) % 2880)
        chunk = io.BytesIO(self._primary + header.tostring().encode("ascii") + data)
        frame = _table_to_frame(Table.read(chunk, format="fits"))
        gc.collect(1)  # astropy's tables are reference cycles: let them go with the chunk
        return _decode_bytes(frame, self._text_columns, padded=True)

    def _chunks(self, first: int) -> Iterator[pd.DataFrame]:
        with open(self.path, "rb") as handle:
            for index in range(first, self._chunk_count()):
                start = index * self.chunk_rows
                yield self._read(start, min(start + self.chunk_rows, self.rows), handle)


class Hdf5Reader(TableReader):
    """A table (compound dataset) of an HDF5 file, read in row ranges with h5py.

    Each range is handed to ``Table.read(format="hdf5")`` inside an in-memory HDF5
    file, with the table's metadata (units, masked columns written by astropy), so
    a chunk is what the whole-file read gives for those rows.
    """

    def __init__(self, path: str | Path, hdf5_path: str | None = None,
                 chunk_rows: int | None = None) -> None:
        super().__init__(chunk_rows)
        import h5py

        self.path = Path(path)
        self.what = f"cannot read catalog file {str(self.path)!r} as hdf5"
        with self._reading():
            with h5py.File(self.path, "r") as file:
                self.dataset = self._find(file, hdf5_path)
                data = file[self.dataset]
                self.rows = self.row_bound = int(data.shape[0]) if data.shape else 1
                self._attrs = dict(data.attrs)
                meta = f"{self.dataset}.__table_column_meta__"
                self._meta = file[meta][()] if meta in file else None
            self._text_columns: list[str] = []
            self._empty = self._read(0, 0)
            self._text_columns = _byte_columns(self._read(0, min(1, self.rows)))

    @staticmethod
    def _find(file: Any, hdf5_path: str | None) -> str:
        """The dataset at ``hdf5_path``, or the first table (compound dataset) under it."""
        import h5py

        if hdf5_path is not None and hdf5_path not in file:
            raise OSError(f"Path {hdf5_path} does not exist")
        place = file if hdf5_path is None else file[hdf5_path]
        if isinstance(place, h5py.Dataset):
            return place.name
        tables: list[str] = []
        place.visititems(lambda name, item: tables.append(name) if (
            isinstance(item, h5py.Dataset) and item.dtype.kind == "V") else None)
        if not tables:
            raise ValueError(f"no table found in HDF5 group {hdf5_path}")
        return place[tables[0]].name

    def empty(self) -> pd.DataFrame:
        return self._empty

    def _read(self, start: int, stop: int, data: Any = None) -> pd.DataFrame:
        import h5py

        if data is None:
            with h5py.File(self.path, "r") as file:
                return self._read(start, stop, file[self.dataset])
        return self._frame(data[start:stop])

    def _frame(self, rows: np.ndarray) -> pd.DataFrame:
        import h5py
        from astropy.table import Table

        with h5py.File(io.BytesIO(), "w") as memory:
            data = memory.create_dataset("table", data=rows)
            for key, value in self._attrs.items():
                data.attrs[key] = value
            if self._meta is not None:
                memory.create_dataset("table.__table_column_meta__", data=self._meta)
            table = Table.read(memory, format="hdf5", path="table")
        frame = _table_to_frame(table)
        del table
        gc.collect(1)  # astropy's tables are reference cycles: let them go with the chunk
        return _decode_bytes(frame, self._text_columns, padded=False)

    def _chunks(self, first: int) -> Iterator[pd.DataFrame]:
        import h5py

        with h5py.File(self.path, "r") as file:
            data = file[self.dataset]
            for index in range(first, self._chunk_count()):
                start = index * self.chunk_rows
                yield self._read(start, min(start + self.chunk_rows, self.rows), data)


# -- a reader with a change per chunk ------------------------------------------------------------
class ChunkedTable:
    """A table read chunk by chunk: what a catalog loader returns for a large table.

    Parameters
    ----------
    reader
        Where the rows come from (:class:`CsvReader`, :class:`FitsReader`, ...).
    transform
        Applied to every chunk (and to the empty table, so it must accept no rows):
        a remote catalog's cuts or its source names. It must work row by row: a
        row's result may not depend on other chunks.
    max_rows
        Keep only the first rows (after ``transform``).
    source_file
        The file the rows come from, whose bytes identify the catalog (a cache).

    Examples
    --------
    >>> frame = pd.DataFrame({"name": list("abcdef"), "mag": [9, 14, 10, 16, 11, 12]})
    >>> bright = ChunkedTable(FrameReader(frame, chunk_rows=4),
    ...                       transform=lambda chunk: chunk[chunk["mag"] < 12.5])
    >>> [list(chunk["name"]) for chunk in bright.frames()]
    [['a', 'c'], ['e', 'f']]
    >>> bright.columns
    ['name', 'mag']
    """

    def __init__(self, reader: TableReader,
                 transform: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
                 max_rows: int | None = None, source_file: str | None = None) -> None:
        self.reader = reader
        self.transform = transform
        self.max_rows = max_rows
        self.source_file = source_file
        self.columns = list(self._changed(reader.empty()).columns)

    def _changed(self, chunk: pd.DataFrame) -> pd.DataFrame:
        if self.transform is not None:
            chunk = self.transform(chunk)
        chunk = chunk.reset_index(drop=True)
        chunk.columns = [str(name) for name in chunk.columns]
        return chunk

    def frames(self, first: int = 0, *, scan: bool = False) -> Iterator[pd.DataFrame]:
        """The changed chunks from raw chunk ``first``: one frame per raw chunk (maybe empty).

        ``max_rows`` is left to the caller, who knows at which row each chunk starts.
        ``scan=True`` reads with :meth:`TableReader.scan` (the checking pass).
        """
        chunks = self.reader.scan() if scan else self.reader.chunks(first)
        for chunk in chunks:
            yield self._changed(chunk)
