"""The query layer: SQL lives only in skyretriever.queries, and its functions do what they say.

The first tests read the modules above the domain (pipeline, project, cli,
report, plots, checker) as source and fail on any SQL construct there; the
detector is also tried on a made-up module, so a detector that cannot fail
would show. The others run every query function on SQLite and PostgreSQL
(the ``database_url`` fixture) and check values that could be wrong: counts,
upserts replacing rows, what a batch write leaves in each table.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from skyretriever import database, queries
from skyretriever.analysis.analysis import AnalysisResult
from skyretriever.models import (
    Detection,
    HistogramBatch,
    Lightcurve,
    Properties,
    RawPhotometry,
    Source,
)
from skyretriever.observatories.base import ProjectContext
from skyretriever.pipeline import SourceResult, write_batch

SRC = Path(__file__).resolve().parents[1] / "src" / "skyretriever"
#: The modules that must send their SQL through skyretriever.queries.
WITHOUT_SQL = ("pipeline", "project", "cli", "report", "plots", "checker")

#: Statement builders of SQLAlchemy (``sa.select``, ``orm.selectinload``, ``postgresql.insert``...).
_BUILDERS = {"select", "insert", "update", "delete", "text", "func", "bindparam", "and_", "or_",
             "not_", "exists", "union", "literal_column", "selectinload", "joinedload",
             "subqueryload", "lazyload", "aliased"}
#: Methods that only statements, sessions and connections have.
_STATEMENT_METHODS = {"execute", "scalars", "scalar", "query", "on_conflict_do_update",
                      "on_conflict_do_nothing", "with_for_update", "returning",
                      "scalar_subquery", "execution_options"}
#: Session methods whose names are common elsewhere (dict.get, set.add): flagged on sessions.
_SESSION_METHODS = {"get", "add", "add_all", "merge", "delete", "flush", "bulk_save_objects",
                    "bulk_insert_mappings", "bulk_update_mappings"}
#: Table methods whose names are common elsewhere (list.insert): flagged on ``X.__table__``/``table``.
_TABLE_METHODS = {"insert", "update", "delete", "select"}


def _name_of(node: ast.AST) -> str:
    """The last identifier of a receiver (``self.session`` -> ``session``), or ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _root(node: ast.AST) -> tuple[str | None, list[str]]:
    """The name an attribute chain starts from, and the attributes along it."""
    attributes = []
    while isinstance(node, ast.Attribute):
        attributes.append(node.attr)
        node = node.value
    return (node.id if isinstance(node, ast.Name) else None), attributes[::-1]


def sql_constructs(source: str) -> list[str]:
    """``line: code`` of every SQL construct in a module's source."""
    tree = ast.parse(source)
    sql_modules: set[str] = set()     # local names bound to sqlalchemy modules
    sql_names: set[str] = set()       # local names bound to sqlalchemy statement builders
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sqlalchemy":
                    sql_modules.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlalchemy":
            for alias in node.names:
                if alias.name in _BUILDERS:
                    sql_names.add(alias.asname or alias.name)
                else:
                    sql_modules.add(alias.asname or alias.name)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        flagged = False
        if isinstance(function, ast.Name):
            flagged = function.id in sql_names
        elif isinstance(function, ast.Attribute):
            root, attributes = _root(function)
            receiver = _name_of(function.value)
            flagged = (
                (root in sql_modules and any(a in _BUILDERS for a in attributes))
                or function.attr in _STATEMENT_METHODS
                or (function.attr in _SESSION_METHODS and "session" in receiver.lower())
                or (function.attr in _TABLE_METHODS
                    and (receiver == "__table__" or receiver.lower().endswith("table")))
            )
        if flagged:
            found.append(f"{node.lineno}: {ast.unparse(node)[:80]}")
    return found


@pytest.mark.parametrize("module", WITHOUT_SQL)
def test_no_sql_outside_the_query_layer(module):
    assert sql_constructs((SRC / f"{module}.py").read_text()) == []


def test_the_query_layer_is_where_the_sql_is():
    # The detector finds the statements it is for where they now live.
    assert len(sql_constructs((SRC / "queries.py").read_text())) > 40


def test_the_detector_catches_every_kind_of_statement():
    made_up = textwrap.dedent("""
        import sqlalchemy as sa
        from sqlalchemy import orm, select as pick
        from sqlalchemy.dialects import postgresql

        def reads(session, context):
            session.execute(sa.select(Source.id))
            self.session.scalars(pick(Source))
            session.scalar(sa.select(sa.func.count()))
            session.get(Source, 1)
            session.query(Source).all()
            orm.selectinload(Source.lightcurves)

        def writes(new_session, connection, table):
            new_session.add(Source(name="x"))
            postgresql.insert(Source.__table__).on_conflict_do_nothing()
            Lightcurve.__table__.insert()
            table.update()
            connection.execute(sa.text("DELETE FROM sources"))
            new_session.delete(row)
        """)
    found = [int(line.split(":")[0]) for line in sql_constructs(made_up)]
    # Each line of the made-up module's functions is caught (nested calls count apiece).
    assert sorted(set(found)) == [7, 8, 9, 10, 11, 12, 15, 16, 17, 18, 19, 20]
    assert found.count(9) == 3         # session.scalar, sa.select and sa.func.count


def test_the_detector_leaves_look_alikes_alone():
    innocent = textwrap.dedent("""
        import sys
        import numpy as np
        import sqlalchemy as sa

        def work(values, seen, counts, path, session, obj):
            values.get("name")
            seen.add(3)
            counts.update({"done": 1})
            sys.path.insert(0, "here")
            np.where(values > 0)
            path.unlink()
            sa.inspect(obj).detached
            sa.engine.make_url("sqlite://")
            session.commit()
            session.expunge_all()
        """)
    assert sql_constructs(innocent) == []


# -- the functions, on both databases ------------------------------------------------------
CONTEXT = ProjectContext("alpha", "hash_a", "ALPHA")
OTHER = ProjectContext("beta", "hash_b", "BETA")


def _source(name: str, context: ProjectContext = CONTEXT, **values) -> dict:
    return {"name": name, "project": context.name, "cfg_hash": context.cfg_hash, "ra": 10.0,
            "dec": -5.0, "status": "new", "counted": False, **values}


def _raw(name: str, observatory: str = "demo", **values) -> dict:
    return {"source_name": name, "observatory": observatory, "ra": 10.0, "dec": -5.0,
            "download_hash": "d1", "target_key": "k1", "is_empty": False, "num_points": 5,
            "filename": f"raw/{name}_{observatory}.h5", **values}


def _lightcurve(source_id: int, number: int, observatory: str = "demo", **values) -> dict:
    return {"source_id": source_id, "project": CONTEXT.name, "cfg_hash": CONTEXT.cfg_hash,
            "observatory": observatory, "series_number": number, "series_total": 2,
            "was_processed": True, "is_simulated": False, "filter": "g",
            "filename": f"projects/lc_{source_id}.h5", "num_points": 10 * number, **values}


def _sources(names: list[str], context: ProjectContext = CONTEXT, **values) -> dict[str, int]:
    """Insert sources (committed); their ids by name."""
    with database.Session() as session:
        batch = queries.BatchConnection(session)
        queries.insert_sources(batch, [_source(n, context, **values) for n in names])
        ids = {name: source_id
               for source_id, name, _ in queries.lock_sources(batch, context, names)}
        session.commit()
    return ids


def test_inserting_sources_leaves_existing_ones_and_locks_only_the_project_s(database_url):
    _sources(["a", "b"], status="done")
    _sources(["a"], OTHER)
    with database.Session() as session:
        batch = queries.BatchConnection(session)
        queries.insert_sources(batch, [_source("a", status="failed"), _source("c")])
        locked = queries.lock_sources(batch, CONTEXT, ["a", "b", "c"])
        session.commit()
        assert batch.statements == 2
        assert sorted(name for _, name, _ in locked) == ["a", "b", "c"]
        assert queries.source_counts(session, CONTEXT) == {"done": 2, "new": 1}
        assert queries.source_counts(session, OTHER) == {"new": 1}
        states = {name: status for _, name, status, _ in
                  queries.source_states(session, CONTEXT, ["a", "c", "zzz"])}
        assert states == {"a": "done", "c": "new"}       # "a" kept its status: DO NOTHING


def test_upserting_raw_rows_replaces_the_row_of_the_same_identity(database_url):
    with database.Session() as session:
        batch = queries.BatchConnection(session)
        first = queries.upsert_raw_rows(batch, [_raw("a"), _raw("b")])
        again = queries.upsert_raw_rows(batch, [_raw("a", num_points=9, filename="raw/new.h5"),
                                                _raw("a", target_key="k2", num_points=3)])
        session.commit()
        a_key = ("a", "demo", "d1", "k1")
        assert again[a_key] == first[a_key]                   # updated in place, same id
        assert set(again) == {a_key, ("a", "demo", "d1", "k2")}     # names of this call only
        rows = queries.raw_rows_for(session, ["a", "b"], ["demo"])
        assert len(rows) == 3
        by_key = {(r["source_name"], r["target_key"]): r for r in rows}
        assert by_key[("a", "k1")]["num_points"] == 9
        assert by_key[("a", "k1")]["filename"] == "raw/new.h5"
        assert by_key[("b", "k1")]["num_points"] == 5
        assert set(rows[0]) == set(queries.raw_columns(RawPhotometry))
        assert queries.raw_rows_for(session, ["a"], ["ztf"]) == []


def test_raw_links_point_each_source_at_one_raw_row(database_url):
    ids = _sources(["a"])
    with database.Session() as session:
        batch = queries.BatchConnection(session)
        raw = queries.upsert_raw_rows(batch, [_raw("a"), _raw("a", target_key="k2",
                                                               is_empty=True)])
        first, second = raw[("a", "demo", "d1", "k1")], raw[("a", "demo", "d1", "k2")]
        queries.upsert_raw_links(batch, [{"source_id": ids["a"], "observatory": "demo",
                                          "raw_id": first}])
        queries.upsert_raw_links(batch, [{"source_id": ids["a"], "observatory": "demo",
                                          "raw_id": second}])
        session.commit()
        assert queries.sources_using_raw(session, first) == []
        assert queries.sources_using_raw(session, second) == [ids["a"]]
        assert queries.raw_counts(session, CONTEXT, "demo") == {True: 1}
        assert queries.raw_link_source_ids(session, CONTEXT, ["demo"]) == [ids["a"]]
        assert queries.raw_link_source_ids(session, CONTEXT, ["ztf"]) == []


def test_replacing_light_curves_keeps_simulated_ones_and_other_observatories(database_url):
    ids = _sources(["a", "b"])
    a, b = ids["a"], ids["b"]
    with database.Session() as session:
        batch = queries.BatchConnection(session)
        queries.replace_lightcurves(batch, {}, [
            _lightcurve(a, 1), _lightcurve(a, 2), _lightcurve(a, 1, is_simulated=True),
            _lightcurve(a, 1, observatory="ztf"), _lightcurve(b, 1)])
        new = queries.replace_lightcurves(batch, {"demo": [a]}, [_lightcurve(a, 1, num_points=77)])
        session.commit()
        assert set(new) == {(a, "demo", 1), (a, "ztf", 1)}      # the source's processed ones
        states = queries.processed_lightcurve_states(session, [a, b], ["demo", "ztf"])
        assert [(s["source_id"], s["observatory"], s["series_number"], s["num_points"])
                for s in states] == [(a, "demo", 1, 77), (a, "ztf", 1, 10), (b, "demo", 1, 10)]
        assert set(states[0]) == set(queries.LIGHTCURVE_STATE_COLUMNS)
        assert len(queries.source_lightcurves(session, a)) == 3     # the simulated one stayed
        assert queries.lightcurve_count(session, CONTEXT, "demo") == 3
        assert queries.lightcurve_filenames(session) == {f"projects/lc_{a}.h5",
                                                         f"projects/lc_{b}.h5"}


def test_file_times_are_recorded_in_the_named_table_only(database_url):
    ids = _sources(["a"])
    with database.Session() as session:
        batch = queries.BatchConnection(session)
        raw_id = queries.upsert_raw_rows(batch, [_raw("a")])[("a", "demo", "d1", "k1")]
        lc_id = queries.replace_lightcurves(batch, {}, [_lightcurve(ids["a"], 1)])[
            (ids["a"], "demo", 1)]
        queries.record_file_times(batch, [("raw_photometry", raw_id, 111), ("lightcurves", lc_id,
                                                                            222)],
                                  [RawPhotometry.__table__, Lightcurve.__table__])
        session.commit()
        assert queries.by_id(session, RawPhotometry, raw_id).file_mtime_ns == 111
        assert queries.by_id(session, Lightcurve, lc_id).file_mtime_ns == 222


def _result(name: str, **values) -> SourceResult:
    row = {"name": name, "ra": 10.0, "dec": -5.0, "cat_index": int(name[-1])}
    return SourceResult(row=row, **values)


def _analysis(detections: int, linked: bool = True) -> AnalysisResult:
    properties = {"has_data": True, "num_lightcurves": 1, "num_points": 10,
                  "num_good_points": 9, "num_detections": detections}
    found = [{"finder": "peak", "snr": 8.0 + i, "score": 8.0, "num_points": 3, "sign": 1,
              "filter": "g", **({"lightcurve_index": 0} if linked else {})}
             for i in range(detections)]
    return AnalysisResult(properties=properties, detections=found, histogram={"lcs": {0: 1}})


def test_a_batch_written_table_by_table_reads_back(database_url):
    lightcurve = {"project": CONTEXT.name, "cfg_hash": CONTEXT.cfg_hash, "observatory": "demo",
                  "filter": "g", "series_number": 1, "series_total": 1, "was_processed": True,
                  "is_simulated": False, "num_points": 10, "filename": "projects/x.h5"}
    results = [
        _result("s1", raw_new={"demo": _raw("s1")}, lightcurves_new={"demo": [lightcurve]},
                analysis=_analysis(2), analysed_keys=[("demo", 1)], status="done"),
        _result("s2", raw_new={"demo": _raw("s2", is_empty=True, filename=None)},
                analysis=_analysis(0), status="done", empty=True),
        _result("s3", status="failed", error="download (demo): boom"),
        _result("s4", skipped=True),
    ]
    with database.Session() as session:
        written = write_batch(session, results, CONTEXT, "main")
    assert len(written.histogram_batch_ids) == 1
    with database.Session() as session:
        assert queries.source_counts(session, CONTEXT) == {"done": 2, "failed": 1}
        assert queries.failed_sources(session, CONTEXT, 10) == [("s3", "download (demo): boom")]
        assert queries.raw_counts(session, CONTEXT, "demo") == {False: 1, True: 1}
        assert queries.lightcurve_count(session, CONTEXT, "demo") == 1
        assert queries.properties_count(session, CONTEXT) == 2
        assert queries.detection_counts(session, CONTEXT) == {False: 2}
        detections = queries.top_detections(session, CONTEXT, 5)
        assert [d.snr for d in detections] == [9.0, 8.0]
        assert detections[0].lightcurve.series_number == 1        # linked through its index
        assert queries.histogram_batches(session, CONTEXT, "main",
                                         written.histogram_batch_ids) == [
            (written.histogram_batch_ids[0], {"lcs": {"0": 2}})]
        # every source counted once: written again, no second histogram batch
        states = queries.source_states(session, CONTEXT, ["s1", "s2", "s3"])
        assert {name: counted for _, name, _, counted in states} == {
            "s1": True, "s2": True, "s3": False}
    with database.Session() as session:
        again = write_batch(session, [_result("s1", analysis=_analysis(1, linked=False),
                                              status="done",
                                              counted=True)], CONTEXT, "main")
        assert again.histogram_batch_ids == []
        assert queries.detection_counts(session, CONTEXT) == {False: 1}     # replaced
        assert queries.properties_count(session, CONTEXT) == 2


def test_histogram_batches_are_read_in_chunks_of_the_project_only(database_url):
    with database.Session() as session:
        batch = queries.BatchConnection(session)
        ids = [queries.insert_histogram_batch(batch, CONTEXT, "main", i, {"lcs": {"0": i}})
               for i in range(1, 6)]
        queries.insert_histogram_batch(batch, CONTEXT, "other", 1, {})
        queries.insert_histogram_batch(batch, OTHER, "main", 1, {})
        session.commit()
        assert queries.histogram_batch_ids(session, CONTEXT, "main") == ids
        read = queries.histogram_batches(session, CONTEXT, "main", ids[1:] + [10_000], chunk=2)
        assert sorted((i, counts["lcs"]["0"]) for i, counts in read) == [
            (ids[1], 2), (ids[2], 3), (ids[3], 4), (ids[4], 5)]


def test_deleting_a_project_s_results_keeps_raw_data_and_other_projects(database_url):
    ids = _sources(["a", "b"])
    other = _sources(["a"], OTHER)
    with database.Session() as session:
        batch = queries.BatchConnection(session)
        queries.upsert_raw_rows(batch, [_raw("a")])
        queries.replace_lightcurves(batch, {}, [_lightcurve(ids["a"], 1), _lightcurve(ids["b"], 1),
                                                _lightcurve(ids["b"], 2, filename=None)])
        queries.insert_histogram_batch(batch, CONTEXT, "main", 1, {})
        session.commit()
        assert queries.has_results(session, CONTEXT)
        filenames = queries.delete_results(session, CONTEXT)
        session.commit()
        assert filenames == {f"projects/lc_{ids['a']}.h5", f"projects/lc_{ids['b']}.h5"}
        assert not queries.has_results(session, CONTEXT)
        assert queries.histogram_batch_ids(session, CONTEXT, "main") == []
        assert queries.source_ids_named(session, OTHER, "a") == [other["a"]]
        assert len(queries.raw_rows_for(session, ["a"], ["demo"])) == 1
        assert queries.project_differing_in_case(session, "BETA") == "beta"
        assert queries.project_differing_in_case(session, "beta") is None


def test_the_checker_s_reads_and_repairs(database_url):
    ids = _sources(["a", "b"], status="done")
    with database.Session() as session:
        batch = queries.BatchConnection(session)
        queries.insert_properties(batch, [
            {"source_id": ids["a"], "project": CONTEXT.name, "cfg_hash": CONTEXT.cfg_hash,
             "has_data": True, "num_lightcurves": 0, "num_points": 0, "num_good_points": 0,
             "num_detections": 0},
            {"source_id": ids["b"], "project": CONTEXT.name, "cfg_hash": "stale",
             "has_data": True, "num_lightcurves": 0, "num_points": 0, "num_good_points": 0,
             "num_detections": 0}])
        queries.upsert_raw_rows(batch, [_raw("a"), _raw("b", is_empty=True, filename=None)])
        queries.replace_lightcurves(batch, {}, [_lightcurve(ids["a"], 1),
                                                _lightcurve(ids["a"], 2, filename=None)])
        session.commit()
        assert sorted(queries.done_sources(session, CONTEXT)) == [(ids["a"], "a"), (ids["b"], "b")]
        assert queries.project_analysed_source_ids(session, CONTEXT) == {ids["a"], ids["b"]}
        wrong = queries.rows_of_another_configuration(session, CONTEXT, Properties)
        assert [source_id for _, source_id in wrong] == [ids["b"]]
        assert [row[1] for row in queries.raw_file_rows(session, ["demo"])] == ["a"]
        assert queries.raw_filenames(session) == {"raw/a_demo.h5"}
        assert len(queries.lightcurve_file_rows(session, CONTEXT)) == 2
        queries.delete_lightcurves_in_file(session, ids["a"], None)
        queries.delete_row(session, Properties, wrong[0][0])
        queries.mark_for_redo(session, [ids["a"]], "marked")
        session.commit()
        assert [row[2] for row in queries.lightcurve_file_rows(session, CONTEXT)] == [
            f"projects/lc_{ids['a']}.h5"]
        assert queries.properties_count(session, CONTEXT) == 0
        assert queries.source_counts(session, CONTEXT) == {"new": 1, "done": 1}
        assert queries.source_named(session, CONTEXT, "a").error == "marked"


def test_saving_a_raw_row_adds_it_or_brings_it_up_to_date(database_url):
    with database.Session() as session:
        queries.save_raw_row(session, _raw("a", num_points=4))
        queries.save_raw_row(session, _raw("a", num_points=6))
        queries.save_raw_row(session, _raw("a", download_hash=None, num_points=1))
        session.commit()
        rows = sorted(queries.raw_rows_for(session, ["a"], ["demo"]),
                      key=lambda r: r["num_points"])
        assert [(r["download_hash"], r["num_points"]) for r in rows] == [(None, 1), ("d1", 6)]
        raw_id = rows[1]["id"]
        queries.delete_raw_row(session, raw_id)
        session.commit()
        assert queries.by_id(session, RawPhotometry, raw_id) is None


def test_the_query_commands_tables_filter_order_and_limit(database_url):
    ids = _sources(["a_1", "b%2", "c_3"])
    with database.Session() as session:
        for name, index in (("a_1", 2), ("b%2", 1), ("c_3", 0)):
            queries.by_id(session, Source, ids[name]).cat_index = index
        batch = queries.BatchConnection(session)
        queries.insert_detections(batch, [
            {"source_id": ids[name], "project": CONTEXT.name, "cfg_hash": CONTEXT.cfg_hash,
             "finder": "peak", "snr": snr, "score": snr, "num_points": 3, "sign": 1,
             "is_simulated": simulated}
            for name, snr, simulated in (("a_1", 5.0, False), ("b%2", 12.0, True),
                                         ("c_3", 9.0, False))])
        session.commit()
        names = [Source.name, Source.cat_index]
        assert [r["name"] for r in queries.source_table(session, CONTEXT, names)] == [
            "c_3", "b%2", "a_1"]
        assert queries.source_table(session, CONTEXT, names, Source.name != "c_3", limit=1) == [
            {"name": "b%2", "cat_index": 1}]
        table = queries.detection_table(session, CONTEXT, [Detection.snr, Source.name])
        assert [r["snr"] for r in table] == [12.0, 9.0, 5.0]
        real = queries.detection_table(session, CONTEXT, [Source.name], min_snr=6.0,
                                       simulated=False)
        assert real == [{"name": "c_3"}]
        # like-patterns in the name are matched literally
        assert queries.similar_source_names(session, CONTEXT, "_") == ["a_1", "c_3"]
        assert queries.similar_source_names(session, CONTEXT, "B%") == ["b%2"]
        assert queries.source_named(session, CONTEXT, "B%2") is None
        assert [s.name for s in queries.sources_after(session, CONTEXT, ids["a_1"], 5)] == [
            "b%2", "c_3"]
        first, last = queries.activity_span(session, CONTEXT)
        assert first is not None and last is not None and first <= last


def test_the_report_pages_through_failed_sources(database_url):
    ids = _sources(["a", "b", "c"], status="failed", error="why")
    with database.Session() as session:
        page = queries.failed_sources_after(session, CONTEXT, 0, 2)
        assert [row[2] for row in page] == ["a", "b"]
        rest = queries.failed_sources_after(session, CONTEXT, page[-1][0], 2)
        assert [(row[0], row[3]) for row in rest] == [(ids["c"], "why")]


def test_planning_reads_only_the_given_sources_links_and_properties(database_url):
    ids = _sources(["a", "b"])
    with database.Session() as session:
        batch = queries.BatchConnection(session)
        queries.insert_properties(batch, [
            {"source_id": ids["b"], "project": CONTEXT.name, "cfg_hash": CONTEXT.cfg_hash,
             "has_data": False, "num_lightcurves": 0, "num_points": 0, "num_good_points": 0,
             "num_detections": 0}])
        session.commit()
        assert queries.analysed_source_ids(session, [ids["a"], ids["b"]]) == [ids["b"]]
        assert queries.analysed_source_ids(session, [ids["a"]]) == []
        assert queries.by_id(session, HistogramBatch, 1) is None
