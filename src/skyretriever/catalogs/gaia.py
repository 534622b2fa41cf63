"""The ``gaia`` preset: Gaia DR3 sources from the ESA archive's TAP service.

The query is a cone (``cone: [ra, dec, radius]``) or a box (``box: [ra_min,
ra_max, dec_min, dec_max]``), with optional magnitude (``mag_limit``,
``bright_limit``, on G) and parallax cuts (``min_parallax``,
``min_parallax_over_error``). Anonymous synchronous queries are capped, so
large pulls are paged by ``source_id``: each request asks for the next
``page_size`` rows after the last ``source_id`` seen, until a page comes back
short or ``max_rows`` is reached. The pages are cached as one CSV file named
by a hash of the query (its pages and page size aside), so the next load
reads the file.

Each row is named ``Gaia DR3 <source_id>`` and carries ``gaia_id``, G
magnitude and proper motion (positions are at the Gaia epoch, 2016.0).

Examples
--------
>>> from skyretriever.catalogs import Catalog
>>> cat = Catalog(default="gaia", cone=[56.75, 24.12, 0.5], mag_limit=12)    # doctest: +SKIP
>>> cat.get_row(0)["name"]                                                    # doctest: +SKIP
'Gaia DR3 66507469798631936'
>>> gaia_query(CatalogParameters(cone=[10.0, 20.0, 0.1], mag_limit=17), after=None, top=2000)
"SELECT TOP 2000 source_id, ra, dec, parallax, parallax_error, pmra, pmdec, phot_g_mean_mag, phot_bp_mean_mag, phot_rp_mean_mag FROM gaiadr3.gaia_source WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 10.0, 20.0, 0.1)) AND phot_g_mean_mag <= 17.0 ORDER BY source_id ASC"
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from skyretriever.catalogs.catalog import CatalogError, CatalogParameters, register_loader
from skyretriever.catalogs.readers import ChunkedTable, CsvReader
from skyretriever.catalogs.remote import (
    adql_identifier,
    adql_number,
    cache_path,
    cached_file,
    http_client,
    magnitude_conditions,
    read_csv_text,
    region_conditions,
    tap_query,
)
from skyretriever.net import join_url

__all__ = ["GAIA_COLUMNS", "gaia_query", "load_gaia"]

log = logging.getLogger(__name__)

GAIA_COLUMNS = ("source_id", "ra", "dec", "parallax", "parallax_error", "pmra", "pmdec",
                "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag")
#: How a Gaia schema names its release in source names ("Gaia DR3 <source_id>").
RELEASE_NAMES = {"gaiadr3": "Gaia DR3", "gaiaedr3": "Gaia EDR3", "gaiadr2": "Gaia DR2"}


def gaia_query(pars: CatalogParameters, after: int | None, top: int) -> str:
    """The ADQL of one page: the next ``top`` rows (by ``source_id``) after ``after``."""
    conditions = region_conditions(pars)
    conditions += magnitude_conditions(pars, "phot_g_mean_mag")
    if pars.min_parallax is not None:
        conditions.append(f"parallax >= {adql_number(pars.min_parallax, 'catalog.min_parallax')}")
    if pars.min_parallax_over_error is not None:
        ratio = adql_number(pars.min_parallax_over_error, "catalog.min_parallax_over_error")
        conditions.append(f"parallax_over_error >= {ratio}")
    if after is not None:
        conditions.append(f"source_id > {int(after)}")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return (f"SELECT TOP {int(top)} {', '.join(GAIA_COLUMNS)} "
            f"FROM {adql_identifier(pars.gaia_table, 'catalog.gaia_table')}{where} ORDER BY source_id ASC")


def _download_pages(pars: CatalogParameters, destination: Path) -> None:
    """Every page of the query, written one after another to ``destination`` as one CSV."""
    http = http_client(pars)
    sync_url = join_url(pars.gaia_tap_url, "sync")
    after, total, header = None, 0, None
    with open(destination, "w", encoding="utf-8", newline="") as handle:
        while True:
            top = pars.page_size if pars.max_rows is None else min(pars.page_size,
                                                                   pars.max_rows - total)
            page = read_csv_text(tap_query(http, sync_url, gaia_query(pars, after, top),
                                           what=f"Gaia TAP query at {pars.gaia_tap_url}"),
                                 f"Gaia TAP answer from {pars.gaia_tap_url}")
            if header is None:
                missing = [c for c in GAIA_COLUMNS if c not in page.columns]
                if len(page.columns) and missing:
                    raise CatalogError(f"the Gaia TAP answer from {pars.gaia_tap_url} lacks "
                                       f"columns {missing}")
                header = list(page.columns) or list(GAIA_COLUMNS)
            page.reindex(columns=header).to_csv(handle, index=False, header=total == 0)
            total += len(page)
            log.info("Gaia: %d rows so far", total)
            if len(page) < top or (pars.max_rows is not None and total >= pars.max_rows):
                return
            after = int(page["source_id"].iloc[-1])


@register_loader("gaia", presets={"gaia": {
    "kind": "gaia", "mag_filter": "Gaia_G",
    "columns": {"gaia_id": "source_id", "mag": "phot_g_mean_mag"},
}})
def load_gaia(pars: CatalogParameters) -> ChunkedTable:
    """The Gaia sources of the query, from the cache or the TAP service (paged).

    The cached CSV file is read a chunk at a time, each row named as it is read.

    Raises
    ------
    CatalogError
        If neither ``cone`` nor ``box`` is given (the whole sky is 1.8 billion
        rows), or the service refuses the query.
    """
    if pars.cone is None and pars.box is None:
        raise CatalogError("catalog preset 'gaia' needs a region: set catalog.cone to "
                           "[ra, dec, radius] or catalog.box to [ra_min, ra_max, dec_min, dec_max]")
    # The cache is named by the query without its paging: the same rows however they came.
    query = {"service": "gaia", "adql": gaia_query(pars, after=None, top=0),
             "max_rows": pars.max_rows}
    path = cached_file(pars, cache_path(pars, "gaia", query),
                       lambda temporary: _download_pages(pars, temporary))
    schema = pars.gaia_table.split(".")[0].lower()
    release = RELEASE_NAMES.get(schema, "Gaia")

    def named(frame: pd.DataFrame) -> pd.DataFrame:
        if len(frame):
            frame.insert(0, "name", [f"{release} {int(s)}" for s in frame["source_id"]])
        elif "source_id" in frame.columns:
            frame = frame.copy()
            frame.insert(0, "name", pd.Series([], dtype=object))
        else:
            frame = pd.DataFrame(columns=["name", *GAIA_COLUMNS])
        return frame

    # As remote.read_csv_text reads: only empty fields are missing; an empty file has no rows.
    reader = CsvReader(path, options={"keep_default_na": False, "na_values": [""]},
                       what=f"cached Gaia catalog {path}: cannot read the answer as CSV",
                       refuse_nul=False, empty_ok=True)
    return ChunkedTable(reader, transform=named, source_file=str(path))
