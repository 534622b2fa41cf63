"""The missions' light-curve files (TESS SPOC, Kepler, K2): their constants, layout checks and reader.

:func:`read_lightcurve_fits` reads a file's ``LIGHTCURVE`` table into a
table with the full barycentric date added. Nothing is taken on trust: with a
:class:`LightcurveLayout` the file must be one of the mission (``TELESCOP``,
``MISSION``, the sector, quarter or campaign keyword) with the columns and
units the reduction reads (:func:`check_layout`), and :func:`check_target`
refuses a file of another target than the one asked for.

Examples
--------
>>> layout = LightcurveLayout("TESS", "TESS", "SECTOR", BJDREF_TESS, ("TIME", "PDCSAP_FLUX"))
>>> frame, headers = read_lightcurve_fits("tess2018206045859-s0001-..._lc.fits", layout)  # doctest: +SKIP
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from skyretriever.fitsfile import InvalidFileError, drop_repeated_cadences, read_fits_table
from skyretriever.healpix import angular_distance

__all__ = [
    "BJDREF_KEPLER",
    "BJDREF_TESS",
    "KEPLER_QUALITY_PRESETS",
    "KEPLER_ZERO_POINT",
    "MJD_OFFSET",
    "TESS_QUALITY_PRESETS",
    "TESS_ZERO_POINT",
    "LightcurveLayout",
    "WrongTargetError",
    "check_layout",
    "check_target",
    "header_target_id",
    "read_lightcurve_fits",
    "trailing_number",
]

#: Integer part of the reference BJD of TESS times (BTJD) and of Kepler/K2 times (BKJD).
BJDREF_TESS = 2457000
BJDREF_KEPLER = 2454833
MJD_OFFSET = 2400000.5
#: (magnitude, flux in e-/s): a TESS magnitude 10 star gives about 15,000 e-/s
#: (Vanderspek et al. 2018); a Kepler magnitude 12 star about 1.74e5 e-/s (Kepler
#: Instrument Handbook). Magnitudes made from fluxes with these are approximate.
TESS_ZERO_POINT = (10.0, 15000.0)
KEPLER_ZERO_POINT = (12.0, 1.74e5)
#: Quality masks of lightkurve 2.6, by name.
TESS_QUALITY_PRESETS = {"none": 0, "default": 17087, "hard": 24319, "hardest": 65535}
KEPLER_QUALITY_PRESETS = {"none": 0, "default": 1130799, "hard": 1664431, "hardest": 2096639}


@dataclass(frozen=True)
class LightcurveLayout:
    """What a mission's light-curve files hold; :func:`read_lightcurve_fits` checks files against it.

    Examples
    --------
    >>> LightcurveLayout("TESS", "TESS", "SECTOR", BJDREF_TESS, ("TIME", "QUALITY")).telescope
    'TESS'
    """

    #: The mission as MAST names it (``TESS``, ``Kepler``, ``K2``; ``MISSION`` when a file says).
    mission: str
    #: The primary header's ``TELESCOP``.
    telescope: str
    #: The primary header keyword naming the sector, quarter or campaign.
    sequence_keyword: str
    #: ``BJDREFI``: TIME is BJD minus this.
    bjd_reference: int
    #: Columns of the ``LIGHTCURVE`` table the reduction reads.
    columns: tuple[str, ...]


#: Units a flux column may be in (spaces removed, lower case): electrons per second.
_FLUX_UNITS = frozenset({"e-/s", "e/s", "electrons/s", "electron/s", "e-s-1", "e-s**-1",
                         "electrons/sec", "e-/sec"})
_SEQUENCE_KEYWORDS = ("SECTOR", "QUARTER", "CAMPAIGN")
_BJD_MINUS = re.compile(r"bjd-(\d+)")


def _column_units(header: dict[str, Any]) -> dict[str, str | None]:
    """Each column's ``TUNITn`` (``None`` where it has none), by ``TTYPEn``."""
    units = {}
    for number in range(1, int(header.get("TFIELDS") or 0) + 1):
        name = str(header.get(f"TTYPE{number}", "")).strip()
        unit = header.get(f"TUNIT{number}")
        units[name] = None if unit is None or str(unit).strip() == "" else str(unit).strip()
    return units


def check_layout(path: str | Path, primary: dict[str, Any], table: dict[str, Any],
                 layout: LightcurveLayout) -> None:
    """Raise :class:`InvalidFileError` unless a file's headers are those of ``layout``'s mission.

    The mission (``TELESCOP``, ``MISSION`` and the sequence keyword: a Kepler
    file is not taken for a TESS or K2 one), the columns the reduction reads,
    and their units (TIME in days from the mission's BJD reference, fluxes in
    e-/s) are checked. The message names the file and what is wrong.
    """
    where = f"{path}: not a {layout.mission} light curve"
    telescope = str(primary.get("TELESCOP") or table.get("TELESCOP") or "").strip()
    if telescope.lower() != layout.telescope.lower():
        raise InvalidFileError(f"{where}: TELESCOP is {telescope!r}, expected "
                               f"{layout.telescope!r} (a file of another mission)")
    mission = primary.get("MISSION")
    if mission is not None and str(mission).strip().lower() != layout.mission.lower():
        raise InvalidFileError(f"{where}: MISSION is {str(mission).strip()!r}, expected "
                               f"{layout.mission!r} (a file of another mission)")
    if not isinstance(primary.get(layout.sequence_keyword), int):
        others = [k for k in _SEQUENCE_KEYWORDS if k != layout.sequence_keyword and k in primary]
        hint = (f"; it has {others[0]} = {primary[others[0]]!r} (a file of another mission)"
                if others else "")
        raise InvalidFileError(f"{where}: the primary header has no whole-number "
                               f"{layout.sequence_keyword}{hint}")
    units = _column_units(table)
    missing = [column for column in layout.columns if column not in units]
    if missing:
        raise InvalidFileError(f"{where}: the LIGHTCURVE table lacks the column(s) "
                               f"{', '.join(missing)} (it has {', '.join(units) or 'none'})")
    reference = table.get("BJDREFI")
    if not isinstance(reference, int) or reference != layout.bjd_reference:
        raise InvalidFileError(f"{where}: BJDREFI is {reference!r}, expected "
                               f"{layout.bjd_reference} (TIME would be read on the wrong clock)")
    time_unit = table.get("TIMEUNIT")
    if time_unit is not None and str(time_unit).strip().lower() not in ("d", "day", "days"):
        raise InvalidFileError(f"{where}: TIMEUNIT is {time_unit!r}, expected 'd' (days)")
    unit = units.get("TIME")
    if unit is not None:
        plain = unit.lower().replace(" ", "")
        match = _BJD_MINUS.search(plain)
        if match is not None and int(match.group(1)) != layout.bjd_reference:
            raise InvalidFileError(f"{where}: TIME is in {unit!r}, expected BJD - "
                                   f"{layout.bjd_reference}")
        if match is None and plain.split(",")[-1] not in ("d", "day", "days"):
            raise InvalidFileError(f"{where}: TIME is in {unit!r}, expected days "
                                   f"(BJD - {layout.bjd_reference})")
    for column in layout.columns:
        if "FLUX" not in column or units.get(column) is None:
            continue
        if units[column].lower().replace(" ", "") not in _FLUX_UNITS:
            raise InvalidFileError(f"{where}: {column} is in {units[column]!r}, expected e-/s")


class WrongTargetError(InvalidFileError):
    """A whole, valid light-curve file of another target than the one asked for."""


_TRAILING_NUMBER = re.compile(r"(\d+)\s*$")


def trailing_number(text: str | None) -> int | None:
    """The number ending ``text`` (``'TIC 25155310'`` gives 25155310), or ``None``.

    Examples
    --------
    >>> trailing_number("KIC 757076"), trailing_number("no id")
    (757076, None)
    """
    match = _TRAILING_NUMBER.search(text or "")
    return int(match.group(1)) if match else None


def header_target_id(primary: dict[str, Any], keyword: str) -> int | None:
    """The target id a file's primary header gives: ``keyword`` (TICID, KEPLERID), else the
    number ending ``OBJECT`` ('TIC 25155310', 'KIC 757076'); ``None`` if neither."""
    value = primary.get(keyword)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return trailing_number(str(primary.get("OBJECT") or ""))


def check_target(path: str | Path, primary: dict[str, Any], keyword: str,
                 expected_id: int | None, position: tuple[float, float] | None,
                 radius: float, asked: str) -> None:
    """Raise :class:`WrongTargetError` unless a file is of the target asked for.

    With ``expected_id`` (the target's TIC, KIC or EPIC id) the header's id
    (``keyword``, else ``OBJECT``) must be it; without one, or when the header has
    no id, ``RA_OBJ``/``DEC_OBJ`` must be within ``radius`` arcsec of ``position``.
    ``asked`` names the source in the message.

    Examples
    --------
    >>> check_target("f.fits", {"TICID": 7, "OBJECT": "TIC 7"}, "TICID", 8, None, 10.0, "'a'")
    Traceback (most recent call last):
    ...
    skyretriever.observatories.mission_files.WrongTargetError: f.fits is a light curve of TICID 7 (OBJECT 'TIC 7'), not of TICID 8 asked for source 'a': not stored
    """
    found = header_target_id(primary, keyword)
    if expected_id is not None and found is not None:
        if found != expected_id:
            raise WrongTargetError(
                f"{path} is a light curve of {keyword} {found} (OBJECT "
                f"{str(primary.get('OBJECT') or '').strip()!r}), not of {keyword} {expected_id} "
                f"asked for source {asked}: not stored")
        return
    ra, dec = primary.get("RA_OBJ"), primary.get("DEC_OBJ")
    if position is None or not isinstance(ra, (int, float)) or not isinstance(dec, (int, float)):
        return
    distance = float(angular_distance(position[0], position[1], float(ra), float(dec))) * 3600.0
    if not distance <= radius:
        raise WrongTargetError(
            f"{path} is a light curve of a target at RA_OBJ {float(ra):.6f}, DEC_OBJ "
            f"{float(dec):.6f} ({keyword} {found}), {distance:.1f} arcsec from source {asked} "
            f"at {position[0]:.6f}, {position[1]:.6f} (match_radius {radius:g}): not stored")


def read_lightcurve_fits(path: str | Path, layout: LightcurveLayout | None = None,
                         content: bytes | None = None
                         ) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Read a TESS, K2 or Kepler light-curve file: its table (every row) and its headers.

    Column names are lower-cased; ``bjd`` (full barycentric Julian date,
    TDB), ``mjd`` (that date minus 2400000.5) and ``exptime`` (the cadence in
    seconds, from ``TIMEDEL``) are added. Rows with NaN ``TIME`` are kept
    (reduction drops them); a row repeating an earlier row's cadence (``CADENCENO``
    or ``TIME``) is dropped and counted in ``repeated_cadences_dropped``, kept with
    the headers in the raw data's provenance. Headers lose their table-layout and
    checksum cards.
    With ``layout``, the file must be one of that mission (:func:`check_layout`).
    With ``content``, the file's bytes are those (``path`` names it in messages).

    Returns
    -------
    frame, headers
        The table, and ``{"primary": {...}, "lightcurve": {...}}`` header values
        (with ``"repeated_cadences_dropped"``: rows left out as repeats).

    Raises
    ------
    skyretriever.fitsfile.InvalidFileError
        If the file is not whole, has no ``LIGHTCURVE`` table with a ``TIME``
        column, or is not of ``layout``'s mission, columns and units.

    Examples
    --------
    >>> frame, headers = read_lightcurve_fits("tess2018206045859-s0001-..._lc.fits")  # doctest: +SKIP
    >>> headers["primary"]["SECTOR"], frame[["time", "bjd", "pdcsap_flux", "quality"]]   # doctest: +SKIP
    """
    columns, hdus = read_fits_table(path, "LIGHTCURVE", content)
    columns, repeated = drop_repeated_cadences(columns)
    table = next(hdu for hdu in hdus if hdu.name == "LIGHTCURVE")
    if "TIME" not in columns:
        raise InvalidFileError(f"{path}: the LIGHTCURVE table has no TIME column")
    if layout is not None:
        check_layout(path, hdus[0].header, table.header, layout)
    data = {name.lower(): values for name, values in columns.items() if values.ndim == 1}
    header = table.header
    reference = float(header.get("BJDREFI", 0)) + float(header.get("BJDREFF", 0.0))
    timedel = header.get("TIMEDEL")
    # Every column given at once: the table is built in one step, not grown column by column.
    data["bjd"] = np.asarray(data["time"], dtype=float) + reference
    data["mjd"] = data["bjd"] - MJD_OFFSET
    data["exptime"] = np.full(len(data["bjd"]), float(timedel) * 86400.0 if timedel else np.nan)
    # The columns as they are (each the reader's own array): pandas would copy them all again
    # into blocks of one dtype.
    frame = pd.DataFrame(data, copy=False)
    return frame, {"primary": hdus[0].described(), "lightcurve": table.described(),
                   "repeated_cadences_dropped": repeated}
