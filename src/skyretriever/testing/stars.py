"""What a simulated sky is made of: stars, their transits and flares, and their light-curve files.

:class:`SimulatedStar` says what the missions observed of one star; a
:class:`Product` is one light-curve file an archive holds for it. A
:class:`~skyretriever.testing.sky.SimulatedSky` builds the archives' rows and
files from them.

Examples
--------
>>> star = SimulatedStar("a", 10.0, 5.0, tic_id=1, tess_sectors=(1,),
...                      transit=Transit(period=2.0, epoch=2458326.0, depth=0.01))
>>> star.kepler_magnitude, bool(star.transit.in_transit(np.array([2458328.0]))[0])
(10.5, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Flare", "Product", "SimulatedStar", "Transit"]


@dataclass(frozen=True)
class Transit:
    """A planet's transit: box-shaped dips of ``depth`` every ``period`` days.

    ``epoch`` is the barycentric Julian date (TDB) of one mid-transit.
    """

    period: float
    epoch: float
    depth: float
    duration: float = 0.1

    def in_transit(self, bjd: np.ndarray) -> np.ndarray:
        """True where ``bjd`` falls inside a transit."""
        phase = (bjd - self.epoch + 0.5 * self.period) % self.period - 0.5 * self.period
        return np.abs(phase) < 0.5 * self.duration


@dataclass(frozen=True)
class Flare:
    """A flare seen by ZTF: ``amplitude`` magnitudes brighter at ``peak_mjd``, decaying in
    ``decay`` days."""

    peak_mjd: float
    amplitude: float = 1.5
    decay: float = 2.0

    def brightening(self, mjd: np.ndarray) -> np.ndarray:
        """Magnitudes brighter than quiescence at each MJD."""
        after = mjd >= self.peak_mjd
        result = np.zeros(len(mjd))
        result[after] = self.amplitude * np.exp(-(mjd[after] - self.peak_mjd) / self.decay)
        return result


@dataclass(frozen=True)
class SimulatedStar:
    """One star and what the missions observed of it.

    Parameters
    ----------
    name
        Catalog name.
    ra, dec
        Position in degrees (ICRS, epoch 2000: the TIC's positions).
    tic_id, epic_id, kic_id, gaia_id
        Catalog identifiers (``tic_id`` is needed for TESS data, ``epic_id``
        for K2, ``kic_id`` for Kepler).
    tmag, kepmag
        TESS and Kepler magnitudes; they set the flux level of the files.
    tess_sectors, tess_fast_sectors, tess_ffi_sectors
        Sectors with SPOC 2-min light curves, with SPOC 20-s ones, and with
        TESS-SPOC light curves from the full-frame images.
    k2_campaigns, kepler_quarters
        K2 campaigns and Kepler quarters with long-cadence light curves.
    transit
        A transiting planet, or ``None``.
    in_cloud
        ``False`` keeps this star's files off the S3 bucket (MAST HTTPS only).
    gmag, parallax
        Gaia G magnitude (default ``tmag`` + 0.4) and parallax (mas), for the
        simulated Gaia and white-dwarf catalogs and ZTF.
    ztf
        Whether ZTF observed the star (it never observes south of Dec -30).
    ztf_neighbours
        Other ZTF objects near the star, as (separation in arcsec, magnitudes
        fainter) pairs: what a cone search must tell from the star.
    flare
        A flare in the ZTF light curves, or ``None``.
    wd_probability
        Probability of being a white dwarf; stars with one are in the simulated
        white-dwarf catalogue.
    """

    name: str
    ra: float
    dec: float
    tic_id: int | None = None
    epic_id: int | None = None
    kic_id: int | None = None
    gaia_id: int | None = None
    tmag: float = 10.0
    kepmag: float | None = None
    pmra: float = 0.0
    pmdec: float = 0.0
    teff: float = 5600.0
    logg: float = 4.4
    radius: float = 1.0
    tess_sectors: tuple[int, ...] = ()
    tess_fast_sectors: tuple[int, ...] = ()
    tess_ffi_sectors: tuple[int, ...] = ()
    k2_campaigns: tuple[int, ...] = ()
    kepler_quarters: tuple[int, ...] = ()
    transit: Transit | None = None
    in_cloud: bool = True
    gmag: float | None = None
    parallax: float = 5.0
    ztf: bool = True
    ztf_neighbours: tuple[tuple[float, float], ...] = ()
    flare: Flare | None = None
    wd_probability: float | None = None

    @property
    def gaia_magnitude(self) -> float:
        """Gaia G magnitude (``gmag``, or ``tmag`` + 0.4 for a Sun-like colour)."""
        return self.gmag if self.gmag is not None else self.tmag + 0.4

    def position_at(self, year: float | np.ndarray) -> tuple[Any, Any]:
        """Position (degrees) at ``year``: the epoch-2000 position moved with the proper motion."""
        years = np.asarray(year, dtype=float) - 2000.0
        dec = np.clip(self.dec + self.pmdec * years / 3.6e6, -90.0, 90.0)
        ra = (self.ra + self.pmra * years / 3.6e6
              / max(math.cos(math.radians(self.dec)), 1e-6)) % 360.0
        return ra, dec

    @property
    def kepler_magnitude(self) -> float:
        """Kepler magnitude (``kepmag``, or ``tmag`` + 0.5 for a Sun-like colour)."""
        return self.kepmag if self.kepmag is not None else self.tmag + 0.5


@dataclass(frozen=True)
class Product:
    """One light-curve file the archive holds: where it is and what goes in it."""

    data_uri: str
    filename: str
    cloud_key: str | None
    mission: str
    star: SimulatedStar
    sequence: int
    cadence: float
    author: str
    start: float
    days: float

    @property
    def is_tess(self) -> bool:
        return self.mission == "TESS"
