"""The simulated IRSA Image Back End (IBE) of ZTF's science images: search and cutouts.

:class:`IbeService` serves, over the stars of a
:class:`~skyretriever.testing.sky.SimulatedSky`, one science image per epoch of
each star's own ZTF objects (the epochs, filters, fields, CCDs, quadrants and
zero points the simulated light-curve service of
:mod:`skyretriever.testing.irsa` sends for it):

- ``GET /ibe/search/ztf/products/sci?POS=ra,dec`` lists the images holding the
  position: an IPAC table (IBE's default, what astroquery's ``Ibe`` reads) or
  CSV with ``ct=csv``; ``WHERE`` understands ``obsjd BETWEEN a AND b``,
  ``filtercode IN ('zg', ...)`` and ``filtercode = 'zr'`` joined by ``AND``;
  header only when nothing holds it.
- ``GET /ibe/data/ztf/products/sci/YYYY/MMDD/ffffff/ztf_..._sciimg.fits?center=ra,dec&size=w[,h][units]&gzip=false``
  sends a FITS cutout: the science image's header (``OBSJD``, ``FILTER``,
  ``FIELDID``, ``CCDID``, ``QID``, ``MAGZP``, ``GAIN``, ``READNOI``,
  ``SEEING``, ``INFOBITS``...) and its TAN WCS moved to the cutout (``LTV1``/``LTV2``
  give the offset), the star drawn at its position at that epoch with the
  image's seeing and zero point over a noisy sky. A cutout past an edge is
  clipped; one off the image is HTTP 400, as IBE answers.

The server's :class:`~skyretriever.testing.server.Faults` reach both (the
cutouts are sent as files, so cut-short bodies and HTML pages hit them);
``seconds_per_cutout`` is server time per cutout.

Examples
--------
>>> from skyretriever.testing import SimulatedSky, SimulatedStar
>>> service = IbeService(SimulatedSky([SimulatedStar("wd", 10.0, 20.0, gmag=16.0)]))
>>> rows = service.search(10.0, 20.0)
>>> len(rows), sorted({row["filtercode"] for row in rows})
(288, ['zg', 'zr'])
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from skyretriever.testing.irsa import ztf_objects
from skyretriever.testing.server import Reply, Request, Route, Service
from skyretriever.testing.sky import SimulatedSky

__all__ = ["PIXEL_ARCSEC", "QUADRANT_SHAPE", "IbeService", "ScienceImage"]

#: Arcseconds per ZTF pixel.
PIXEL_ARCSEC = 1.012
#: Rows and columns of a ZTF CCD quadrant.
QUADRANT_SHAPE = (3080, 3072)
SKY_DN = 150.0
GAIN, READ_NOISE = 6.2, 8.0
FILTER_IDS = {"zg": 1, "zr": 2, "zi": 3}
_SEARCH_COLUMNS = ("in_row_id", "field", "ccdid", "qid", "rcid", "fid", "filtercode", "pid",
                   "expid", "imgtypecode", "obsjd", "exptime", "filefracday", "seeing",
                   "airmass", "maglimit", "magzp", "infobits", "ra", "dec", "crpix1", "crpix2",
                   "crval1", "crval2", "ra1", "dec1", "ra2", "dec2", "ra3", "dec3", "ra4", "dec4")
_NAME = re.compile(r"ztf_(\d{14})_(\d{6})_(z[gri])_c(\d{2})_([a-z])_q(\d)_sciimg\.fits$")


@dataclass(frozen=True)
class ScienceImage:
    """One simulated science image: what the search lists and how its pixels are made."""

    row: dict[str, Any]
    #: Where the star is at this epoch (degrees), its magnitude in the image.
    star_ra: float
    star_dec: float
    star_mag: float
    #: TAN projection: reference sky position and its (1-based) pixel.
    crval: tuple[float, float]
    crpix: tuple[float, float]

    @property
    def path(self) -> str:
        row = self.row
        day = f"{row['filefracday']:014d}"
        return (f"{day[:4]}/{day[4:8]}/{day[8:]}/ztf_{day}_{row['field']:06d}_"
                f"{row['filtercode']}_c{row['ccdid']:02d}_{row['imgtypecode']}_"
                f"q{row['qid']}_sciimg.fits")


def _pixels(ra, dec, crval: tuple[float, float], crpix) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel (x, y) of sky positions in a TAN image with CD = diag(-s, s)."""
    ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    ra0, dec0 = np.radians(crval[0]), np.radians(crval[1])
    cos_c = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    xi = np.degrees(np.cos(dec) * np.sin(ra - ra0) / cos_c)
    eta = np.degrees((np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec)
                      * np.cos(ra - ra0)) / cos_c)
    scale = PIXEL_ARCSEC / 3600.0
    crpix = np.asarray(crpix, float)
    return crpix[..., 0] - 1.0 - xi / scale, crpix[..., 1] - 1.0 + eta / scale


def _rng(*parts: Any) -> np.random.Generator:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class IbeService(Service):
    """IRSA's IBE search and cutouts of ZTF science images over a :class:`SimulatedSky`."""

    name = "ibe"

    def __init__(self, sky: SimulatedSky, seconds_per_cutout: float = 0.0,
                 prefix: str = "/ibe") -> None:
        self.sky = sky
        self.seconds_per_cutout = seconds_per_cutout
        self.routes = [Route(("GET",), f"{prefix}/search/ztf/products/sci", self.handle_search),
                       Route(("GET",), f"{prefix}/data/ztf/products/sci/", self.handle_cutout,
                             prefix=True)]
        self.cutouts_served = 0
        self._images: dict[str, ScienceImage] | None = None
        self._lock = threading.Lock()

    # -- the images ----------------------------------------------------------------------------
    @property
    def images(self) -> dict[str, ScienceImage]:
        """Every science image of the sky, by path (made on first use)."""
        with self._lock:
            if self._images is None:
                self._images = {}
                for star in self.sky.stars:
                    for image in self._images_of(star):
                        self._images[image.path] = image
            return self._images

    def _images_of(self, star) -> list[ScienceImage]:
        everything = ztf_objects(star, self.sky.seed)
        # The star's own objects (one per filter) end in the same serial; neighbours' do not.
        objects = [o for o in everything if str(o.oid)[-8:] == str(everything[0].oid)[-8:]]
        rng = _rng("ibe", self.sky.seed, star.name)
        # Where the star lies on its quadrant, and how far each exposure's pointing wanders.
        base = (QUADRANT_SHAPE[1] / 2 + rng.uniform(-1200, 1200),
                QUADRANT_SHAPE[0] / 2 + rng.uniform(-1200, 1200))
        made = []
        for obj in objects:
            table = obj.table
            count = len(table["mjd"])
            jitter = rng.uniform(-15.0, 15.0, (count, 2))
            seeing = np.round(rng.uniform(1.6, 2.6, count), 3)
            for index in range(count):
                crpix = (base[0] + 1.0 + jitter[index, 0], base[1] + 1.0 + jitter[index, 1])
                crval = (obj.ra, obj.dec)
                corners = [(0, 0), (QUADRANT_SHAPE[1] - 1, 0),
                           (QUADRANT_SHAPE[1] - 1, QUADRANT_SHAPE[0] - 1),
                           (0, QUADRANT_SHAPE[0] - 1)]
                scale = PIXEL_ARCSEC / 3600.0
                cos_dec = max(np.cos(np.radians(obj.dec)), 1e-6)
                sky_corners = [(obj.ra - (x + 1 - crpix[0]) * scale / cos_dec,
                                obj.dec + (y + 1 - crpix[1]) * scale) for x, y in corners]
                row = {
                    "in_row_id": 0, "field": int(table["field"][index]),
                    "ccdid": int(table["ccdid"][index]), "qid": int(table["qid"][index]),
                    "rcid": (int(table["ccdid"][index]) - 1) * 4 + int(table["qid"][index]) - 1,
                    "fid": FILTER_IDS[obj.filtercode], "filtercode": obj.filtercode,
                    "pid": int(table["expid"][index]) * 100, "expid": int(table["expid"][index]),
                    "imgtypecode": "o", "obsjd": round(float(table["mjd"][index]) + 2400000.5, 6),
                    "exptime": 30.0, "filefracday": int(table["filefracday"][index]),
                    "seeing": float(seeing[index]), "airmass": float(table["airmass"][index]),
                    "maglimit": float(table["limitmag"][index]),
                    "magzp": float(table["magzp"][index]),
                    "infobits": 33554432 if int(table["catflags"][index]) & 32768 else 0,
                    "ra": round(obj.ra, 7), "dec": round(obj.dec, 7),
                    "crpix1": round(crpix[0], 3), "crpix2": round(crpix[1], 3),
                    "crval1": round(obj.ra, 7), "crval2": round(obj.dec, 7),
                }
                for number, (ra, dec) in enumerate(sky_corners, start=1):
                    row[f"ra{number}"], row[f"dec{number}"] = round(ra % 360.0, 7), round(dec, 7)
                made.append(ScienceImage(row, float(table["ra"][index]),
                                         float(table["dec"][index]),
                                         float(table["mag"][index]), crval, crpix))
        for number, image in enumerate(sorted(made, key=lambda i: i.row["obsjd"])):
            image.row["in_row_id"] = number + 1
        return made

    def search(self, ra: float, dec: float, where: str | None = None) -> list[dict[str, Any]]:
        """The rows of the images holding ``ra, dec`` that pass ``where``, by time."""
        selected = _where(where)
        found = []
        for image in self.images.values():
            x, y = _pixels(ra, dec, image.crval, image.crpix)
            if not (-0.5 <= x < QUADRANT_SHAPE[1] - 0.5 and -0.5 <= y < QUADRANT_SHAPE[0] - 0.5):
                continue
            if selected(image.row):
                found.append(image.row)
        return sorted(found, key=lambda row: (row["obsjd"], row["filtercode"]))

    # -- the requests --------------------------------------------------------------------------
    def handle_search(self, request: Request) -> Reply:
        position = request.arg("POS")
        if not position:
            return _error("POS=ra,dec is required (WHERE-only searches are not simulated)")
        try:
            ra, dec = (float(value) for value in position.split(","))
            rows = self.search(ra, dec, request.arg("WHERE") or request.arg("where"))
        except ValueError as error:
            return _error(f"bad query: {error}")
        output = (request.arg("ct") or "ipac_table").lower()
        if output == "csv":
            lines = [",".join(_SEARCH_COLUMNS)]
            lines += [",".join(str(row[c]) for c in _SEARCH_COLUMNS) for row in rows]
            return Reply.file(("\n".join(lines) + "\n").encode(), content_type="text/csv")
        if output not in ("ipac_table", "ipac"):
            return _error(f"ct={output!r} is not supported (csv, ipac_table)")
        return Reply.file(_ipac_table(rows).encode(), content_type="text/plain")

    def handle_cutout(self, request: Request) -> Reply:
        match = _NAME.search(request.path)
        image = self.images.get(request.path.split("/products/sci/", 1)[-1]) if match else None
        if image is None:
            return Reply.text("404 Not Found\n", status=404)
        center, size = request.arg("center"), request.arg("size")
        if not center or not size:
            return _error("the simulator serves cutouts only: give center=ra,dec and size")
        try:
            ra, dec = (float(value) for value in center.split(","))
            width, height = _size_pixels(size)
        except ValueError as error:
            return _error(f"bad cutout query: {error}")
        x, y = _pixels(ra, dec, image.crval, image.crpix)
        x0, y0 = int(np.floor(x - width / 2 + 0.5)), int(np.floor(y - height / 2 + 0.5))
        x1, y1 = x0 + int(np.ceil(width)), y0 + int(np.ceil(height))
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, QUADRANT_SHAPE[1]), min(y1, QUADRANT_SHAPE[0])
        if x0 >= x1 or y0 >= y1:
            return _error("the cutout does not overlap the image")
        if self.seconds_per_cutout:
            time.sleep(self.seconds_per_cutout)
        body = _cutout_file(image, (x0, x1), (y0, y1))
        with self._lock:
            self.cutouts_served += 1
        return Reply.file(body, content_type="image/fits")


def _error(message: str) -> Reply:
    return Reply.text(f"<html><body><h1>400 Bad Request</h1><p>{message}</p></body></html>\n",
                      status=400, content_type="text/html")


def _where(where: str | None):
    """A test of a row for IBE's WHERE (the forms the simulator knows), or ValueError."""
    tests = []
    text = where or ""
    for pattern, make in (
        (r"obsjd\s+between\s+([-+\d.eE]+)\s+and\s+([-+\d.eE]+)",
         lambda m: lambda row: float(m[1]) <= row["obsjd"] <= float(m[2])),
        (r"filtercode\s+in\s*\(([^)]*)\)",
         lambda m: lambda row: row["filtercode"] in {v.strip().strip("'\"")
                                                     for v in m[1].split(",")}),
        (r"filtercode\s*=\s*'(\w+)'", lambda m: lambda row: row["filtercode"] == m[1]),
    ):
        for found in re.finditer(pattern, text, flags=re.IGNORECASE):
            tests.append(make(found))
        text = re.sub(pattern, " ", text, flags=re.IGNORECASE)
    if re.sub(r"\band\b", " ", text, flags=re.IGNORECASE).strip():
        raise ValueError(f"WHERE {where!r}: the simulator knows obsjd BETWEEN, filtercode IN "
                         "and filtercode = joined by AND")
    return lambda row: all(test(row) for test in tests)


def _size_pixels(size: str) -> tuple[float, float]:
    """Width and height (pixels) of IBE's ``size=w[,h][units]`` (degrees by default)."""
    match = re.fullmatch(r"\s*([\d.eE+-]+)(?:\s*,\s*([\d.eE+-]+))?\s*([a-z]*)\s*", size)
    if match is None:
        raise ValueError(f"size {size!r}")
    units = {"": 3600.0, "deg": 3600.0, "arcmin": 60.0, "arcsec": 1.0}
    width = float(match[1])
    height = float(match[2]) if match[2] else width
    if match[3] in ("px", "pix"):
        pixels = (width, height)
    elif match[3] in units:
        pixels = (width * units[match[3]] / PIXEL_ARCSEC, height * units[match[3]] / PIXEL_ARCSEC)
    else:
        raise ValueError(f"size units {match[3]!r}")
    if min(pixels) <= 0:
        raise ValueError(f"size {size!r} must be positive")
    return pixels


def _cutout_file(image: ScienceImage, columns: tuple[int, int], rows: tuple[int, int]) -> bytes:
    from astropy.io import fits

    row = image.row
    yy, xx = np.mgrid[rows[0]:rows[1], columns[0]:columns[1]]
    x, y = _pixels(image.star_ra, image.star_dec, image.crval, image.crpix)
    sigma = row["seeing"] / 2.3548 / PIXEL_ARCSEC
    star_dn = 10 ** (-0.4 * (image.star_mag - row["magzp"]))
    model = SKY_DN + star_dn * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)) \
        / (2 * np.pi * sigma**2)
    rng = _rng("pixels", image.path, columns, rows)
    noise = np.sqrt(model / GAIN + (READ_NOISE / GAIN) ** 2)
    pixels = (model + rng.standard_normal(model.shape) * noise).astype(np.float32)
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRVAL1"], header["CRVAL2"] = image.crval
    header["CRPIX1"] = image.crpix[0] - columns[0]
    header["CRPIX2"] = image.crpix[1] - rows[0]
    scale = PIXEL_ARCSEC / 3600.0
    header["CD1_1"], header["CD1_2"], header["CD2_1"], header["CD2_2"] = -scale, 0.0, 0.0, scale
    header["LTV1"], header["LTV2"] = -columns[0], -rows[0]
    header["OBSJD"] = row["obsjd"]
    header["OBSMJD"] = row["obsjd"] - 2400000.5
    header["EXPTIME"] = row["exptime"]
    header["FILTER"] = f"ZTF_{row['filtercode'][1]}"
    header["FILTERID"] = row["fid"]
    header["FIELDID"], header["CCDID"], header["QID"] = row["field"], row["ccdid"], row["qid"]
    header["MAGZP"], header["MAGZPUNC"] = row["magzp"], 1e-5
    header["GAIN"], header["READNOI"] = GAIN, READ_NOISE
    header["SEEING"] = row["seeing"]
    header["INFOBITS"] = row["infobits"]
    header["ORIGIN"] = "skyretriever simulated IBE"
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits.PrimaryHDU(pixels, header=header).writeto(buffer)
    return buffer.getvalue()


def _ipac_table(rows: list[dict[str, Any]]) -> str:
    from astropy.table import Table

    table = Table(rows=[[row[c] for c in _SEARCH_COLUMNS] for row in rows] or None,
                  names=_SEARCH_COLUMNS,
                  dtype=[type(rows[0][c]) if rows else float for c in _SEARCH_COLUMNS]
                  if rows else None)
    if not rows:
        table = Table({c: np.array([], dtype=str if c in ("filtercode", "imgtypecode")
                                   else float) for c in _SEARCH_COLUMNS})
    buffer = io.StringIO()
    table.write(buffer, format="ipac")
    return buffer.getvalue()
