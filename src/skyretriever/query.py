"""Filters for the query commands: a Python-like condition turned into a SQLAlchemy expression.

``skyretriever sources CONFIG --where 'mag < 15 and dec > -30'`` hands its
text to :func:`parse_filter`, which reads it with Python's :mod:`ast` (in
``eval`` mode, so only an expression) and walks a small set of nodes:

- comparisons ``==, !=, <, <=, >, >=`` (chains such as ``10 < mag < 15`` too),
  ``in`` and ``not in`` with a tuple or list of values, ``is None`` and
  ``is not None`` (``== None`` means the same);
- ``and``, ``or``, ``not`` and parentheses;
- column names, and constants: numbers (``-30``, ``1e-3``), quoted strings,
  ``True``, ``False``, ``None``; a true/false column alone is a condition
  (``not is_simulated``).

A filter holds at most :data:`MAX_FILTER_TERMS` comparisons and
:data:`MAX_FILTER_LENGTH` characters, so any filter accepted here is one both
databases can run.

Everything else (attribute access, calls, indexing, arithmetic, unknown names,
SQL such as ``1; DROP TABLE sources``) raises :class:`FilterError` naming the
offending part and listing the valid column names. Values only ever reach the
database as bound parameters of the expression SQLAlchemy builds; no text of
the filter is pasted into SQL.

Examples
--------
>>> import sqlalchemy as sa
>>> from skyretriever.models import Detection, Properties, Source
>>> condition = parse_filter('mag < 15 and observatory in ("tess", "ztf")', Source, Detection)
>>> print(condition)
sources.mag < :mag_1 AND detections.observatory IN (__[POSTCOMPILE_observatory_1])
>>> query = sa.select(Source).outerjoin(Properties).where(parse_filter("best_snr > 10",
...                                                                    Source, Properties))
>>> parse_filter("mag.real < 3", Source)
Traceback (most recent call last):
...
skyretriever.query.FilterError: filter 'mag.real < 3': attribute access 'mag.real' (at character 1) is not allowed...
"""

from __future__ import annotations

import ast
import datetime as dt
import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute

from skyretriever.parameters import bounded_repr, closest

__all__ = ["MAX_FILTER_LENGTH", "MAX_FILTER_TERMS", "FilterError", "column_kind",
           "filter_columns", "parse_filter"]

#: Longest filter text accepted (characters).
MAX_FILTER_LENGTH = 10_000
#: Deepest nesting of and/or/not accepted.
MAX_DEPTH = 50
#: Most comparisons in one filter (each step of a chain, each ``in``, each true/false column
#: alone). SQLite refuses expressions deeper than 1,000 (its SQLITE_MAX_EXPR_DEPTH), and a
#: query adds its own conditions: well below that, the same limit on both databases.
MAX_FILTER_TERMS = 500

_INT64 = (-(2**63), 2**63 - 1)

_COMPARISONS = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not",
}
# a < b is b > a: the operator seen from the other side
_FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<=",
            "is": "is", "is not": "is not"}
_ORDERING = {"<", "<=", ">", ">="}

_WHAT = {
    ast.Attribute: "attribute access",
    ast.Call: "a function call",
    ast.Subscript: "indexing",
    ast.BinOp: "arithmetic",
    ast.Lambda: "a lambda",
    ast.IfExp: "an if-else expression",
    ast.NamedExpr: "an assignment",
    ast.JoinedStr: "an f-string",
    ast.Dict: "a dictionary",
    ast.Set: "a set",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a generator",
    ast.Starred: "unpacking",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "a slice",
    ast.UnaryOp: "an operation",
}

_KIND_WORDS = {"number": "a number", "integer": "an integer", "text": "text",
               "boolean": "true/false", "time": "a time"}


class FilterError(ValueError):
    """A filter cannot be used: the message names the offending part and the valid columns."""


def column_kind(column: Any) -> str | None:
    """What a column holds: ``integer``, ``number``, ``text``, ``boolean``, ``time``, or ``None``.

    ``None`` means filters cannot compare the column (JSON columns).

    Examples
    --------
    >>> from skyretriever.models import Source
    >>> column_kind(Source.mag), column_kind(Source.tic_id), column_kind(Source.cat_extra)
    ('number', 'integer', None)
    """
    column_type = column.type
    if isinstance(column_type, sa.Boolean):
        return "boolean"
    if isinstance(column_type, sa.Integer):
        return "integer"
    if isinstance(column_type, (sa.Float, sa.Numeric)):
        return "number"
    if isinstance(column_type, sa.String):
        return "text"
    if isinstance(column_type, sa.DateTime):
        return "time"
    return None


def filter_columns(*models: type) -> dict[str, InstrumentedAttribute]:
    """The columns a filter over ``models`` may name, by name; the first model wins a shared name.

    JSON columns (``cat_extra``, ``extra``, ...) are left out: their contents
    have no type that compares the same way on SQLite and PostgreSQL.

    Examples
    --------
    >>> from skyretriever.models import Detection, Source
    >>> columns = filter_columns(Detection, Source)
    >>> [(name, columns[name].class_.__name__) for name in ("snr", "id", "name")]
    [('snr', 'Detection'), ('id', 'Detection'), ('name', 'Source')]
    >>> "extra" in columns
    False
    """
    if not models:
        raise TypeError("filter_columns needs at least one model (Source, Detection, ...)")
    columns: dict[str, InstrumentedAttribute] = {}
    for model in models:
        for column in model.__table__.columns:
            if column.key not in columns and column_kind(column) is not None:
                columns[column.key] = getattr(model, column.key)
    return columns


def parse_filter(text: str, *models: type, where: str = "filter") -> sa.ColumnElement[bool]:
    """The SQLAlchemy condition that ``text`` describes, over the columns of ``models``.

    Parameters
    ----------
    text
        A condition such as ``mag < 15 and dec > -30``, ``snr >= 7 or finder == "transit"``,
        ``name == "WD 1234+56"``, ``observatory in ("tess", "ztf")`` or ``not is_simulated``.
    *models
        The tables whose columns the condition may name (see :func:`filter_columns`);
        the query the condition goes into must join them.
    where
        How error messages name the text (``--where`` on the command line).

    Returns
    -------
    sqlalchemy.ColumnElement
        A condition for ``Select.where``; its values are bound parameters.

    Raises
    ------
    FilterError
        If the text is not a condition of that form, names an unknown column or
        compares a column with a value of the wrong type; the message quotes the
        offending part, says where it is and lists the valid column names.

    Examples
    --------
    >>> from skyretriever.models import Detection, Source
    >>> print(parse_filter("snr >= 7 or finder == 'transit'", Detection))
    detections.snr >= :snr_1 OR detections.finder = :finder_1
    >>> print(parse_filter("10 < mag < 15 and not is_simulated", Source, Detection))
    sources.mag > :mag_1 AND sources.mag < :mag_2 AND detections.is_simulated IS NOT true
    >>> print(parse_filter("error is not None", Source))
    sources.error IS NOT NULL
    >>> parse_filter("mag < 1 or 1=1 --", Source)
    Traceback (most recent call last):
    ...
    skyretriever.query.FilterError: filter 'mag < 1 or 1=1 --': not a valid condition...
    >>> parse_filter("decl > -30", Source)
    Traceback (most recent call last):
    ...
    skyretriever.query.FilterError: filter 'decl > -30': unknown column 'decl' (at character 1); did you mean 'dec'? Valid columns: cat_index, cfg_hash, ...
    """
    if not isinstance(text, str):
        raise FilterError(f"{where}: expected text, not {type(text).__name__}")
    columns = filter_columns(*models)
    unusable = {column.key for model in models for column in model.__table__.columns
                if column.key not in columns}
    return _FilterBuilder(text, columns, where, unusable).build()


class _FilterBuilder:
    """One walk over the syntax tree of one filter text."""

    def __init__(self, text: str, columns: dict[str, InstrumentedAttribute], where: str,
                 unusable: set[str]) -> None:
        self.text = text
        self.columns = columns
        self.where = where
        self.unusable = unusable  # columns of the models that filters cannot compare (JSON)
        self.terms = 0

    def count_term(self, node: ast.AST) -> None:
        self.terms += 1
        if self.terms > MAX_FILTER_TERMS:
            raise self.error(
                f"the filter has more than {MAX_FILTER_TERMS} comparisons; use a list "
                "(name in (\"a\", \"b\")) or ranges, or split the query", node)

    # -- errors ----------------------------------------------------------------------------
    def error(self, message: str, node: ast.AST | None = None) -> FilterError:
        shown = self.text if len(self.text) <= 200 else self.text[:200] + "..."
        place = ""
        if node is not None and hasattr(node, "col_offset"):
            place = f" (at character {node.col_offset + 1})"
        if "{place}" in message:
            message = message.replace("{place}", place)
        elif place:
            message = f"{message}{place}"
        stop = " " if message.endswith("?") else ". "
        return FilterError(f"{self.where} {shown!r}: {message}{stop}Valid columns: "
                           f"{', '.join(sorted(self.columns))}")

    def segment(self, node: ast.AST) -> str:
        piece = ast.get_source_segment(self.text, node) or type(node).__name__
        return piece if len(piece) <= 60 else piece[:60] + "..."

    def reject(self, node: ast.AST) -> FilterError:
        what = _WHAT.get(type(node), f"a {type(node).__name__} expression")
        return self.error(
            f"{what} {self.segment(node)!r}{{place}} is not allowed; a filter compares column "
            "names with numbers, quoted strings, True, False, None or a list of them in "
            "parentheses, joined by and, or, not", node)

    # -- the walk --------------------------------------------------------------------------
    def build(self) -> sa.ColumnElement[bool]:
        # Positions in messages count characters of the text as shown: without outer blanks.
        self.text = self.text.strip()
        if not self.text:
            raise self.error("the filter is empty; write a condition such as mag < 15")
        if len(self.text) > MAX_FILTER_LENGTH:
            raise self.error(f"the filter is longer than {MAX_FILTER_LENGTH} characters")
        if "\x00" in self.text:
            raise self.error("the filter holds a NUL character")
        try:
            tree = ast.parse(self.text, mode="eval")
        except SyntaxError as error:
            place = ""
            if error.offset:
                near = self.text[error.offset - 1:error.offset + 29]
                place = f" at character {error.offset}" + (f", near {near!r}" if near else "")
            raise self.error(
                f"not a valid condition ({error.msg}{place}); write Python-like comparisons "
                "such as mag < 15 and name == \"WD 1234+56\" (== to compare, quotes around "
                "text, and/or/not to combine)") from None
        except (RecursionError, MemoryError):
            raise self.error("the filter nests too deeply to read") from None
        return self.condition(tree.body, 0)

    def condition(self, node: ast.AST, depth: int) -> sa.ColumnElement[bool]:
        if depth > MAX_DEPTH:
            raise self.error(f"the filter nests and/or/not deeper than {MAX_DEPTH} levels", node)
        if isinstance(node, ast.BoolOp):
            parts = [self.condition(value, depth + 1) for value in node.values]
            return sa.and_(*parts) if isinstance(node.op, ast.And) else sa.or_(*parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return sa.not_(self.condition(node.operand, depth + 1))
        if isinstance(node, ast.Compare):
            return self.comparison(node)
        if isinstance(node, ast.Name):
            self.count_term(node)
            column = self.column(node)
            if column_kind(column) != "boolean":
                raise self.error(
                    f"{node.id!r}{{place}} holds {_KIND_WORDS[column_kind(column)]}, not "
                    f"true/false; compare it, e.g. {node.id} > 0", node)
            return column.is_(True)
        if isinstance(node, ast.Constant) or self.is_signed_number(node):
            raise self.error(
                f"the constant {self.segment(node)!r}{{place}} on its own is not a condition; "
                "compare a column with it, e.g. mag < 15", node)
        raise self.reject(node)

    def comparison(self, node: ast.Compare) -> sa.ColumnElement[bool]:
        parts = []
        left = node.left
        for op_node, right in zip(node.ops, node.comparators):
            op = _COMPARISONS.get(type(op_node))
            if op is None:  # every comparison operator is listed; kept for new Python versions
                raise self.reject(node)
            parts.append(self.pair(left, op, right, node))
            left = right
        return parts[0] if len(parts) == 1 else sa.and_(*parts)

    def pair(self, left: ast.AST, op: str, right: ast.AST, node: ast.Compare
             ) -> sa.ColumnElement[bool]:
        self.count_term(node)
        if op in ("in", "not in"):
            if not isinstance(left, ast.Name):
                raise self.error(
                    f"{op!r} needs a column name on its left, not {self.segment(left)!r}{{place}}",
                    left)
            column = self.column(left)
            if not isinstance(right, (ast.Tuple, ast.List)):
                raise self.error(
                    f"{op!r} needs a list of values in parentheses on its right, such as "
                    f"{left.id} {op} (\"a\", \"b\"), not {self.segment(right)!r}{{place}}", right)
            values = [self.value(element, column, "==") for element in right.elts]
            if any(value is None for value in values):
                raise self.error(f"None cannot be in the list of {op!r}; use {left.id} is None",
                                 right)
            return column.in_(values) if op == "in" else column.not_in(values)
        left_is_column, right_is_column = isinstance(left, ast.Name), isinstance(right, ast.Name)
        if left_is_column and right_is_column:
            return self.columns_compared(left, op, right)
        if not left_is_column and not right_is_column:
            for side in (left, right):
                if not (isinstance(side, ast.Constant) or self.is_signed_number(side)):
                    raise self.reject(side)
            raise self.error(
                f"{self.segment(node)!r}{{place}} compares two constants; one side must be a "
                "column name", node)
        if not left_is_column:
            left, right, op = right, left, _FLIPPED[op]
        column = self.column(left)
        value = self.value(right, column, op)
        if op in ("is", "is not"):
            if value is not None and column_kind(column) != "boolean":
                raise self.error(
                    f"'is' compares with None (or True/False), not {self.segment(right)!r}"
                    "{place}; use == for values", right)
            return column.is_(value) if op == "is" else column.is_not(value)
        if value is None:
            if op in _ORDERING:
                raise self.error(f"None cannot be ordered with {op!r}{{place}}; use "
                                 f"{left.id} is None or {left.id} is not None", right)
            return column.is_(None) if op == "==" else column.is_not(None)
        return {"==": column.__eq__, "!=": column.__ne__, "<": column.__lt__,
                "<=": column.__le__, ">": column.__gt__, ">=": column.__ge__}[op](value)

    def columns_compared(self, left: ast.Name, op: str, right: ast.Name
                         ) -> sa.ColumnElement[bool]:
        first, second = self.column(left), self.column(right)
        kinds = {_comparable_kind(first), _comparable_kind(second)}
        if len(kinds) > 1:
            raise self.error(
                f"{left.id!r} holds {_KIND_WORDS[column_kind(first)]} and {right.id!r} holds "
                f"{_KIND_WORDS[column_kind(second)]}; they cannot be compared{{place}}", left)
        if op in ("is", "is not"):
            raise self.error("'is' compares a column with None, not with another column{place}",
                             right)
        if op in _ORDERING and kinds == {"boolean"}:
            raise self.error(f"true/false columns compare only with == and !=, not {op!r}"
                             "{place}", left)
        return {"==": first.__eq__, "!=": first.__ne__, "<": first.__lt__, "<=": first.__le__,
                ">": first.__gt__, ">=": first.__ge__}[op](second)

    # -- leaves ----------------------------------------------------------------------------
    def column(self, node: ast.Name) -> InstrumentedAttribute:
        if node.id in self.columns:
            return self.columns[node.id]
        if node.id in self.unusable:
            raise self.error(f"{node.id!r}{{place}} holds JSON, which a filter cannot compare; "
                             "query it in Python (see docs/tutorial.md)", node)
        suggestion = closest(node.id[:200], self.columns)
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        raise self.error(f"unknown column {bounded_repr(node.id, 60)}{{place}}{hint}", node)

    @staticmethod
    def is_signed_number(node: ast.AST) -> bool:
        return (isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd))
                and isinstance(node.operand, ast.Constant)
                and type(node.operand.value) in (int, float))

    def value(self, node: ast.AST, column: InstrumentedAttribute, op: str) -> Any:
        """The Python value of a constant, checked against what the column holds."""
        if self.is_signed_number(node):
            value = -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
        elif isinstance(node, ast.Constant):
            value = node.value
        else:
            raise self.reject(node)
        name, kind = column.key, column_kind(column)
        if value is None:
            return None
        piece = self.segment(node)
        if kind in ("number", "integer"):
            if type(value) not in (int, float):
                raise self.error(f"{name!r} holds numbers; {piece!r}{{place}} is not a number",
                                 node)
            if isinstance(value, float) and not math.isfinite(value):
                raise self.error(f"{piece!r}{{place}} is not a finite number", node)
            if kind == "integer" and isinstance(value, int) and not (
                    _INT64[0] <= value <= _INT64[1]):
                raise self.error(f"{piece!r}{{place}} is outside the range of {name!r} "
                                 "(64-bit integers)", node)
            return value
        if kind == "text":
            if not isinstance(value, str):
                raise self.error(
                    f"{name!r} holds text; put the value in quotes: {name} {op} \"{piece}\""
                    "{place}", node)
            if "\x00" in value:
                raise self.error(f"the text {piece!r}{{place}} holds a NUL character", node)
            return value
        if kind == "boolean":
            if not isinstance(value, bool):
                raise self.error(f"{name!r} is true/false; compare it with True or False, not "
                                 f"{piece!r}{{place}}", node)
            if op in _ORDERING:
                raise self.error(f"true/false columns compare only with == and !=, not {op!r}"
                                 "{place}", node)
            return value
        # time: an ISO date or date and time, in UTC like every stored time
        if not isinstance(value, str):
            raise self.error(f"{name!r} holds times; give one as a quoted ISO date such as "
                             f"\"2024-05-01\" or \"2024-05-01T12:00\", not {piece!r}{{place}}",
                             node)
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            raise self.error(f"{piece!r}{{place}} is not an ISO date or time such as "
                             "\"2024-05-01T12:00\"", node) from None
        if moment.tzinfo is not None:
            moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
        return moment


def _comparable_kind(column: Any) -> str:
    kind = column_kind(column)
    return "number" if kind == "integer" else kind
