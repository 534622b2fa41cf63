"""The MAST portal's API: service queries, cloud paths and HTTPS downloads.

:class:`MastClient` speaks the MAST portal's JSON protocol (``invoke`` with
paging and ``EXECUTING`` polling, ``path_lookup``, ``Download/file``) through
the package's one HTTP layer (:mod:`skyretriever.net`). Files of the public
``stpubdata`` bucket come through :mod:`skyretriever.observatories.s3`.

Nothing is taken on trust: files come only from the MAST host (a data URI
that is not ``mast:...``, a cloud path that is not a plain key of the bucket, a
redirect to another host are refused), and answers that are not lists of rows
are errors.

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

import json
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from skyretriever.fitsfile import validate_fits, validate_fits_bytes
from skyretriever.net import (
    BadAnswer,
    ForbiddenHost,
    HttpClient,
    NetworkError,
    join_url,
)
from skyretriever.observatories.runtime import RuntimeState

__all__ = ["MastClient", "MastError", "as_float", "as_int", "check_data_uri", "exptime_filter",
           "exptime_matches", "in_chunks"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Observations per ``Mast.Caom.Products`` request (astroquery 0.4.12 uses 500 too).
PRODUCTS_PER_REQUEST = 500
#: URIs per ``path_lookup`` request (more give "414 Request-URI Too Large").
URIS_PER_PATH_LOOKUP = 50


class MastError(NetworkError):
    """MAST answered ``status: ERROR`` (or kept answering ``EXECUTING`` past the time limit)."""


def in_chunks(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in consecutive lists of at most ``size``."""
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


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


class MastClient(RuntimeState):
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

    def read(self, data_uri: str,
             validator: Callable[[memoryview], None] | None = validate_fits_bytes) -> bytes:
        """:meth:`download` into memory: the product's bytes (validated, from the MAST host only)."""
        return self.http.download_bytes(self.download_url(data_uri), validator=validator,
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


# -- reading and asking for MAST's rows ----------------------------------------------------
def as_int(value: Any) -> int | None:
    """A MAST row's whole number (``None`` for nothing, text that is not one, or -999)."""
    if value is None or value == "":
        return None
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        return None
    return None if number == -999 else number


def as_float(value: Any) -> float | None:
    """A MAST row's finite number, or ``None``."""
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
