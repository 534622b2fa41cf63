"""The ``hek`` preset: solar events from the Heliophysics Event Knowledgebase (HEK).

The HEK search service (``hek_url``, by default LMSAL's) is asked for the
events of ``event_type`` (coronal jets, ``cj``, by default) between the two
times of ``time_range``, inside the helioprojective box ``hpc_box`` and
matching ``hek_filters``. The range is split into windows of ``window_days``
(long HEK queries hang), fetched concurrently within the politeness limit of
the HTTP layer (``max_connections_per_host``); each window is asked for page
after page until the answer's ``overmax`` is false. Each window's records are
cached as JSON, and the whole table as CSV, under ``cache_dir`` (named by a
hash of the query), so loading again asks the network nothing.

One catalog row per event:

- ``name``: the event's ``SOL_standard``, or its ``kb_archivid`` when it has no
  ``SOL_standard`` or another record already took that name (HEK often lists
  one event from several feature-recognition methods);
- ``frame`` ``helioprojective``, ``hpc_x``, ``hpc_y`` (arcsec, seen from
  Earth), ``start_time``, ``end_time`` (UTC);
- ``ra``, ``dec``: where the event was on the sky seen from the Earth's centre at its
  start (through sunpy's helioprojective frame; GCRS, the ICRS axes), so that every step that wants an
  ICRS position has one;
- the bounding box (``bbox_x1``, ``bbox_x2``, ``bbox_y1``, ``bbox_y2``, arcsec)
  and the whole HEK record as JSON (``hek_record``) as extra columns.

Star-only selections (``cone``, ``box``, magnitudes, parallaxes) are refused
with an error saying so when the catalog is ``hek``.

Examples
--------
>>> from skyretriever.catalogs import Catalog
>>> cat = Catalog(default="hek", time_range=["2020-06-01", "2020-07-01"])   # doctest: +SKIP
>>> cat.get_row(0)["frame"]                                                 # doctest: +SKIP
'helioprojective'
>>> hek_query_params(CatalogParameters(kind="hek", time_range=["2020-06-01", "2020-06-02"],
...                  hek_filters={"obs_channelid": 304}), "2020-06-01T00:00:00",
...                  "2020-06-02T00:00:00")["param0"]
'obs_channelid'
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skyretriever.catalogs.catalog import CatalogError, CatalogParameters, register_loader
from skyretriever.catalogs.remote import cache_path, cached_file, http_client, read_csv_text
from skyretriever.net import Response, TransientError

__all__ = ["HEK_COLUMNS", "events_table", "hek_query_params", "hek_windows", "load_hek",
           "search_window"]

#: Operators HEK accepts in attribute filters.
OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "like")
_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_EVENT_TYPE = re.compile(r"\*\*|[A-Za-z]{2}")
#: Pages asked for one window at most (HEK pages hold a few hundred records).
MAX_PAGES = 1000
#: The whole disk and the low corona, when no ``hpc_box`` is given (arcsec).
FULL_DISK = (-1200.0, 1200.0, -1200.0, 1200.0)
HEK_COLUMNS = ("name", "ra", "dec", "frame", "hpc_x", "hpc_y", "start_time", "end_time",
               "event_type", "bbox_x1", "bbox_x2", "bbox_y1", "bbox_y2", "kb_archivid",
               "frm_name", "obs_channelid", "hek_record")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def _parse_time(text: str, what: str) -> dt.datetime:
    try:
        time = dt.datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise CatalogError(f"{what}: not an ISO 8601 time: {text!r}") from None
    return time.astimezone(dt.UTC).replace(tzinfo=None) if time.tzinfo else time


def hek_windows(pars: CatalogParameters) -> list[tuple[str, str]]:
    """The ``time_range`` split into windows of ``window_days`` (start, end as HEK times).

    Examples
    --------
    >>> hek_windows(CatalogParameters(kind="hek", time_range=["2020-01-01", "2020-03-01"]))
    [('2020-01-01T00:00:00', '2020-01-31T00:00:00'), ('2020-01-31T00:00:00', '2020-03-01T00:00:00')]
    """
    if pars.time_range is None:
        raise CatalogError("catalog.time_range: the hek catalog needs [start, end] (UTC) of the "
                           "events to ask for, e.g. ['2020-06-01', '2020-07-01']")
    start = _parse_time(pars.time_range[0], "catalog.time_range[0]")
    end = _parse_time(pars.time_range[1], "catalog.time_range[1]")
    if not start < end:
        raise CatalogError(f"catalog.time_range: the start {pars.time_range[0]!r} is not before "
                           f"the end {pars.time_range[1]!r}")
    step = dt.timedelta(days=pars.window_days)
    windows = []
    while start < end:
        stop = min(start + step, end)
        windows.append((start.strftime(_TIME_FORMAT), stop.strftime(_TIME_FORMAT)))
        start = stop
    return windows


def _filters(pars: CatalogParameters) -> list[tuple[str, str, str]]:
    """``hek_filters`` as (attribute, operator, value), checked."""
    filters = []
    for attribute, given in sorted(pars.hek_filters.items()):
        if not _ATTRIBUTE.fullmatch(str(attribute)):
            raise CatalogError(f"catalog.hek_filters: {attribute!r} is not an attribute name")
        operator, value = ("=", given) if not isinstance(given, (list, tuple)) else (
            tuple(given) if len(given) == 2 else (None, given))
        if operator not in OPERATORS:
            raise CatalogError(f"catalog.hek_filters.{attribute}: expected a value or "
                               f"[operator, value] with an operator of {', '.join(OPERATORS)}; "
                               f"got {given!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise CatalogError(f"catalog.hek_filters.{attribute}: {value!r} is not a value")
        filters.append((str(attribute), str(operator), str(value)))
    return filters


def hek_query_params(pars: CatalogParameters, start: str, end: str) -> dict[str, Any]:
    """The HEK search parameters of one window (without ``page``), as the service takes them."""
    types = [str(t) for t in pars.event_type]
    bad = [t for t in types if not _EVENT_TYPE.fullmatch(t)]
    if bad or not types:
        raise CatalogError(f"catalog.event_type: HEK event types are two-letter codes (cj, fl, "
                           f"ar...) or '**' for all, not {bad or types!r}")
    x1, x2, y1, y2 = pars.hpc_box if pars.hpc_box is not None else FULL_DISK
    if not (x1 < x2 and y1 < y2):
        raise CatalogError(f"catalog.hpc_box: expected [x1 < x2, y1 < y2] in arcsec, "
                           f"not {pars.hpc_box}")
    params: dict[str, Any] = {
        "cosec": 2, "cmd": "search", "type": "column",
        "event_type": ",".join(t.lower() for t in types),
        "event_starttime": start, "event_endtime": end,
        "event_coordsys": "helioprojective",
        "x1": x1, "x2": x2, "y1": y1, "y2": y2,
    }
    for number, (attribute, operator, value) in enumerate(_filters(pars)):
        params[f"param{number}"] = attribute
        params[f"op{number}"] = operator
        params[f"value{number}"] = value
    return params


def _hek_page(response: Response) -> dict[str, Any]:
    """A HEK answer page, or a TransientError (an HTML page, a cut or broken body)."""
    text = response.text
    if text.lstrip()[:200].lower().startswith(("<!doctype html", "<html")):
        raise TransientError(f"{response.url} answered an HTML page instead of HEK records "
                             f"(status {response.status})")
    try:
        page = json.loads(text)
    except ValueError as error:
        raise TransientError(f"{response.url}: the HEK answer is not JSON ({error})") from None
    if not isinstance(page, dict) or not isinstance(page.get("result"), list):
        raise CatalogError(f"{response.url}: the HEK answer has no 'result' list: "
                           f"{text[:200]!r}")
    return page


def search_window(pars: CatalogParameters, start: str, end: str) -> list[dict[str, Any]]:
    """Every HEK record of one window, page after page until ``overmax`` is false."""
    params = hek_query_params(pars, start, end)
    client = http_client(pars)
    records: list[dict[str, Any]] = []
    for page in range(1, MAX_PAGES + 1):
        answer = client.request("GET", pars.hek_url, params={**params, "page": page},
                                accept=_hek_page, allowed_hosts=(pars.hek_url,),
                                what=f"HEK search {start}/{end} page {page} at {pars.hek_url}")
        records.extend(answer["result"])
        if not answer.get("overmax"):
            return records
    raise CatalogError(f"HEK search {start}/{end}: still 'overmax' after {MAX_PAGES} pages; "
                       "narrow catalog.window_days or the selection")


def _cached_window(pars: CatalogParameters, start: str, end: str) -> list[dict[str, Any]]:
    query = hek_query_params(pars, start, end)
    path = cache_path(pars, "hek_window", {"url": pars.hek_url, **query}, suffix=".json")

    def download(temporary: Path) -> None:
        temporary.write_text(json.dumps(search_window(pars, start, end)), encoding="utf-8")

    return json.loads(cached_file(pars, path, download).read_text(encoding="utf-8"))


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _sky_positions(x: np.ndarray, y: np.ndarray, times: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec (degrees) of helioprojective points seen from Earth at ``times``.

    The direction from the Earth's centre (GCRS, whose axes are the ICRS axes): the
    barycentric direction of a point as near as the Sun would be off by degrees.
    """
    import astropy.units as u
    from astropy.coordinates import GCRS, SkyCoord
    from sunpy.coordinates import Helioprojective, get_earth
    from sunpy.coordinates.screens import SphericalScreen

    ra, dec = np.full(len(x), np.nan), np.full(len(x), np.nan)
    good = np.isfinite(x) & np.isfinite(y)
    if not good.any():
        return ra, dec
    obstime = [times[i] for i in np.flatnonzero(good)]
    observer = get_earth(obstime)
    with warnings.catch_warnings(), SphericalScreen(observer):
        warnings.simplefilter("ignore")
        points = SkyCoord(x[good] * u.arcsec, y[good] * u.arcsec, frame=Helioprojective(
            observer=observer, obstime=obstime)).transform_to(GCRS(obstime=obstime))
    ra[good], dec[good] = points.ra.deg, points.dec.deg
    return ra, dec


def events_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per HEK record (in start-time order), as the catalog takes them.

    Examples
    --------
    >>> table = events_table([{"SOL_standard": "SOL2020-06-07T21:30:00L100C040",
    ...     "event_type": "CJ", "event_starttime": "2020-06-07T21:30:00",
    ...     "event_endtime": "2020-06-07T21:45:00", "hpc_x": 789.0, "hpc_y": 694.0,
    ...     "kb_archivid": "ivo://helio-informatics.org/CJ1"}])
    >>> table.loc[0, "frame"], float(table.loc[0, "hpc_x"])
    ('helioprojective', 789.0)
    """
    records = sorted(records, key=lambda r: (str(r.get("event_starttime")),
                                             str(r.get("kb_archivid"))))
    rows, taken = [], set()
    for record in records:
        name = record.get("SOL_standard") or record.get("kb_archivid")
        if not name or name in taken:
            name = record.get("kb_archivid") or name
        taken.add(name)
        rows.append({
            "name": name,
            "frame": "helioprojective",
            "hpc_x": _number(record.get("hpc_x", record.get("event_coord1"))),
            "hpc_y": _number(record.get("hpc_y", record.get("event_coord2"))),
            "start_time": record.get("event_starttime"),
            "end_time": record.get("event_endtime"),
            "event_type": record.get("event_type"),
            "bbox_x1": _number(record.get("boundbox_c1ll")),
            "bbox_x2": _number(record.get("boundbox_c1ur")),
            "bbox_y1": _number(record.get("boundbox_c2ll")),
            "bbox_y2": _number(record.get("boundbox_c2ur")),
            "kb_archivid": record.get("kb_archivid"),
            "frm_name": record.get("frm_name"),
            "obs_channelid": record.get("obs_channelid"),
            "hek_record": json.dumps(record, sort_keys=True),
        })
    table = pd.DataFrame(rows, columns=[c for c in HEK_COLUMNS if c not in ("ra", "dec")])
    times = [str(_parse_time(t, "HEK event_starttime")) if t else "2000-01-01" for t in
             table["start_time"]]
    ra, dec = _sky_positions(table["hpc_x"].to_numpy(float), table["hpc_y"].to_numpy(float),
                             times)
    table.insert(1, "ra", ra)
    table.insert(2, "dec", dec)
    return table


@register_loader("hek", presets={"hek": {"kind": "hek"}})
def load_hek(pars: CatalogParameters) -> pd.DataFrame:
    """The events of the query (cached), at most ``max_rows``."""
    windows = hek_windows(pars)
    query = {"url": pars.hek_url, "windows": [hek_query_params(pars, start, end)
                                              for start, end in windows]}

    def download(temporary: Path) -> None:
        workers = max(1, min(len(windows), pars.max_connections_per_host))
        with ThreadPoolExecutor(workers, thread_name_prefix="hek") as pool:
            parts = list(pool.map(lambda w: _cached_window(pars, *w), windows))
        records = [record for part in parts for record in part]
        # An event running across a window's edge is listed in both windows.
        unique = {json.dumps(r, sort_keys=True): r for r in records}
        events_table(list(unique.values())).to_csv(temporary, index=False)

    path = cached_file(pars, cache_path(pars, "hek", query), download)
    events = read_csv_text(path, f"cached HEK table {path}")
    if events.empty:
        events = pd.DataFrame(columns=list(HEK_COLUMNS))
    if pars.max_rows is not None:
        events = events.head(pars.max_rows)
    events.attrs["source_file"] = str(path)
    return events
