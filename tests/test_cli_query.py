"""The query commands (status, sources, detections, show, report) on a finished project.

Each test runs a small project through ``skyretriever run`` on SQLite and on
PostgreSQL (eight synthetic stars, two of which the archive refuses, flares and
injected flares), then checks what the commands print against the rows read
directly with SQLAlchemy.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import re
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import tests.test_project_run as flaky_module
from skyretriever.cli import DETECTION_COLUMNS, SOURCE_COLUMNS, main
from skyretriever.database import Session, get_engine
from skyretriever.models import Base, Detection, Lightcurve, Properties, Source
from skyretriever.query import filter_columns

FAILING = {"test_0000002", "test_0000005"}
TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"


def _write_config(tmp_path: Path, database_url: str, data_root: Path, name: str = "query_cli",
                  version_control: bool = True) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""
        project: {{name: {name}, obs_names: [flaky], version_control: {str(version_control).lower()},
                   progress: false}}
        database: {{url: "{database_url}"}}
        data_root: "{data_root}"
        catalog: {{default: test, num_sources: 8}}
        observatories:
          flaky: {{flare_fraction: 0.6, empty_fraction: 0.15}}
        analysis:
          num_injections: 2
          simulator: {{flare: {{snr: 40, decay_time: 3}}}}
        execution: {{scheduler: serial, batch_size: 4}}
    """))
    return path


@pytest.fixture
def finished(tmp_path, database_url, data_root, capsys):
    """A finished project (two sources failed) and a source of another project with a shared name."""
    config = _write_config(tmp_path, database_url, data_root)
    flaky_module.FlakyDemoObs.failing = set(FAILING)
    try:
        assert main(["run", str(config)]) == 3
    finally:
        flaky_module.FlakyDemoObs.failing = set()
    capsys.readouterr()
    with Session() as session:
        project, cfg_hash = session.execute(sa.select(Source.project, Source.cfg_hash)).first()
        other = Source(name="test_0000001", project="someone_else", cfg_hash="", ra=1.0, dec=2.0)
        other.detections = [Detection(project="someone_else", cfg_hash="", finder="peak", snr=99.0,
                                      score=99.0, num_points=1, sign=1)]
        session.add(other)
        session.commit()
    assert len(cfg_hash) == 64
    return {"config": str(config), "project": project, "cfg_hash": cfg_hash}


def _run(capsys, *argv: Any) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _direct_sources(finished, condition=None) -> list[dict[str, Any]]:
    columns = filter_columns(Source, Properties)
    query = (sa.select(*(columns[c] for c in SOURCE_COLUMNS)).outerjoin(Properties)
             .where(Source.project == finished["project"], Source.cfg_hash == finished["cfg_hash"])
             .order_by(Source.cat_index))
    if condition is not None:
        query = query.where(condition)
    with Session() as session:
        return [dict(row._mapping) for row in session.execute(query)]


def _direct_detections(finished, *conditions) -> list[dict[str, Any]]:
    columns = filter_columns(Detection, Source)
    query = (sa.select(*(columns[c] for c in DETECTION_COLUMNS)).join(Source)
             .where(Source.project == finished["project"], Source.cfg_hash == finished["cfg_hash"],
                    *conditions)
             .order_by(Detection.snr.desc(), Detection.id))
    with Session() as session:
        return [dict(row._mapping) for row in session.execute(query)]


def _parse_csv(text: str, like: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """CSV rows back into the types of ``like`` (numbers, true/false, text; empty is None)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    parsed = []
    for row, model in zip(rows, like):
        values = {}
        for key, cell in row.items():
            kind = type(model[key])
            if cell == "":
                values[key] = None if model[key] is None else ""
            elif kind is bool:
                values[key] = {"True": True, "False": False}[cell]
            elif kind in (int, float):
                values[key] = kind(cell)
            else:
                values[key] = cell
        parsed.append(values)
    assert len(rows) == len(like)
    return parsed


def _database_contents() -> dict[str, Any]:
    """Every row of every table, and the table names: to show nothing changed."""
    engine = get_engine()
    contents: dict[str, Any] = {"tables": sorted(sa.inspect(engine).get_table_names())}
    with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows = connection.execute(sa.select(table).order_by(*table.primary_key.columns))
            contents[table.name] = [tuple(map(repr, row)) for row in rows]
    return contents


# -- sources --------------------------------------------------------------------------------
def test_sources_in_text_csv_and_json_are_the_projects_rows(finished, capsys):
    direct = _direct_sources(finished)
    assert [row["name"] for row in direct] == [f"test_{i:07d}" for i in range(8)]
    assert {row["name"] for row in direct if row["status"] == "failed"} == FAILING

    code, out, err = _run(capsys, "sources", finished["config"], "--format", "json")
    assert code == 0 and err == ""
    assert json.loads(out) == direct          # floats exactly, and no row of the other project

    code, out, _ = _run(capsys, "sources", finished["config"], "--format", "csv")
    assert code == 0 and out.splitlines()[0] == ",".join(SOURCE_COLUMNS)
    assert _parse_csv(out, direct) == direct

    code, out, _ = _run(capsys, "sources", finished["config"])
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == list(SOURCE_COLUMNS)
    assert lines[-1] == "8 sources" and len(lines) == 10
    for row, line in zip(direct, lines[1:-1]):
        assert line.split()[:6] == [str(row["id"]), row["name"], f"{row['ra']:.5f}",
                                    f"{row['dec']:.5f}", f"{row['mag']:.3f}", row["status"]]
        if row["status"] == "failed":
            assert line.endswith(row["error"]) and "download (flaky)" in line
        else:
            assert line.split()[6:10] == [str(row["num_lightcurves"]), str(row["num_points"]),
                                          "-" if row["best_snr"] is None else f"{row['best_snr']:.2f}",
                                          str(row["num_detections"])]
    # columns line up: every value of a column ends (numbers) or starts (text) at one place
    ends = {line.index(row["name"]) for row, line in zip(direct, lines[1:-1])}
    assert ends == {lines[0].index("name")}


WHERE = [
    ("mag < 18 and dec > -30", sa.and_(Source.mag < 18, Source.dec > -30)),
    ('status == "failed"', Source.status == "failed"),
    ("best_snr > 10", Properties.best_snr > 10),
    ("not has_data", sa.not_(Properties.has_data.is_(True))),
    ('name == "test_0000001"', Source.name == "test_0000001"),
    ('status in ("done", "new") and error is None',
     sa.and_(Source.status.in_(["done", "new"]), Source.error.is_(None))),
    ("num_detections >= 1 or mag > 19.5",
     sa.or_(Properties.num_detections >= 1, Source.mag > 19.5)),
]


def test_sources_where_and_limit_give_the_rows_of_the_direct_query(finished, capsys):
    sizes = set()
    for text, condition in WHERE:
        code, out, err = _run(capsys, "sources", finished["config"], "--where", text,
                              "--format", "json")
        expected = _direct_sources(finished, condition)
        assert code == 0 and err == "" and json.loads(out) == expected, text
        sizes.add(len(expected))
    assert 0 < min(sizes) and max(sizes) < 8       # every filter picks some rows, none all

    code, out, _ = _run(capsys, "sources", finished["config"], "--limit", "3")
    lines = out.splitlines()
    assert [line.split()[1] for line in lines[1:-1]] == ["test_0000000", "test_0000001",
                                                         "test_0000002"]
    assert lines[-1] == "3 sources (more with a higher --limit)"
    code, out, _ = _run(capsys, "sources", finished["config"], "--where", "mag > 99")
    assert code == 0 and out == "0 sources\n"
    code, out, _ = _run(capsys, "sources", finished["config"], "--limit", "8")
    assert out.splitlines()[-1] == "8 sources"
    with pytest.raises(SystemExit) as usage:
        main(["sources", finished["config"], "--limit", "0"])
    assert usage.value.code == 2 and "at least 1" in capsys.readouterr().err


# -- detections -----------------------------------------------------------------------------
def test_detections_by_snr_real_or_simulated_and_where(finished, capsys):
    config = finished["config"]
    everything = _direct_detections(finished)
    real = [d for d in everything if not d["is_simulated"]]
    simulated = [d for d in everything if d["is_simulated"]]
    assert real and simulated
    assert [d["snr"] for d in everything] == sorted((d["snr"] for d in everything), reverse=True)
    cut = everything[len(everything) // 2]["snr"]       # a threshold that splits them

    cases = [
        ((), everything),
        (("--real",), real),
        (("--simulated",), simulated),
        (("--min-snr", repr(cut)), [d for d in everything if d["snr"] >= cut]),
        (("--where", "not is_simulated"), real),
        (("--real", "--where", f'snr >= {cut!r} or finder == "transit"'),
         [d for d in real if d["snr"] >= cut or d["finder"] == "transit"]),
        (("--where", 'observatory in ("tess", "ztf")'), []),
        (("--where", 'observatory in ("flaky", "ztf") and name != "test_0000001"'),
         [d for d in everything if d["name"] != "test_0000001"]),
        (("--simulated", "--min-snr", repr(cut), "--where", "time_peak > 58100"),
         [d for d in simulated if d["snr"] >= cut and d["time_peak"] > 58100]),
    ]
    for options, expected in cases:
        code, out, err = _run(capsys, "detections", config, *options, "--format", "json")
        assert code == 0 and err == "" and json.loads(out) == expected, options
    assert 0 < len(cases[3][1]) < len(everything)
    assert 0 < len(cases[5][1]) < len(real)

    code, out, _ = _run(capsys, "detections", config, "--format", "csv")
    assert _parse_csv(out, everything) == everything
    code, out, _ = _run(capsys, "detections", config, "--limit", "2")
    lines = out.splitlines()
    assert lines[0].split() == list(DETECTION_COLUMNS)
    assert [line.split()[0] for line in lines[1:3]] == [str(d["id"]) for d in everything[:2]]
    assert lines[1].split()[6] == f"{everything[0]['snr']:.2f}"
    assert lines[-1] == "2 detections (more with a higher --limit)"
    with pytest.raises(SystemExit) as usage:
        main(["detections", config, "--real", "--simulated"])
    assert usage.value.code == 2 and "not allowed with" in capsys.readouterr().err


# -- show -----------------------------------------------------------------------------------
def test_show_gives_catalog_raw_data_light_curves_properties_and_detections(finished, capsys):
    config = finished["config"]
    name = _direct_detections(finished, ~Detection.is_simulated)[0]["name"]
    with Session() as session:
        source = session.scalars(sa.select(Source).where(
            Source.name == name, Source.project == finished["project"])).one()
        lightcurve_ids = [lc.id for lc in source.lightcurves]
        detection_ids = [d.id for d in sorted(source.detections, key=lambda d: -d.snr)]
        best_snr, ra = source.properties.best_snr, source.ra
        ls_period = source.properties.ls_period
        lightcurve_exptime = source.lightcurves[0].exptime
        raw_points = {r.observatory: r.num_points for r in source.raw_photometry}
        source_id = source.id
    assert len(lightcurve_ids) >= 2 and detection_ids

    code, out, err = _run(capsys, "show", config, name, "--format", "json")
    shown = json.loads(out)
    assert code == 0 and err == ""
    assert shown["source"]["id"] == source_id and shown["source"]["ra"] == ra
    assert shown["cfg_hash"] == finished["cfg_hash"]
    assert {r["observatory"]: r["num_points"] for r in shown["raw_photometry"]} == raw_points
    assert [lc["id"] for lc in shown["lightcurves"]] == lightcurve_ids
    assert shown["properties"]["best_snr"] == best_snr
    assert [d["id"] for d in shown["detections"]] == detection_ids

    code, out, _ = _run(capsys, "show", config, name)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith(f"source {name} (project query_cli, cfg_hash ")
    assert f"  ra           {ra:.5f} deg" in lines  # units of the model's column metadata
    assert "raw data: 1 observatory" in lines
    assert any(line.split()[:3] == ["flaky", "False", str(raw_points["flaky"])] for line in lines)
    assert f"light curves: {len(lightcurve_ids)}" in lines
    first = lines.index(f"light curves: {len(lightcurve_ids)}") + 2
    assert [int(line.split()[0]) for line in lines[first:first + len(lightcurve_ids)]] == \
        lightcurve_ids
    assert any(line.split() == ["best_snr", f"{best_snr:.2f}"] for line in lines)
    # the light curves' table names the units of its columns, from the model's metadata
    header = lines[first - 1].split()
    assert [h for h in header if h.startswith("(")] == ["(MJD)", "(MJD)", "(s)", "(mag)", "(mag)"]
    column = header.index("exptime")
    assert header[column + 1] == "(s)"
    assert float(lines[first].split()[column - header[:column].count("(MJD)")]) == \
        lightcurve_exptime
    assert ls_period is not None
    ls_lines = [line.split() for line in lines if line.split()[:1] == ["ls_period"]]
    assert ls_lines == [["ls_period", format(ls_period, ".6g"), "d"]]
    assert any(line.split()[:1] == ["time_span"] and line.split()[-1] == "d" for line in lines)
    assert f"detections: {len(detection_ids)}" in lines

    failed = sorted(FAILING)[0]
    code, out, _ = _run(capsys, "show", config, failed)
    assert code == 0 and "properties: none (not analysed yet)" in out
    with Session() as session:
        error = session.scalar(sa.select(Source.error).where(Source.name == failed))
    assert error.startswith("download (flaky)") and error.endswith(f"archive refused {failed}")
    assert f"  error        {error}" in out.splitlines()
    assert "raw data: 0 observatories" in out and "light curves: 0" in out


def test_show_of_an_unknown_source_is_exit_status_1_with_names_to_try(finished, capsys):
    code, out, err = _run(capsys, "show", finished["config"], "TEST_000000")
    assert code == 1 and out == ""
    assert "no source named 'TEST_000000' in project 'query_cli'" in err
    assert "similar names: " + ", ".join(repr(f"test_{i:07d}") for i in range(5)) in err
    code, _, err = _run(capsys, "show", finished["config"], "100%_")
    assert code == 1 and f"list them with 'skyretriever sources {finished['config']}'" in err


def test_show_plot_saves_the_sources_light_curves(finished, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    name = _direct_detections(finished, ~Detection.is_simulated)[0]["name"]
    target = tmp_path / "plots" / "source.png"
    code, out, err = _run(capsys, "show", finished["config"], name, "--plot", target)
    assert code == 0 and err == "" and out.splitlines()[-1] == f"plot saved to {target}"
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 10_000
    assert sorted(p.name for p in target.parent.iterdir()) == ["source.png"]  # no temporary left
    code, out, err = _run(capsys, "show", finished["config"], name, "--format", "json",
                          "--plot", tmp_path / "source.svg")
    assert code == 0 and json.loads(out)["plot"] == str(tmp_path / "source.svg")
    assert (tmp_path / "source.svg").read_text().lstrip().startswith("<?xml")

    failed = sorted(FAILING)[0]        # no light curves: shown, then a clear error
    code, out, err = _run(capsys, "show", finished["config"], failed, "--plot", tmp_path / "f.png")
    assert code == 1 and out.startswith(f"source {failed} ") and "detections: 0" in out
    assert err.startswith(f"skyretriever: error: --plot {tmp_path / 'f.png'}: ")
    assert "no processed light curves" in err and not (tmp_path / "f.png").exists()
    code, _, err = _run(capsys, "show", finished["config"], name, "--plot", tmp_path / "x.nosuch")
    assert code == 1 and "unknown format 'nosuch'" in err


def test_report_prints_the_path_of_its_index_html(finished, capsys):
    pytest.importorskip("skyretriever.report", reason="skyretriever.report is not in this tree")
    top = _direct_detections(finished, ~Detection.is_simulated)[:3]
    code, out, err = _run(capsys, "report", finished["config"], "--top", "3")
    assert code == 0, err
    index = Path(out.strip())
    assert out.count("\n") == 1 and index.name == "index.html" and index.is_file()
    text = index.read_text()
    assert all(d["name"] in text for d in top)


# -- status ---------------------------------------------------------------------------------
def test_status_counts_stages_per_observatory_and_says_which_failures_it_left_out(finished,
                                                                                   capsys):
    code, out, _ = _run(capsys, "status", finished["config"], "--failures", "1")
    with Session() as session:
        mine = (Source.project == finished["project"], Source.cfg_hash == finished["cfg_hash"])
        lightcurves = session.scalar(sa.select(sa.func.count(Lightcurve.id)).join(Source)
                                     .where(*mine))
        real = session.scalar(sa.select(sa.func.count(Detection.id)).join(Source)
                              .where(*mine, ~Detection.is_simulated))
    assert code == 0 and "sources  done 6, failed 2, new 0" in out
    assert any(line.split()[0] == "flaky" and line.split()[3] == str(lightcurves)
               for line in out.splitlines())
    assert f"detections {real} real" in out
    assert "failures (first 1 of 2):" in out and out.count("archive refused") == 1
    code, out, _ = _run(capsys, "status", finished["config"])
    assert "  failures:" in out and out.count("archive refused") == 2


# -- hostile input --------------------------------------------------------------------------
MALICIOUS = [
    ("1; DROP TABLE sources", "near '; DROP TABLE sources'"),
    ("mag < 1 or 1=1 --", "near '=1 --'"),
    ("mag > 0 or 1=1; DELETE FROM detections", "near '=1; DELETE FROM detecti"),
    ("name == 'x'; UPDATE sources SET status = 'new'", "near '; UPDATE sources SET sta"),
    ("mag > 0 or 1", "the constant '1'"),
    ("__import__('os').system('touch PWNED')", "a function call"),
    ("sources.name == 'x'", "attribute access 'sources.name'"),
    ("name == name.__class__", "attribute access 'name.__class__'"),
    ("(SELECT 1) > 0", "not a valid condition"),
    ("mag > 0 UNION SELECT * FROM sources", "not a valid condition"),
    ("drop_table == 1", "unknown column 'drop_table'"),
]


@pytest.mark.parametrize("command", ["sources", "detections"])
def test_malicious_where_is_refused_with_exit_status_1_and_changes_nothing(
        finished, capsys, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    before = _database_contents()
    for text, fragment in MALICIOUS:
        code, out, err = _run(capsys, command, finished["config"], "--where", text)
        assert code == 1 and out == "", text
        assert err.startswith("skyretriever: error: --where ") and fragment in err, err
        assert "Valid columns: " in err
        if command == "detections":
            assert ", snr, " in err and ", name, " in err
    assert _database_contents() == before
    assert not (tmp_path / "PWNED").exists()
    assert {"sources", "detections"} <= set(before["tables"])


def test_names_with_control_characters_stay_on_one_line_in_text_and_exact_in_csv_json(
        tmp_path, database_url, data_root, capsys):
    config = _write_config(tmp_path, database_url, data_root, name="odd_names",
                           version_control=False)
    names = ["two\nlines", "tab\there", "bell\x07", "quote \" and comma ,", "plain"]
    with Session() as session:
        for index, name in enumerate(names):
            session.add(Source(name=name, project="odd_names", cfg_hash="", cat_index=index,
                               ra=10.0 + index, dec=-5.0, status="new"))
        session.commit()
    code, out, _ = _run(capsys, "sources", config)
    lines = out.splitlines()
    assert code == 0 and len(lines) == len(names) + 2 and lines[-1] == "5 sources"
    assert "two\\nlines" in lines[1] and "tab\\there" in lines[2] and "bell\\x07" in lines[3]
    code, out, _ = _run(capsys, "sources", config, "--format", "csv")
    assert [row["name"] for row in csv.DictReader(io.StringIO(out))] == names
    code, out, _ = _run(capsys, "sources", config, "--format", "json",
                        "--where", 'name == "two\\nlines" or name == "bell\\x07"')
    assert [row["name"] for row in json.loads(out)] == ["two\nlines", "bell\x07"]


def test_query_commands_read_an_empty_database_without_making_tables(tmp_path, data_root, capsys):
    """SQLite only: the point is that the commands create nothing in a database file."""
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    config = _write_config(tmp_path, url, data_root)
    for argv in (["sources", config], ["detections", config, "--real"],
                 ["show", config, "test_0000000"]):
        code, out, err = _run(capsys, *argv)
        assert code == 1 and out == ""
        assert "has no skyretriever tables yet; run 'skyretriever run" in err
    assert sa.inspect(sa.create_engine(url)).get_table_names() == []


# -- docs/tutorial.md -----------------------------------------------------------------------
def _tutorial_blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced code block of the tutorial, in order."""
    fence = re.compile(r"^```(\w*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
    return [(match[1], match[2]) for match in fence.finditer(TUTORIAL.read_text())]


def test_the_tutorial_runs_as_written(tmp_path, database_url, data_root, capsys, monkeypatch):
    """Files it says to save are saved, Python blocks run in one namespace, shell lines run."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("SKYRETRIEVER_DATA", str(data_root))
    monkeypatch.setenv("SKYRETRIEVER_DB_URL", database_url)
    monkeypatch.setattr(sys, "path", list(sys.path))     # the tutorial adds its folder
    namespace: dict[str, Any] = {"__name__": "tutorial"}
    counts = {"file": 0, "python": 0, "sh": 0}
    try:
        for number, (language, text) in enumerate(_tutorial_blocks(), start=1):
            first = text.splitlines()[0] if text.strip() else ""
            if first.startswith("# file: "):
                path = work / first.removeprefix("# file: ").strip()
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                importlib.invalidate_caches()
                counts["file"] += 1
            elif language == "python":
                exec(compile(text, f"{TUTORIAL}:block {number}", "exec"), namespace)
                counts["python"] += 1
            elif language == "sh":
                for line in text.splitlines():
                    if line.strip() and not line.lstrip().startswith("#"):
                        argv = shlex.split(line)
                        assert argv[0] == "skyretriever", line
                        assert main(argv[1:]) == 0, (line, capsys.readouterr())
                        counts["sh"] += 1
        shown = capsys.readouterr().out
    finally:
        for module in [m for m in sys.modules if m.split(".")[0] == "my_extensions"]:
            del sys.modules[module]
    assert counts["file"] == 4 and counts["python"] >= 12 and counts["sh"] == 6

    # what the blocks say they do, checked against the database and the files
    proj = namespace["proj"]
    assert type(proj.analysis).__name__ == "VariabilityAnalysis"
    assert [finder.name for finder in proj.analysis.finders] == ["peak", "rise"]
    with Session() as session:
        mine = (Source.project == proj.context.name, Source.cfg_hash == proj.context.cfg_hash)
        extras = {source.name: (source.properties.extra or {}) for source in session.scalars(
            sa.select(Source).join(Properties).where(*mine))}
        finders = set(session.scalars(sa.select(Detection.finder).join(Source).where(*mine)))
    assert namespace["variables"] == sorted(name for name, extra in extras.items()
                                            if extra.get("chi2_reduced", 0) > 2.0)
    assert namespace["variables"] and len(namespace["variables"]) < len(extras)
    assert finders == {"peak", "rise"} and namespace["rises"]
    for name in ("best_source.png", "best_detection.png", "best_lightcurve.pdf",
                 "efficiency.svg"):
        assert (work / "plots" / name).stat().st_size > 1000
    assert (work / "test_0000001.png").stat().st_size > 1000
    assert "plot saved to test_0000001.png" in shown and "injected flares recovered" in shown
