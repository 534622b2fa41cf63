"""Catalog: the list of targets a project works through.

A catalog comes from a file (CSV, FITS, HDF5 or Parquet), from a preset
(``Catalog(default="test")`` is a deterministic synthetic catalog of any
size), or from a remote service registered as a loader. Its columns are mapped
to the standard names (``name, ra, dec, mag, mag_err, mag_filter, pmra, pmdec``
and the cross-ids ``tic_id, epic_id, kic_id, gaia_id, ztf_oid``); columns that
already have exactly those names are picked up without configuration.

Rows are numbered from 0 in catalog order; ``start`` and ``stop`` of a run and
every error about a bad row use those numbers. A row is bad (an error listing
it, or left out under ``bad_rows: skip``) when its name is missing, repeats an
earlier row's, holds a NUL byte or begins or ends with white space (names are
kept exactly, never stripped); when its RA or Dec is missing, out of range, or
neither a number of degrees nor a sexagesimal angle (RA in hours such as
``12h30m00s``, ``12:30:00.0`` or ``12 30 00``; Dec in degrees such as
``+45d30m00s`` or ``-05:30:00``; parsed by :class:`astropy.coordinates.Angle`);
or when a ``mag``, ``mag_err``, ``pmra`` or ``pmdec`` is there but is not a
number (an empty field or ``nan`` is no value, stored as NULL).

A catalog file is never held whole: loading reads it once, a chunk at a time
(:mod:`.readers`), to check every row, and keeps only what finds a row again
(the bad rows' numbers, where each chunk starts); rows are then read from the
file as they are asked for. Memory stays flat however long the catalog is.

Examples
--------
>>> cat = Catalog(default="test", num_sources=10)
>>> len(cat)
10
>>> row = cat.get_row(3)
>>> sorted(k for k in row if k in ("name", "ra", "dec"))
['dec', 'name', 'ra']
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import astropy.units as u
import numpy as np
import pandas as pd
from astropy.coordinates import Angle
from astropy.utils.exceptions import AstropyWarning
from pydantic import field_validator, model_validator

from skyretriever.catalogs.errors import BadRow, CatalogError
from skyretriever.catalogs.readers import (
    ChunkedTable,
    FrameReader,
    open_table_file,
    table_format,
)
from skyretriever.net import NetworkParameters, validate_archive_url
from skyretriever.parameters import ParameterError, Parameters, bounded_repr, parameter

log = logging.getLogger(__name__)

__all__ = [
    "CROSS_ID_COLUMNS",
    "STANDARD_COLUMNS",
    "BadRow",
    "Catalog",
    "CatalogError",
    "CatalogParameters",
    "ChunkedTable",
    "ColumnMap",
    "LOADERS",
    "open_catalog_file",
    "register_loader",
]

CROSS_ID_COLUMNS = ("tic_id", "epic_id", "kic_id", "gaia_id", "ztf_oid")
#: What places a target in its frame and time: ``icrs`` (stars; the default) or
#: ``helioprojective`` (solar events, at ``hpc_x``, ``hpc_y`` arcsec between ``start_time``
#: and ``end_time``; their ``ra``, ``dec`` are where the event is on the sky seen from Earth).
FRAME_COLUMNS = ("frame", "hpc_x", "hpc_y", "start_time", "end_time")
TARGET_FRAMES = ("icrs", "helioprojective")
STANDARD_COLUMNS = (
    "name", "ra", "dec", "mag", "mag_err", "mag_filter", "pmra", "pmdec", *CROSS_ID_COLUMNS,
    *FRAME_COLUMNS,
)
_FLOAT_COLUMNS = ("ra", "dec", "mag", "mag_err", "pmra", "pmdec", "hpc_x", "hpc_y")
#: Parameters that select stars (positions on the sky, magnitudes, parallaxes).
STAR_ONLY_PARAMETERS = ("cone", "box", "mag_limit", "bright_limit", "min_parallax",
                        "min_parallax_over_error")
#: Columns of common catalogs that hold a magnitude (named in a warning when ``mag`` is unmapped).
_MAGNITUDE_COLUMNS = ("Gmag", "gmag", "phot_g_mean_mag", "Tmag", "tmag", "Kpmag", "kpmag",
                      "Vmag", "Jmag", "rmag", "sy_tmag", "sy_vmag", "sy_gaiamag")
_REPORTED_BAD_ROWS = 20


class ColumnMap(Parameters):
    """Which catalog column holds each standard quantity (``None``: a column of that name, if any)."""

    name: str | None = parameter(None, "Column with the source name (unique per catalog).")
    ra: str | None = parameter(
        None, "Column with right ascension (ICRS): degrees, or sexagesimal hours "
              "(12h30m00s, 12:30:00.0).")
    dec: str | None = parameter(
        None, "Column with declination (ICRS): degrees, or sexagesimal degrees "
              "(+45d30m00s, -05:30:00).")
    mag: str | None = parameter(None, "Column with a magnitude used for selection and binning.")
    mag_err: str | None = parameter(None, "Column with the magnitude's uncertainty.")
    mag_filter: str | None = parameter(None, "Column with the band of the magnitude.")
    pmra: str | None = parameter(None, "Column with proper motion in RA*cos(Dec) (mas/yr).")
    pmdec: str | None = parameter(None, "Column with proper motion in Dec (mas/yr).")
    tic_id: str | None = parameter(None, "Column with the TESS Input Catalog id.")
    epic_id: str | None = parameter(None, "Column with the K2 EPIC id.")
    kic_id: str | None = parameter(None, "Column with the Kepler Input Catalog id.")
    gaia_id: str | None = parameter(None, "Column with the Gaia DR3 source_id.")
    ztf_oid: str | None = parameter(None, "Column with the ZTF object id.")
    frame: str | None = parameter(
        None, "Column with the target's frame: 'icrs' (stars) or 'helioprojective' (solar events).")
    hpc_x: str | None = parameter(None, "Column with a solar event's helioprojective x (arcsec).")
    hpc_y: str | None = parameter(None, "Column with a solar event's helioprojective y (arcsec).")
    start_time: str | None = parameter(None, "Column with the start of a target's time window (UTC).")
    end_time: str | None = parameter(None, "Column with the end of a target's time window (UTC).")


#: The demo catalog (200 synthetic stars), package data; ``catalogs/demo.csv`` in the
#: repository is a link to it.
DEMO_CATALOG = Path(__file__).with_name("demo.csv")


class CatalogParameters(NetworkParameters):
    """Where the catalog comes from and how its columns are read."""

    preset_field = "default"
    presets = {
        "test": {"kind": "synthetic"},
        # Shipped inside the package, so the preset works wherever skyretriever is installed.
        "demo": {"kind": "file", "filename": str(DEMO_CATALOG)},
    }

    default: str | None = parameter(
        None, "Name of a preset catalog ('test' synthetic, 'demo' file, or a remote preset)."
    )
    kind: str = parameter(
        "file", "How the catalog is made: 'file', 'synthetic', or a registered remote loader."
    )
    filename: str | None = parameter(
        None, "Catalog file (CSV, FITS, HDF5 or Parquet); a relative path is from the config "
              "file's folder (the working folder when there is no config file)."
    )
    file_format: Literal["auto", "csv", "fits", "hdf5", "parquet"] = parameter(
        "auto", "File format; 'auto' goes by the file extension."
    )
    hdf5_path: str | None = parameter(None, "Path of the table inside an HDF5 catalog file.")
    columns: ColumnMap = parameter(default_factory=ColumnMap, doc="Catalog column for each standard name.")
    mag_filter: str | None = parameter(
        None, "Band of the magnitude when the catalog has no mag_filter column (e.g. 'Gaia_G')."
    )
    extra_columns: list[str] | None = parameter(
        None, "Other catalog columns to keep with each source (None keeps them all)."
    )
    num_sources: int = parameter(1000, "Number of sources of the synthetic catalog.", ge=0)
    seed: int = parameter(0, "Random seed of the synthetic catalog.")
    bad_rows: Literal["raise", "skip"] = parameter(
        "raise", "What to do with unusable rows: raise an error listing them, or skip them."
    )
    cache_dir: str = parameter(
        "catalogs", "Folder where downloaded catalogs are cached.", critical=False
    )
    # What a remote catalog (a preset such as gaia, exoplanet_hosts, wd) selects. These
    # are critical: they choose the rows. The cached file's content also goes into the
    # config hash (catalog_hash), so a catalog that changes upstream changes the hash.
    cone: list[float] | None = parameter(
        None, "Remote catalogs: only rows within this cone, [ra, dec, radius] in degrees.",
        min_length=3, max_length=3,
    )
    box: list[float] | None = parameter(
        None, "Remote catalogs: only rows in this box, [ra_min, ra_max, dec_min, dec_max] in "
        "degrees (ra_min > ra_max wraps through 0).", min_length=4, max_length=4,
    )
    mag_limit: float | None = parameter(
        None, "Remote catalogs: faintest magnitude kept (Gaia G; TESS mag for exoplanet hosts)."
    )
    bright_limit: float | None = parameter(
        None, "Remote catalogs: brightest magnitude kept (same band as mag_limit)."
    )
    min_parallax: float | None = parameter(
        None, "Remote catalogs with parallaxes (gaia, wd): smallest parallax kept (mas)."
    )
    min_parallax_over_error: float | None = parameter(
        None, "Remote catalogs with parallaxes (gaia, wd): smallest parallax / its error kept."
    )
    min_wd_probability: float = parameter(
        0.75, "wd preset: smallest probability of being a white dwarf (Pwd) kept.", ge=0, le=1
    )
    max_rows: int | None = parameter(
        None, "Remote catalogs: most rows taken (by source_id for Gaia; None: all).", ge=1
    )
    gaia_table: str = parameter(
        "gaiadr3.gaia_source", "Gaia table queried by the gaia preset (schema.table)."
    )
    gaia_tap_url: str = parameter(
        "https://gea.esac.esa.int/tap-server/tap", "Base URL of the Gaia TAP service.",
        critical=False,
    )
    exoplanet_archive_url: str = parameter(
        "https://exoplanetarchive.ipac.caltech.edu", "Base URL of the NASA Exoplanet Archive.",
        critical=False,
    )
    wd_catalog_url: str = parameter(
        "https://warwick.ac.uk/fac/sci/physics/research/astro/research/catalogues/"
        "gaiaedr3_wd_main.fits.gz",
        "URL of the Gaia EDR3 white-dwarf catalogue (Gentile Fusillo et al. 2021), FITS or CSV.",
        critical=False,
    )
    page_size: int = parameter(
        2000, "Remote catalogs: rows per TAP request when paging through a large query.",
        critical=False, ge=1,
    )
    refresh: bool = parameter(
        False, "Download a remote catalog again even when it is cached.", critical=False
    )
    # The hek preset: solar events from the Heliophysics Event Knowledgebase.
    hek_url: str = parameter(
        "https://www.lmsal.com/hek/her", "hek preset: URL of the HEK search service.",
        critical=False,
    )
    event_type: list[str] = parameter(
        ["cj"], "hek preset: HEK event types (cj coronal jets, fl flares...; '**' for all)."
    )
    time_range: list[str] | None = parameter(
        None, "hek preset: [start, end] of the events asked for (UTC, ISO 8601).",
        min_length=2, max_length=2,
    )
    hpc_box: list[float] | None = parameter(
        None, "hek preset: only events in this helioprojective box, [x1, x2, y1, y2] in arcsec "
        "(None: the whole disk and limb, +-1200).", min_length=4, max_length=4,
    )
    hek_filters: dict[str, Any] = parameter(
        default_factory=dict,
        doc="hek preset: attribute filters, {attribute: value} (equality) or {attribute: "
            "[operator, value]} with an operator of =, !=, <, <=, >, >=, like "
            "(e.g. {obs_channelid: 304, frm_name: [like, 'EED%']}).",
    )
    window_days: float = parameter(
        30.0, "hek preset: the time range is asked for in windows of this many days "
              "(long HEK queries hang), fetched concurrently.", critical=False, gt=0,
    )
    # A synchronous TAP query sends nothing until it has its answer: wait longer by default.
    timeout: float = parameter(
        300.0, "Remote catalogs: seconds to wait for each read from the service.",
        critical=False, gt=0,
    )

    @field_validator("gaia_tap_url", "exoplanet_archive_url", "wd_catalog_url", "hek_url")
    @classmethod
    def _plain_archive_url(cls, value: str) -> str:
        return validate_archive_url(value)

    @model_validator(mode="after")
    def _check_sky_region(self) -> CatalogParameters:
        # These numbers are written into ADQL queries: they must be plain, finite numbers.
        for name in ("cone", "box", "mag_limit", "bright_limit", "min_parallax",
                     "min_parallax_over_error"):
            value = getattr(self, name)
            values = value if isinstance(value, list) else [value]
            if any(v is not None and not math.isfinite(v) for v in values):
                raise ValueError(f"{name}: every value must be a finite number, not {value!r}")
        if self.cone is not None:
            ra, dec, radius = self.cone
            if not (0 <= ra < 360 and -90 <= dec <= 90 and 0 < radius <= 180):
                raise ValueError(f"cone: expected [ra 0-360, dec -90-90, radius 0-180] in "
                                 f"degrees, not {self.cone}")
        if self.box is not None:
            ra_min, ra_max, dec_min, dec_max = self.box
            if not (0 <= ra_min <= 360 and 0 <= ra_max <= 360 and -90 <= dec_min < dec_max <= 90):
                raise ValueError(f"box: expected [ra_min, ra_max (0-360), dec_min < dec_max "
                                 f"(-90-90)] in degrees, not {self.box}")
        if self.cone is not None and self.box is not None:
            raise ValueError("cone and box: give one of them, not both")
        if self.kind == "hek":
            for name in STAR_ONLY_PARAMETERS:
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name}: selects stars (ICRS positions, magnitudes, parallaxes), but the "
                        "hek catalog's targets are solar events in helioprojective coordinates; "
                        "select them with hpc_box [x1, x2, y1, y2] (arcsec), time_range, "
                        "event_type and hek_filters")
        return self


Loader = Callable[[CatalogParameters], pd.DataFrame | ChunkedTable]
LOADERS: dict[str, Loader] = {}


def register_loader(kind: str, presets: dict[str, dict[str, Any]] | None = None):
    """Register a function that makes the catalog table for ``kind`` (and its presets).

    The function returns a pandas table, or for a table too large to hold a
    :class:`ChunkedTable` (such as :func:`open_catalog_file` gives). Either may
    name the file it was read from (``frame.attrs["source_file"]``, or
    ``source_file=``), whose bytes then identify the catalog.

    Examples
    --------
    >>> @register_loader("my_survey", presets={"my_survey": {"kind": "my_survey"}})
    ... def load_my_survey(pars):
    ...     return pd.DataFrame({"name": ["a"], "ra": [1.0], "dec": [2.0]})
    """

    def decorator(function: Loader) -> Loader:
        LOADERS[kind] = function
        for name, values in (presets or {}).items():
            CatalogParameters.presets[name] = values
        return function

    return decorator


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """Counter-based random bits: the same index always gives the same number."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _uniform(index: np.ndarray, seed: int, stream: int) -> np.ndarray:
    base = np.uint64((seed * 1_000_003 + stream * 7919) % (1 << 63))
    with np.errstate(over="ignore"):
        bits = _splitmix64(index.astype(np.uint64) * np.uint64(8) + base)
    return (bits >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def synthetic_rows(start: int, stop: int, seed: int = 0) -> pd.DataFrame:
    """Rows ``start`` to ``stop`` of the synthetic catalog: uniform on the sky, mags 12 to 20."""
    index = np.arange(start, stop, dtype=np.int64)
    ra = 360.0 * _uniform(index, seed, 1)
    dec = np.degrees(np.arcsin(2.0 * _uniform(index, seed, 2) - 1.0))
    mag = 12.0 + 8.0 * _uniform(index, seed, 3)
    return pd.DataFrame(
        {
            "name": [f"test_{i:07d}" for i in index],
            "ra": ra,
            "dec": dec,
            "mag": mag,
            "mag_err": 0.01 + 0.002 * (mag - 12.0) ** 2,
            "pmra": 20.0 * (_uniform(index, seed, 4) - 0.5),
            "pmdec": 20.0 * (_uniform(index, seed, 5) - 0.5),
        }
    )


def open_catalog_file(pars: CatalogParameters, *,
                      transform: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
                      max_rows: int | None = None, source_file: str | None = None,
                      scratch_dir: str | Path | None = None) -> ChunkedTable:
    """The catalog file ``pars.filename`` (in ``pars.file_format``), to be read in chunks.

    ``transform``, ``max_rows`` and ``source_file`` are those of
    :class:`ChunkedTable` (a remote catalog's cuts over its cached file);
    ``scratch_dir`` is where a compressed FITS file is unpacked once.

    Raises
    ------
    CatalogError
        If there is no file, its format is unknown, or it cannot be read.

    Examples
    --------
    >>> table = open_catalog_file(CatalogParameters(filename=str(DEMO_CATALOG)))
    >>> table.columns[:3]
    ['name', 'ra', 'dec']
    """
    if not pars.filename:
        raise CatalogError("catalog: give a filename or choose a preset with 'default'")
    path = Path(pars.filename).expanduser()
    if not path.exists():
        raise CatalogError(f"catalog file {str(path)!r} does not exist")
    fmt = pars.file_format
    if fmt == "auto":
        fmt = table_format(path)
        if fmt is None:
            raise CatalogError(
                f"catalog file {str(path)!r}: cannot tell the format from the extension; "
                "set catalog.file_format to csv, fits, hdf5 or parquet"
            )
    reader = open_table_file(path, fmt, hdf5_path=pars.hdf5_path, scratch_dir=scratch_dir)
    return ChunkedTable(reader, transform=transform, max_rows=max_rows, source_file=source_file)


LOADERS["file"] = open_catalog_file


def _listed(names: list[str], limit: int = 600) -> str:
    """Column names for a message: as many as fit in about ``limit`` characters."""
    text = ", ".join(str(name) for name in names[:200])
    if len(text) <= limit and len(names) <= 200:
        return text
    return f"{text[:limit]}... ({len(names)} columns)"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _blank(names: np.ndarray) -> np.ndarray:
    """Which names are empty or only spaces (without ``Series.str``, whose cache is a cycle)."""
    return np.array([not name.strip() for name in names], dtype=bool)


def _blank_or_padded(names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which names are empty or only white space, and which begin or end with white space.

    A name is kept exactly as the catalog has it: ``" lead"`` is not ``"lead"``, so
    rather than strip it (and make it a duplicate, or another star's name) the row
    is refused.
    """
    stripped = np.empty(len(names), dtype=object)
    stripped[:] = [name.strip() for name in names]
    blank = stripped == ""
    return blank, (stripped != names) & ~blank


_NUMERIC_CHECKED = ("mag", "mag_err", "pmra", "pmdec")
# texts that say "no value" in a number column: left empty (NULL), not an error
_NO_NUMBER = frozenset({"", "nan", "-nan", "+nan"})


def _not_numbers(values: pd.Series) -> np.ndarray:
    """Which values are there but are not numbers (``"bright"`` in a magnitude column).

    Missing values and texts such as ``nan`` are no value, not an error. A column
    the reader already made numeric has nothing to look at.
    """
    if values.dtype.kind in "iufb":
        return np.zeros(len(values), dtype=bool)
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    suspects = np.flatnonzero(np.isnan(numbers) & values.notna().to_numpy())
    found = np.zeros(len(values), dtype=bool)
    for index in suspects:
        value = values.iloc[index]
        found[index] = not (isinstance(value, str) and value.strip().lower() in _NO_NUMBER) and \
            not (isinstance(value, float) and math.isnan(value))
    return found


#: The unit of a sexagesimal angle without unit letters: hours for RA, degrees for Dec.
_SEXAGESIMAL_UNITS = {"ra": u.hourangle, "dec": u.deg}
_SEXAGESIMAL_EXAMPLES = {"RA": "such as 12h30m00s or 12:30:00.0",
                         "Dec": "such as +45d30m00s or -05:30:00"}


def _sexagesimal_degrees(text: str, unit: u.UnitBase) -> float:
    """Degrees of one sexagesimal angle; ``unit`` (hours or degrees) when the text has no letters."""
    try:
        angle = Angle(text)
    except u.UnitsError:  # no unit letters: 12:30:00
        angle = Angle(text, unit=unit)
    if angle.unit == u.hourangle:  # 15 times the hours: astropy's factor gives 187.49999999999997
        return float(angle.hour * 15.0)
    return float(angle.degree)


def _degrees(values: pd.Series, standard: str) -> tuple[np.ndarray, np.ndarray]:
    """Degrees of an RA or Dec column (``standard``), and which values are not angles.

    Numbers are degrees. Text that is not a number is parsed as a sexagesimal
    angle by :class:`astropy.coordinates.Angle`: hours for RA (``12h30m00s``,
    ``12:30:00.0``, ``12 30 00``), degrees for Dec (``+45d30m00s``,
    ``-05:30:00``); unit letters in the text win (``187d30m00s`` is degrees).
    Missing values and texts such as ``nan`` are NaN, not "not angles".

    Examples
    --------
    >>> degrees, junk = _degrees(pd.Series(["12h30m00s", "12:30:00.0", 187.5, None, "junk"]), "ra")
    >>> degrees.tolist(), junk.tolist()
    ([187.5, 187.5, 187.5, nan, nan], [False, False, False, False, True])
    >>> _degrees(pd.Series(["+45d30m00s", "-05:30:00"]), "dec")[0].tolist()
    [45.5, -5.5]
    """
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    junk = np.zeros(len(values), dtype=bool)
    if values.dtype.kind in "iufb":
        return numbers, junk
    unit = _SEXAGESIMAL_UNITS[standard]
    with warnings.catch_warnings():
        # 24h or 60s is refused below (out of range, or junk), not warned about per row
        warnings.simplefilter("ignore", AstropyWarning)
        for index in np.flatnonzero(np.isnan(numbers) & values.notna().to_numpy()):
            value = values.iloc[index]
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if isinstance(value, float) or (isinstance(value, str)
                                            and value.strip().lower() in _NO_NUMBER):
                continue
            try:
                numbers[index] = _sexagesimal_degrees(str(value).strip(), unit)
            except (ValueError, TypeError, u.UnitsError):
                junk[index] = True
    return numbers, junk


def _name_hashes(names: np.ndarray) -> np.ndarray:
    """64-bit hashes of names (an object array of str), to find duplicates in 8 bytes a row.

    Equal names have equal hashes; equal hashes are checked against the names
    themselves, so a collision never makes a duplicate.
    """
    try:
        return pd.util.hash_array(names, categorize=False)
    except UnicodeEncodeError:  # a lone surrogate: pandas encodes strictly
        return np.array([int.from_bytes(hashlib.blake2b(
            name.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
            for name in names], dtype=np.uint64)


_INTEGER_IN_TEXT = re.compile(r"(\d+)\s*$")


def _parse_cross_id(values: pd.Series) -> pd.Series:
    """Integers from ids such as 25155310, '25155310' or 'TIC 25155310' (None when absent)."""

    def parse(value: Any) -> int | None:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return None
        if isinstance(value, (int, np.integer)):
            return int(value) if value >= 0 else None
        if isinstance(value, (float, np.floating)):
            return int(value) if value.is_integer() and value >= 0 else None
        match = _INTEGER_IN_TEXT.search(str(value).strip())
        return int(match.group(1)) if match else None

    # Built as a list: Series.map would make floats of these when one is missing, and a
    # Gaia source_id (up to 2**63) does not survive a float.
    return pd.Series([parse(value) for value in values], index=values.index, dtype=object)


def _to_python(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


class _Hashes:
    """The name hashes of every row: 8 bytes a row, in one array when the rows are bounded."""

    def __init__(self, bound: int | None) -> None:
        self._array = None if bound is None else np.empty(bound, dtype=np.uint64)
        self._parts: list[np.ndarray] = []
        self._count = 0

    def add(self, hashes: np.ndarray) -> None:
        end = self._count + len(hashes)
        if self._array is not None and end <= len(self._array):
            self._array[self._count : end] = hashes
        else:  # no bound, or it was wrong (a CSV file whose lines end in lone carriage returns)
            if self._array is not None:
                self._parts.append(self._array[: self._count].copy())
                self._array = None
            self._parts.append(hashes)
        self._count = end

    def finish(self) -> np.ndarray:
        if self._array is not None:
            return self._array[: self._count]
        return np.concatenate(self._parts) if self._parts else np.empty(0, dtype=np.uint64)


def _python_values(column: pd.Series) -> list[Any]:
    """A column's values as :func:`_to_python` makes each (NaN and infinities become None)."""
    values = column.tolist()
    kind = column.dtype.kind if isinstance(column.dtype, np.dtype) else None
    if kind in ("i", "u", "b"):
        return values
    if kind == "f":
        for index in np.flatnonzero(~np.isfinite(column.to_numpy())):
            values[index] = None
        return values
    return [_to_python(value) for value in values]


class Catalog:
    """A table of targets with standard column names, read in slices.

    Parameters
    ----------
    pars
        A :class:`CatalogParameters`, or ``None`` to build one from ``kwargs``.
    **kwargs
        Parameter values (``default``, ``filename``, ``columns``, ...).

    Examples
    --------
    >>> cat = Catalog(default="test", num_sources=5)
    >>> [row["name"] for row in cat.get_rows(0, 2)]
    ['test_0000000', 'test_0000001']
    """

    Parameters = CatalogParameters

    def __init__(self, pars: CatalogParameters | None = None, **kwargs: Any) -> None:
        self.pars = pars if pars is not None else self.Parameters.build(kwargs, where="catalog")
        if pars is not None and kwargs:
            self.pars = self.Parameters.build(pars.model_dump(), kwargs, where="catalog")
        self._table: ChunkedTable | None = None
        self._hash: str | None = None
        self.bad_rows: list[BadRow] = []
        #: The file a remote catalog was read from (its cache), once loaded.
        self.source_file: str | None = None
        self._description: str | None = None
        self._mapping: dict[str, str | None] = {}
        self._extra: list[str] = []
        self._length = 0
        # Table rows left out (bad rows, sorted), and for each the number of kept rows
        # before it: a kept row's position becomes its table row with one search.
        self._skipped = np.empty(0, dtype=np.int64)
        self._kept_before = np.empty(0, dtype=np.int64)
        # The table row at which each raw chunk of the file starts.
        self._chunk_starts = np.zeros(1, dtype=np.int64)

    # -- loading ---------------------------------------------------------------------------
    @property
    def is_synthetic(self) -> bool:
        return self.pars.kind == "synthetic"

    @property
    def is_configured(self) -> bool:
        """Whether there is a catalog: a file, a preset or a loader (a project may run given
        rows alone, ``Project.run(rows=...)``, with none)."""
        return self.is_synthetic or self.pars.kind != "file" or bool(self.pars.filename)

    def load(self) -> Catalog:
        """Open (or download) the table, map its columns and check its rows; returns itself.

        The rows are checked in one pass over the file, a chunk at a time; what is
        kept is the number of rows, the bad rows' numbers and where each chunk
        starts, not the rows.
        """
        if self._table is not None or self.is_synthetic:
            return self
        loader = LOADERS.get(self.pars.kind)
        if loader is None:
            raise ParameterError(
                f"catalog.kind: no loader for {self.pars.kind!r}; known: {', '.join(sorted(LOADERS))}"
            )
        table = loader(self.pars)
        if isinstance(table, pd.DataFrame):
            table = ChunkedTable(FrameReader(table), source_file=table.attrs.get("source_file"))
        return self._use(table)

    def _use(self, table: ChunkedTable) -> Catalog:
        # Remote loaders name the (cached) file they read, whose bytes identify the catalog.
        self.source_file = table.source_file
        self._mapping, self._extra = self._columns_of(table.columns)
        self._check_rows(table)
        self._table = table
        return self

    @classmethod
    def checked_rows(cls, rows: Sequence[Mapping[str, Any]],
                     pars: CatalogParameters | None = None) -> list[dict[str, Any]]:
        """Rows given as dictionaries (``Project.run(rows=...)``), checked and made standard
        as a catalog file's rows are; ``pars`` maps their columns (``columns``, ``mag_filter``).

        A row needs ``name``, ``ra`` and ``dec`` (degrees or sexagesimal); other keys are
        the standard columns (``mag``, ``tic_id``...) or are kept under ``extra``. A row
        taken from a catalog (with ``cat_index`` and ``extra``) keeps its row number.

        Raises
        ------
        CatalogError
            Listing every bad row (numbered from 0 in ``rows``) with its reasons.
        """
        flat = []
        for number, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise CatalogError(f"rows[{number}] is a {type(row).__name__}, not a dictionary "
                                   "with name, ra and dec")
            values = {key: value for key, value in row.items() if key not in ("extra", "cat_index")}
            for key, value in (row.get("extra") or {}).items():
                values.setdefault(key, value)
            flat.append(values)
        if not flat:
            return []
        base = (pars or CatalogParameters()).model_dump()
        catalog = cls(CatalogParameters.build({**base, "bad_rows": "raise", "default": None,
                                               "kind": "file", "filename": None}))
        catalog._description = "of the rows given"
        checked = catalog._use(ChunkedTable(FrameReader(pd.DataFrame(flat)))).get_rows()
        for given, row in zip(rows, checked):
            if isinstance(given.get("cat_index"), (int, np.integer)):
                row["cat_index"] = int(given["cat_index"])
        return checked

    def _column_for(self, standard: str, available: list[str]) -> str | None:
        chosen = getattr(self.pars.columns, standard)
        if chosen is not None:
            if chosen not in available:
                raise CatalogError(
                    f"catalog.columns.{standard} names column {bounded_repr(chosen)}, which the "
                    f"catalog does not have; its columns are: {_listed(available)}"
                )
            return chosen
        return standard if standard in available else None

    def _columns_of(self, available: list[str]) -> tuple[dict[str, str | None], list[str]]:
        """The catalog column of each standard name, and the other columns kept."""
        mapping = {std: self._column_for(std, available) for std in STANDARD_COLUMNS}
        missing = [required for required in ("name", "ra", "dec") if mapping[required] is None]
        if missing:
            settings = ", ".join(f"catalog.columns.{required}" for required in missing)
            raise CatalogError(
                f"catalog has no {' and no '.join(repr(m) for m in missing)} column "
                f"({len(missing)} missing); set {settings} to columns it has: "
                f"{_listed(available)}"
            )
        if mapping["mag"] is None:
            looks_like = [c for c in available if c in _MAGNITUDE_COLUMNS]
            if looks_like:
                log.warning("catalog: no 'mag' column, but %s look(s) like a magnitude; set "
                            "catalog.columns.mag (and mag_filter) to use it", _listed(looks_like))
        used = {column for column in mapping.values() if column is not None}
        extra = [c for c in available if c not in used]
        if self.pars.extra_columns is not None:
            missing = [c for c in self.pars.extra_columns if c not in available]
            if missing:
                raise CatalogError(
                    "catalog.extra_columns names columns the catalog does not have: "
                    f"{bounded_repr(missing, 400)}"
                )
            extra = [c for c in self.pars.extra_columns if c not in used]
        return mapping, extra

    def _standardise(self, table: pd.DataFrame) -> pd.DataFrame:
        """A chunk with the standard columns (the name as text) and ``extra:<column>``."""
        result = pd.DataFrame(index=table.index)
        for std, column in self._mapping.items():
            if column is None:
                continue
            values = table[column]
            if std in _SEXAGESIMAL_UNITS:
                result[std] = _degrees(values, std)[0]
            elif std in _FLOAT_COLUMNS:
                result[std] = pd.to_numeric(values, errors="coerce").astype(float)
            elif std in CROSS_ID_COLUMNS:
                result[std] = _parse_cross_id(values)
            elif std == "mag_filter":  # a band's name, written "G" or " G" after a comma
                result[std] = values.map(lambda v: v.strip() if isinstance(v, str) else v)
            else:
                result[std] = values
        if "mag_filter" not in result and self.pars.mag_filter is not None:
            result["mag_filter"] = self.pars.mag_filter
        for column in self._extra:
            result[f"extra:{column}"] = table[column]
        result["name"] = result["name"].astype(str)
        return result.reset_index(drop=True)

    def _check_rows(self, table: ChunkedTable) -> None:
        """One pass over the table: every bad row with its reasons; raise or leave them out."""
        found = self._scan(table)
        if table.reader.rescan_needed:  # the file's column types are known only now
            del found
            found = self._scan(table)
        total, starts, hashes, bad = found
        del found
        hashes.sort()
        repeated = hashes[1:] == hashes[:-1]
        if repeated.any():
            self._add_duplicates(table, np.unique(hashes[1:][repeated]), total, bad)
        del hashes
        self.bad_rows = [BadRow(row, "; ".join(reasons)) for row, reasons in sorted(bad.items())]
        if self.bad_rows and self.pars.bad_rows == "raise":
            shown = "\n  ".join(str(item) for item in self.bad_rows[:_REPORTED_BAD_ROWS])
            more = len(self.bad_rows) - _REPORTED_BAD_ROWS
            tail = f"\n  ... and {more} more" if more > 0 else ""
            raise CatalogError(
                f"catalog {self.describe()} has {len(self.bad_rows)} unusable row(s) "
                f"(rows numbered from 0):\n  {shown}{tail}\n"
                + ("Fix them." if self._description is not None else
                   "Fix them, or set catalog.bad_rows: skip to leave them out.")
            )
        self._skipped = np.array([item.row for item in self.bad_rows], dtype=np.int64)
        self._kept_before = self._skipped - np.arange(len(self._skipped), dtype=np.int64)
        self._chunk_starts = starts
        self._length = total - len(self._skipped)

    def _scan(self, table: ChunkedTable
              ) -> tuple[int, np.ndarray, np.ndarray, dict[int, list[str]]]:
        """Rows, chunk starts, name hashes and bad rows (but duplicates) of one pass."""
        names_column, ra_column, dec_column = (self._mapping[c] for c in ("name", "ra", "dec"))
        limit = table.max_rows
        bad: dict[int, list[str]] = {}
        starts: list[int] = []
        bound = table.reader.row_bound
        hashes = _Hashes(bound if limit is None or bound is None else min(bound, limit))
        row = 0
        frames = table.frames(scan=True)
        try:
            for frame in frames:
                if limit is not None and row >= limit:
                    if table.reader.needs_full_scan:
                        continue  # the reader learns the file's column types to its end
                    break
                starts.append(row)
                if limit is not None:
                    frame = frame.iloc[: limit - row]

                def add(rows: np.ndarray, reason: str, first: int = row) -> None:
                    for index in np.flatnonzero(rows):
                        bad.setdefault(first + int(index), []).append(reason)

                names = frame[names_column]
                text = names.astype(str).to_numpy(dtype=object)
                blank, padded = _blank_or_padded(text)
                missing = names.isna().to_numpy() | blank
                add(missing, "missing name")
                add(np.array(["\x00" in name for name in text], dtype=bool) & ~missing,
                    "name contains a NUL byte")
                for index in np.flatnonzero(padded & ~missing):
                    bad.setdefault(row + int(index), []).append(
                        f"name {bounded_repr(text[index], 80)} begins or ends with white space "
                        "(names are kept exactly; remove it)")
                for std in _NUMERIC_CHECKED:
                    column = self._mapping.get(std)
                    if column is None:
                        continue
                    values = frame[column]
                    for index in np.flatnonzero(_not_numbers(values)):
                        bad.setdefault(row + int(index), []).append(
                            f"{std} {bounded_repr(values.iloc[index], 40)} is not a number")
                ra, ra_junk = _degrees(frame[ra_column], "ra")
                dec, dec_junk = _degrees(frame[dec_column], "dec")
                for label, column, junk in (("RA", ra_column, ra_junk),
                                            ("Dec", dec_column, dec_junk)):
                    for index in np.flatnonzero(junk):
                        bad.setdefault(row + int(index), []).append(
                            f"{label} is missing or not a number: column {bounded_repr(column, 80)} "
                            f"has {bounded_repr(frame[column].iloc[index], 40)}, neither degrees "
                            f"nor sexagesimal ({_SEXAGESIMAL_EXAMPLES[label]})")
                with np.errstate(invalid="ignore"):
                    add(~np.isfinite(ra) & ~ra_junk, "RA is missing or not a number")
                    add(np.isfinite(ra) & ((ra < 0) | (ra >= 360)), "RA outside 0 to 360 degrees")
                    add(~np.isfinite(dec) & ~dec_junk, "Dec is missing or not a number")
                    add(np.isfinite(dec) & ((dec < -90) | (dec > 90)),
                        "Dec outside -90 to +90 degrees")
                hashes.add(_name_hashes(text))
                row += len(frame)
        finally:
            frames.close()
        return row, np.array(starts or [0], dtype=np.int64), hashes.finish(), bad

    def _add_duplicates(self, table: ChunkedTable, repeated: np.ndarray, total: int,
                        bad: dict[int, list[str]]) -> None:
        """Read the names again, keeping those whose hash repeats; report the true duplicates.

        A name seen before (even on a bad row) makes the row a duplicate of the
        first row with that name, unless the name is missing. Rows whose hashes
        collide but whose names differ are no duplicates.
        """
        names_column = self._mapping["name"]
        groups: dict[int, list[tuple[int, str, bool]]] = {}
        row = 0
        frames = table.frames()
        try:
            for frame in frames:
                if row >= total:
                    break
                frame = frame.iloc[: total - row]
                names = frame[names_column]
                text = names.astype(str).to_numpy(dtype=object)
                hashes = _name_hashes(text)
                hits = np.flatnonzero(np.isin(hashes, repeated))
                if len(hits):
                    missing = names.iloc[hits].isna().to_numpy() | _blank(text[hits])
                    for index, is_missing in zip(hits, missing):
                        groups.setdefault(int(hashes[index]), []).append(
                            (row + int(index), text[index], bool(is_missing)))
                row += len(frame)
        finally:
            frames.close()
        for members in groups.values():
            first_row: dict[str, int] = {}
            for row, name, is_missing in members:
                if name not in first_row:
                    first_row[name] = row
                elif not is_missing:
                    bad.setdefault(row, []).append(
                        f"duplicate name {bounded_repr(name, 80)} (first at row {first_row[name]})")

    def describe(self) -> str:
        """A short description for messages: the file name or the preset."""
        if self._description is not None:
            return self._description
        if self.pars.filename and self.pars.kind == "file":
            return repr(self.pars.filename)
        return f"preset {self.pars.default or self.pars.kind!r}"

    # -- access ----------------------------------------------------------------------------
    def __len__(self) -> int:
        if self.is_synthetic:
            return self.pars.num_sources
        self.load()
        return self._length

    def _table_row(self, position: int) -> int:
        """The table row (``cat_index``) of the kept row at ``position``."""
        return position + int(np.searchsorted(self._kept_before, position, side="right"))

    def _kept_frames(self, start: int, stop: int) -> Iterator[pd.DataFrame]:
        """Standardised kept rows ``start`` to ``stop`` with their ``cat_index``, chunk by chunk.

        Reading starts at the chunk holding ``start`` (a row group, a row range, a
        byte offset) and goes no further than ``stop``.
        """
        if start >= stop:
            return
        first_row, end_row = self._table_row(start), self._table_row(stop - 1) + 1
        chunk = int(np.searchsorted(self._chunk_starts, first_row, side="right")) - 1
        row = int(self._chunk_starts[chunk])
        frames = self._table.frames(chunk)
        try:
            for frame in frames:
                low, high = max(first_row - row, 0), min(end_row - row, len(frame))
                if high > low:
                    rows = np.arange(row + low, row + high, dtype=np.int64)
                    part = frame.iloc[low:high]
                    skipped = self._skipped[np.searchsorted(self._skipped, row + low):
                                            np.searchsorted(self._skipped, row + high)]
                    if len(skipped):
                        keep = ~np.isin(rows, skipped)
                        part, rows = part[keep], rows[keep]
                    standard = self._standardise(part)
                    standard["cat_index"] = rows
                    yield standard
                row += len(frame)
                if row >= end_row:
                    return
        finally:
            frames.close()

    def get_rows(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """Rows ``start`` to ``stop`` (exclusive) as dictionaries with standard keys.

        Each dictionary has every standard key (``None`` where the catalog has no
        value), ``cat_index`` (the row number) and ``extra`` (other kept columns).
        """
        length = len(self)
        start = max(0, min(start, length))
        stop = length if stop is None else max(start, min(stop, length))
        if self.is_synthetic:
            frame = synthetic_rows(start, stop, self.pars.seed)
            frame["cat_index"] = np.arange(start, stop)
            return self._rows_to_dicts(frame)
        rows: list[dict[str, Any]] = []
        for frame in self._kept_frames(start, stop):
            rows += self._rows_to_dicts(frame)
        return rows

    def _rows_to_dicts(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        # Column by column: a column's values become Python values in one call.
        where = {name: index for index, name in enumerate(frame.columns)}  # last of a name wins
        values = {name: _python_values(frame.iloc[:, index]) for name, index in where.items()}
        standard = [(key, values.get(key)) for key in STANDARD_COLUMNS]
        extra = [(name[len("extra:") :], column) for name, column in values.items()
                 if name.startswith("extra:")]
        cat_index = values["cat_index"]
        default_filter = self.pars.mag_filter
        rows = []
        for index in range(len(frame)):
            row = {key: None if column is None else column[index] for key, column in standard}
            if row["mag_filter"] is None and default_filter is not None:
                row["mag_filter"] = default_filter
            row["name"] = str(row["name"])
            row["cat_index"] = int(cat_index[index])
            row["extra"] = {name: column[index] for name, column in extra}
            rows.append(row)
        return rows

    def get_row(self, index: int, output: Literal["dict", "series"] = "dict") -> Any:
        """One row by its number, as a dictionary (or a pandas Series with ``output="series"``)."""
        length = len(self)
        if not -length <= index < length:
            raise IndexError(f"catalog row {index} does not exist (the catalog has {length} rows)")
        index = index % length if length else index
        row = self.get_rows(index, index + 1)[0]
        if output == "dict":
            return row
        if output == "series":
            return pd.Series(row)
        raise ValueError(f"output must be 'dict' or 'series', not {output!r}")

    def iter_slices(self, start: int = 0, stop: int | None = None, size: int = 500
                    ) -> Iterator[list[dict[str, Any]]]:
        """Rows from ``start`` to ``stop`` in lists of at most ``size``, never all at once.

        A file is read once, a chunk at a time, from the chunk holding ``start``.
        """
        if size < 1:
            raise ValueError("slice size must be at least 1")
        length = len(self)
        stop = length if stop is None else min(stop, length)
        start = max(0, start)
        if self.is_synthetic:
            for first in range(start, stop, size):
                yield self.get_rows(first, min(first + size, stop))
            return
        batch: list[dict[str, Any]] = []
        for frame in self._kept_frames(start, stop):
            done = 0
            while done < len(frame):
                taken = min(size - len(batch), len(frame) - done)
                batch += self._rows_to_dicts(frame.iloc[done : done + taken])
                done += taken
                if len(batch) == size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for rows in self.iter_slices():
            yield from rows

    @property
    def catalog_hash(self) -> str:
        """SHA-256 identifying the catalog's content (file bytes, or the synthetic recipe).

        A remote catalog is identified by the bytes of its cached file (loading it
        first: from the cache when there is one, so no network is needed then). A
        table made by a loader without a file is identified by its checked rows.
        """
        if self._hash is None:
            if self.is_synthetic:
                recipe = {"kind": "synthetic", "num_sources": self.pars.num_sources,
                          "seed": self.pars.seed}
                self._hash = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
            elif self.pars.kind == "file":  # no file (rows given to a run alone): no hash
                path = Path(self.pars.filename or "").expanduser()
                self._hash = _file_sha256(path) if self.pars.filename and path.exists() else ""
            else:
                self.load()
                if self.source_file is not None:
                    self._hash = _file_sha256(Path(self.source_file))
                    return self._hash
                self._hash = self._rows_sha256()
        return self._hash

    def _rows_sha256(self) -> str:
        """SHA-256 of the checked table's rows as text, with their positions, chunk by chunk."""
        digest, position = hashlib.sha256(), 0
        for frame in self._kept_frames(0, len(self)):
            if not len(self._skipped):
                frame = frame.drop(columns="cat_index")  # added only when rows were left out
            frame.index = pd.RangeIndex(position, position + len(frame))
            position += len(frame)
            data = pd.util.hash_pandas_object(frame.astype(str), index=True).to_numpy()
            digest.update(data.tobytes())
        return digest.hexdigest()
