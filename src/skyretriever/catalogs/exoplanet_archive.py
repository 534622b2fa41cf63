"""The ``exoplanet_hosts`` preset: planet host stars from the NASA Exoplanet Archive.

One TAP query of ``pscomppars`` (one row per planet, the archive's composite
parameters) within the optional ``cone`` or ``box`` and TESS-magnitude cuts
(``mag_limit``, ``bright_limit`` on ``sy_tmag``) is cached as CSV. Loading
groups the planets by host: one catalog row per host star, named by
``hostname``, with its TIC and Gaia ids as cross-ids (``"TIC 25155310"`` and
``"Gaia DR3 ..."`` become integers) and its planets, in name order, kept in the
row's ``extra`` as ``planets``: a list of ``{name, period, epoch, duration,
depth, radius, transiting, discovery_facility}`` (days, BJD, hours, percent,
Earth radii, as the archive gives them; missing values are ``None``).

Examples
--------
>>> from skyretriever.catalogs import Catalog
>>> cat = Catalog(default="exoplanet_hosts", mag_limit=10)                    # doctest: +SKIP
>>> row = cat.get_row(0)                                                      # doctest: +SKIP
>>> row["tic_id"], [p["name"] for p in row["extra"]["planets"]]               # doctest: +SKIP
(25155310, ['WASP-126 b'])
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from skyretriever.catalogs.catalog import CatalogError, CatalogParameters, register_loader
from skyretriever.catalogs.remote import (
    cache_path,
    cached_file,
    http_client,
    magnitude_conditions,
    read_csv_text,
    region_conditions,
    tap_query,
)
from skyretriever.net import join_url

__all__ = ["HOST_COLUMNS", "PLANET_COLUMNS", "exoplanet_query", "hosts_from_planets",
           "load_exoplanet_hosts"]

#: Columns of ``pscomppars`` describing the host (taken from its first planet's row).
HOST_COLUMNS = ("hostname", "ra", "dec", "sy_dist", "sy_tmag", "sy_kepmag", "sy_gaiamag",
                "tic_id", "gaia_id")
#: Planet columns, and the names they get in each row's ``planets`` list.
PLANET_COLUMNS = {"pl_name": "name", "pl_orbper": "period", "pl_tranmid": "epoch",
                  "pl_trandur": "duration", "pl_trandep": "depth", "pl_rade": "radius",
                  "tran_flag": "transiting", "disc_facility": "discovery_facility"}


def exoplanet_query(pars: CatalogParameters) -> str:
    """The ADQL of the ``pscomppars`` query.

    Examples
    --------
    >>> exoplanet_query(CatalogParameters(mag_limit=10))
    'SELECT hostname, ra, dec, sy_dist, sy_tmag, sy_kepmag, sy_gaiamag, tic_id, gaia_id, pl_name, pl_orbper, pl_tranmid, pl_trandur, pl_trandep, pl_rade, tran_flag, disc_facility FROM pscomppars WHERE sy_tmag <= 10.0 ORDER BY hostname ASC'
    """
    conditions = region_conditions(pars) + magnitude_conditions(pars, "sy_tmag")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    columns = ", ".join([*HOST_COLUMNS, *PLANET_COLUMNS])
    return f"SELECT {columns} FROM pscomppars{where} ORDER BY hostname ASC"


def _plain(value: Any) -> Any:
    """JSON-safe values: numpy scalars as Python ones, NaN as None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def hosts_from_planets(planets: pd.DataFrame) -> pd.DataFrame:
    """One row per host (in host name order) with its planets as a list, from planet rows.

    Examples
    --------
    >>> rows = pd.DataFrame({"hostname": ["A", "A"], "ra": [1.0, 1.0], "dec": [2.0, 2.0],
    ...                      "pl_name": ["A c", "A b"], "pl_orbper": [9.0, 3.0]})
    >>> hosts = hosts_from_planets(rows)
    >>> int(hosts.loc[0, "num_planets"]), [p["name"] for p in hosts.loc[0, "planets"]]
    (2, ['A b', 'A c'])
    """
    if "hostname" not in planets:
        raise CatalogError("the Exoplanet Archive answer has no 'hostname' column")
    hosts = []
    ordered = planets.sort_values(["hostname", "pl_name"], kind="stable")
    for _hostname, group in ordered.groupby("hostname", sort=True):
        first = group.iloc[0]
        host = {column: _plain(first[column]) for column in HOST_COLUMNS if column in group}
        for column in ("tic_id", "gaia_id", "sy_tmag", "sy_kepmag", "sy_gaiamag", "sy_dist"):
            # A value missing on the first planet's row may be on another's.
            if column in group and host.get(column) is None:
                present = group[column].dropna()
                host[column] = _plain(present.iloc[0]) if len(present) else None
        host["num_planets"] = len(group)
        host["planets"] = [
            {name: _plain(planet[column]) for column, name in PLANET_COLUMNS.items()
             if column in group}
            for _, planet in group.iterrows()
        ]
        for planet in host["planets"]:
            if "transiting" in planet and planet["transiting"] is not None:
                planet["transiting"] = bool(planet["transiting"])
        hosts.append(host)
    columns = [*HOST_COLUMNS, "num_planets", "planets"]
    return pd.DataFrame(hosts, columns=[c for c in columns if hosts and c in hosts[0]] or columns)


@register_loader("exoplanet_archive", presets={"exoplanet_hosts": {
    "kind": "exoplanet_archive", "mag_filter": "TESS",
    "columns": {"name": "hostname", "mag": "sy_tmag"},
}})
def load_exoplanet_hosts(pars: CatalogParameters) -> pd.DataFrame:
    """Host stars of the query (cached planet rows, grouped by host), at most ``max_rows``."""
    adql = exoplanet_query(pars)
    url = pars.exoplanet_archive_url

    def download(temporary) -> None:
        text = tap_query(http_client(pars), join_url(url, "TAP/sync"), adql, method="GET",
                         what=f"NASA Exoplanet Archive query at {url}")
        temporary.write_text(text, encoding="utf-8")

    path = cached_file(pars, cache_path(pars, "exoplanet_hosts", {"adql": adql}), download)
    hosts = hosts_from_planets(read_csv_text(path, f"cached Exoplanet Archive table {path}"))
    if pars.max_rows is not None:
        hosts = hosts.head(pars.max_rows)
    hosts.attrs["source_file"] = str(path)
    return hosts
