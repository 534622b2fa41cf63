"""The objects astronomers use: lightkurve and astropy tables from light curves, units, reprs."""

from __future__ import annotations

import pickle

import astropy.units as u
import lightkurve
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from astropy.table import QTable
from astropy.timeseries import TimeSeries

from skyretriever.database import Session
from skyretriever.models import (
    Detection,
    Histogram,
    Lightcurve,
    Properties,
    RawPhotometry,
    Source,
)
from skyretriever.models.datasets import column_units
from skyretriever.testing import SimulatedArchives
from tests.mast_support import QUICK, kepler_stars, small_sky, write_catalog

ELECTRONS = u.electron / u.s


@pytest.fixture(scope="module")
def sky():
    return small_sky()


@pytest.fixture
def missions(project_factory, sky, tmp_path):
    """A project of TESS, Kepler and K2 light curves from the simulated archives, run."""
    stars = [sky.star("planet_host"), *kepler_stars()]
    catalog = write_catalog(sky, tmp_path, stars)
    with SimulatedArchives(sky) as archives:
        where = archives.observatory_kwargs(**QUICK)
        proj = project_factory(obs_names=["TESS", "Kepler", "K2"],
                               catalog_kwargs={"kind": "file", "filename": catalog},
                               TESS=where, Kepler=where, K2=where)
        summary = proj.run()
    assert summary.failures == [] and summary.counts["done"] == 3
    return proj


def source_named(session, name: str) -> Source:
    return session.scalars(sa.select(Source).where(Source.name == name)).one()


def test_a_tess_light_curve_becomes_a_lightkurve_object_in_btjd_tdb(missions):
    with Session() as session:
        source = source_named(session, "planet_host")
        tess = [lc for lc in source.lightcurves if lc.observatory == "tess"]
        assert len(tess) == 2
        for lc in tess:
            frame = lc.data
            curve = lc.to_lightkurve()
            assert isinstance(curve, lightkurve.TessLightCurve)
            assert len(curve) == len(frame) == lc.num_points
            assert (curve.time.format, curve.time.scale) == ("btjd", "tdb")
            np.testing.assert_allclose(curve.time.btjd, frame["btjd"], rtol=0, atol=1e-9)
            np.testing.assert_allclose(curve.time.mjd, frame["mjd"], rtol=0, atol=1e-8)
            np.testing.assert_allclose(curve.time.jd, frame["bjd"], rtol=0, atol=1e-8)
            assert curve.flux.unit == ELECTRONS and curve.flux_err.unit == ELECTRONS
            np.testing.assert_array_equal(curve.flux.value, frame["flux"])
            np.testing.assert_array_equal(np.asarray(curve["quality"]), frame["quality"])
            np.testing.assert_array_equal(np.asarray(curve["qflag"]), frame["qflag"])
            assert curve["mag"].unit == u.mag
            sector = int(frame["sector"].iloc[0])
            assert curve.meta["SECTOR"] == sector == lc.series_number   # sectors 1 and 2
            assert curve.meta["LABEL"] == "planet_host" and curve.meta["MISSION"] == "TESS"
            assert curve.meta["TICID"] == 301_000_001 and curve.meta["EXPTIME"] == lc.exptime
            assert curve.meta["RA"] == source.ra and curve.meta["FLUX_UNIT"] == "electron / s"
            assert curve.meta["FILE_METADATA"] == lc.file_metadata
            assert lc.file_metadata["source_name"] == "planet_host"


def test_kepler_and_k2_light_curves_are_in_bkjd_with_their_quarters_and_campaigns(missions):
    with Session() as session:
        for name, observatory, key, sequences in (("kepler_host", "kepler", "QUARTER", [1, 2, 3]),
                                                   ("k2_star", "k2", "CAMPAIGN", [3, 5])):
            collection = source_named(session, name).to_lightkurve(observatory)
            assert isinstance(collection, lightkurve.LightCurveCollection)
            assert len(collection) == len(sequences)
            assert [curve.meta[key] for curve in collection] == sequences
            for curve, lc in zip(collection, source_named(session, name).lightcurves):
                assert isinstance(curve, lightkurve.KeplerLightCurve)
                assert (curve.time.format, curve.time.scale) == ("bkjd", "tdb")
                np.testing.assert_allclose(curve.time.bkjd, lc.data["bkjd"], rtol=0, atol=1e-9)
                assert curve.flux.unit == ELECTRONS and len(curve) == lc.num_points
            # a source's collection holds every observatory's light curves, in order
            everything = source_named(session, name).to_lightkurve()
            assert len(everything) == len(source_named(session, name).lightcurves)


def test_tables_and_time_series_carry_units_and_the_time_scale(missions):
    with Session() as session:
        lc = next(lc for lc in source_named(session, "planet_host").lightcurves)
        assert lc.data.attrs["units"]["flux"] == "electron / s"
        assert lc.data.attrs["units"]["btjd"] == "d" and "filter" not in lc.data.attrs["units"]
        table = lc.to_table()
        assert isinstance(table, QTable) and len(table) == lc.num_points
        assert table["time"].scale == "tdb"
        np.testing.assert_allclose(table["time"].jd - 2457000.0, lc.data["btjd"], atol=1e-8)
        assert table["flux"].unit == ELECTRONS and table["sap_bkg"].unit == ELECTRONS
        assert table["mag"].unit == u.mag and table["exptime"].unit == u.s
        assert table["btjd"].unit == u.day and table["centroid_col"].unit == u.pix
        assert list(table["filter"]) == ["TESS"] * len(table)
        assert table.meta["SECTOR"] == 1
        series = lc.to_timeseries()
        assert isinstance(series, TimeSeries) and series.time.scale == "tdb"
        np.testing.assert_array_equal(series["flux"].value, lc.data["flux"])

        raw = session.scalars(sa.select(RawPhotometry).where(
            RawPhotometry.source_name == "planet_host", RawPhotometry.observatory == "tess")).one()
        assert raw.data.attrs["units"]["pdcsap_flux"] == "electron / s"
        raw_table = raw.to_table()
        assert raw_table["pdcsap_flux"].unit == ELECTRONS and raw_table["mom_centr1"].unit == u.pix
        # the raw TIME (BTJD) is the time, and is kept under its name
        finite = np.isfinite(raw.data["time"].to_numpy())
        np.testing.assert_allclose(raw_table["btjd"].value[finite], raw.data["time"][finite])
        np.testing.assert_allclose(raw_table["time"].jd[finite], raw.data["bjd"][finite],
                                   rtol=0, atol=1e-8)
        assert raw.to_timeseries().time.scale == "tdb"


def test_demo_light_curves_are_mjd_utc_in_microjansky(project_factory):
    proj = project_factory(catalog_kwargs={"default": "test", "num_sources": 3},
                           demo={"empty_fraction": 0})
    assert proj.run().failures == []
    with Session() as session:
        source = session.scalars(sa.select(Source).order_by(Source.id)).first()
        lcs = source.lightcurves
        collection = source.to_lightkurve()
        assert len(collection) == len(lcs) > 1
        for curve, lc in zip(collection, lcs):
            assert type(curve) is lightkurve.LightCurve
            assert (curve.time.format, curve.time.scale) == ("mjd", "utc")
            np.testing.assert_allclose(curve.time.mjd, lc.data["mjd"], rtol=0, atol=1e-9)
            assert curve.flux.unit == u.uJy and curve["mag"].unit == u.mag
            # the flux is the AB magnitude's: 23.9 - 2.5 log10(flux / uJy)
            np.testing.assert_allclose(23.9 - 2.5 * np.log10(curve.flux.value), curve["mag"].value)
            assert curve.meta["FILTER"] == lc.filter and curve.meta["LABEL"] == source.name
            assert "SECTOR" not in curve.meta
        assert lcs[0].to_table()["time"].scale == "utc"


def test_units_follow_the_frame_a_light_curve_is_given():
    raw = RawPhotometry(source_name="s", observatory="demo", ra=1.0, dec=2.0)
    frame = pd.DataFrame({"mjd": [1.0], "flux": [2.0], "mag": [3.0]})
    frame.attrs["units"] = {"flux": "wrong"}
    raw.data = frame
    assert raw.data.attrs["units"] == {"mjd": "d", "flux": "uJy", "mag": "mag"}
    lc = Lightcurve(observatory="tess", data=frame.copy())
    assert lc.data.attrs["units"]["flux"] == "electron / s"


def test_reprs_are_short_rounded_and_have_units():
    detection = Detection(id=51, observatory="tess", finder="transit", snr=27.399736121231342,
                          period=3.2109876)
    assert repr(detection) == "<Detection 51 tess transit snr=27.4 period=3.21 d>"
    flare = Detection(id=8, observatory="demo", finder="peak", snr=9.87, time_peak=58010.123,
                      sign=1, is_simulated=True)
    assert repr(flare) == "<Detection 8 demo peak simulated snr=9.9 brightening at MJD 58010.12>"
    source = Source(id=3, name="DEMO-0042", ra=150.123456, dec=-2.5, mag=15.204, status="done")
    assert repr(source) == "<Source 3 'DEMO-0042' RA 150.12346 Dec -2.50000 mag 15.20 done>"
    properties = Properties(source_id=3, num_lightcurves=2, num_points=1500, best_snr=7.04,
                            ls_period=0.700012, transit_period=0.7000, transit_snr=31.26,
                            num_detections=1)
    assert repr(properties) == ("<Properties of source 3: 2 light curves, 1,500 points, "
                                "best snr=7.0, LS period=0.7 d, transit period=0.7 d, "
                                "transit snr=31.3, 1 detection>")
    lc = Lightcurve(id=12, observatory="tess", filter="TESS", series_number=1, series_total=2,
                    num_points=1234, time_start=58325.2961, time_end=58326.29, exptime=120.0)
    assert repr(lc) == "<Lightcurve 12 tess TESS 1/2: 1,234 points, MJD 58325.30-58326.29, 120 s>"


def test_reprs_of_stored_rows_need_no_session(missions):
    with Session() as session:
        source = source_named(session, "planet_host")
        lc, detections = source.lightcurves[0], list(source.detections)
    # the session is closed: showing them must not query (nor fail)
    assert repr(source).startswith(f"<Source {source.id} 'planet_host' RA 30.00000 Dec -20.00000")
    assert repr(lc) == (f"<Lightcurve {lc.id} tess TESS 1/2: {lc.num_points:,} points, "
                        f"MJD {lc.time_start:.2f}-{lc.time_end:.2f}, 120 s>")
    for detection in detections:
        assert repr(detection).startswith(f"<Detection {detection.id} tess {detection.finder} "
                                          f"snr={detection.snr:.1f}")
    assert "<table" in source._repr_html_() and "planet_host" in source._repr_html_()
    assert "electron / s" in lc._repr_html_()


def test_html_reprs_escape_hostile_values():
    hostile = "<script>alert('x')</script>"
    source = Source(id=1, name=hostile, ra=1.0, dec=2.0, status="failed", error="<img src=x>")
    detection = Detection(id=2, observatory="demo", finder="peak", snr=5.0, source=source,
                          extra={"note": "<b>bold</b>"})
    properties = Properties(source_id=1, num_lightcurves=1, num_points=10, source=source,
                            quality_counts={"<i>": 3})
    lc = Lightcurve(id=3, observatory="demo", filter="<u>", series_number=1, series_total=1,
                    num_points=10, source=source)
    for row in (source, detection, properties, lc):
        page = row._repr_html_()
        assert page.startswith('<table class="skyretriever">')
        for tag in ("<script>", "<img", "<b>", "<i>", "<u>"):
            assert tag not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in source._repr_html_()
    assert "&lt;img src=x&gt;" in source._repr_html_()
    assert "&lt;b&gt;bold&lt;/b&gt;" in detection._repr_html_()
    assert "&lt;script&gt;" in properties._repr_html_() and "&lt;i&gt; 3" in properties._repr_html_()
    assert "&lt;u&gt;" in lc._repr_html_() and "&lt;script&gt;" in lc._repr_html_()


def test_histogram_is_importable_from_the_models():
    from skyretriever.analysis import Histogram as FromAnalysis

    assert Histogram is FromAnalysis
    assert int(Histogram().total("points")) == 0


def test_units_travel_with_derived_frames_without_being_copied():
    # pandas deep-copies attrs into every derived frame; the units mapping is shared, read-only.
    frame = pd.DataFrame({"mjd": [1.0, 2.0], "flux": [3.0, 4.0]})
    frame.attrs["units"] = column_units(frame.columns, "tess")
    derived = frame[frame["flux"] > 3.5] * 2
    assert derived.attrs["units"] is frame.attrs["units"]
    assert dict(derived.attrs["units"]) == {"mjd": "d", "flux": "electron / s"}
    with pytest.raises(TypeError):
        frame.attrs["units"]["flux"] = "Jy"
    assert pickle.loads(pickle.dumps(frame)).attrs["units"] == frame.attrs["units"]
