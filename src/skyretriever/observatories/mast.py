"""MAST and its public S3 bucket: the client shared by VirtualTESS, VirtualK2 and VirtualKepler.

:class:`MastClient` speaks the MAST portal's JSON protocol (``invoke`` with
paging and ``EXECUTING`` polling, ``path_lookup``, ``Download/file``) through
the package's one HTTP layer (:mod:`skyretriever.net`); :class:`S3Bucket`
fetches files from the public ``stpubdata`` bucket with unsigned boto3,
within the same per-host limits, retries and atomic, validated writes.

:class:`VirtualMAST` is the observatory base of the three missions. For a
batch of catalog rows (:meth:`VirtualMAST.prepare_download`) it finds each
source's target (the catalog's cross-id, else a search by position), asks
for the observations of up to ``download_batch_size`` targets in one query,
for their products in batches of 500 observations, and for the cloud paths
of the light-curve files in batches of 50. Each source's download then
fetches its files (S3 first when ``use_cloud``, MAST HTTPS otherwise or when
the bucket fails), reads them, and returns one table holding every
sector/campaign/quarter, with the FITS headers and product ids as
provenance. A source with nothing at MAST gets an empty table; a source
whose files cannot be fetched raises, so the run records it and the next
run tries again.

Nothing is taken on trust: files come only from the MAST host and the
configured bucket (a data URI that is not ``mast:...``, a cloud path that is
not a plain key, a redirect to another host are refused), answers that are
not lists of rows are errors, and every file must be one of the mission
(``TELESCOP``, ``MISSION``, the sector, quarter or campaign keyword) with the
columns and units the reduction reads (:func:`check_layout`); a file that is
not is deleted and its source fails with the reason.

Examples
--------
>>> from skyretriever.net import HttpClient
>>> client = MastClient("https://mast.stsci.edu", HttpClient())
>>> client.invoke("Mast.Caom.Filtered", {"columns": "*", "filters": [
...     {"paramName": "target_name", "values": ["25155310"]},
...     {"paramName": "obs_collection", "values": ["TESS"]}]})          # doctest: +SKIP
[{'obs_collection': 'TESS', 'target_name': '25155310', ...}, ...]
"""

from __future__ import annotations

import abc
import json
import logging
import math
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar, Literal, TypeVar
from urllib.parse import quote

import numpy as np
import pandas as pd
from pydantic import field_validator

from skyretriever import storage
from skyretriever.fitsfile import (
    InvalidFileError,
    drop_repeated_cadences,
    read_fits_table,
    validate_fits,
)
from skyretriever.net import (
    TRANSIENT_STATUS,
    BadAnswer,
    ForbiddenHost,
    HttpClient,
    NetworkError,
    NetworkPolicy,
    TransientError,
    join_url,
    shared_client,
    validate_archive_url,
)
from skyretriever.observatories.base import (
    ObservatoryParameters,
    ProjectContext,
    VirtualObservatory,
)
from skyretriever.parameters import parameter

__all__ = [
    "BJDREF_KEPLER",
    "BJDREF_TESS",
    "KEPLER_QUALITY_PRESETS",
    "KEPLER_ZERO_POINT",
    "TESS_QUALITY_PRESETS",
    "TESS_ZERO_POINT",
    "CloudFileMissing",
    "LightcurveLayout",
    "MastClient",
    "MastError",
    "MastParameters",
    "ProductInfo",
    "S3Bucket",
    "SourcePlan",
    "VirtualMAST",
    "WrongTargetError",
    "angular_distance_arcsec",
    "check_data_uri",
    "check_layout",
    "check_target",
    "exptime_filter",
    "exptime_matches",
    "header_target_id",
    "in_chunks",
    "read_lightcurve_fits",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Integer part of the reference BJD of TESS times (BTJD) and of Kepler/K2 times (BKJD).
BJDREF_TESS = 2457000
BJDREF_KEPLER = 2454833
MJD_OFFSET = 2400000.5
#: (magnitude, flux in e-/s): a TESS magnitude 10 star gives about 15,000 e-/s
#: (Vanderspek et al. 2018); a Kepler magnitude 12 star about 1.74e5 e-/s (Kepler
#: Instrument Handbook). Magnitudes made from fluxes with these are approximate.
TESS_ZERO_POINT = (10.0, 15000.0)
KEPLER_ZERO_POINT = (12.0, 1.74e5)
#: Quality masks of lightkurve 2.6, by name.
TESS_QUALITY_PRESETS = {"none": 0, "default": 17087, "hard": 24319, "hardest": 65535}
KEPLER_QUALITY_PRESETS = {"none": 0, "default": 1130799, "hard": 1664431, "hardest": 2096639}

#: Observations per ``Mast.Caom.Products`` request (astroquery 0.4.12 uses 500 too).
PRODUCTS_PER_REQUEST = 500
#: URIs per ``path_lookup`` request (more give "414 Request-URI Too Large").
URIS_PER_PATH_LOOKUP = 50


class MastError(NetworkError):
    """MAST answered ``status: ERROR`` (or kept answering ``EXECUTING`` past the time limit)."""


class CloudFileMissing(NetworkError):
    """The file is not in the S3 bucket (the download falls back to MAST HTTPS)."""


# -- the MAST portal ---------------------------------------------------------------------------
def in_chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in consecutive lists of at most ``size``."""
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def angular_distance_arcsec(ra1: float, dec1: float, ra2: Any, dec2: Any) -> Any:
    """Great-circle distance in arcseconds between positions in degrees (haversine; arrays work).

    Examples
    --------
    >>> round(float(angular_distance_arcsec(10.0, 0.0, 10.0, 1.0)), 6)
    3600.0
    """
    ra1, dec1 = np.radians(ra1), np.radians(dec1)
    ra2, dec2 = np.radians(ra2), np.radians(dec2)
    term = (np.sin((dec2 - dec1) / 2) ** 2
            + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2)
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(term, 0, 1)))) * 3600.0


def _normalize_rows(result: dict[str, Any], what: str = "MAST") -> list[dict[str, Any]]:
    """MAST's nulls (-999 for integers, null for floats) as ``None``.

    Raises
    ------
    skyretriever.net.BadAnswer
        If the answer's ``data`` is not a list of rows (objects) or its
        ``fields`` not a list of column descriptions.
    """
    fields, data = result.get("fields") or [], result.get("data") or []
    if not isinstance(fields, list) or not all(isinstance(f, dict) for f in fields):
        raise BadAnswer(f"{what}: the answer's 'fields' is not a list of column descriptions")
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise BadAnswer(f"{what}: the answer's 'data' is not a list of rows")
    types = {f.get("name"): str(f.get("type", "")).lower() for f in fields}
    rows = []
    for raw in data:
        row = {}
        for name, value in raw.items():
            kind = types.get(name, "")
            if value is None or (kind in ("int", "long", "short") and value == -999):
                value = None
            elif kind in ("float", "double") and isinstance(value, float) and math.isnan(value):
                value = None
            row[name] = value
        rows.append(row)
    return rows


class _RuntimeState(abc.ABC):
    """Pickles without its run-time attributes (pools, clients, locks), which are made again."""

    #: Names of the attributes :meth:`_init_runtime` makes; never pickled.
    _RUNTIME: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def _init_runtime(self) -> None:
        """Make the run-time attributes (called on construction and after unpickling)."""

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self._RUNTIME}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()


class MastClient(_RuntimeState):
    """The MAST portal API: service requests, cloud paths and HTTPS downloads.

    Thread-safe; made from a base URL (``mast_url``) and an :class:`HttpClient`.

    Parameters
    ----------
    mast_url
        Base URL of the portal (``https://mast.stsci.edu``, or a simulator or mirror).
    http
        The HTTP client (timeouts, retries, per-host limits).
    page_size
        Rows per page of query results.
    query_timeout
        Seconds to keep asking while MAST answers ``EXECUTING``.
    """

    def __init__(self, mast_url: str, http: HttpClient, page_size: int = 50000,
                 query_timeout: float = 600.0) -> None:
        self.mast_url = mast_url.rstrip("/")
        self.http = http
        self.page_size = page_size
        self.query_timeout = query_timeout
        self._init_runtime()

    _RUNTIME = ("_executor", "_lock")

    def _init_runtime(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def invoke_url(self) -> str:
        return join_url(self.mast_url, "api/v0/invoke")

    # -- running many requests at once -------------------------------------------------------
    def map(self, function: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[function(item) ...]`` run on a pool as wide as the per-host limit, in order.

        The first exception raised is re-raised after every call has finished.
        """
        if len(items) <= 1:
            return [function(item) for item in items]
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.http.policy.max_connections_per_host, thread_name_prefix="mast-query"
                )
        futures = [self._executor.submit(function, item) for item in items]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]
        return [f.result() for f in futures]

    # -- the portal's service requests ------------------------------------------------------
    def invoke(self, service: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every row a service returns (all pages), with MAST's nulls as ``None``.

        Raises
        ------
        MastError
            If MAST answers ``ERROR``, or still ``EXECUTING`` after ``query_timeout``.
        skyretriever.net.NetworkError
            If MAST cannot be reached (after the HTTP layer's retries).
        """
        rows: list[dict[str, Any]] = []
        page = 1
        while True:
            result = self._invoke_page(service, params, page)
            what = f"MAST {service} at {self.mast_url} (page {page})"
            rows += _normalize_rows(result, what)
            paging = result.get("paging") or {}
            pages = paging.get("pagesFiltered") if isinstance(paging, dict) else None
            if pages is not None and not (isinstance(pages, int) and not isinstance(pages, bool)):
                raise BadAnswer(f"{what}: paging.pagesFiltered is {pages!r}, not a number")
            if page >= (pages or 1):
                return rows
            page += 1

    def _invoke_page(self, service: str, params: dict[str, Any], page: int) -> dict[str, Any]:
        # The same request (same cacheBreaker) is sent again while MAST works on it, so the
        # portal hands back the result of the query it started rather than start another.
        body = json.dumps({"service": service, "params": params, "format": "json",
                           "pagesize": self.page_size, "page": page,
                           "cacheBreaker": str(uuid.uuid4())})
        what = f"MAST {service} at {self.mast_url} (page {page})"
        deadline = time.monotonic() + self.query_timeout
        wait = 0.25
        while True:
            result = self.http.request_json("POST", self.invoke_url, data={"request": body},
                                            what=what, allowed_hosts=(self.mast_url,))
            status = result.get("status") if isinstance(result, dict) else None
            if status == "COMPLETE":
                return result
            if status == "EXECUTING":
                if time.monotonic() + wait > deadline:
                    raise MastError(f"{what}: still EXECUTING after {self.query_timeout:.0f} s "
                                    "(query_timeout); the next run asks again")
                time.sleep(wait)
                wait = min(wait * 2, 5.0)
                continue
            message = result.get("msg", "") if isinstance(result, dict) else str(result)[:200]
            raise MastError(f"{what}: MAST answered status {status!r}: {message}")

    def observations(self, target_names: Sequence[str], criteria: list[dict[str, Any]]
                     ) -> list[dict[str, Any]]:
        """Observations of many targets in one ``Mast.Caom.Filtered`` query."""
        if not target_names:
            return []
        filters = [{"paramName": "target_name", "values": list(target_names)}, *criteria]
        return self.invoke("Mast.Caom.Filtered", {"columns": "*", "filters": filters})

    def observations_near(self, ra: float, dec: float, radius_deg: float,
                          criteria: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Observations around a position (``Mast.Caom.Filtered.Position``), nearest first."""
        rows = self.invoke("Mast.Caom.Filtered.Position", {
            "columns": "*", "filters": criteria, "position": f"{ra}, {dec}, {radius_deg}",
        })
        return sorted(rows, key=lambda row: row.get("distance") or 0.0)

    def products(self, obsids: Sequence[str]) -> list[dict[str, Any]]:
        """Products of many observations (``Mast.Caom.Products``, 500 per request, in parallel)."""
        unique = sorted({str(o) for o in obsids if o})
        batches = self.map(lambda chunk: self.invoke("Mast.Caom.Products",
                                                     {"obsid": ",".join(chunk)}),
                           in_chunks(unique, PRODUCTS_PER_REQUEST))
        return [row for batch in batches for row in batch]

    def tic_cone(self, ra: float, dec: float, radius_deg: float) -> list[dict[str, Any]]:
        """TIC stars around a position (``Mast.Catalogs.Tic.Cone``)."""
        return self.invoke("Mast.Catalogs.Tic.Cone", {"ra": ra, "dec": dec, "radius": radius_deg})

    def tic_rows(self, column: str, values: Sequence[str]) -> list[dict[str, Any]]:
        """TIC rows whose ``column`` is one of ``values`` (``Mast.Catalogs.Filtered.Tic.Rows``)."""
        if not values:
            return []
        return self.invoke("Mast.Catalogs.Filtered.Tic.Rows", {
            "columns": "*", "filters": [{"paramName": column, "values": list(values)}],
        })

    def cloud_keys(self, data_uris: Sequence[str]) -> dict[str, str | None]:
        """S3 key of each data URI in the public bucket (``None`` where it has none)."""
        url = join_url(self.mast_url, "api/v0.1/path_lookup/")

        def lookup(chunk: list[str]) -> dict[str, Any]:
            answer = self.http.request_json("GET", url, params={"uri": chunk},
                                            what=f"MAST path_lookup at {self.mast_url}",
                                            allowed_hosts=(self.mast_url,))
            if not isinstance(answer, dict):
                raise MastError(f"MAST path_lookup at {self.mast_url} answered {answer!r}")
            return answer

        keys: dict[str, str | None] = {}
        unique = sorted(set(data_uris))
        for answer in self.map(lookup, in_chunks(unique, URIS_PER_PATH_LOOKUP)):
            for uri, entry in answer.items():
                path = (entry or {}).get("path") if isinstance(entry, dict) else None
                if not path:
                    keys[uri] = None
                    continue
                path = str(path)
                key = (path.replace("/hlsp_local/public/", "mast/") if "hlsp" in path
                       else path).lstrip("/")
                if not _SAFE_CLOUD_KEY.fullmatch(key) or ".." in key.split("/"):
                    # Not a key of the bucket (another host, a parent folder...): MAST HTTPS.
                    log.warning("MAST path_lookup at %s gave %r for %s, which is not a plain "
                                "key of the bucket; the file will come from MAST HTTPS",
                                self.mast_url, path[:200], uri)
                    keys[uri] = None
                else:
                    keys[uri] = key
        return {uri: keys.get(uri) for uri in data_uris}

    def download_url(self, data_uri: str) -> str:
        """HTTPS URL of a product: ``<mast_url>/api/v0.1/Download/file?uri=<dataURI>``.

        Raises
        ------
        ForbiddenHost
            If the data URI is not a MAST URI (``mast:MISSION/...``): an URI naming
            another host or scheme is never fetched.
        """
        check_data_uri(data_uri)
        return join_url(self.mast_url, "api/v0.1/Download/file") + "?uri=" + quote(data_uri,
                                                                                  safe=":/")

    def download(self, data_uri: str, destination: Path,
                 validator: Callable[[Path], None] | None = validate_fits) -> Path:
        """Download a product over HTTPS (atomically, validated), from the MAST host only."""
        return self.http.download(self.download_url(data_uri), destination, validator=validator,
                                  allowed_hosts=(self.mast_url,))


#: What a MAST data URI looks like: ``mast:TESS/product/<file>`` (HLSPs: ``mast:HLSP/...``).
_DATA_URI = re.compile(r"mast:[A-Za-z0-9_\-]+(/[A-Za-z0-9_.+\-]+)+")
#: A key of the public bucket: plain path pieces.
_SAFE_CLOUD_KEY = re.compile(r"[A-Za-z0-9_.+\-]+(/[A-Za-z0-9_.+\-]+)*")


def check_data_uri(data_uri: str) -> str:
    """``data_uri`` if it is a MAST data URI; else :class:`ForbiddenHost` saying why.

    Examples
    --------
    >>> check_data_uri("mast:TESS/product/tess2018206045859-s0001-0000000025155310-0120-s_lc.fits")[:10]
    'mast:TESS/'
    >>> check_data_uri("https://elsewhere.example/x_lc.fits")
    Traceback (most recent call last):
    ...
    skyretriever.net.ForbiddenHost: MAST product 'https://elsewhere.example/x_lc.fits' is not a MAST data URI (mast:MISSION/...); it is not downloaded
    """
    text = str(data_uri)
    if not _DATA_URI.fullmatch(text) or ".." in text.split("/"):
        raise ForbiddenHost(f"MAST product {text[:200]!r} is not a MAST data URI "
                            "(mast:MISSION/...); it is not downloaded")
    return text


# -- the public S3 bucket --------------------------------------------------------------------
class S3Bucket(_RuntimeState):
    """Unsigned reads from a public bucket (``stpubdata``) through boto3, politely and atomically.

    Requests count against the :class:`HttpClient`'s per-host limit and go
    through its retry loop (boto3's own retries are off) and its atomic,
    validated file writes.

    Parameters
    ----------
    bucket
        Bucket name.
    endpoint_url
        S3 endpoint (``None``: AWS); path-style addressing is used for other endpoints.
    region
        The bucket's region.
    http
        The client whose policy, limits and retry loop apply.
    """

    def __init__(self, bucket: str, endpoint_url: str | None, region: str,
                 http: HttpClient) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.http = http
        self._init_runtime()

    _RUNTIME = ("_client", "_lock")

    def _init_runtime(self) -> None:
        self._client = None
        self._lock = threading.Lock()

    @property
    def host_url(self) -> str:
        return self.endpoint_url or f"https://s3.{self.region}.amazonaws.com"

    @property
    def client(self):
        """The boto3 S3 client (made once, under a lock: making clients is not thread-safe)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import boto3
                    import botocore
                    from botocore.config import Config

                    policy = self.http.policy
                    config = Config(
                        signature_version=botocore.UNSIGNED,
                        s3={"addressing_style": "path" if self.endpoint_url else "auto"},
                        retries={"total_max_attempts": 1, "mode": "standard"},
                        connect_timeout=policy.connect_timeout, read_timeout=policy.timeout,
                        max_pool_connections=policy.max_connections_per_host,
                        user_agent_extra=policy.user_agent,
                    )
                    self._client = boto3.session.Session().client(
                        "s3", endpoint_url=self.endpoint_url, region_name=self.region,
                        config=config,
                    )
        return self._client

    def _fault(self, error: Exception, key: str) -> Exception:
        """Our error for a boto3 one: transient, missing, or final."""
        from botocore import exceptions

        where = f"s3://{self.bucket}/{key} at {self.host_url}"
        if isinstance(error, exceptions.ClientError):
            metadata = error.response.get("ResponseMetadata", {})
            status = int(metadata.get("HTTPStatusCode") or 0)
            code = str(error.response.get("Error", {}).get("Code", ""))
            if status in TRANSIENT_STATUS or code in ("SlowDown", "ServiceUnavailable",
                                                      "InternalError", "RequestTimeout"):
                headers = {k.lower(): v for k, v in (metadata.get("HTTPHeaders") or {}).items()}
                retry_after = headers.get("retry-after")
                return TransientError(
                    f"{where}: HTTP {status} {code}",
                    retry_after=float(retry_after) if retry_after and retry_after.isdigit()
                    else None, status=status)
            if status == 404 or code in ("NoSuchKey", "NoSuchBucket", "404"):
                return CloudFileMissing(f"{where}: {code or status} (not in the bucket)")
            return NetworkError(f"{where}: HTTP {status} {code}: {error}")
        if isinstance(error, (exceptions.HTTPClientError, exceptions.ConnectionError,
                              exceptions.IncompleteReadError)):
            return TransientError(f"{where}: {type(error).__name__}: {error}")
        return NetworkError(f"{where}: {type(error).__name__}: {error}")

    def download(self, key: str, destination: Path,
                 validator: Callable[[Path], None] | None = validate_fits) -> Path:
        """Fetch ``key`` to ``destination`` (atomically, validated, with retries).

        Raises
        ------
        CloudFileMissing
            If the bucket does not have the key.
        skyretriever.net.RetriesExhausted, skyretriever.net.NetworkError
            If the bucket cannot be read.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        def write(handle: IO[bytes]) -> int | None:
            handle.seek(0)
            handle.truncate()
            with self.http.limiter.slot(self.host_url):
                try:
                    answer = self.client.get_object(Bucket=self.bucket, Key=key)
                    body = answer["Body"]
                    try:
                        for chunk in body.iter_chunks(256 * 1024):
                            handle.write(chunk)
                    finally:
                        body.close()
                except (BotoCoreError, ClientError) as error:
                    raise self._fault(error, key) from error
            return int(answer.get("ContentLength") or 0) or None

        return self.http.download_with(destination, write, what=f"s3://{self.bucket}/{key}",
                                       validator=validator)


# -- FITS light-curve files ------------------------------------------------------------------
@dataclass(frozen=True)
class LightcurveLayout:
    """What a mission's light-curve files hold; :func:`read_lightcurve_fits` checks files against it.

    Examples
    --------
    >>> LightcurveLayout("TESS", "TESS", "SECTOR", BJDREF_TESS, ("TIME", "QUALITY")).telescope
    'TESS'
    """

    #: The mission as MAST names it (``TESS``, ``Kepler``, ``K2``; ``MISSION`` when a file says).
    mission: str
    #: The primary header's ``TELESCOP``.
    telescope: str
    #: The primary header keyword naming the sector, quarter or campaign.
    sequence_keyword: str
    #: ``BJDREFI``: TIME is BJD minus this.
    bjd_reference: int
    #: Columns of the ``LIGHTCURVE`` table the reduction reads.
    columns: tuple[str, ...]


#: Units a flux column may be in (spaces removed, lower case): electrons per second.
_FLUX_UNITS = frozenset({"e-/s", "e/s", "electrons/s", "electron/s", "e-s-1", "e-s**-1",
                         "electrons/sec", "e-/sec"})
_SEQUENCE_KEYWORDS = ("SECTOR", "QUARTER", "CAMPAIGN")
_BJD_MINUS = re.compile(r"bjd-(\d+)")


def _column_units(header: dict[str, Any]) -> dict[str, str | None]:
    """Each column's ``TUNITn`` (``None`` where it has none), by ``TTYPEn``."""
    units = {}
    for number in range(1, int(header.get("TFIELDS") or 0) + 1):
        name = str(header.get(f"TTYPE{number}", "")).strip()
        unit = header.get(f"TUNIT{number}")
        units[name] = None if unit is None or str(unit).strip() == "" else str(unit).strip()
    return units


def check_layout(path: str | Path, primary: dict[str, Any], table: dict[str, Any],
                 layout: LightcurveLayout) -> None:
    """Raise :class:`InvalidFileError` unless a file's headers are those of ``layout``'s mission.

    The mission (``TELESCOP``, ``MISSION`` and the sequence keyword: a Kepler
    file is not taken for a TESS or K2 one), the columns the reduction reads,
    and their units (TIME in days from the mission's BJD reference, fluxes in
    e-/s) are checked. The message names the file and what is wrong.
    """
    where = f"{path}: not a {layout.mission} light curve"
    telescope = str(primary.get("TELESCOP") or table.get("TELESCOP") or "").strip()
    if telescope.lower() != layout.telescope.lower():
        raise InvalidFileError(f"{where}: TELESCOP is {telescope!r}, expected "
                               f"{layout.telescope!r} (a file of another mission)")
    mission = primary.get("MISSION")
    if mission is not None and str(mission).strip().lower() != layout.mission.lower():
        raise InvalidFileError(f"{where}: MISSION is {str(mission).strip()!r}, expected "
                               f"{layout.mission!r} (a file of another mission)")
    if not isinstance(primary.get(layout.sequence_keyword), int):
        others = [k for k in _SEQUENCE_KEYWORDS if k != layout.sequence_keyword and k in primary]
        hint = (f"; it has {others[0]} = {primary[others[0]]!r} (a file of another mission)"
                if others else "")
        raise InvalidFileError(f"{where}: the primary header has no whole-number "
                               f"{layout.sequence_keyword}{hint}")
    units = _column_units(table)
    missing = [column for column in layout.columns if column not in units]
    if missing:
        raise InvalidFileError(f"{where}: the LIGHTCURVE table lacks the column(s) "
                               f"{', '.join(missing)} (it has {', '.join(units) or 'none'})")
    reference = table.get("BJDREFI")
    if not isinstance(reference, int) or reference != layout.bjd_reference:
        raise InvalidFileError(f"{where}: BJDREFI is {reference!r}, expected "
                               f"{layout.bjd_reference} (TIME would be read on the wrong clock)")
    time_unit = table.get("TIMEUNIT")
    if time_unit is not None and str(time_unit).strip().lower() not in ("d", "day", "days"):
        raise InvalidFileError(f"{where}: TIMEUNIT is {time_unit!r}, expected 'd' (days)")
    unit = units.get("TIME")
    if unit is not None:
        plain = unit.lower().replace(" ", "")
        match = _BJD_MINUS.search(plain)
        if match is not None and int(match.group(1)) != layout.bjd_reference:
            raise InvalidFileError(f"{where}: TIME is in {unit!r}, expected BJD - "
                                   f"{layout.bjd_reference}")
        if match is None and plain.split(",")[-1] not in ("d", "day", "days"):
            raise InvalidFileError(f"{where}: TIME is in {unit!r}, expected days "
                                   f"(BJD - {layout.bjd_reference})")
    for column in layout.columns:
        if "FLUX" not in column or units.get(column) is None:
            continue
        if units[column].lower().replace(" ", "") not in _FLUX_UNITS:
            raise InvalidFileError(f"{where}: {column} is in {units[column]!r}, expected e-/s")


class WrongTargetError(InvalidFileError):
    """A whole, valid light-curve file of another target than the one asked for."""


_TRAILING_NUMBER = re.compile(r"(\d+)\s*$")


def header_target_id(primary: dict[str, Any], keyword: str) -> int | None:
    """The target id a file's primary header gives: ``keyword`` (TICID, KEPLERID), else the
    number ending ``OBJECT`` ('TIC 25155310', 'KIC 757076'); ``None`` if neither."""
    value = primary.get(keyword)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    match = _TRAILING_NUMBER.search(str(primary.get("OBJECT") or ""))
    return int(match.group(1)) if match else None


def check_target(path: str | Path, primary: dict[str, Any], keyword: str,
                 expected_id: int | None, position: tuple[float, float] | None,
                 radius: float, asked: str) -> None:
    """Raise :class:`WrongTargetError` unless a file is of the target asked for.

    With ``expected_id`` (the target's TIC, KIC or EPIC id) the header's id
    (``keyword``, else ``OBJECT``) must be it; without one, or when the header has
    no id, ``RA_OBJ``/``DEC_OBJ`` must be within ``radius`` arcsec of ``position``.
    ``asked`` names the source in the message.

    Examples
    --------
    >>> check_target("f.fits", {"TICID": 7, "OBJECT": "TIC 7"}, "TICID", 8, None, 10.0, "'a'")
    Traceback (most recent call last):
    ...
    skyretriever.observatories.mast.WrongTargetError: f.fits is a light curve of TICID 7 (OBJECT 'TIC 7'), not of TICID 8 asked for source 'a': not stored
    """
    found = header_target_id(primary, keyword)
    if expected_id is not None and found is not None:
        if found != expected_id:
            raise WrongTargetError(
                f"{path} is a light curve of {keyword} {found} (OBJECT "
                f"{str(primary.get('OBJECT') or '').strip()!r}), not of {keyword} {expected_id} "
                f"asked for source {asked}: not stored")
        return
    ra, dec = primary.get("RA_OBJ"), primary.get("DEC_OBJ")
    if position is None or not isinstance(ra, (int, float)) or not isinstance(dec, (int, float)):
        return
    distance = float(angular_distance_arcsec(position[0], position[1], float(ra), float(dec)))
    if not distance <= radius:
        raise WrongTargetError(
            f"{path} is a light curve of a target at RA_OBJ {float(ra):.6f}, DEC_OBJ "
            f"{float(dec):.6f} ({keyword} {found}), {distance:.1f} arcsec from source {asked} "
            f"at {position[0]:.6f}, {position[1]:.6f} (match_radius {radius:g}): not stored")


def read_lightcurve_fits(path: str | Path, layout: LightcurveLayout | None = None
                         ) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Read a TESS, K2 or Kepler light-curve file: its table (every row) and its headers.

    Column names are lower-cased; ``bjd`` (full barycentric Julian date,
    TDB), ``mjd`` (that date minus 2400000.5) and ``exptime`` (the cadence in
    seconds, from ``TIMEDEL``) are added. Rows with NaN ``TIME`` are kept
    (reduction drops them); a row repeating an earlier row's cadence (``CADENCENO``
    or ``TIME``) is dropped and counted in ``repeated_cadences_dropped``, kept with
    the headers in the raw data's provenance. Headers lose their table-layout and
    checksum cards.
    With ``layout``, the file must be one of that mission (:func:`check_layout`).

    Returns
    -------
    frame, headers
        The table, and ``{"primary": {...}, "lightcurve": {...}}`` header values
        (with ``"repeated_cadences_dropped"``: rows left out as repeats).

    Raises
    ------
    skyretriever.fitsfile.InvalidFileError
        If the file is not whole, has no ``LIGHTCURVE`` table with a ``TIME``
        column, or is not of ``layout``'s mission, columns and units.

    Examples
    --------
    >>> frame, headers = read_lightcurve_fits("tess2018206045859-s0001-..._lc.fits")  # doctest: +SKIP
    >>> headers["primary"]["SECTOR"], frame[["time", "bjd", "pdcsap_flux", "quality"]]   # doctest: +SKIP
    """
    columns, hdus = read_fits_table(path, "LIGHTCURVE")
    columns, repeated = drop_repeated_cadences(columns)
    table = next(hdu for hdu in hdus if hdu.name == "LIGHTCURVE")
    if "TIME" not in columns:
        raise InvalidFileError(f"{path}: the LIGHTCURVE table has no TIME column")
    if layout is not None:
        check_layout(path, hdus[0].header, table.header, layout)
    frame = pd.DataFrame({name.lower(): values for name, values in columns.items()
                          if values.ndim == 1})
    header = table.header
    reference = float(header.get("BJDREFI", 0)) + float(header.get("BJDREFF", 0.0))
    frame["bjd"] = frame["time"].to_numpy(dtype=float) + reference
    frame["mjd"] = frame["bjd"] - MJD_OFFSET
    timedel = header.get("TIMEDEL")
    frame["exptime"] = float(timedel) * 86400.0 if timedel else np.nan
    return frame, {"primary": hdus[0].described(), "lightcurve": table.described(),
                   "repeated_cadences_dropped": repeated}


# -- what a source's download needs ----------------------------------------------------------
@dataclass
class ProductInfo:
    """One light-curve file chosen for a source."""

    data_uri: str
    filename: str
    obs_id: str
    obsid: str
    sequence: int | None
    exptime: float | None
    author: str
    size: int | None = None
    cloud_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Resolution:
    """How a catalog row was matched to a MAST target (``target_name`` ``None``: no match)."""

    target_name: str | None
    provenance: dict[str, Any] = field(default_factory=dict)
    observations: list[dict[str, Any]] | None = None


@dataclass
class SourcePlan:
    """What one source's download fetches, found by the batch queries (or why it cannot)."""

    target_name: str | None
    products: list[ProductInfo] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


# -- the observatory base --------------------------------------------------------------------
class MastParameters(ObservatoryParameters):
    """Parameters shared by the MAST missions (TESS, K2, Kepler)."""

    mast_url: str = parameter(
        "https://mast.stsci.edu", "Base URL of the MAST portal (or a mirror or simulator).",
        critical=False,
    )
    s3_endpoint_url: str | None = parameter(
        None, "S3 endpoint of the public bucket; None uses AWS (us-east-1).", critical=False
    )
    s3_bucket: str = parameter("stpubdata", "Public bucket holding MAST's files.", critical=False)
    s3_region: str = parameter("us-east-1", "Region of the public bucket.", critical=False)
    use_cloud: bool = parameter(
        True, "Fetch files from the S3 bucket when they are there (else, and on failure, MAST HTTPS).",
        critical=False,
    )
    flux_column: Literal["pdcsap", "sap"] = parameter(
        "pdcsap", "Flux of the reduced light curves: pdcsap (PDCSAP_FLUX) or sap (SAP_FLUX)."
    )
    match_radius: float = parameter(
        10.0, "Radius (arcsec) to find a source without a cross-id by its position.", gt=0
    )
    match_mag_tolerance: float | None = parameter(
        1.0, "Largest |catalog mag - TIC Tmag| for a positional TIC match; None ignores magnitudes.",
        ge=0,
    )
    position_epoch: float = parameter(
        2016.0, "Epoch (year) of catalog positions; moved to 2000 with pmra/pmdec for matching."
    )
    max_connections_per_host: int = parameter(
        8, "Requests in flight at once to one host (MAST, the S3 endpoint), across all sources.",
        critical=False, ge=1,
    )
    timeout: float = parameter(
        60.0, "Seconds to wait for each read from an archive before the attempt counts as failed.",
        critical=False, gt=0,
    )
    max_attempts: int = parameter(
        6, "Attempts per request on transient errors (503, 429, resets, timeouts, cut bodies).",
        critical=False, ge=1,
    )
    backoff: float = parameter(
        1.0, "Seconds of the first wait between attempts (doubled each time, with jitter).",
        critical=False, ge=0,
    )
    query_timeout: float = parameter(
        600.0, "Seconds to keep asking while MAST answers EXECUTING.", critical=False, gt=0
    )
    page_size: int = parameter(50000, "Rows per page of MAST query results.", critical=False, ge=1)
    keep_fits: bool = parameter(
        False, "Keep downloaded FITS files under DATA_ROOT/raw/<OBS>/fits (else deleted once stored).",
        critical=False,
    )
    download_workers: int = parameter(
        16, "Sources downloading at once for this observatory (within max_connections_per_host).",
        critical=False, ge=1,
    )

    @field_validator("mast_url", "s3_endpoint_url")
    @classmethod
    def _plain_archive_url(cls, value: str | None) -> str | None:
        return None if value is None else validate_archive_url(value)


class VirtualMAST(VirtualObservatory):
    """Base of the MAST missions: batched queries, S3/HTTPS downloads, FITS reading.

    Subclasses set the mission's constants and say how a catalog row names a
    target (:meth:`target_from_row`), which observations and files are wanted
    (:meth:`observation_criteria`, :meth:`wanted_observation`,
    :meth:`wanted_product`), and which sector, campaign or quarter a file
    holds (:meth:`product_sequence`).
    """

    Parameters: ClassVar[type[MastParameters]] = MastParameters
    #: Primary-header keyword holding the target's id (the number in ``target_name``).
    target_id_keyword: ClassVar[str] = "TICID"
    #: Which target a row resolves to; subclasses add which files are asked for.
    download_parameters: ClassVar[tuple[str, ...]] = ("match_radius", "match_mag_tolerance",
                                                      "position_epoch")
    #: Mission name as MAST spells it in ``obs_collection`` and ``project``.
    mission: ClassVar[str] = ""
    #: Raw column saying which sector/campaign/quarter each row comes from.
    sequence_column: ClassVar[str] = ""
    #: Name of the mission's time column in the reduced light curves (``btjd``, ``bkjd``).
    time_column: ClassVar[str] = ""
    #: The ``filter`` of every point (the mission's bandpass).
    band: ClassVar[str] = ""
    #: Raw column holding the quality bits.
    quality_column: ClassVar[str] = "quality"
    zero_point: ClassVar[tuple[float, float]] = TESS_ZERO_POINT
    #: ``TELESCOP`` of the mission's files, and the BJD their TIME counts from.
    telescope: ClassVar[str] = "TESS"
    bjd_reference: ClassVar[int] = BJDREF_TESS

    def __init__(self, pars: MastParameters | None = None, context: ProjectContext | None = None,
                 **kwargs: Any) -> None:
        super().__init__(pars, context, **kwargs)
        self._init_runtime()

    #: Attributes made at run time (clients, locks, the batch's plans); never pickled.
    _RUNTIME = ("_mast", "_mast_key", "_s3", "_s3_key", "_plans", "_runtime_lock")

    def _init_runtime(self) -> None:
        self._mast: MastClient | None = None
        self._s3: S3Bucket | None = None
        self._mast_key: tuple | None = None
        self._s3_key: tuple | None = None
        self._plans: dict[str, SourcePlan] = {}
        self._runtime_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes reduce; they never download, so they get no clients or sockets.
        state = super().__getstate__()
        for name in self._RUNTIME:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    # -- clients ---------------------------------------------------------------------------
    @property
    def network_policy(self) -> NetworkPolicy:
        """Timeouts, retries and limits from the parameters."""
        from skyretriever._version import __version__

        pars = self.pars
        return NetworkPolicy(
            connect_timeout=min(10.0, pars.timeout), timeout=pars.timeout,
            max_attempts=pars.max_attempts, backoff=pars.backoff,
            backoff_max=max(60.0, pars.backoff), max_connections_per_host=pars.max_connections_per_host,
            user_agent=f"skyretriever/{__version__}",
        )

    @property
    def mast(self) -> MastClient:
        """The MAST portal client (on the shared HTTP client: the host limit holds across missions).

        Made on first use, and again if the parameters it depends on changed.
        """
        pars = self.pars
        key = (pars.mast_url, pars.page_size, pars.query_timeout, self.network_policy)
        with self._runtime_lock:
            if self._mast is None or self._mast_key != key:
                self._mast = MastClient(pars.mast_url, shared_client(key[-1]),
                                        page_size=pars.page_size, query_timeout=pars.query_timeout)
                self._mast_key = key
            return self._mast

    @property
    def s3(self) -> S3Bucket:
        """The public bucket (made on first use, and again if its parameters changed)."""
        pars = self.pars
        key = (pars.s3_bucket, pars.s3_endpoint_url, pars.s3_region, self.network_policy)
        with self._runtime_lock:
            if self._s3 is None or self._s3_key != key:
                self._s3 = S3Bucket(*key[:3], shared_client(key[-1]))
                self._s3_key = key
            return self._s3

    # -- what subclasses say -------------------------------------------------------------------
    @abc.abstractmethod
    def target_from_row(self, row: dict[str, Any]) -> str | None:
        """The MAST ``target_name`` given by the row's cross-id, or ``None``."""

    @abc.abstractmethod
    def observation_criteria(self) -> list[dict[str, Any]]:
        """Filters (besides ``target_name``) of the observation queries."""

    @abc.abstractmethod
    def wanted_observation(self, observation: dict[str, Any]) -> bool:
        """Whether an observation row is one this observatory's parameters ask for."""

    @abc.abstractmethod
    def wanted_product(self, product: dict[str, Any], observation: dict[str, Any]) -> bool:
        """Whether a product row is a light-curve file this observatory's parameters ask for."""

    def product_sequence(self, product: dict[str, Any], observation: dict[str, Any]) -> int | None:
        """The sector, campaign or quarter a product holds (``None`` if the rows do not say)."""
        return _as_int(observation.get("sequence_number"))

    def wanted_sequences(self) -> list[int] | None:
        """The sectors, campaigns or quarters asked for (``None``: all)."""
        return None

    def sequence_criteria(self) -> list[dict[str, Any]]:
        """Query filters choosing the wanted sequences (observations hold one sequence each)."""
        wanted = self.wanted_sequences()
        if wanted is None:
            return []
        return [{"paramName": "sequence_number", "values": [str(s) for s in wanted]}]

    def product_exptime(self, product: dict[str, Any], observation: dict[str, Any]) -> float | None:
        return _as_float(observation.get("t_exptime"))

    # -- resolving catalog rows to targets -----------------------------------------------------
    def resolve_targets(self, rows: list[dict[str, Any]]) -> dict[str, Resolution]:
        """Each row's MAST target: its cross-id, else the nearest target observed near it."""
        found: dict[str, Resolution] = {}
        by_position = []
        for row in rows:
            target = self.target_from_row(row)
            if target is not None:
                found[row["name"]] = Resolution(target, {"resolved_by": "catalog cross-id"})
            else:
                by_position.append(row)
        radius = self.pars.match_radius
        criteria = self.observation_criteria()

        def search(row: dict[str, Any]) -> Resolution:
            ra, dec = self.position_at_2000(row)
            observations = [o for o in self.mast.observations_near(ra, dec, radius / 3600.0,
                                                                   criteria)
                            if (o.get("distance") or 0.0) <= radius]
            if not observations:
                return Resolution(None, {"resolved_by": "position search",
                                         "reason": f"no {self.mission} target observed within "
                                                   f"{radius:g} arcsec"})
            nearest = observations[0]
            target = nearest["target_name"]
            return Resolution(target, {"resolved_by": "position search",
                                       "distance_arcsec": nearest.get("distance")},
                              observations=[o for o in observations if o["target_name"] == target])

        for row, resolution in zip(by_position, self.mast.map(search, by_position)):
            found[row["name"]] = resolution
        return found

    def position_at_2000(self, row: dict[str, Any]) -> tuple[float, float]:
        """The row's position moved to epoch 2000 with its proper motion (if it has one)."""
        ra, dec = float(row["ra"]), float(row["dec"])
        pmra, pmdec = row.get("pmra"), row.get("pmdec")
        if pmra is None or pmdec is None or not (math.isfinite(pmra) and math.isfinite(pmdec)):
            return ra, dec
        years = 2000.0 - self.pars.position_epoch
        dec2000 = dec + pmdec * years / 3.6e6
        ra2000 = ra + pmra * years / 3.6e6 / max(math.cos(math.radians(dec)), 1e-6)
        return ra2000 % 360.0, max(-90.0, min(90.0, dec2000))

    # -- planning a batch ------------------------------------------------------------------------
    def plan_sources(self, rows: list[dict[str, Any]]) -> dict[str, SourcePlan]:
        """The files each row's download will fetch, found with batched queries.

        Targets are resolved (:meth:`resolve_targets`), their observations
        asked for ``download_batch_size`` targets at a time, the products of
        the wanted observations 500 observations at a time, and (with
        ``use_cloud``) the S3 keys of the chosen files 50 at a time.

        Raises
        ------
        skyretriever.net.NetworkError
            If MAST cannot be queried (:class:`MastError` if it refused a query).
        """
        resolutions = self.resolve_targets(rows)
        observations = self._wanted_observations(resolutions)
        obsids = sorted({str(o["obsid"]) for found in observations.values() for o in found})
        products: dict[str, list[dict[str, Any]]] = {}
        for product in self.mast.products(obsids):
            products.setdefault(str(product.get("obsID") or product.get("parent_obsid")),
                                []).append(product)
        plans = {row["name"]: self._plan(resolutions[row["name"]],
                                         observations.get(row["name"], []), products)
                 for row in rows}
        if self.pars.use_cloud:
            chosen = [p for plan in plans.values() for p in plan.products]
            keys = self.mast.cloud_keys([p.data_uri for p in chosen]) if chosen else {}
            for product in chosen:
                product.cloud_key = keys.get(product.data_uri)
        return plans

    def _wanted_observations(self, resolutions: dict[str, Resolution]
                             ) -> dict[str, list[dict[str, Any]]]:
        """The wanted observations of each resolved source (targets queried in batches)."""
        named = sorted({r.target_name for r in resolutions.values()
                        if r.target_name is not None and r.observations is None})
        criteria = self.observation_criteria()
        batches = self.mast.map(lambda chunk: self.mast.observations(chunk, criteria),
                                in_chunks(named, self.pars.download_batch_size))
        by_target: dict[str, list[dict[str, Any]]] = {}
        for observation in (o for batch in batches for o in batch):
            target = str(observation.get("target_name", "")).lower()
            by_target.setdefault(target, []).append(observation)
        wanted = {}
        for name, resolution in resolutions.items():
            if resolution.target_name is None:
                continue
            found = (resolution.observations if resolution.observations is not None
                     else by_target.get(resolution.target_name.lower(), []))
            wanted[name] = [o for o in found if o.get("obsid") and self.wanted_observation(o)]
        return wanted

    def _plan(self, resolution: Resolution, observations: list[dict[str, Any]],
              products: dict[str, list[dict[str, Any]]]) -> SourcePlan:
        """One source's plan: its wanted light-curve files, in sequence and cadence order."""
        provenance = {"archive": "MAST", "mission": self.mission,
                      "target_name": resolution.target_name, **resolution.provenance}
        plan = SourcePlan(resolution.target_name, provenance=provenance)
        wanted = self.wanted_sequences()
        seen = set()
        for observation in observations:
            for product in products.get(str(observation["obsid"]), []):
                uri = product.get("dataURI") or ""
                if not uri or uri in seen or not self.wanted_product(product, observation):
                    continue
                sequence = self.product_sequence(product, observation)
                if wanted is not None and sequence is not None and sequence not in wanted:
                    continue
                seen.add(uri)
                plan.products.append(ProductInfo(
                    data_uri=uri, filename=product.get("productFilename") or uri.rsplit("/")[-1],
                    obs_id=str(observation.get("obs_id") or ""), obsid=str(observation["obsid"]),
                    sequence=sequence, exptime=self.product_exptime(product, observation),
                    author=str(observation.get("provenance_name") or ""),
                    size=_as_int(product.get("size")),
                ))
        plan.products.sort(key=lambda p: (p.sequence if p.sequence is not None else -1,
                                          p.exptime or 0.0, p.filename))
        if resolution.target_name is not None and not plan.products:
            provenance["reason"] = f"MAST has no {self.mission} light curves of the asked kind"
        return plan

    def prepare_download(self, cat_rows: list[dict[str, Any]]) -> None:
        """Query MAST once for the whole batch; each source's download then only fetches files.

        If MAST refuses the batch query (``ERROR``), each source asks on its own
        (one bad target does not fail the others). If MAST cannot be reached
        at all, the batch's sources fail at once with that reason, rather than
        each retrying a dead archive; the next run tries them again.
        """
        try:
            plans = self.plan_sources(cat_rows)
        except MastError as error:
            log.warning("%s: batch query refused (%s); querying source by source",
                        self.name, error)
            plans = {}
        except NetworkError as error:
            reason = f"MAST query for the batch failed: {error}"
            plans = {row["name"]: SourcePlan(None, error=reason) for row in cat_rows}
        with self._runtime_lock:
            self._plans = plans

    def _take_plan(self, row: dict[str, Any]) -> SourcePlan:
        with self._runtime_lock:
            plan = self._plans.pop(row["name"], None)
        if plan is None:
            plan = self.plan_sources([row])[row["name"]]
        if plan.error is not None:
            raise NetworkError(plan.error)
        return plan

    # -- downloading ---------------------------------------------------------------------------
    def lightcurve_layout(self) -> LightcurveLayout:
        """What this mission's files must hold: its telescope and sequence keyword, and the
        columns the reduction reads (both fluxes: raw data is shared by every project)."""
        return LightcurveLayout(
            mission=self.mission, telescope=self.telescope,
            sequence_keyword=self.sequence_column.upper(), bjd_reference=self.bjd_reference,
            columns=("TIME", "SAP_FLUX", "SAP_FLUX_ERR", "PDCSAP_FLUX", "PDCSAP_FLUX_ERR",
                     self.quality_column.upper()),
        )

    def fits_folder(self, source_name: str, target_key: str = "") -> Path:
        """Where a source's FITS files are downloaded:
        ``DATA_ROOT/raw/<OBS>/fits/<source>[_<target key>]``.

        The target's key (:func:`~skyretriever.models.datasets.target_key`) keeps two
        stars of the same name (in two catalogs) out of each other's folder.
        """
        name = storage.sanitize_name(source_name)
        return (storage.data_root() / storage.RAW_FOLDER / self.name.upper() / "fits"
                / (f"{name}_{target_key[:10]}" if target_key else name))

    def fetch_file(self, product: ProductInfo, folder: Path) -> tuple[Path, str]:
        """A product's file on disk, and how it came: ``"cache"``, ``"s3"`` or ``"https"``.

        A complete file left by an earlier try (files stay when a source
        fails part-way, so its next try fetches only what is missing) is
        reused. Otherwise the S3 bucket is tried first (when ``use_cloud`` and
        the file has a cloud key), then MAST HTTPS. A product whose data URI is
        not a MAST one is refused (:class:`~skyretriever.net.ForbiddenHost`).
        """
        check_data_uri(product.data_uri)
        destination = storage.ensure_inside_root(folder / storage.sanitize_name(product.filename))
        if destination.exists():
            try:
                validate_fits(destination)
                return destination, "cache"
            except (ValueError, OSError):
                destination.unlink(missing_ok=True)
        if self.pars.use_cloud and product.cloud_key:
            try:
                return self.s3.download(product.cloud_key, destination), "s3"
            except NetworkError as error:
                log.info("%s: S3 failed for %s (%s); using MAST HTTPS", self.name,
                         product.filename, error)
        return self.mast.download(product.data_uri, destination), "https"

    def download_from_observatory(self, cat_row: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
        """Every light curve MAST has for one catalog row, as one table with a sequence column.

        Raises
        ------
        skyretriever.net.NetworkError
            If MAST could not be queried or a file could not be fetched (the
            source is then recorded as failed, and tried again by the next run).
        skyretriever.fitsfile.InvalidFileError
            If a file is whole but not a light curve this reader knows.
        """
        plan = self._take_plan(cat_row)
        altdata: dict[str, Any] = {**plan.provenance, "mast_url": self.pars.mast_url,
                                   "products": [], "headers": {}}
        if not plan.products:
            return pd.DataFrame(), altdata
        folder = self.fits_folder(cat_row["name"], self.raw_identity(cat_row)["target_key"])
        wanted = self.wanted_sequences()
        frames = []
        for product in plan.products:
            path, route = self.fetch_file(product, folder)
            try:
                frame, headers = read_lightcurve_fits(path, self.lightcurve_layout())
            except InvalidFileError as error:
                path.unlink(missing_ok=True)
                raise InvalidFileError(f"{product.data_uri} (from {route}) cannot be read as a "
                                       f"light curve: {error}") from error
            try:
                self.check_target(path, headers["primary"], plan, cat_row)
            except WrongTargetError:
                path.unlink(missing_ok=True)
                raise
            # MAST's rows name the sequence as users ask for it (K2's campaign 9 is one
            # campaign, though its files are named c91 and c92); the header is the fallback.
            sequence = product.sequence
            if sequence is None:
                sequence = _as_int(headers["primary"].get(self.sequence_column.upper()))
            if wanted is not None and sequence not in wanted:
                continue
            frame[self.sequence_column] = -1 if sequence is None else sequence
            frame["filter"] = self.band
            frames.append(frame)
            altdata["products"].append({**product.to_dict(), "sequence": sequence,
                                        "route": route, "num_rows": len(frame)})
            altdata["headers"][product.filename] = headers
        if not self.pars.keep_fits:
            shutil.rmtree(folder, ignore_errors=True)
        if not frames:
            return pd.DataFrame(), altdata
        return pd.concat(frames, ignore_index=True), altdata

    def check_target(self, path: Path, primary: dict[str, Any], plan: SourcePlan,
                     cat_row: dict[str, Any]) -> None:
        """Refuse a file of another target than the row's (:func:`check_target`): by the id
        in ``target_name`` (the catalog's cross-id or the target found near the row), else by
        position within ``match_radius``."""
        match = _TRAILING_NUMBER.search(plan.target_name or "")
        expected = int(match.group(1)) if match else None
        check_target(path.name, primary, self.target_id_keyword, expected,
                     self.position_at_2000(cat_row), self.pars.match_radius,
                     repr(cat_row["name"]))

    # -- reducing --------------------------------------------------------------------------------
    def standardize(self, frame: pd.DataFrame, altdata: dict[str, Any]) -> pd.DataFrame:
        """Raw FITS columns to the standard ones, the mission's time, centroids and cadence.

        ``flux``/``flux_err`` come from PDCSAP (or SAP, by ``flux_column``);
        ``mag`` is made with the mission's zero point (NaN for fluxes <= 0);
        ``mjd`` is the barycentric date (TDB) minus 2400000.5.
        """
        flux_name = "pdcsap_flux" if self.pars.flux_column == "pdcsap" else "sap_flux"
        flux = frame[flux_name].to_numpy(dtype=float)
        flux_err = frame[f"{flux_name}_err"].to_numpy(dtype=float)
        zero_mag, zero_flux = self.zero_point
        with np.errstate(divide="ignore", invalid="ignore"):
            positive = np.where(flux > 0, flux, np.nan)
            mag = zero_mag - 2.5 * np.log10(positive / zero_flux)
            mag_err = 2.5 / np.log(10) * flux_err / positive

        def column(name: str, dtype: Any = float) -> np.ndarray:
            if name in frame:
                return frame[name].to_numpy(dtype=dtype)
            return np.full(len(frame), np.nan)

        return pd.DataFrame({
            "mjd": column("mjd"),
            "bjd": column("bjd"),
            self.time_column: column("time"),
            "flux": flux,
            "flux_err": flux_err,
            "mag": mag,
            "mag_err": mag_err,
            "filter": self.band,
            "quality": frame[self.quality_column].to_numpy(dtype=np.int64),
            "exptime": column("exptime"),
            "centroid_col": column("mom_centr1"),
            "centroid_row": column("mom_centr2"),
            "cadenceno": frame["cadenceno"].to_numpy(dtype=np.int64) if "cadenceno" in frame
            else np.full(len(frame), -1, dtype=np.int64),
            "sap_bkg": column("sap_bkg"),
            self.sequence_column: frame[self.sequence_column].to_numpy(dtype=np.int64),
        })


def _as_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        return None
    return None if number == -999 else number


def _as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def exptime_matches(exptime: float | None, cadences: Iterable[float], tolerance: float = 0.1
                    ) -> bool:
    """Whether an exposure time is within ``tolerance`` (fraction) of one of ``cadences``."""
    if exptime is None:
        return False
    return any(abs(exptime - c) <= tolerance * c for c in cadences)


def exptime_filter(cadences: Iterable[float]) -> dict[str, Any]:
    """A continuous ``t_exptime`` filter spanning every asked cadence (checked again per row)."""
    cadences = list(cadences)
    return {"paramName": "t_exptime",
            "values": [{"min": min(cadences) * 0.9, "max": max(cadences) * 1.1}]}
