"""Copies of real mission light curves served as a simulated star's files.

The real files (a TESS SPOC 2-minute sector, a K2 campaign, Kepler quarters from
altaipony 2.1.2's sdist) are not in the repository and no installed package
ships one; ``python bench/real_files.py`` fetches them (checked by SHA-256) into
``~/.cache/skyretriever/real-files`` or ``$SKYRETRIEVER_REAL_FILES``. Without
them these tests skip, saying so.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import pytest
import sqlalchemy as sa
from astropy.io import fits

from skyretriever.database import Session
from skyretriever.fitsfile import read_fits_table, scan_fits
from skyretriever.models import RawPhotometry
from skyretriever.observatories.k2 import VirtualK2
from skyretriever.observatories.mission_files import (
    WrongTargetError,
    check_target,
    read_lightcurve_fits,
)
from skyretriever.observatories.tess import VirtualTESS
from skyretriever.testing import SimulatedArchives, SimulatedSky, SimulatedStar
from skyretriever.testing.realfiles import (
    REAL_FILES,
    RealFileCopies,
    default_cache,
    find_real_files,
    how_to_get,
)
from tests.mast_support import QUICK, write_catalog

_FOUND = {path.name: path for path in find_real_files()}
_MISSION = {real.name: real.mission for real in REAL_FILES}


def _real_file(mission: str):
    found = [path for name, path in _FOUND.items() if _MISSION[name] == mission]
    if not found:
        if os.environ.get("CI") == "true":  # tasks.py test fetched them: their absence is a fault
            pytest.fail(f"no real {mission} light-curve file in {default_cache()} under CI=true")
        pytest.skip(f"no real {mission} light-curve file on this machine ({default_cache()}); "
                    + how_to_get(default_cache()))
    return found[0]


def _star(name: str, tic: int, ra: float, dec: float, **kwargs) -> SimulatedStar:
    return SimulatedStar(name, ra, dec, tic_id=tic, tmag=10.0, **kwargs)


@pytest.fixture
def tess_copies() -> RealFileCopies:
    path = _real_file("TESS")
    return RealFileCopies({path.name: path.read_bytes()})


def test_a_copy_carries_the_new_star_and_sector_and_keeps_the_real_data(tess_copies):
    original = _real_file("TESS").read_bytes()
    star = _star("copy", 123_456_789, 210.5, -33.25, pmra=12.0, tess_sectors=(40,))
    sky = SimulatedSky([star], real_files=tess_copies)
    product = sky.files_of("copy")[0]
    content = sky.file_bytes(product.data_uri)

    with warnings.catch_warnings():
        warnings.simplefilter("error")          # a wrong CHECKSUM or DATASUM only warns
        with fits.open(io.BytesIO(content), checksum=True) as hdul:
            assert all("CHECKSUM" in hdu.header for hdu in hdul)
            for hdu in hdul:
                assert hdu.header["OBJECT"] == "TIC 123456789"
                assert hdu.header["TICID"] == 123456789
                assert hdu.header["RA_OBJ"] == 210.5 and hdu.header["DEC_OBJ"] == -33.25
            assert hdul[0].header["SECTOR"] == 40
            assert hdul[0].header["PMRA"] == 12.0           # mas/yr in TESS files
    # The data are the real file's, byte for byte; only headers changed.
    copied, real = scan_fits(content), scan_fits(original)
    assert [h.data_size for h in copied] == [h.data_size for h in real]
    for new, old in zip(copied, real):
        assert (content[new.data_start:new.data_start + new.data_size]
                == original[old.data_start:old.data_start + old.data_size])
    assert "358108509" not in content[:copied[1].data_start].decode("ascii")


def test_the_reader_accepts_the_copy_for_its_star_and_refuses_it_for_another(tess_copies,
                                                                            tmp_path):
    star = _star("mine", 111_000_111, 45.0, 20.0, tess_sectors=(7,))
    sky = SimulatedSky([star], real_files=tess_copies)
    path = tmp_path / "copy_lc.fits"
    path.write_bytes(sky.file_bytes(sky.files_of("mine")[0].data_uri))

    frame, headers = read_lightcurve_fits(path, VirtualTESS().lightcurve_layout())
    columns, _ = read_fits_table(_real_file("TESS"), "LIGHTCURVE")
    assert len(frame) == len(columns["TIME"]) > 15_000               # a real 2-min sector
    np.testing.assert_array_equal(frame["pdcsap_flux"], columns["PDCSAP_FLUX"])
    primary = headers["primary"]
    check_target(path, primary, "TICID", 111_000_111, (45.0, 20.0), 2.0, "'mine'")
    with pytest.raises(WrongTargetError, match="TICID 111000111.*not of TICID 222"):
        check_target(path, primary, "TICID", 222, (45.0, 20.0), 2.0, "'other'")
    with pytest.raises(WrongTargetError, match="arcsec from source 'other'"):
        check_target(path, primary, "TICID", None, (46.0, 20.0), 2.0, "'other'")


def test_a_k2_copy_passes_the_k2_layout_and_names_its_campaign(tmp_path):
    path = _real_file("K2")
    star = SimulatedStar("k2", 170.0, 2.0, tic_id=5, epic_id=206_089_508, k2_campaigns=(13,))
    sky = SimulatedSky([star], real_files=RealFileCopies({path.name: path.read_bytes()}))
    copy = tmp_path / "ktwo_llc.fits"
    copy.write_bytes(sky.file_bytes(sky.files_of("k2")[0].data_uri))
    _, headers = read_lightcurve_fits(copy, VirtualK2().lightcurve_layout())
    assert headers["primary"]["CAMPAIGN"] == 13
    assert headers["primary"]["OBJECT"] == "EPIC 206089508"
    check_target(copy, headers["primary"], "KEPLERID", 206_089_508, (170.0, 2.0), 2.0, "'k2'")
    with pytest.raises(WrongTargetError):
        check_target(copy, headers["primary"], "KEPLERID", 211_117_077, None, 2.0, "'k2'")


def test_a_sky_refuses_real_files_that_lack_a_mission_it_needs(tess_copies):
    star = SimulatedStar("k2", 170.0, 2.0, tic_id=5, epic_id=206_089_508, k2_campaigns=(3,))
    with pytest.raises(ValueError, match="no real file of K2"):
        SimulatedSky([star], real_files=tess_copies)


def test_the_archives_serve_copies_a_project_stores_and_refuse_a_wrong_one(
        tess_copies, project_factory, tmp_path):
    stars = [_star("host", 301_000_001, 30.0, -20.0, tess_sectors=(1,)),
             _star("quiet", 301_000_002, 60.0, 10.0, tess_sectors=(3,)),
             _star("third", 301_000_003, 90.0, 45.0, tess_sectors=(5,))]
    sky = SimulatedSky(stars, real_files=tess_copies)
    host, quiet = sky.files_of("host")[0], sky.files_of("quiet")[0]
    with SimulatedArchives(sky) as archives:
        # The MAST route serves quiet's copy in place of host's: the wrong-star check refuses it.
        archives.mast.services[0].served_files[host.data_uri] = sky.file_bytes(quiet.data_uri)
        project = project_factory(
            obs_names=["TESS"], catalog_kwargs={"filename": write_catalog(sky, tmp_path)},
            TESS=archives.observatory_kwargs(**QUICK, use_cloud=False))
        summary = project.run(analyze=False)
        cloud = project_factory(
            "cloud_project", obs_names=["TESS"],
            catalog_kwargs={"filename": write_catalog(sky, tmp_path)},
            TESS=archives.observatory_kwargs(**QUICK, use_cloud=True))
        from_s3 = cloud.run(analyze=False, source_names=["host"])
    reasons = dict(summary.failures)
    assert list(reasons) == ["host"]
    assert "TICID 301000002" in reasons["host"] and "TICID 301000001" in reasons["host"]
    assert from_s3.failures == [] and from_s3.counts["reduced"] == 1   # S3 served host's own
    with Session() as session:
        rows = {raw.source_name: raw for raw in session.scalars(sa.select(RawPhotometry))}
    assert set(rows) == {"quiet", "third", "host"}          # host's only from the S3 route
    assert rows["quiet"].num_points > 15_000
