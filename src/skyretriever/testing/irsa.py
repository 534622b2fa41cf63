"""The simulated IRSA ZTF light-curve service.

:class:`IrsaService` answers ``GET /cgi-bin/ZTF/nph_light_curves`` as IRSA
does, over the stars of a :class:`~skyretriever.testing.sky.SimulatedSky`:

- ``POS=CIRCLE <ra> <dec> <radius_deg>`` (one position) or ``ID=<oid>``
  (repeated, many objects), optional ``BANDNAME=g,r,i``, ``TIME=<mjd_min>
  <mjd_max>``, ``BAD_CATFLAGS_MASK=<int>`` and ``COLLECTION=<release>``;
- ``FORMAT=csv`` gives the CSV table (header only when nothing matches); no
  ``FORMAT`` gives a VOTable, as IRSA's default is;
- an unknown collection is refused with HTTP 400; a collection listed in
  ``private`` wants HTTP basic authentication (else HTTP 401).

``transform`` (a function of the CSV text) changes the CSV answers, for tests
of broken answers (extra or missing columns, bad values).

Every star north of Dec -30 that ZTF observed (``SimulatedStar.ztf``) has
one object per filter (``zg``, ``zr``, and ``zi`` for every third star),
observed over six seasons; the star's ``ztf_neighbours`` are more objects
near it. Detections follow the star's proper motion (positions given at epoch
2000); an object is found by a cone search when its mean position is inside
the cone. A star's ``flare`` brightens its ``zg`` and ``zr`` points.

Examples
--------
>>> from skyretriever.testing import SimulatedSky, SimulatedStar
>>> sky = SimulatedSky([SimulatedStar("wd", 10.0, 20.0, gmag=16.0)])
>>> [(o.filtercode, o.mean_mag) for o in ztf_objects(sky.stars[0], seed=0)]
[('zg', 16.2), ('zr', 15.9)]
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from skyretriever.healpix import angular_distance
from skyretriever.observatories.ztf_hats import heliocentric_delay
from skyretriever.testing.server import Reply, Request, Route, Service
from skyretriever.testing.sky import SimulatedSky
from skyretriever.testing.stars import SimulatedStar

__all__ = ["ZTF_DEC_LIMIT", "IrsaService", "ZtfObject", "ztf_objects"]

#: ZTF does not observe south of this declination.
ZTF_DEC_LIMIT = -30.0
COLUMNS = ("oid", "expid", "hjd", "mjd", "mag", "magerr", "catflags", "filtercode", "ra", "dec",
           "chi", "sharp", "filefracday", "field", "ccdid", "qid", "limitmag", "magzp",
           "magzprms", "clrcoeff", "clrcounc", "exptime", "airmass", "programid")
#: ZTF magnitude minus Gaia G, by filter (roughly a Sun-like star's colours).
BAND_OFFSETS = {"zg": 0.2, "zr": -0.1, "zi": -0.3}
BAND_NUMBERS = {"zg": 1, "zr": 2, "zi": 3}
FIRST_SEASON_MJD = 58200.0
SEASONS = 6
SEASON_DAYS = 150.0
POINTS_PER_SEASON = 24
#: Fraction of epochs with catflags 32768 (unusable) and with catflags 2 (a mild flag).
BAD_FRACTION, MILD_FRACTION = 0.04, 0.04
DEFAULT_COLLECTION = "ztf_dr23"


@dataclass(frozen=True)
class ZtfObject:
    """One ZTF object (one filter and field): its id, where it is and its detections."""

    oid: int
    filtercode: str
    ra: float
    dec: float
    mean_mag: float
    table: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.table["mjd"])


def _rng(*parts: Any) -> np.random.Generator:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def ztf_objects(star: SimulatedStar, seed: int = 0) -> list[ZtfObject]:
    """The ZTF objects of a star and of its neighbours (none south of Dec -30).

    The star's own objects come first, one per filter, then each neighbour's.
    """
    if not star.ztf or star.dec < ZTF_DEC_LIMIT:
        return []
    rng = _rng("ztf", seed, star.name)
    field = int(rng.integers(250, 880))
    ccdid, qid = int(rng.integers(1, 17)), int(rng.integers(1, 5))
    serial = int(rng.integers(1, 90_000))
    bands = ["zg", "zr", "zi"] if int(hashlib.sha256(star.name.encode()).hexdigest(), 16) % 3 == 0 \
        else ["zg", "zr"]
    # A whole number of tenths, so tests can say what to expect.
    base_mag = round(star.gaia_magnitude, 1)
    objects = []
    members = [(0.0, 0.0, 0), *((separation, delta, index + 1) for index, (separation, delta)
                                  in enumerate(star.ztf_neighbours))]
    for separation, delta_mag, member in members:
        angle = float(_rng("angle", seed, star.name, member).uniform(0, 2 * np.pi))
        for band in bands:
            oid = int(f"{field:03d}{ccdid:02d}{qid}{BAND_NUMBERS[band]}{serial + member:08d}")
            mean_mag = round(base_mag + BAND_OFFSETS[band] + delta_mag, 2)
            objects.append(_observe(star, oid, band, field, ccdid, qid, mean_mag, separation,
                                    angle, member, seed))
    return objects


def _observe(star: SimulatedStar, oid: int, band: str, field: int, ccdid: int, qid: int,
             mean_mag: float, separation: float, angle: float, member: int, seed: int
             ) -> ZtfObject:
    """Six seasons of detections of one object."""
    rng = _rng("points", seed, star.name, band, member)
    offset = (star.ra % 360.0) / 360.0 * 200.0  # seasons follow the star's opposition
    times = np.concatenate([
        FIRST_SEASON_MJD + offset + 365.25 * season
        + np.linspace(0.0, SEASON_DAYS, POINTS_PER_SEASON)
        + rng.uniform(-0.5, 0.5, POINTS_PER_SEASON)
        for season in range(SEASONS)
    ])
    years = 2000.0 + (times - 51544.5) / 365.25
    ra, dec = star.position_at(years)
    cos_dec = max(np.cos(np.radians(star.dec)), 1e-6)
    ra = (ra + separation * np.cos(angle) / 3600.0 / cos_dec) % 360.0
    dec = dec + separation * np.sin(angle) / 3600.0
    scatter = 0.08 / 3600.0
    ra = (ra + rng.normal(0, scatter / cos_dec, len(times))) % 360.0
    dec = dec + rng.normal(0, scatter, len(times))
    magerr = np.full(len(times), float(np.clip(0.01 + 0.004 * (mean_mag - 14.0) ** 2, 0.01, 0.3)))
    mag = mean_mag + magerr * rng.standard_normal(len(times))
    if star.flare is not None and member == 0 and band != "zi":
        mag = mag - star.flare.brightening(times)
    draw = rng.random(len(times))
    catflags = np.where(draw < BAD_FRACTION, 32768,
                        np.where(draw < BAD_FRACTION + MILD_FRACTION, 2, 0))
    count = len(times)
    table = {
        "oid": np.full(count, oid, dtype=np.int64),
        "expid": (times * 1e5).astype(np.int64) % 100_000_000,
        # Heliocentric: the light time along the star's direction (the HATS collection's hmjd).
        "hjd": times + 2400000.5 + heliocentric_delay(times, star.ra, star.dec),
        "mjd": times, "mag": mag, "magerr": magerr, "catflags": catflags,
        "filtercode": np.full(count, band), "ra": ra, "dec": dec,
        "chi": np.round(rng.uniform(0.5, 1.5, count), 3),
        "sharp": np.round(rng.normal(0, 0.05, count), 3),
        "filefracday": np.array([int(f"2018{int(t) % 10000:04d}{int((t % 1) * 1e6):06d}")
                                 for t in times], dtype=np.int64),
        "field": np.full(count, field), "ccdid": np.full(count, ccdid),
        "qid": np.full(count, qid), "limitmag": np.round(rng.uniform(20.0, 21.0, count), 3),
        "magzp": np.round(rng.uniform(26.0, 26.4, count), 4),
        "magzprms": np.round(rng.uniform(0.02, 0.05, count), 5),
        "clrcoeff": np.round(rng.normal(0.1, 0.02, count), 5),
        "clrcounc": np.full(count, 1e-5), "exptime": np.full(count, 30.0),
        "airmass": np.round(rng.uniform(1.0, 2.0, count), 3),
        "programid": np.where(rng.random(count) < 0.8, 1, 2),
    }
    mean_ra, mean_dec = float(np.median(ra)), float(np.median(dec))
    return ZtfObject(oid, band, mean_ra, mean_dec, mean_mag, table)


class IrsaService(Service):
    """IRSA's ZTF light-curve API over a :class:`SimulatedSky`.

    Parameters
    ----------
    sky
        The stars.
    collections
        Data releases served (the first is the default).
    private
        Releases that need authentication, with the ``(user, password)`` they accept.
    transform
        Rewrites each CSV answer (tests of broken answers); ``None`` sends them as made.
    """

    name = "irsa"

    def __init__(self, sky: SimulatedSky, collections: tuple[str, ...] = (DEFAULT_COLLECTION,),
                 private: dict[str, tuple[str, str]] | None = None,
                 transform: Callable[[str], str] | None = None) -> None:
        self.sky = sky
        self.transform = transform
        self.collections = tuple(collections)
        self.private = dict(private or {})
        self.routes = [Route(("GET",), "/cgi-bin/ZTF/nph_light_curves", self.light_curves)]
        self._objects: list[ZtfObject] | None = None
        self._lock = threading.Lock()

    @property
    def objects(self) -> list[ZtfObject]:
        """Every ZTF object of the sky (made on first use)."""
        with self._lock:
            if self._objects is None:
                self._objects = [obj for star in self.sky.stars
                                 for obj in ztf_objects(star, self.sky.seed)]
            return self._objects

    def objects_of(self, star: SimulatedStar | str) -> list[ZtfObject]:
        """The objects of one star (its own first, then its neighbours')."""
        star = self.sky.star(star) if isinstance(star, str) else star
        return ztf_objects(star, self.sky.seed)

    # -- the request ---------------------------------------------------------------------------
    def light_curves(self, request: Request) -> Reply:
        try:
            collection = request.arg("COLLECTION") or self.collections[0]
            if collection not in self.collections and collection not in self.private:
                return _error(f"collection {collection!r} not found; known: "
                              f"{', '.join(self.collections)}", 400)
            if collection in self.private and not self._authorised(request, collection):
                return _error("this collection needs IRSA login", 401)
            found = self._select(request)
        except ValueError as error:
            return _error(str(error), 400)
        output = (request.arg("FORMAT") or "votable").lower()
        # Answers are sent as files, so the cut-body and HTML-page faults reach them too.
        if output == "csv":
            text = _csv(found)
            if self.transform is not None:
                text = self.transform(text)
            return Reply.file(text.encode(), content_type="text/csv")
        if output in ("votable", "ipac_table", "html"):
            return Reply.file(_votable(found).encode(), content_type="text/xml")
        return _error(f"FORMAT {output!r} is not supported", 400)

    def _authorised(self, request: Request, collection: str) -> bool:
        header = request.headers.get("authorization", "")
        user, password = self.private[collection]
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return header == expected

    def _select(self, request: Request) -> list[tuple[ZtfObject, np.ndarray]]:
        """The objects asked for, each with the rows of its table that pass the filters."""
        ids = request.query.get("ID") or []
        position = request.arg("POS")
        if not ids and not position:
            raise ValueError("give POS=CIRCLE ra dec radius or ID=<oid>")
        if position:
            shape, *numbers = position.split()
            if shape.upper() != "CIRCLE" or len(numbers) != 3:
                raise ValueError(f"POS must be 'CIRCLE ra dec radius', not {position!r}")
            ra, dec, radius = (float(n) for n in numbers)
            chosen = [o for o in self.objects
                      if angular_distance(ra, dec, o.ra, o.dec) * 3600.0 <= radius * 3600.0]
        else:
            wanted = {int(value) for value in ids}
            chosen = [o for o in self.objects if o.oid in wanted]
        bands = request.arg("BANDNAME")
        if bands:
            codes = {f"z{band.strip()}" for band in bands.split(",")}
            if not codes <= set(BAND_OFFSETS):
                raise ValueError(f"BANDNAME must list g, r, i, not {bands!r}")
            chosen = [o for o in chosen if o.filtercode in codes]
        time_range = request.arg("TIME")
        mask = int(request.arg("BAD_CATFLAGS_MASK") or 0)
        selected = []
        for obj in sorted(chosen, key=lambda o: o.oid):
            keep = np.ones(len(obj), dtype=bool)
            if time_range:
                first, last = (float(n) for n in time_range.split())
                keep &= (obj.table["mjd"] >= first) & (obj.table["mjd"] <= last)
            if mask:
                keep &= (obj.table["catflags"] & mask) == 0
            if keep.any():
                selected.append((obj, keep))
        return selected


def _error(message: str, status: int) -> Reply:
    return Reply.text(f"ERROR: {message}\n", status=status)


def _csv(found: list[tuple[ZtfObject, np.ndarray]]) -> str:
    lines = [",".join(COLUMNS)]
    for obj, keep in found:
        columns = [obj.table[name][keep] for name in COLUMNS]
        for values in zip(*columns):
            lines.append(",".join(_format(v) for v in values))
    return "\n".join(lines) + "\n"


def _format(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(round(float(value), 8))
    return str(value)


def _votable(found: list[tuple[ZtfObject, np.ndarray]]) -> str:
    handle = io.StringIO()
    handle.write('<?xml version="1.0" encoding="UTF-8"?>\n<VOTABLE version="1.3"><RESOURCE>'
                 '<TABLE><DATA><TABLEDATA>\n')
    for obj, keep in found:
        for mjd, mag in zip(obj.table["mjd"][keep], obj.table["mag"][keep]):
            handle.write(f"<TR><TD>{obj.oid}</TD><TD>{mjd}</TD><TD>{mag}</TD></TR>\n")
    handle.write("</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>\n")
    return handle.getvalue()
