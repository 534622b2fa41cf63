"""The HEALPix sky index: pixel ranges always cover the cone, and bad cones are refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyretriever.healpix import angular_distance, cone_ranges, healpix_index


def _inside(indices: np.ndarray, ranges: list[tuple[int, int]]) -> np.ndarray:
    inside = np.zeros(len(indices), dtype=bool)
    for lo, hi in ranges:
        inside |= (indices >= lo) & (indices <= hi)
    return inside


@settings(max_examples=400, deadline=None)
@given(st.floats(0, 359.999), st.floats(-90, 90), st.floats(1e-4, 30))
def test_every_point_in_the_cone_falls_in_the_ranges(ra, dec, radius):
    rng = np.random.default_rng([int(ra * 1000), int((dec + 90) * 1000)])
    # points scattered around the centre out to twice the radius
    offsets = rng.uniform(-2 * radius, 2 * radius, size=(400, 2))
    decs = np.clip(dec + offsets[:, 1], -90, 90)
    ras = (ra + offsets[:, 0] / max(np.cos(np.radians(dec)), 1e-3)) % 360
    distance = angular_distance(ra, dec, ras, decs)
    ranges = cone_ranges(ra, dec, radius)
    assert len(ranges) <= 64
    within = distance <= radius
    assert _inside(healpix_index(ras, decs), ranges)[within].all()


def test_ranges_are_tight_for_small_cones():
    ranges = cone_ranges(150.0, 2.2, 2 / 3600)           # a 2-arcsec cross-match
    covered = sum(hi - lo + 1 for lo, hi in ranges)
    assert covered <= 256                              # a few dozen 3-arcsec pixels at most


def test_distances_match_astropy():
    from astropy.coordinates import SkyCoord

    a, b = SkyCoord(10.0, 20.0, unit="deg"), SkyCoord(10.5, 19.7, unit="deg")
    assert angular_distance(10.0, 20.0, 10.5, 19.7) == pytest.approx(a.separation(b).deg, rel=1e-9)


@pytest.mark.parametrize("ra,dec,radius,message", [
    (float("nan"), 0.0, 1.0, "ra must be a finite"), (10.0, 95.0, 1.0, "not a position"),
    (361.0, 0.0, 1.0, "not a position"), (10.0, 0.0, 0.0, "above 0"), (10.0, 0.0, 200.0, "at most"),
    ("10; DROP TABLE sources", 0.0, 1.0, "finite number"),
])
def test_bad_cones_are_refused(ra, dec, radius, message):
    with pytest.raises(ValueError, match=message):
        cone_ranges(ra, dec, radius)
