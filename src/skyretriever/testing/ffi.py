"""Simulated TESS full-frame images: calibrated FFI files, their cubes, the bucket and TESScut.

:class:`FFISky` makes small calibrated FFIs (the real layout: primary header,
the calibrated image with its TAN-SIP WCS and ``DQUALITY``, the uncertainty
image) of a few stars, one sector/camera/CCD at a time, and turns them into a
cube with astrocut's own ``CubeFactory`` (so the cube is what MAST publishes,
byte layout included). :class:`CubeBucketService` serves the cubes and FFIs
under their bucket keys (``tess/public/mast/tess-s0001-1-1-cube.fits``) with
``Range``, ListObjectsV2 and S3's errors; :class:`TesscutService` answers
TESScut's ``api/v0.1/sector`` and ``api/v0.1/astrocut`` (GET or form POST) with
astrocut's cutouts of those cubes in a zip, or ``{"msg": ...}`` when nothing
overlaps, with knobs for server time per cutout and for 504 answers.

Examples
--------
>>> sky = FFISky.simple(tmp_path, stars=[FFIStar("a", 100.0, -30.0, tmag=10.0)])  # doctest: +SKIP
>>> with ArchiveServer([TesscutService(sky), CubeBucketService(sky)]) as server:   # doctest: +SKIP
...     Tesscut.get_cutouts(coordinates=SkyCoord(100, -30, unit="deg"), size=5)
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from skyretriever.testing.server import Reply, Request, Route, Service
from skyretriever.testing.stars import Transit

__all__ = ["CubeBucketService", "FFISector", "FFISky", "FFIStar", "TesscutService"]

#: Seconds between FFIs (the 30-minute cadence of sectors 1-26).
FFI_CADENCE_DAYS = 1800.0 / 86400.0
#: Arcseconds per TESS pixel.
PIXEL_ARCSEC = 21.0


@dataclass(frozen=True)
class FFIStar:
    """A star in the simulated FFIs: position, TESS magnitude and an optional transit."""

    name: str
    ra: float
    dec: float
    tmag: float = 11.0
    transit: Transit | None = None

    @property
    def flux(self) -> float:
        """Electrons per second of the star (15,000 at Tmag 10, TESS's rough zero point)."""
        return 15000.0 * 10 ** (-0.4 * (self.tmag - 10.0))


@dataclass
class FFISector:
    """One sector/camera/CCD: its image size, pointing, frames, and the files made of it."""

    sector: int
    camera: int
    ccd: int
    centre: tuple[float, float]
    shape: tuple[int, int] = (48, 48)
    frames: int = 96
    start_btjd: float = 1325.3
    #: Frames flagged in DQUALITY (bit 32, reaction-wheel desaturation), by index.
    flagged: tuple[int, ...] = (10, 50)
    cube_path: Path | None = None
    ffi_paths: list[Path] = field(default_factory=list)
    #: ``SPOC`` (calibrated FFIs, cubes by astrocut) or ``TICA`` (quick-look FFIs: the image
    #: in the primary HDU, a cube of flux only with long headers, under ``mast/tica/``).
    product: str = "SPOC"

    @property
    def name(self) -> str:
        prefix = "tica" if self.product == "TICA" else "tess"
        return f"{prefix}-s{self.sector:04d}-{self.camera}-{self.ccd}"

    @property
    def cube_key(self) -> str:
        folder = "tess/public/mast/tica" if self.product == "TICA" else "tess/public/mast"
        return f"{folder}/{self.name}-cube.fits"

    def wcs_header(self):
        from astropy.wcs import WCS

        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
        wcs.wcs.crval = list(self.centre)
        wcs.wcs.crpix = [self.shape[1] / 2 + 0.5, self.shape[0] / 2 + 0.5]
        wcs.wcs.cdelt = [-PIXEL_ARCSEC / 3600.0, PIXEL_ARCSEC / 3600.0]
        wcs.wcs.cunit = ["deg", "deg"]
        header = wcs.to_header(relax=True)
        header["WCSAXES"] = 2
        for kind in ("A", "B", "AP", "BP"):
            header[f"{kind}_ORDER"] = 2
        header["A_2_0"], header["B_0_2"] = 2e-7, 2e-7
        header["AP_2_0"], header["BP_0_2"] = -2e-7, -2e-7
        return header


class FFISky:
    """Stars seen in the FFIs of some sectors; makes the FFI files and cubes in ``folder``."""

    def __init__(self, folder: str | Path, stars: list[FFIStar], sectors: list[FFISector],
                 seed: int = 0) -> None:
        self.folder = Path(folder)
        self.stars = list(stars)
        self.sectors = list(sectors)
        self.seed = seed
        self._lock = threading.Lock()
        self._bytes: dict[str, bytes] = {}
        for sector in self.sectors:
            self._make(sector)

    @classmethod
    def simple(cls, folder: str | Path, stars: list[FFIStar], sectors: tuple[int, ...] = (1, 2),
               frames: int = 96, shape: tuple[int, int] = (48, 48), product: str = "SPOC"
               ) -> FFISky:
        """FFIs of ``sectors`` (camera 1, CCD 1) centred near the first star, pointings a few
        pixels apart from sector to sector; ``product`` ``TICA`` makes TICA's instead."""
        ra, dec = stars[0].ra, stars[0].dec
        made = []
        for number, sector in enumerate(sectors):
            offset = 3.3 * number * PIXEL_ARCSEC / 3600.0
            made.append(FFISector(sector, 1, 1, (ra + offset, dec - offset / 2), shape=shape,
                                  frames=frames, start_btjd=1325.3 + 27.4 * (sector - 1),
                                  product=product))
        return cls(folder, stars, made)

    @classmethod
    def pointed(cls, folder: str | Path, stars: list[FFIStar], count: int = 2,
                decoys: tuple[tuple[int, int, int], ...] = (), frames: int = 24,
                shape: tuple[int, int] = (32, 32)) -> FFISky:
        """FFIs of the first ``count`` sectors, cameras and CCDs where TESS's pointing model
        (tess-point) puts the first star, so a pointing lookup finds them; ``decoys`` are
        (sector, camera, CCD) where the model does not put it, made holding the star all
        the same (only a lookup by WCS finds the star there)."""
        import tess_stars2px

        star = stars[0]
        answer = tess_stars2px.tess_stars2px_function_entry([0], [star.ra], [star.dec])
        found = sorted({(int(s), int(c), int(d)) for s, c, d in zip(*answer[3:6]) if 0 < s < 1000})
        made = [FFISector(sector, camera, ccd, (star.ra, star.dec), shape=shape, frames=frames,
                          start_btjd=1325.3 + 27.4 * (sector - 1))
                for sector, camera, ccd in [*found[:count], *decoys]]
        return cls(folder, stars, made)

    def add_sector(self, sector: FFISector) -> FFISector:
        """Make the files of one more sector (as MAST publishing a new sector): the bucket and
        TESScut serving this sky have it from their next request."""
        self._make(sector)
        with self._lock:
            self.sectors.append(sector)
        return sector

    # -- making the files ----------------------------------------------------------------
    def _make(self, sector: FFISector) -> None:
        import astrocut
        from astropy.io import fits
        from astropy.wcs import WCS

        folder = self.folder / sector.name
        folder.mkdir(parents=True, exist_ok=True)
        header = sector.wcs_header()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wcs = WCS(header)
        rows, columns = sector.shape
        yy, xx = np.mgrid[0:rows, 0:columns]
        rng = np.random.default_rng([self.seed, sector.sector, sector.camera, sector.ccd])
        stamps = []
        for star in self.stars:
            x, y = wcs.all_world2pix([[star.ra, star.dec]], 0)[0]
            stamps.append((star, np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 0.9**2))
                           / (2 * np.pi * 0.9**2)))
        paths = []
        for index in range(sector.frames):
            tstart = sector.start_btjd + index * FFI_CADENCE_DAYS
            tstop = tstart + FFI_CADENCE_DAYS * 0.99
            # The exposure integrates the light: a frame catching part of a transit is dimmed
            # by the part it caught.
            exposure = np.linspace(tstart, tstop, 31) + 2457000.0
            image = np.full((rows, columns), 120.0)
            for star, stamp in stamps:
                flux = star.flux
                if star.transit is not None:
                    flux *= 1.0 - star.transit.depth * star.transit.in_transit(exposure).mean()
                image += flux * stamp
            error = np.sqrt(image + 25.0)
            image = image + rng.normal(0.0, 1.0, image.shape) * error
            if sector.product == "TICA":
                paths.append(_tica_ffi(folder, sector, index, tstart, tstop, image, header))
                continue
            primary = fits.PrimaryHDU()
            stamp_text = f"{2018 + (sector.sector - 1) // 13}{206 + index // 48:03d}" \
                         f"{(index % 48) // 2:02d}{(index % 2) * 30:02d}00"
            filename = (f"tess{stamp_text}-s{sector.sector:04d}-{sector.camera}-{sector.ccd}"
                        "-0120-s_ffic.fits")
            for target in (primary.header,):
                target["TELESCOP"], target["INSTRUME"] = "TESS", "TESS Photometer"
                target["SECTOR"], target["CAMERA"], target["CCD"] = (sector.sector,
                                                                     sector.camera, sector.ccd)
                target["TSTART"], target["TSTOP"] = tstart, tstop
                target["DATE-OBS"] = "2018-07-25T19:00:00.000"
                target["DATE-END"] = "2018-07-25T19:30:00.000"
                target["FFIINDEX"] = 1000 + index
            calibrated = fits.ImageHDU(image.astype(np.float32), header=header.copy())
            calibrated.header["CAMERA"], calibrated.header["CCD"] = sector.camera, sector.ccd
            calibrated.header["TSTART"], calibrated.header["TSTOP"] = tstart, tstop
            calibrated.header["TELAPSE"] = tstop - tstart
            calibrated.header["DATE-OBS"] = "2018-07-25T19:00:00.000"
            calibrated.header["DATE-END"] = "2018-07-25T19:30:00.000"
            calibrated.header["BARYCORR"] = 0.0021
            calibrated.header["DQUALITY"] = 32 if index in sector.flagged else 0
            calibrated.header["FFIINDEX"] = 1000 + index
            uncertainty = fits.ImageHDU(error.astype(np.float32))
            path = folder / filename
            fits.HDUList([primary, calibrated, uncertainty]).writeto(path, overwrite=True)
            paths.append(path)
        cube = folder / f"{sector.name}-cube.fits"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if sector.product == "TICA":  # astrocut no longer makes TICA cubes
                _tica_cube(paths, cube, sector)
            else:
                astrocut.CubeFactory().make_cube([str(p) for p in paths], str(cube),
                                                 sector=sector.sector, verbose=False)
        sector.cube_path, sector.ffi_paths = cube, paths

    # -- what the archives look up -----------------------------------------------------------
    def keys(self) -> dict[str, Path]:
        """Bucket key of every file: the cubes and the calibrated FFIs."""
        found = {}
        for sector in self.sectors:
            found[sector.cube_key] = sector.cube_path
            for path in sector.ffi_paths if sector.product == "SPOC" else ():
                year, day = path.name[4:8], path.name[8:11]
                found[(f"tess/public/ffi/s{sector.sector:04d}/{year}/{day}/"
                       f"{sector.camera}-{sector.ccd}/{path.name}")] = path
        return found

    def file_bytes(self, key: str) -> bytes | None:
        path = self.keys().get(key)
        if path is None:
            return None
        with self._lock:
            if key not in self._bytes:
                self._bytes[key] = path.read_bytes()
            return self._bytes[key]

    def sectors_at(self, ra: float, dec: float, radius: float = 0.0, product: str = "SPOC"
                   ) -> list[FFISector]:
        """The sectors of ``product`` whose CCD holds the position (within ``radius`` degrees
        of an edge)."""
        from astropy.coordinates import SkyCoord
        from astropy.wcs import WCS

        found = []
        for sector in self.sectors:
            if sector.product != product:
                continue
            size = max(sector.shape) * PIXEL_ARCSEC / 3600.0
            away = SkyCoord(ra, dec, unit="deg").separation(
                SkyCoord(*sector.centre, unit="deg")).deg
            if away > size + radius:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                x, y = WCS(sector.wcs_header()).all_world2pix([[ra, dec]], 0)[0]
            margin = radius * 3600.0 / PIXEL_ARCSEC
            rows, columns = sector.shape
            if -0.5 - margin <= x < columns - 0.5 + margin and -0.5 - margin <= y < rows - 0.5 + margin:
                found.append(sector)
        return found


class CubeBucketService(Service):
    """The cubes and FFIs of an :class:`FFISky` in the ``stpubdata`` bucket (GET with Range, list)."""

    name = "s3-ffi"

    def __init__(self, sky: FFISky, bucket: str = "stpubdata") -> None:
        self.sky = sky
        self.bucket = bucket
        #: The ``Range`` of every ranged read (what the S3 route asked for).
        self.ranges: list[str] = []
        self._etags: dict[str, str] = {}
        self._etag_lock = threading.Lock()
        self.routes = [Route(("GET",), f"/{bucket}", self.handle, prefix=True),
                       Route(("GET",), "/missions/tess/ffi/", self.https_file, prefix=True)]

    def https_file(self, request: Request) -> Reply:
        """MAST's HTTPS copy of an FFI (``/missions/tess/ffi/s0001/...``)."""
        key = "tess/public/ffi/" + request.path.removeprefix("/missions/tess/ffi/")
        content = self.sky.file_bytes(key)
        if content is None:
            return Reply.text("Not Found", status=404)
        return Reply.file(content, content_type="application/fits")

    def handle(self, request: Request) -> Reply:
        _, _, key = request.path.lstrip("/").partition("/")
        if not key:
            prefix = request.arg("prefix", "") or ""
            keys = sorted(k for k in self.sky.keys() if k.startswith(prefix))
            contents = "".join(f"<Contents><Key>{escape(k)}</Key><Size>"
                               f"{self.sky.keys()[k].stat().st_size}</Size></Contents>"
                               for k in keys)
            body = ('<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns='
                    '"http://s3.amazonaws.com/doc/2006-03-01/">'
                    f"<Name>{self.bucket}</Name><Prefix>{escape(prefix)}</Prefix>"
                    f"<KeyCount>{len(keys)}</KeyCount><MaxKeys>1000</MaxKeys>"
                    f"<IsTruncated>false</IsTruncated>{contents}</ListBucketResult>")
            return Reply(body=body.encode(), content_type="application/xml")
        content = self.sky.file_bytes(key)
        if content is None:
            body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
                    f"<Message>The specified key does not exist.</Message><Key>{escape(key)}"
                    "</Key></Error>")
            return Reply(status=404, body=body.encode(), content_type="application/xml")
        if request.headers.get("range"):
            self.ranges.append(request.headers["range"])
        # The ETag of a 100 MB cube is hashed once, not on every ranged read.
        with self._etag_lock:
            etag = self._etags.get(key)
            if etag is None:
                etag = self._etags[key] = Reply.file(content).headers["ETag"]
        return Reply(status=200, body=content, content_type="binary/octet-stream", is_file=True,
                     headers={"ETag": etag, "Last-Modified": "Tue, 01 Jan 2019 00:00:00 GMT",
                              "x-amz-request-id":
                              hashlib.sha256(key.encode()).hexdigest()[:16].upper()})


class TesscutService(Service):
    """MAST's TESScut (``/tesscut/api/v0.1/sector`` and ``.../astrocut``) over an :class:`FFISky`.

    ``seconds_per_cutout`` is server time per cutout made; ``gateway_timeouts``
    answers each distinct astrocut request with HTTP 504 that many times first.
    """

    name = "tesscut"

    def __init__(self, sky: FFISky, seconds_per_cutout: float = 0.0,
                 gateway_timeouts: int = 0, prefix: str = "/tesscut/api/v0.1") -> None:
        self.sky = sky
        self.seconds_per_cutout = seconds_per_cutout
        self.gateway_timeouts = gateway_timeouts
        self.routes = [Route(("GET", "POST"), f"{prefix}/sector", self.sector),
                       Route(("GET", "POST"), f"{prefix}/astrocut", self.astrocut)]

    @staticmethod
    def _args(request: Request) -> dict[str, str]:
        values = {k: v[0] for k, v in request.query.items() if v}
        if request.method == "POST":
            values.update({k: v[0] for k, v in request.form().items() if v})
        return values

    def sector(self, request: Request) -> Reply:
        args = self._args(request)
        try:
            ra, dec = float(args["ra"]), float(args["dec"])
            radius = float(args.get("radius", 0) or 0)
        except (KeyError, ValueError):
            return Reply.json({"msg": "ra and dec are required (degrees)"}, status=400)
        results = [{"sectorName": s.name, "sector": str(s.sector), "camera": str(s.camera),
                    "ccd": str(s.ccd)} for s in self.sky.sectors_at(ra, dec, radius)]
        return Reply.json({"results": results})

    def astrocut(self, request: Request) -> Reply:
        import astrocut
        from astropy.coordinates import SkyCoord

        if request.occurrence < self.gateway_timeouts:
            return Reply.text("<html><body><h1>504 Gateway Time-out</h1></body></html>",
                              status=504, content_type="text/html")
        args = self._args(request)
        try:
            ra, dec = float(args["ra"]), float(args["dec"])
            rows, columns = int(args.get("y", 5)), int(args.get("x", args.get("y", 5)))
        except (KeyError, ValueError):
            return Reply.json({"msg": "ra, dec, y and x are required"}, status=400)
        if (args.get("units") or "px") != "px":
            return Reply.json({"msg": "only units=px is simulated"}, status=400)
        sectors = self.sky.sectors_at(ra, dec)
        if args.get("sector"):
            sectors = [s for s in sectors if s.sector == int(args["sector"])]
        if not sectors:
            return Reply.json({"msg": "The requested cutout does not overlap any TESS sector."})
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for sector in sectors:
                if self.seconds_per_cutout:
                    time.sleep(self.seconds_per_cutout)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    hdulist = astrocut.CutoutFactory().cube_cut(
                        str(sector.cube_path), SkyCoord(ra, dec, unit="deg"), [rows, columns],
                        memory_only=True)
                data = io.BytesIO()
                hdulist.writeto(data)
                archive.writestr(f"{sector.name}_{ra}_{dec}_{columns}x{rows}_astrocut.fits",
                                 data.getvalue())
        return Reply(body=buffer.getvalue(), content_type="application/zip",
                     headers={"Content-Disposition": "attachment; filename=astrocut.zip"})


#: How many commentary cards pad a simulated TICA cube's primary header (TICA's headers are
#: longer than SPOC's: readers must read the header, not assume its length).
TICA_HEADER_PADDING = 400


def _tica_ffi(folder: Path, sector: FFISector, index: int, tstart: float, tstop: float,
              image: np.ndarray, wcs_header) -> Path:
    """One TICA quick-look FFI: the image in the primary HDU, TICA's time and quality keywords."""
    from astropy.io import fits

    header = wcs_header.copy()
    header["CAMNUM"], header["CCDNUM"] = sector.camera, sector.ccd
    header["SECTOR"] = sector.sector
    header["TJD_ZERO"] = 2457000.0
    header["STARTTJD"], header["ENDTJD"] = tstart, tstop
    header["MIDTJD"] = 0.5 * (tstart + tstop)
    header["QUAL_BIT"] = 32 if index in sector.flagged else 0
    header["INT_TIME"], header["EXPTIME"] = 1600.0, 1600.0
    header["CADENCE"] = 1000 + index
    path = folder / (f"hlsp_tica_tess_ffi_s{sector.sector:04d}-o1-{1000 + index:08d}-"
                     f"cam{sector.camera}-ccd{sector.ccd}_tess_v01_img.fits")
    fits.PrimaryHDU(image.astype(np.float32), header=header).writeto(path, overwrite=True)
    return path


def _tica_cube(paths: list[Path], cube: Path, sector: FFISector) -> None:
    """A TICA cube of the FFIs: a long primary header, a (rows, columns, cadences, 1) float32
    image of flux only, and a table of every FFI's header values (TICA's cube layout)."""
    from astropy.io import fits
    from astropy.table import Table

    headers, images = [], []
    for path in paths:
        with fits.open(path) as hdus:
            headers.append(hdus[0].header.copy())
            images.append(np.asarray(hdus[0].data, np.float32))
    data = np.stack(images, axis=-1)[..., np.newaxis].astype(">f4")
    primary = fits.PrimaryHDU()
    primary.header["ORIGIN"] = "skyretriever simulated TICA"
    primary.header["SECTOR"] = sector.sector
    primary.header["CAMNUM"], primary.header["CCDNUM"] = sector.camera, sector.ccd
    for number in range(TICA_HEADER_PADDING):
        primary.header.add_history(f"simulated TICA processing note {number:04d}")
    skip = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "COMMENT", "HISTORY", ""}
    names = [key for key in headers[0] if key not in skip]
    table = Table({name: [header.get(name) for header in headers] for name in names})
    table["FFI_FILE"] = [path.name for path in paths]
    fits.HDUList([primary, fits.ImageHDU(data), fits.BinTableHDU(table)]).writeto(
        cube, overwrite=True)


def tesscut_message(body: bytes) -> str | None:
    """The ``msg`` of a TESScut JSON answer (for tests)."""
    try:
        return json.loads(body)["msg"]
    except (ValueError, KeyError):
        return None
