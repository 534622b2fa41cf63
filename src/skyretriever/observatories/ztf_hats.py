"""ZTF light curves from IRSA's HATS Parquet collection (the ``hats`` route of VirtualZTF).

IRSA publishes the ZTF light curves as a HATS collection in its public bucket
(``s3://ipac-irsa-ztf/contributed/dr23/lc/hats``): one Parquet file per
HEALPix pixel, one row per ZTF object (``objectid``, ``filterid``,
``fieldid``, ``rcid``, ``objra``, ``objdec``) with its epochs nested in
``lightcurve`` (``hmjd``, ``mag``, ``magerr``, ``clrcoeff``, ``catflags``).

:class:`HatsLightCurves` answers a whole batch of catalog stars at once: it
finds the partitions each star's search cone touches (hats, so a star near a
pixel edge also reads the neighbouring pixel), reads each of those partitions
once for the batch with hats and nested-pandas (over s3fs), keeping only the
needed columns and only the rows in the cones (pyarrow filters on
``_healpix_29`` ranges of a mocpy MOC of the cones, which skip whole row
groups), and crossmatches each star with its own radius (a scipy KD-tree on
unit vectors). A partition that cannot be read or parsed fails only the stars
whose cones touch it.

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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import erfa
import numpy as np
import pandas as pd
import pyarrow as pa

from skyretriever.net import HttpClient, NetworkError, TransientError

__all__ = ["HATS_COLUMNS", "HatsError", "HatsLightCurves", "StarCone", "heliocentric_delay",
           "hmjd_to_mjd"]

log = logging.getLogger(__name__)

#: The collection's columns the route reads (``lightcurve`` is nested).
HATS_COLUMNS = ("objectid", "filterid", "fieldid", "rcid", "objra", "objdec", "lightcurve")
FILTER_CODES = {1: "zg", 2: "zr", 3: "zi"}
FILTER_IDS = {code: number for number, code in FILTER_CODES.items()}
#: Depth of the MOC of the cones whose order-29 ranges filter the rows (3.2" cells).
_MOC_DEPTH = 16
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
        collection, opening the batch, reading one partition), which is tried again.
    """

    def __init__(self, url: str, endpoint_url: str | None = None,
                 client: HttpClient | None = None) -> None:
        self.url = url
        self.endpoint_url = endpoint_url
        self.client = client or HttpClient()
        self._structure = None
        self._lock = threading.Lock()

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
                opened = self._with_retries(lambda: hats.read_hats(self.path()),
                                            f"opening the ZTF HATS collection {self.url}")
                self._structure = getattr(opened, "main_catalog", opened)
            return self._structure

    @property
    def release(self) -> str:
        """The catalog's name (for example ``ztf_dr23_lc-hats``)."""
        return str(self.structure().catalog_name)

    def partitions_of(self, star: StarCone) -> list[tuple[int, int]]:
        """The ``(order, pixel)`` partitions a star's cone touches."""
        try:
            found = self.structure().filter_by_cone(star.ra, star.dec, star.radius_arcsec)
        except ValueError:
            return []
        return [(p.order, p.pixel) for p in found.get_healpix_pixels()]

    def _cone_ranges(self, stars: Sequence[StarCone]) -> np.ndarray:
        """The order-29 pixel ranges ``[low, high)`` of a MOC of the stars' cones (mocpy)."""
        import astropy.units as u
        from mocpy import MOC

        moc = MOC.from_cones(lon=np.array([s.ra for s in stars]) * u.deg,
                             lat=np.array([s.dec for s in stars]) * u.deg,
                             radius=np.array([s.radius_arcsec for s in stars]) * u.arcsec,
                             max_depth=_MOC_DEPTH, union_strategy="large_cones")
        return np.asarray(moc.to_depth29_ranges, dtype=np.uint64)

    def _read_partition(self, pixel: tuple[int, int], ranges: np.ndarray,
                        filter_ids: Sequence[int]) -> pd.DataFrame:
        """The rows of one partition inside the cones and filters: only the needed columns,
        and only the row groups whose ``_healpix_29`` statistics meet the cones (pyarrow
        filters, limited to the ranges inside this partition so they stay short)."""
        from hats.io import pixel_catalog_file
        from hats.io.file_io import read_parquet_file_to_pandas
        from hats.pixel_math import HealpixPixel

        structure = self.structure()
        order, number = pixel
        shift = np.uint64(2 * (29 - order))
        low, high = np.uint64(number) << shift, np.uint64(number + 1) << shift
        inside = ranges[(ranges[:, 1] > low) & (ranges[:, 0] < high)]
        bands = ("filterid", "in", [int(b) for b in filter_ids])
        filters = [[("_healpix_29", ">=", int(max(a, low))), ("_healpix_29", "<", int(min(b, high))),
                    bands] for a, b in inside]
        suffix = structure.catalog_info.npix_suffix
        path = pixel_catalog_file(structure.catalog_path, HealpixPixel(order, number),
                                  npix_suffix=suffix)
        files = [path]
        if suffix == "/":
            # A partition folder (Npix=N/part0.snappy.parquet): listed, and a listing that
            # comes back empty (a failed request does, through s3fs) is tried again.
            files = sorted((f for f in path.iterdir() if f.name.endswith(".parquet")),
                           key=lambda f: f.name)
            if not files:
                raise TransientError(f"{path} listed no Parquet file")
        frames = [read_parquet_file_to_pandas(f, is_dir=False, columns=list(HATS_COLUMNS),
                                              filters=filters) for f in files]
        return frames[0] if len(frames) == 1 else pd.concat(frames)

    def read(self, stars: Sequence[StarCone], bands: Sequence[str]
             ) -> tuple[dict[str, pd.DataFrame | HatsError], dict[str, list[str]]]:
        """Each star's objects in its cone, one row per epoch (or the error of a partition).

        Returns the table (or error) of every star, and the partitions each one read
        (``Norder=K/Npix=N``). Each partition is read once for the whole batch.
        """
        pixels = {star.name: self.partitions_of(star) for star in stars}
        needed = sorted({pixel for found in pixels.values() for pixel in found})
        results: dict[tuple[int, int], pd.DataFrame | HatsError] = {}
        if needed:
            ranges = self._cone_ranges(stars)
            filter_ids = [FILTER_IDS[f"z{b}"] for b in bands]

            def read_one(pixel: tuple[int, int]) -> pd.DataFrame | HatsError:
                try:
                    return self._with_retries(
                        lambda: self._read_partition(pixel, ranges, filter_ids),
                        f"ZTF HATS partition Norder={pixel[0]}/Npix={pixel[1]} of {self.url}")
                except NetworkError as error:  # a partition that fails fails its stars only
                    return HatsError(str(error))

            with ThreadPoolExecutor(min(self.max_connections, len(needed)),
                                    thread_name_prefix="ztf-hats") as pool:
                results = dict(zip(needed, pool.map(read_one, needed)))
        objects = _objects_table([r for r in results.values() if isinstance(r, pd.DataFrame)])
        per_star: dict[str, pd.DataFrame | HatsError] = {}
        matches = _crossmatch(objects, stars)
        for star, rows in zip(stars, matches):
            failed = [results[p] for p in pixels[star.name] if isinstance(results[p], HatsError)]
            if failed:
                per_star[star.name] = failed[0]
                continue
            per_star[star.name] = _epochs(objects.iloc[rows])
        names = {star.name: [f"Norder={o}/Npix={p}" for o, p in pixels[star.name]]
                 for star in stars}
        return per_star, names


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


def _objects_table(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The objects read (one row each, no duplicates), with their epochs as arrays."""
    pieces = []
    for frame in frames:
        if len(frame) == 0:
            continue
        flat = frame["lightcurve"].nest.to_flat()
        # Rows of the flat table belong to the object at the same position of the partition.
        counts = np.asarray(frame["lightcurve"].nest.len(), dtype=np.int64)
        piece = pd.DataFrame({column: frame[column].to_numpy() for column in HATS_COLUMNS[:-1]})
        bounds = np.r_[0, np.cumsum(counts)]
        for column in ("hmjd", "mag", "magerr", "clrcoeff", "catflags"):
            values = flat[column].to_numpy()
            piece[column] = [values[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        pieces.append(piece)
    if not pieces:
        return pd.DataFrame({column: [] for column in (*HATS_COLUMNS[:-1], "hmjd")})
    return pd.concat(pieces, ignore_index=True).drop_duplicates("objectid", ignore_index=True)


def _crossmatch(objects: pd.DataFrame, stars: Sequence[StarCone]) -> list[np.ndarray]:
    """For each star, the rows of ``objects`` within its radius (by objra/objdec)."""
    from scipy.spatial import cKDTree

    if len(objects) == 0:
        return [np.array([], dtype=int) for _ in stars]
    tree = cKDTree(_unit_vectors(objects["objra"].to_numpy(float),
                                 objects["objdec"].to_numpy(float)))
    centres = _unit_vectors(np.array([s.ra for s in stars]), np.array([s.dec for s in stars]))
    chords = 2.0 * np.sin(np.radians(np.array([s.radius_arcsec for s in stars]) / 3600.0) / 2.0)
    found = tree.query_ball_point(centres, chords)
    return [np.array(sorted(rows), dtype=int) for rows in found]


def _epochs(objects: pd.DataFrame) -> pd.DataFrame:
    """One row per epoch of the objects, in the API route's column names, by oid then time."""
    objects = objects.sort_values("objectid")
    counts = np.array([len(v) for v in objects["hmjd"]], dtype=int)

    def repeat(column: str, dtype) -> np.ndarray:
        return np.repeat(objects[column].to_numpy(dtype=dtype), counts)

    def join(column: str, dtype) -> np.ndarray:
        arrays = list(objects[column])
        return np.concatenate(arrays).astype(dtype) if arrays else np.array([], dtype=dtype)

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
