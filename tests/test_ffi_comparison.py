"""The FFI light curve of a star against its 2-minute light curve, binned to the FFI cadence.

One star with a transiting planet, seen by the simulated MAST (a TESS 2-minute
light curve of sector 1) and in the simulated FFI cubes of sector 1 (30-minute
frames): the light curve the S3 route and the aperture photometry make from the
cutouts agrees with the 2-minute one averaged over each FFI exposure.

The measure: both series divided by their medians, over the 94 unflagged FFI
frames; the median absolute difference is 0.18% (against a 3% transit), the rms
difference 0.32%, which is the FFI light curve's own noise (0.33% a frame), and
Pearson's correlation is 0.96.
"""

from __future__ import annotations

import numpy as np
import pytest

from skyretriever.images.photometry import binned_to_frames, compare_cadences
from skyretriever.observatories.tess import VirtualTESS
from skyretriever.observatories.tessffi import VirtualTESSFFI
from skyretriever.testing import SimulatedArchives, SimulatedSky, SimulatedStar, Transit
from skyretriever.testing.ffi import CubeBucketService, FFISky, FFIStar
from skyretriever.testing.server import ArchiveServer

RA, DEC, TMAG = 150.0, 10.0, 8.0
TRANSIT = Transit(period=0.7, epoch=2458325.9, depth=0.03, duration=0.12)
ROW = {"name": "both", "ra": RA, "dec": DEC, "mag": TMAG, "tic_id": 261136679}
QUICK = {"max_attempts": 3, "backoff": 0.01, "timeout": 20.0}


@pytest.fixture(scope="module")
def skies(tmp_path_factory):
    """The star in the simulated MAST sky (2-minute, sector 1) and in the simulated FFIs."""
    star = SimulatedStar("both", RA, DEC, tic_id=ROW["tic_id"], tmag=TMAG, tess_sectors=(1,),
                         transit=TRANSIT)
    ffi_sky = FFISky.simple(tmp_path_factory.mktemp("comparison_ffi"),
                            [FFIStar("both", RA, DEC, tmag=TMAG, transit=TRANSIT)],
                            sectors=(1,), frames=96, shape=(32, 32))
    return SimulatedSky([star], days_per_sector=2.0), ffi_sky


@pytest.fixture(scope="module")
def both(skies, tmp_path_factory):
    """The star's 2-minute and FFI light curves of sector 1 (made once for the module)."""
    from skyretriever import storage

    storage.configure(tmp_path_factory.mktemp("comparison_data"))
    star_sky, ffi_sky = skies
    with SimulatedArchives(star_sky) as archives:
        tess = VirtualTESS(**archives.observatory_kwargs(**QUICK))
        _, short = tess.fetch_source(ROW, save=False)
    with ArchiveServer([CubeBucketService(ffi_sky)]) as running:
        ffi = VirtualTESSFFI(route="s3", s3_endpoint_url=running.url, **QUICK)
        _, full_frame = ffi.fetch_source(ROW, save=False)
    return short, full_frame


def test_the_ffi_light_curve_agrees_with_the_2_minute_one_binned(both):
    short, full_frame = both
    assert len(short) == 1 and len(full_frame) == 1
    short_data, ffi_data = short[0].data, full_frame[0].data
    # 2 days of 2-minute points against 96 frames of 30 minutes (2 flagged).
    assert len(short_data) > 1000 and len(ffi_data) == 96
    agreement = compare_cadences(ffi_data, short_data)
    assert agreement["frames"] == 94
    assert agreement["median_abs_relative_difference"] < 0.003
    assert agreement["correlation"] > 0.93
    # They differ by no more than the FFI light curve's own noise.
    noise = np.median(ffi_data["flux_err"] / ffi_data["flux"])
    assert agreement["rms_relative_difference"] < 1.2 * noise
    # The transit is as deep in both.
    times = ffi_data["mjd"].to_numpy() + 2400000.5
    inside = TRANSIT.in_transit(times) & ~ffi_data["qflag"].to_numpy(bool)
    flux = ffi_data["flux"].to_numpy() / np.median(ffi_data["flux"])
    assert 1 - flux[inside].mean() == pytest.approx(TRANSIT.depth, rel=0.25)


def test_the_measure_sees_light_curves_that_disagree(both):
    short, full_frame = both
    shifted = short[0].data.copy()
    shifted["mjd"] += TRANSIT.period / 2  # the transits where the FFIs have none
    agreement = compare_cadences(full_frame[0].data, shifted)
    assert agreement["correlation"] < 0.3
    assert agreement["median_abs_relative_difference"] > \
        compare_cadences(full_frame[0].data, short[0].data)["median_abs_relative_difference"]


def test_binning_to_frames_takes_the_points_of_each_exposure():
    times = np.array([0.0, 0.01, 0.02, 0.03, 0.05, np.nan])
    values = np.array([1.0, 2.0, 3.0, np.nan, 5.0, 6.0])
    np.testing.assert_allclose(binned_to_frames(np.array([0.01, 0.04, 0.2]), 0.03, times, values),
                               [2.0, 5.0, np.nan])


def test_the_report_shows_the_ffi_light_curve_beside_the_2_minute_one(
        project_factory, skies, tmp_path):
    from skyretriever.report import write_report

    star_sky, ffi_sky = skies
    catalog = tmp_path / "both.csv"
    catalog.write_text("name,ra,dec,mag,tic_id\n"
                       f"both,{RA},{DEC},{TMAG},{ROW['tic_id']}\n"
                       "alone,120.0,-40.0,10.0,12345\n")
    with SimulatedArchives(star_sky) as archives, \
            ArchiveServer([CubeBucketService(ffi_sky)]) as bucket:
        short = project_factory(name="two_minute", obs_names=["TESS"],
                                catalog_kwargs={"kind": "file", "filename": str(catalog)},
                                TESS=archives.observatory_kwargs(**QUICK))
        full = project_factory(name="full_frame", obs_names=["TESSFFI"],
                               catalog_kwargs={"kind": "file", "filename": str(catalog)},
                               TESSFFI={"route": "s3", "s3_endpoint_url": bucket.url, **QUICK})
        assert short.run().failures == [] and full.run().failures == []
    for label, project in (("full", full), ("short", short)):  # from either side
        index = write_report(project, folder=tmp_path / f"report_{label}", top=5)
        pages = {p.name: p.read_text() for p in (index.parent / "sources").glob("*.html")}
        page = next(text for name, text in pages.items() if "both" in name)
        assert 'id="ffi-comparison-plot"' in page
        figure = list((index.parent / "sources").glob("*both*_ffi_2min.png"))
        assert len(figure) == 1 and figure[0].stat().st_size > 10_000
        alone = next(text for name, text in pages.items() if "alone" in name)
        assert 'id="ffi-comparison-plot"' not in alone


def test_the_module_examples_run():
    import doctest

    import skyretriever.images.photometry as photometry

    result = doctest.testmod(photometry, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
