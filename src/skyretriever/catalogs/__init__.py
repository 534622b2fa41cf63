"""Catalogs: files in four formats, a synthetic catalog, and remote presets.

Files are read a chunk at a time (:mod:`.readers`), never whole.

The remote presets register themselves here: ``gaia`` (:mod:`.gaia`),
``exoplanet_hosts`` (:mod:`.exoplanet_archive`), ``wd`` (:mod:`.white_dwarfs`) and
``hek`` (solar events, :mod:`.hek`).
"""

from __future__ import annotations

from skyretriever.catalogs import (  # noqa: F401  (they register the presets)
    exoplanet_archive,
    gaia,
    hek,
    white_dwarfs,
)
from skyretriever.catalogs.catalog import (
    CROSS_ID_COLUMNS,
    LOADERS,
    STANDARD_COLUMNS,
    BadRow,
    Catalog,
    CatalogError,
    CatalogParameters,
    ChunkedTable,
    ColumnMap,
    open_catalog_file,
    register_loader,
)

__all__ = [
    "CROSS_ID_COLUMNS",
    "LOADERS",
    "STANDARD_COLUMNS",
    "BadRow",
    "Catalog",
    "CatalogError",
    "CatalogParameters",
    "ChunkedTable",
    "ColumnMap",
    "open_catalog_file",
    "register_loader",
]
