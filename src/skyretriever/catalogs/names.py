"""Targets by name: a catalog row for one star from its name, without a catalog file.

The position comes from MAST's name resolver (the one astroquery and lightkurve
ask: ``GET <resolver_url>?name=NAME&outputFormat=json&resolveAll=False``, which
answers ``{"resolvedCoordinate": [{"canonicalName", "ra", "decl", ...}]}``); a
mission id in the name (``TIC 25155310``, ``KIC 8462852``, ``EPIC 201367065``,
``Gaia DR3 123...``) is kept as the row's cross-id, so the observatories match
the star by its id rather than by position.

Examples
--------
>>> cross_ids_in_name("TIC 25155310")
{'tic_id': 25155310}
>>> cross_ids_in_name("kplr008462852")
{'kic_id': 8462852}
>>> cross_ids_in_name("Proxima Cen")
{}
"""

from __future__ import annotations

import re
from typing import Any

from skyretriever.catalogs.errors import CatalogError
from skyretriever.net import HttpClient, NetworkParameters, shared_client
from skyretriever.parameters import bounded_repr

#: MAST's name resolver, as astroquery's ``resolve_object`` asks it.
RESOLVER_URL = "https://mastresolver.stsci.edu/Santa-war/query"

_CROSS_IDS = (
    (re.compile(r"(?:tic)[\s_-]*0*(\d+)", re.IGNORECASE), "tic_id"),
    (re.compile(r"(?:kic|kplr)[\s_-]*0*(\d+)", re.IGNORECASE), "kic_id"),
    (re.compile(r"(?:epic|ktwo)[\s_-]*0*(\d+)", re.IGNORECASE), "epic_id"),
    (re.compile(r"gaia[\s_-]*(?:dr[23][\s_-]*)?(\d+)", re.IGNORECASE), "gaia_id"),
)


def cross_ids_in_name(name: str) -> dict[str, int]:
    """The mission id a name spells out whole (``TIC n``, ``KIC n``/``kplr n``,
    ``EPIC n``/``ktwo n``, ``Gaia DR3 n``), as the catalog column it fills."""
    for pattern, column in _CROSS_IDS:
        match = pattern.fullmatch(name.strip())
        if match:
            return {column: int(match.group(1))}
    return {}


def resolve_name(name: str, resolver_url: str = RESOLVER_URL,
                 http: HttpClient | None = None) -> dict[str, Any]:
    """A catalog row (``name``, ``ra``, ``dec``, cross-ids, ``extra``) for a named object.

    Raises
    ------
    CatalogError
        If the name is empty, or the resolver knows no object of that name.
    skyretriever.net.NetworkError
        If the resolver cannot be reached (after the usual retries).
    """
    if not isinstance(name, str) or not name.strip():
        raise CatalogError(f"a target name is needed, not {bounded_repr(name)}")
    client = http if http is not None else shared_client(NetworkParameters().network_policy())
    answer = client.request_json(
        "GET", resolver_url,
        params={"name": name.strip(), "outputFormat": "json", "resolveAll": "False"},
        what=f"the name resolver at {resolver_url} (name {name.strip()!r})",
        allowed_hosts=(resolver_url,))
    found = answer.get("resolvedCoordinate") if isinstance(answer, dict) else None
    if not found:
        raise CatalogError(f"the name resolver at {resolver_url} knows no object named "
                           f"{name.strip()!r}; give its position instead (ra=, dec=)")
    best = found[0]
    try:
        ra, dec = float(best["ra"]), float(best["decl"])
    except (KeyError, TypeError, ValueError):
        raise CatalogError(f"the name resolver at {resolver_url} answered {bounded_repr(best)} "
                           f"for {name.strip()!r}, without a position") from None
    canonical = str(best.get("canonicalName") or name.strip())
    cross_ids = cross_ids_in_name(name) or cross_ids_in_name(canonical)
    return {"name": name.strip(), "ra": ra, "dec": dec, **cross_ids,
            "extra": {"resolved_name": canonical, "resolver": best.get("resolver")}}
