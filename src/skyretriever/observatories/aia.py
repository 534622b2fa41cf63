"""SDO/AIA: image cutouts around solar events, through JSOC or the SSW cutout service.

For each event of a helioprojective catalog (the ``hek`` preset), a cutout job
asks for ``wavelengths`` between the event's start minus ``padding[0]`` and its
end plus ``padding[1]`` (minutes), every ``cadence`` seconds, centred on the
event with a field of view of at least ``fov`` arcsec or the event's box with a
margin. ``route`` picks the service:

- ``jsoc``: JSOC's export with the ``im_patch`` process, through the drms package
  (``drms.Client.export``; ``notify`` must be an email registered with JSOC,
  from the parameter or ``$SKYRETRIEVER_JSOC_EMAIL``; it is never written
  (``settings.yaml`` and every JSON dump of the parameters have ``null``),
  logged (drms' debug log of its URLs included) nor stored with the job, and
  JSOC's errors that quote it are shown without it);
- ``ssw``: the LMSAL SSW cutout service (submit, read the job id, poll the
  job's folder until its per-wave file lists appear, read them).

**A job is a row** (:class:`~skyretriever.models.CutoutJob`), written when the
service takes it: a run that dies while jobs are pending finds them on the next
run and polls them instead of asking again. Polling backs off from
``poll_interval`` to ``poll_interval_max`` seconds and ends at the job's
deadline (``job_timeout`` seconds after submission); a job that fails, or never
finishes, is recorded ``failed`` with the reason, its event fails with that
reason and the run goes on. The files come through the one HTTP layer
(:mod:`skyretriever.net`: atomic, checked as whole FITS files) into a folder
beside the event's raw file, and files already there are not asked for again.

Examples
--------
>>> obs = VirtualAIA(route="ssw", wavelengths=[304, 171])
>>> request = obs.cutout_request({"name": "SOL1", "frame": "helioprojective", "hpc_x": 800.0,
...     "hpc_y": 300.0, "start_time": "2020-06-07T21:30:00", "end_time": "2020-06-07T21:40:00",
...     "extra": {"bbox_x1": 760.0, "bbox_x2": 840.0, "bbox_y1": 280.0, "bbox_y2": 320.0}})
>>> request["fovx"], request["starttime"], request["waves"]
(120.0, '2020-06-07T21:20:00', [171, 304])
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import time
import urllib.error
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, quote_plus, urljoin

import numpy as np
import pandas as pd
import sqlalchemy as sa
from astropy.io import fits
from astropy.time import Time
from pydantic import field_serializer, field_validator

from skyretriever import storage
from skyretriever.database import SmartSession
from skyretriever.fitsfile import validate_fits
from skyretriever.models.raw import raw_file_identity
from skyretriever.models.solar import CutoutJob, RawCutouts, cutout_folder, job_key
from skyretriever.net import (
    HttpError,
    NetworkParameters,
    Response,
    TransientError,
    shared_client,
    validate_archive_url,
)
from skyretriever.observatories.base import (
    ObservatoryParameters,
    ProjectContext,
    VirtualObservatory,
    register_observatory,
)
from skyretriever.observatories.runtime import RuntimeState
from skyretriever.parameters import ParameterError, parameter
from skyretriever.solar.images import render_event

__all__ = ["AiaParameters", "CutoutJobFailed", "VirtualAIA"]

log = logging.getLogger(__name__)

EMAIL_VARIABLE = "SKYRETRIEVER_JSOC_EMAIL"
JSOC_SERIES = "aia.lev1_euv_12s"
SSW_SUBMIT = "cgi-ssw/ssw_service_track_fov.sh"
SSW_DATA = "solarsoft/archive/sdo/media/ssw/ssw_client/data/"
_JOB_ID = re.compile(r'<param\s+name="JobID"\s*>\s*([\w.-]+)\s*</param>', re.I)
_LIST_LINK = re.compile(r'<a\s+href="?([^"\s>]+\.list)"?', re.I)
_TIME = "%Y-%m-%dT%H:%M:%S"
#: Beside an event's images: the key they were made with (see ``VirtualAIA.reduction_key``).
REDUCTION_FILE = "reduction.json"
#: The frame index's columns (one row per FITS file).
FRAME_COLUMNS = ("time", "mjd", "wavelength", "file", "url", "naxis1", "naxis2", "exptime",
                 "file_size")


class _Hidden(logging.Filter):
    """The emails given to JSOC, kept out of drms' log records (its debug log shows every
    URL) and of the errors this module raises."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def add(self, secret: str) -> None:
        self.secrets |= {secret, quote(secret, safe=""), quote_plus(secret)}

    def redact(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "<notify email>")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self.redact(record.getMessage())
            record.args = None
        return True


_HIDDEN = _Hidden()
logging.getLogger("drms").addFilter(_HIDDEN)


class CutoutJobFailed(RuntimeError):
    """A cutout job the service refused, failed, or did not finish by its deadline."""


class AiaParameters(ObservatoryParameters, NetworkParameters):
    """What AIA cutouts to ask for, from which service, and how long to wait."""

    wavelengths: list[int] = parameter(
        [304], "AIA wavelengths (angstrom): 94, 131, 171, 193, 211, 304, 335, 1600, 1700.")
    padding: list[float] = parameter(
        [10.0, 10.0], "Minutes before the event's start and after its end.",
        min_length=2, max_length=2)
    cadence: float = parameter(12.0, "Seconds between frames (AIA's EUV cadence is 12 s).",
                               ge=12.0)
    fov: float = parameter(
        120.0, "Smallest field of view (arcsec); the event's box with a 20% margin if larger.",
        ge=120.0)
    route: Literal["jsoc", "ssw"] = parameter(
        "jsoc", "Cutout service: 'jsoc' (JSOC export with im_patch, through drms) or 'ssw' "
                "(the LMSAL SSW cutout service).")
    jsoc_url: str = parameter("http://jsoc.stanford.edu", "Base URL of JSOC.", critical=False)
    ssw_url: str = parameter("https://www.lmsal.com", "Base URL of the SSW cutout service.",
                             critical=False)
    notify: str | None = parameter(
        None, f"Email registered with JSOC (required by the jsoc route; else ${EMAIL_VARIABLE}); "
              "never written (settings.yaml has null), logged nor stored with the jobs.",
        critical=False, repr=False)
    poll_interval: float = parameter(
        5.0, "Seconds before the first poll of a job (then 1.5 times longer each time).",
        critical=False, gt=0)
    poll_interval_max: float = parameter(
        60.0, "Longest wait between two polls of a job (seconds).", critical=False, gt=0)
    job_timeout: float = parameter(
        3600.0, "A job not finished this many seconds after its submission is failed.",
        critical=False, gt=0)
    scaling: Literal["asinh", "log"] = parameter(
        "asinh", "Reduction: how frame brightness is scaled in the images.")
    image_max_size: int = parameter(
        1024, "Reduction: images larger than this (pixels) are binned by a whole factor.",
        ge=64)
    movie: bool = parameter(True, "Reduction: one animated PNG per event and wavelength.")

    @field_serializer("notify", when_used="json")
    def _never_written(self, value: str | None) -> None:
        # settings.yaml, the raw data's download settings and every other JSON dump get no
        # email; the value stays in memory (and in model_dump() for a copy of the parameters).
        return None

    @field_validator("jsoc_url", "ssw_url")
    @classmethod
    def _plain_url(cls, value: str) -> str:
        return validate_archive_url(value)

    @field_validator("wavelengths")
    @classmethod
    def _aia_wavelengths(cls, value: list[int]) -> list[int]:
        known = {94, 131, 171, 193, 211, 304, 335, 1600, 1700, 4500}
        unknown = [w for w in value if w not in known]
        if unknown or not value:
            raise ValueError(f"AIA has no channel {unknown or value}; its wavelengths are "
                             f"{sorted(known)}")
        return sorted(set(value))


def _drms_error(error: Exception, what: str) -> Exception:
    """The HTTP layer's view of what drms (urllib) raised: worth another try, or not."""
    if isinstance(error, urllib.error.HTTPError):
        if error.code in (408, 429) or error.code >= 500:
            return TransientError(f"{what}: HTTP {error.code}")
        return HttpError(f"{what}: HTTP {error.code}", error.code, error.url or "")
    return TransientError(f"{what}: {type(error).__name__}: {error}")


@register_observatory
class VirtualAIA(RuntimeState, VirtualObservatory):
    """SDO/AIA cutouts around solar events (data type ``cutouts``)."""

    name = "aia"
    Parameters = AiaParameters
    data_type = "cutouts"
    download_parameters = ("wavelengths", "padding", "cadence", "fov", "route")
    _RUNTIME = ("_drms_client",)

    def __init__(self, pars: AiaParameters | None = None, context: ProjectContext | None = None,
                 **kwargs: Any) -> None:
        super().__init__(pars, context, **kwargs)
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._drms_client = None

    @property
    def http(self):
        return shared_client(self.pars.network_policy())

    # -- what to ask for -------------------------------------------------------------------
    def cutout_request(self, cat_row: dict[str, Any]) -> dict[str, Any]:
        """The job's parameters for one event (no email): centre, field of view, times, waves.

        Raises
        ------
        ValueError
            If the row is not a solar event (no helioprojective position or times).
        """
        name = cat_row.get("name")
        if cat_row.get("frame") != "helioprojective":
            raise ValueError(f"AIA cuts out solar events (a helioprojective catalog such as the "
                             f"hek preset); {name!r} is a target in the "
                             f"{cat_row.get('frame') or 'icrs'} frame")
        try:
            x, y = float(cat_row["hpc_x"]), float(cat_row["hpc_y"])
            start = dt.datetime.fromisoformat(str(cat_row["start_time"]))
            end = dt.datetime.fromisoformat(str(cat_row["end_time"]))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"event {name!r} has no usable hpc_x, hpc_y, start_time and "
                             "end_time") from None
        if not (math.isfinite(x) and math.isfinite(y)) or end < start:
            raise ValueError(f"event {name!r}: position ({x}, {y}) or times {start}/{end} unusable")
        extra = cat_row.get("extra") or {}
        fovx = fovy = float(self.pars.fov)
        try:
            width = float(extra["bbox_x2"]) - float(extra["bbox_x1"])
            height = float(extra["bbox_y2"]) - float(extra["bbox_y1"])
            if math.isfinite(width) and math.isfinite(height):
                fovx, fovy = max(fovx, 1.2 * width), max(fovy, 1.2 * height)
        except (KeyError, TypeError, ValueError):
            pass
        first = start - dt.timedelta(minutes=self.pars.padding[0])
        last = end + dt.timedelta(minutes=self.pars.padding[1])
        return {"xcen": round(x, 3), "ycen": round(y, 3), "fovx": round(fovx, 3),
                "fovy": round(fovy, 3), "starttime": first.strftime(_TIME),
                "endtime": last.strftime(_TIME), "waves": list(self.pars.wavelengths),
                "cadence": float(self.pars.cadence)}

    def files_folder(self, cat_row: dict[str, Any]) -> str:
        """Where an event's FITS files go (relative to the data root), beside its raw file."""
        identity = raw_file_identity(self.download_hash, self.raw_identity(cat_row)["target_key"])
        return cutout_folder(storage.raw_filename(self.name, str(cat_row["name"]),
                                                  float(cat_row["ra"]), identity, self.data_type))

    # -- jobs as rows ----------------------------------------------------------------------
    def _job_row(self, route: str, key: str) -> dict[str, Any] | None:
        with SmartSession() as session:
            job = session.scalars(sa.select(CutoutJob).where(
                CutoutJob.route == route, CutoutJob.request_key == key)).first()
            return None if job is None else {c: getattr(job, c) for c in (
                "id", "job_id", "state", "polls", "files", "error", "submitted_at")}

    def _save_job(self, route: str, key: str, source_name: str, request: dict[str, Any],
                  **values: Any) -> None:
        values = {"updated_at": dt.datetime.now(dt.UTC).replace(tzinfo=None), **values}
        with SmartSession() as session:
            job = session.scalars(sa.select(CutoutJob).where(
                CutoutJob.route == route, CutoutJob.request_key == key)).first()
            if job is None:
                job = CutoutJob(observatory=self.name, route=route, request_key=key,
                                source_name=source_name, parameters=request)
                session.add(job)
            for name, value in values.items():
                setattr(job, name, value)
            session.commit()

    def job(self, cat_row: dict[str, Any]) -> dict[str, Any] | None:
        """The row of an event's job (as a dictionary), or None if none was sent."""
        return self._job_row(self.pars.route, job_key(self.pars.route, self.cutout_request(
            cat_row)))

    # -- JSOC through drms -----------------------------------------------------------------
    def _drms(self):
        if self._drms_client is None:
            import drms

            base = self.pars.jsoc_url.rstrip("/") + "/"
            server = drms.ServerConfig(
                name="skyretriever-jsoc", cgi_baseurl=base + "cgi-bin/ajax/",
                cgi_show_series="show_series", cgi_jsoc_info="jsoc_info",
                cgi_jsoc_fetch="jsoc_fetch", cgi_check_address="checkAddress.sh",
                http_download_baseurl=base, encoding="latin1")
            self._drms_client = drms.Client(server=server)
        return self._drms_client

    def _call_drms(self, what: str, operation):
        def attempt():
            try:
                return operation()
            except (OSError, ValueError) as error:  # urllib's errors, a cut or HTML body
                raise _drms_error(error, what) from None

        return self.http.call_with_retries(attempt, what)

    def _notify(self) -> str:
        email = self.pars.notify or os.environ.get(EMAIL_VARIABLE)
        if not email:
            raise ParameterError(f"observatories.aia.notify: the jsoc route needs an email "
                                 f"registered with JSOC (or set ${EMAIL_VARIABLE})")
        _HIDDEN.add(email)
        return email

    def _jsoc_submit(self, request: dict[str, Any]) -> str:
        import drms

        start = dt.datetime.fromisoformat(request["starttime"])
        seconds = (dt.datetime.fromisoformat(request["endtime"]) - start).total_seconds()
        cadence = request["cadence"]
        waves = ",".join(str(w) for w in request["waves"])
        ds = (f"{JSOC_SERIES}[{start.strftime(_TIME)}Z/{seconds + cadence:.0f}s@{cadence:g}s]"
              f"[{waves}]{{image}}")
        process = {"im_patch": {
            "t_ref": start.strftime(_TIME), "t": 0, "r": 0, "c": 0, "locunits": "arcsec",
            "boxunits": "arcsec", "x": request["xcen"], "y": request["ycen"],
            "width": request["fovx"], "height": request["fovy"]}}
        email = self._notify()
        try:
            export = self._call_drms(f"JSOC export request at {self.pars.jsoc_url}", lambda: (
                # requester=False: drms would send the email's local part as the requester.
                self._drms().export(ds, method="url", protocol="fits", email=email,
                                    process=process, requester=False)))
        except HttpError as error:  # its URL carries the email
            raise HttpError(_HIDDEN.redact(str(error)), error.status, "") from None
        try:
            export.wait(timeout=0, sleep=0)  # raises with JSOC's reason if refused at once
        except drms.DrmsExportError as error:
            raise CutoutJobFailed(f"JSOC refused the export: {_HIDDEN.redact(str(error))}"
                                  ) from None
        if not export.id:
            raise CutoutJobFailed("JSOC answered no request id")
        return str(export.id)

    def _jsoc_poll(self, job_id: str) -> tuple[str, list[str] | None, str | None]:
        """(state, file URLs when done, reason when failed) of a JSOC request."""
        import drms

        export = self._call_drms(f"JSOC export status of {job_id}", lambda: (
            self._drms().export_from_id(job_id)))
        if export.has_succeeded(skip_update=True):
            return "done", [str(url) for url in export.urls["url"]], None
        if export.has_failed(skip_update=True):
            try:
                export.wait(timeout=0, sleep=0)
            except drms.DrmsExportError as error:
                return "failed", None, f"JSOC: {error}"
            return "failed", None, f"JSOC status {export.status}"
        return "polling", None, None

    # -- the SSW cutout service ------------------------------------------------------------
    def _ssw_submit(self, request: dict[str, Any]) -> str:
        seconds = (dt.datetime.fromisoformat(request["endtime"])
                   - dt.datetime.fromisoformat(request["starttime"])).total_seconds()
        params = {"xcen": request["xcen"], "ycen": request["ycen"], "fovx": request["fovx"],
                  "fovy": request["fovy"], "notrack": 1, "queue_job": 1,
                  "waves": ",".join(str(w) for w in request["waves"]),
                  "starttime": request["starttime"], "endtime": request["endtime"],
                  "max_frames": int(seconds // request["cadence"]) + 1}
        url = urljoin(self.pars.ssw_url.rstrip("/") + "/", SSW_SUBMIT)
        page = self.http.request("GET", url, params=params, allowed_hosts=(url,),
                                 what=f"SSW cutout request at {self.pars.ssw_url}").text
        match = _JOB_ID.search(page)
        if match is None:
            raise CutoutJobFailed(f"the SSW service answered no JobID: "
                                  f"{' '.join(re.sub('<[^>]+>', ' ', page).split())[:300]!r}")
        return match[1]

    def _ssw_poll(self, job_id: str) -> tuple[str, list[str] | None, str | None]:
        folder = urljoin(self.pars.ssw_url.rstrip("/") + "/", SSW_DATA + job_id + "/")
        page = self.http.request("GET", folder, allowed_hosts=(folder,),
                                 what=f"SSW job {job_id}").text
        if "Per-Wave file lists" not in page:
            if re.search(r"\b(FAILED|ERROR)\b", page):
                return "failed", None, "SSW: " + " ".join(re.sub("<[^>]+>", " ", page).split())[:300]
            return "polling", None, None
        urls = []
        for link in _LIST_LINK.findall(page):
            listing = urljoin(folder, link)
            text = self.http.request("GET", listing, allowed_hosts=(listing,),
                                     accept=_file_list, what=f"SSW file list {link}")
            urls += [line.strip() for line in text.splitlines() if line.strip().endswith(".fits")]
        return "done", urls, None

    # -- one event -------------------------------------------------------------------------
    def _submit(self, route: str, request: dict[str, Any]) -> str:
        return self._jsoc_submit(request) if route == "jsoc" else self._ssw_submit(request)

    def _poll(self, route: str, job_id: str) -> tuple[str, list[str] | None, str | None]:
        return self._jsoc_poll(job_id) if route == "jsoc" else self._ssw_poll(job_id)

    def job_files(self, cat_row: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The event's job (submitted once, or found again and polled) and its file URLs.

        Raises
        ------
        CutoutJobFailed
            If the service refused or failed the job, or it passed its deadline (the
            job's row says why).
        """
        route, name = self.pars.route, str(cat_row["name"])
        request = self.cutout_request(cat_row)
        key = job_key(route, request)
        job = self._job_row(route, key)
        if job is not None and job["state"] == "done":
            return job, list(job["files"] or [])
        if job is None or job["state"] == "failed":
            try:
                job_id = self._submit(route, request)
            except CutoutJobFailed as error:
                self._save_job(route, key, name, request, job_id=None, state="failed",
                               error=str(error), polls=0, finished_at=_now(),
                               submitted_at=_now())
                raise
            self._save_job(route, key, name, request, job_id=job_id, state="submitted",
                           polls=0, error=None, files=None, submitted_at=_now(), finished_at=None)
            log.info("aia: %s job %s sent for %s", route, job_id, name)
            job = self._job_row(route, key)
        else:
            log.info("aia: polling the %s job %s of %s again", route, job["job_id"], name)
        deadline = job["submitted_at"] + dt.timedelta(seconds=self.pars.job_timeout)
        polls, wait = job["polls"], self.pars.poll_interval
        while True:
            state, files, reason = self._poll(route, job["job_id"])
            polls += 1
            if state == "done":
                self._save_job(route, key, name, request, state="done", polls=polls,
                               files=files, finished_at=_now())
                return self._job_row(route, key), files or []
            if state == "failed":
                self._save_job(route, key, name, request, state="failed", polls=polls,
                               error=reason, finished_at=_now())
                raise CutoutJobFailed(f"{route} job {job['job_id']} failed: {reason}")
            left = (deadline - _now()).total_seconds()
            if left <= 0:
                reason = (f"not finished {self.pars.job_timeout:g} s after it was sent "
                          f"({polls} polls): given up")
                self._save_job(route, key, name, request, state="failed", polls=polls,
                               error=reason, finished_at=_now())
                raise CutoutJobFailed(f"{route} job {job['job_id']} {reason}")
            self._save_job(route, key, name, request, state="polling", polls=polls)
            time.sleep(min(wait, left))
            wait = min(wait * 1.5, self.pars.poll_interval_max)

    def fetch(self, cat_row: dict[str, Any]) -> dict[str, Any]:
        """The event's job and its FITS files, downloaded into the event's folder."""
        job, urls = self.job_files(cat_row)
        folder = storage.full_path(self.files_folder(cat_row))
        files = []
        for url in urls:
            name = url.rstrip("/").rsplit("/", 1)[-1]
            if not name.endswith(".fits") or "/" in name or name.startswith("."):
                raise CutoutJobFailed(f"the job listed a file that is not a FITS file: {url!r}")
            path = folder / name
            try:
                if path.exists():
                    validate_fits(path)
                else:
                    raise FileNotFoundError(path)
            except (OSError, ValueError):
                self.http.download(url, path, validator=validate_fits, allowed_hosts=(url,))
            files.append((url, str(path)))
        return {"job": {k: job[k] for k in ("job_id", "state", "polls")}, "route": self.pars.route,
                "request": self.cutout_request(cat_row), "files": files}

    def parse(self, fetched: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
        """The frame index (one row per FITS file, in time order) and the job's provenance."""
        rows = []
        for url, path in fetched["files"]:
            header = fits.getheader(path)
            when = str(header.get("DATE-OBS") or header.get("T_OBS", "")).rstrip("Z")
            rows.append({"time": when, "mjd": float(Time(when, scale="utc").mjd),
                         "wavelength": int(header.get("WAVELNTH", 0)),
                         "file": Path(path).name, "url": url,
                         "naxis1": int(header.get("NAXIS1", 0)),
                         "naxis2": int(header.get("NAXIS2", 0)),
                         "exptime": float(header.get("EXPTIME", np.nan)),
                         "file_size": Path(path).stat().st_size})
        frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
        frame = frame.sort_values(["wavelength", "mjd"], kind="stable").reset_index(drop=True)
        altdata = {"route": fetched["route"], "job": fetched["job"],
                   "request": fetched["request"], "series": JSOC_SERIES}
        return frame, altdata

    def download_from_observatory(self, cat_row: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
        return self.parse(self.fetch(cat_row))

    def images_folder(self, raw: RawCutouts) -> str:
        """Where an event's images go: the project's folder (relative to the data root)."""
        return (f"{storage.project_path(self.context.folder)}/{self.name.upper()}_images/"
                f"{storage.sanitize_name(raw.source_name)}_{raw.identity}")

    def reduce(self, raw: RawCutouts, data_type: str = "cutouts",
               source: Any = None) -> list[dict[str, Any]]:
        """The event's images and movies (in the project's folder): their ``images.json`` entries.

        Each entry names the image, its FITS file, wavelength and time, and its
        pixel mapping (:class:`skyretriever.solar.ImageMapping`).
        """
        if data_type != self.data_type:
            raise ValueError(f"{type(self).__name__} reduces {self.data_type}, not {data_type!r}")
        if raw.is_empty or raw.data is None or len(raw.data) == 0:
            return []
        folder = storage.full_path(raw.files_folder)
        frame = raw.data.sort_values(["wavelength", "mjd"], kind="stable")
        frames = [(str(folder / name), int(wave), str(time)) for name, wave, time in
                  zip(frame["file"], frame["wavelength"], frame["time"])]
        images = storage.full_path(self.images_folder(raw))
        key = self.reduction_key(raw)
        made = _made_images(images, key, self.pars.movie)
        if made is not None:
            return made
        entries = render_event(frames, images, scaling=self.pars.scaling,
                               max_size=self.pars.image_max_size, movie=self.pars.movie)
        with storage.atomic_write(images / REDUCTION_FILE) as temporary:
            temporary.write_text(json.dumps({"key": key, "images": len(entries)}),
                                 encoding="utf-8")
        return entries

    def products_current(self, raw_values: dict[str, Any]) -> bool:
        """Whether the event's images were made from this raw data with these parameters
        (so a later run skips the event: nothing made, analysed or written again)."""
        if raw_values.get("is_empty"):
            return True
        raw = self.raw_class(**{k: v for k, v in raw_values.items() if k != "id"})
        try:
            raw.load()
        except Exception:  # a damaged index is made again by the run, not here
            log.debug("raw index of %s unreadable", raw.source_name, exc_info=True)
            return False
        return _made_images(storage.full_path(self.images_folder(raw)), self.reduction_key(raw),
                            self.pars.movie) is not None

    def reduction_key(self, raw: RawCutouts) -> str:
        """What the images of ``raw`` are made from: the project's config hash, the
        reduction parameters and each frame's file (name and size); images made with
        another key are made again."""
        frames = raw.data.sort_values(["wavelength", "mjd"], kind="stable")
        recipe = {"cfg_hash": self.context.cfg_hash, "scaling": self.pars.scaling,
                  "image_max_size": self.pars.image_max_size, "movie": self.pars.movie,
                  "frames": [[str(name), int(size)] for name, size in
                             zip(frames["file"], frames["file_size"])]}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def _made_images(folder: Path, key: str, movie: bool) -> list[dict[str, Any]] | None:
    """The ``images.json`` entries of images already made with ``key``, every file there;
    None when they must be made (again)."""
    try:
        recorded = json.loads((folder / REDUCTION_FILE).read_text(encoding="utf-8"))
        entries = json.loads((folder / "images.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or recorded.get("key") != key or \
            not isinstance(entries, list) or recorded.get("images") != len(entries):
        return None
    needed = [entry["image"] for entry in entries]
    if movie:
        needed += [f"movie_{wave}.png" for wave in {entry["wavelength"] for entry in entries}]
    if not all((folder / name).is_file() and (folder / name).stat().st_size > 0
               for name in needed):
        return None
    return entries


def _file_list(response: Response) -> str:
    """A ``.list`` file's text; an HTML page in its place (maintenance) is asked again."""
    text = response.text
    if text.lstrip()[:100].lower().startswith(("<!doctype html", "<html")):
        raise TransientError(f"{response.url} answered an HTML page instead of a file list")
    return text


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
