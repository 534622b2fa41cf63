"""Hostile and broken input, each refused with an error that says what and where.

Names (stored verbatim, never a path outside the data root), catalogs (bad rows,
NUL bytes), configuration files (unknown keys, wrong types, tags that construct
objects, bombs), FITS files (cut short, HTML, missing columns, wrong units, the
wrong mission), ZTF answers (extra, missing or broken columns), database URLs
(wrong scheme or driver, unparseable, unreachable); property tests of the
parsers (YAML, cross-ids, CSV catalogs, FITS, ZTF CSV, HTTP headers, MAST rows);
a database password never shown.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyretriever import Project, database
from skyretriever.catalogs import Catalog, CatalogError
from skyretriever.catalogs.catalog import _parse_cross_id
from skyretriever.cli import main
from skyretriever.database import Session
from skyretriever.models import RawPhotometry, Source
from skyretriever.net import NetworkError
from skyretriever.observatories.ztf import ZTF_COLUMNS as ZTF_CSV_COLUMNS
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


# -- configuration files -----------------------------------------------------------------------
BAD_YAML = [
    ("catalog: {default: test, filenme: x.csv}\n",
     r"catalog.*unknown parameter 'filenme'; did you mean 'filename'"),
    ("observatorys: {demo: {}}\n", r"unknown section 'observatorys'; did you mean 'observatories'"),
    ("observatories: {TES: {}}\n", r"observatories.demo of .*broken.yaml: unknown parameter 'TES'"),
    ("observatories: {demo: {wait_time: soon}}\n", r"wait_time.*soon"),
    ("execution: {workers: two}\n", r"workers.*two"),
    ("execution: {scheduler: [serial]}\n", r"scheduler"),
    ("catalog: {num_sources: -5, default: test}\n", r"num_sources"),
    ("project: {name: !!python/object/apply:os.system ['touch {pwned}']}\n",
     r"not valid \(safe\) YAML at line 1"),
    ("project:\n  name: !!python/name:os.system\n", r"not valid \(safe\) YAML at line 2"),
    ("catalog: !!python/object:skyretriever.catalogs.Catalog {}\n", r"not valid \(safe\) YAML"),
    ("- a list\n- not sections\n", r"must hold a mapping of sections"),
    ("project: {name: x\n", r"not valid \(safe\) YAML at line 2"),
    ("project: {name: [unclosed}\n", r"not valid \(safe\) YAML at line 1"),
]


@pytest.mark.parametrize("text,message", BAD_YAML)
def test_broken_configuration_files_name_the_problem_and_write_nothing(tmp_path, text, message):
    folder = tmp_path / "work"
    folder.mkdir()
    config = folder / "broken.yaml"
    pwned = folder / "pwned"
    config.write_text(text.replace("{pwned}", str(pwned)))
    with pytest.raises(ParameterError, match=message) as error:
        Project(name="broken", cfg_file=config, data_root=str(folder / "data"),
                database_url=f"sqlite:///{folder / 'data' / 'x.db'}")
    if "YAML" in message or "mapping" in message:
        assert "broken.yaml" in str(error.value)
    assert sorted(p.name for p in folder.rglob("*")) == ["broken.yaml"]  # nothing made, run


def test_a_yaml_bomb_is_refused_or_stays_small(tmp_path):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):  # 10**9 elements if expanded
        lines.append(f"{'abcdefghij'[level]}: &{'abcdefghij'[level]} "
                     f"[{', '.join(['*' + 'abcdefghij'[level - 1]] * 10)}]")
    lines.append("project: {name: bomb, progress: false}")
    config = tmp_path / "bomb.yaml"
    config.write_text("\n".join(lines) + "\n")
    # refused while it is read: its aliases would expand to 10**9 values (issue 14)
    with pytest.raises(ParameterError, match="bomb.yaml' is refused at line 4.*aliases expand"):
        Project(name="bomb", cfg_file=config, data_root=str(tmp_path / "data"),
                database_url=f"sqlite:///{tmp_path / 'data' / 'x.db'}")


# -- FITS files that are not what they should be ------------------------------------------------
def _edit_fits(content: bytes, edit) -> bytes:
    with fits.open(io.BytesIO(content)) as hdul:
        edit(hdul)
        buffer = io.BytesIO()
        hdul.writeto(buffer, output_verify="ignore")
    return buffer.getvalue()


def _unit(hdul, column: str, unit: str) -> None:
    hdul[1].header[f"TUNIT{hdul[1].columns.names.index(column) + 1}"] = unit


def _set(hdu: int, key: str, value) -> object:
    def edit(hdul):
        if value is None:
            del hdul[hdu].header[key]
        else:
            hdul[hdu].header[key] = value
    return edit


BROKEN_FITS = {
    # name: (mission of the observatory, how the served file is made, what the error says)
    "cut short": ("tess", lambda own, other: own[: len(own) // 2 + 100], "cut short"),
    "an HTML page": ("tess", lambda own, other: b"<!DOCTYPE html><html>maintenance</html>" * 80,
                     "does not start with SIMPLE"),
    "no PDCSAP_FLUX": ("tess", lambda own, other: _edit_fits(
        own, lambda h: h[1].columns.del_col("PDCSAP_FLUX")), "lacks the column.s. PDCSAP_FLUX"),
    "no QUALITY": ("tess", lambda own, other: _edit_fits(
        own, lambda h: h[1].columns.del_col("QUALITY")), "lacks the column.s. QUALITY"),
    "TIME in seconds": ("tess", lambda own, other: _edit_fits(own, lambda h: _unit(h, "TIME", "s")),
                        "TIME is in 's', expected days"),
    "TIME on Kepler's clock": ("tess", lambda own, other: _edit_fits(
        own, lambda h: _unit(h, "TIME", "BJD - 2454833, days")), "expected BJD - 2457000"),
    "BJDREFI of another mission": ("tess", lambda own, other: _edit_fits(
        own, _set(1, "BJDREFI", 2454833)), "BJDREFI is 2454833, expected 2457000"),
    "no BJDREFI": ("tess", lambda own, other: _edit_fits(own, _set(1, "BJDREFI", None)),
                   "BJDREFI is None"),
    "TIMEUNIT s": ("tess", lambda own, other: _edit_fits(own, _set(1, "TIMEUNIT", "s")),
                   "TIMEUNIT is 's'"),
    "flux in Jy": ("tess", lambda own, other: _edit_fits(
        own, lambda h: _unit(h, "PDCSAP_FLUX", "Jy")), "PDCSAP_FLUX is in 'Jy', expected e-/s"),
    "a Kepler file as TESS": ("tess", lambda own, other: other["kepler"],
                              "TELESCOP is 'Kepler', expected 'TESS'"),
    "a TESS file as Kepler": ("kepler", lambda own, other: other["tess"],
                              "TELESCOP is 'TESS', expected 'Kepler'"),
    "a Kepler file as K2": ("k2", lambda own, other: other["kepler"],
                            "MISSION is 'Kepler', expected 'K2'"),
    "a Kepler file without MISSION as K2": ("k2", lambda own, other: _edit_fits(
        other["kepler"], _set(0, "MISSION", None)), "no whole-number CAMPAIGN; it has QUARTER"),
    "no SECTOR": ("tess", lambda own, other: _edit_fits(own, _set(0, "SECTOR", None)),
                  "no whole-number SECTOR"),
}


@pytest.fixture(scope="module")
def mission_sky():
    from tests.mast_support import kepler_stars, small_sky, tess_stars

    return small_sky(tess_stars()[:2] + kepler_stars())


@pytest.mark.parametrize("case", list(BROKEN_FITS))
def test_broken_or_foreign_fits_files_are_refused_and_not_kept(mission_sky, data_root, case):
    from skyretriever.observatories import VirtualK2, VirtualKepler, VirtualTESS
    from skyretriever.testing import SimulatedArchives
    from tests.mast_support import QUICK, catalog_rows, kepler_stars, tess_stars

    mission, make, message = BROKEN_FITS[case]
    star = {"tess": tess_stars()[1], "kepler": kepler_stars()[0], "k2": kepler_stars()[1]}
    first = {name: mission_sky.files_of(s.name)[0] for name, s in star.items()}
    others = {name: mission_sky.file_bytes(product.data_uri) for name, product in first.items()}
    with SimulatedArchives(mission_sky) as archives:
        mast = archives.mast.services[0]
        mast.served_files[first[mission].data_uri] = make(others[mission], others)
        kind = {"tess": VirtualTESS, "kepler": VirtualKepler, "k2": VirtualK2}[mission]
        obs = kind(**archives.observatory_kwargs(**QUICK, use_cloud=False, keep_fits=True))
        [row] = catalog_rows([star[mission]])
        obs.prepare_download([row])
        with pytest.raises((ValueError, NetworkError), match=message) as error:
            obs.download(row)
    text = str(error.value)
    assert first[mission].data_uri in text or first[mission].filename in text, text
    kept = [p for p in data_root.rglob("*") if p.is_file()]
    assert kept == [] or all(p.name != first[mission].filename for p in kept), kept


def test_a_foreign_file_fails_its_source_in_a_run_and_the_rest_goes_on(
        mission_sky, project_factory, data_root, tmp_path):
    from skyretriever.checker import check_project
    from skyretriever.testing import SimulatedArchives
    from tests.mast_support import QUICK, tess_stars, write_catalog

    stars = tess_stars()[:2]
    kepler_file = mission_sky.file_bytes(mission_sky.files_of("kepler_host")[0].data_uri)
    with SimulatedArchives(mission_sky) as archives:
        archives.mast.services[0].served_files[
            mission_sky.files_of("quiet_star")[0].data_uri] = kepler_file
        project = project_factory(
            obs_names=["TESS"], catalog_kwargs={"filename": write_catalog(
                mission_sky, tmp_path, stars)},
            TESS=archives.observatory_kwargs(**QUICK, use_cloud=False))
        summary = project.run()
    assert [name for name, _ in summary.failures] == ["quiet_star"]
    with Session() as session:
        status, error = session.execute(sa.select(Source.status, Source.error).where(
            Source.name == "quiet_star")).one()
        kept = set(session.scalars(sa.select(RawPhotometry.source_name)))
    assert status == "failed" and "TELESCOP is 'Kepler', expected 'TESS'" in error
    assert error.startswith("download (tess): InvalidFileError: mast:TESS/product/")
    assert kept == {"planet_host"}
    assert check_project(project).clean


# -- ZTF answers with extra, missing or broken columns ------------------------------------------
def _columns(text: str, change) -> str:
    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    return change(frame).to_csv(index=False)


def _bad_value(frame):
    frame.loc[1, "mag"] = "abc"
    return frame


BROKEN_ZTF = {
    # name: (how the CSV is changed, what the error says; None: the answer is used)
    "an extra column at the end": (lambda t: _columns(t, lambda f: f.assign(seeing="1.2")), None),
    "an extra column first": (lambda t: _columns(
        t, lambda f: f.reindex(columns=["rank", *f.columns], fill_value="7")), None),
    "columns in another order": (lambda t: _columns(t, lambda f: f[f.columns[::-1]]), None),
    "no mag": (lambda t: _columns(t, lambda f: f.drop(columns=["mag"])),
               r"lacks the column\(s\) mag \(it has"),
    "no hjd, no exptime": (lambda t: _columns(t, lambda f: f.drop(columns=["hjd", "exptime"])),
                           r"lacks the column\(s\) hjd, exptime"),
    "a word for a magnitude": (lambda t: _columns(t, _bad_value),
                               r"column 'mag' has 'abc' on line 3, not a number"),
    "no oid": (lambda t: _columns(t, lambda f: f.drop(columns=["oid"])), r"no 'oid' column"),
    "an oid that is not one": (lambda t: _columns(t, lambda f: f.assign(oid="x12")),
                               r"column 'oid' has 'x12' on line 2"),
    "not CSV at all": (lambda t: "\x00\x01garbage\n" * 5, r"not a ZTF light-curve table"),
}


@pytest.mark.parametrize("case", list(BROKEN_ZTF))
def test_ztf_answers_with_extra_or_missing_columns(case, data_root):
    from skyretriever.observatories.ztf import VirtualZTF
    from skyretriever.testing import SimulatedArchives
    from ztf_support import QUICK_NET, ztf_sky

    change, message = BROKEN_ZTF[case]
    sky = ztf_sky()
    with SimulatedArchives(sky) as archives:
        archives.add_irsa(transform=change)
        obs = VirtualZTF(**archives.ztf_kwargs(**QUICK_NET))
        row = {"name": "blended", "ra": 50.0, "dec": 5.0, "mag": 15.0}
        if message is None:
            raw = obs.download(row)
            assert not raw.is_empty and len(obs.reduce(raw)) > 0
            assert set(raw.data.columns) >= {"oid", "mjd", "mag", "filter"}
            extra = {"an extra column at the end": "seeing", "an extra column first": "rank"}
            if case in extra:
                assert extra[case] in raw.data.columns  # kept as it came
        else:
            with pytest.raises(NetworkError, match=message) as error:
                obs.download(row)
            assert "POS=CIRCLE 50.0 5.0" in str(error.value) or "IRSA" in str(error.value)
            assert archives.irsa.count() == 1  # a broken answer is not asked for again


# -- database URLs -------------------------------------------------------------------------------
DB_SECRET = "Db-S3cret-Pw"
BAD_DATABASE_URLS = [
    ("sqlit:///x.db", "unsupported database 'sqlit'"),
    (f"mysql://me:{DB_SECRET}@127.0.0.1/sky", "unsupported database 'mysql'"),
    (f"postgresql+psycogp2://me:{DB_SECRET}@127.0.0.1/sky", "unknown driver 'psycogp2'"),
    (f"postgresql+psycopg://me:{DB_SECRET}@127.0.0.1/sky", "driver 'psycopg' .* not installed"),
    (f"postgres//me:{DB_SECRET}@127.0.0.1/sky", "it has no scheme"),
    (f"postgresql://me:{DB_SECRET}@127.0.0.1:port/sky", "cannot parse the database URL"),
    (f"postgresql://me:{DB_SECRET}@127.0.0.1:1/sky", "cannot use the database .*refused"),
]


@pytest.mark.parametrize("url,message", BAD_DATABASE_URLS)
def test_wrong_or_unreachable_database_urls_are_clear_errors(tmp_path, url, message, capsys):
    folder = tmp_path / "work"
    folder.mkdir()
    config = folder / "db.yaml"
    config.write_text(f"project: {{name: db, progress: false}}\ndata_root: \"{folder / 'data'}\"\n"
                      f"database: {{url: \"{url}\"}}\ncatalog: {{default: test, num_sources: 2}}\n")
    try:
        with pytest.raises(database.DatabaseError, match=message) as error:
            Project(cfg_file=config).run()
        assert DB_SECRET not in str(error.value)
        assert main(["run", str(config)]) == 1
        output = capsys.readouterr()
        assert re.search(message, output.err + output.out) and DB_SECRET not in output.err
    finally:
        database.configure("sqlite:///:memory:")
    outside = [p for p in folder.rglob("*") if p != config and folder / "data" not in p.parents
               and p != folder / "data"]
    assert outside == []


# -- property tests of the parsers -------------------------------------------------------------
@pytest.fixture(scope="module")
def tess_file_bytes(mission_sky):
    return mission_sky.file_bytes(mission_sky.files_of("quiet_star")[0].data_uri)


FITS_EXAMPLES, CSV_EXAMPLES, HEADER_EXAMPLES, ROW_EXAMPLES = 150, 150, 300, 200


@settings(max_examples=FITS_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(cut=st.integers(0, 40_000), flips=st.lists(st.tuples(st.integers(0, 40_000),
                                                           st.integers(0, 255)), max_size=6),
       inserted=st.binary(max_size=100))
def test_any_damaged_fits_file_is_read_or_refused_with_a_reason(tess_file_bytes, tmp_path, cut,
                                                                flips, inserted):
    from skyretriever.fitsfile import InvalidFileError, scan_fits
    from skyretriever.observatories.mission_files import read_lightcurve_fits
    from skyretriever.observatories.tess import VirtualTESS

    content = bytearray(tess_file_bytes)
    for position, value in flips:
        if position < len(content):
            content[position] = value
    content = bytes(content[: len(content) - cut % len(content)]) + inserted
    path = tmp_path / "damaged.fits"
    path.write_bytes(content)
    try:
        scan_fits(content)
        frame, headers = read_lightcurve_fits(path, VirtualTESS().lightcurve_layout())
    except InvalidFileError as error:
        assert "damaged.fits" in str(error) or "FITS data" in str(error)
        return
    assert "time" in frame and len(frame) == headers["lightcurve"].get("NAXIS2", len(frame))


@settings(max_examples=CSV_EXAMPLES, deadline=None)
@given(drop=st.sets(st.sampled_from(ZTF_CSV_COLUMNS), max_size=3),
       cells=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(ZTF_CSV_COLUMNS),
                                st.text(max_size=8)), max_size=4),
       tail=st.text(max_size=30))
def test_any_damaged_ztf_answer_is_read_or_refused_with_a_reason(drop, cells, tail):
    from skyretriever.net import BadAnswer
    from skyretriever.observatories.ztf import REQUIRED_COLUMNS, read_ztf_csv

    frame = pd.DataFrame({c: [str(10 + i) for i in range(4)] for c in ZTF_CSV_COLUMNS})
    frame["filtercode"] = "zg"
    for row, column, value in cells:
        frame.loc[row, column] = value
    text = frame.drop(columns=sorted(drop)).to_csv(index=False) + tail
    try:
        parsed = read_ztf_csv(text, where="the answer")
    except BadAnswer as error:
        assert str(error).startswith("the answer")
        return
    assert set(REQUIRED_COLUMNS) <= set(parsed.columns)
    numeric = [c for c in REQUIRED_COLUMNS if c != "filtercode"]
    assert all(pd.api.types.is_numeric_dtype(parsed[c]) for c in numeric)


@settings(max_examples=HEADER_EXAMPLES, deadline=None)
@given(st.text(max_size=40))
def test_retry_after_and_content_range_headers_parse_or_are_ignored(value):
    from skyretriever.net import _content_range, _retry_after_seconds

    seconds = _retry_after_seconds(value)
    assert seconds is None or seconds >= 0
    first, total = _content_range(value)
    assert first is None or (isinstance(first, int) and first >= 0)
    assert total is None or (isinstance(total, int) and total >= 0)


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda children: st.lists(children, max_size=3)
                     | st.dictionaries(st.text(max_size=6), children, max_size=3), max_leaves=12)


@settings(max_examples=ROW_EXAMPLES, deadline=None)
@given(fields=_JSON, data=_JSON)
def test_any_mast_answer_gives_rows_or_a_bad_answer(fields, data):
    from skyretriever.net import BadAnswer
    from skyretriever.observatories.mast_client import _normalize_rows

    try:
        rows = _normalize_rows({"fields": fields, "data": data}, "MAST test")
    except BadAnswer as error:
        assert str(error).startswith("MAST test: the answer's")
        return
    assert isinstance(rows, list) and all(isinstance(row, dict) for row in rows)


def hostile_input_counts() -> dict[str, int]:
    """How many hostile inputs this module tries (for ``bench/reliability.py``)."""
    return {
        "source names": len(HOSTILE_NAMES) + 7,   # + the broken-row catalog's 7 rows
        "configuration files": len(BAD_YAML) + 1,
        "FITS files": len(BROKEN_FITS) + 1,
        "ZTF answers": len(BROKEN_ZTF),
        "database URLs": len(BAD_DATABASE_URLS) + 1,
        "property-test examples (YAML, ids, CSV, FITS, ZTF, headers, MAST rows)": 200 + 300 + 60
        + FITS_EXAMPLES + CSV_EXAMPLES + HEADER_EXAMPLES + ROW_EXAMPLES,
    }
