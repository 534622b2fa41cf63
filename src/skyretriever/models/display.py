"""How rows show themselves: short reprs with rounded numbers and units, HTML tables for notebooks.

How a column is shown to people (its label, unit and number format) is
metadata of the column itself (``Column.info``, set by :func:`describe_columns`
beside each model); the report, ``skyretriever show`` and the reprs read it with
:func:`column_label`, :func:`column_unit`, :func:`column_header` and
:func:`format_column`.

:class:`~skyretriever.models.Source`, :class:`~skyretriever.models.Lightcurve`,
:class:`~skyretriever.models.Detection` and :class:`~skyretriever.models.Properties`
build their ``__repr__`` and ``_repr_html_`` from these helpers. Showing a row
never touches the database: a value that is not loaded (a detached or expired
row) is shown as missing, not fetched.

Examples
--------
>>> rounded(27.399736121231342, ".1f"), rounded(3.2109, ".3g", "d"), rounded(None, ".1f")
('27.4', '3.21 d', None)
>>> from skyretriever.models import Properties
>>> column = Properties.__table__.c.ls_false_alarm
>>> column_label(column), format_column(column, 1.234e-05), format_column(column, 0.4)
('Lomb-Scargle false-alarm probability', '1.2e-05', '0.4')
>>> format_column(Properties.__table__.c.ls_period, 36.29251234)
'36.2925 d'
>>> print(html_table("Detection 51", [("snr", "27.4"), ("source", "<script>")]))
<table class="skyretriever"><caption>Detection 51</caption>
<tr><th style="text-align:left">snr</th><td style="text-align:left">27.4</td></tr>
<tr><th style="text-align:left">source</th><td style="text-align:left">&lt;script&gt;</td></tr>
</table>
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

__all__ = ["column_header", "column_label", "column_unit", "describe_columns", "format_column",
           "format_number", "html_table", "loaded", "related", "rounded", "shown"]


# -- how a column is shown ------------------------------------------------------------------
def shown(label: str, unit: str | None = None, spec: str | None = None) -> dict[str, str]:
    """The display metadata of a column: a label for people, a unit and a format spec.

    ``spec`` is a :func:`format` spec for its numbers (``".4f"``, ``".6g"``); without
    one, :func:`format_number` chooses.
    """
    info = {"label": label}
    if unit:
        info["unit"] = unit
    if spec:
        info["format"] = spec
    return info


def describe_columns(model: Any, columns: Mapping[str, Mapping[str, str]]) -> None:
    """Attach display metadata (from :func:`shown`) to columns of ``model`` (``Column.info``)."""
    table = model.__table__
    for name, info in columns.items():
        table.c[name].info.update(info)


def column_label(column: sa.Column) -> str:
    """The label people read for a column (its name with spaces when it has none)."""
    return column.info.get("label") or column.key.replace("_", " ")


def column_unit(column: sa.Column) -> str | None:
    """The unit of a column's values (``d``, ``s``, ``mag``, ``deg``, ``MJD``...), if any."""
    return column.info.get("unit")


def column_header(column: sa.Column) -> str:
    """``label (unit)``, or the label alone: the head of a table column."""
    unit = column_unit(column)
    return f"{column_label(column)} ({unit})" if unit else column_label(column)


def format_number(value: float, spec: str | None = None) -> str:
    """A float for people: ``spec`` if given; else six significant digits, and scientific
    notation for very small or very large values (``1.2e-05``, not ``0.000000``)."""
    if spec is not None:
        return format(value, spec)
    if value == 0:
        return "0"
    if abs(value) < 1e-3 or abs(value) >= 1e7:
        return format(value, ".3g")
    return format(value, ".6g")


def format_column(column: sa.Column, value: Any, unit: bool = True) -> str | None:
    """A value of ``column`` as text with its unit (``36.2925 d``); None when missing.

    Booleans read ``yes``/``no``, times of day UTC to the second, dicts and lists as
    JSON, numbers in the column's format (or :func:`format_number`'s choice).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")  # stored in UTC, without a zone
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        text = format_number(value, column.info.get("format"))
    else:
        return str(value)
    suffix = column_unit(column) if unit else None
    return f"{text} {suffix}" if suffix else text


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
