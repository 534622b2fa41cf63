"""What goes wrong with a catalog: :class:`CatalogError` and the :class:`BadRow` it lists.

They live apart from :mod:`.catalog` so that the file readers (:mod:`.readers`)
can raise them too; both are imported from :mod:`skyretriever.catalogs`.

Examples
--------
>>> str(BadRow(4, "missing name"))
'row 4: missing name'
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BadRow", "CatalogError"]


class CatalogError(ValueError):
    """The catalog cannot be read, or has rows that cannot be used (listed with row numbers)."""


@dataclass(frozen=True)
class BadRow:
    """A catalog row that cannot be used, with its 0-based row number and the reason."""

    row: int
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.reason}"
