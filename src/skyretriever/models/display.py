"""How rows show themselves: short reprs with rounded numbers and units, HTML tables for notebooks.

:class:`~skyretriever.models.Source`, :class:`~skyretriever.models.Lightcurve`,
:class:`~skyretriever.models.Detection` and :class:`~skyretriever.models.Properties`
build their ``__repr__`` and ``_repr_html_`` from these helpers. Showing a row
never touches the database: a value that is not loaded (a detached or expired
row) is shown as missing, not fetched.

Examples
--------
>>> rounded(27.399736121231342, ".1f"), rounded(3.2109, ".3g", "d"), rounded(None, ".1f")
('27.4', '3.21 d', None)
>>> print(html_table("Detection 51", [("snr", "27.4"), ("source", "<script>")]))
<table class="skyretriever"><caption>Detection 51</caption>
<tr><th style="text-align:left">snr</th><td style="text-align:left">27.4</td></tr>
<tr><th style="text-align:left">source</th><td style="text-align:left">&lt;script&gt;</td></tr>
</table>
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

__all__ = ["html_table", "loaded", "related", "rounded"]


def loaded(row: Any, name: str) -> Any:
    """The value of attribute ``name`` of ``row`` without a query: None if it would need one.

    Examples
    --------
    >>> from skyretriever.models import Source
    >>> loaded(Source(name="star"), "name"), loaded(Source(name="star"), "properties")
    ('star', None)
    """
    state = sa.inspect(row, raiseerr=False)
    if state is None:
        return getattr(row, name, None)
    if name in state.unloaded:
        return None
    return getattr(row, name, None)


def related(row: Any, name: str) -> Any:
    """Attribute ``name`` of ``row``, loaded if the row is in a session; None if it cannot be.

    For conversions (which may query); reprs use :func:`loaded`, which never does.
    """
    state = sa.inspect(row, raiseerr=False)
    if state is not None and name in state.unloaded and state.session is None:
        return None
    return getattr(row, name, None)


def rounded(value: Any, spec: str, unit: str | None = None) -> str | None:
    """``value`` formatted with ``spec`` (and `` unit``), or None when it is None or not finite."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return None
    text = format(number, spec)
    return f"{text} {unit}" if unit else text


def html_table(title: str, fields: Iterable[tuple[str, Any]]) -> str:
    """A small two-column HTML table (a caption, then one row per field); every text escaped.

    Fields whose value is None are left out.
    """
    rows = [f'<tr><th style="text-align:left">{html.escape(str(label))}</th>'
            f'<td style="text-align:left">{html.escape(str(value))}</td></tr>'
            for label, value in fields if value is not None]
    return "\n".join([f'<table class="skyretriever"><caption>{html.escape(title)}</caption>',
                      *rows, "</table>"])
