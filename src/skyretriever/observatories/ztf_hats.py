"""ZTF light curves from IRSA's HATS Parquet collection (the ``hats`` route of VirtualZTF).

IRSA publishes the ZTF light curves as a HATS collection in its public bucket
(``s3://ipac-irsa-ztf/contributed/dr23/lc/hats``): one Parquet file per
HEALPix pixel, one row per ZTF object (``objectid``, ``filterid``,
``fieldid``, ``rcid``, ``objra``, ``objdec``) with its epochs nested in
``lightcurve`` (``hmjd``, ``mag``, ``magerr``, ``clrcoeff``, ``catflags``).

:class:`HatsLightCurves` answers a whole batch of catalog stars at once: it
finds the partitions each star's search cone touches (a mocpy MOC of each cone
against the partitions' order-29 ranges, so a star near a pixel edge also reads
the neighbouring pixel), reads each partition's footer once per run (listing its
folder, one ranged GET; kept in a cache bounded by size), picks the row groups
whose ``_healpix_29`` statistics meet the cones, and reads only those, only the
needed columns, with no read-ahead: a run of consecutive row groups is one
ranged GET (pyarrow coalesces its column chunks). Row groups read are kept in a
second bounded cache, so a catalog in position order (Gaia's, or the white
dwarfs' by name) meets them again in the next batches without a request. Each
star is then crossmatched with its own radius (a scipy KD-tree on unit
vectors). A partition that cannot be read or parsed fails only the stars whose
cones touch it.

The table of a star has the API route's columns that the collection holds:
``oid, hjd, mjd, mag, magerr, catflags, filtercode, ra, dec, field, ccdid,
qid, clrcoeff``; ``ra``/``dec`` are the object's mean position (the
collection keeps no per-epoch positions) and ``mjd`` is ``hmjd`` less the
heliocentric light time (:func:`~skyretriever.observatories.ztf.hmjd_to_mjd`).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import erfa
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skyretriever.net import HttpClient, NetworkError, TransientError

__all__ = ["HATS_COLUMNS", "BoundedCache", "HatsError", "HatsLightCurves", "PartitionFile",
           "StarCone", "heliocentric_delay", "hmjd_to_mjd"]

log = logging.getLogger(__name__)

#: The collection's columns the route reads (``lightcurve`` is nested).
HATS_COLUMNS = ("objectid", "filterid", "fieldid", "rcid", "objra", "objdec", "lightcurve")
#: What is read of a row group: also ``_healpix_29`` (8 bytes an object), which comes first
#: in hats-import's files, so a run of row groups is one contiguous range, one GET (pyarrow
#: splits a read at a hole over 8 kB).
_READ_COLUMNS = ["_healpix_29", *HATS_COLUMNS]
FILTER_CODES = {1: "zg", 2: "zr", 3: "zi"}
FILTER_IDS = {code: number for number, code in FILTER_CODES.items()}
#: Depth of the MOC of the cones whose order-29 ranges filter the rows (3.2" cells).
_MOC_DEPTH = 16
#: What the caches keep at most: the partitions' footers, and the row groups read (decoded;
#: a catalog in position order, like Gaia's or the white dwarfs' by name, meets the same
#: row groups in the next batches).
FOOTER_CACHE_BYTES = 32 * 2**20
ROW_GROUP_CACHE_BYTES = 128 * 2**20
#: Light time of one astronomical unit, in days.
_AU_LIGHT_DAYS = erfa.DAU / erfa.CMPS / 86400.0


_EARTH_GRID: dict[str, np.ndarray] = {}
_EARTH_GRID_LOCK = threading.Lock()


def _earth_positions(mjd: np.ndarray) -> np.ndarray:
    """The Earth's heliocentric position (AU, shape (n, 3)) at each MJD.

    ERFA's ``epv00`` is evaluated once per day over the span asked for (it costs about
    0.1 ms a call) and interpolated linearly in between: the error, under 0.02 s of
    light time, is far below ZTF's time resolution.
    """
    low = math.floor(float(np.min(mjd))) - 1 if len(mjd) else 58000
    high = math.ceil(float(np.max(mjd))) + 1 if len(mjd) else 58001
    with _EARTH_GRID_LOCK:
        grid = _EARTH_GRID.get("days")
        if grid is None or low < grid[0] or high > grid[-1]:
            first = min(low, int(grid[0])) if grid is not None else min(low, 58000)
            last = max(high, int(grid[-1])) if grid is not None else max(high, 61500)
            days = np.arange(first, last + 1, dtype=float)
            heliocentric, _ = erfa.epv00(2400000.5, days)
            _EARTH_GRID["days"], _EARTH_GRID["position"] = days, heliocentric["p"]
        days, position = _EARTH_GRID["days"], _EARTH_GRID["position"]
    return np.stack([np.interp(mjd, days, position[:, axis]) for axis in range(3)], axis=1)


def heliocentric_delay(mjd: float | np.ndarray, ra: float | np.ndarray,
                       dec: float | np.ndarray) -> np.ndarray:
    """Days to add to a time at the Earth to get the time at the Sun (HJD - JD) for a star.

    The light time along the star's direction of the Earth's heliocentric
    position (ERFA), between -0.0058 and +0.0058 days.

    Examples
    --------
    >>> bool(abs(heliocentric_delay(58300.0, 30.0, 25.0)[0]) < 0.0058)
    True
    """
    mjd = np.atleast_1d(np.asarray(mjd, dtype=float))
    ra_rad, dec_rad = np.radians(np.asarray(ra, dtype=float)), np.radians(np.asarray(dec,
                                                                                    dtype=float))
    direction = np.stack(np.broadcast_arrays(np.cos(dec_rad) * np.cos(ra_rad),
                                             np.cos(dec_rad) * np.sin(ra_rad),
                                             np.sin(dec_rad)), axis=-1)
    earth = _earth_positions(mjd)
    return np.einsum("ij,ij->i", earth, np.broadcast_to(direction, earth.shape)) * _AU_LIGHT_DAYS


def hmjd_to_mjd(hmjd: np.ndarray, ra: np.ndarray | float, dec: np.ndarray | float) -> np.ndarray:
    """MJD at the Earth of heliocentric MJDs (inverts :func:`heliocentric_delay`).

    Examples
    --------
    >>> mjd = np.array([58300.0, 58500.25])
    >>> hmjd = mjd + heliocentric_delay(mjd, 30.0, 25.0)
    >>> bool(np.allclose(hmjd_to_mjd(hmjd, 30.0, 25.0), mjd, atol=1e-9, rtol=0))
    True
    """
    hmjd = np.asarray(hmjd, dtype=float)
    mjd = hmjd - heliocentric_delay(hmjd, ra, dec)
    # The delay changes by under 1e-4 of a day per day: two more steps leave < 1e-12 days.
    for _ in range(2):
        mjd = hmjd - heliocentric_delay(mjd, ra, dec)
    return mjd


class HatsError(RuntimeError):
    """The collection, or one of its partitions, could not be read."""


@dataclass(frozen=True)
class StarCone:
    """One catalog star's search: its name, position and radius (arcsec)."""

    name: str
    ra: float
    dec: float
    radius_arcsec: float


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(np.asarray(ra, dtype=float)), np.radians(np.asarray(dec, dtype=float))
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


class HatsLightCurves:
    """A ZTF light-curve HATS collection, local or in a bucket, read a batch at a time.

    Parameters
    ----------
    url
        The collection (or catalog) folder: a local path or ``s3://bucket/prefix``.
    endpoint_url
        S3 endpoint (a mirror or simulator); ``None`` for AWS.
    client
        The HTTP client whose policy (timeouts, attempts, backoff) and retry loop
        apply: a throttled, reset or cut request fails its whole step (opening the
        collection, reading a partition's footer, reading a run of row groups), which is
        tried again.
    footer_cache_bytes, row_group_cache_bytes
        The most the caches of partitions' footers and of decoded row groups hold, so
        memory stays flat over any catalog length.
    """

    def __init__(self, url: str, endpoint_url: str | None = None,
                 client: HttpClient | None = None, *,
                 footer_cache_bytes: int = FOOTER_CACHE_BYTES,
                 row_group_cache_bytes: int = ROW_GROUP_CACHE_BYTES) -> None:
        self.url = url
        self.endpoint_url = endpoint_url
        self.client = client or HttpClient()
        self._structure = None
        self._lock = threading.Lock()
        self._fs = None
        self._partitions: tuple[np.ndarray, np.ndarray, list[tuple[int, int]]] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.footers = BoundedCache(footer_cache_bytes)
        self.row_groups = BoundedCache(row_group_cache_bytes)

    @property
    def max_connections(self) -> int:
        return self.client.policy.max_connections_per_host

    def path(self):
        """The collection as a ``UPath`` (anonymous S3 for ``s3://``)."""
        from upath import UPath

        if not self.url.startswith("s3://"):
            return UPath(self.url)
        policy = self.client.policy
        client_kwargs: dict[str, Any] = {}
        if self.endpoint_url:
            client_kwargs["endpoint_url"] = self.endpoint_url
        # A batch makes tens of requests: each is retried by botocore (503 SlowDown, S3's
        # throttling, and resets) as well as each step by the client's retry loop.
        return UPath(self.url, anon=True, client_kwargs=client_kwargs,
                     config_kwargs={"connect_timeout": policy.connect_timeout,
                                    "read_timeout": policy.timeout,
                                    "retries": {"total_max_attempts": policy.max_attempts,
                                                "mode": "standard"},
                                    "max_pool_connections": policy.max_connections_per_host},
                     use_listings_cache=False, skip_instance_cache=True)

    def _with_retries(self, operation, what: str):
        """``operation()`` in the client's retry loop, its errors made ours."""
        def attempt():
            try:
                return operation()
            except Exception as error:  # hats, s3fs, aiohttp, botocore and pyarrow errors
                raise _our_error(error, what) from None
        return self.client.call_with_retries(attempt, what)

    def structure(self):
        """The main catalog's HATS structure (partitions, properties), read once.

        Raises
        ------
        skyretriever.net.NetworkError
            If the collection cannot be opened (after retries, for transient errors).
        """
        import hats

        with self._lock:
            if self._structure is None:
                # No MOC: the route finds partitions from their list, and the MOC would be
                # made from the point map, read whole (12.9 MB for the benchmark's million
                # objects) at every opening.
                opened = self._with_retries(lambda: hats.read_hats(self.path(), read_moc=False),
                                            f"opening the ZTF HATS collection {self.url}")
                self._structure = getattr(opened, "main_catalog", opened)
            return self._structure

    @property
    def release(self) -> str:
        """The catalog's name (for example ``ztf_dr23_lc-hats``)."""
        return str(self.structure().catalog_name)

    def _partition_ranges(self) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
        """The partitions as order-29 ranges ``[start, end)``, sorted (they never overlap)."""
        structure = self.structure()
        with self._lock:
            if self._partitions is None:
                pixels = sorted((p.order, p.pixel) for p in structure.get_healpix_pixels())
                pixels.sort(key=lambda p: p[1] << 2 * (29 - p[0]))
                starts = np.array([p << 2 * (29 - k) for k, p in pixels], dtype=np.int64)
                ends = np.array([(p + 1) << 2 * (29 - k) for k, p in pixels], dtype=np.int64)
                self._partitions = starts, ends, pixels
            return self._partitions

    def partitions_of(self, stars: Sequence[StarCone]) -> list[list[tuple[int, int]]]:
        """The ``(order, pixel)`` partitions each star's cone touches (one MOC a cone, by
        mocpy, against the partitions' ranges)."""
        import astropy.units as u
        from mocpy import MOC

        if not stars:
            return []
        starts, ends, pixels = self._partition_ranges()
        mocs = MOC.from_cones(lon=np.array([s.ra for s in stars]) * u.deg,
                              lat=np.array([s.dec for s in stars]) * u.deg,
                              radius=np.array([s.radius_arcsec for s in stars]) * u.arcsec,
                              max_depth=_MOC_DEPTH)
        found = []
        for moc in mocs:
            ranges = np.asarray(moc.to_depth29_ranges, dtype=np.int64).reshape(-1, 2)
            # Partitions from the first ending after a range's start to the last starting
            # before its end.
            first = np.searchsorted(ends, ranges[:, 0], side="right")
            last = np.searchsorted(starts, ranges[:, 1], side="left")
            touched = sorted({int(i) for a, b in zip(first, last) for i in range(a, b)})
            found.append([pixels[i] for i in touched])
        return found

    def _cone_ranges(self, stars: Sequence[StarCone]) -> np.ndarray:
        """The order-29 pixel ranges ``[low, high)`` of a MOC of the stars' cones (mocpy),
        sorted and disjoint, as int64 (the type of ``_healpix_29``)."""
        import astropy.units as u
        from mocpy import MOC

        moc = MOC.from_cones(lon=np.array([s.ra for s in stars]) * u.deg,
                             lat=np.array([s.dec for s in stars]) * u.deg,
                             radius=np.array([s.radius_arcsec for s in stars]) * u.arcsec,
                             max_depth=_MOC_DEPTH, union_strategy="large_cones")
        return np.asarray(moc.to_depth29_ranges, dtype=np.int64).reshape(-1, 2)

    def _filesystem(self):
        """The fsspec filesystem of the collection (s3fs, or the local one), made once."""
        with self._lock:
            if self._fs is None:
                self._fs = self.path().fs
            return self._fs

    def _open(self, path: str, size: int):
        """A file of the collection read with no read-ahead: each read pyarrow makes (a
        footer, a coalesced run of column chunks) is one ranged GET of just those bytes.

        The file's details (its size, known already) are given to the handle: s3fs
        otherwise looks them up with a HEAD before the first read of every handle, one
        more request for each footer and each run of row groups.
        """
        from fsspec.spec import AbstractBufferedFile

        handle = self._filesystem().open(path, "rb", cache_type="none", size=size)
        if isinstance(handle, AbstractBufferedFile):
            handle.details = {"name": path, "size": size, "type": "file"}
        return handle

    def partition_files(self, pixel: tuple[int, int]) -> list[PartitionFile]:
        """The Parquet files of a partition with their footers (listed and read once, then
        kept in a cache bounded by the footers' size)."""
        from hats.io import pixel_catalog_file
        from hats.pixel_math import HealpixPixel

        found = self.footers.get(pixel)
        if found is not None:
            return found
        structure = self.structure()
        suffix = structure.catalog_info.npix_suffix
        path = pixel_catalog_file(structure.catalog_path, HealpixPixel(*pixel),
                                  npix_suffix=suffix)
        fs = self._filesystem()
        if suffix == "/":
            # A partition folder (Npix=N/part0.snappy.parquet): listed, and a listing that
            # comes back empty (a failed request does, through s3fs) is tried again.
            listed = sorted((entry["name"], int(entry["size"]))
                            for entry in fs.ls(path.path, detail=True)
                            if entry["name"].endswith(".parquet") and entry.get("size"))
            if not listed:
                raise TransientError(f"{path} listed no Parquet file")
        else:
            listed = [(path.path, int(fs.size(path.path)))]
        found = []
        for name, size in listed:
            with self._open(name, size) as handle:
                found.append(PartitionFile.from_metadata(name, size,
                                                         pq.ParquetFile(handle).metadata))
        self.footers.put(pixel, found, sum(f.memory for f in found))
        return found

    def _read_groups(self, file: PartitionFile, groups: list[int]) -> list[pa.Table]:
        """Row groups (consecutive ones, so pyarrow coalesces their chunks into one ranged
        read) of a file, only the route's columns; one table per row group, holding its own
        memory."""
        with self._open(file.path, file.size) as handle:
            table = pq.ParquetFile(handle, metadata=file.metadata, pre_buffer=True
                                   ).read_row_groups(groups, columns=list(file.columns))
        if len(groups) == 1:
            return [table]
        tables, start = [], 0
        for group in groups:
            rows = int(file.rows[group])
            tables.append(_compacted(table.slice(start, rows)))
            start += rows
        return tables

    def _read_partitions(self, pixels: list[tuple[int, int]], ranges: np.ndarray
                         ) -> dict[tuple[int, int], list[pa.Table] | HatsError]:
        """The row groups of each partition that meet the cones' ranges, or its error.

        Footers come from their cache or are read (in parallel); then every row group
        wanted and not in the row-group cache is read, runs of consecutive groups
        together, in parallel, and put in the cache.
        """
        def what(pixel: tuple[int, int]) -> str:
            return f"ZTF HATS partition Norder={pixel[0]}/Npix={pixel[1]} of {self.url}"

        def footers(pixel):
            try:
                return self._with_retries(lambda: self.partition_files(pixel), what(pixel))
            except NetworkError as error:  # a partition that fails fails its stars only
                return HatsError(str(error))

        results: dict[tuple[int, int], Any] = dict(zip(pixels, self._map(footers, pixels)))
        have: dict[tuple[str, int], pa.Table] = {}
        wanted: dict[tuple[int, int], list[tuple[str, int]]] = {}
        runs = []
        for pixel, files in results.items():
            if isinstance(files, HatsError):
                continue
            order, number = pixel
            shift = 2 * (29 - order)
            low, high = number << shift, (number + 1) << shift
            inside = ranges[(ranges[:, 1] > low) & (ranges[:, 0] < high)]
            wanted[pixel] = []
            for file in files:
                missing = []
                for group in file.groups_meeting(inside):
                    key = (file.path, group)
                    wanted[pixel].append(key)
                    table = self.row_groups.get(key)
                    if table is None:
                        missing.append(group)
                    else:
                        have[key] = table
                runs += [(pixel, file, run) for run in _consecutive(missing)]

        def read_run(run):
            pixel, file, groups = run
            try:
                return self._with_retries(lambda: self._read_groups(file, groups),
                                          what(pixel))
            except NetworkError as error:
                return HatsError(str(error))

        for (pixel, file, groups), tables in zip(runs, self._map(read_run, runs)):
            if isinstance(tables, HatsError):
                results[pixel] = tables
                continue
            for group, table in zip(groups, tables):
                have[(file.path, group)] = table
                self.row_groups.put((file.path, group), table,
                                    table.get_total_buffer_size())
        return {pixel: found if isinstance(found, HatsError)
                else [have[key] for key in wanted[pixel]] for pixel, found in results.items()}

    def _map(self, function, items: list) -> list:
        """``function`` over ``items`` on the collection's threads (one per connection)."""
        if len(items) <= 1:
            return [function(item) for item in items]
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.max_connections,
                                                    thread_name_prefix="ztf-hats")
        return list(self._executor.map(function, items))

    def read(self, stars: Sequence[StarCone], bands: Sequence[str]
             ) -> tuple[dict[str, pd.DataFrame | HatsError], dict[str, list[str]]]:
        """Each star's objects in its cone, one row per epoch (or the error of a partition).

        Returns the table (or error) of every star, and the partitions each one read
        (``Norder=K/Npix=N``). Within a batch each row group is read at most once, and
        only the row groups whose ``_healpix_29`` statistics meet the stars' cones.
        """
        pixels = dict(zip([star.name for star in stars], self.partitions_of(stars)))
        needed = sorted({pixel for found in pixels.values() for pixel in found})
        results = self._read_partitions(needed, self._cone_ranges(stars)) if needed else {}
        tables = [table for found in results.values() if not isinstance(found, HatsError)
                  for table in found]
        objects = pa.concat_tables(tables) if tables else None
        starts = np.cumsum([0] + [table.num_rows for table in tables])

        def taken(rows: np.ndarray) -> pa.Table:
            # Taken from each row group apart: a take on the whole batch's table would
            # first join all its chunks, for every star.
            group = np.searchsorted(starts, rows, side="right") - 1
            return pa.concat_tables([tables[g].take(rows[group == g] - starts[g])
                                     for g in np.unique(group)] or [tables[0].slice(0, 0)])

        filter_ids = [FILTER_IDS[f"z{b}"] for b in bands]
        per_star: dict[str, pd.DataFrame | HatsError] = {}
        for star, rows in zip(stars, _crossmatch(objects, stars, filter_ids)):
            failed = [results[p] for p in pixels[star.name] if isinstance(results[p], HatsError)]
            if failed:
                per_star[star.name] = failed[0]
            else:
                per_star[star.name] = _epochs(taken(rows) if tables else None)
        names = {star.name: [f"Norder={o}/Npix={p}" for o, p in pixels[star.name]]
                 for star in stars}
        return per_star, names


class BoundedCache:
    """Entries kept, least recently used first out, while their sizes sum to ``limit``.

    Examples
    --------
    >>> cache = BoundedCache(10)
    >>> cache.put("a", 1, size=6); cache.put("b", 2, size=6)
    >>> cache.get("a"), cache.get("b"), cache.size
    (None, 2, 6)
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._entries: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def values(self) -> list:
        """The values kept, least recently used first."""
        with self._lock:
            return [value for value, _ in self._entries.values()]

    def get(self, key):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key, value, size: int) -> None:
        with self._lock:
            if size > self.limit or key in self._entries:
                return
            self._entries[key] = (value, size)
            self.size += size
            while self.size > self.limit:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.size -= dropped


@dataclass(frozen=True)
class PartitionFile:
    """One Parquet file of a partition: its path, size and footer, each row group's rows
    and ``_healpix_29`` range from the footer's statistics (the whole sky where they lack),
    and the columns read (the route's, and ``_healpix_29`` where the file has it)."""

    path: str
    size: int
    #: The footer, serialized as in the file: kept so because parsed it takes
    #: about ten times the memory (pyarrow keeps every column chunk's Thrift structure:
    #: 21 MB for the 152 footers of the benchmark's collection, 1.9 MB serialized), which
    #: would put the footer cache far beyond its limit.
    footer: pa.Buffer
    rows: np.ndarray
    lowest: np.ndarray
    highest: np.ndarray
    columns: tuple[str, ...]

    @property
    def metadata(self) -> pq.FileMetaData:
        """The footer, parsed (about 0.2 ms for hats-import's)."""
        return pq.read_metadata(pa.BufferReader(self.footer))

    @property
    def memory(self) -> int:
        """Bytes this description holds (what the footer cache counts)."""
        return self.footer.size + self.rows.nbytes + self.lowest.nbytes + self.highest.nbytes

    @classmethod
    def from_metadata(cls, path: str, size: int, metadata: pq.FileMetaData) -> PartitionFile:
        names = metadata.schema.to_arrow_schema().names
        column = names.index("_healpix_29") if "_healpix_29" in names else -1
        rows = np.array([metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)],
                        dtype=np.int64)
        lowest = np.zeros(metadata.num_row_groups, dtype=np.int64)
        highest = np.full(metadata.num_row_groups, np.iinfo(np.int64).max, dtype=np.int64)
        for group in range(metadata.num_row_groups if column >= 0 else 0):
            statistics = metadata.row_group(group).column(column).statistics
            if statistics is not None and statistics.has_min_max:
                lowest[group], highest[group] = statistics.min, statistics.max
        sink = pa.BufferOutputStream()
        metadata.write_metadata_file(sink)
        columns = tuple(c for c in _READ_COLUMNS if c in names or c != "_healpix_29")
        return cls(path, size, sink.getvalue(), rows, lowest, highest, columns)

    def groups_meeting(self, ranges: np.ndarray) -> list[int]:
        """The row groups whose ``_healpix_29`` span meets one of the sorted, disjoint
        ranges ``[low, high)``."""
        if len(ranges) == 0:
            return []
        # The first range ending after a group's lowest pixel meets it if it starts by its
        # highest.
        first = np.searchsorted(ranges[:, 1], self.lowest, side="right")
        meets = (first < len(ranges)) & (ranges[np.minimum(first, len(ranges) - 1), 0]
                                         <= self.highest)
        return [int(group) for group in np.flatnonzero(meets)]


def _compacted(table: pa.Table) -> pa.Table:
    """A copy of a slice that holds only its rows' memory.

    pyarrow reads a run of row groups as one chunk, and a slice of it keeps the whole
    run's buffers alive: a row group kept in the cache would hold all its run's memory,
    counted as its own part only, and the cache would hold more than its limit.
    """
    return pa.Table.from_arrays(
        [pa.concat_arrays(column.chunks) if column.num_chunks else pa.array([], column.type)
         for column in table.columns], schema=table.schema)


def _consecutive(groups: list[int]) -> list[list[int]]:
    """Sorted row-group numbers cut into runs of consecutive ones."""
    runs: list[list[int]] = []
    for group in groups:
        if runs and group == runs[-1][-1] + 1:
            runs[-1].append(group)
        else:
            runs.append([group])
    return runs


def _our_error(error: BaseException, what: str) -> NetworkError:
    """A final error when pyarrow could not parse what it read, else a transient one.

    Through s3fs and fsspec a throttled, reset or cut request surfaces in many
    shapes (``OSError`` with the status in its message, aiohttp's errors, a
    failed HEAD reported as a missing file, an empty listing, even a
    ``TypeError`` from a list of results holding an exception): all are tried
    again, and fail once the attempts are spent. A file pyarrow cannot parse
    (not Parquet, a broken footer, a schema without the columns) fails at once.
    """
    if isinstance(error, NetworkError):
        return error
    chain, seen = [], error
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    message = f"{what}: {' '.join(f'{type(error).__name__}: {error}'.split())[:300]}"
    if any(isinstance(e, (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError))
           for e in chain):
        return NetworkError(f"{message}: could not be read")
    status = re.search(r"\((\d{3})\)", str(error))
    return TransientError(message, status=int(status.group(1)) if status else None)


def _crossmatch(objects: pa.Table | None, stars: Sequence[StarCone],
                filter_ids: Sequence[int]) -> list[np.ndarray]:
    """For each star, the rows of ``objects`` in the bands within its radius (by
    objra/objdec)."""
    from scipy.spatial import cKDTree

    if objects is None or objects.num_rows == 0:
        return [np.array([], dtype=int) for _ in stars]
    usable = np.flatnonzero(np.isin(objects["filterid"].to_numpy(), filter_ids))
    if len(usable) == 0:
        return [np.array([], dtype=int) for _ in stars]
    tree = cKDTree(_unit_vectors(objects["objra"].to_numpy()[usable],
                                 objects["objdec"].to_numpy()[usable]))
    centres = _unit_vectors(np.array([s.ra for s in stars]), np.array([s.dec for s in stars]))
    chords = 2.0 * np.sin(np.radians(np.array([s.radius_arcsec for s in stars]) / 3600.0) / 2.0)
    found = tree.query_ball_point(centres, chords)
    return [usable[np.array(sorted(rows), dtype=int)] for rows in found]


#: The columns of a star's table and their types (an empty table has them too).
_EPOCH_COLUMNS = {"oid": np.int64, "hjd": float, "mjd": float, "mag": float, "magerr": float,
                  "catflags": np.int64, "filtercode": object, "ra": float, "dec": float,
                  "field": np.int64, "ccdid": np.int64, "qid": np.int64, "clrcoeff": float}


def _epochs(objects: pa.Table | None) -> pd.DataFrame:
    """One row per epoch of the objects, in the API route's column names, by oid then time."""
    if objects is None or objects.num_rows == 0:
        return pd.DataFrame({column: np.array([], dtype=dtype)
                             for column, dtype in _EPOCH_COLUMNS.items()})
    lightcurve = objects.column("lightcurve").combine_chunks()
    counts = pc.list_value_length(pc.struct_field(lightcurve, "hmjd")).to_numpy(zero_copy_only=False)
    counts = np.nan_to_num(counts).astype(np.int64)  # an object with no epochs

    def repeat(column: str, dtype) -> np.ndarray:
        return np.repeat(objects[column].to_numpy().astype(dtype), counts)

    def join(field: str, dtype) -> np.ndarray:
        values = pc.list_flatten(pc.struct_field(lightcurve, field))
        return values.to_numpy(zero_copy_only=False).astype(dtype)

    hmjd = join("hmjd", float)
    ra, dec = repeat("objra", float), repeat("objdec", float)
    rcid = repeat("rcid", np.int64)
    frame = pd.DataFrame({
        "oid": repeat("objectid", np.int64),
        "hjd": hmjd + 2400000.5,
        "mjd": hmjd_to_mjd(hmjd, ra, dec) if len(hmjd) else hmjd,
        "mag": join("mag", float),
        "magerr": join("magerr", float),
        "catflags": join("catflags", np.int64),
        "filtercode": [FILTER_CODES.get(int(f), str(f)) for f in repeat("filterid", np.int64)],
        "ra": ra, "dec": dec,
        "field": repeat("fieldid", np.int64),
        "ccdid": rcid // 4 + 1, "qid": rcid % 4 + 1,
        "clrcoeff": join("clrcoeff", float),
    })
    return frame.sort_values(["oid", "hjd"], kind="stable", ignore_index=True)
