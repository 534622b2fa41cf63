"""FITS header values as the reader parses them, and the download validator's lighter scan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from skyretriever import fitsfile
from skyretriever.fitsfile import InvalidFileError, scan_fits, validate_fits


def _string_value_by_character(text: str) -> str:
    """The reader's string values as it found them before (a loop over the characters)."""
    value, position = [], 1
    while position < len(text):
        char = text[position]
        if char == "'":
            if text[position + 1 : position + 2] == "'":
                value.append("'")
                position += 2
                continue
            break
        value.append(char)
        position += 1
    return "".join(value).rstrip()


@pytest.mark.parametrize("field, value", [
    ("'TESS    '           / telescope", "TESS"),
    ("'O''Brien'", "O'Brien"),
    ("''", ""),
    ("'unclosed  ", "unclosed"),
    ("'a''' / quote then end", "a'"),
    ("'x / not a comment'", "x / not a comment"),
    ("                   T / flag", True),
    ("                  42", 42),
    ("            -1.5D+03", -1500.0),
    ("    NaN-ish", "NaN-ish"),
    ("", None),
])
def test_card_values(field, value):
    assert fitsfile._card_value(field) == value


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="'ab /&\t x", max_size=40))
def test_string_values_as_before(field):
    text = "'" + field
    assert fitsfile._card_value(text) == _string_value_by_character(text.strip())


def test_the_validator_scans_the_layout_only_and_refuses_what_the_full_scan_refuses(tmp_path):
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="TIME", format="D", array=np.arange(100.0))], name="LIGHTCURVE")
    table.header["LONGSTR"] = "x" * 100                         # CONTINUE cards
    path = Path(tmp_path / "ok.fits")
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    content = path.read_bytes()
    layout = fitsfile._scan(content, "ok", layout_only=True)
    full = scan_fits(content)
    assert [(h.data_start, h.data_size) for h in layout] == [(h.data_start, h.data_size)
                                                              for h in full]
    assert set(layout[1].header) == {"XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2",
                                     "PCOUNT", "GCOUNT"}
    assert full[1].header["LONGSTR"] == "x" * 100
    validate_fits(path)
    for name, broken in (("cut.fits", content[:-2880]), ("html.fits", b"<html>" + content[6:]),
                         ("extra.fits", content + b"\0" * 10)):
        (tmp_path / name).write_bytes(broken)
        with pytest.raises(InvalidFileError):
            scan_fits(tmp_path / name)
        with pytest.raises(InvalidFileError):
            validate_fits(tmp_path / name)
