"""Sexagesimal RA and Dec in catalog files: parsed by astropy, junk named by file, row and column."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from skyretriever.catalogs import Catalog, CatalogError


def positions(catalog: Catalog) -> dict[str, tuple[float, float]]:
    return {row["name"]: (row["ra"], row["dec"]) for row in catalog.get_rows()}


def test_sexagesimal_ra_and_dec_are_read_as_degrees(tmp_path):
    path = tmp_path / "sexagesimal.csv"
    path.write_text("name,ra,dec\n"
                    "letters,12h30m00s,+45d30m00s\n"
                    "colons,12:30:00.0,-05:30:00\n"
                    "spaces,06 15 36,-00 30 00\n"
                    "degrees,187.5,-5.5\n"
                    "degree letters,187d30m00s,10d\n")
    found = positions(Catalog(filename=str(path)).load())
    assert found["letters"] == (187.5, 45.5)
    assert found["colons"] == (187.5, -5.5)
    assert found["spaces"] == pytest.approx((93.9, -0.5), abs=1e-12)
    assert found["degrees"] == (187.5, -5.5)
    # unit letters win over the column's default unit: 187d30m is degrees, not hours
    assert found["degree letters"] == (187.5, 10.0)


def test_a_sexagesimal_catalog_in_mapped_columns_of_a_fits_file(tmp_path):
    path = tmp_path / "sexagesimal.fits"
    Table({"ID": ["a", "b"], "RAJ2000": ["00h00m36s", "23:59:24"],
           "DEJ2000": ["-89d59m24s", "+89:59:24"]}).write(path)
    catalog = Catalog(filename=str(path), columns={"name": "ID", "ra": "RAJ2000",
                                                   "dec": "DEJ2000"})
    found = positions(catalog)
    np.testing.assert_allclose(found["a"], (0.15, -89.99), rtol=0, atol=1e-9)
    np.testing.assert_allclose(found["b"], (359.85, 89.99), rtol=0, atol=1e-9)


def test_junk_is_an_error_naming_the_file_row_and_column(tmp_path):
    path = tmp_path / "junk.csv"
    path.write_text("ID,RAJ2000,DEJ2000\n"
                    "good,12h30m00s,+45d30m00s\n"
                    "bad ra,12h30m garbage,+45d30m00s\n"
                    "bad dec,12:30:00,minus five\n"
                    "bad minutes,12h61m00s,0\n"
                    "full circle,24h00m00s,0\n")
    columns = {"name": "ID", "ra": "RAJ2000", "dec": "DEJ2000"}
    with pytest.raises(CatalogError) as error:
        Catalog(filename=str(path), columns=columns).load()
    message = str(error.value)
    assert "junk.csv" in message and "4 unusable row(s)" in message
    assert ("row 1: RA is missing or not a number: column 'RAJ2000' has '12h30m garbage', "
            "neither degrees nor sexagesimal (such as 12h30m00s or 12:30:00.0)") in message
    assert ("row 2: Dec is missing or not a number: column 'DEJ2000' has 'minus five', "
            "neither degrees nor sexagesimal (such as +45d30m00s or -05:30:00)") in message
    assert "row 3: RA is missing or not a number: column 'RAJ2000' has '12h61m00s'" in message
    assert "row 4: RA outside 0 to 360 degrees" in message
    assert "row 0" not in message
    kept = Catalog(filename=str(path), columns=columns, bad_rows="skip")
    assert positions(kept) == {"good": (187.5, 45.5)}
    assert [bad.row for bad in kept.bad_rows] == [1, 2, 3, 4]


def test_empty_and_nan_positions_are_missing_not_junk(tmp_path):
    path = tmp_path / "missing.csv"
    path.write_text("name,ra,dec\nfine,12:00:00,0\nno ra,,1\nnan dec,12:00:00,nan\n")
    with pytest.raises(CatalogError) as error:
        Catalog(filename=str(path)).load()
    message = str(error.value)
    assert "row 1: RA is missing or not a number\n" in message
    assert message.rstrip().splitlines()[2] == "  row 2: Dec is missing or not a number"
    assert "neither degrees" not in message
