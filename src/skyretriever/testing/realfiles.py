"""Real mission light-curve files, and copies of them carrying a simulated star's identity.

The simulator's own FITS files (:mod:`skyretriever.testing.fitsfiles`) have the
archive's layout but are small and smooth; what users download are real SPOC
and Kepler/K2 files (a 2-minute TESS sector is about 2 MB and 20,000
cadences). Real files ship in public packages: the altaipony 2.1.2 source
distribution on PyPI holds a TESS SPOC 2-minute sector, a K2 campaign and two
Kepler quarters among its examples. :data:`REAL_FILES` records where each comes
from and its SHA-256; :func:`fetch_real_files` gets them into a cache folder
(``pip download``, through whatever package index pip is configured for) and
checks them; :func:`find_real_files` lists the checked ones already there.

:data:`PLANET_FILES` are real light curves of stars with known transiting
planets (and of stars of unknown status) from other packages' sdists:
pytransit's TESS sectors of WASP-4 and of TIC 413248763, eleanor's TESS
data-alerts light curves of TOI-216 and TIC 160148385, juliet's K2 photometry
of K2-140 and K2-32 (text). Each records its planets (name, period,
reference) where they are known. They are kept in a folder of their own
(:func:`planet_cache`), so that a folder of :data:`REAL_FILES` served as a
simulated sky's files (:meth:`RealFileCopies.from_folder`) stays as it was;
:func:`real_lightcurves` reduces any of them the way a project reduces its
downloads.

:class:`RealFileCopies` serves them as a simulated sky's files: each product
(star x sector, quarter or campaign) gets a copy of a real file of its mission
(cycled), with the star's identity written into every header that names one
(``OBJECT``, ``TICID`` or ``KEPLERID``, ``RA_OBJ``, ``DEC_OBJ``, ``PMRA``,
``PMDEC``) and the product's ``SECTOR``, ``QUARTER`` or ``CAMPAIGN``; the FITS
checksums (``CHECKSUM``, ``DATASUM``) are recomputed where the real file had
them. The data bytes are the real file's: a copy's ``TIME`` is that of the
real observation, whatever sector its header names.

Examples
--------
>>> files = fetch_real_files()                            # doctest: +SKIP
>>> sky = SimulatedSky.random(50, sectors_per_star=2,
...                           real_files=RealFileCopies.from_folder(default_cache()))  # doctest: +SKIP
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from skyretriever.fitsfile import scan_fits
from skyretriever.models import Lightcurve, RawPhotometry
from skyretriever.net import HttpClient, NetworkError, NetworkPolicy
from skyretriever.observatories.k2 import VirtualK2
from skyretriever.observatories.kepler import VirtualKepler
from skyretriever.observatories.mission_files import MJD_OFFSET, read_lightcurve_fits
from skyretriever.observatories.tess import VirtualTESS
from skyretriever.storage import atomic_write, file_sha256
from skyretriever.testing.stars import Product

__all__ = ["ALTAIPONY", "ASTROPY_DATA_FILES", "ASTROPY_DATA_URL", "PLANET_FILES", "REAL_FILES",
           "KnownPlanet", "RealFile", "RealFileCopies", "RealFilesUnavailable", "default_cache",
           "fetch_astropy_data", "fetch_real_files",
           "find_real_files", "planet_cache", "read_text_lightcurve", "real_lightcurves",
           "with_identity"]

#: The source distribution the altaipony files come from: (requirement, SHA-256 of the sdist).
ALTAIPONY = ("altaipony==2.1.2",
             "c9e692ae3fc87356c4beb7ec073f067f85cf57412b9ad8c7b753860e4f3a7b42")


@dataclass(frozen=True)
class KnownPlanet:
    """A published transiting planet of a real file's star."""

    name: str
    #: Orbital period (days).
    period: float
    reference: str


@dataclass(frozen=True)
class RealFile:
    """One real light-curve file: its name, SHA-256, size, mission and where it ships."""

    name: str
    sha256: str
    size: int
    mission: str
    #: Path of the file inside the source distribution that holds it.
    member: str
    #: The source distribution holding it: (pip requirement, SHA-256 of the sdist).
    sdist: tuple[str, str] = ALTAIPONY
    #: The star, as its file or package names it.
    target: str = ""
    #: Its known transiting planets, the first the one a search should find; empty when
    #: the star has none known or its status is not known here (see ``status``).
    planets: tuple[KnownPlanet, ...] = ()
    #: "planet host", "no known planet" or "unknown" (not checked: neither host nor not).
    status: str = "no known planet"
    #: For a text file (no header): the K2 campaign, TESS sector or Kepler quarter.
    sequence: int | None = None

    @property
    def is_text(self) -> bool:
        """Whether the file is a text table (time, relative flux, error) and not FITS."""
        return not self.name.endswith(".fits")


_EXAMPLES = "altaipony-2.1.2/altaipony/examples/"
#: The real files, checked by SHA-256 (MAST products, public domain, as shipped in altaipony):
#: flare stars, no known planet.
REAL_FILES = (
    RealFile("tess2018206045859-s0001-0000000358108509-0120-s_lc.fits",
             "8f026f87bfaf4e79496e124dd6a9a36b5ff06ed597c0b3bff5387fa240681695", 2_039_040,
             "TESS", _EXAMPLES + "tess2018206045859-s0001-0000000358108509-0120-s_lc.fits",
             target="TIC 358108509"),
    RealFile("ktwo211117077-c04_llc.fits",
             "236eaa4c669987e5f2b3f696690b947434a159b2cfca75a933a546e7f269a7af", 377_280,
             "K2", _EXAMPLES + "ktwo211117077-c04_llc.fits", target="EPIC 211117077"),
    RealFile("kplr010002792-2009259160929_llc.fits",
             "65ec2b64d904b3f241c92d216509748d4fded02a8ee9dc397ce11ed7aa72af80", 466_560,
             "Kepler", _EXAMPLES + "kplr010002792-2009259160929_llc.fits", target="KIC 10002792"),
    RealFile("kplr010002792-2010174085026_llc.fits",
             "a0bfd85d5403e761d7d761717f6476d802d3865b2c77196f804a7bfe38c37c36", 492_480,
             "Kepler", _EXAMPLES + "kplr010002792-2010174085026_llc.fits", target="KIC 10002792"),
)

_PYTRANSIT = ("pytransit==2.10.1",
              "18bcdab9f93d58c7bb32f732f66d36d4c63bf5a991e0b30c5aaefbc6a4196e38")
_ELEANOR = ("eleanor==2.0.5", "e0b579e405c6a8c3f5cd48d3c26ec77ac57a07e61d34609a69a936b501376436")
_JULIET = ("juliet==2.2.1", "78d091eaf7afdd5857f974ebb807478d89de575d21ce8814323332f8198c679d")
#: Real light curves of planet hosts (and of stars whose status is not known here), from the
#: examples of pytransit, eleanor and juliet (MAST products and K2 photometry as shipped).
PLANET_FILES = (
    RealFile("tess2018234235059-s0002-0000000402026209-0121-s_lc.fits",
             "d9f1fa88f015206b9718526ccc12d3447fcdbe11c3fff803d0f84dc5d7c3b500", 2_004_480,
             "TESS", "pytransit-2.10.1/notebooks/tess_examples/data/"
             "tess2018234235059-s0002-0000000402026209-0121-s_lc.fits", _PYTRANSIT,
             "WASP-4 (TIC 402026209)",
             (KnownPlanet("WASP-4 b", 1.33823, "Wilson et al. 2008, ApJ 675, L113"),),
             "planet host"),
    RealFile("tess2019032160000-s0008-0000000413248763-0136-s_lc.fits",
             "a918c192b721da96cedae06e6b2e089ece4f79e85ba4d3bea75638c7ff8b1395", 1_805_760,
             "TESS", "pytransit-2.10.1/notebooks/tess_examples/data/"
             "tess2019032160000-s0008-0000000413248763-0136-s_lc.fits", _PYTRANSIT,
             "TIC 413248763", (), "unknown"),      # pytransit's notebooks do not name it
    RealFile("hlsp_tess-data-alerts_tess_phot_00055652896-s01_tess_v1_lc.fits",
             "5405a7f644ed9b57bf8c21477e5af148a1e3b08b3fc4cc4f288326f5ed9d274a", 2_039_040,
             "TESS", "eleanor-2.0.5/notebooks/"
             "hlsp_tess-data-alerts_tess_phot_00055652896-s01_tess_v1_lc.fits", _ELEANOR,
             "TOI-216 (TIC 55652896)",
             # two giants near 2:1; one 27-day sector holds at most two transits of b, one of c
             (KnownPlanet("TOI-216 b", 17.1, "Dawson et al. 2019, AJ 158, 65"),
              KnownPlanet("TOI-216 c", 34.55, "Dawson et al. 2019, AJ 158, 65")),
             "planet host"),
    RealFile("hlsp_tess-data-alerts_tess_phot_00160148385-s02_tess_v1_lc.fits",
             "0fbd76d0da6ee794cff451b3e942cb08450e2e633da09aa033fb11e7f66863e6", 2_004_480,
             "TESS", "eleanor-2.0.5/notebooks/"
             "hlsp_tess-data-alerts_tess_phot_00160148385-s02_tess_v1_lc.fits", _ELEANOR,
             "TIC 160148385", (), "unknown"),      # a TESS alert; whether a planet, not known here
    RealFile("K2-140_lc.dat",
             "d1fe0a16495e7a3fdf721198d1db43480eaa28b5c05006718d9b56957fa6627c", 112_134,
             "K2", "juliet-2.2.1/tutorial1/data/K2-140_lc.dat", _JULIET, "K2-140",
             (KnownPlanet("K2-140 b", 6.5693, "Giles et al. 2018, A&A 615, L13"),),
             "planet host", sequence=10),
    RealFile("K2-32_lc.dat",
             "9a4acff83849cefd338dae45414b2e3e4f9643112f5351db93d9b1c6d6482596", 175_872,
             "K2", "juliet-2.2.1/tutorial2/data/K2-32_lc.dat", _JULIET, "K2-32",
             (KnownPlanet("K2-32 b", 8.992, "Dai et al. 2016, ApJ 823, 115"),
              KnownPlanet("K2-32 c", 20.66, "Sinukoff et al. 2016, ApJ 827, 78"),
              KnownPlanet("K2-32 d", 31.71, "Sinukoff et al. 2016, ApJ 827, 78")),
             "planet host", sequence=2),
)

#: Where astropy's documentation data are published (astropy's ``get_pkg_data_filename``).
ASTROPY_DATA_URL = "https://data.astropy.org/"
#: Two more planet hosts, from astropy's documentation data (MAST products) rather than an
#: sdist: the only Kepler light curve of a known planet host found published with a package's
#: data. ``member`` is the path below :data:`ASTROPY_DATA_URL`; fetched by
#: :func:`fetch_astropy_data` (not by :func:`fetch_real_files`, so the tests never need them).
ASTROPY_DATA_FILES = (
    RealFile("kplr010666592-2009131110544_slc.fits",
             "b648bf31893ab3eca26260d6c3077ac0e650b712823ae1134381d356fdf64cba", 1_457_280,
             "Kepler", "timeseries/kplr010666592-2009131110544_slc.fits", ("", ""),
             "HAT-P-7 (KIC 10666592)",
             (KnownPlanet("HAT-P-7 b", 2.2047354, "Pal et al. 2008, ApJ 680, 1450"),),
             "planet host"),
    RealFile("hlsp_tess-data-alerts_tess_phot_00025155310-s01_tess_v1_lc.fits",
             "d52c23f0f2c944c9ae585369ecb42a9c48c650b875b9f87814a325079e23bf2f", 2_039_040,
             "TESS", "timeseries/hlsp_tess-data-alerts_tess_phot_00025155310-s01_tess_v1_lc.fits",
             ("", ""), "WASP-126 (TIC 25155310)",
             (KnownPlanet("WASP-126 b", 3.2888, "Maxted et al. 2016, arXiv:1605.05124"),),
             "planet host"),
)

_HOW = ("Get them with `python bench/real_files.py` (runs `pip download {req} --no-deps "
        "--no-binary :all:` and unpacks the light curves), or by hand: download {sdists}, "
        "unpack {names} into {folder} (or set SKYRETRIEVER_REAL_FILES to the folder that "
        "holds the altaipony files; the others go in its subfolder planets/).")


class RealFilesUnavailable(RuntimeError):
    """The real files could not be fetched or are not where they were looked for."""


def default_cache() -> Path:
    """Where real files are kept: ``$SKYRETRIEVER_REAL_FILES``, else
    ``~/.cache/skyretriever/real-files``."""
    configured = os.environ.get("SKYRETRIEVER_REAL_FILES")
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "skyretriever" / "real-files"


def planet_cache() -> Path:
    """Where the files of :data:`PLANET_FILES` are kept: ``planets/`` in :func:`default_cache`."""
    return default_cache() / "planets"


def find_real_files(folder: str | os.PathLike | None = None,
                    wanted: Iterable[RealFile] = REAL_FILES) -> list[Path]:
    """The real files present in ``folder`` (default :func:`default_cache`) whose SHA-256 is
    the recorded one.

    Examples
    --------
    >>> [path.name for path in find_real_files("/nonexistent")]
    []
    """
    folder = Path(folder) if folder is not None else default_cache()
    found = []
    for real in wanted:
        path = folder / real.name
        if path.is_file() and path.stat().st_size == real.size and file_sha256(path) == real.sha256:
            found.append(path)
    return found


def how_to_get(folder: Path, files: Iterable[RealFile] = REAL_FILES) -> str:
    """A sentence saying how to get the real ``files`` into ``folder`` by hand."""
    files = list(files)
    sdists = list(dict.fromkeys(real.sdist[0] for real in files))
    return _HOW.format(req=" ".join(sdists), sdists=", ".join(f"the {s} sdist" for s in sdists),
                       names=", ".join(real.member for real in files), folder=folder)


def _download_sdist(sdist: tuple[str, str], scratch: str, folder: Path,
                    files: Sequence[RealFile], timeout: float) -> Path:
    """The sdist ``pip download`` gives for ``sdist``'s requirement, checked by SHA-256."""
    command = [sys.executable, "-m", "pip", "download", sdist[0], "--no-deps",
               "--no-binary", ":all:", "--disable-pip-version-check", "-d", scratch]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", None) or str(error)
        raise RealFilesUnavailable(f"pip could not download {sdist[0]}: "
                                   f"{detail.strip()[-500:]}. {how_to_get(folder, files)}"
                                   ) from error
    name = sdist[0].split("==")[0].lower().replace("-", "_")
    sdists = [path for path in Path(scratch).glob("*.tar.gz")
              if path.name.lower().replace("-", "_").startswith(name)]
    if len(sdists) != 1 or file_sha256(sdists[0]) != sdist[1]:
        raise RealFilesUnavailable(f"the {sdist[0]} sdist pip gave is not the one recorded "
                                   f"(SHA-256 {sdist[1]}). {how_to_get(folder, files)}")
    return sdists[0]


def fetch_real_files(folder: str | os.PathLike | None = None, timeout: float = 600.0,
                     files: Sequence[RealFile] = REAL_FILES) -> list[Path]:
    """Make sure every file of ``files`` (default :data:`REAL_FILES`) is in ``folder``
    (default :func:`default_cache`); returns their paths.

    Missing ones are taken from the source distributions that hold them,
    downloaded with ``pip download`` (so through the package index and proxy pip
    is configured for); each sdist and every file are checked against their
    recorded SHA-256.

    Raises
    ------
    RealFilesUnavailable
        If pip cannot get an sdist or a checksum differs, saying how to get the
        files by hand.
    """
    folder = Path(folder) if folder is not None else default_cache()
    present = {path.name for path in find_real_files(folder, files)}
    missing = [real for real in files if real.name not in present]
    by_sdist: dict[tuple[str, str], list[RealFile]] = {}
    for real in missing:
        by_sdist.setdefault(real.sdist, []).append(real)
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
    for sdist, reals in by_sdist.items():
        with tempfile.TemporaryDirectory(prefix="real-files-") as scratch:
            with tarfile.open(_download_sdist(sdist, scratch, folder, files, timeout)) as archive:
                for real in reals:
                    try:
                        member = archive.extractfile(real.member)
                    except KeyError:
                        member = None
                    if member is None:
                        raise RealFilesUnavailable(f"{real.member} is not in the sdist")
                    with atomic_write(folder / real.name) as partial:
                        with open(partial, "wb") as handle:
                            shutil.copyfileobj(member, handle)
                        if file_sha256(partial) != real.sha256:  # the error removes the partial
                            raise RealFilesUnavailable(f"{real.name} from the sdist does not "
                                                       f"have the recorded SHA-256 {real.sha256}")
    found = find_real_files(folder, files)
    if len(found) != len(files):
        raise RealFilesUnavailable(f"real files missing from {folder}. "
                                   f"{how_to_get(folder, files)}")
    return found


def fetch_astropy_data(folder: str | os.PathLike | None = None, timeout: float = 120.0,
                       base_url: str = ASTROPY_DATA_URL,
                       files: Sequence[RealFile] = ASTROPY_DATA_FILES) -> list[Path]:
    """Make sure the files of :data:`ASTROPY_DATA_FILES` are in ``folder`` (default
    :func:`planet_cache`), downloading the missing ones from ``base_url`` through the one
    HTTP layer; returns their paths.

    Raises
    ------
    RealFilesUnavailable
        If a file cannot be downloaded or its SHA-256 is not the recorded one (nothing is
        left in ``folder`` then), saying where to put it by hand.
    """
    folder = Path(folder) if folder is not None else planet_cache()
    present = {path.name for path in find_real_files(folder, files)}
    missing = [real for real in files if real.name not in present]
    client = HttpClient(NetworkPolicy(max_attempts=2, timeout=timeout)) if missing else None
    for real in missing:
        folder.mkdir(parents=True, exist_ok=True)
        url = base_url.rstrip("/") + "/" + real.member
        by_hand = (f"download {url} into {folder} (astropy's "
                   f"get_pkg_data_filename({real.member!r}) fetches the same file)")
        try:
            with atomic_write(folder / real.name) as partial:
                client.download(url, partial)
                if file_sha256(partial) != real.sha256:  # the error removes the partial
                    raise RealFilesUnavailable(f"{url} does not have the recorded SHA-256 "
                                               f"{real.sha256}; {by_hand}")
        except NetworkError as error:
            raise RealFilesUnavailable(f"cannot download {url}: {error}; {by_hand}") from error
    return find_real_files(folder, files)


# -- real files as a project's light curves ---------------------------------------------------
_OBSERVATORIES = {"TESS": VirtualTESS, "K2": VirtualK2, "Kepler": VirtualKepler}
#: Days from BJD to the Kepler missions' BKJD and TESS's BTJD.
_MISSION_TIME_OFFSET = {"TESS": 2457000.0, "K2": 2454833.0, "Kepler": 2454833.0}


def read_text_lightcurve(path: str | os.PathLike, real: RealFile
                         ) -> tuple[pd.DataFrame, dict[str, dict]]:
    """A text light curve (BJD, relative flux, its error, instrument) as the FITS reader's table.

    Only the rows of ``real``'s mission are kept (juliet's K2-140 table also
    holds 98 points of a transit seen from the ground by LCOGT, which a search
    would stitch to the K2 light curve). The columns are those
    :func:`read_lightcurve_fits` gives for a file of that mission (``time``,
    ``bjd``, ``mjd``, ``exptime``, PDCSAP and SAP flux as the text's relative
    flux, quality 0), so the observatory reduces it as it reduces a download.

    Examples
    --------
    >>> real = next(r for r in PLANET_FILES if r.name == "K2-140_lc.dat")
    >>> frame, headers = read_text_lightcurve(planet_cache() / real.name, real)  # doctest: +SKIP
    >>> len(frame), headers["primary"]["CAMPAIGN"]                               # doctest: +SKIP
    (2232, 10)
    """
    from astropy.table import Table

    table = Table.read(path, format="ascii.no_header", names=("bjd", "flux", "flux_err",
                                                               "instrument"))
    table = table[np.asarray(table["instrument"], dtype=str) == real.mission]
    bjd = np.asarray(table["bjd"], dtype=float)
    flux = np.asarray(table["flux"], dtype=float)
    error = np.asarray(table["flux_err"], dtype=float)
    steps = np.diff(np.sort(bjd))
    exptime = float(np.median(steps)) * 86400.0 if len(steps) else np.nan
    quality = "quality" if real.mission == "TESS" else "sap_quality"
    frame = pd.DataFrame({
        "time": bjd - _MISSION_TIME_OFFSET[real.mission], "bjd": bjd, "mjd": bjd - MJD_OFFSET,
        "exptime": np.full(len(bjd), exptime), "sap_flux": flux, "sap_flux_err": error,
        "pdcsap_flux": flux, "pdcsap_flux_err": error,
        quality: np.zeros(len(bjd), dtype=np.int64)})
    keyword = {"TESS": "SECTOR", "K2": "CAMPAIGN", "Kepler": "QUARTER"}[real.mission]
    return frame, {"primary": {"OBJECT": real.target, keyword: real.sequence}, "lightcurve": {}}


def real_lightcurves(path: str | os.PathLike, real: RealFile, name: str | None = None
                     ) -> list[Lightcurve]:
    """The light curves a project makes of a real file: read and reduced by its mission's
    observatory (PDCSAP flux, the mission's default quality mask, split at gaps).

    Examples
    --------
    >>> wasp4 = PLANET_FILES[0]
    >>> lightcurves = real_lightcurves(planet_cache() / wasp4.name, wasp4)   # doctest: +SKIP
    >>> lightcurves[0].filter, lightcurves[0].num_points                    # doctest: +SKIP
    ('TESS', 18699)
    """
    observatory = _OBSERVATORIES[real.mission]()
    if real.is_text:
        frame, headers = read_text_lightcurve(path, real)
    else:
        frame, headers = read_lightcurve_fits(path, observatory.lightcurve_layout())
    sequence = headers["primary"].get(observatory.sequence_column.upper())
    frame[observatory.sequence_column] = -1 if sequence is None else int(sequence)
    frame["filter"] = observatory.band
    raw = RawPhotometry(data=frame, source_name=name or real.target or real.name,
                        observatory=observatory.name, ra=0.0, dec=0.0, altdata={})
    return observatory.reduce(raw)


# -- copies with a simulated star's identity ---------------------------------------------------
_SEQUENCE_KEYWORD = {"TESS": "SECTOR", "Kepler": "QUARTER", "K2": "CAMPAIGN"}


def _mission(primary: dict) -> str:
    telescope = str(primary.get("TELESCOP") or "").strip()
    if telescope == "TESS":
        return "TESS"
    if telescope == "Kepler":
        return "K2" if "CAMPAIGN" in primary else "Kepler"
    raise ValueError(f"not a TESS, Kepler or K2 light curve (TELESCOP {telescope!r})")


def with_identity(content: bytes, product: Product) -> bytes:
    """A copy of a real light-curve file that says it is ``product``'s (its star and sequence).

    Every header holding ``OBJECT``, the target id (``TICID`` or ``KEPLERID``),
    ``RA_OBJ``, ``DEC_OBJ``, ``PMRA`` or ``PMDEC`` gets the star's; the primary
    header's ``SECTOR``, ``QUARTER`` or ``CAMPAIGN`` is the product's. Where the file
    had FITS checksums they are recomputed; the data bytes are unchanged.

    Raises
    ------
    ValueError
        If the file is not of the product's mission.
    """
    from astropy.io import fits

    star = product.star
    with fits.open(io.BytesIO(content), mode="readonly", memmap=False,
                   lazy_load_hdus=False) as hdul:
        primary = hdul[0].header
        mission = _mission(dict(primary))
        if mission != product.mission:
            raise ValueError(f"a {mission} file cannot stand for a {product.mission} product")
        if mission == "TESS":
            target, keyword, prefix, pm_scale = star.tic_id, "TICID", "TIC", 1.0  # mas/yr
        else:
            target = star.epic_id if mission == "K2" else star.kic_id
            keyword, prefix, pm_scale = "KEPLERID", ("EPIC" if mission == "K2" else "KIC"), 1e-3
        if target is None:
            raise ValueError(f"star {star.name!r} has no {keyword} for a {mission} file")
        identity = {"OBJECT": f"{prefix} {target}", keyword: int(target),
                    "RA_OBJ": float(star.ra), "DEC_OBJ": float(star.dec),
                    "PMRA": float(star.pmra) * pm_scale, "PMDEC": float(star.pmdec) * pm_scale}
        checksums = any("CHECKSUM" in hdu.header for hdu in hdul)
        for hdu in hdul:
            for key, value in identity.items():
                if key in hdu.header:
                    hdu.header[key] = value
        primary[_SEQUENCE_KEYWORD[mission]] = int(product.sequence)
        output = io.BytesIO()
        hdul.writeto(output, checksum=checksums, output_verify="silentfix")
    return output.getvalue()


class RealFileCopies:
    """Real light-curve files standing in for a simulated sky's files.

    Each product gets a copy (:func:`with_identity`) of one real file of its
    mission: of those with the product's cadence if there are any, the
    ``number``-th (cycled; the sky numbers its products of each mission in order).

    Parameters
    ----------
    contents
        The real files' bytes, by name.

    Examples
    --------
    >>> copies = RealFileCopies.from_folder(default_cache())   # doctest: +SKIP
    >>> copies.missions                                         # doctest: +SKIP
    {'TESS': 1, 'K2': 1, 'Kepler': 2}
    """

    def __init__(self, contents: dict[str, bytes]) -> None:
        self._templates: dict[str, list[tuple[str, float, bytes]]] = {}
        for name in sorted(contents):
            content = contents[name]
            hdus = scan_fits(content)
            mission = _mission(hdus[0].header)
            table = next((hdu for hdu in hdus if hdu.name == "LIGHTCURVE"), None)
            if table is None:
                raise ValueError(f"{name}: no LIGHTCURVE table (not a light-curve file)")
            cadence = float(table.header.get("TIMEDEL") or 0.0) * 86400.0
            self._templates.setdefault(mission, []).append((name, cadence, content))
        if not self._templates:
            raise ValueError("no real files given")
        self._lock = threading.Lock()

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> RealFileCopies:
        """The light-curve files (``*.fits``) of a folder."""
        paths = sorted(Path(folder).glob("*.fits"))
        if not paths:
            raise RealFilesUnavailable(f"no FITS files in {folder}. {how_to_get(Path(folder))}")
        return cls({path.name: path.read_bytes() for path in paths})

    @property
    def missions(self) -> dict[str, int]:
        """How many real files of each mission there are."""
        return {mission: len(files) for mission, files in self._templates.items()}

    def template(self, product: Product, number: int) -> str:
        """The name of the real file whose copy stands for ``product``."""
        return self._choose(product, number)[0]

    def _choose(self, product: Product, number: int) -> tuple[str, float, bytes]:
        files = self._templates.get(product.mission)
        if not files:
            raise ValueError(f"no real {product.mission} file to copy for {product.filename} "
                             f"(real files of {', '.join(self._templates)} only)")
        same = [f for f in files if abs(f[1] - product.cadence) <= 0.1 * product.cadence]
        chosen = same or files
        return chosen[number % len(chosen)]

    def copy_for(self, product: Product, number: int) -> bytes:
        """The bytes of ``product``'s file: a real file with its star's identity."""
        return with_identity(self._choose(product, number)[2], product)
