"""Catalogs: four file formats, the column map, the synthetic catalog, bad rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from skyretriever.catalogs import Catalog, CatalogError


def _table() -> pd.DataFrame:
    return pd.DataFrame({
        "source_id": ["A", "B", "C"],
        "RA_deg": [10.5, 200.25, 359.9],
        "DE_deg": [-5.0, 45.5, 89.0],
        "Gmag": [12.1, 15.5, np.nan],
        "TIC": ["TIC 25155310", "", "7"],
        "teff": [5800.0, 4100.0, 3500.0],
    })


COLUMNS = {"name": "source_id", "ra": "RA_deg", "dec": "DE_deg", "mag": "Gmag", "tic_id": "TIC"}


def _write(frame: pd.DataFrame, path, fmt: str) -> None:
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path)
    else:
        table = Table.from_pandas(frame.astype({"TIC": str, "source_id": str}))
        if fmt == "fits":
            table.write(path, format="fits")
        else:
            table.write(path, format="hdf5", path="catalog", serialize_meta=True)


@pytest.mark.parametrize("fmt,suffix", [("csv", ".csv"), ("fits", ".fits"), ("hdf5", ".h5"),
                                        ("parquet", ".parquet")])
def test_every_format_gives_the_same_rows(tmp_path, fmt, suffix):
    path = tmp_path / f"targets{suffix}"
    _write(_table(), path, fmt)
    catalog = Catalog(filename=str(path), columns=COLUMNS, mag_filter="Gaia_G",
                      hdf5_path="catalog" if fmt == "hdf5" else None)
    assert len(catalog) == 3
    rows = catalog.get_rows()
    assert [r["name"] for r in rows] == ["A", "B", "C"]
    assert [r["ra"] for r in rows] == [10.5, 200.25, 359.9]
    assert rows[0]["mag"] == 12.1 and rows[2]["mag"] is None
    assert [r["tic_id"] for r in rows] == [25155310, None, 7]
    assert rows[1]["extra"] == {"teff": 4100.0}
    assert rows[1]["mag_filter"] == "Gaia_G" and rows[1]["cat_index"] == 1
    assert catalog.get_row(-1)["name"] == "C"
    assert isinstance(catalog.get_row(0, output="series"), pd.Series)


def test_columns_with_standard_names_need_no_map(tmp_path):
    path = tmp_path / "plain.csv"
    pd.DataFrame({"name": [1, 2], "ra": [1.0, 2.0], "dec": [3.0, 4.0], "kic_id": [11904151, None],
                  "gaia_id": [4295806720, 3]}).to_csv(path, index=False)
    rows = Catalog(filename=str(path)).get_rows()
    assert [r["name"] for r in rows] == ["1", "2"]
    assert rows[0]["kic_id"] == 11904151 and rows[1]["kic_id"] is None
    assert rows[0]["gaia_id"] == 4295806720


def test_a_missing_or_wrong_column_is_named(tmp_path):
    path = tmp_path / "t.csv"
    _table().to_csv(path, index=False)
    with pytest.raises(CatalogError, match="no 'name' and no 'ra' and no 'dec' column \\(3 missing\\); set catalog.columns.name"):
        Catalog(filename=str(path)).load()
    with pytest.raises(CatalogError, match="columns.ra names column 'RA', which the catalog"):
        Catalog(filename=str(path), columns={**COLUMNS, "ra": "RA"}).load()
    with pytest.raises(CatalogError, match="does not exist"):
        Catalog(filename=str(tmp_path / "nothing.csv")).load()
    (tmp_path / "t.xyz").write_text("x")
    with pytest.raises(CatalogError, match="file_format"):
        Catalog(filename=str(tmp_path / "t.xyz")).load()


def test_bad_rows_are_reported_with_their_numbers(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({
        "name": ["ok", None, "ra", "dec", "ok", "nan"],
        "ra": [1.0, 2.0, 400.0, 3.0, 4.0, np.nan],
        "dec": [1.0, 2.0, 3.0, -91.0, 5.0, 6.0],
    }).to_csv(path, index=False)
    with pytest.raises(CatalogError) as error:
        Catalog(filename=str(path)).load()
    message = str(error.value)
    assert "4 unusable row(s)" not in message
    for expected in ("row 1: missing name", "row 2: RA outside 0 to 360",
                     "row 3: Dec outside -90 to +90", "row 4: duplicate name 'ok' (first at row 0)",
                     "row 5: RA is missing", "catalog.bad_rows: skip"):
        assert expected in message
    catalog = Catalog(filename=str(path), bad_rows="skip").load()
    assert [r["name"] for r in catalog.get_rows()] == ["ok"]
    assert [str(b) for b in catalog.bad_rows][0] == "row 1: missing name"


def test_the_synthetic_catalog_is_deterministic_in_any_slice():
    catalog = Catalog(default="test", num_sources=1_000_000, seed=3)
    assert len(catalog) == 1_000_000
    whole = catalog.get_rows(0, 30)
    pieces = [row for rows in catalog.iter_slices(0, 30, size=7) for row in rows]
    assert whole == pieces
    assert catalog.get_rows(999_998) == Catalog(default="test", num_sources=1_000_000,
                                                seed=3).get_rows(999_998)
    ras = np.array([r["ra"] for r in catalog.get_rows(0, 5000)])
    decs = np.array([r["dec"] for r in catalog.get_rows(0, 5000)])
    assert 0 <= ras.min() and ras.max() < 360 and -90 <= decs.min() and decs.max() <= 90
    # uniform on the sphere: about half the stars within 30 degrees of the equator
    assert 0.45 < np.mean(np.abs(decs) < 30) < 0.55
    assert whole != Catalog(default="test", num_sources=30, seed=4).get_rows()
    assert Catalog(default="test", num_sources=10).catalog_hash != catalog.catalog_hash


def test_the_demo_catalog_ships_and_loads():
    catalog = Catalog(default="demo")
    assert len(catalog) == 200
    assert catalog.get_row(0)["name"] == "DEMO-0001"
    assert catalog.bad_rows == []


def test_a_run_of_an_empty_catalog_is_refused_with_a_message(project_factory, tmp_path):
    from skyretriever.catalogs.errors import CatalogError

    empty = tmp_path / "empty.csv"
    empty.write_text("name,ra,dec\n")
    with pytest.raises(CatalogError, match=r"catalog file '.*empty\.csv' has no rows to run"):
        project_factory(catalog_kwargs={"filename": str(empty)}).run()
    empty.write_text("name,ra,dec\nS1,not a number,5\n")
    with pytest.raises(CatalogError, match=r"has no rows to run \(1 bad row"):
        project_factory(catalog_kwargs={"filename": str(empty), "bad_rows": "skip"}).run()
    one = tmp_path / "one.csv"
    one.write_text("name,ra,dec\nS1,10,5\n")
    assert project_factory(catalog_kwargs={"filename": str(one)}).run().counts["sources"] == 1


def test_every_missing_column_is_reported_at_once_with_the_columns_found(tmp_path):
    from skyretriever.catalogs.errors import CatalogError

    path = tmp_path / "cols.csv"
    path.write_text("id,x,y\nS1,1,2\n")
    with pytest.raises(CatalogError) as caught:
        Catalog(filename=str(path)).load()
    message = str(caught.value)
    assert "no 'name' and no 'ra' and no 'dec' column (3 missing)" in message
    assert "catalog.columns.name, catalog.columns.ra, catalog.columns.dec" in message
    assert message.endswith("columns it has: id, x, y")


@pytest.mark.parametrize("separator", [";", "\t", "|"])
def test_other_separators_are_recognised(tmp_path, separator):
    path = tmp_path / "stars.csv"
    path.write_text(f"# my stars\nname{separator}ra{separator}dec{separator}mag\n"
                    f"S1{separator}10.5{separator}-5.25{separator}14.0\n"
                    f"S2{separator}11{separator}6{separator}15\n")
    rows = Catalog(filename=str(path)).load().get_rows()
    assert [(r["name"], r["ra"], r["dec"], r["mag"]) for r in rows] == [
        ("S1", 10.5, -5.25, 14.0), ("S2", 11.0, 6.0, 15.0)]


def test_a_magnitude_column_left_unmapped_is_named_in_a_warning(tmp_path, caplog):
    path = tmp_path / "gaia.csv"
    path.write_text("name,ra,dec,phot_g_mean_mag\nS1,10,5,14.2\n")
    with caplog.at_level("WARNING", logger="skyretriever.catalogs.catalog"):
        rows = Catalog(filename=str(path)).load().get_rows()
    assert rows[0]["mag"] is None
    assert "phot_g_mean_mag look(s) like a magnitude" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="skyretriever.catalogs.catalog"):
        mapped = Catalog(filename=str(path), columns={"mag": "phot_g_mean_mag"}).load()
    assert mapped.get_rows()[0]["mag"] == 14.2 and "magnitude" not in caplog.text
