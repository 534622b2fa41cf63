"""The simulated sky: stars with known signals, and what MAST holds for them.

A :class:`SimulatedSky` is a list of :class:`SimulatedStar` objects. Each star
says which TESS sectors (at 2-min, 20-s and FFI cadence), K2 campaigns and
Kepler quarters observed it, and may carry a planet's :class:`Transit`. From
that the sky builds, deterministically, everything the simulated archives
serve: CAOM observation rows, product rows, TIC rows (with faint neighbours
that have no data, so position matching has something to get wrong), data
URIs, S3 keys, and the FITS files themselves (made on first request by
:mod:`skyretriever.testing.fitsfiles`, or copied from real mission files by
:mod:`skyretriever.testing.realfiles`, and kept in a bounded cache).

Examples
--------
>>> sky = SimulatedSky([SimulatedStar("star_a", 10.0, -5.0, tic_id=25155310, tmag=9.5,
...                                   tess_sectors=(1, 2))])
>>> [row["obs_id"] for row in sky.observations if row["obs_collection"] == "TESS"]
['tess2018234043300-s0001-0000000025155310-0120-s', 'tess2018261140900-s0002-0000000025155310-0121-s']
>>> sky.catalog()[["name", "tic_id"]].to_dict("records")
[{'name': 'star_a', 'tic_id': 25155310}]
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from skyretriever.observatories.mission_files import BJDREF_KEPLER, BJDREF_TESS, MJD_OFFSET
from skyretriever.testing.fitsfiles import lightcurve_file
from skyretriever.testing.realfiles import RealFileCopies
from skyretriever.testing.stars import Flare, Product, SimulatedStar, Transit

__all__ = ["KEPLER_QUARTER_STAMPS", "SimulatedSky"]

#: Start of each TESS sector in BTJD (sector 1 began near BTJD 1325.3; sectors last 27.4 days).
TESS_SECTOR_ONE_BTJD = 1325.29
TESS_SECTOR_DAYS = 27.4
#: Start of each Kepler quarter in BKJD (approximate).
KEPLER_QUARTER_BKJD = {
    0: 120.5, 1: 131.5, 2: 169.8, 3: 260.2, 4: 352.4, 5: 443.5, 6: 539.5, 7: 630.2, 8: 735.4,
    9: 808.5, 10: 906.8, 11: 1001.2, 12: 1099.4, 13: 1182.8, 14: 1274.2, 15: 1373.5, 16: 1472.1,
    17: 1559.2,
}
#: The time stamp in the names of Kepler long-cadence light-curve files, by quarter.
KEPLER_QUARTER_STAMPS = {
    0: "2009131105131", 1: "2009166043257", 2: "2009259160929", 3: "2009350155506",
    4: "2010078095331", 5: "2010174085026", 6: "2010265121752", 7: "2010355172524",
    8: "2011073133259", 9: "2011177032512", 10: "2011271113734", 11: "2012004120508",
    12: "2012088054726", 13: "2012179063303", 14: "2012277125453", 15: "2013011073258",
    16: "2013098041711", 17: "2013131215648",
}
#: Start of K2 campaign 1 in BKJD and the spacing of campaigns (approximate).
K2_CAMPAIGN_ONE_BKJD = 1975.2
K2_CAMPAIGN_DAYS = 82.5
#: TIC ids of the simulated neighbours (stars without data) start here.
NEIGHBOUR_TIC_IDS = 1_990_000_000
#: Cadences (seconds between exposures) and MAST ``t_exptime`` values of each product kind.
CADENCE_SECONDS = {"tess_fast": 20.0, "tess_short": 120.0, "kepler_long": 1765.46,
                   "kepler_short": 58.85}


def _ffi_cadence(sector: int) -> float:
    """TESS full-frame images: 30 min in sectors 1-26, 10 min in 27-55, 200 s afterwards."""
    return 1800.0 if sector <= 26 else 600.0 if sector <= 55 else 200.0



def _btjd_stamp(btjd: float) -> str:
    """``yyyydddhhmmss`` of a BTJD (BJD 2457000 is 2014-12-08 12:00), as in TESS file names."""
    when = dt.datetime(2014, 12, 8, 12, 0, 0) + dt.timedelta(days=btjd)
    return when.strftime("%Y%j%H%M") + "00"


def _tic_path(tic: int) -> str:
    digits = f"{tic:016d}"
    return "/".join(digits[i : i + 4] for i in range(0, 16, 4))


class SimulatedSky:
    """Stars and everything the simulated MAST and S3 hold for them.

    Parameters
    ----------
    stars
        The stars with data (and any others that should be in the TIC).
    days_per_sector
        How many days of each sector, campaign or quarter the files cover
        (real ones span 27 to 90 days; tests use a few to stay small).
    neighbours
        Add to the TIC, near every star, a fainter star without data.
    seed
        Mixed into every random draw (noise, flagged cadences).
    nan_time_fraction, flagged_fraction
        Fraction of cadences with NaN ``TIME``, and with a quality bit set.
    cache_bytes
        Bound on the FITS bytes kept in memory.
    real_files
        Serve copies of real mission files (with each star's identity written into
        their headers) instead of simulated ones; every mission with products must
        have a real file.
    """

    def __init__(self, stars: Iterable[SimulatedStar], *, days_per_sector: float = 3.0,
                 neighbours: bool = True, seed: int = 0, nan_time_fraction: float = 0.005,
                 flagged_fraction: float = 0.03, cache_bytes: int = 512 * 1024**2,
                 real_files: RealFileCopies | None = None) -> None:
        self.stars = list(stars)
        names = [star.name for star in self.stars]
        if len(set(names)) != len(names):
            raise ValueError("simulated star names must be unique")
        self.days_per_sector = float(days_per_sector)
        self.seed = seed
        self.nan_time_fraction = nan_time_fraction
        self.flagged_fraction = flagged_fraction
        self.observations: list[dict[str, Any]] = []
        self.products_by_obsid: dict[str, list[dict[str, Any]]] = {}
        self.files: dict[str, Product] = {}
        self.cloud_keys: dict[str, str] = {}
        self.tic: list[dict[str, Any]] = []
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cache_lock = threading.Lock()
        self._next_obsid = 90_000_000_001
        for star in self.stars:
            self._add_tic_rows(star, neighbours)
            self._add_tess(star)
            self._add_k2(star)
            self._add_kepler(star)
        self.real_files = real_files
        #: Each product's number among the products of its mission (which real file it copies).
        self._mission_numbers: dict[str, int] = {}
        if real_files is not None:
            counts: dict[str, int] = {}
            for data_uri, product in self.files.items():
                self._mission_numbers[data_uri] = counts.get(product.mission, 0)
                counts[product.mission] = self._mission_numbers[data_uri] + 1
            lacking = sorted(set(counts) - set(real_files.missions))
            if lacking:
                raise ValueError(f"no real file of {', '.join(lacking)} to copy for the sky's "
                                 f"products (real files of {', '.join(real_files.missions)})")

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def random(cls, num_stars: int, *, seed: int = 0, sectors_per_star: int = 2,
               transit_fraction: float = 0.5, empty_fraction: float = 0.0,
               k2_fraction: float = 0.0, kepler_fraction: float = 0.0,
               tess_cadence: str = "short", **kwargs: Any) -> SimulatedSky:
        """A sky of ``num_stars`` random stars, each with ``sectors_per_star`` TESS sectors
        (``tess_cadence``: ``short``, 2-minute, or ``fast``, 20-second light curves).

        A fraction has a transiting planet; a fraction has no data at all; a
        fraction also has K2 campaigns or Kepler quarters.

        Examples
        --------
        >>> sky = SimulatedSky.random(5, seed=1, sectors_per_star=3)
        >>> len(sky.stars), len(sky.observations)
        (5, 15)
        """
        if tess_cadence not in ("short", "fast"):
            raise ValueError(f"tess_cadence is 'short' or 'fast', not {tess_cadence!r}")
        rng = np.random.default_rng(seed)
        stars = []
        for index in range(num_stars):
            ra = float(rng.uniform(0, 360))
            dec = float(np.degrees(np.arcsin(rng.uniform(-1, 1))))
            tmag = float(rng.uniform(8, 13))
            empty = rng.random() < empty_fraction
            first = int(rng.integers(1, 60))
            sectors = () if empty else tuple(range(first, first + sectors_per_star))
            transit = None
            if not empty and rng.random() < transit_fraction:
                period = float(rng.uniform(0.5, 2.5))
                transit = Transit(period=period,
                                  epoch=BJDREF_TESS + TESS_SECTOR_ONE_BTJD + float(rng.uniform(0, period)),
                                  depth=float(rng.uniform(0.005, 0.02)), duration=0.08)
            campaigns = (int(rng.integers(1, 19)),) if rng.random() < k2_fraction else ()
            quarters = tuple(range(1, 4)) if rng.random() < kepler_fraction else ()
            stars.append(SimulatedStar(
                name=f"sim_{index:05d}", ra=ra, dec=dec,
                tic_id=int(100_000_000 + rng.integers(0, 900_000_000)),
                epic_id=int(201_000_000 + index) if campaigns else None,
                kic_id=int(1_000_000 + index) if quarters else None,
                gaia_id=int(4_000_000_000_000_000_000 + index),
                tmag=tmag, k2_campaigns=campaigns, kepler_quarters=quarters, transit=transit,
                **{"tess_sectors" if tess_cadence == "short" else "tess_fast_sectors": sectors},
            ))
        return cls(stars, seed=seed, **kwargs)

    @classmethod
    def for_projects(cls, num_stars: int = 40, *, seed: int = 0, **kwargs: Any) -> SimulatedSky:
        """A sky for the ready projects of ``configs/``: white dwarfs and planet hosts.

        Half the stars are white dwarfs (G 14 to 18, fast-moving, a third of
        them flaring in ZTF, some with TESS sectors), listed in the simulated
        white-dwarf catalogue; half are planet hosts (a transit, two TESS
        sectors, a K2 campaign for one in three), listed in the Exoplanet Archive.

        Examples
        --------
        >>> sky = SimulatedSky.for_projects(4, seed=1)
        >>> [star.wd_probability is not None for star in sky.stars]
        [True, False, True, False]
        """
        rng = np.random.default_rng(seed)
        stars = []
        for index in range(num_stars):
            ra = float(rng.uniform(0, 360))
            dec = float(np.degrees(np.arcsin(rng.uniform(-1, 1))))
            common = {"name": f"sim_{index:05d}", "ra": ra, "dec": dec,
                      "tic_id": int(200_000_000 + index), "gaia_id": int(5_000_000_000 + index)}
            sector = int(rng.integers(1, 60))
            if index % 2 == 0:
                flare = None
                if rng.random() < 1 / 3:
                    season = int(rng.integers(0, 5))
                    flare = Flare(peak_mjd=58200.0 + (ra / 360.0) * 200.0 + 365.25 * season
                                  + float(rng.uniform(10, 140)), amplitude=2.5, decay=4.0)
                stars.append(SimulatedStar(
                    **common, tmag=float(rng.uniform(14.0, 18.0)) - 0.4,
                    gmag=float(rng.uniform(14.0, 18.0)), parallax=float(rng.uniform(5, 50)),
                    pmra=float(rng.uniform(-300, 300)), pmdec=float(rng.uniform(-300, 300)),
                    wd_probability=float(rng.uniform(0.8, 1.0)), flare=flare,
                    tess_sectors=(sector,) if rng.random() < 0.5 else (),
                ))
            else:
                period = float(rng.uniform(0.8, 3.0))
                campaign = int(rng.integers(1, 19)) if index % 3 == 1 else None
                stars.append(SimulatedStar(
                    **common, tmag=float(rng.uniform(8.0, 13.0)),
                    epic_id=int(201_000_000 + index) if campaign else None,
                    tess_sectors=(sector, sector + 1),
                    k2_campaigns=(campaign,) if campaign else (),
                    transit=Transit(period=period, epoch=BJDREF_TESS + TESS_SECTOR_ONE_BTJD
                                    + float(rng.uniform(0, period)),
                                    depth=float(rng.uniform(0.005, 0.02)), duration=0.1),
                ))
        return cls(stars, seed=seed, **kwargs)

    def _obsid(self) -> str:
        obsid = str(self._next_obsid)
        self._next_obsid += 1
        return obsid

    def _add_tic_rows(self, star: SimulatedStar, neighbours: bool) -> None:
        if star.tic_id is None:
            return
        self.tic.append(self._tic_row(star.tic_id, star.ra, star.dec, star.tmag, star))
        if neighbours:
            # A fainter star a few arcseconds away, in the TIC but without data.
            rng = self.rng("neighbour", star.name)
            angle = rng.uniform(0, 2 * math.pi)
            separation = rng.uniform(3.0, 6.0) / 3600.0
            ra = (star.ra + separation * math.cos(angle) / max(math.cos(math.radians(star.dec)),
                                                                1e-6)) % 360.0
            dec = float(np.clip(star.dec + separation * math.sin(angle), -90, 90))
            self.tic.append(self._tic_row(NEIGHBOUR_TIC_IDS + len(self.tic), ra, dec,
                                          star.tmag + 4.0, None))

    @staticmethod
    def _tic_row(tic_id: int, ra: float, dec: float, tmag: float,
                 star: SimulatedStar | None) -> dict[str, Any]:
        return {
            "ID": str(tic_id), "ra": ra, "dec": dec,
            "pmRA": star.pmra if star else 0.0, "pmDEC": star.pmdec if star else 0.0,
            "plx": 5.0, "Tmag": tmag, "Teff": star.teff if star else 4000.0,
            "logg": star.logg if star else 4.7, "rad": star.radius if star else 0.5,
            "mass": 1.0 if star else 0.5,
            "GAIA": str(star.gaia_id) if star and star.gaia_id else "",
            "KIC": str(star.kic_id) if star and star.kic_id else "",
            "objType": "STAR",
        }

    def _observation(self, star: SimulatedStar, **values: Any) -> dict[str, Any]:
        row = {
            "intentType": "science", "obs_collection": "", "provenance_name": "",
            "instrument_name": "", "project": "", "filters": "", "wavelength_region": "Optical",
            "target_name": "", "target_classification": "", "obs_id": "", "s_ra": star.ra,
            "s_dec": star.dec, "dataproduct_type": "timeseries", "proposal_pi": "",
            "calib_level": 3, "t_min": math.nan, "t_max": math.nan, "t_exptime": math.nan,
            "em_min": 600.0, "em_max": 1000.0, "obs_title": "", "t_obs_release": 58500.0,
            "proposal_id": "", "proposal_type": "", "sequence_number": -999,
            "s_region": f"CIRCLE ICRS {star.ra:.6f} {star.dec:.6f} 0.00138889",
            "jpegURL": "", "dataURL": "", "dataRights": "PUBLIC", "mtFlag": False,
            "srcDen": math.nan, "obsid": self._obsid(), "objID": "",
        }
        row.update(values)
        row["objID"] = str(int(row["obsid"]) + 1_000_000_000)
        self.observations.append(row)
        self.products_by_obsid[row["obsid"]] = []
        return row

    def _product(self, observation: dict[str, Any], *, data_uri: str, filename: str,
                 description: str, subgroup: str, product_type: str = "SCIENCE",
                 file: Product | None = None, size: int = 0) -> None:
        row = {
            "obsID": observation["obsid"], "obs_collection": observation["obs_collection"],
            "dataproduct_type": observation["dataproduct_type"],
            "obs_id": observation["obs_id"], "description": description, "type": "S",
            "dataURI": data_uri, "productType": product_type,
            "productGroupDescription": "Minimum Recommended Products",
            "productSubGroupDescription": subgroup, "productDocumentationURL": "",
            "project": observation["project"], "prvversion": "", "proposal_id": "",
            "productFilename": filename, "size": size, "parent_obsid": observation["obsid"],
            "dataRights": "PUBLIC", "calib_level": 3,
        }
        self.products_by_obsid[observation["obsid"]].append(row)
        if file is not None:
            self.files[data_uri] = file
            if file.cloud_key is not None:
                self.cloud_keys[file.cloud_key] = data_uri

    def _add_tess(self, star: SimulatedStar) -> None:
        if star.tic_id is None:
            return
        tic = star.tic_id
        kinds = ([(s, "short") for s in star.tess_sectors]
                 + [(s, "fast") for s in star.tess_fast_sectors]
                 + [(s, "ffi") for s in star.tess_ffi_sectors])
        for sector, kind in sorted(kinds):
            start = TESS_SECTOR_ONE_BTJD + TESS_SECTOR_DAYS * (sector - 1)
            days = min(self.days_per_sector, TESS_SECTOR_DAYS)
            stamp = _btjd_stamp(start + TESS_SECTOR_DAYS)
            scid = 120 + sector - 1
            mjd = start + BJDREF_TESS - MJD_OFFSET
            if kind == "ffi":
                cadence, author, collection = _ffi_cadence(sector), "TESS-SPOC", "HLSP"
                stem = f"hlsp_tess-spoc_tess_phot_{tic:016d}-s{sector:04d}_tess_v1"
                filename = f"{stem}_lc.fits"
                folder = f"tess-spoc/s{sector:04d}/target/{_tic_path(tic)}"
                data_uri = f"mast:HLSP/{folder}/{filename}"
                cloud = f"mast/hlsp/{folder}/{filename}"
                obs_id, subgroup = stem, "LC"
            else:
                cadence = CADENCE_SECONDS[f"tess_{kind}"]
                author, collection = "SPOC", "TESS"
                obs_id = (f"tess{stamp}-s{sector:04d}-{tic:016d}-{scid:04d}-"
                          + ("a_fast" if kind == "fast" else "s"))
                filename = f"{obs_id}-lc.fits" if kind == "fast" else f"{obs_id}_lc.fits"
                data_uri = f"mast:TESS/product/{filename}"
                cloud = f"tess/public/tid/s{sector:04d}/{_tic_path(tic)}/{filename}"
                subgroup = "FAST-LC" if kind == "fast" else "LC"
            observation = self._observation(
                star, obs_collection=collection, provenance_name=author,
                instrument_name="Photometer", project="TESS", filters="TESS",
                target_name=str(tic), obs_id=obs_id, t_min=mjd, t_max=mjd + days,
                t_exptime=cadence, sequence_number=sector, proposal_type="GI",
                obs_title=f"TESS Sector {sector}", dataURL=data_uri,
            )
            file = Product(data_uri=data_uri, filename=filename,
                           cloud_key=cloud if star.in_cloud else None, mission="TESS",
                           star=star, sequence=sector, cadence=cadence, author=author,
                           start=start, days=days)
            self._product(observation, data_uri=data_uri, filename=filename,
                          description="Light curves", subgroup=subgroup, file=file)
            if kind != "ffi":
                tp_name = filename.replace("lc.fits", "tp.fits")
                self._product(observation, data_uri=f"mast:TESS/product/{tp_name}",
                              filename=tp_name, description="Target pixel files",
                              subgroup="TP", size=2_000_000)

    def _add_k2(self, star: SimulatedStar) -> None:
        if star.epic_id is None:
            return
        epic = f"{star.epic_id:09d}"
        for campaign in star.k2_campaigns:
            start = K2_CAMPAIGN_ONE_BKJD + K2_CAMPAIGN_DAYS * (campaign - 1)
            days = min(self.days_per_sector, 80.0)
            mjd = start + BJDREF_KEPLER - MJD_OFFSET
            folder = f"c{campaign}/{epic[:4]}00000/{epic[4:6]}000"
            filename = f"ktwo{epic}-c{campaign:02d}_llc.fits"
            data_uri = f"mast:K2/url/missions/k2/lightcurves/{folder}/{filename}"
            observation = self._observation(
                star, obs_collection="K2", provenance_name="K2", instrument_name="Kepler",
                project="K2", filters="KEPLER", target_name=f"ktwo{epic}",
                obs_id=f"ktwo{epic}-c{campaign:02d}_lc", t_min=mjd, t_max=mjd + days,
                t_exptime=1800.0, sequence_number=campaign, dataproduct_type="cube",
                obs_title=f"K2 Campaign {campaign}",
            )
            file = Product(data_uri=data_uri, filename=filename,
                           cloud_key=(f"k2/public/lightcurves/{folder}/{filename}"
                                      if star.in_cloud else None),
                           mission="K2", star=star, sequence=campaign,
                           cadence=CADENCE_SECONDS["kepler_long"], author="K2", start=start,
                           days=days)
            self._product(observation, data_uri=data_uri, filename=filename,
                          description="Lightcurve Long Cadence (KLC)", subgroup="LLC", file=file)
            tp_name = filename.replace("_llc.fits", "_lpd-targ.fits.gz")
            self._product(observation, data_uri=data_uri.replace(filename, tp_name),
                          filename=tp_name, description="Target Pixel Long Cadence (KTL)",
                          subgroup="LPD-TARG", size=1_000_000)

    def _add_kepler(self, star: SimulatedStar) -> None:
        if star.kic_id is None or not star.kepler_quarters:
            return
        kic = f"{star.kic_id:09d}"
        quarters = sorted(star.kepler_quarters)
        first, last = quarters[0], quarters[-1]
        days = min(self.days_per_sector, 90.0)
        observation = self._observation(
            star, obs_collection="Kepler", provenance_name="Kepler", instrument_name="Kepler",
            project="Kepler", filters="KEPLER", target_name=f"kplr{kic}",
            obs_id=f"kplr{kic}_lc_Q" + "".join("1" if q in quarters else "0" for q in range(18)),
            t_min=KEPLER_QUARTER_BKJD[first] + BJDREF_KEPLER - MJD_OFFSET,
            t_max=KEPLER_QUARTER_BKJD[last] + days + BJDREF_KEPLER - MJD_OFFSET,
            t_exptime=1800.0, dataproduct_type="cube", obs_title="Kepler long cadence",
        )
        for quarter in quarters:
            filename = f"kplr{kic}-{KEPLER_QUARTER_STAMPS[quarter]}_llc.fits"
            folder = f"{kic[:4]}/{kic}"
            data_uri = f"mast:Kepler/url/missions/kepler/lightcurves/{folder}/{filename}"
            file = Product(data_uri=data_uri, filename=filename,
                           cloud_key=(f"kepler/public/lightcurves/{folder}/{filename}"
                                      if star.in_cloud else None),
                           mission="Kepler", star=star, sequence=quarter,
                           cadence=CADENCE_SECONDS["kepler_long"], author="Kepler",
                           start=KEPLER_QUARTER_BKJD[quarter], days=days)
            self._product(observation, data_uri=data_uri, filename=filename,
                          description=f"Lightcurve Long Cadence (CLC) - Q{quarter}",
                          subgroup="LLC", file=file)

    # -- use -------------------------------------------------------------------------------
    def rng(self, *parts: Any) -> np.random.Generator:
        """A random generator seeded by the sky's seed and ``parts`` (the same parts, the same draws)."""
        digest = hashlib.sha256(":".join(map(str, (self.seed, *parts))).encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def file_bytes(self, data_uri: str) -> bytes | None:
        """The FITS file of a data URI (made on first use, then cached); ``None`` if unknown."""
        product = self.files.get(data_uri)
        if product is None:
            return None
        with self._cache_lock:
            cached = self._cache.get(data_uri)
            if cached is not None:
                self._cache.move_to_end(data_uri)
                return cached
        if self.real_files is not None:
            content = self.real_files.copy_for(product, self._mission_numbers[data_uri])
        else:
            content = lightcurve_file(product, self)
        with self._cache_lock:
            self._cache[data_uri] = content
            total = sum(len(value) for value in self._cache.values())
            while total > self._cache_bytes and len(self._cache) > 1:
                _, dropped = self._cache.popitem(last=False)
                total -= len(dropped)
        return content

    def file_size(self, data_uri: str) -> int:
        """Size in bytes of a product's file (0 for products that are listed but not simulated)."""
        content = self.file_bytes(data_uri)
        return len(content) if content is not None else 0

    def prepare_files(self) -> int:
        """Make every file now (before timing anything); returns how many."""
        for data_uri in self.files:
            self.file_bytes(data_uri)
        return len(self.files)

    def products(self, obsid: str) -> list[dict[str, Any]]:
        """Product rows of one observation, with the real sizes of simulated files."""
        rows = []
        for row in self.products_by_obsid.get(obsid, []):
            if row["dataURI"] in self.files:
                row = dict(row, size=self.file_size(row["dataURI"]))
            rows.append(row)
        return rows

    def star(self, name: str) -> SimulatedStar:
        for star in self.stars:
            if star.name == name:
                return star
        raise KeyError(f"no simulated star named {name!r}")

    def files_of(self, star: SimulatedStar | str, mission: str | None = None) -> list[Product]:
        """The light-curve files of one star (of one mission), in time order."""
        name = star if isinstance(star, str) else star.name
        found = [p for p in self.files.values() if p.star.name == name
                 and (mission is None or p.mission == mission)]
        return sorted(found, key=lambda p: (p.mission, p.start, p.cadence))

    def resolve(self, name: str) -> SimulatedStar | None:
        """The star a name refers to: its catalog name, or ``TIC n``, ``KIC n``, ``EPIC n``."""
        text = name.strip().lower()
        match = re.fullmatch(r"(tic|kic|kplr|epic|ktwo)\s*0*(\d+)", text)
        for star in self.stars:
            if star.name.lower() == text:
                return star
            if match:
                kind, number = match.group(1), int(match.group(2))
                ids = {"tic": star.tic_id, "kic": star.kic_id, "kplr": star.kic_id,
                       "epic": star.epic_id, "ktwo": star.epic_id}
                if ids[kind] == number:
                    return star
        return None

    def catalog(self, stars: Sequence[SimulatedStar] | None = None, *, ids: bool = True,
                mag_offset: float = 0.0) -> pd.DataFrame:
        """A catalog of the stars (name, ra, dec, mag and, with ``ids``, the cross-ids).

        Columns with no value for any star are left out.
        """
        rows = []
        for star in stars if stars is not None else self.stars:
            row: dict[str, Any] = {"name": star.name, "ra": star.ra, "dec": star.dec,
                                   "mag": star.tmag + mag_offset}
            if ids:
                for column in ("tic_id", "epic_id", "kic_id", "gaia_id"):
                    row[column] = getattr(star, column)
            rows.append(row)
        frame = pd.DataFrame(rows).dropna(axis=1, how="all")
        return frame.astype(
            {c: "Int64" for c in ("tic_id", "epic_id", "kic_id", "gaia_id") if c in frame}
        )

