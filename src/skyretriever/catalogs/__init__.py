"""Catalogs: files in four formats, a synthetic catalog, and remote presets."""

from __future__ import annotations

from skyretriever.catalogs.catalog import (
    CROSS_ID_COLUMNS,
    LOADERS,
    STANDARD_COLUMNS,
    BadRow,
    Catalog,
    CatalogError,
    CatalogParameters,
    ColumnMap,
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
    "ColumnMap",
    "register_loader",
]
