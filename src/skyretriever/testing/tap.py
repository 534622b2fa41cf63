"""Simulated catalog services: TAP (Gaia, the NASA Exoplanet Archive) and catalogue files.

:class:`TapService` answers ADQL on a TAP ``sync`` endpoint, as ``POST`` with
the form ``REQUEST=doQuery&LANG=ADQL&FORMAT=csv&QUERY=...`` (the Gaia
archive's style) or ``GET ?query=...&format=csv`` (the Exoplanet Archive's),
over tables given as rows. It understands the ADQL the clients write::

    SELECT [TOP n] col, col... | * FROM table
    [WHERE cond [AND|OR cond]...]  [ORDER BY col [ASC|DESC]]

with conditions ``col <op> literal`` (``= != <> < <= > >=``), ``col IS [NOT]
NULL``, ``col BETWEEN a AND b``, ``1 = CONTAINS(POINT('ICRS', ra, dec),
CIRCLE('ICRS', a, d, r))`` and parentheses. Anything else (and unknown
tables or columns) is refused as a TAP service does: HTTP 400 with a VOTable
whose ``QUERY_STATUS`` is ``ERROR``. Synchronous answers are cut at
``max_sync_rows``, as the real services cap them.

:class:`FileService` serves fixed files (with ``Range`` and the file faults).
:func:`catalog_services` mounts the three catalogs of a sky: the Gaia
archive (``/tap-server/tap/sync``), the Exoplanet Archive (``/TAP/sync``) and
the white-dwarf catalogue (``/catalogues/gaiaedr3_wd_main.fits.gz``, and
``.csv``).

Examples
--------
>>> service = TapService("tap", "/sync", {"stars": [{"id": 1, "mag": 9.5}, {"id": 2, "mag": 12.0}]})
>>> service.run("SELECT id FROM stars WHERE mag <= 10 ORDER BY id")
[{'id': 1}]
>>> service.run("SELECT id FROM stars; DROP TABLE stars")
Traceback (most recent call last):
...
ValueError: unexpected ';' at character 20
"""

from __future__ import annotations

import csv
import gzip
import html
import io
import math
import operator
import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from skyretriever.healpix import angular_distance
from skyretriever.testing.server import Reply, Request, Route, Service
from skyretriever.testing.sky import SimulatedSky
from skyretriever.testing.stars import SimulatedStar

__all__ = [
    "EXOPLANET_PATH",
    "GAIA_PATH",
    "WD_CATALOG_PATH",
    "FileService",
    "TapService",
    "catalog_services",
    "gaia_source_rows",
    "pscomppars_rows",
    "white_dwarf_file",
    "white_dwarf_rows",
]

GAIA_PATH = "/tap-server/tap"
EXOPLANET_PATH = "/TAP"
WD_CATALOG_PATH = "/catalogues/gaiaedr3_wd_main.fits.gz"
GAIA_EPOCH = 2016.0

_TOKEN = re.compile(
    r"\s*(?:(?P<number>[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<string>'(?:[^']|'')*')"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_.]*)"
    r"|(?P<op><=|>=|<>|!=|=|<|>|\(|\)|,|\*))"
)
_COMPARE = {"=": operator.eq, "!=": operator.ne, "<>": operator.ne, "<": operator.lt,
            "<=": operator.le, ">": operator.gt, ">=": operator.ge}
Row = dict[str, Any]


# -- a small ADQL reader ---------------------------------------------------------------------------
class _Query:
    """One parsed ``SELECT``: columns, table, a row predicate, order and limit."""

    def __init__(self, text: str, tables: dict[str, list[Row]]) -> None:
        self.tokens = self._tokenize(text)
        self.position = 0
        self.tables = tables
        self._parse()

    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, str, int]]:
        tokens, position = [], 0
        text = text.rstrip()
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                where = position + len(text[position:]) - len(text[position:].lstrip())
                raise ValueError(f"unexpected {text[where]!r} at character {where}")
            kind = match.lastgroup
            tokens.append((kind, match.group(kind), match.start(kind)))
            position = match.end()
        return tokens

    # token helpers
    def _peek(self, offset: int = 0) -> tuple[str, str, int] | None:
        index = self.position + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def _is(self, *words: str, offset: int = 0) -> bool:
        token = self._peek(offset)
        return token is not None and token[1].upper() in words

    def _take(self, expected: str | None = None) -> tuple[str, str, int]:
        token = self._peek()
        if token is None:
            raise ValueError(f"the query ends where {expected or 'more'} was expected")
        if expected is not None and token[1].upper() != expected:
            raise ValueError(f"expected {expected} at character {token[2]}, found {token[1]!r}")
        self.position += 1
        return token

    def _name(self) -> str:
        kind, value, where = self._take()
        if kind != "name":
            raise ValueError(f"expected a name at character {where}, found {value!r}")
        return value

    def _literal(self) -> Any:
        kind, value, where = self._take()
        if kind == "number":
            number = float(value)
            return int(number) if re.fullmatch(r"[+-]?\d+", value) else number
        if kind == "string":
            return value[1:-1].replace("''", "'")
        raise ValueError(f"expected a number or a string at character {where}, found {value!r}")

    # grammar
    def _parse(self) -> None:
        self._take("SELECT")
        self.top = None
        if self._is("TOP"):
            self._take()
            self.top = int(self._literal())
        if self._is("*"):
            self._take()
            self.columns = None
        else:
            self.columns = [self._name()]
            while self._is(","):
                self._take()
                self.columns.append(self._name())
        self._take("FROM")
        table = self._name()
        matches = [name for name in self.tables if name.lower() == table.lower()]
        if not matches:
            raise ValueError(f"table {table!r} does not exist")
        self.rows = self.tables[matches[0]]
        self.known = set(self.rows[0]) if self.rows else set(self.columns or [])
        self.where: Callable[[Row], bool] = lambda row: True
        if self._is("WHERE"):
            self._take()
            self.where = self._or()
        self.order, self.descending = None, False
        if self._is("ORDER"):
            self._take()
            self._take("BY")
            self.order = self._column()
            if self._is("ASC", "DESC"):
                self.descending = self._take()[1].upper() == "DESC"
        if self._peek() is not None:
            kind, value, where = self._peek()
            raise ValueError(f"unexpected {value!r} at character {where}")
        for column in self.columns or []:
            self._check_column(column)

    def _check_column(self, name: str) -> str:
        if self.rows and name not in self.known:
            raise ValueError(f"column {name!r} does not exist")
        return name

    def _column(self) -> str:
        return self._check_column(self._name())

    def _or(self) -> Callable[[Row], bool]:
        terms = [self._and()]
        while self._is("OR"):
            self._take()
            terms.append(self._and())
        return terms[0] if len(terms) == 1 else (lambda row: any(t(row) for t in terms))

    def _and(self) -> Callable[[Row], bool]:
        factors = [self._factor()]
        while self._is("AND"):
            self._take()
            factors.append(self._factor())
        return factors[0] if len(factors) == 1 else (lambda row: all(f(row) for f in factors))

    def _factor(self) -> Callable[[Row], bool]:
        if self._is("("):
            self._take()
            inner = self._or()
            self._take(")")
            return inner
        if self._peek() is not None and self._peek()[0] == "number" and self._is("CONTAINS",
                                                                                 offset=2):
            return self._contains()
        column = self._column()
        if self._is("IS"):
            self._take()
            negate = self._is("NOT")
            if negate:
                self._take()
            self._take("NULL")
            return lambda row: (row.get(column) is None) != negate
        if self._is("BETWEEN"):
            self._take()
            low = self._literal()
            self._take("AND")
            high = self._literal()
            return lambda row: row.get(column) is not None and low <= row[column] <= high
        kind, symbol, where = self._take()
        if symbol not in _COMPARE:
            raise ValueError(f"expected a comparison at character {where}, found {symbol!r}")
        value, compare = self._literal(), _COMPARE[symbol]
        return lambda row: row.get(column) is not None and compare(row[column], value)

    def _contains(self) -> Callable[[Row], bool]:
        if self._literal() != 1:
            raise ValueError("only '1 = CONTAINS(...)' is understood")
        self._take("=")
        self._take("CONTAINS")
        self._take("(")
        self._take("POINT")
        self._take("(")
        self._literal()
        self._take(",")
        ra_column = self._column()
        self._take(",")
        dec_column = self._column()
        self._take(")")
        self._take(",")
        self._take("CIRCLE")
        self._take("(")
        self._literal()
        values = []
        for _ in range(3):
            self._take(",")
            values.append(float(self._literal()))
        self._take(")")
        self._take(")")
        ra, dec, radius = values

        def inside(row: Row) -> bool:
            if row.get(ra_column) is None or row.get(dec_column) is None:
                return False
            distance = angular_distance(ra, dec, row[ra_column], row[dec_column]) * 3600.0
            return float(distance) <= radius * 3600.0

        return inside

    def run(self, max_rows: int | None = None) -> list[Row]:
        try:
            rows = [row for row in self.rows if self.where(row)]
        except TypeError as error:  # a number compared with text, as a real service refuses
            raise ValueError(f"incompatible types in a condition: {error}") from None
        if self.order is not None:
            present = [row for row in rows if row.get(self.order) is not None]
            absent = [row for row in rows if row.get(self.order) is None]
            rows = sorted(present, key=lambda row: row[self.order],
                          reverse=self.descending) + absent
        limit = min(x for x in (self.top, max_rows) if x is not None) if (
            self.top is not None or max_rows is not None) else None
        if limit is not None:
            rows = rows[:limit]
        columns = self.columns or (list(self.rows[0]) if self.rows else [])
        self.output_columns = columns
        return [{column: row.get(column) for column in columns} for row in rows]


class TapService(Service):
    """A TAP ``sync`` endpoint (``<path>/sync``) over tables given as lists of rows.

    Parameters
    ----------
    name
        Names the service in the statistics.
    path
        The service's base path (the ``sync`` endpoint is under it).
    tables
        Rows by table name (every row of a table has the same keys).
    max_sync_rows
        Synchronous answers stop after this many rows.
    """

    def __init__(self, name: str, path: str, tables: dict[str, list[Row]],
                 max_sync_rows: int | None = None) -> None:
        self.name = name
        self.tables = tables
        self.max_sync_rows = max_sync_rows
        self.queries: list[str] = []
        self.routes = [Route(("GET", "POST"), f"{path.rstrip('/')}/sync", self.sync)]

    def run(self, adql: str) -> list[Row]:
        """The rows an ADQL query selects (``ValueError`` when it is not understood)."""
        return _Query(adql, self.tables).run(self.max_sync_rows)

    def sync(self, request: Request) -> Reply:
        params = {key.upper(): values[-1] for key, values in request.query.items()}
        if request.method == "POST":
            params.update({key.upper(): values[-1] for key, values in request.form().items()})
        adql = params.get("QUERY")
        if not adql:
            return _tap_error("the QUERY parameter is missing")
        if params.get("LANG", "ADQL").upper() != "ADQL":
            return _tap_error(f"LANG {params['LANG']!r} is not supported")
        if params.get("FORMAT", "votable").lower() != "csv":
            return _tap_error("this simulated service answers FORMAT=csv only")
        self.queries.append(adql)
        try:
            query = _Query(adql, self.tables)
            rows = query.run(self.max_sync_rows)
        except ValueError as error:
            return _tap_error(f"Cannot parse query '{adql[:80]}': {error}")
        # Sent as a file, so the cut-body and HTML-page faults reach it too.
        return Reply.file(_csv_text(query.output_columns, rows).encode(), content_type="text/csv")


def _tap_error(message: str) -> Reply:
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<VOTABLE version="1.3" '
            'xmlns="http://www.ivoa.net/xml/VOTable/v1.3">\n<RESOURCE type="results">\n'
            f'<INFO name="QUERY_STATUS" value="ERROR">{html.escape(message)}</INFO>\n'
            '</RESOURCE>\n</VOTABLE>\n')
    return Reply.text(body, status=400, content_type="application/x-votable+xml")


def _csv_text(columns: list[str], rows: Iterable[Row]) -> str:
    handle = io.StringIO()
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else repr(row[c]) if isinstance(row[c], float)
                         else row[c] for c in columns])
    return handle.getvalue()


class FileService(Service):
    """Fixed files by path (``Range``, ETags and the file faults apply)."""

    name = "files"

    def __init__(self, files: dict[str, Callable[[], bytes]]) -> None:
        self.files = files
        self.routes = [Route(("GET",), path, self._serve(make)) for path, make in files.items()]

    @staticmethod
    def _serve(make: Callable[[], bytes]) -> Callable[[Request], Reply]:
        return lambda request: Reply.file(make())


# -- the catalogs of a sky ----------------------------------------------------------------------
def _gaia_position(star: SimulatedStar) -> tuple[float, float]:
    ra, dec = star.position_at(GAIA_EPOCH)
    return float(ra), float(dec)


def gaia_source_rows(sky: SimulatedSky) -> list[Row]:
    """``gaiadr3.gaia_source`` rows of the stars with a ``gaia_id`` (positions at 2016.0)."""
    rows = []
    for star in sky.stars:
        if star.gaia_id is None:
            continue
        ra, dec = _gaia_position(star)
        g = star.gaia_magnitude
        error = 0.02 + 0.01 * max(0.0, g - 15.0) ** 2
        rows.append({
            "source_id": int(star.gaia_id), "ra": ra, "dec": dec,
            "parallax": star.parallax, "parallax_error": error,
            "parallax_over_error": star.parallax / error,
            "pmra": star.pmra, "pmdec": star.pmdec, "phot_g_mean_mag": g,
            "phot_bp_mean_mag": g + 0.4, "phot_rp_mean_mag": g - 0.5,
        })
    return sorted(rows, key=lambda row: row["source_id"])


def pscomppars_rows(sky: SimulatedSky) -> list[Row]:
    """``pscomppars`` rows: one planet ``<star> b`` per star with a transit."""
    rows = []
    for star in sky.stars:
        if star.transit is None:
            continue
        transit = star.transit
        rows.append({
            "pl_name": f"{star.name} b", "hostname": star.name, "ra": star.ra, "dec": star.dec,
            "sy_dist": 1000.0 / star.parallax, "sy_tmag": star.tmag,
            "sy_kepmag": star.kepler_magnitude, "sy_gaiamag": star.gaia_magnitude,
            "tic_id": f"TIC {star.tic_id}" if star.tic_id else None,
            "gaia_id": f"Gaia DR3 {star.gaia_id}" if star.gaia_id else None,
            "pl_orbper": transit.period, "pl_tranmid": transit.epoch,
            "pl_trandur": transit.duration * 24.0, "pl_trandep": transit.depth * 100.0,
            "pl_rade": round(math.sqrt(transit.depth) * 109.1 * star.radius, 3),
            "disc_facility": "Transiting Exoplanet Survey Satellite (TESS)", "tran_flag": 1,
        })
    return rows


def _wdj_name(ra: float, dec: float) -> str:
    """``WDJhhmmss.ss+ddmmss.ss`` of a position (as the catalogue names its stars)."""
    hours = ra / 15.0
    h, m = int(hours), int((hours % 1) * 60)
    s = ((hours * 60) % 1) * 60
    sign = "+" if dec >= 0 else "-"
    degrees = abs(dec)
    d, am = int(degrees), int((degrees % 1) * 60)
    asec = ((degrees * 60) % 1) * 60
    return f"WDJ{h:02d}{m:02d}{s:05.2f}{sign}{d:02d}{am:02d}{asec:05.2f}"


def white_dwarf_rows(sky: SimulatedSky) -> list[Row]:
    """Catalogue rows of the stars with a ``wd_probability`` (positions at 2016.0)."""
    rows = []
    for star in sky.stars:
        if star.wd_probability is None:
            continue
        ra, dec = _gaia_position(star)
        rows.append({
            "WDJ_name": _wdj_name(ra, dec), "source_id": int(star.gaia_id or 0), "ra": ra,
            "dec": dec, "parallax": star.parallax, "parallax_error": 0.1,
            "pmra": star.pmra, "pmdec": star.pmdec, "phot_g_mean_mag": star.gaia_magnitude,
            "Pwd": star.wd_probability, "teff_H": 12000.0, "logg_H": 8.0,
        })
    return rows


def white_dwarf_file(rows: list[Row], kind: str = "fits.gz") -> bytes:
    """The catalogue as a gzipped FITS table (``fits.gz``) or as CSV (``csv``)."""
    if kind == "csv":
        return _csv_text(list(rows[0]) if rows else ["WDJ_name"], rows).encode("utf-8")
    from astropy.table import Table

    columns = list(rows[0]) if rows else ["WDJ_name", "source_id", "ra", "dec"]
    table = Table({c: np.array([row[c] for row in rows]) if rows else np.array([])
                   for c in columns})
    handle = io.BytesIO()
    table.write(handle, format="fits")
    return gzip.compress(handle.getvalue(), mtime=0)


def catalog_services(sky: SimulatedSky, max_sync_rows: int | None = 2000
                     ) -> tuple[TapService, TapService, FileService]:
    """The Gaia archive, the Exoplanet Archive and the white-dwarf catalogue of a sky.

    Their tables are lists of rows that tests may change (add a bad row...);
    the white-dwarf files are made from the service's ``wd_rows`` when asked for.
    """
    gaia = TapService("gaia", GAIA_PATH, {"gaiadr3.gaia_source": gaia_source_rows(sky)},
                      max_sync_rows)
    exoplanets = TapService("exoplanet_archive", EXOPLANET_PATH,
                            {"pscomppars": pscomppars_rows(sky)}, max_sync_rows)
    wd_rows = white_dwarf_rows(sky)
    files = FileService({
        WD_CATALOG_PATH: lambda: white_dwarf_file(wd_rows, "fits.gz"),
        WD_CATALOG_PATH.replace(".fits.gz", ".csv"): lambda: white_dwarf_file(wd_rows, "csv"),
    })
    files.wd_rows = wd_rows
    return gaia, exoplanets, files
