"""Inputs that must not be trusted (issue 14): each is refused quickly with a short, clear error.

A YAML alias bomb in a configuration file; values of a megabyte in error
messages; catalog names with leading or trailing white space and magnitudes
that are not numbers; a FITS light curve with a cadence written twice; a
``--where`` of a thousand comparisons, and a database that fails a query;
a data root in a system folder.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from skyretriever import Project, storage
from skyretriever.catalogs import Catalog, CatalogError
from skyretriever.cli import main
from skyretriever.models import Source
from skyretriever.parameters import MAX_ALIAS_NODES, ParameterError, bounded_repr, load_yaml
from skyretriever.query import MAX_FILTER_TERMS, FilterError, parse_filter


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- YAML: aliases expanded beyond a budget -----------------------------------------------------
def _alias_bomb(levels: int = 9) -> str:
    """About 400 bytes whose aliases expand to 9**levels values, all inside the project section."""
    letters = "abcdefghijklmnop"
    items = ["&a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        items.append(f"&{letters[level]} [{', '.join(['*' + letters[level - 1]] * 9)}]")
    return "project:\n  name: [" + ", ".join(items) + "]\n"


def test_a_yaml_alias_bomb_is_refused_before_it_expands_naming_the_file(tmp_path, capsys):
    config = tmp_path / "bomb.yaml"
    config.write_text(_alias_bomb())
    assert len(config.read_bytes()) < 600
    started = time.perf_counter()
    code, out, err = _run(capsys, "status", config)
    elapsed = time.perf_counter() - started
    assert code == 1 and out == ""
    # Refused before expanding: about 0.01 s alone; expanded, the nine levels of nine
    # aliases would be 9**9 (387 million) values, minutes and gigabytes. The bound leaves
    # room for a busy machine (0.58 s seen with the whole suite on both cores).
    assert elapsed < 5.0, elapsed
    assert "bomb.yaml" in err and "aliases expand to more than" in err
    assert "line 2" in err and len(err) < 400, err
    assert not (tmp_path / "data").exists()


def test_aliases_within_the_budget_still_load(tmp_path):
    config = tmp_path / "shared.yaml"
    # one anchor shared by two observatories, and a small nested expansion
    config.write_text(textwrap.dedent("""
        defaults: &defaults {wait_time: 0.1, timeout: 5}
        observatories: {tess: *defaults, ztf: {<<: *defaults, bands: [g]}}
        numbers: &n [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        more: [*n, *n, *n, *n, *n]
    """))
    data = load_yaml(config)
    assert data["observatories"]["tess"] == {"wait_time": 0.1, "timeout": 5}
    assert data["observatories"]["ztf"] == {"wait_time": 0.1, "timeout": 5, "bands": ["g"]}
    assert data["more"][4] == list(range(1, 11))


def test_the_alias_budget_counts_values_as_written_out(tmp_path):
    # 11 values per list, (MAX // 11) aliases fit and one more does not
    fit = MAX_ALIAS_NODES // 11
    for count, refused in ((fit, False), (fit + 1, True)):
        config = tmp_path / f"many_{count}.yaml"
        config.write_text("x: &x [" + ", ".join(["1"] * 10) + "]\ny: ["
                          + ", ".join(["*x"] * count) + "]\n")
        if refused:
            with pytest.raises(ParameterError, match=f"many_{count}.yaml.*aliases expand"):
                load_yaml(config)
        else:
            assert len(load_yaml(config)["y"]) == count


# -- error messages show a bounded part of a user value -----------------------------------------
HUGE = "x" * 200_000


def test_bounded_repr_keeps_messages_short_and_small_values_whole():
    assert bounded_repr("soon") == repr("soon")
    assert bounded_repr([1, 2.5, None]) == repr([1, 2.5, None])
    assert len(bounded_repr(HUGE)) <= 200
    assert len(bounded_repr({"k": [HUGE] * 1000})) <= 200
    shared = ["lol"] * 9
    for _ in range(9):                            # 9**10 strings if written out: instant here
        shared = [shared] * 9
    started = time.perf_counter()
    assert len(bounded_repr(shared, limit=80)) <= 80
    assert time.perf_counter() - started < 0.1


@pytest.mark.parametrize("section", [
    {"project": {"name": HUGE}},                          # a validator quoting the value
    {"execution": {"workers": HUGE}},                     # a string where a number belongs
    {"catalog": {"default": "test", HUGE: 1}},            # an unknown key
    {"catalog": {"default": HUGE}},                       # an unknown preset
    {"project": {"name": "huge", "obs_names": ["demo"]},
     "observatories": {"demo": {"wait_time": [HUGE[:5000]] * 50}}},
    {"catalog": {"default": "test", "gaia_tap_url": "ftp://" + HUGE}},
])
def test_configuration_errors_show_a_bounded_part_of_a_huge_value(tmp_path, section):
    import yaml

    config = tmp_path / "huge.yaml"
    config.write_text(yaml.safe_dump({"project": {"name": "huge"}, **section}))
    started = time.perf_counter()
    with pytest.raises(ParameterError) as error:
        Project(cfg_file=config, data_root=str(tmp_path / "data"),
                database_url=f"sqlite:///{tmp_path / 'x.db'}")
    message = str(error.value)
    assert len(message) < 1000, len(message)
    assert "xxxxxxxx" in message                          # the start is shown, to find it
    assert time.perf_counter() - started < 5


def test_a_catalog_error_about_a_huge_name_stays_short(tmp_path):
    catalog = tmp_path / "huge.csv"
    catalog.write_text(f"name,ra,dec\n{'y' * 500_000},1,1\n{'y' * 500_000},2,2\n")
    with pytest.raises(CatalogError) as error:
        Catalog(filename=str(catalog)).load()
    message = str(error.value)
    assert "row 1: duplicate name 'yyyy" in message and len(message) < 800, len(message)


def test_a_filter_error_about_a_huge_name_stays_short():
    from skyretriever.query import MAX_FILTER_LENGTH

    with pytest.raises(FilterError) as error:
        parse_filter("z" * (MAX_FILTER_LENGTH - 10) + " > 1", Source)
    assert "unknown column 'zzzz" in str(error.value) and len(str(error.value)) < 1000


# -- --where bounded, and a database error while querying is one line ---------------------------
def _project_config(tmp_path, database_url, data_root) -> str:
    config = tmp_path / "where.yaml"
    config.write_text(textwrap.dedent(f"""
        project: {{name: where_test, progress: false}}
        database: {{url: "{database_url}"}}
        data_root: "{data_root}"
        catalog: {{default: test, num_sources: 6}}
        execution: {{scheduler: serial}}
    """))
    assert main(["run", str(config)]) == 0
    return str(config)


def _many_terms(count: int) -> str:
    text = " or ".join(f"ra<{index % 10}" for index in range(count))
    assert len(text) < 10_000  # under the length limit: the number of terms is what is refused
    return text


@pytest.mark.parametrize("command", ["sources", "detections"])
def test_a_where_of_a_thousand_comparisons_is_a_clear_error_on_both_databases(
        tmp_path, database_url, data_root, capsys, command):
    config = _project_config(tmp_path, database_url, data_root)
    capsys.readouterr()
    code, out, err = _run(capsys, command, config, "--where", _many_terms(1100))
    assert code == 1 and out == ""
    assert err.startswith("skyretriever: error: --where 'ra<0 or ra<1")
    assert f"more than {MAX_FILTER_TERMS} comparisons" in err
    assert len(err.splitlines()) == 1 and len(err) < 1000
    # the most accepted runs on both databases (SQLite's expression depth is 1,000)
    code, out, err = _run(capsys, command, config, "--where", _many_terms(MAX_FILTER_TERMS),
                          "--format", "csv")
    assert code == 0 and err == ""
    with pytest.raises(FilterError, match="more than 500 comparisons"):
        parse_filter("<".join(["ra", "dec"] * 251), Source)         # each step of a chain counts


@pytest.mark.parametrize("command", [["sources"], ["detections"], ["show", "test_0000001"]])
def test_a_database_error_during_a_query_is_one_clear_line(tmp_path, database_url, data_root,
                                                           capsys, command):
    config = _project_config(tmp_path, database_url, data_root)
    capsys.readouterr()
    engine = sa.create_engine(database_url)
    table = "sources" if command[0] == "show" else (
        "properties" if command[0] == "sources" else "detections")
    with engine.begin() as connection:
        connection.execute(sa.text(f"ALTER TABLE {table} RENAME TO {table}_away"))
    try:
        code, out, err = _run(capsys, command[0], config, *command[1:])
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f"ALTER TABLE {table}_away RENAME TO {table}"))
        engine.dispose()
    assert code == 1 and out == ""
    assert err.startswith("skyretriever: error: the query failed on the database "), err
    assert table in err and "Traceback" not in err and "[SQL:" not in err
    assert len(err.strip().splitlines()) == 1, err


# -- data roots in system folders ---------------------------------------------------------------
@pytest.mark.parametrize("root", ["/", "/usr", "/usr/local/share/stars", "/etc/skyretriever",
                                  "/var/lib/stars", "/proc/self", "/boot/x", "/sys", "/dev/shm/x",
                                  "/lib/stars", "/bin", "/sbin/x"])
def test_a_data_root_in_a_system_folder_is_refused_unless_forced(tmp_path, capsys, monkeypatch,
                                                                 root):
    monkeypatch.delenv("SKYRETRIEVER_ALLOW_SYSTEM_DATA_ROOT", raising=False)
    config = tmp_path / "system.yaml"
    config.write_text(f"project: {{name: system, progress: false}}\ndata_root: \"{root}\"\n"
                      f"database: {{url: \"sqlite:///{tmp_path / 'x.db'}\"}}\n"
                      "catalog: {default: test, num_sources: 2}\n")
    code, out, err = _run(capsys, "status", config)
    assert code == 1 and out == ""
    assert f"data root {root!r}" in err and "SKYRETRIEVER_ALLOW_SYSTEM_DATA_ROOT=1" in err
    assert not (tmp_path / "x.db").exists()
    with pytest.raises(storage.StorageError, match="system folder|root of the file system"):
        storage.configure(root)
    monkeypatch.setenv("SKYRETRIEVER_ALLOW_SYSTEM_DATA_ROOT", "1")
    assert storage.configure(root) == Path(root).resolve()
    storage.configure(tmp_path / "data")


def test_a_symbolic_link_to_a_system_folder_is_refused_and_ordinary_roots_are_kept(tmp_path):
    link = tmp_path / "innocent"
    link.symlink_to("/etc")
    with pytest.raises(storage.StorageError, match=r"really /etc/stars\) is in the system folder /etc"):
        storage.configure(link / "stars")
    for fine in (tmp_path / "data", tmp_path / "usr" / "lib", "/tmp/skyretriever-data",
                 "/var/tmp/stars", "/usrdata/x"):
        assert storage.configure(fine) == Path(fine).resolve()
    storage.configure(tmp_path / "data")


# -- catalog names kept exactly, magnitudes that are not numbers --------------------------------
def _catalog_file(tmp_path, fmt: str, frame: pd.DataFrame) -> str:
    path = tmp_path / f"catalog.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)              # pandas writes " lead" without quotes
    elif fmt == "parquet":
        frame.to_parquet(path)
    else:
        from astropy.table import Table

        table = Table.from_pandas(frame.astype({"mag": str}) if frame["mag"].dtype == object
                                  else frame)
        if fmt == "fits":
            table.write(path, format="fits")
        else:
            table.write(path, format="hdf5", path="catalog", serialize_meta=True)
    return str(path)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "fits", "hdf5"])
def test_names_with_white_space_around_them_are_refused_with_their_row_never_stripped(
        tmp_path, fmt):
    frame = pd.DataFrame({"name": ["lead", " lead", "tab\t", "\u00a0nbsp", "in side", "ok"],
                          "ra": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "dec": [0.0] * 6,
                          "mag": [10.0] * 6})
    if fmt == "fits":  # FITS text is ASCII padded with spaces: only leading ones can be told apart
        frame.loc[2, "name"], frame.loc[3, "name"] = " tab", "  two"
    path = _catalog_file(tmp_path, fmt, frame)
    with pytest.raises(CatalogError) as error:
        Catalog(filename=path).load()
    message = str(error.value)
    shown = {"csv": "' lead'", "parquet": "' lead'", "fits": "' lead'", "hdf5": "' lead'"}[fmt]
    assert f"row 1: name {shown} begins or ends with white space" in message, message
    assert "row 2: name" in message and "row 3: name" in message
    assert "duplicate" not in message and "row 0" not in message and "row 4" not in message
    rows = Catalog(filename=path, bad_rows="skip").get_rows()
    assert [row["name"] for row in rows] == ["lead", "in side", "ok"]
    assert [row["cat_index"] for row in rows] == [0, 4, 5]


def test_csv_fields_may_still_have_spaces_after_commas_except_names(tmp_path):
    path = tmp_path / "spaced.csv"
    path.write_text("name, ra, dec, mag, mag_filter\nstar, 1.5, -2, 12.25, G\nother,3, 4 ,nan,\n")
    rows = Catalog(filename=str(path)).get_rows()
    assert [(r["name"], r["ra"], r["dec"], r["mag"], r["mag_filter"]) for r in rows] == [
        ("star", 1.5, -2.0, 12.25, "G"), ("other", 3.0, 4.0, None, None)]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "hdf5"])
def test_a_magnitude_that_is_not_a_number_is_an_error_with_its_row(tmp_path, fmt):
    frame = pd.DataFrame({"name": ["a", "b", "c", "d", "e"], "ra": [1.0, 2.0, 3.0, 4.0, 5.0],
                          "dec": [0.0] * 5, "mag": ["12.5", "bright", "", "nan", "13"],
                          "mag_err": ["0.1", "0.1", "0.1", "0.1", "n/a"],
                          "pmra": ["1", "2", "3", "fast", "5"]})
    if fmt == "parquet":
        frame["mag"] = frame["mag"].replace("", None)
    path = _catalog_file(tmp_path, fmt, frame)
    with pytest.raises(CatalogError) as error:
        Catalog(filename=path).load()
    message = str(error.value)
    assert "has 3 unusable row(s)" in message, message
    assert "row 1: mag 'bright' is not a number" in message
    assert "row 3: pmra 'fast' is not a number" in message
    assert "row 4: mag_err 'n/a' is not a number" in message
    rows = Catalog(filename=path, bad_rows="skip").get_rows()
    assert [(row["name"], row["mag"], row["mag_err"]) for row in rows] == [
        ("a", 12.5, 0.1), ("c", None, 0.1)]


def test_a_huge_catalog_value_in_a_message_is_bounded(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text(f"name,ra,dec,mag\na,1,1,{'z' * 300_000}\n")
    with pytest.raises(CatalogError) as error:
        Catalog(filename=str(path)).load()
    assert "row 0: mag 'zzz" in str(error.value) and len(str(error.value)) < 600


# -- a cadence written twice in a FITS light curve ----------------------------------------------
@pytest.fixture(scope="module")
def tess_sky():
    from tests.mast_support import small_sky, tess_stars

    return small_sky(tess_stars()[:2])


def _with_repeated_rows(content: bytes, rows: list[int]) -> bytes:
    """The file with each of ``rows`` of its LIGHTCURVE table written again right after itself."""
    import io

    from astropy.io import fits

    with fits.open(io.BytesIO(content)) as hdul:
        data = hdul["LIGHTCURVE"].data
        order = []
        for index in range(len(data)):
            order.append(index)
            if index in rows:
                order.append(index)
        hdul["LIGHTCURVE"].data = data[np.array(order)]
        buffer = io.BytesIO()
        hdul.writeto(buffer)
    return buffer.getvalue()


def test_a_repeated_cadence_in_a_fits_file_is_kept_once_and_counted(tess_sky, tmp_path):
    from skyretriever.observatories.mission_files import read_lightcurve_fits
    from skyretriever.testing.fitsfiles import lightcurve_file

    product = tess_sky.files_of("planet_host")[0]
    original = tmp_path / "original.fits"
    original.write_bytes(lightcurve_file(product, tess_sky))
    doubled = tmp_path / "doubled.fits"
    doubled.write_bytes(_with_repeated_rows(original.read_bytes(), [3, 40]))
    clean, clean_headers = read_lightcurve_fits(original)
    frame, headers = read_lightcurve_fits(doubled)
    assert len(frame) == len(clean) and frame["cadenceno"].is_unique
    pd.testing.assert_frame_equal(frame, clean)
    assert headers["repeated_cadences_dropped"] == 2
    assert clean_headers["repeated_cadences_dropped"] == 0


def test_a_downloaded_file_with_a_repeated_cadence_gives_each_point_once(tess_sky, data_root):
    from skyretriever.observatories import VirtualTESS
    from skyretriever.testing import SimulatedArchives
    from tests.mast_support import QUICK, catalog_rows, tess_stars

    star = tess_stars()[0]
    products = tess_sky.files_of(star.name)
    served = {product.data_uri: _with_repeated_rows(tess_sky.file_bytes(product.data_uri),
                                                     [0, 7, 8])
              for product in products}
    results = {}
    for label, files in (("clean", {}), ("doubled", served)):
        with SimulatedArchives(tess_sky) as archives:
            archives.mast.services[0].served_files.update(files)
            obs = VirtualTESS(**archives.observatory_kwargs(**QUICK, use_cloud=False))
            [row] = catalog_rows([star])
            obs.prepare_download([row])
            raw = obs.download(row)
            results[label] = (raw, obs.reduce(raw))
    clean_raw, clean_curves = results["clean"]
    raw, curves = results["doubled"]
    assert len(raw.data) == len(clean_raw.data)
    assert not raw.data.duplicated(["sector", "cadenceno"]).any()
    dropped = [headers["repeated_cadences_dropped"] for headers in raw.altdata["headers"].values()]
    assert dropped == [3] * len(products)
    assert [lc.num_points for lc in curves] == [lc.num_points for lc in clean_curves]


def test_a_catalog_without_the_columns_asked_for_lists_a_bounded_part_of_its_header(tmp_path):
    path = tmp_path / "wide.csv"        # no header: the first row of a long table taken for one
    path.write_text(",".join(f"value_{index:05d}_{'w' * 40}" for index in range(5000)) + "\n"
                    + ",".join("1" for _ in range(5000)) + "\n")
    for kwargs, start in (({}, "catalog has no 'name' and no 'ra' and no 'dec' column"),
                          ({"columns": {"name": "n" * 100_000}},
                           "catalog.columns.name names column 'nnnn"),
                          ({"columns": {key: f"value_{index:05d}_{'w' * 40}" for index, key in
                                        enumerate(("name", "ra", "dec"))},
                            "extra_columns": ["e" * 100_000]},
                           "catalog.extra_columns names columns")):
        with pytest.raises(CatalogError) as error:
            Catalog(filename=str(path), **kwargs).load()
        message = str(error.value)
        assert message.startswith(start) and len(message) < 1500, (start, len(message))


def hostile_input_counts() -> dict[str, int]:
    """How many hostile inputs this module tries (for ``bench/reliability.py``)."""
    return {
        "configuration files": 3 + 6,             # the bomb, the budget's two, six huge values
        "source names": 3 * 4 + 1,                # padded names in four formats, a huge name
        "catalog values": 3 * 3 + 1 + 3,          # text magnitudes, a huge one, wide headers
        "FITS files": 1 + 2,                      # repeated cadences read, then downloaded
        "query filters": 2 * 2 * 2 + 1,           # 1,100 comparisons, a huge column name
        "database failures during queries": 3 * 2,
        "data roots": 12 + 1,                     # system folders, a link to /etc
    }
