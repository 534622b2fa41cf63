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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from skyretriever.fitsfile import scan_fits
from skyretriever.storage import atomic_write, file_sha256
from skyretriever.testing.stars import Product

__all__ = ["ALTAIPONY", "REAL_FILES", "RealFile", "RealFileCopies", "RealFilesUnavailable",
           "default_cache", "fetch_real_files", "find_real_files", "with_identity"]


@dataclass(frozen=True)
class RealFile:
    """One real light-curve file: its name, SHA-256, size, mission and where it ships."""

    name: str
    sha256: str
    size: int
    mission: str
    #: Path of the file inside the source distribution that holds it.
    member: str


#: The source distribution the files come from: (requirement, SHA-256 of the sdist).
ALTAIPONY = ("altaipony==2.1.2",
             "c9e692ae3fc87356c4beb7ec073f067f85cf57412b9ad8c7b753860e4f3a7b42")
_EXAMPLES = "altaipony-2.1.2/altaipony/examples/"
#: The real files, checked by SHA-256 (MAST products, public domain, as shipped in altaipony).
REAL_FILES = (
    RealFile("tess2018206045859-s0001-0000000358108509-0120-s_lc.fits",
             "8f026f87bfaf4e79496e124dd6a9a36b5ff06ed597c0b3bff5387fa240681695", 2_039_040,
             "TESS", _EXAMPLES + "tess2018206045859-s0001-0000000358108509-0120-s_lc.fits"),
    RealFile("ktwo211117077-c04_llc.fits",
             "236eaa4c669987e5f2b3f696690b947434a159b2cfca75a933a546e7f269a7af", 377_280,
             "K2", _EXAMPLES + "ktwo211117077-c04_llc.fits"),
    RealFile("kplr010002792-2009259160929_llc.fits",
             "65ec2b64d904b3f241c92d216509748d4fded02a8ee9dc397ce11ed7aa72af80", 466_560,
             "Kepler", _EXAMPLES + "kplr010002792-2009259160929_llc.fits"),
    RealFile("kplr010002792-2010174085026_llc.fits",
             "a0bfd85d5403e761d7d761717f6476d802d3865b2c77196f804a7bfe38c37c36", 492_480,
             "Kepler", _EXAMPLES + "kplr010002792-2010174085026_llc.fits"),
)

_HOW = ("Get them with `python bench/real_files.py` (runs `pip download {req} --no-deps "
        "--no-binary :all:` and unpacks the light curves), or by hand: download that sdist, "
        "unpack {names} from {examples} into {folder} (or set SKYRETRIEVER_REAL_FILES to the "
        "folder that holds them).")


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


def how_to_get(folder: Path) -> str:
    """A sentence saying how to get the real files into ``folder`` by hand."""
    return _HOW.format(req=ALTAIPONY[0], names=", ".join(r.name for r in REAL_FILES),
                       examples=_EXAMPLES, folder=folder)


def fetch_real_files(folder: str | os.PathLike | None = None, timeout: float = 600.0
                     ) -> list[Path]:
    """Make sure every file of :data:`REAL_FILES` is in ``folder`` (default :func:`default_cache`);
    returns their paths.

    Missing ones are taken from altaipony's source distribution, downloaded with
    ``pip download`` (so through the package index and proxy pip is configured
    for); the sdist and every file are checked against their recorded SHA-256.

    Raises
    ------
    RealFilesUnavailable
        If pip cannot get the sdist or a checksum differs, saying how to get the
        files by hand.
    """
    folder = Path(folder) if folder is not None else default_cache()
    present = {path.name for path in find_real_files(folder)}
    missing = [real for real in REAL_FILES if real.name not in present]
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="real-files-") as scratch:
            command = [sys.executable, "-m", "pip", "download", ALTAIPONY[0], "--no-deps",
                       "--no-binary", ":all:", "--disable-pip-version-check", "-d", scratch]
            try:
                subprocess.run(command, check=True, capture_output=True, text=True,
                               timeout=timeout)
            except (OSError, subprocess.SubprocessError) as error:
                detail = getattr(error, "stderr", None) or str(error)
                raise RealFilesUnavailable(f"pip could not download {ALTAIPONY[0]}: "
                                           f"{detail.strip()[-500:]}. {how_to_get(folder)}"
                                           ) from error
            sdists = list(Path(scratch).glob("*.tar.gz"))
            if len(sdists) != 1 or file_sha256(sdists[0]) != ALTAIPONY[1]:
                raise RealFilesUnavailable(f"the {ALTAIPONY[0]} sdist pip gave is not the one "
                                           f"recorded (SHA-256 {ALTAIPONY[1]}). "
                                           f"{how_to_get(folder)}")
            with tarfile.open(sdists[0]) as archive:
                for real in missing:
                    member = archive.extractfile(real.member)
                    if member is None:
                        raise RealFilesUnavailable(f"{real.member} is not in the sdist")
                    with atomic_write(folder / real.name) as partial:
                        with open(partial, "wb") as handle:
                            shutil.copyfileobj(member, handle)
                        if file_sha256(partial) != real.sha256:  # the error removes the partial
                            raise RealFilesUnavailable(f"{real.name} from the sdist does not "
                                                       f"have the recorded SHA-256 {real.sha256}")
    found = find_real_files(folder)
    if len(found) != len(REAL_FILES):
        raise RealFilesUnavailable(f"real files missing from {folder}. {how_to_get(folder)}")
    return found


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
