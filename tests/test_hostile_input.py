"""Hostile and broken input: names, catalogs and configuration files; secrets never shown."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyretriever import Project, database
from skyretriever.catalogs import Catalog, CatalogError
from skyretriever.catalogs.catalog import _parse_cross_id
from skyretriever.cli import main
from skyretriever.database import Session
from skyretriever.models import RawPhotometry, Source
from skyretriever.parameters import ParameterError, load_yaml

HOSTILE_NAMES = ["../../../escape", "a/b", "a\\b", "/etc/passwd", "..", ".hidden", "x" * 400,
                 "étoile filante", "星", "TIC 25155310", "a b\tc\nd", "$(rm -rf ~)", "'; DROP TABLE "
                 "sources; --", "%s%s%n", "CON", "name.h5"]


def test_hostile_names_are_stored_verbatim_and_write_nothing_outside_the_data_root(
        tmp_path, project_factory, data_root):
    catalog = tmp_path / "hostile.csv"
    frame = pd.DataFrame({"name": HOSTILE_NAMES, "ra": np.linspace(1, 359, len(HOSTILE_NAMES)),
                          "dec": np.linspace(-80, 80, len(HOSTILE_NAMES))})
    frame.to_csv(catalog, index=False)
    before = {p for p in tmp_path.rglob("*") if p != data_root and data_root not in p.parents}
    project = project_factory(catalog_kwargs={"filename": str(catalog)},
                              demo={"empty_fraction": 0.0})
    summary = project.run()
    assert summary.counts["done"] == len(HOSTILE_NAMES) and summary.counts["failed"] == 0
    after = {p for p in tmp_path.rglob("*") if p != data_root and data_root not in p.parents}
    assert after - before <= {tmp_path / "test.db", tmp_path / "test.db-wal",
                              tmp_path / "test.db-shm", tmp_path / "test.db.lock"}
    assert not (tmp_path.parent / "escape").exists()
    with Session() as session:
        assert sorted(session.scalars(sa.select(Source.name))) == sorted(HOSTILE_NAMES)
        filenames = session.scalars(sa.select(RawPhotometry.filename)).all()
    assert len(set(filenames)) == len(HOSTILE_NAMES)             # no two names share a file
    for filename in filenames:
        path = (data_root / filename).resolve()
        assert data_root.resolve() in path.parents and path.exists()
        assert len(path.name) < 120


def test_broken_catalog_rows_are_named_and_can_be_skipped(tmp_path):
    catalog = tmp_path / "broken.csv"
    catalog.write_text("name,ra,dec\ngood,1,1\n,2,2\nbad ra,abc,4\n"
                       "far,1e9,5\npole,6,-95\ngood,7,7\nnan-dec,8,\n")
    with pytest.raises(CatalogError) as error:
        Catalog(filename=str(catalog)).load()
    message = str(error.value)
    for expected in ("row 1: missing name", "row 2: RA is missing or not a number",
                     "row 3: RA outside 0 to 360", "row 4: Dec outside -90 to +90",
                     "row 5: duplicate name 'good' (first at row 0)", "row 6: Dec is missing"):
        assert expected in message
    assert [r["name"] for r in Catalog(filename=str(catalog), bad_rows="skip").get_rows()] == [
        "good"]


def test_nul_bytes_are_refused_with_their_line(tmp_path):
    catalog = tmp_path / "nul.csv"
    catalog.write_bytes(b"name,ra,dec\ngood,1,1\nnul\x00byte,3,3\n")
    with pytest.raises(CatalogError, match="NUL byte on line 3"):
        Catalog(filename=str(catalog)).load()
    parquet = tmp_path / "nul.parquet"                     # other formats keep it: a bad row
    pd.DataFrame({"name": ["ok", "nul\x00byte"], "ra": [1.0, 2.0], "dec": [1.0, 2.0]}).to_parquet(
        parquet)
    with pytest.raises(CatalogError, match="row 1: name contains a NUL byte"):
        Catalog(filename=str(parquet)).load()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_yaml_loading_either_gives_a_mapping_or_a_clear_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass") if "\ud800" not in text else (
        path.write_bytes(text.encode("utf-8", "replace")))
    try:
        assert isinstance(load_yaml(path), dict)
    except ParameterError as error:
        assert "c.yaml" in str(error)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30),
                          st.binary(max_size=10)), max_size=20))
def test_cross_ids_parse_to_integers_or_nothing(values):
    parsed = _parse_cross_id(pd.Series(values, dtype=object))
    assert len(parsed) == len(values)
    assert all(value is None or (isinstance(value, int) and value >= 0) for value in parsed)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=8), st.text(max_size=8)),
                min_size=1, max_size=8))
def test_any_csv_catalog_loads_or_raises_a_catalog_error(tmp_path, rows):
    path = tmp_path / "random.csv"
    pd.DataFrame(rows, columns=["name", "ra", "dec"]).to_csv(path, index=False)
    try:
        catalog = Catalog(filename=str(path)).load()
    except CatalogError as error:
        message = str(error)                         # it says where: a row, line or column
        assert "random.csv" in message or "column" in message
        assert any(word in message for word in ("row", "line", "column", "cannot read"))
        return
    for row in catalog.get_rows():
        assert 0 <= row["ra"] < 360 and -90 <= row["dec"] <= 90 and row["name"]


def test_a_database_password_never_appears_in_files_logs_status_or_errors(
        postgres_url, tmp_path, caplog, capsys, data_root):
    secret = "Sup3r-S3cret-Passw0rd"
    url = sa.engine.make_url(postgres_url).set(password=secret).render_as_string(False)
    config = tmp_path / "secret.yaml"
    config.write_text(
        "project: {name: secretive, progress: false, verbose: true}\n"
        f"database: {{url: \"{url}\"}}\ndata_root: \"{data_root}\"\n"
        "catalog: {default: test, num_sources: 5}\nexecution: {scheduler: serial}\n")
    caplog.set_level(logging.DEBUG)
    try:
        assert main(["-v", "run", str(config)]) == 0
        assert main(["status", str(config), "--format", "json"]) == 0
        assert main(["status", str(config)]) == 0
        assert main(["check", str(config)]) == 0
        project = Project(cfg_file=config)
        written = "".join(p.read_text(errors="replace") for p in data_root.rglob("*.yaml"))
        assert written and secret not in written
        assert secret not in project.cfg_hash and secret not in project.config_text()
        assert secret not in json.dumps(project.full_config())
        assert secret not in repr(project) and secret not in str(project.status())
        output = capsys.readouterr()
        assert secret not in output.out + output.err
        assert secret not in caplog.text
        # an error message about this database does not show it either
        unreachable = sa.engine.make_url(url).set(port=1).render_as_string(False)
        database.configure(unreachable)
        with pytest.raises(database.DatabaseError) as error:
            database.upgrade()
        assert secret not in str(error.value)
    finally:
        database.configure("sqlite:///:memory:")
        with sa.create_engine(postgres_url).begin() as connection:
            connection.execute(sa.text(
                "TRUNCATE detections, properties, lightcurves, raw_photometry, sources, "
                "histogram_batches RESTART IDENTITY CASCADE"))
    assert os.environ.get("SKYRETRIEVER_DB_URL", "").find(secret) < 0
