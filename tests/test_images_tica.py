"""TICA cubes on the S3 route: ``product: TICA`` reads ``tess/public/mast/tica/`` cubes.

TICA cubes differ from SPOC's: a longer primary header (read, not assumed), one
plane of flux (no error plane), and ``STARTTJD``/``ENDTJD``/``QUAL_BIT`` in the
FFI table. The simulated bucket holds a TICA cube built from TICA-layout FFIs.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from skyretriever.images.cube import BLOCK
from skyretriever.observatories.tessffi import VirtualTESSFFI
from skyretriever.testing.ffi import CubeBucketService, FFISky, FFIStar
from skyretriever.testing.server import ArchiveServer

STAR = FFIStar("quick", 100.0, -30.0, tmag=10.0)
FAST = {"max_attempts": 3, "backoff": 0.01, "timeout": 20.0}


@pytest.fixture(scope="module")
def tica_sky(tmp_path_factory):
    return FFISky.simple(tmp_path_factory.mktemp("tica"), [STAR], sectors=(1,), frames=24,
                         shape=(32, 32), product="TICA")


def test_tica_cutouts_are_the_ffis_pixels(tica_sky, data_root):
    sector = tica_sky.sectors[0]
    assert sector.cube_key == "tess/public/mast/tica/tica-s0001-1-1-cube.fits"
    with fits.open(sector.cube_path) as cube:
        assert len(cube[0].header.tostring()) > 8 * BLOCK  # longer than SPOC's first read
    with ArchiveServer([CubeBucketService(tica_sky)]) as running:
        obs = VirtualTESSFFI(route="s3", s3_endpoint_url=running.url, product="TICA",
                             cutout_size=7, merge_gap=0, **FAST)
        raw = obs.download({"name": STAR.name, "ra": STAR.ra, "dec": STAR.dec})
        # SPOC's cubes are not TICA's: nothing else was listed or read.
        assert all("/tica/" in r.path or "list-type" in r.query for r in running.records)
    assert raw.sectors == [1] and raw.num_points == 24
    cutout = raw.data[1]
    row, column = cutout.corner
    for frame in (0, 10, 23):
        image = fits.getdata(sector.ffi_paths[frame])
        np.testing.assert_array_equal(cutout.flux[frame], image[row:row + 7, column:column + 7])
    assert np.isnan(cutout.flux_err).all()  # TICA cubes have no error plane
    flags = [fits.getheader(path)["QUAL_BIT"] for path in sector.ffi_paths]
    np.testing.assert_array_equal(cutout.quality, flags)
    starts = [fits.getheader(path)["STARTTJD"] for path in sector.ffi_paths]
    stops = [fits.getheader(path)["ENDTJD"] for path in sector.ffi_paths]
    np.testing.assert_allclose(cutout.time, (np.array(starts) + stops) / 2)
    # One plane: the bytes read are the cutout's own (7 rows of 7 pixels x 24 cadences x 4).
    assert cutout.extra["planes"] == 1 and cutout.extra["ranges"] == 7
    assert cutout.extra["bytes"] == cutout.flux.size * 4
    # The star is where the WCS says, and the light curve holds its flux.
    lightcurves = obs.reduce(raw)
    assert len(lightcurves) == 1 and lightcurves[0].num_points == 24
    assert lightcurves[0].num_good_points == 23  # frame 10 is flagged
    flux = lightcurves[0].data["flux"].to_numpy()
    assert 0.85 * STAR.flux < np.median(flux) < 1.05 * STAR.flux


def test_a_spoc_request_does_not_take_tica_cubes(tica_sky, data_root):
    with ArchiveServer([CubeBucketService(tica_sky)]) as running:
        obs = VirtualTESSFFI(route="s3", s3_endpoint_url=running.url, product="SPOC", **FAST)
        raw = obs.download({"name": STAR.name, "ra": STAR.ra, "dec": STAR.dec})
    assert raw.is_empty and raw.altdata["cubes_checked"] == []
