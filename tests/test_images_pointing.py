"""Finding a star's cubes with TESS's pointing model (``sector_lookup: pointing``, tess-point).

The simulated bucket holds cubes where tess-point puts the star, a decoy cube (a
sector, camera and CCD where it does not) that holds the star all the same, and
a cube of a sector past tess-point's table: the pointing lookup reads the first
and the last, the WCS lookup reads every cube.
"""

from __future__ import annotations

import pytest

from skyretriever.observatories.tessffi import VirtualTESSFFI
from skyretriever.testing.ffi import CubeBucketService, FFISky, FFIStar
from skyretriever.testing.server import ArchiveServer

STAR = FFIStar("pointed", 100.0, -30.0, tmag=10.0)
ROW = {"name": STAR.name, "ra": STAR.ra, "dec": STAR.dec}
FAST = {"max_attempts": 3, "backoff": 0.01, "timeout": 20.0}
DECOY = (7, 1, 1)
#: A sector tess-point has no pointing for: looked up by its WCS.
FUTURE = (200, 1, 1)


@pytest.fixture(scope="module")
def pointed_sky(tmp_path_factory):
    return FFISky.pointed(tmp_path_factory.mktemp("pointed"), [STAR], count=2,
                          decoys=(DECOY, FUTURE))


def test_the_pointing_model_names_the_cubes_to_read(pointed_sky, data_root):
    by_name = {(s.sector, s.camera, s.ccd): s for s in pointed_sky.sectors}
    assert sorted(by_name) == [(6, 2, 2), DECOY, (33, 2, 2), FUTURE]
    with ArchiveServer([CubeBucketService(pointed_sky)]) as running:
        pointing = VirtualTESSFFI(route="s3", s3_endpoint_url=running.url, cutout_size=5,
                                  sector_lookup="pointing", **FAST)
        raw = pointing.download(ROW)
        read = {r.path.split("/", 2)[-1] for r in running.records if "cube" in r.path}
        running.reset_stats()
        by_wcs = VirtualTESSFFI(route="s3", s3_endpoint_url=running.url, cutout_size=5,
                                **FAST).download(ROW)
        read_by_wcs = {r.path.split("/", 2)[-1] for r in running.records if "cube" in r.path}
    assert raw.sectors == [6, 33, 200] and by_wcs.sectors == [6, 7, 33, 200]
    assert [6, 2, 2] in raw.altdata["pointing"] and [7, 1, 1] not in raw.altdata["pointing"]
    # The decoy cube was never read, not even its headers; the WCS lookup read every cube.
    wanted = {by_name[key].cube_key for key in ((6, 2, 2), (33, 2, 2), FUTURE)}
    assert read == wanted == set(raw.altdata["cubes_checked"])
    assert read_by_wcs == {s.cube_key for s in pointed_sky.sectors}
    for sector in (6, 33, 200):
        assert (raw.data[sector].flux == by_wcs.data[sector].flux).all()


def test_the_pointing_model_knows_the_sectors_that_hold_a_star():
    found, last = VirtualTESSFFI().pointing_candidates(STAR.ra, STAR.dec)
    assert {(6, 2, 2), (33, 2, 2)} <= found and DECOY not in found
    assert 134 <= last < FUTURE[0]
