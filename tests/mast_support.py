"""Helpers shared by the MAST tests: small simulated skies, catalogs and checks on files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from skyretriever.fitsfile import validate_fits
from skyretriever.testing import SimulatedSky, SimulatedStar, Transit

#: Observatory parameters for tests: quick retries, no waiting between attempts.
QUICK = {"max_attempts": 3, "backoff": 0.0, "timeout": 10.0, "query_timeout": 20.0}

TRANSIT = Transit(period=0.7, epoch=2457000.0 + 1325.5, depth=0.01, duration=0.1)


def tess_stars() -> list[SimulatedStar]:
    """Four TESS stars: two sectors with a transit, two sectors, 20-s and 2-min, and no data."""
    return [
        SimulatedStar("planet_host", 30.0, -20.0, tic_id=301_000_001, gaia_id=5001, tmag=9.0,
                      tess_sectors=(1, 2), transit=TRANSIT),
        SimulatedStar("quiet_star", 60.0, 10.0, tic_id=301_000_002, tmag=11.5,
                      tess_sectors=(3, 4)),
        SimulatedStar("fast_star", 90.0, 45.0, tic_id=301_000_003, tmag=8.0,
                      tess_sectors=(5,), tess_fast_sectors=(5,)),
        SimulatedStar("no_data_star", 120.0, -60.0, tic_id=301_000_004, tmag=12.0),
    ]


def kepler_stars() -> list[SimulatedStar]:
    """A Kepler star (three quarters, a transit) and a K2 star (two campaigns)."""
    return [
        SimulatedStar("kepler_host", 290.0, 44.0, tic_id=302_000_001, kic_id=8_264_588,
                      tmag=10.5, kepmag=11.0, kepler_quarters=(1, 2, 3), transit=TRANSIT),
        SimulatedStar("k2_star", 170.0, 2.0, tic_id=302_000_002, epic_id=206_089_508,
                      tmag=11.0, kepmag=11.6, k2_campaigns=(3, 5)),
    ]


def small_sky(stars: list[SimulatedStar] | None = None, **kwargs) -> SimulatedSky:
    """A sky of ``stars`` (default: the TESS and Kepler stars) with one-day files."""
    kwargs.setdefault("days_per_sector", 1.0)
    return SimulatedSky(stars if stars is not None else tess_stars() + kepler_stars(), **kwargs)


def write_catalog(sky: SimulatedSky, folder: Path, stars=None, name: str = "catalog.csv",
                  **kwargs) -> str:
    """Write the sky's catalog as CSV and return its path."""
    path = folder / name
    sky.catalog(stars, **kwargs).to_csv(path, index=False)
    return str(path)


def leftover_problems(root: Path) -> list[str]:
    """Partial downloads and invalid FITS files under ``root`` (there should be none)."""
    problems = []
    for path in root.rglob("*"):
        if path.is_dir():
            continue
        if path.name.endswith((".part", ".tmp")):
            problems.append(f"partial file {path}")
        elif path.suffix == ".fits":
            try:
                validate_fits(path)
            except ValueError as error:
                problems.append(str(error))
    return problems


def catalog_rows(stars: list[SimulatedStar], ids: bool = True, **changes: Any
                 ) -> list[dict[str, Any]]:
    """Catalog rows (as :meth:`Catalog.get_rows` makes them) for simulated stars."""
    rows = []
    for index, star in enumerate(stars):
        row = {"name": star.name, "ra": star.ra, "dec": star.dec, "mag": star.tmag,
               "mag_err": None, "mag_filter": None, "pmra": None, "pmdec": None,
               "tic_id": None, "epic_id": None, "kic_id": None, "gaia_id": None,
               "ztf_oid": None, "cat_index": index, "extra": {}}
        if ids:
            row.update(tic_id=star.tic_id, epic_id=star.epic_id, kic_id=star.kic_id,
                       gaia_id=star.gaia_id)
        row.update(changes)
        rows.append(row)
    return rows


def invoked(server, service: str) -> list[dict[str, Any]]:
    """The service requests of one kind a simulated MAST server received (params and all)."""
    found = []
    for record in server.records:
        if record.key.startswith("invoke "):
            request = json.loads(record.key[len("invoke "):])
            if request["service"].lower() == service.lower():
                found.append(request)
    return found
