"""skyretriever.query.parse_filter: the rows a filter selects, and the filters it refuses.

Rows with known values (NULLs, quotes in names, 64-bit ids, real and simulated
detections) go into SQLite and PostgreSQL; every filter must select exactly the
rows that a hand-written SQLAlchemy query selects, and the rows that Python
itself picks from the same values.
"""

from __future__ import annotations

import datetime as dt
import doctest
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import skyretriever.query
from skyretriever.database import Session, get_engine
from skyretriever.models import Detection, Properties, Source
from skyretriever.query import FilterError, column_kind, filter_columns, parse_filter

PROJECT, CFG_HASH = "query_test", "c" * 64
SPECIAL_NAMES = ["WD 1234+56", "O'Brien \"star\"", "x'); DROP TABLE sources; --", "Ünïcode ★"]


def _source_values() -> list[dict[str, Any]]:
    """Forty sources: a few with special names and missing values, the rest random."""
    rng = np.random.default_rng(8)
    rows = []
    for index in range(40):
        name = SPECIAL_NAMES[index] if index < len(SPECIAL_NAMES) else f"star_{index:03d}"
        status = ("done", "failed", "new")[index % 3]
        rows.append({
            "name": name,
            "cat_index": index,
            "ra": float(rng.uniform(0, 360)),
            "dec": float(rng.uniform(-90, 90)),
            "mag": None if index % 7 == 3 else float(np.round(rng.uniform(10, 20), 2)),
            "mag_err": float(rng.uniform(0.005, 0.2)),
            "mag_filter": None if index % 5 == 0 else ("G", "V")[index % 2],
            "tic_id": 2**62 + index if index % 4 == 0 else None,
            "status": status,
            "error": f"download (tess): refused {name}" if status == "failed" else None,
        })
    rows[10]["mag"] = 15.0  # exactly on the boundary of 'mag < 15' and '10 < mag <= 15'
    return rows


def _properties_values(index: int) -> dict[str, Any] | None:
    if index % 6 == 5:
        return None  # not analysed
    has_data = index % 4 != 1
    return {
        "has_data": has_data,
        "num_lightcurves": 3 * has_data,
        "num_points": 300 * has_data,
        "num_good_points": 290 * has_data,
        "best_snr": float(index % 17) if has_data else None,
        "num_detections": index % 3,
    }


def _detection_values(index: int) -> list[dict[str, Any]]:
    rows = []
    for number in range(index % 3):
        transit = (index + number) % 4 == 0
        rows.append({
            "finder": "transit" if transit else "peak",
            "observatory": ("tess", "ztf", "demo", "k2")[(index + number) % 4],
            "filter": None if transit else ("g", "r")[number % 2],
            "is_simulated": number == 1,
            "snr": float((index * 7 + number * 3) % 23) + 0.5,
            "score": 1.0,
            "time_peak": 58000.0 + index + number / 4,
            "num_points": 3,
            "sign": -1 if transit else 1,
            "period": 2.5 + index / 10 if transit else None,
        })
    return rows


@pytest.fixture
def known_rows(database_url):
    """The sources, properties and detections above, plus one source of another project."""
    values = _source_values()
    with Session() as session:
        for index, row in enumerate(values):
            source = Source(project=PROJECT, cfg_hash=CFG_HASH, **row)
            properties = _properties_values(index)
            if properties is not None:
                source.properties = Properties(project=PROJECT, cfg_hash=CFG_HASH, **properties)
            source.detections = [Detection(project=PROJECT, cfg_hash=CFG_HASH, **d)
                                 for d in _detection_values(index)]
            session.add(source)
        session.add(Source(project="other", cfg_hash="", name="WD 1234+56", ra=1.0, dec=2.0))
        session.commit()
    return values


def _source_names(condition) -> set[str]:
    query = (sa.select(Source.name).outerjoin(Properties, Properties.source_id == Source.id)
             .where(Source.project == PROJECT, condition))
    with Session() as session:
        return set(session.scalars(query))


def _detection_keys(condition) -> set[tuple[str, float]]:
    query = (sa.select(Source.name, Detection.time_peak).join(Source)
             .where(Detection.project == PROJECT, condition))
    with Session() as session:
        return {tuple(row) for row in session.execute(query)}


def _python_rows(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each source's values with its properties' (None where there is no Properties row)."""
    rows = []
    empty = {key: None for key in ("has_data", "num_lightcurves", "best_snr", "num_detections")}
    for index, row in enumerate(values):
        rows.append({**row, **empty, **(_properties_values(index) or {})})
    return rows


# Filter text, the same condition in SQLAlchemy, and in Python over the values above
# (False wherever SQL would compare with NULL).
SOURCE_FILTERS = [
    ("mag < 15 and dec > -30",
     sa.and_(Source.mag < 15, Source.dec > -30),
     lambda r: r["mag"] is not None and r["mag"] < 15 and r["dec"] > -30),
    ("10 < mag <= 15",
     sa.and_(Source.mag > 10, Source.mag <= 15),
     lambda r: r["mag"] is not None and 10 < r["mag"] <= 15),
    ('name == "WD 1234+56"', Source.name == "WD 1234+56", lambda r: r["name"] == "WD 1234+56"),
    ("name == 'O\\'Brien \"star\"'", Source.name == "O'Brien \"star\"",
     lambda r: r["name"] == "O'Brien \"star\""),
    ('name == "x\'); DROP TABLE sources; --"', Source.name == "x'); DROP TABLE sources; --",
     lambda r: r["name"] == "x'); DROP TABLE sources; --"),
    ('name == "Ünïcode ★" or name == "nobody"', Source.name.in_(["Ünïcode ★", "nobody"]),
     lambda r: r["name"] in ("Ünïcode ★", "nobody")),
    ('status in ("failed", "new")', Source.status.in_(["failed", "new"]),
     lambda r: r["status"] in ("failed", "new")),
    ('status not in ("done",) and error is not None',
     sa.and_(Source.status.not_in(["done"]), Source.error.is_not(None)),
     lambda r: r["status"] != "done" and r["error"] is not None),
    ("mag == None", Source.mag.is_(None), lambda r: r["mag"] is None),
    ("mag is not None and mag_filter is None",
     sa.and_(Source.mag.is_not(None), Source.mag_filter.is_(None)),
     lambda r: r["mag"] is not None and r["mag_filter"] is None),
    ("tic_id >= 4611686018427387908", Source.tic_id >= 2**62 + 4,
     lambda r: r["tic_id"] is not None and r["tic_id"] >= 2**62 + 4),
    ("dec > ra", Source.dec > Source.ra, lambda r: r["dec"] > r["ra"]),
    ("best_snr > 10", Properties.best_snr > 10,
     lambda r: r["best_snr"] is not None and r["best_snr"] > 10),
    ("has_data and num_detections >= 1 or best_snr == 0",
     sa.or_(sa.and_(Properties.has_data.is_(True), Properties.num_detections >= 1),
            Properties.best_snr == 0),
     lambda r: bool(r["has_data"]) and (r["num_detections"] or 0) >= 1 or r["best_snr"] == 0),
    ("not has_data", sa.not_(Properties.has_data.is_(True)), lambda r: not r["has_data"]),
    ("-30.5 >= dec", Source.dec <= -30.5, lambda r: r["dec"] <= -30.5),
    ("created_at > '2000-01-01' and created_at < '2999-12-31T23:59'",
     Source.created_at > dt.datetime(2000, 1, 1), lambda r: True),
]


@pytest.mark.parametrize("text, direct, python", SOURCE_FILTERS,
                         ids=[text for text, _, _ in SOURCE_FILTERS])
def test_source_filters_select_the_rows_of_the_direct_query(known_rows, text, direct, python):
    selected = _source_names(parse_filter(text, Source, Properties))
    assert selected == _source_names(direct)
    assert selected == {r["name"] for r in _python_rows(known_rows) if python(r)}
    assert selected and (len(selected) < len(known_rows) or text.startswith("created_at"))


def test_filters_negate_with_sql_logic_and_never_leave_the_project(known_rows):
    everything = _source_names(sa.true())
    positive = _source_names(parse_filter("mag < 15 or dec < 0", Source))
    negative = _source_names(parse_filter("not (mag < 15 or dec < 0)", Source))
    unknown = {r["name"] for r in known_rows if r["mag"] is None and r["dec"] >= 0}
    assert positive | negative | unknown == everything        # NULL < 15 is neither
    assert not positive & negative and not negative & unknown
    assert negative == _source_names(sa.not_(sa.or_(Source.mag < 15, Source.dec < 0)))
    # the other project's 'WD 1234+56' is never among them
    with Session() as session:
        query = sa.select(Source.project).where(parse_filter('name == "WD 1234+56"', Source))
        assert sorted(session.scalars(query)) == ["other", PROJECT]


DETECTION_FILTERS = [
    ('snr >= 7 or finder == "transit"',
     sa.or_(Detection.snr >= 7, Detection.finder == "transit"),
     lambda d: d["snr"] >= 7 or d["finder"] == "transit"),
    ('observatory in ("tess", "ztf")', Detection.observatory.in_(["tess", "ztf"]),
     lambda d: d["observatory"] in ("tess", "ztf")),
    ("not is_simulated", Detection.is_simulated.is_(False), lambda d: not d["is_simulated"]),
    ("is_simulated == True and sign == -1",
     sa.and_(Detection.is_simulated.is_(True), Detection.sign == -1),
     lambda d: d["is_simulated"] and d["sign"] == -1),
    ("period is not None and period < 4.0", Detection.period < 4.0,
     lambda d: d["period"] is not None and d["period"] < 4.0),
    ('filter != "g" and time_peak >= 58010.25',
     sa.and_(Detection.filter != "g", Detection.time_peak >= 58010.25),
     lambda d: d["filter"] is not None and d["filter"] != "g" and d["time_peak"] >= 58010.25),
    ('name == "WD 1234+56" or mag < 12',
     sa.or_(Source.name == "WD 1234+56", Source.mag < 12),
     lambda d: d["name"] == "WD 1234+56" or d["mag"] is not None and d["mag"] < 12),
]


@pytest.mark.parametrize("text, direct, python", DETECTION_FILTERS,
                         ids=[text for text, _, _ in DETECTION_FILTERS])
def test_detection_filters_select_the_rows_of_the_direct_query(known_rows, text, direct, python):
    selected = _detection_keys(parse_filter(text, Detection, Source))
    assert selected == _detection_keys(direct)
    expected = set()
    for index, source in enumerate(known_rows):
        for detection in _detection_values(index):
            if python({**detection, "name": source["name"], "mag": source["mag"]}):
                expected.add((source["name"], detection["time_peak"]))
    assert selected == expected and expected


# -- random conditions against Python's three-valued logic ---------------------------------
# Each atom: (text, evaluate(row) -> True / False / None for SQL's unknown)
def _compare(column: str, op: str, value: Any):
    def evaluate(row: dict[str, Any]) -> bool | None:
        actual = row[column]
        if actual is None:
            return None
        return {"==": actual == value, "!=": actual != value, "<": actual < value,
                "<=": actual <= value, ">": actual > value, ">=": actual >= value}[op]
    return f"{column} {op} {value!r}", evaluate


def _member(column: str, values: tuple, negate: bool):
    def evaluate(row: dict[str, Any]) -> bool | None:
        if row[column] is None:
            return None
        return (row[column] in values) != negate
    return f"{column} {'not in' if negate else 'in'} {values!r}", evaluate


def _null(column: str, negate: bool):
    return (f"{column} is {'not ' if negate else ''}None",
            lambda row: (row[column] is None) != negate)


numbers = st.sampled_from([-45.0, -30, 0, 10.5, 14.99, 15, 15.0, 17.3, 90])
atoms = st.one_of(
    st.builds(_compare, st.sampled_from(["mag", "dec", "best_snr", "num_detections"]),
              st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), numbers),
    st.builds(_compare, st.sampled_from(["status", "mag_filter"]), st.sampled_from(["==", "!="]),
              st.sampled_from(["done", "new", "G", "V", "O'Brien"])),
    st.builds(_member, st.just("status"),
              st.lists(st.sampled_from(["done", "failed", "new"]), max_size=3).map(tuple),
              st.booleans()),
    st.builds(_member, st.just("mag_filter"), st.just(("G", "V")), st.booleans()),
    st.builds(_null, st.sampled_from(["mag", "error", "best_snr", "mag_filter"]), st.booleans()),
)


def _kleene_and(a, b):
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _kleene_or(a, b):
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _combine(children):
    return st.one_of(
        st.tuples(children, children).map(lambda p: (
            f"({p[0][0]}) and ({p[1][0]})", lambda r, p=p: _kleene_and(p[0][1](r), p[1][1](r)))),
        st.tuples(children, children).map(lambda p: (
            f"({p[0][0]}) or ({p[1][0]})", lambda r, p=p: _kleene_or(p[0][1](r), p[1][1](r)))),
        children.map(lambda c: (
            f"not ({c[0]})", lambda r, c=c: None if c[1](r) is None else not c[1](r))),
    )


conditions = st.recursive(atoms, _combine, max_leaves=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(condition=conditions)
def test_random_filters_agree_with_three_valued_logic(known_rows, condition):
    text, evaluate = condition
    expected = {r["name"] for r in _python_rows(known_rows) if evaluate(r) is True}
    assert _source_names(parse_filter(text, Source, Properties)) == expected, text


# -- what is refused ----------------------------------------------------------------------
REFUSED = [
    ("1; DROP TABLE sources", "near '; DROP TABLE sources'"),
    ("mag < 1 or 1=1 --", "near '=1 --'"),
    ("mag < 1; DELETE FROM sources", "near '; DELETE FROM sources'"),
    ("'); DROP TABLE sources; --", "not a valid condition"),
    ("mag < 1 /* comment */", "not a valid condition"),
    ("mag < 1 -- comment", "arithmetic '1 -- comment'"),
    ("mag < 1 or 1", "the constant '1' (at character 12) on its own"),
    ("mag < 1 or True", "the constant 'True'"),
    ('name == "x" or "1" == "1"', "'\"1\" == \"1\"' (at character 16) compares two constants"),
    ("mag.real < 3", "attribute access 'mag.real' (at character 1)"),
    ("sources.mag < 3", "attribute access 'sources.mag'"),
    ("__import__('os').system('rm -rf /')", "a function call \"__import__('os').system"),
    ("len(name) > 3", "a function call 'len(name)'"),
    ("name[0] == 'W'", "indexing 'name[0]'"),
    ("mag + 1 < 3", "arithmetic 'mag + 1'"),
    ("mag < -dec", "an operation '-dec'"),
    ("mag < (lambda: 1)", "a lambda"),
    ("(x := 3) > 1", "an assignment 'x := 3' (at character 2)"),
    ("f'{mag}' == '1'", "an f-string"),
    ("mag < 1 if dec else 2", "an if-else expression"),
    ("[m for m in mag]", "a comprehension"),
    ("magnitude < 15", "unknown column 'magnitude' (at character 1)"),
    ("decl > -30", "did you mean 'dec'?"),
    ("Mag < 15", "did you mean 'mag'?"),
    ("cat_extra == 1", "'cat_extra' (at character 1) holds JSON"),
    ("mag", "'mag' (at character 1) holds a number, not true/false"),
    ("mag < 'abc'", "'mag' holds numbers; \"'abc'\" (at character 7) is not a number"),
    ("mag < True", "'True' (at character 7) is not a number"),
    ("name == 5", "put the value in quotes: name == \"5\""),
    ("has_data == 1", "compare it with True or False, not '1'"),
    ("has_data > False", "true/false columns compare only with == and !="),
    ("mag == name", "'mag' holds a number and 'name' holds text"),
    ("status in 'done'", "'in' needs a list of values in parentheses"),
    ("status in (None, 'done')", "None cannot be in the list"),
    ("mag < None", "None cannot be ordered with '<'"),
    ("mag is 15", "'is' compares with None"),
    ("mag < 1e999", "'1e999' (at character 7) is not a finite number"),
    ("tic_id == 99999999999999999999", "outside the range of 'tic_id'"),
    ("created_at > 'yesterday'", "is not an ISO date or time"),
    ("created_at > 2020", "give one as a quoted ISO date"),
    ("name == b'x'", "put the value in quotes"),
    ("mag < 1\x00", "NUL character"),
    ("", "the filter is empty"),
    ("   ", "the filter is empty"),
    ("not " * 60 + "has_data", "deeper than 50 levels"),
    ("mag < 1 or " * 1000 + "mag < 1", "longer than 10000 characters"),
]


@pytest.mark.parametrize("text, fragment", REFUSED, ids=[t[:40] for t, _ in REFUSED])
def test_refused_filters_name_the_offending_part_and_the_valid_columns(text, fragment):
    with pytest.raises(FilterError) as error:
        parse_filter(text, Source, Properties, where="--where")
    message = str(error.value)
    assert message.startswith("--where ") and fragment in message, message
    listed = message.rsplit("Valid columns: ", 1)[1].split(", ")
    assert listed == sorted(filter_columns(Source, Properties))


@given(st.text(max_size=60))
@settings(max_examples=300, deadline=None)
def test_any_text_gives_a_condition_or_a_filter_error(text):
    try:
        condition = parse_filter(text, Detection, Source)
    except FilterError as error:
        assert "Valid columns: " in str(error)
    else:
        assert isinstance(condition, sa.ColumnElement)


def test_values_reach_the_database_only_as_bound_parameters(known_rows):
    hostile = "x'); DROP TABLE sources; --"
    condition = parse_filter(f"name == {hostile!r} or error == 'a\" OR 1=1'", Source)
    for dialect in (sa.dialects.sqlite.dialect(), sa.dialects.postgresql.dialect()):
        compiled = condition.compile(dialect=dialect)
        assert "DROP" not in str(compiled) and "1=1" not in str(compiled)
        assert sorted(compiled.params.values()) == sorted([hostile, 'a" OR 1=1'])
    assert _source_names(condition) == {hostile}
    assert "sources" in sa.inspect(get_engine()).get_table_names()


def test_filter_columns_first_model_wins_and_json_is_left_out():
    columns = filter_columns(Detection, Source, Properties)
    assert columns["id"] is Detection.id and columns["created_at"] is Detection.created_at
    assert columns["name"] is Source.name and columns["best_snr"] is Properties.best_snr
    assert not {"extra", "injected", "cat_extra", "quality_counts"} & set(columns)
    assert {column_kind(columns[name]) for name in ("snr", "mag", "tic_id", "name",
                                                   "is_simulated", "created_at")} == {
        "number", "integer", "text", "boolean", "time"}
    with pytest.raises(TypeError, match="at least one model"):
        filter_columns()
    with pytest.raises(FilterError, match="expected text, not int"):
        parse_filter(15, Source)


def test_docstring_examples():
    result = doctest.testmod(skyretriever.query,
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10 and result.failed == 0
