"""VirtualZTF: ZTF light curves from IRSA's light-curve service.

A catalog row with a ``ztf_oid`` is fetched by that object id; the rows of a
batch that have one go to IRSA together, ``ids_per_request`` ids per request
(:meth:`VirtualZTF.prepare_download`). A row without one is a cone search
around its catalog position (``POS=CIRCLE ra dec r``; IRSA answers one
position per request) whose radius is ``match_radius`` plus how far the star
moves, with its proper motion, between the catalog epoch
(``position_epoch``) and the furthest end of the ZTF observations asked for
(``time_range``, or the survey's start to today).

Every request sends ``FORMAT=csv`` (IRSA's default is VOTable) and the
``BANDNAME``, ``TIME``, ``BAD_CATFLAGS_MASK`` and ``COLLECTION`` parameters
that are set. The raw data is IRSA's table as sent, with a ``filter`` column
(``zg``, ``zr``, ``zi``) added; its provenance records the query, the data
release asked for (``collection``, or IRSA's latest public release, with the
date) and the catalog values used to judge the objects.

Reduction drops the objects of a cone search that are further than
``match_radius`` from where the star was (its position moved to each object's
mean epoch) or whose median magnitude differs from the catalog's by more than
``mag_tolerance``, then gives one light curve per (object id, filter, season
split by gaps of ``reducer.gap`` days). ``catflags`` becomes ``quality``,
from which the base reducer makes ``qflag`` with ``quality_bitmask``.

With ``image_cutouts: true`` the observatory downloads images instead: for each
source, IRSA's Image Back End (``ibe_url``) is searched for the science images
holding the star (``search/ztf/products/sci?POS=ra,dec&ct=csv``, with
``bands`` and ``time_range`` as its ``WHERE``), and each image's cutout
(``cutout_size`` arcsec around the star where it was at that image's epoch) is
fetched, checked and kept as the image data type
(:class:`~skyretriever.models.images.RawImages`, one group per image with its
WCS and header; see :mod:`skyretriever.images.ibe`). The project is then an
``images`` project: the light curves are made from the cutouts by aperture
photometry (``aperture_radius``, ``background_radius``, in arcsec) with each
image's zero point. A star on no image is recorded as empty. Public data need
no login.

Credentials for non-public collections come from the environment
(``SKYRETRIEVER_IRSA_USER`` and ``SKYRETRIEVER_IRSA_PASSWORD``) or from a
netrc-format file (``credentials_file``, entry ``machine <IRSA host>``). They
are sent as HTTP basic authentication only to the IRSA host (no request
follows a redirect to another host), are never parameters, and never appear
in logs, errors, ``config.yaml`` or provenance.

An answer without the columns the reduction reads, or with a value that is not
a number where one is expected, fails its source with a :class:`~skyretriever.net.BadAnswer`
naming the column, the line and the query; extra columns are kept as they come.

Examples
--------
>>> obs = VirtualZTF(irsa_url="http://127.0.0.1:8000", bands=["g", "r"])
>>> obs.search_radius({"ra": 10.0, "dec": 20.0, "pmra": 300.0, "pmdec": 400.0},
...                   years=(2018.0, 2024.0))
6.0
>>> obs.query_params({"ra": 10.0, "dec": 20.0}, years=(2018.0, 2024.0))["POS"]
'CIRCLE 10.0 20.0 0.0005555555555555556'
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import io
import logging
import math
import netrc
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
from pydantic import field_validator

from skyretriever.healpix import angular_distance
from skyretriever.images.ibe import (
    SCIENCE_PATH,
    SEARCH_PATH,
    cutout_from_fits,
    cutout_params,
    fits_answer,
    read_search_table,
    science_image_path,
)
from skyretriever.images.photometry import lightcurve_frame
from skyretriever.models.datasets import Lightcurve
from skyretriever.models.images import Cutout, RawImages
from skyretriever.net import (
    BadAnswer,
    HttpError,
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
    ProjectContext,
    VirtualObservatory,
    register_observatory,
)
from skyretriever.observatories.runtime import RuntimeState
from skyretriever.observatories.ztf_hats import (
    HatsError,
    HatsLightCurves,
    StarCone,
    heliocentric_delay,
    hmjd_to_mjd,
)
from skyretriever.parameters import ParameterError, parameter

__all__ = ["REQUIRED_COLUMNS", "ZTF_COLUMNS", "ZTF_QUALITY_PRESETS", "VirtualZTF", "ZtfAnswer",
           "ZtfParameters", "cutout_photometry", "heliocentric_delay", "hmjd_to_mjd",
           "read_ztf_csv"]

log = logging.getLogger(__name__)

LIGHT_CURVE_PATH = "cgi-bin/ZTF/nph_light_curves"
#: Columns of IRSA's CSV light curves, in order.
ZTF_COLUMNS = ("oid", "expid", "hjd", "mjd", "mag", "magerr", "catflags", "filtercode", "ra",
               "dec", "chi", "sharp", "filefracday", "field", "ccdid", "qid", "limitmag",
               "magzp", "magzprms", "clrcoeff", "clrcounc", "exptime", "airmass", "programid")
#: Columns the reduction reads (every one a number but ``filtercode``); IRSA's other
#: columns, and any extra ones, are kept in the raw data as they come.
REQUIRED_COLUMNS = ("oid", "hjd", "mjd", "mag", "magerr", "catflags", "filtercode", "ra", "dec",
                    "exptime", "field", "ccdid", "qid", "limitmag", "airmass", "programid")
#: ``catflags`` bits that set ``qflag``: bit 15 (32768) marks unusable epochs; "hard" takes
#: any flag (the usual ``catflags == 0`` selection).
ZTF_QUALITY_PRESETS = {"none": 0, "default": 32768, "hard": 0xFFFF, "hardest": 0xFFFFFFFF}
#: First night of ZTF's public survey (2018-03-17).
ZTF_START_MJD = 58194.0
USER_VARIABLE = "SKYRETRIEVER_IRSA_USER"
PASSWORD_VARIABLE = "SKYRETRIEVER_IRSA_PASSWORD"
_MJD_J2000 = 51544.5

_DAYS_PER_YEAR = 365.25
#: The parameters of image cutouts (critical only when ``image_cutouts`` is on).
IMAGE_PARAMETERS = ("image_cutouts", "cutout_size", "max_images", "aperture_radius",
                    "background_radius")
#: Arcseconds per ZTF pixel.
ZTF_PIXEL_ARCSEC = 1.012
_COLLECTION = re.compile(r"[A-Za-z0-9_]{1,64}")


def mjd_to_year(mjd: float | np.ndarray) -> float | np.ndarray:
    """Julian year of a modified Julian date (``2000.0`` is MJD 51544.5)."""
    return 2000.0 + (np.asarray(mjd, dtype=float) - _MJD_J2000) / _DAYS_PER_YEAR


class ZtfParameters(ObservatoryParameters, NetworkParameters):
    """What to ask IRSA for, and how to judge the objects it answers with."""

    irsa_url: str = parameter(
        "https://irsa.ipac.caltech.edu", "Base URL of IRSA (or a mirror or simulator).",
        critical=False,
    )
    collection: str | None = parameter(
        None, "ZTF data release (COLLECTION, e.g. ztf_dr23); None: IRSA's latest public one.",
    )
    bands: list[Literal["g", "r", "i"]] = parameter(
        ["g", "r", "i"], "ZTF filters to fetch (BANDNAME).", min_length=1
    )
    time_range: list[float] | None = parameter(
        None, "Only epochs between these MJDs (TIME); None: all.", min_length=2, max_length=2
    )
    bad_catflags_mask: int | None = parameter(
        None, "Epochs whose catflags have any of these bits are left out by IRSA "
        "(BAD_CATFLAGS_MASK); None keeps them all (they are flagged by quality_bitmask).", ge=0,
    )
    match_radius: float = parameter(
        2.0, "Radius (arcsec) within which a ZTF object is the catalog star (at the object's "
        "epoch); the search radius adds the star's motion since the catalog epoch.", gt=0,
    )
    mag_tolerance: float | None = parameter(
        1.0, "Largest |median ZTF mag - catalog mag| of a kept object; None ignores magnitudes.",
        ge=0,
    )
    position_epoch: float = parameter(
        2016.0, "Epoch (year) of the catalog positions (Gaia DR3: 2016.0)."
    )
    ids_per_request: int = parameter(
        100, "ZTF object ids asked for in one request.", critical=False, ge=1
    )
    route: Literal["api", "hats"] = parameter(
        "api", "Where the light curves come from: 'api' (IRSA's light-curve service, one "
        "request per star or per ids_per_request ids) or 'hats' (IRSA's HATS Parquet "
        "collection, read a batch of stars at a time).", critical=False,
    )
    hats_url: str = parameter(
        "s3://ipac-irsa-ztf/contributed/dr23/lc/hats", "The ZTF light-curve HATS collection "
        "(route 'hats'): s3://bucket/prefix (anonymous) or a local folder; recorded with the "
        "data.", critical=False,
    )
    s3_endpoint_url: str | None = parameter(
        None, "S3 endpoint of hats_url (a mirror or simulator); None for AWS.", critical=False,
    )
    credentials_file: str | None = parameter(
        None, "netrc-format file with a 'machine <IRSA host> login ... password ...' entry "
        f"for non-public collections (else ${USER_VARIABLE} and ${PASSWORD_VARIABLE}).",
        critical=False,
    )
    image_cutouts: bool = parameter(
        False, "Download cutouts of ZTF's science images from IRSA's Image Back End (ibe_url) "
        "instead of light curves: the data type becomes 'images' (an images project) and the "
        "light curves are made from the cutouts by aperture photometry.",
    )
    cutout_size: float = parameter(
        30.0, "Width and height of each image cutout (arcsec; image_cutouts).", gt=0, le=1800,
    )
    max_images: int | None = parameter(
        1000, "Most science-image cutouts kept per source (image_cutouts): a star with more "
        "images keeps this many, evenly spaced in time, and its provenance says so "
        "(images_capped); None keeps every one. A star in a high-cadence field has "
        "thousands, each a request to IRSA and about 10-40 kB held and stored.", ge=1,
    )
    ibe_url: str = parameter(
        "https://irsa.ipac.caltech.edu/ibe", "Base URL of IRSA's Image Back End (or a mirror "
        "or simulator; image_cutouts).", critical=False,
    )
    aperture_radius: float = parameter(
        4.0, "Radius (arcsec) of the photometric aperture on the image cutouts.", gt=0,
    )
    background_radius: float = parameter(
        8.0, "Pixels farther than this (arcsec) from the star estimate the background of the "
        "image cutouts.", gt=0,
    )

    def to_dict(self, critical_only: bool = False) -> dict[str, Any]:
        """Plain values; without ``image_cutouts`` the image parameters are left out of the
        critical ones (so the config hash of light-curve projects is what it was)."""
        values = super().to_dict(critical_only)
        if critical_only and not self.image_cutouts:
            for name in IMAGE_PARAMETERS:
                values.pop(name, None)
        return values

    @field_validator("irsa_url")
    @classmethod
    def _no_credentials_in_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL, not {value!r}")
        if parts.username or parts.password:
            raise ValueError(f"must not hold credentials (they would be written to config files "
                             f"and logs); use ${USER_VARIABLE}/${PASSWORD_VARIABLE} or "
                             "credentials_file")
        return value

    @field_validator("ibe_url")
    @classmethod
    def _archive_url(cls, value: str) -> str:
        return validate_archive_url(value, "the URL")

    @field_validator("collection")
    @classmethod
    def _plain_collection(cls, value: str | None) -> str | None:
        if value is not None and not _COLLECTION.fullmatch(value):
            raise ValueError(f"expected a release name such as 'ztf_dr23', not {value!r}")
        return value

    @field_validator("time_range")
    @classmethod
    def _ordered_time_range(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not (math.isfinite(value[0]) and math.isfinite(value[1])
                                      and value[0] < value[1]):
            raise ValueError(f"expected [mjd_min, mjd_max] with mjd_min < mjd_max, not {value}")
        return value


@dataclass
class ZtfAnswer:
    """What IRSA sent for one source: its CSV (only this source's rows) and the provenance."""

    text: str
    provenance: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    #: The table itself (route ``hats``), in place of ``text``.
    frame: pd.DataFrame | None = None


class _Credentials:
    """A user name and password that never show in a ``repr``, a log line or a pickle."""

    def __init__(self, user: str, password: str, origin: str) -> None:
        self._header = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self.origin = origin

    def headers(self) -> dict[str, str]:
        return {"Authorization": self._header}

    def __repr__(self) -> str:
        return f"<IRSA credentials from {self.origin}>"

    def __reduce__(self):
        raise TypeError("IRSA credentials are not pickled")


def find_credentials(irsa_url: str, credentials_file: str | None) -> _Credentials | None:
    """IRSA credentials from the environment, else from the netrc file; ``None`` if neither.

    Raises
    ------
    ParameterError
        If only one of the two variables is set, or the file cannot be read
        (the message names the file, never its content).
    """
    user, password = os.environ.get(USER_VARIABLE), os.environ.get(PASSWORD_VARIABLE)
    if user and password:
        return _Credentials(user, password, "the environment")
    if bool(user) != bool(password):
        raise ParameterError(f"observatories.ztf: set both ${USER_VARIABLE} and "
                             f"${PASSWORD_VARIABLE}, or neither")
    if credentials_file is None:
        return None
    path = Path(credentials_file).expanduser()
    try:
        entry = netrc.netrc(str(path)).authenticators(urlsplit(irsa_url).hostname or "")
    except (OSError, netrc.NetrcParseError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise ParameterError(f"observatories.ztf.credentials_file: cannot read {str(path)!r} "
                             f"as a netrc file ({reason})") from None
    if entry is None or not entry[0] or not entry[2]:
        return None
    return _Credentials(entry[0], entry[2], str(path))


def _header_fields(text: str) -> list[str]:
    """The column names of a CSV text's first line."""
    first = text.lstrip().split("\n", 1)[0]
    return [field.strip().strip('"') for field in first.split(",")]


def _check_csv(response: Response) -> str:
    """IRSA's CSV as text; an HTML page (maintenance) is asked again, anything else refused."""
    text = response.text
    start = text.lstrip()[:100]
    if not start or "oid" in _header_fields(text):
        return text
    snippet = " ".join(text[:200].split())
    if start.lower().startswith(("<!doctype html", "<html")):
        raise TransientError(f"{response.url} answered an HTML page instead of a CSV table: "
                             f"{snippet!r}")
    raise BadAnswer(f"IRSA answered something that is not a ZTF light-curve table (no 'oid' "
                    f"column): {snippet!r}")


def _rows_by_oid(text: str, where: str = "IRSA's ZTF table") -> tuple[str, dict[int, list[str]]]:
    """The header line, and the data lines of each object id (split without parsing)."""
    lines = text.splitlines()
    if not lines:
        return ",".join(ZTF_COLUMNS), {}
    index = _header_fields(text).index("oid")
    rows: dict[int, list[str]] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split(",")
        value = fields[index].strip() if index < len(fields) else ""
        if not value.isdigit():
            raise BadAnswer(f"{where}: line {number} has oid {value[:40]!r}, not an object id")
        rows.setdefault(int(value), []).append(line)
    return lines[0], rows


@register_observatory
class VirtualZTF(RuntimeState, VirtualObservatory):
    """ZTF light curves from IRSA, by object id (batched) or by position."""

    name = "ztf"
    Parameters = ZtfParameters
    #: What IRSA is asked for (bad_catflags_mask is applied by IRSA, at download), and the
    #: cone's radius (match_radius and position_epoch set it).
    download_parameters = ("collection", "bands", "time_range", "bad_catflags_mask",
                           "match_radius", "position_epoch", "route", "hats_url",
                           "image_cutouts", "cutout_size", "max_images")
    QUALITY_PRESETS = ZTF_QUALITY_PRESETS
    split_columns = ("oid", "filter")

    def __init__(self, pars: ZtfParameters | None = None, context: ProjectContext | None = None,
                 **kwargs: Any) -> None:
        super().__init__(pars, context, **kwargs)
        if self.pars.image_cutouts:
            if self.pars.background_radius >= self.pars.cutout_size / 2:
                raise ParameterError(
                    f"observatories.{self.name}: background_radius "
                    f"({self.pars.background_radius:g} arcsec) must be less than half the "
                    f"cutout_size ({self.pars.cutout_size:g} arcsec), or no pixel is background")
        self._init_runtime()

    @property
    def data_type(self) -> str:  # type: ignore[override]
        """``images`` with ``image_cutouts``, else ``photometry``."""
        return "images" if self.pars.image_cutouts else "photometry"

    #: Attributes made at run time (client, credentials, the batch's answers); never pickled:
    #: worker processes reduce, they never download.
    _RUNTIME = ("_credentials", "_credentials_key", "_answers", "_executor", "_lock", "_hats")

    def _init_runtime(self) -> None:
        self._credentials: _Credentials | None = None
        self._credentials_key: tuple | None = None
        self._answers: dict[str, ZtfAnswer] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._hats: HatsLightCurves | None = None

    def download_settings(self) -> dict[str, Any]:
        """The download parameters; with ``route: hats`` also the route and the collection
        (so its raw data, which has fewer columns, is never taken for the API's)."""
        settings = super().download_settings()
        if settings["route"] == "api" or settings["image_cutouts"]:
            # The hash of API downloads made before routes existed (images have no route).
            del settings["route"], settings["hats_url"]
        if not settings["image_cutouts"]:  # the hash of light curves made before images
            del settings["image_cutouts"], settings["cutout_size"], settings["max_images"]
        return settings

    # -- talking to IRSA ---------------------------------------------------------------------
    @property
    def light_curve_url(self) -> str:
        return join_url(self.pars.irsa_url, LIGHT_CURVE_PATH)

    def _auth_headers(self) -> dict[str, str]:
        key = (self.pars.irsa_url, self.pars.credentials_file,
               os.environ.get(USER_VARIABLE), os.environ.get(PASSWORD_VARIABLE))
        with self._lock:
            if self._credentials_key != key:
                self._credentials = find_credentials(self.pars.irsa_url,
                                                     self.pars.credentials_file)
                self._credentials_key = key
            return self._credentials.headers() if self._credentials is not None else {}

    def query_params(self, cat_row: dict[str, Any] | None = None, ids: list[int] | None = None,
                     years: tuple[float, float] | None = None) -> dict[str, Any]:
        """The request's parameters: by position (``cat_row``) or by object ids (``ids``)."""
        pars = self.pars
        params: dict[str, Any] = {}
        if ids is not None:
            params["ID"] = [str(int(oid)) for oid in ids]
        else:
            radius = self.search_radius(cat_row, years) / 3600.0
            params["POS"] = f"CIRCLE {float(cat_row['ra'])!r} {float(cat_row['dec'])!r} {radius!r}"
            params["BANDNAME"] = ",".join(pars.bands)
        params["FORMAT"] = "csv"
        if pars.time_range is not None:
            params["TIME"] = f"{pars.time_range[0]!r} {pars.time_range[1]!r}"
        if pars.bad_catflags_mask is not None:
            params["BAD_CATFLAGS_MASK"] = str(pars.bad_catflags_mask)
        if pars.collection is not None:
            params["COLLECTION"] = pars.collection
        return params

    def _request(self, params: dict[str, Any], what: str) -> str:
        try:
            # Only IRSA's host is asked (credentials or not): a redirect elsewhere is refused.
            return shared_client(self.pars.network_policy()).request(
                "GET", self.light_curve_url, params=params, headers=self._auth_headers(),
                accept=_check_csv, what=what, allowed_hosts=(self.pars.irsa_url,))
        except HttpError as error:
            if error.status in (401, 403):
                release = self.pars.collection or "the default release"
                raise NetworkError(
                    f"{what}: IRSA refused access to {release} (HTTP {error.status}); "
                    f"non-public collections need credentials (${USER_VARIABLE} and "
                    f"${PASSWORD_VARIABLE}, or credentials_file)") from None
            raise

    # -- positions ------------------------------------------------------------------------------
    def survey_years(self) -> tuple[float, float]:
        """First and last year of the observations asked for (``time_range``, or ZTF to today)."""
        if self.pars.time_range is not None:
            first, last = self.pars.time_range
        else:
            today = dt.datetime.now(dt.UTC)
            first = ZTF_START_MJD
            last = today.timestamp() / 86400.0 + 40587.0  # MJD of the Unix epoch
        return float(mjd_to_year(first)), float(mjd_to_year(last))

    def search_radius(self, cat_row: dict[str, Any], years: tuple[float, float] | None = None
                      ) -> float:
        """Cone radius (arcsec): ``match_radius`` plus the star's largest motion from the
        catalog epoch to either end of ``years`` (default :meth:`survey_years`)."""
        first, last = years or self.survey_years()
        motion = _total_proper_motion(cat_row)
        span = max(abs(first - self.pars.position_epoch), abs(last - self.pars.position_epoch))
        return self.pars.match_radius + motion / 1000.0 * span

    def position_at(self, cat_row: dict[str, Any], year: float | np.ndarray,
                    epoch: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The catalog position (at ``epoch``, default ``position_epoch``) moved to ``year``
        with its proper motion (unmoved without one)."""
        ra, dec = float(cat_row["ra"]), float(cat_row["dec"])
        pmra, pmdec = cat_row.get("pmra"), cat_row.get("pmdec")
        if not (_finite(pmra) and _finite(pmdec)):
            return np.asarray(ra), np.asarray(dec)
        years = np.asarray(year, dtype=float) - (self.pars.position_epoch if epoch is None
                                                 else epoch)
        moved_dec = np.clip(dec + pmdec * years / 3.6e6, -90.0, 90.0)
        moved_ra = (ra + pmra * years / 3.6e6 / max(math.cos(math.radians(dec)), 1e-6)) % 360.0
        return moved_ra, moved_dec

    # -- downloading ------------------------------------------------------------------------------
    def _target(self, cat_row: dict[str, Any]) -> dict[str, Any]:
        """The catalog values reduction judges the objects by (kept in the provenance)."""
        return {"ra": float(cat_row["ra"]), "dec": float(cat_row["dec"]),
                "pmra": _number(cat_row.get("pmra")), "pmdec": _number(cat_row.get("pmdec")),
                "mag": _number(cat_row.get("mag")), "mag_filter": cat_row.get("mag_filter"),
                "epoch": self.pars.position_epoch}

    def _provenance(self, cat_row: dict[str, Any], params: dict[str, Any],
                    resolved_by: str) -> dict[str, Any]:
        query = {key: value for key, value in params.items() if key != "ID"}
        if "ID" in params:
            query["ID"] = [str(int(cat_row["ztf_oid"]))]
        return {
            "archive": "IRSA", "irsa_url": self.pars.irsa_url,
            "data_release": self.pars.collection or "latest public release (no COLLECTION)",
            "queried_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "query": query, "resolved_by": resolved_by, "target": self._target(cat_row),
        }

    def prepare_download(self, cat_rows: list[dict[str, Any]]) -> None:
        """Ask IRSA for the objects of every row with a ``ztf_oid``, many ids per request.

        A request that fails gives its rows an error, so their downloads fail
        with that reason (and the next run asks again). With ``route: hats`` every
        row is answered from the HATS collection (:meth:`prepare_hats`).
        """
        if self.pars.image_cutouts:
            return
        if self.pars.route == "hats":
            self.prepare_hats(cat_rows)
            return
        by_oid = [row for row in cat_rows if row.get("ztf_oid") is not None]
        oids = sorted({int(row["ztf_oid"]) for row in by_oid})
        chunks = [oids[i : i + self.pars.ids_per_request]
                  for i in range(0, len(oids), self.pars.ids_per_request)]

        def ask(chunk: list[int]) -> tuple[str, dict[int, list[str]]] | str:
            what = f"IRSA ZTF query of {len(chunk)} object id(s)"
            try:
                return _rows_by_oid(self._request(self.query_params(ids=chunk), what),
                                    f"the answer to the {what}")
            except NetworkError as error:
                return str(error)

        answers = {}
        for chunk, answer in zip(chunks, self._map(ask, chunks)):
            for oid in chunk:
                answers[oid] = answer
        found = {}
        for row in by_oid:
            oid = int(row["ztf_oid"])
            provenance = self._provenance(row, self.query_params(ids=[oid]), "catalog ztf_oid")
            answer = answers.get(oid)
            if isinstance(answer, str):
                found[row["name"]] = ZtfAnswer("", provenance, error=answer)
            elif answer is not None:
                header, rows = answer
                lines = rows.get(oid, [])
                found[row["name"]] = ZtfAnswer("\n".join([header, *lines]) if lines else "",
                                               provenance)
        with self._lock:
            self._answers = found

    # -- the HATS collection (route: hats) --------------------------------------------------------
    def hats_collection(self) -> HatsLightCurves:
        """The HATS collection of ``hats_url`` (opened once per process)."""
        with self._lock:
            key = (self.pars.hats_url, self.pars.s3_endpoint_url)
            if self._hats is None or (self._hats.url, self._hats.endpoint_url) != key:
                self._hats = HatsLightCurves(self.pars.hats_url, self.pars.s3_endpoint_url,
                                             shared_client(self.pars.network_policy()))
            return self._hats

    def prepare_hats(self, cat_rows: list[dict[str, Any]]) -> None:
        """Read the collection's partitions the batch's cones touch, each once, and keep
        every row's objects and epochs for :meth:`fetch`."""
        found = self._hats_answers(cat_rows)
        with self._lock:
            self._answers = found

    def _hats_answers(self, cat_rows: list[dict[str, Any]]) -> dict[str, ZtfAnswer]:
        """Each row's answer from the collection, filtered as IRSA filters the API's."""
        pars = self.pars
        collection = self.hats_collection()
        cones = [StarCone(str(row["name"]), float(row["ra"]), float(row["dec"]),
                          self.search_radius(row)) for row in cat_rows]
        try:
            tables, partitions = collection.read(cones, pars.bands)
            release = pars.collection or collection.release
        except NetworkError as error:
            tables = {cone.name: error for cone in cones}
            partitions, release = {}, pars.collection or "unknown (collection not opened)"
        answers = {}
        for row, cone in zip(cat_rows, cones):
            params = self.query_params(row)
            by_oid = row.get("ztf_oid") is not None
            provenance = self._provenance(row, params, "catalog ztf_oid" if by_oid
                                          else "position")
            if by_oid:
                provenance["query"]["ID"] = [str(int(row["ztf_oid"]))]
            provenance.update({
                "archive": "IRSA (HATS collection)", "route": "hats",
                "hats_url": pars.hats_url, "data_release": release,
                "partitions": partitions.get(cone.name, []),
                "search_radius_arcsec": round(cone.radius_arcsec, 6)})
            table = tables[cone.name]
            if isinstance(table, (HatsError, NetworkError)):
                answers[cone.name] = ZtfAnswer("", provenance, error=str(table))
                continue
            keep = np.ones(len(table), dtype=bool)
            if pars.time_range is not None:
                mjd = table["mjd"].to_numpy()
                keep &= (mjd >= pars.time_range[0]) & (mjd <= pars.time_range[1])
            if pars.bad_catflags_mask is not None:
                keep &= (table["catflags"].to_numpy() & pars.bad_catflags_mask) == 0
            if by_oid:
                keep &= table["oid"].to_numpy() == int(row["ztf_oid"])
            answers[cone.name] = ZtfAnswer("", provenance,
                                           frame=table[keep].reset_index(drop=True))
        return answers

    def _map(self, function, items: list) -> list:
        if len(items) <= 1:
            return [function(item) for item in items]
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.pars.max_connections_per_host,
                                                    thread_name_prefix="irsa-query")
        return list(self._executor.map(function, items))

    def fetch(self, cat_row: dict[str, Any]) -> ZtfAnswer:
        """IRSA's answer for one source (I/O only; :meth:`parse` reads it in a worker).

        Raises
        ------
        skyretriever.net.NetworkError
            If IRSA could not be asked (the source is recorded as failed and
            tried again by the next run).
        """
        if self.pars.image_cutouts:
            return self.fetch_cutouts(cat_row)
        with self._lock:
            answer = self._answers.pop(cat_row["name"], None)
        if answer is None and self.pars.route == "hats":
            answer = self._hats_answers([cat_row])[cat_row["name"]]
        if answer is None:
            if cat_row.get("ztf_oid") is not None:
                params = self.query_params(ids=[int(cat_row["ztf_oid"])])
                resolved_by = "catalog ztf_oid"
            else:
                params = self.query_params(cat_row)
                resolved_by = "position"
            provenance = self._provenance(cat_row, params, resolved_by)
            if resolved_by == "position":
                provenance["search_radius_arcsec"] = round(self.search_radius(cat_row), 6)
            text = self._request(params, f"IRSA ZTF query for {cat_row['name']!r}")
            answer = ZtfAnswer(text, provenance)
        if answer.error is not None:
            raise NetworkError(answer.error)
        return answer

    def parse(self, fetched: ZtfAnswer) -> tuple[pd.DataFrame, dict[str, Any]]:
        """IRSA's CSV as a table (with ``filter``), and the provenance with its objects
        (image cutouts: the cutouts as they were fetched)."""
        if not isinstance(fetched, ZtfAnswer):
            return fetched
        altdata = dict(fetched.provenance)
        query = altdata.get("query") or {}
        asked = (f"ID={','.join(query['ID'])}" if query.get("ID") else
                 f"POS={query.get('POS')}")
        if fetched.frame is not None:
            frame = fetched.frame
        else:
            frame = read_ztf_csv(fetched.text, where=f"IRSA's ZTF answer to {asked}")
        self.check_answer_target(frame, altdata, asked)
        altdata["objects"] = [
            {"oid": int(oid), "filter": str(group["filtercode"].iloc[0]), "num_points": len(group)}
            for oid, group in frame.groupby("oid", sort=True)
        ] if len(frame) else []
        return frame, altdata

    #: How far (arcsec) beyond the search radius an object's median position may lie (its
    #: epochs scatter around the position IRSA searched by).
    ANSWER_MARGIN = 1.0

    def check_answer_target(self, frame: pd.DataFrame, altdata: dict[str, Any], asked: str
                            ) -> None:
        """Refuse an answer that is not about the target asked for.

        Asked by id, every object must be that id; asked by position, every object's
        median position must lie within the search radius (plus ``ANSWER_MARGIN``) of
        the catalog position. Objects inside the cone that are not the star are
        dropped later, by :meth:`rejected_objects`.

        Raises
        ------
        skyretriever.net.BadAnswer
            Naming the object, and the target or position asked for.
        """
        if len(frame) == 0:
            return
        query = altdata.get("query") or {}
        if query.get("ID"):
            wanted = {int(oid) for oid in query["ID"]}
            other = sorted({int(oid) for oid in frame["oid"].unique()} - wanted)
            if other:
                raise BadAnswer(f"IRSA's ZTF answer to {asked} holds object(s) "
                                f"{', '.join(map(str, other[:5]))}, not the one asked for")
            return
        target, radius = altdata.get("target"), altdata.get("search_radius_arcsec")
        if target is None or radius is None:
            return
        medians = frame.groupby("oid")[["ra", "dec"]].median()
        distances = angular_distance(target["ra"], target["dec"],
                                     medians["ra"].to_numpy(), medians["dec"].to_numpy()) * 3600.0
        for oid, distance in zip(medians.index, distances):
            if not distance <= radius + self.ANSWER_MARGIN:
                raise BadAnswer(
                    f"IRSA's ZTF answer to {asked} holds object {int(oid)} at {distance:.1f} "
                    f"arcsec from the target ({target['ra']:.6f}, {target['dec']:.6f}), outside "
                    f"the {radius:g} arcsec searched: not stored")

    def download_from_observatory(self, cat_row: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
        """Every ZTF epoch IRSA has for one catalog row (by id or position), and provenance."""
        return self.parse(self.fetch(cat_row))

    # -- image cutouts (image_cutouts: true) ------------------------------------------------------
    def image_query(self, cat_row: dict[str, Any]) -> dict[str, str]:
        """IBE's search of the science images holding the star (where it was mid-survey),
        of ``bands`` and within ``time_range``."""
        pars = self.pars
        first, last = self.survey_years()
        ra, dec = self.position_at(cat_row, (first + last) / 2.0)
        where = ["filtercode IN (" + ",".join(f"'z{band}'" for band in pars.bands) + ")"]
        if pars.time_range is not None:
            low, high = (value + 2400000.5 for value in pars.time_range)
            where.append(f"obsjd BETWEEN {low!r} AND {high!r}")
        return {"POS": f"{float(ra)!r},{float(dec)!r}", "WHERE": " AND ".join(where),
                "ct": "csv"}

    def fetch_cutouts(self, cat_row: dict[str, Any]) -> tuple[dict[int, Cutout], dict[str, Any]]:
        """The science-image cutouts of one source (I/O): IBE's search, then each image's
        cutout, centred where the star was at that image's epoch; ``{n: Cutout}`` in time
        order, and the provenance. An image IBE says the cutout misses (HTTP 400) is left
        out and named in the provenance.

        Raises
        ------
        skyretriever.net.NetworkError
            If the search or a cutout could not be had (the source fails, nothing is
            written, and the next run asks again).
        """
        pars = self.pars
        client = shared_client(pars.network_policy())
        hosts = (pars.ibe_url,)
        query = self.image_query(cat_row)
        what = f"IBE search of ZTF images for {cat_row['name']!r}"
        text = client.request("GET", join_url(pars.ibe_url, SEARCH_PATH), params=query,
                              accept=_search_answer(what), what=what, allowed_hosts=hosts)
        rows = read_search_table(text, f"IBE's answer to the {what}").to_dict("records")
        found = len(rows)
        capped = pars.max_images is not None and found > pars.max_images
        if capped:
            # Evenly spaced in time (the first and the last kept): the whole baseline stays.
            keep = np.round(np.linspace(0, found - 1, pars.max_images)).astype(int)
            rows = [rows[index] for index in keep]
            log.warning("%s: %d ZTF science images hold the star; %d kept, evenly spaced in "
                        "time (max_images)", cat_row["name"], found, len(rows))

        def cut(row: dict[str, Any]) -> Cutout | str:
            ra, dec = self.position_at(cat_row, mjd_to_year(row["obsjd"] - 2400000.5))
            path = science_image_path(row)
            what = f"IBE cutout of {path.rsplit('/', 1)[-1]} for {cat_row['name']!r}"
            try:
                body = client.request("GET", join_url(pars.ibe_url, SCIENCE_PATH, path),
                                      params=cutout_params(ra, dec, pars.cutout_size),
                                      accept=fits_answer(what), what=what, allowed_hosts=hosts)
            except HttpError as error:
                if error.status != 400:  # 400: the cutout misses the image (IBE's answer)
                    raise
                return f"HTTP 400 {' '.join(error.body.split())[:120]}"
            return cutout_from_fits(body, float(ra), float(dec), what, row)

        cutouts, missed = {}, {}
        for row, made in zip(rows, self._map(cut, rows)):
            if isinstance(made, str):
                missed[science_image_path(row)] = made
            else:
                cutouts[len(cutouts)] = made
        provenance = {
            "archive": "IRSA IBE", "ibe_url": pars.ibe_url, "query": query,
            "queried_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "images_found": found, "cutout_size_arcsec": pars.cutout_size,
            "target": self._target(cat_row)}
        if capped:
            provenance["images_capped"] = {
                "found": found, "kept": len(rows), "max_images": pars.max_images,
                "how": "evenly spaced in time, the first and the last kept"}
        if missed:
            provenance["images_missed"] = missed
        return cutouts, provenance

    def reduce(self, raw: Any, data_type: str | None = None, source: Any = None
               ) -> list[Lightcurve]:
        """Light curves of the raw data: IRSA's epochs, or (``image_cutouts``) aperture
        photometry of each image cutout calibrated by its zero point."""
        if not self.pars.image_cutouts:
            return super().reduce(raw, data_type or "photometry", source)
        if (data_type or self.data_type) != self.data_type:
            raise ValueError(f"{self.name} reduces {self.data_type}, not {data_type!r}")
        if raw.is_empty or not raw.data:
            return []
        frame = cutout_photometry(raw, self.pars.aperture_radius, self.pars.background_radius)
        return self.lightcurves_from_frame(frame, raw) if len(frame) else []

    # -- reducing ---------------------------------------------------------------------------------
    def rejected_objects(self, frame: pd.DataFrame, altdata: dict[str, Any]) -> dict[int, str]:
        """Objects of a cone search that are not the catalog star, with the reason.

        An object is too far when its median position is more than
        ``match_radius`` from the catalog position moved to the object's median
        epoch; too bright or faint when its median magnitude differs from the
        catalog's by more than ``mag_tolerance``. Objects asked for by id are
        never rejected.
        """
        target = altdata.get("target")
        if target is None or altdata.get("resolved_by") != "position" or len(frame) == 0:
            return {}
        pars = self.pars
        medians = frame.groupby("oid")[["ra", "dec", "mjd", "mag"]].median()
        # The epoch the positions were given at when downloaded, whatever it is set to now.
        ra, dec = self.position_at(target, mjd_to_year(medians["mjd"].to_numpy()),
                                   epoch=target.get("epoch"))
        distances = angular_distance(ra, dec, medians["ra"].to_numpy(),
                                     medians["dec"].to_numpy()) * 3600.0
        rejected = {}
        for oid, distance, mag in zip(medians.index, distances, medians["mag"]):
            if distance > pars.match_radius:
                rejected[int(oid)] = (f"{distance:.2f} arcsec from the catalog position "
                                      f"(match_radius {pars.match_radius:g})")
            elif (pars.mag_tolerance is not None and _finite(target.get("mag"))
                  and abs(mag - target["mag"]) > pars.mag_tolerance):
                rejected[int(oid)] = (f"median mag {mag:.2f} differs from the catalog's "
                                      f"{target['mag']:.2f} by more than {pars.mag_tolerance:g}")
        return rejected

    def standardize(self, frame: pd.DataFrame, altdata: dict[str, Any]) -> pd.DataFrame:
        """IRSA's columns to the standard ones, without the rejected objects.

        ``mag``/``mag_err`` are ZTF's PSF magnitudes (``magerr``), ``flux`` is
        made from them (AB, microjansky), ``quality`` is ``catflags``, ``filter``
        the ``filtercode``; ``hjd``, ``oid``, ``ra``, ``dec``, ``field``,
        ``ccdid``, ``qid``, ``limitmag``, ``airmass`` and ``programid`` are kept
        (raw data of the ``hats`` route has no ``exptime``, which becomes NaN, nor
        the last three; its ``ra``/``dec`` are each object's mean position).
        """
        rejected = self.rejected_objects(frame, altdata)
        if rejected:
            log.debug("ZTF objects rejected: %s", rejected)
            frame = frame[~frame["oid"].isin(list(rejected))]
        result = pd.DataFrame({
            "mjd": frame["mjd"].to_numpy(dtype=float),
            "hjd": frame["hjd"].to_numpy(dtype=float),
            "mag": frame["mag"].to_numpy(dtype=float),
            "mag_err": frame["magerr"].to_numpy(dtype=float),
            "filter": frame["filtercode"].astype(str).to_numpy(),
            "quality": frame["catflags"].to_numpy(dtype=np.int64),
            # The HATS collection has no exposure times (nor limitmag, airmass, programid).
            "exptime": (frame["exptime"].to_numpy(dtype=float) if "exptime" in frame
                        else np.full(len(frame), np.nan)),
            "oid": frame["oid"].to_numpy(dtype=np.int64),
        })
        for column in ("ra", "dec", "limitmag", "airmass"):
            if column in frame:
                result[column] = frame[column].to_numpy(dtype=float)
        for column in ("field", "ccdid", "qid", "programid"):
            if column in frame:
                result[column] = frame[column].to_numpy(dtype=np.int64)
        return super().standardize(result, altdata)


def cutout_photometry(raw: RawImages, aperture_radius: float, background_radius: float
                      ) -> pd.DataFrame:
    """One epoch per image cutout: aperture photometry (radii in arcsec) in the image's
    counts (``flux_dn``), then AB magnitudes and microjansky with each image's zero point.

    IBE centres every cutout on the star, so cutouts of one shape whose star falls on
    the same pixel (to half a pixel) are measured together, as the frames of one
    target-pixel file with one aperture (lightkurve's machinery,
    :func:`~skyretriever.images.photometry.lightcurve_frame`). Groups where the
    aperture or the background has no pixel (the star at an edge) are left out.
    """
    groups: dict[tuple, list[tuple[int, Cutout]]] = {}
    for key, cutout in sorted(raw.data.items()):
        rows, columns = cutout.shape
        x, y = cutout.extra.get("pixel") or [(columns - 1) / 2, (rows - 1) / 2]
        groups.setdefault((rows, columns, round(x), round(y)), []).append((key, cutout))
    frames = []
    for members in groups.values():
        first = members[0][1]
        cutouts = [cutout for _, cutout in members]
        stacked = dataclasses.replace(
            first, cadenceno=np.arange(len(cutouts)),
            **{name: np.concatenate([getattr(c, name) for c in cutouts])
               for name in ("time", "timecorr", "flux", "flux_err", "quality")})
        target = first.extra.get("target") or [raw.ra, raw.dec]
        try:
            frame = lightcurve_frame(stacked, target[0], target[1],
                                     aperture_radius / ZTF_PIXEL_ARCSEC,
                                     background_radius / ZTF_PIXEL_ARCSEC, raw.source_name)
        except ValueError as error:
            log.debug("ZTF cutouts %s of %s left out: %s", [k for k, _ in members],
                      raw.source_name, error)
            continue
        frames.append(frame.assign(
            filter=[c.extra.get("filtercode") for c in cutouts],
            magzp=[np.nan if c.extra.get("magzp") is None else c.extra["magzp"]
                   for c in cutouts],
            exptime=[c.extra.get("exptime") or np.nan for c in cutouts],
            field=[int(c.sector) for c in cutouts], ccdid=[int(c.camera) for c in cutouts],
            qid=[int(c.ccd) for c in cutouts], image=[int(key) for key, _ in members]))
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True).drop(columns=["btjd", "sector"])
    frame = frame.sort_values("mjd", kind="stable").reset_index(drop=True)
    frame = frame.rename(columns={"flux": "flux_dn", "flux_err": "flux_dn_err",
                                  "sap_bkg": "background_dn"})
    dn, dn_err = frame["flux_dn"].to_numpy(float), frame["flux_dn_err"].to_numpy(float)
    magzp = frame["magzp"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["mag"] = magzp - 2.5 * np.log10(dn)
        frame["mag_err"] = 2.5 / np.log(10) * dn_err / dn
    # AB magnitude m is 10**(-0.4 (m - 23.9)) microjansky.
    to_microjansky = 10 ** (-0.4 * (magzp - 23.9))
    frame["flux"], frame["flux_err"] = dn * to_microjansky, dn_err * to_microjansky
    return frame


def _search_answer(what: str):
    """IBE's CSV search table as text; an HTML page is asked again, anything else refused."""

    def accept(response: Response) -> str:
        text = response.text
        if not text.strip() or "filefracday" in _header_fields(text):
            return text
        snippet = " ".join(text[:200].split())
        if text.lstrip()[:100].lower().startswith(("<!doctype html", "<html")):
            raise TransientError(f"{what}: an HTML page instead of a CSV table: {snippet!r}")
        raise BadAnswer(f"{what}: the answer is not IBE's image table (no 'filefracday' "
                        f"column): {snippet!r}")

    return accept


def read_ztf_csv(text: str, where: str = "IRSA's ZTF table") -> pd.DataFrame:
    """IRSA's ZTF CSV as a table with a ``filter`` column (an empty answer gives no rows).

    Columns beyond IRSA's are kept; a missing column the reduction reads, or a
    value that is not a number where one is expected, is a :class:`BadAnswer`
    naming the column (and line) and ``where``.

    Examples
    --------
    >>> read_ztf_csv("").columns[:3].tolist()
    ['oid', 'expid', 'hjd']
    >>> read_ztf_csv("oid,mjd\\n1,58300.5\\n", where="the answer")
    Traceback (most recent call last):
    ...
    skyretriever.net.BadAnswer: the answer lacks the column(s) hjd, mag, magerr, catflags, filtercode, ra, dec, exptime, field, ccdid, qid, limitmag, airmass, programid (it has oid, mjd)
    """
    if not text.strip():
        frame = pd.DataFrame({column: pd.Series(dtype=float) for column in ZTF_COLUMNS})
    else:
        try:
            frame = pd.read_csv(io.StringIO(text), dtype={"filtercode": str})
        except (ValueError, pd.errors.ParserError) as error:
            raise BadAnswer(f"{where} cannot be read as CSV: "
                            f"{' '.join(str(error).split())[:200]}") from None
        missing = [c for c in REQUIRED_COLUMNS if c not in frame]
        if missing:
            raise BadAnswer(f"{where} lacks the column(s) {', '.join(missing)} "
                            f"(it has {', '.join(map(str, frame.columns))})")
        for column in REQUIRED_COLUMNS if len(frame) else ():
            if column == "filtercode" or pd.api.types.is_numeric_dtype(frame[column]):
                continue
            numbers = pd.to_numeric(frame[column], errors="coerce")
            bad = np.flatnonzero(numbers.isna().to_numpy() & frame[column].notna().to_numpy())
            if len(bad):
                raise BadAnswer(f"{where}: column {column!r} has {frame[column].iloc[bad[0]]!r} "
                                f"on line {bad[0] + 2}, not a number")
            frame[column] = numbers
        oid = frame["oid"].to_numpy(dtype=float)
        if not (np.isfinite(oid).all() and (oid == np.round(oid)).all() and (oid >= 0).all()):
            raise BadAnswer(f"{where}: column 'oid' has values that are not object ids")
        if len(frame):
            frame["oid"] = frame["oid"].astype(np.int64)
    frame["filter"] = frame["filtercode"].astype(str) if len(frame) else pd.Series(dtype=str)
    return frame


def _finite(value: Any) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def _number(value: Any) -> float | None:
    return float(value) if _finite(value) else None


def _total_proper_motion(cat_row: dict[str, Any]) -> float:
    """Total proper motion (mas/yr) of a row; 0 without one."""
    pmra, pmdec = cat_row.get("pmra"), cat_row.get("pmdec")
    if not (_finite(pmra) and _finite(pmdec)):
        return 0.0
    return math.hypot(pmra, pmdec)
