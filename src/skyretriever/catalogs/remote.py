"""What the remote catalogs share: a cache named by the query, TAP queries, safe ADQL values.

A remote catalog (Gaia, the NASA Exoplanet Archive, the white-dwarf catalogue)
is downloaded once into ``cache_dir`` (``catalogs/`` by default) as a file
named by the preset and a hash of the query, written to a temporary name and
renamed into place. Loading the same query again reads that file and asks
the network nothing (``refresh: true`` downloads it again). The file's bytes
are the catalog's identity: :attr:`Catalog.catalog_hash` is their SHA-256.

Every value written into ADQL goes through :func:`adql_number` or
:func:`adql_identifier`, which accept finite numbers and plain identifiers
only, so no user text ever reaches a query as written.

Examples
--------
>>> adql_number(17)
'17.0'
>>> adql_identifier("gaiadr3.gaia_source")
'gaiadr3.gaia_source'
>>> adql_identifier("gaia_source; DROP TABLE x")
Traceback (most recent call last):
...
skyretriever.catalogs.errors.CatalogError: name: not a valid ADQL table or column name: 'gaia_source; DROP TABLE x'
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skyretriever import storage
from skyretriever.catalogs.catalog import CatalogError, CatalogParameters
from skyretriever.healpix import angular_distance
from skyretriever.net import (
    HttpClient,
    HttpError,
    Response,
    TransientError,
    shared_client,
)

__all__ = [
    "adql_identifier",
    "adql_number",
    "cache_path",
    "cached_file",
    "http_client",
    "read_csv_text",
    "region_conditions",
    "select_rows",
    "tap_query",
]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,2}")
_QUERY_STATUS = re.compile(
    r'<INFO[^>]*name="QUERY_STATUS"[^>]*value="ERROR"[^>]*>(.*?)</INFO>', re.S | re.I
)


def adql_number(value: Any, what: str = "value") -> str:
    """A finite number as an ADQL literal; anything else (text, NaN, booleans) is refused.

    Raises
    ------
    CatalogError
        If ``value`` is not an int or float, or is not finite.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise CatalogError(f"{what} must be a number to go into an ADQL query, not {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise CatalogError(f"{what} must be a finite number, not {value!r}")
    return repr(number)


def adql_identifier(name: Any, what: str = "name") -> str:
    """A table or column name (``schema.table`` allowed) checked to be a plain identifier."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise CatalogError(f"{what}: not a valid ADQL table or column name: {name!r}")
    return name


def region_conditions(pars: CatalogParameters, ra: str = "ra", dec: str = "dec") -> list[str]:
    """ADQL conditions of the ``cone`` or ``box`` parameter (none if neither is set)."""
    ra, dec = adql_identifier(ra), adql_identifier(dec)
    if pars.cone is not None:
        a, d, r = (adql_number(v, "catalog.cone") for v in pars.cone)
        return [f"1 = CONTAINS(POINT('ICRS', {ra}, {dec}), CIRCLE('ICRS', {a}, {d}, {r}))"]
    if pars.box is not None:
        ra_min, ra_max, dec_min, dec_max = (adql_number(v, "catalog.box") for v in pars.box)
        joiner = "AND" if pars.box[0] <= pars.box[1] else "OR"  # ra_min > ra_max wraps through 0
        return [f"({ra} >= {ra_min} {joiner} {ra} <= {ra_max})",
                f"{dec} >= {dec_min}", f"{dec} <= {dec_max}"]
    return []


def magnitude_conditions(pars: CatalogParameters, column: str) -> list[str]:
    """ADQL conditions of ``mag_limit`` and ``bright_limit`` on ``column``."""
    column = adql_identifier(column)
    conditions = []
    if pars.mag_limit is not None:
        conditions.append(f"{column} <= {adql_number(pars.mag_limit, 'catalog.mag_limit')}")
    if pars.bright_limit is not None:
        conditions.append(f"{column} >= {adql_number(pars.bright_limit, 'catalog.bright_limit')}")
    return conditions


def select_rows(frame: pd.DataFrame, pars: CatalogParameters, *, mag: str, ra: str = "ra",
                dec: str = "dec", parallax: str = "parallax",
                parallax_error: str = "parallax_error", where: str = "catalog") -> pd.DataFrame:
    """The rows of a downloaded table within the region, magnitude and parallax cuts.

    The same cuts as the ADQL conditions, for catalogs that come as whole files.
    """

    def column(name: str, why: str) -> np.ndarray:
        if name not in frame:
            raise CatalogError(f"{where} has no {name!r} column, needed by {why}")
        return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)

    keep = np.ones(len(frame), dtype=bool)
    with np.errstate(invalid="ignore"):
        if pars.cone is not None:
            distance = angular_distance(pars.cone[0], pars.cone[1],
                                        column(ra, "cone"), column(dec, "cone")) * 3600.0
            keep &= distance <= pars.cone[2] * 3600.0
        if pars.box is not None:
            ra_min, ra_max, dec_min, dec_max = pars.box
            ras, decs = column(ra, "box"), column(dec, "box")
            in_ra = ((ras >= ra_min) & (ras <= ra_max) if ra_min <= ra_max
                     else (ras >= ra_min) | (ras <= ra_max))
            keep &= in_ra & (decs >= dec_min) & (decs <= dec_max)
        if pars.mag_limit is not None:
            keep &= column(mag, "mag_limit") <= pars.mag_limit
        if pars.bright_limit is not None:
            keep &= column(mag, "bright_limit") >= pars.bright_limit
        if pars.min_parallax is not None:
            keep &= column(parallax, "min_parallax") >= pars.min_parallax
        if pars.min_parallax_over_error is not None:
            ratio = column(parallax, "min_parallax_over_error") / column(
                parallax_error, "min_parallax_over_error")
            keep &= ratio >= pars.min_parallax_over_error
    return frame[keep].reset_index(drop=True)


# -- the cache -----------------------------------------------------------------------------------
def cache_path(pars: CatalogParameters, preset: str, query: Mapping[str, Any],
               suffix: str = ".csv") -> Path:
    """``<cache_dir>/<preset>_<16 hex digits of the query's SHA-256><suffix>``.

    Examples
    --------
    >>> pars = CatalogParameters(cache_dir="catalogs")
    >>> cache_path(pars, "gaia", {"adql": "SELECT ..."}).name
    'gaia_fbefa111070ed8b0.csv'
    """
    text = json.dumps(query, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return Path(pars.cache_dir).expanduser() / f"{preset}_{digest}{suffix}"


def cached_file(pars: CatalogParameters, path: Path, make: Callable[[Path], None]) -> Path:
    """``path`` if it is cached (and ``refresh`` is off); else ``make(temporary)``, renamed to it.

    A failed or interrupted download leaves no file under the cached name, so
    the next load asks again.
    """
    if path.exists() and not pars.refresh:
        return path
    with storage.atomic_write(path) as temporary:
        make(temporary)
    return path


def read_csv_text(source: str | Path, where: str) -> pd.DataFrame:
    """A CSV table (path or text) with only empty fields as missing (names like 'NA' stay)."""
    handle = io.StringIO(source) if isinstance(source, str) else source
    try:
        return pd.read_csv(handle, keep_default_na=False, na_values=[""], low_memory=False)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (ValueError, pd.errors.ParserError) as error:
        raise CatalogError(f"{where}: cannot read the answer as CSV: {error}") from None


# -- HTTP and TAP --------------------------------------------------------------------------------
def http_client(pars: CatalogParameters) -> HttpClient:
    """The shared HTTP client for the catalog's timeouts and retries."""
    return shared_client(pars.network_policy())


def _tap_answer(response: Response) -> str:
    """The CSV of a TAP answer; an HTML page (maintenance) is asked again, an error raises."""
    text = response.text
    start = text.lstrip()[:200].lower()
    if start.startswith(("<!doctype html", "<html")):
        raise TransientError(f"{response.url} answered an HTML page instead of a table "
                             f"(status {response.status}): {' '.join(text[:200].split())!r}")
    if start.startswith("<?xml") or start.startswith("<votable"):
        raise CatalogError(f"the TAP service refused the query: {_tap_error_message(text)}")
    return text


def _tap_error_message(text: str) -> str:
    match = _QUERY_STATUS.search(text)
    message = match.group(1) if match else text[:300]
    return " ".join(html.unescape(message).split())


def tap_query(http: HttpClient, sync_url: str, adql: str, *, method: str = "POST",
              what: str = "TAP query") -> str:
    """Run an ADQL query on a TAP service's ``sync`` endpoint and return the CSV it answers.

    ``POST`` sends the form ``REQUEST=doQuery&LANG=ADQL&FORMAT=csv&QUERY=...``
    (as to the Gaia archive); ``GET`` sends ``?query=...&format=csv`` (as to the
    NASA Exoplanet Archive).

    Only the service's host is asked: a redirect elsewhere is refused
    (:class:`skyretriever.net.ForbiddenHost`).

    Raises
    ------
    CatalogError
        If the service refuses the query (its error message is quoted).
    skyretriever.net.NetworkError
        If the service cannot be reached (after the HTTP layer's retries).
    """
    try:
        if method == "POST":
            return http.request("POST", sync_url, data={
                "REQUEST": "doQuery", "LANG": "ADQL", "FORMAT": "csv", "QUERY": adql,
            }, accept=_tap_answer, what=what, allowed_hosts=(sync_url,))
        return http.request("GET", sync_url, params={"query": adql, "format": "csv"},
                            accept=_tap_answer, what=what, allowed_hosts=(sync_url,))
    except HttpError as error:
        if 400 <= error.status < 500:
            raise CatalogError(f"{what}: the TAP service refused the query (HTTP "
                               f"{error.status}): {_tap_error_message(error.body)}") from None
        raise
