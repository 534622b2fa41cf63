"""VirtualTESSFFI: cutouts of the TESS full-frame images (data type ``images``), and light curves of them.

Two routes to the same cutouts:

- ``s3`` (the default): the FFI cubes in MAST's public bucket, read by byte
  ranges. The cubes of the wanted sectors are listed once; each cube's headers
  and FFI table are read once per process and cached
  (:func:`skyretriever.images.cube.read_layout`); with ``sector_lookup:
  pointing`` TESS's pointing model (tess-point) first names the cubes that can
  hold the star, and only those are read (sectors past the model's table are
  looked up by their WCS); whether the star is on a cube is decided by the
  cube's own WCS, and the cutout is read as one range per
  pixel row (close ones merged), in parallel within the per-host limit. The
  arrays are those astrocut cuts from the same cube.
- ``tesscut``: MAST's TESScut API (``api/v0.1/sector``, then
  ``api/v0.1/astrocut`` per sector), retried with backoff on 504 and the
  rest; each zip is checked before anything is kept.

A star on no sector is recorded as empty, like photometry with no data. A
later run asks again for the sectors a source's file lacks (sectors the archive
added since, or sectors added to ``sectors``; ``recheck_sectors``): only those
are fetched, added to the same file (written anew under a temporary name, so
the old file stays whole if anything fails), and the source is reduced and
analysed again. The s3 route asks only the cubes it has not checked for the
star before (``cubes_checked`` of the provenance); TESScut is asked its sector
list once per source. The reduction makes one light curve per wanted sector by
aperture photometry (:mod:`skyretriever.images.photometry`, lightkurve's
target-pixel tools), with the cube's quality flags, so the photometry analysis
runs on them unchanged.

Examples
--------
>>> obs = VirtualTESSFFI(route="tesscut", tesscut_url="http://127.0.0.1:8000/tesscut")
>>> obs.pars.cutout_size, obs.data_type
(11, 'images')
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from skyretriever.fitsfile import validate_fits
from skyretriever.images.cube import (
    CubeError,
    CubeLayout,
    cutout_from_ranges,
    cutout_limits,
    cutouts_from_zip,
    read_layout,
)
from skyretriever.images.photometry import lightcurve_frame
from skyretriever.models.datasets import Lightcurve
from skyretriever.models.images import Cutout, RawImages
from skyretriever.net import (
    NetworkError,
    NetworkParameters,
    Response,
    TransientError,
    join_url,
    shared_client,
    validate_archive_url,
)
from skyretriever.observatories.base import (
    ObservatoryParameters,
    VirtualObservatory,
    register_observatory,
)
from skyretriever.observatories.mission_files import TESS_QUALITY_PRESETS, TESS_ZERO_POINT
from skyretriever.observatories.runtime import RuntimeState
from skyretriever.observatories.s3 import S3Bucket
from skyretriever.parameters import parameter

__all__ = ["TessFFIParameters", "VirtualTESSFFI"]

log = logging.getLogger(__name__)

_CUBE_NAME = re.compile(r"(tess|tica)-s(\d{4})-(\d)-(\d)-cube\.fits$")
#: Arcseconds per TESS pixel.
PIXEL_ARCSEC = 21.0


class TessFFIParameters(ObservatoryParameters, NetworkParameters):
    """Which FFI cutouts to fetch, how, and how to make light curves of them."""

    cutout_size: int = parameter(11, "Rows and columns of each cutout (pixels).", ge=3, le=101)
    sectors: list[int] | None = parameter(None, "Sectors to cut (None: every sector).")
    product: Literal["SPOC", "TICA"] = parameter("SPOC", "Calibrated FFIs of SPOC or of TICA.")
    route: Literal["s3", "tesscut"] = parameter(
        "s3", "s3: byte ranges of the cubes in the bucket; tesscut: MAST's TESScut API.",
        critical=False)
    tesscut_url: str = parameter("https://mast.stsci.edu/tesscut",
                                 "Base URL of TESScut (or a mirror or simulator).", critical=False)
    s3_endpoint_url: str | None = parameter(
        None, "S3 endpoint of the public bucket; None uses AWS (us-east-1).", critical=False)
    s3_bucket: str = parameter("stpubdata", "Public bucket holding the cubes.", critical=False)
    s3_region: str = parameter("us-east-1", "Region of the public bucket.", critical=False)
    ffi_https_url: str = parameter(
        "https://archive.stsci.edu/missions/tess/ffi",
        "MAST's HTTPS folder of the calibrated FFIs, used when the bucket fails (bulk FFIs).",
        critical=False)
    s3_connections: int = parameter(
        16, "Ranged reads in flight at once to the bucket (S3 takes many; tesscube uses 10).",
        critical=False, ge=1)
    merge_gap: int = parameter(
        16384, "Byte ranges of one cutout closer than this are read as one (s3 route).",
        critical=False, ge=0)
    sector_lookup: Literal["wcs", "pointing"] = parameter(
        "wcs", "How the s3 route finds the cubes that hold a star: 'wcs' reads every cube's "
        "WCS (once per process); 'pointing' asks TESS's pointing model (tess-point) and reads "
        "only the cubes it names (sectors past its table by their WCS).", critical=False)
    recheck_sectors: bool = parameter(
        True, "On a later run, ask the archive for the wanted sectors a source's file lacks "
        "(added since, or added to 'sectors') and fetch only those (s3: the cubes not "
        "checked before, after one listing per run; tesscut: one sector query per source).",
        critical=False)
    aperture_radius: float = parameter(
        2.0, "Radius of the photometric aperture around the target (pixels).", gt=0)
    background_radius: float = parameter(
        3.5, "Pixels farther than this from the target estimate the background.", gt=0)


@register_observatory
class VirtualTESSFFI(RuntimeState, VirtualObservatory):
    """TESS full-frame-image cutouts (the S3 cubes or TESScut) and light curves made from them."""

    name = "tessffi"
    Parameters = TessFFIParameters
    data_type = "images"
    # Not ``sectors``: a file holds the sectors fetched so far, and a later run with more
    # sectors wanted adds the missing ones to it (the reduction uses only those wanted).
    download_parameters = ("cutout_size", "product")
    QUALITY_PRESETS = TESS_QUALITY_PRESETS
    split_columns: ClassVar[tuple[str, ...]] = ("sector",)
    _RUNTIME = ("_bucket", "_layouts", "_layout_locks", "_cube_keys", "_lock", "_pointing")

    def __init__(self, pars=None, context=None, **kwargs: Any) -> None:
        super().__init__(pars, context, **kwargs)
        validate_archive_url(self.pars.tesscut_url, f"observatories.{self.name}.tesscut_url")
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._bucket = None
        self._layouts: dict[str, CubeLayout | None] = {}
        self._layout_locks: dict[str, threading.Lock] = {}
        self._cube_keys: list[str] | None = None
        self._lock = threading.Lock()
        self._pointing: Any = None

    def download_settings(self) -> dict[str, Any]:
        """The download parameters, with ``sectors`` fixed at None: products made when
        ``sectors`` was one of them, with every sector (the default), keep their hash."""
        return {**super().download_settings(), "sectors": None}

    def begin_run(self) -> None:
        """List the bucket's cubes again on this run (a sector may have been added since);
        the cubes' headers stay cached (a cube's key names one sector, camera and CCD)."""
        with self._lock:
            self._cube_keys = None

    @property
    def http(self):
        return shared_client(self.pars.network_policy())

    @property
    def bucket(self) -> S3Bucket:
        if self._bucket is None:
            policy = dataclasses.replace(self.pars.network_policy(),
                                         max_connections_per_host=self.pars.s3_connections)
            self._bucket = S3Bucket(self.pars.s3_bucket, self.pars.s3_endpoint_url,
                                    self.pars.s3_region, shared_client(policy))
        return self._bucket

    # -- downloading -----------------------------------------------------------------------
    def fetch(self, cat_row: dict[str, Any]) -> tuple[dict[int, Cutout], dict[str, Any]]:
        ra, dec = float(cat_row["ra"]), float(cat_row["dec"])
        if self.pars.route == "tesscut":
            return self._fetch_tesscut(ra, dec)
        return self._fetch_s3(ra, dec)

    def download_from_observatory(self, cat_row: dict[str, Any]):
        return self.fetch(cat_row)

    def _wanted(self, sector: int) -> bool:
        return self.pars.sectors is None or sector in self.pars.sectors

    # route tesscut
    def _fetch_tesscut(self, ra: float, dec: float, skip: frozenset[int] = frozenset()
                       ) -> tuple[dict[int, Cutout], dict[str, Any]]:
        base = join_url(self.pars.tesscut_url, "api/v0.1")
        product = self.pars.product
        answer = self.http.request_json(
            "GET", join_url(base, "sector"),
            params={"ra": ra, "dec": dec, "radius": 0, "product": product})
        sectors = sorted({int(entry["sector"]) for entry in (answer or {}).get("results", [])})
        sectors = [s for s in sectors if self._wanted(s) and s not in skip]
        cutouts: dict[int, Cutout] = {}
        messages = {}
        size = self.pars.cutout_size
        for sector in sectors:
            url = join_url(base, "astrocut")
            what = f"TESScut cutout of sector {sector} at {ra:.6f} {dec:.6f}"
            body = self.http.request(
                "GET", url, params={"ra": ra, "dec": dec, "y": size, "x": size, "units": "px",
                                    "product": product, "sector": sector},
                accept=_zip_or_message(what), what=what)
            if isinstance(body, str):
                messages[sector] = body
                continue
            for cutout in cutouts_from_zip(body, what):
                if cutout.sector != sector:
                    continue
                _check_position(cutout, ra, dec, what)
                cutouts[sector] = cutout
        provenance = {"route": "tesscut", "product": product, "sectors_found": sectors}
        if messages:
            provenance["messages"] = messages
        return cutouts, provenance

    # route s3
    def _cube_list(self) -> list[str]:
        with self._lock:
            if self._cube_keys is None:
                prefix = ("tess/public/mast/tica/" if self.pars.product == "TICA"
                          else "tess/public/mast/")
                keys = self.bucket.list_keys(prefix)
                self._cube_keys = sorted(k for k in keys if _CUBE_NAME.search(k)
                                         and (self.pars.product == "TICA") == ("/tica/" in k))
            return self._cube_keys

    def _layout(self, key: str) -> CubeLayout:
        """The cube's layout, read once per process (other threads wait for the first)."""
        with self._lock:
            if key in self._layouts:
                return self._layouts[key]
            lock = self._layout_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                if key in self._layouts:
                    return self._layouts[key]
            layout = read_layout(key, lambda first, last: self.bucket.read_range(key, first, last))
            with self._lock:
                self._layouts[key] = layout
        return layout

    def pointing_candidates(self, ra: float, dec: float) -> tuple[set[tuple[int, int, int]], int]:
        """The (sector, camera, CCD) that TESS's pointing model (tess-point) puts the star
        on, and the last sector the model knows (about 50 ms a star).

        Examples
        --------
        >>> found, last = VirtualTESSFFI().pointing_candidates(100.0, -30.0)
        >>> sorted(found)[:2], last
        ([(6, 2, 2), (33, 2, 2)], 134)
        """
        import tess_stars2px

        with self._lock:
            if self._pointing is None:  # the pointings of every sector: built once per process
                self._pointing = tess_stars2px.TESS_Spacecraft_Pointing_Data()
            pointing = self._pointing
        answer = tess_stars2px.tess_stars2px_function_entry(
            [0], [float(ra) % 360.0], [float(dec)], scInfo=pointing)
        sectors, cameras, ccds = answer[3], answer[4], answer[5]
        found = {(int(s), int(c), int(d)) for s, c, d in zip(sectors, cameras, ccds) if s > 0}
        # Sector numbers past 1000 are not TESS's sectors (a comet's pointing).
        return found, int(pointing.sectors[pointing.sectors < 1000].max())

    def _fetch_s3(self, ra: float, dec: float, skip_sectors: frozenset[int] = frozenset(),
                  skip_cubes: frozenset[str] = frozenset()
                  ) -> tuple[dict[int, Cutout], dict[str, Any]]:
        cutouts: dict[int, Cutout] = {}
        looked = []
        provenance: dict[str, Any] = {"route": "s3", "product": self.pars.product,
                                      "sector_lookup": self.pars.sector_lookup}
        candidates, last_known = None, 0
        if self.pars.sector_lookup == "pointing":
            candidates, last_known = self.pointing_candidates(ra, dec)
            provenance["pointing"] = [list(found) for found in sorted(candidates)]
        for key in self._cube_list():
            name = _CUBE_NAME.search(key)
            sector, camera, ccd = int(name.group(2)), int(name.group(3)), int(name.group(4))
            if not self._wanted(sector) or sector in skip_sectors or key in skip_cubes:
                continue
            if (candidates is not None and sector <= last_known
                    and (sector, camera, ccd) not in candidates):
                continue
            layout = self._layout(key)
            looked.append(key)
            limits = cutout_limits(layout, ra, dec, self.pars.cutout_size)
            if limits is None:
                continue

            def fetch(ranges, key=key):
                workers = max(1, min(len(ranges), self.pars.s3_connections))
                with ThreadPoolExecutor(workers) as pool:
                    return list(pool.map(lambda r: self.bucket.read_range(key, *r), ranges))

            cutouts[sector] = cutout_from_ranges(layout, limits, fetch, self.pars.merge_gap)
        return cutouts, {**provenance, "cubes_checked": looked}

    # -- bulk FFIs (skyretriever ffi) ------------------------------------------------------
    def ffi_keys(self, sector: int, camera: int, ccd: int) -> list[str]:
        """The bucket keys of every calibrated FFI of a sector, camera and CCD, in time order."""
        for name, value, top in (("camera", camera, 4), ("ccd", ccd, 4), ("sector", sector, 999)):
            if not 1 <= int(value) <= top:
                raise ValueError(f"{name} must be between 1 and {top}, not {value!r}")
        ending = f"-s{sector:04d}-{camera}-{ccd}-"
        keys = self.bucket.list_keys(f"tess/public/ffi/s{sector:04d}/")
        return sorted(k for k in keys if ending in k.rsplit("/", 1)[-1]
                      and k.endswith("_ffic.fits"))

    def fetch_ffi(self, key: str, destination) -> str:
        """Download one FFI atomically and validated: the bucket first, MAST HTTPS if it fails.

        Returns the route it came by (``s3`` or ``https``).
        """
        try:
            self.bucket.download(key, destination)
            return "s3"
        except NetworkError as error:
            relative = key.removeprefix("tess/public/ffi/")
            log.warning("FFI %s: the bucket failed (%s); trying MAST HTTPS", key, error)
            self.http.download(join_url(self.pars.ffi_https_url, relative), destination,
                               validator=validate_fits)
            return "https"

    def parse(self, fetched):
        return fetched

    def fetch_additions(self, cat_row: dict[str, Any], raw_values: dict[str, Any]
                        ) -> tuple[dict[int, Cutout], dict[str, Any]] | None:
        """The wanted sectors a source's raw images lack, if the archive has them now, fetched
        and merged with the sectors the file holds (``None``: nothing to add).

        The s3 route looks only at the cubes neither checked for the star before
        (``cubes_checked`` of the provenance) nor of a sector held; TESScut is
        asked its sector list, and cuts only the sectors not held (nor answered
        before with TESScut's "does not overlap").
        """
        if not self.pars.recheck_sectors:
            return None
        ra, dec = float(cat_row["ra"]), float(cat_row["dec"])
        held = frozenset(int(s) for s in raw_values.get("sectors") or [])
        old = dict(raw_values.get("altdata") or {})
        if self.pars.route == "tesscut":
            answered = frozenset(int(s) for s in old.get("messages") or {})
            added, provenance = self._fetch_tesscut(ra, dec, skip=held | answered)
        else:
            checked = frozenset(old.get("cubes_checked") or [])
            added, provenance = self._fetch_s3(ra, dec, skip_sectors=held, skip_cubes=checked)
            provenance["cubes_checked"] = sorted(checked | set(provenance["cubes_checked"]))
        if not added:
            return None
        cutouts: dict[int, Cutout] = {}
        if not raw_values.get("is_empty"):
            cutouts = RawImages(**{k: v for k, v in raw_values.items() if k != "id"}).load()
        cutouts.update(added)
        altdata = {**old, **provenance, "sectors_added": sorted(added)}
        found = set(old.get("sectors_found") or []) | set(provenance.get("sectors_found") or [])
        if found:
            altdata["sectors_found"] = sorted(found)
        messages = {**(old.get("messages") or {}), **(provenance.get("messages") or {})}
        if messages:
            altdata["messages"] = {str(k): v for k, v in messages.items()}
        log.info("%s (%s): sectors %s added to sectors %s", cat_row["name"], self.name,
                 sorted(added), sorted(held))
        return cutouts, altdata

    def download(self, cat_row: dict[str, Any]) -> RawImages:
        """Fetch one source's cutouts into an (unsaved) :class:`RawImages`."""
        cutouts, altdata = self.fetch(cat_row)
        raw = RawImages(data=cutouts, source_name=str(cat_row["name"]), observatory=self.name,
                        ra=float(cat_row["ra"]), dec=float(cat_row["dec"]), altdata=altdata,
                        is_empty=not cutouts, **self.raw_identity(cat_row))
        raw.compute_summaries()
        return raw

    # -- reducing --------------------------------------------------------------------------
    def reduce(self, raw: RawImages, data_type: str = "images",
               source: Any = None) -> list[Lightcurve]:
        """One light curve per sector, by aperture photometry of the cutouts."""
        if data_type != self.data_type:
            raise ValueError(f"{self.name} reduces {self.data_type}, not {data_type!r}")
        if raw.is_empty or not raw.data:
            return []
        # A file may hold sectors no longer wanted (``sectors`` narrowed since): left out.
        frames = [lightcurve_frame(cutout, raw.ra, raw.dec, self.pars.aperture_radius,
                                   self.pars.background_radius, raw.source_name)
                  for sector, cutout in sorted(raw.data.items()) if self._wanted(sector)]
        if not frames:
            return []
        frame = pd.concat(frames, ignore_index=True)
        zero_mag, zero_flux = TESS_ZERO_POINT
        with np.errstate(divide="ignore", invalid="ignore"):
            flux = frame["flux"].to_numpy(float)
            frame["mag"] = zero_mag - 2.5 * np.log10(flux / zero_flux)
            frame["mag_err"] = 2.5 / np.log(10) * frame["flux_err"].to_numpy(float) / flux
        frame["filter"] = "TESS"
        return self.lightcurves_from_frame(frame, raw)


def _check_position(cutout: Cutout, ra: float, dec: float, what: str) -> None:
    """Raise :class:`CubeError` unless the cutout holds the position asked for."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        column, row = cutout.wcs().all_world2pix([[ra, dec]], 0)[0]
    rows, columns = cutout.shape
    if not (-0.5 <= column < columns - 0.5 and -0.5 <= row < rows - 0.5):
        raise CubeError(f"{what}: the cutout sent ({cutout.extra.get('member')}) does not hold "
                        f"the position asked for (it falls at pixel {column:.1f}, {row:.1f} of "
                        f"a {rows}x{columns} cutout)")


def _zip_or_message(what: str):
    """A TESScut answer: the zip's bytes, or the ``msg`` of its JSON when nothing overlaps;
    anything else is asked again."""

    def accept(response: Response) -> bytes | str:
        body = response.body
        if body[:4] == b"PK\x03\x04":
            return body
        try:
            message = json.loads(body)
        except ValueError:
            raise TransientError(f"{what}: the answer is neither a zip nor TESScut's JSON "
                                 f"({len(body)} bytes, {body[:40]!r})") from None
        if isinstance(message, dict) and "msg" in message:
            return str(message["msg"])
        raise TransientError(f"{what}: unexpected JSON {str(message)[:80]}")

    return accept

