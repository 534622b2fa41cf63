"""The fast FITS reader agrees with astropy, and refuses files that are not whole."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from skyretriever.fitsfile import InvalidFileError, read_fits_table, scan_fits, validate_fits


def write(path: Path, hdus: list) -> Path:
    fits.HDUList(hdus).writeto(path, checksum=True)
    return path


def table_of_every_kind(rows: int = 50) -> fits.BinTableHDU:
    rng = np.random.default_rng(1)
    columns = [
        fits.Column(name="TIME", format="D", array=np.linspace(0, 1, rows)),
        fits.Column(name="FLUX", format="E", array=rng.normal(size=rows).astype(np.float32)),
        fits.Column(name="QUALITY", format="J", array=rng.integers(0, 4096, rows)),
        fits.Column(name="SHORT", format="I", array=rng.integers(-300, 300, rows)),
        fits.Column(name="LONG", format="K", array=rng.integers(0, 2**40, rows)),
        fits.Column(name="BYTE", format="B", array=rng.integers(0, 255, rows)),
        fits.Column(name="FLAG", format="L", array=rng.random(rows) < 0.5),
        fits.Column(name="LABEL", format="6A", array=[f"r{i}" for i in range(rows)]),
        fits.Column(name="PAIR", format="2E", array=rng.normal(size=(rows, 2))),
    ]
    table = fits.BinTableHDU.from_columns(columns, name="LIGHTCURVE")
    table.header["TIMEDEL"] = (0.00138888, "[d] time resolution of data")
    table.header["LONGSTR"] = "x" * 100  # written with CONTINUE cards
    return table


def test_tables_read_as_astropy_reads_them(tmp_path):
    primary = fits.PrimaryHDU()
    primary.header["SECTOR"] = 14
    primary.header["OBJECT"] = "TIC 'quoted' 1"
    primary.header["RA_OBJ"] = 12.5
    primary.header["CRMITEN"] = False
    path = write(tmp_path / "t.fits", [primary, table_of_every_kind(),
                                       fits.ImageHDU(np.ones((3, 3), np.int32), name="APERTURE")])
    columns, hdus = read_fits_table(path, "LIGHTCURVE")
    with fits.open(path) as hdul:
        expected = hdul["LIGHTCURVE"].data
        for name in expected.columns.names:
            ours, theirs = columns[name], np.asarray(expected[name])
            if theirs.dtype.kind in "SU":
                assert list(ours) == [str(v) for v in theirs]
            else:
                np.testing.assert_array_equal(ours, theirs)
                assert ours.dtype.isnative
        assert [hdu.name for hdu in hdus] == [hdu.name for hdu in hdul]
    assert hdus[0].header["SECTOR"] == 14 and hdus[0].header["OBJECT"] == "TIC 'quoted' 1"
    assert hdus[0].header["RA_OBJ"] == 12.5 and hdus[0].header["CRMITEN"] is False
    assert hdus[1].header["LONGSTR"] == "x" * 100
    described = hdus[1].described()
    assert "TTYPE1" not in described and "CHECKSUM" not in described
    assert described["TIMEDEL"] == pytest.approx(0.00138888)


def test_scaled_columns_fall_back_to_astropy(tmp_path):
    column = fits.Column(name="COUNTS", format="I", bzero=32768,
                         array=np.array([0, 40000, 65535], dtype=np.uint16))
    path = write(tmp_path / "u.fits", [fits.PrimaryHDU(),
                                       fits.BinTableHDU.from_columns([column], name="DATA")])
    columns, _ = read_fits_table(path, "DATA")
    np.testing.assert_array_equal(columns["COUNTS"], [0, 40000, 65535])


def test_missing_tables_are_reported(tmp_path):
    path = write(tmp_path / "p.fits", [fits.PrimaryHDU()])
    with pytest.raises(InvalidFileError, match="no binary table named 'LIGHTCURVE'"):
        read_fits_table(path, "LIGHTCURVE")


def test_only_whole_files_are_valid(tmp_path: Path):
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table_of_every_kind(500)]).writeto(buffer)
    content = buffer.getvalue()
    good = tmp_path / "good.fits"
    good.write_bytes(content)
    validate_fits(good)
    assert [hdu.name for hdu in scan_fits(content)] == ["PRIMARY", "LIGHTCURVE"]
    for name, data, message in (
        ("cut.fits", content[:-2880], "cut short"),
        ("header.fits", content[:1000], "ends inside the header"),
        ("page.fits", b"<html>" + b" " * 5000, "does not start with SIMPLE"),
        ("extra.fits", content + b"garbage" * 10, "HDU 2 does not start with XTENSION"),
        ("empty.fits", b"", "empty file"),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InvalidFileError, match=message):
            validate_fits(path)


@pytest.mark.parametrize("cadences, times, expected", [
    ([1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0], [False] * 4),               # increasing: nothing
    ([3, 1, 2, 3], [3.0, 1.0, 2.0, 3.5], [False, False, False, True]),  # out of order, twice
    ([1, 2, 3, 4], [1.0, 2.0, 2.0, np.nan], [False, False, True, False]),  # TIME repeats
    ([7], [np.nan], [False]),
])
def test_repeated_cadences_are_found_in_any_order(cadences, times, expected):
    from skyretriever.fitsfile import repeated_cadences

    found = repeated_cadences({"CADENCENO": np.array(cadences), "TIME": np.array(times)})
    assert found.tolist() == expected
