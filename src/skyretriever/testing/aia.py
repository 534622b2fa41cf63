"""Simulated SDO/AIA cutout services: JSOC's export (as drms speaks it) and the SSW service.

AIA cutouts are FITS files with the headers of AIA level-1 data
(``CTYPE1/2 = HPLN-TAN/HPLT-TAN``, ``CDELT`` 0.6 arcsec, ``CRPIX``,
``CRVAL``, ``PC``, ``DATE-OBS``, ``WAVELNTH``, the observer's ``HGLN_OBS``,
``HGLT_OBS``, ``DSUN_OBS``), a quiet-Sun background with noise, and a jet at
each simulated event's helioprojective position while the event lasts: a
Gaussian blob of the event's box size (``sigma`` a quarter of width and
height), brightest half-way through the event. :func:`aia_cutout` makes one.

:class:`JsocService` answers ``/cgi-bin/ajax/jsoc_fetch`` as JSOC does for
``drms.Client.export``: ``op=exp_request`` with a record set
``aia.lev1_euv_12s[<start>/<duration>@<cadence>][<wavelengths>]{image}``, a
registered ``notify`` email and ``process=n=0|im_patch,...,x=..,y=..,width=..,
height=..`` answers ``{"status": 2, "requestid": ...}``; ``op=exp_status``
answers status 2 (pending) for ``polls_until_done`` polls, then status 0 with
``dir`` and ``data`` (record, filename); the files are served under ``dir``.
``jsoc_info?op=series_struct`` answers the series' prime keys (drms asks for
them to name files). An unregistered email is refused (status 4), as JSOC does;
requests whose record set contains a string of ``fail_when`` fail with a
reason, of ``empty_when`` finish with no file (no coverage); ``never_finish`` keeps every request pending.

:class:`SswService` answers the LMSAL SSW cutout service:
``/cgi-ssw/ssw_service_track_fov.sh?xcen=..&ycen=..&fovx=..&fovy=..&waves=..&
starttime=..&endtime=..&max_frames=..&queue_job=1`` gives an HTML page with
``<param name="JobID">ssw_service_...</param>``; the job's folder
``/solarsoft/archive/sdo/media/ssw/ssw_client/data/<job>/`` is a "queued"
page for ``polls_until_done`` polls, then lists "Per-Wave file lists" as
``<p><a href="<job>_<wave>.list">``; each ``.list`` holds the FITS URLs.

Both count requests and take the fault knobs of the server.

Examples
--------
>>> from skyretriever.testing.hek import SolarEvent
>>> jet = SolarEvent("j", "2020-06-07T21:30:00", "2020-06-07T21:50:00", 600.0, 300.0)
>>> hdu = aia_cutout([jet], "2020-06-07T21:40:00", 304, 600.0, 300.0, 120.0, 120.0)
>>> hdu.header["CTYPE1"], hdu.data.shape
('HPLN-TAN', (200, 200))
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import itertools
import json
import math
import re
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from skyretriever.testing.hek import SolarEvent
from skyretriever.testing.server import Reply, Request, Route, Service

__all__ = ["AIA_PLATE_SCALE", "JsocService", "SswService", "aia_cutout", "frame_times"]

AIA_PLATE_SCALE = 0.6  # arcsec per pixel
_TIME = "%Y-%m-%dT%H:%M:%S"
SSW_DATA = "/solarsoft/archive/sdo/media/ssw/ssw_client/data/"
_DS = re.compile(r"^(?P<series>[\w.]+)\[(?P<start>[^/\]]+)/(?P<duration>\d+(?:\.\d+)?)(?P<unit>[smh])"
                 r"@(?P<cadence>\d+(?:\.\d+)?)s\]\[(?P<waves>[\d,]+)\](?:\{(?P<segment>\w+)\})?$")


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "").replace("_TAI", ""))


def _observer(time: dt.datetime) -> tuple[float, float]:
    """(B0 in degrees, Earth-Sun distance in metres) at ``time``, through sunpy."""
    from sunpy.coordinates import sun

    return float(sun.B0(time).deg), float(sun.earth_distance(time).to_value("m"))


def aia_cutout(events: Iterable[SolarEvent], time: str, wavelength: int, xcen: float,
               ycen: float, fovx: float, fovy: float, seed: int = 0) -> fits.PrimaryHDU:
    """One AIA cutout centred on (xcen, ycen) arcsec, with the jets of ``events`` at ``time``."""
    when = _time(time)
    nx, ny = max(8, round(fovx / AIA_PLATE_SCALE)), max(8, round(fovy / AIA_PLATE_SCALE))
    b0, dsun = _observer(when)
    header = fits.Header()
    header.update({
        "TELESCOP": "SDO/AIA", "INSTRUME": f"AIA_{1 if wavelength in (131, 335) else 4}",
        "DETECTOR": "AIA", "WAVELNTH": int(wavelength), "WAVEUNIT": "angstrom",
        "DATE-OBS": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3],
        "T_OBS": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "T_REC": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "MJD-OBS": (when - dt.datetime(1858, 11, 17)).total_seconds() / 86400.0, "EXPTIME": 2.9, "QUALITY": 0,
        "BUNIT": "DN", "LVL_NUM": 1.5,
        "CTYPE1": "HPLN-TAN", "CTYPE2": "HPLT-TAN", "CUNIT1": "arcsec", "CUNIT2": "arcsec",
        "CRPIX1": (nx + 1) / 2, "CRPIX2": (ny + 1) / 2, "CRVAL1": float(xcen),
        "CRVAL2": float(ycen), "CDELT1": AIA_PLATE_SCALE, "CDELT2": AIA_PLATE_SCALE,
        "PC1_1": 1.0, "PC1_2": 0.0, "PC2_1": 0.0, "PC2_2": 1.0, "CROTA2": 0.0,
        "HGLN_OBS": 0.0, "HGLT_OBS": b0, "DSUN_OBS": dsun, "RSUN_REF": 696000000.0,
        "RSUN_OBS": math.degrees(math.asin(696000000.0 / dsun)) * 3600.0,
    })
    wcs = WCS(header)
    digest = hashlib.sha256(f"{seed}:{time}:{wavelength}:{xcen}:{ycen}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    image = 40.0 + rng.normal(0.0, 2.0, size=(ny, nx))
    rows, columns = np.mgrid[0:ny, 0:nx]
    for event in events:
        start, end = _time(event.start), _time(event.end)
        if not start <= when <= end:
            continue
        phase = (when - start) / (end - start) if end > start else 0.5
        peak = 400.0 * math.sin(math.pi * phase) + 50.0
        px, py = wcs.world_to_pixel_values(event.hpc_x / 3600.0, event.hpc_y / 3600.0)
        sx, sy = event.width / 4 / AIA_PLATE_SCALE, event.height / 4 / AIA_PLATE_SCALE
        image += peak * np.exp(-0.5 * (((columns - px) / sx) ** 2 + ((rows - py) / sy) ** 2))
    return fits.PrimaryHDU(image.astype(np.float32), header=header)


def _fits_bytes(hdu: fits.PrimaryHDU) -> bytes:
    buffer = io.BytesIO()
    hdu.writeto(buffer)
    return buffer.getvalue()


def frame_times(start: str, end: str, cadence: float) -> list[str]:
    """The frame times from ``start`` to ``end`` (included) every ``cadence`` seconds."""
    first, last = _time(start), _time(end)
    times, step = [], dt.timedelta(seconds=cadence)
    while first <= last:
        times.append(first.strftime(_TIME))
        first += step
    return times


class _Job:
    """A job of either service: what to make, and how many polls it has seen."""

    def __init__(self, ident: str, frames: list[tuple[str, int]], box: tuple[float, ...],
                 failure: str | None) -> None:
        self.ident, self.frames, self.box, self.failure = ident, frames, box, failure
        self.polls = 0


class _CutoutService(Service):
    def __init__(self, events: list[SolarEvent], polls_until_done: int, never_finish: bool,
                 fail_when: Iterable[str], seed: int) -> None:
        self.events = list(events)
        #: Requests containing one of these strings finish with no file (no coverage).
        self.empty_when: tuple[str, ...] = ()
        self.polls_until_done = polls_until_done
        self.never_finish = never_finish
        self.fail_when = tuple(fail_when)
        self.seed = seed
        self.jobs: dict[str, _Job] = {}
        self.submitted: list[str] = []
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)

    def _new_job(self, prefix: str, frames: list[tuple[str, int]], box: tuple[float, ...],
                 described: str) -> _Job:
        failure = next((f"no data for {described}: {needle}" for needle in self.fail_when
                        if needle in described), None)
        if any(needle in described for needle in self.empty_when):
            frames = []
        with self._lock:
            ident = f"{prefix}{next(self._numbers):05d}"
            job = self.jobs[ident] = _Job(ident, frames, box, failure)
            self.submitted.append(ident)
        return job

    def _poll(self, job: _Job) -> bool:
        """Count a poll; whether the job is done now."""
        with self._lock:
            job.polls += 1
            return not self.never_finish and job.polls > self.polls_until_done

    def _frame(self, job: _Job, time: str, wave: int) -> bytes:
        xcen, ycen, fovx, fovy = job.box
        return _fits_bytes(aia_cutout(self.events, time, wave, xcen, ycen, fovx, fovy,
                                      seed=self.seed))


def _json_file(value: Any) -> Reply:
    # Served as a "file", so that cut bodies and HTML maintenance pages hit these answers too.
    return Reply.file(json.dumps(value).encode(), content_type="application/json")


class JsocService(_CutoutService):
    """JSOC's export service with ``im_patch``, as drms talks to it."""

    name = "jsoc"

    def __init__(self, events: list[SolarEvent], registered: Iterable[str] = ("user@example.org",),
                 polls_until_done: int = 2, never_finish: bool = False,
                 fail_when: Iterable[str] = (), seed: int = 0) -> None:
        super().__init__(events, polls_until_done, never_finish, fail_when, seed)
        self.registered = set(registered)
        self.routes = [
            Route(("GET",), "/cgi-bin/ajax/jsoc_fetch", self.fetch),
            Route(("GET",), "/cgi-bin/ajax/jsoc_info", self.info),
            Route(("GET",), "/SUM", self.file, prefix=True),
        ]

    def info(self, request: Request) -> Reply:
        if request.arg("op") != "series_struct":
            return _json_file({"status": 1, "error": f"unknown op {request.arg('op')!r}"})
        return _json_file({
            "status": 0, "primekeys": ["T_REC", "WAVELNTH"], "dbindex": ["T_REC", "WAVELNTH"],
            "primekeysinfo": [{"name": "T_REC", "slotted": 1, "step": "12s"},
                              {"name": "WAVELNTH", "slotted": 0, "step": ""}],
            "keywords": [{"name": "T_REC", "type": "time", "recscope": "ts_eq", "defval": "",
                          "units": "TAI", "note": "Slot time"},
                         {"name": "WAVELNTH", "type": "int", "recscope": "variable",
                          "defval": "0", "units": "angstrom", "note": "Wavelength"}],
            "segments": [{"name": "image", "type": "int", "units": "DN", "protocol": "fits",
                          "dims": "4096x4096", "note": "AIA level 1 image"}],
            "links": [], "note": "AIA Level 1, 12 second cadence", "retention": 10000,
            "unitsize": 32, "archive": 1, "tapegroup": 1,
        })

    def fetch(self, request: Request) -> Reply:
        op = request.arg("op")
        if op == "exp_request":
            return self.submit(request)
        if op == "exp_status":
            return self.status(request)
        return _json_file({"status": 4, "error": f"unknown op {op!r}"})

    def submit(self, request: Request) -> Reply:
        notify = request.arg("notify", "")
        if notify not in self.registered:
            return _json_file({"status": 4, "error": f"Email address {notify!r} has not been "
                                                     "validated or registered for exports"})
        ds = request.arg("ds", "")
        match = _DS.match(ds)
        if match is None:
            return _json_file({"status": 4, "error": f"Bad record-set subset specification: {ds}"})
        process = request.arg("process=n", "")
        patch = dict(item.split("=", 1) for part in process.split("|")[1:]
                     if part.startswith("im_patch") for item in part.split(",")[1:] if "=" in item)
        try:
            box = tuple(float(patch[key]) for key in ("x", "y", "width", "height"))
        except (KeyError, ValueError):
            return _json_file({"status": 4, "error": f"im_patch needs x, y, width, height: "
                                                     f"{process!r}"})
        seconds = float(match["duration"]) * {"s": 1, "m": 60, "h": 3600}[match["unit"]]
        start = _time(match["start"])
        end = (start + dt.timedelta(seconds=seconds - float(match["cadence"]))).strftime(_TIME)
        times = frame_times(start.strftime(_TIME), end, float(match["cadence"]))
        frames = [(t, int(w)) for t in times for w in match["waves"].split(",")]
        job = self._new_job("JSOC_20201206_", frames, box, ds)
        return _json_file({"status": 2, "requestid": job.ident, "method": request.arg("method"),
                           "protocol": request.arg("protocol"), "wait": 1, "size": 0})

    @staticmethod
    def _filename(time: str, wave: int) -> str:
        return f"aia.lev1_euv_12s.{time.replace(':', '').replace('-', '')}Z.{wave}.image.fits"

    def status(self, request: Request) -> Reply:
        job = self.jobs.get(request.arg("requestid", ""))
        if job is None:
            return _json_file({"status": 6, "error": "Request not found"})
        if job.failure is not None and self._poll(job):
            return _json_file({"status": 4, "requestid": job.ident, "error": job.failure})
        if job.failure is not None or not self._poll(job):
            return _json_file({"status": 1, "requestid": job.ident, "wait": 1,
                               "method": "url", "protocol": "fits"})
        data = [{"record": f"aia.lev1_euv_12s[{t}Z][{w}]", "filename": self._filename(t, w)}
                for t, w in job.frames]
        return _json_file({"status": 0, "requestid": job.ident, "method": "url",
                           "protocol": "fits", "dir": f"/SUM1/D{job.ident[-5:]}/S00000",
                           "data": data, "count": len(data), "size": 0, "wait": 0,
                           "tarfile": "", "keywords": ""})

    def file(self, request: Request) -> Reply:
        match = re.fullmatch(r"/SUM1/D(\d{5})/S00000/(.+)", request.path)
        job = self.jobs.get(f"JSOC_20201206_{match[1]}") if match else None
        if job is None:
            return Reply.text("404 Not Found\n", status=404)
        for time, wave in job.frames:
            if self._filename(time, wave) == match[2]:
                return Reply.file(self._frame(job, time, wave), content_type="image/fits")
        return Reply.text("404 Not Found\n", status=404)


class SswService(_CutoutService):
    """The LMSAL SSW cutout service: submit, the job's page, its ``.list`` files, the FITS."""

    name = "ssw"

    def __init__(self, events: list[SolarEvent], polls_until_done: int = 2,
                 never_finish: bool = False, fail_when: Iterable[str] = (),
                 seed: int = 0) -> None:
        super().__init__(events, polls_until_done, never_finish, fail_when, seed)
        self.routes = [
            Route(("GET",), "/cgi-ssw/ssw_service_track_fov.sh", self.submit),
            Route(("GET",), SSW_DATA, self.data, prefix=True),
        ]

    def submit(self, request: Request) -> Reply:
        try:
            box = tuple(float(request.arg(k, "")) for k in ("xcen", "ycen", "fovx", "fovy"))
            waves = [int(w) for w in request.arg("waves", "").split(",")]
            start, end = request.arg("starttime", ""), request.arg("endtime", "")
            max_frames = int(request.arg("max_frames", "1000"))
            _time(start), _time(end)
        except ValueError as error:
            return Reply.text(f"<html><body><p>ERROR: bad parameters ({error})</p></body></html>",
                              content_type="text/html")
        seconds = (_time(end) - _time(start)).total_seconds()
        cadence = max(12.0, seconds / max(max_frames, 1))
        frames = [(t, w) for t in frame_times(start, end, cadence)[:max_frames] for w in waves]
        job = self._new_job("ssw_service_201206_231600_", frames, box,
                            f"{start}/{end} waves {waves} at {box[0]},{box[1]}")
        return Reply.text(
            "<html><head><title>SSW cutout service</title></head><body>\n"
            "<p>Your job has been queued.</p>\n"
            f'<votable><resource><param name="JobID">{job.ident}</param>'
            f'<param name="Status">queued</param></resource></votable>\n</body></html>\n',
            content_type="text/html")

    def _list_name(self, job: _Job, wave: int) -> str:
        return f"{job.ident}_{wave}.list"

    @staticmethod
    def _fits_name(time: str, wave: int) -> str:
        return f"AIA{time.replace('-', '').replace(':', '').replace('T', '_')}_{wave:04d}.fits"

    def data(self, request: Request) -> Reply:
        rest = request.path[len(SSW_DATA):]
        ident, _, name = rest.partition("/")
        job = self.jobs.get(ident)
        if job is None:
            return Reply.text("<html><body><h1>404 Not Found</h1></body></html>", status=404,
                              content_type="text/html")
        waves = sorted({w for _, w in job.frames})
        if name == "":
            if job.failure is not None and self._poll(job):
                return Reply.text(f"<html><body><p>Job {job.ident} FAILED: {job.failure}</p>"
                                  "</body></html>", content_type="text/html")
            if job.failure is not None or not self._poll(job):
                return Reply.text(f"<html><body><p>Job {job.ident} is running; "
                                  "check back later.</p></body></html>", content_type="text/html")
            links = "\n".join(f'<p><a href="{self._list_name(job, w)}">{w}</a></p>'
                              for w in waves)
            return Reply.text(f"<html><body><h2>Job {job.ident}</h2>\n<h3>Per-Wave file lists"
                              f"</h3>\n{links}\n</body></html>", content_type="text/html")
        for wave in waves:
            if name == self._list_name(job, wave):
                host = {k.lower(): v for k, v in request.headers.items()}.get("host", "127.0.0.1")
                folder = f"http://{host}{SSW_DATA}{job.ident}/"
                lines = [folder + self._fits_name(t, w) for t, w in job.frames if w == wave]
                return Reply.file(("\n".join(lines) + "\n").encode(), content_type="text/plain")
        for time, wave in job.frames:
            if name == self._fits_name(time, wave):
                return Reply.file(self._frame(job, time, wave), content_type="image/fits")
        return Reply.text("<html><body><h1>404 Not Found</h1></body></html>", status=404,
                          content_type="text/html")
