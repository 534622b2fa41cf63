"""Figures of real pipeline products: light curves, raw data, sources, detections, histograms.

The data comes from two project runs per database (SQLite and PostgreSQL),
made once for the module: a star observed by TESS, Kepler, K2 and ZTF on the
simulated archives (real-format FITS files and IRSA tables, a transiting
planet), and the demo observatory with flares and injections (peak
detections, simulated detections and a histogram file).
"""

from __future__ import annotations

import doctest
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from skyretriever import Project, database, plots, storage
from skyretriever.analysis import Histogram, recovery_efficiency
from skyretriever.database import Session
from skyretriever.models import Detection, Lightcurve, Properties, RawPhotometry, Source
from skyretriever.observatories import VirtualDemoObs
from skyretriever.observatories.mission_files import (
    KEPLER_QUALITY_PRESETS,
    TESS_QUALITY_PRESETS,
)
from skyretriever.observatories.ztf import ZTF_QUALITY_PRESETS
from skyretriever.plots import (
    FLAGGED_ALPHA,
    plot_detection,
    plot_histogram,
    plot_lightcurve,
    plot_raw_photometry,
    plot_source,
)
from skyretriever.testing import SimulatedArchives, SimulatedSky, SimulatedStar, Transit
from tests.conftest import TABLES
from tests.mast_support import QUICK, write_catalog
from tests.ztf_support import QUICK_NET

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The planet of the multi-mission star: a 1% box transit every 0.7 days, 2.4 hours long.
PLANET = Transit(period=0.7, epoch=2457000.0 + 1325.5, depth=0.01, duration=0.1)
STAR = SimulatedStar("multi_star", 290.0, 44.0, tic_id=303_000_001, kic_id=8_000_001,
                     epic_id=206_000_001, gaia_id=9001, tmag=9.0, tess_sectors=(1, 2),
                     kepler_quarters=(1,), k2_campaigns=(3,), transit=PLANET)


@dataclass
class Products:
    """What the two project runs made, on one database."""

    backend: str
    root: Path
    multi: Project
    demo: Project


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def products(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Run both projects once per backend (the runs are the slow part of this module)."""
    root = tmp_path_factory.mktemp(f"plots_{request.param}")
    storage.configure(root / "data")
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'test.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    database.configure(url)
    database.upgrade()
    common = {"cfg_file": False, "database_url": url, "data_root": str(root / "data"),
              "progress": False, "execution_kwargs": {"scheduler": "serial"}}
    sky = SimulatedSky([STAR], days_per_sector=3.0)
    with SimulatedArchives(sky) as archives:
        archives.add_irsa()
        where = archives.observatory_kwargs(**QUICK)
        multi = Project(name="plots_multi", obs_names=["TESS", "Kepler", "K2", "ZTF"],
                        catalog_kwargs={"kind": "file",
                                        "filename": write_catalog(sky, root, [STAR])},
                        TESS=where, Kepler=where, K2=where,
                        ZTF=archives.ztf_kwargs(**QUICK_NET),
                        analysis_kwargs={"finders": ["peak", "transit"]}, **common)
        assert multi.run().failures == []
    demo = Project(name="plots_demo", catalog_kwargs={"default": "test", "num_sources": 20},
                   analysis_kwargs={"num_injections": 2}, **common)
    assert demo.run().failures == []
    yield Products(request.param, root, multi, demo)
    if request.param == "postgresql":
        with database.get_engine().begin() as connection:
            connection.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    database.configure("sqlite:///:memory:")
    storage.configure(root / "unused")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# -- helpers -----------------------------------------------------------------------------------
def data_lines(ax) -> dict[str, Any]:
    """The points drawn by the plots, by gid (``good:<label>`` / ``flagged:<label>``)."""
    return {line.get_gid(): line for line in ax.lines
            if line.get_gid() and line.get_gid().split(":")[0] in ("good", "flagged")}


def legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [text.get_text() for text in legend.get_texts()] if legend else []


def spans(ax) -> list[tuple[float, float]]:
    return [(patch.get_x(), patch.get_x() + patch.get_width()) for patch in ax.patches
            if patch.get_gid() == "event window"]


def lightcurves_of(session, project: Project, observatory: str | None = None) -> list[Lightcurve]:
    query = sa.select(Lightcurve).where(Lightcurve.project == project.pars.name)
    if observatory is not None:
        query = query.where(Lightcurve.observatory == observatory)
    return list(session.scalars(query.order_by(Lightcurve.source_id, Lightcurve.observatory,
                                               Lightcurve.series_number)))


def check_png(path: Path) -> None:
    content = path.read_bytes()
    assert content[:8] == PNG_SIGNATURE and len(content) > 1000
    leftovers = [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def demo_lightcurve(**parameters: Any) -> Lightcurve:
    obs = VirtualDemoObs(empty_fraction=0, num_seasons=1, filters=["r"], **parameters)
    return obs.reduce(obs.download({"name": "star", "ra": 10.0, "dec": 5.0, "mag": 15.0}))[0]


# -- light curves ------------------------------------------------------------------------------
EXPECTED_LIGHTCURVES = {  # observatory: (time label, legend label of the first series)
    "tess": ("MJD (TDB)", "TESS"),
    "kepler": ("MJD (TDB)", "Kepler"),
    "k2": ("MJD (TDB)", "K2 Kepler"),
    "ztf": ("MJD", "ZTF zg"),
}


@pytest.mark.parametrize("observatory", sorted(EXPECTED_LIGHTCURVES))
def test_lightcurve_of_each_mission(products, observatory, tmp_path):
    time_label, label = EXPECTED_LIGHTCURVES[observatory]
    with Session() as session:
        lightcurve = lightcurves_of(session, products.multi, observatory)[0]
        frame = lightcurve.data
        fig = lightcurve.plot(filename=tmp_path / "lc.png")
    ax = fig.axes[0]
    assert ax.get_xlabel() == time_label and ax.get_ylabel() == "Magnitude (mag)"
    assert ax.yaxis_inverted()
    assert ax.get_title().startswith(f"multi_star: {label}, series 1 of ")
    lines = data_lines(ax)
    good, flagged = lines[f"good:{label}"], lines.get(f"flagged:{label}")
    qflag = frame["qflag"].to_numpy(bool)
    assert np.isfinite(frame["mag"]).all()
    # every good epoch (as counted in the database row) is drawn, opaque, at its magnitude
    assert len(good.get_xdata()) == lightcurve.num_good_points
    np.testing.assert_array_equal(good.get_ydata(), frame["mag"].to_numpy()[~qflag])
    assert good.get_alpha() == 1.0
    if qflag.any():
        assert len(flagged.get_xdata()) == lightcurve.num_points - lightcurve.num_good_points
        assert flagged.get_alpha() == FLAGGED_ALPHA < 0.5
        assert legend_texts(ax) == [label, "flagged (qflag)"]
    else:
        assert flagged is None and legend_texts(ax) == [label]
    # error bars: one segment per good epoch, as long as twice its error
    bars = next(c for c in ax.collections if c.get_gid() == f"good:{label}")
    lengths = [abs(seg[1, 1] - seg[0, 1]) for seg in bars.get_segments()]
    np.testing.assert_allclose(lengths, 2 * frame["mag_err"].to_numpy()[~qflag])
    check_png(tmp_path / "lc.png")


def test_lightcurves_share_given_axes_and_stay_inverted(products):
    with Session() as session:
        first, second = lightcurves_of(session, products.demo, "demo")[:2]
        fig, ax = plt.subplots()
        assert plot_lightcurve(first, ax=ax) is fig
        assert plot_lightcurve(second, ax=ax) is fig
    assert ax.yaxis_inverted()  # inverted once, not flipped back by the second call
    labels = {first.filter, second.filter}
    assert {gid.split(":", 1)[1] for gid in data_lines(ax)} == {f"demo {b}" for b in labels}


# -- raw photometry ----------------------------------------------------------------------------
def test_raw_tess_kepler_and_k2_are_flux_against_time(products, tmp_path):
    masks = {"tess": ("quality", TESS_QUALITY_PRESETS["default"]),
             "kepler": ("sap_quality", KEPLER_QUALITY_PRESETS["default"]),
             "k2": ("sap_quality", KEPLER_QUALITY_PRESETS["default"])}
    with Session() as session:
        for observatory, (column, mask) in masks.items():
            raw = session.scalars(sa.select(RawPhotometry).where(
                RawPhotometry.source_name == "multi_star",
                RawPhotometry.observatory == observatory)).one()
            frame = raw.data
            assert "mag" not in frame  # the archives give fluxes only
            fig = raw.plot(filename=tmp_path / f"{observatory}.png")
            ax = fig.axes[0]
            assert ax.get_ylabel() == "PDCSAP flux (e$^-$ s$^{-1}$)"
            assert ax.get_xlabel() == "MJD (TDB)" and not ax.yaxis_inverted()
            label = "TESS" if observatory == "tess" else ("K2 Kepler" if observatory == "k2"
                                                          else "Kepler")
            assert ax.get_title() == (f"multi_star: raw {label.split()[0]} photometry "
                                      f"({raw.num_points} epochs)")
            lines = data_lines(ax)
            finite = np.isfinite(frame["pdcsap_flux"]) & np.isfinite(frame["mjd"])
            flagged = (frame[column].to_numpy() & mask) != 0
            drawn = lines[f"good:{label}"]
            np.testing.assert_array_equal(drawn.get_ydata(),
                                          frame["pdcsap_flux"][finite & ~flagged].to_numpy())
            if (finite & flagged).any():
                faint = lines[f"flagged:{label}"]
                assert len(faint.get_xdata()) == int((finite & flagged).sum())
                assert faint.get_alpha() == FLAGGED_ALPHA
                assert legend_texts(ax) == [label, f"flagged ({column}, default mask)"]
            check_png(tmp_path / f"{observatory}.png")


def test_raw_ztf_is_magnitudes_by_filter(products):
    with Session() as session:
        raw = session.scalars(sa.select(RawPhotometry).where(
            RawPhotometry.observatory == "ztf")).one()
        frame = raw.data
        fig = plot_raw_photometry(raw)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "MJD" and ax.get_ylabel() == "Magnitude (mag)"
    assert ax.yaxis_inverted()
    flagged = (frame["catflags"].to_numpy() & ZTF_QUALITY_PRESETS["default"]) != 0
    texts = legend_texts(ax)
    assert texts[:3] == ["ZTF zg", "ZTF zr", "ZTF zi"]  # in order of wavelength
    lines = data_lines(ax)
    for band in ("zg", "zr", "zi"):
        rows = frame["filtercode"].to_numpy() == band
        assert len(lines[f"good:ZTF {band}"].get_xdata()) == int((rows & ~flagged).sum())
        if (rows & flagged).any():
            assert len(lines[f"flagged:ZTF {band}"].get_xdata()) == int((rows & flagged).sum())
    if flagged.any():
        assert texts[3:] == ["flagged (catflags, default mask)"]


# -- sources -----------------------------------------------------------------------------------
def test_source_with_four_missions_on_one_axis(products, tmp_path):
    with Session() as session:
        source = session.scalars(sa.select(Source).where(Source.name == "multi_star")).one()
        lightcurves = list(source.lightcurves)
        fig = source.plot(filename=tmp_path / "source.png")
    ax = fig.axes[0]
    groups = ["TESS", "Kepler", "K2 Kepler", "ZTF zg", "ZTF zr", "ZTF zi"]
    assert legend_texts(ax) == [*groups, "flagged (qflag)"]
    assert ax.get_xlabel() == "MJD (TDB for TESS, Kepler, K2)"
    assert ax.get_ylabel() == "Magnitude (mag)" and ax.yaxis_inverted()
    assert ax.get_title().startswith("multi_star: RA 290.00000°, Dec +44.00000° "
                                     "(TESS, Kepler, K2, ZTF; ")
    lines = data_lines(ax)
    assert sorted(gid for gid in lines if gid.startswith("good:")) == sorted(
        f"good:{g}" for g in groups)
    # one series per survey and filter: the sectors and seasons of one filter together
    for label in groups:
        survey, _, band = label.partition(" ")
        members = [lc for lc in lightcurves if lc.observatory == survey.lower()
                   and (not band or band == "Kepler" or lc.filter == band)]
        assert len(lines[f"good:{label}"].get_xdata()) == sum(lc.num_good_points for lc in members)
        assert lines[f"good:{label}"].get_alpha() == 1.0
    assert {lines[f"flagged:{label}"].get_alpha() for label in groups
            if f"flagged:{label}" in lines} == {FLAGGED_ALPHA}
    colours = {matplotlib.colors.to_hex(lines[f"good:{g}"].get_color()) for g in groups}
    assert len(colours) == len(groups)
    assert ax.get_title().endswith(f"; {len(lightcurves)} light curves)")
    check_png(tmp_path / "source.png")


def test_source_detached_or_with_a_session_gives_the_same_figure(products):
    with Session() as session:
        source = session.scalars(sa.select(Source).where(
            Source.project == products.demo.pars.name, Source.lightcurves.any())
            .order_by(Source.id)).first()
        expected = sum(lc.num_points for lc in source.lightcurves)
    # the session is closed: the light curves are read in a new one
    detached = plot_source(source)
    with Session() as other:
        given = plot_source(source, session=other)
    for fig in (detached, given):
        ax = fig.axes[0]
        assert ax.get_xlabel() == "MJD"
        assert [t for t in legend_texts(ax) if t.startswith("demo")] == ["demo g", "demo r"]
        assert sum(len(line.get_xdata()) for line in data_lines(ax).values()) == expected


# -- detections --------------------------------------------------------------------------------
def test_flare_detection_has_its_window_shaded(products, tmp_path):
    with Session() as session:
        detection = session.scalars(sa.select(Detection).where(
            Detection.project == products.demo.pars.name, ~Detection.is_simulated)
            .order_by(Detection.snr.desc())).first()
        assert detection.finder == "peak" and detection.sign == 1
        lightcurve = detection.lightcurve
        name = detection.source.name
        fig = detection.plot(filename=tmp_path / "flare.png")
    full, zoom = fig.axes
    label = f"demo {lightcurve.filter}"
    for ax in (full, zoom):
        assert spans(ax) == [pytest.approx((detection.time_start, detection.time_end))]
        peak = [line for line in ax.lines if line.get_label() == "peak epoch"]
        assert peak and peak[0].get_xdata()[0] == pytest.approx(detection.time_peak)
        assert ax.yaxis_inverted() and ax.get_xlabel() == "MJD"
    assert len(data_lines(full)[f"good:{label}"].get_xdata()) == lightcurve.num_good_points
    low, high = zoom.get_xlim()
    assert low < detection.time_start < detection.time_end < high
    assert high - low < 0.5 * (lightcurve.time_end - lightcurve.time_start)
    # the zoom's magnitude range reaches the flare's peak (top of an inverted axis)
    assert zoom.get_ylim()[1] <= detection.peak_mag
    assert full.get_title() == (f"{name}: peak finder, flare in {label}, "
                                f"S/N {detection.snr:.1f}")
    assert legend_texts(full)[:3] == [label, "event window", "peak epoch"]
    check_png(tmp_path / "flare.png")


def test_simulated_detection_says_so(products):
    with Session() as session:
        detection = session.scalars(sa.select(Detection).where(
            Detection.project == products.demo.pars.name, Detection.is_simulated)).first()
        fig = plot_detection(detection, session=session)
    assert "[simulated: injected flare, not in the stored data]" in fig.axes[0].get_title()


def transit_of(session, project: Project, band: str) -> Detection:
    return session.scalars(sa.select(Detection).where(
        Detection.project == project.pars.name, Detection.finder == "transit",
        Detection.filter == band)).one()


def test_transit_candidate_folded_with_its_box_model(products, tmp_path):
    with Session() as session:
        detection = transit_of(session, products.multi, "TESS")
        assert detection.lightcurve_id is None  # found in both sectors together
        sectors = lightcurves_of(session, products.multi, "tess")
        good = sum(lc.num_good_points for lc in sectors)
    # detached now: the plot reads the source and its light curves itself
    fig = plot_detection(detection, filename=tmp_path / "transit.png")
    time_ax, phase_ax, hours_ax = fig.axes
    period, duration, depth = detection.period, detection.duration, detection.depth
    assert time_ax.get_xlabel() == "MJD (TDB)"
    assert spans(time_ax) == [pytest.approx((detection.time_start, detection.time_end))]
    assert len(data_lines(time_ax)["good:TESS"].get_xdata()) == good  # both sectors
    assert phase_ax.get_xlim() == (-0.5, 0.5)
    assert phase_ax.get_xlabel() == f"Phase (period {period:.5f} d)"
    phases = data_lines(phase_ax)["good:TESS"].get_xdata()
    assert phases.min() >= -0.5 and phases.max() < 0.5 and len(phases) == good
    limit = min(3 * duration, 0.5 * period) * 24
    assert hours_ax.get_xlim() == pytest.approx((-limit, limit))
    assert hours_ax.get_xlabel() == "Hours from mid-transit"
    for ax, half in ((phase_ax, 0.5 * duration / period), (hours_ax, 12 * duration)):
        assert ax.get_ylabel() == "Normalised flux"
        box = next(line for line in ax.lines if line.get_gid() == "box model")
        x, y = np.asarray(box.get_xdata()), np.asarray(box.get_ydata())
        assert y.min() == pytest.approx(1 - depth) and y.max() == 1.0
        assert x[y < 1].min() == pytest.approx(-half) and x[y < 1].max() == pytest.approx(half)
    # normalised to 1 out of transit, and the planet's 1% deep at mid-transit
    hours = data_lines(hours_ax)["good:TESS"]
    x, y = np.asarray(hours.get_xdata()), np.asarray(hours.get_ydata())
    out = np.abs(x) > 0.75 * PLANET.duration * 24
    assert np.median(y[out]) == pytest.approx(1.0, abs=5e-4)
    assert np.median(y[np.abs(x) < 0.25 * PLANET.duration * 24]) == pytest.approx(
        1 - PLANET.depth, abs=1e-3)
    title = time_ax.get_title()
    assert title.startswith(f"multi_star: transit candidate in TESS, P = {period:.5f} d, ")
    assert f"depth {depth * 1e6:.0f} ppm, duration {duration * 24:.2f} h" in title
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"TESS", "binned (median)", "mid-transit times",
            f"box model: depth {depth * 1e6:.0f} ppm, duration {duration * 24:.2f} h"} <= set(legend)
    check_png(tmp_path / "transit.png")


def test_transit_over_kepler_and_k2_uses_both(products):
    with Session() as session:
        detection = transit_of(session, products.multi, "Kepler")
        assert detection.observatory is None  # the K2 campaign has Kepler's filter too
        members = [lc for lc in lightcurves_of(session, products.multi)
                   if lc.filter == "Kepler"]
        assert {lc.observatory for lc in members} == {"kepler", "k2"}
        fig = plot_detection(detection, session=session)
    lines = data_lines(fig.axes[0])
    assert list(lines) == ["good:K2 + Kepler", "flagged:K2 + Kepler"]
    assert len(lines["good:K2 + Kepler"].get_xdata()) == sum(lc.num_good_points for lc in members)


# -- histograms --------------------------------------------------------------------------------
def test_histogram_counts_and_efficiency_along_each_dimension(products, tmp_path):
    path = products.demo.histogram_path()
    histogram = Histogram.load(path)
    with Session() as session:
        rows = session.scalars(sa.select(Properties).join(Source).where(
            Source.project == products.demo.pars.name)).all()
        injected = sum(p.num_injected for p in rows)
        recovered = sum(p.num_recovered for p in rows)
    assert injected == histogram.total("injected") > 0 and 0 < recovered < injected
    expected_counts = {
        "mag": {"lightcurves", "points", "scores", "detections", "injected", "recovered"},
        "cadence": {"lightcurves", "points", "scores", "detections", "injected", "recovered"},
        "filter": {"lightcurves", "points", "scores", "detections", "injected", "recovered"},
        "score": {"scores", "detections", "injected", "recovered"},
        "event": {"injected", "recovered"},
    }
    for along, variables in expected_counts.items():
        fig = plot_histogram(path if along == "mag" else histogram, along=along,
                             filename=tmp_path / f"{along}.png")
        counts_ax, efficiency_ax = fig.axes
        drawn: dict[str, float] = {}
        for artist in [*counts_ax.patches]:
            gid = artist.get_gid() or ""
            if not gid.startswith("counts:"):
                continue
            variable = gid.split(":")[1]
            if hasattr(artist, "get_data"):  # stairs along mag and score
                drawn[variable] = float(np.nansum(artist.get_data().values))
            else:  # bars along cadence, filter, event
                drawn[variable] = drawn.get(variable, 0.0) + artist.get_height()
        assert set(drawn) == variables, along
        for variable in variables:
            assert drawn[variable] == histogram.total(variable), (along, variable)
        assert counts_ax.get_yscale() == "log"
        assert efficiency_ax.get_xlabel() == plots._HISTOGRAM_AXES[along]
        assert efficiency_ax.get_ylabel() == "Recovery efficiency"
        efficiency = [line for line in efficiency_ax.lines
                      if (line.get_gid() or "").startswith("efficiency:")]
        table = recovery_efficiency(histogram, along)
        shown = np.isfinite(table["efficiency"].to_numpy())
        assert len(efficiency) == 1  # only flares are injected in the demo run
        np.testing.assert_allclose(efficiency[0].get_ydata(),
                                   table["efficiency"].to_numpy()[shown])
        name = "all injected events" if along == "event" else "flares"
        assert legend_texts(efficiency_ax) == [f"{name} ({recovered} of {injected})"]
        if along in ("filter", "event", "cadence"):
            ticks = [t.get_text() for t in efficiency_ax.get_xticklabels()]
            assert ticks == {"filter": histogram.filters, "event": ["transit", "flare", "dip"],
                             "cadence": ["0–25", "25–60", "60–150", "150–700", "700–2000",
                                         "2000–1e+06"]}[along]
        check_png(tmp_path / f"{along}.png")
    assert histogram.plot(along="score").axes[0].get_title() == (
        "Histogram 'analysis': counts and recovery efficiency along score")


def test_histogram_without_injections_has_the_counts_panel_only():
    histogram = Histogram()
    histogram.add(histogram.count_lightcurve(15.0, 30.0, "g", np.array([0.5, 1.0, -2.0])))
    for along in ("mag", "filter"):
        fig = plot_histogram(histogram, along=along)
        assert len(fig.axes) == 1, "no panel for a recovery efficiency there is none of"
        (ax,) = fig.axes
        assert ax.get_xlabel() == plots._HISTOGRAM_AXES[along] and len(ax.texts) == 0
        assert ax.get_title() == f"Histogram 'analysis': counts along {along}"
    stairs = {p.get_gid(): p for p in plot_histogram(histogram).axes[0].patches}
    assert np.nansum(stairs["counts:points"].get_data().values) == 3


# -- bad input ---------------------------------------------------------------------------------
def test_a_light_curve_without_data_is_refused():
    with pytest.raises(ValueError, match=r"light curve \(demo r, series 1 of 1\) has no data "
                                         r"to plot: its table is empty"):
        plot_lightcurve(Lightcurve(data=pd.DataFrame({"mjd": [], "mag": []}), observatory="demo",
                                   filter="r", series_number=1, series_total=1))
    with pytest.raises(ValueError, match="no table in memory and no file"):
        plot_lightcurve(Lightcurve(observatory="demo", filter="r"))
    nothing = demo_lightcurve()
    nothing.data = nothing.data.assign(mag=np.nan, flux=np.nan)
    with pytest.raises(ValueError, match="no finite 'mag' or 'flux' values to plot"):
        plot_lightcurve(nothing)


def test_empty_raw_data_and_sources_without_light_curves_are_refused():
    raw = VirtualDemoObs(empty_fraction=1.0).download({"name": "void", "ra": 1.0, "dec": 2.0})
    assert raw.is_empty
    with pytest.raises(ValueError, match="raw photometry of 'void' from demo is empty"):
        plot_raw_photometry(raw)
    with pytest.raises(ValueError, match="source 'void' .* has no processed light curves"):
        plot_source(Source(name="void", ra=1.0, dec=2.0, status="done"))


def test_a_histogram_dimension_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match=r"unknown histogram dimension 'magnitude'; did you "
                                         r"mean 'mag'\?; the dimensions are mag, cadence, "
                                         r"filter, score, event"):
        plot_histogram(Histogram(), along="magnitude")
    with pytest.raises(TypeError, match="needs a Histogram or the path of its file, not dict"):
        plot_histogram({"mag": [1, 2]})
    with pytest.raises(FileNotFoundError, match="no histogram file at"):
        plot_histogram("/nonexistent/histograms_analysis.nc")


def test_filenames_need_a_known_format_and_nothing_is_left_behind(tmp_path):
    lightcurve = demo_lightcurve()
    with pytest.raises(ValueError, match="has no suffix to give the format"):
        plot_lightcurve(lightcurve, filename=tmp_path / "figure")
    with pytest.raises(ValueError, match="unknown format 'xyz'; use one of .*png"):
        plot_lightcurve(lightcurve, filename=tmp_path / "figure.xyz")
    assert list(tmp_path.iterdir()) == []
    assert plt.get_fignums() == []  # the figures the caller never got are closed
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="unknown format"):
        plot_lightcurve(lightcurve, ax=ax, filename=tmp_path / "figure.xyz")
    assert plt.get_fignums() == [fig.number]  # the caller's own figure is left open
    plot_lightcurve(lightcurve, filename=tmp_path / "deeper" / "figure.pdf")
    assert (tmp_path / "deeper" / "figure.pdf").read_bytes()[:5] == b"%PDF-"
    plot_lightcurve(lightcurve, filename=str(tmp_path / "figure.svg"))
    assert b"<svg" in (tmp_path / "figure.svg").read_bytes()[:500]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["figure.pdf",
                                                                          "figure.svg"]


def test_nan_times_magnitudes_and_errors_are_left_out_quietly():
    lightcurve = demo_lightcurve(num_points=50, bad_epoch_fraction=0.0)
    frame = lightcurve.data.copy()
    frame.loc[[3, 4], "mag"] = np.nan
    frame.loc[7, "mjd"] = np.nan
    frame.loc[[10, 11], "mag_err"] = [np.nan, -1.0]
    frame.loc[20:24, "qflag"] = True
    lightcurve.data = frame
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot_lightcurve(lightcurve)
    lines = data_lines(fig.axes[0])
    assert len(lines["good:demo r"].get_xdata()) == 50 - 3 - 5
    assert len(lines["flagged:demo r"].get_xdata()) == 5
    bars = next(c for c in fig.axes[0].collections if c.get_gid() == "good:demo r")
    assert len(bars.get_segments()) == 50 - 3 - 5  # unknown errors drawn as no bar
    lengths = sorted(abs(s[1, 1] - s[0, 1]) for s in bars.get_segments())
    assert lengths[:2] == [0.0, 0.0] and lengths[2] > 0


def test_docstring_examples():
    result = doctest.testmod(plots, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 6 and result.failed == 0


def test_no_display_means_the_agg_backend():
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    code = ("from skyretriever.plots import plot_histogram; import matplotlib; "
            "from skyretriever.analysis import Histogram; plot_histogram(Histogram()); "
            "print(matplotlib.get_backend())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=120, check=True)
    assert result.stdout.strip().lower() == "agg"


# -- how the figures read (issue 16, point 11) -------------------------------------------------
def _inside_figure(fig, artist) -> bool:
    box, frame = artist.get_window_extent(fig.canvas.get_renderer()), fig.bbox
    return (box.x0 >= frame.x0 - 0.5 and box.x1 <= frame.x1 + 0.5
            and box.y0 >= frame.y0 - 0.5 and box.y1 <= frame.y1 + 0.5)


def _every_figure(products, session) -> list[tuple[str, Any]]:
    """One figure of each kind from the runs: light curves, raw data, sources, detections."""
    demo_source = session.scalars(sa.select(Source).where(
        Source.project == products.demo.pars.name, Source.lightcurves.any())).first()
    flare = session.scalars(sa.select(Detection).where(
        Detection.project == products.demo.pars.name, ~Detection.is_simulated)).first()
    figures = [("demo light curve", plot_lightcurve(lightcurves_of(session, products.demo)[0])),
               ("demo source", plot_source(demo_source, session=session)),
               ("flare", plot_detection(flare, session=session)),
               ("transit", plot_detection(transit_of(session, products.multi, "TESS"),
                                          session=session)),
               ("kepler and k2 transit", plot_detection(
                   transit_of(session, products.multi, "Kepler"), session=session)),
               ("multi-mission source", plot_source(session.scalars(sa.select(Source).where(
                   Source.name == "multi_star")).one(), session=session))]
    for observatory in ("tess", "kepler", "k2", "ztf"):
        figures.append((f"{observatory} light curve",
                        plot_lightcurve(lightcurves_of(session, products.multi, observatory)[0])))
        raw = session.scalars(sa.select(RawPhotometry).where(
            RawPhotometry.observatory == observatory)).one()
        figures.append((f"raw {observatory}", plot_raw_photometry(raw)))
    return figures


def test_measurements_are_dots_with_faint_error_bars_beneath(products):
    with Session() as session:
        figures = _every_figure(products, session)
    for what, fig in figures:
        for ax in fig.axes:
            for gid, line in data_lines(ax).items():
                # a triangle ('v', '^') reads as an upper limit
                assert line.get_marker() == "o" and line.get_linestyle() == "None", (what, gid)
                bars = [c for c in ax.collections if c.get_gid() == gid]
                for collection in bars:
                    assert collection.get_zorder() < line.get_zorder(), (what, gid)
                    assert collection.get_alpha() < 0.5 * (line.get_alpha() or 1.0), (what, gid)


def test_titles_fit_inside_their_figures(products, tmp_path):
    with Session() as session:
        figures = _every_figure(products, session)
        # a long name: the title wraps rather than leaving the figure
        source = session.scalars(sa.select(Source).where(Source.name == "multi_star")).one()
        source.name = "an exceptionally long source name, " * 4 + "multi_star"
        figures.append(("long name", plot_source(source, session=session)))
        session.rollback()
    for what, fig in figures:
        fig.canvas.draw()
        titles = [ax.title for ax in fig.axes if ax.get_title()]
        assert titles, what
        for title in titles:
            assert _inside_figure(fig, title), (what, title.get_text())
    long_title = figures[-1][1].axes[0].get_title()
    assert long_title.count("\n") >= 1 and long_title.replace("\n", " ").startswith(
        "an exceptionally long source name, ")
    transit_title = figures[3][1].axes[0].get_title()
    assert "P = " in transit_title and "S/N" in transit_title  # shortened by wrapping only


def test_the_box_model_is_drawn_over_the_points_and_error_bars(products):
    with Session() as session:
        fig = plot_detection(transit_of(session, products.multi, "TESS"), session=session)
    for ax in fig.axes[1:]:
        box = next(line for line in ax.lines if line.get_gid() == "box model")
        data = [*data_lines(ax).values(),
                *(c for c in ax.collections if (c.get_gid() or "").startswith(("good", "flag")))]
        assert data and all(box.get_zorder() > artist.get_zorder() for artist in data)


def test_time_axes_show_absolute_times_without_an_offset(products):
    # a short span late in MJD is what makes matplotlib write '+5.689e4' beside the axis
    lightcurve = demo_lightcurve(num_points=60)
    frame = lightcurve.data.copy()
    frame["mjd"] = 56890.0 + np.linspace(0.0, 0.8, len(frame))
    lightcurve.data = frame
    with Session() as session:
        figures = [("short span", plot_lightcurve(lightcurve)), *_every_figure(products, session)]
    for what, fig in figures:
        fig.canvas.draw()
        for ax in fig.axes:
            if not ax.get_xlabel().startswith("MJD"):
                continue
            assert ax.xaxis.get_offset_text().get_text() == "", what
            ticks = [float(t.get_text().replace("−", "-")) for t in ax.get_xticklabels()
                     if t.get_text()]
            low, high = ax.get_xlim()
            # the labels are the times themselves (with an offset they would be small numbers)
            assert len([t for t in ticks if low <= t <= high]) >= 2, (what, ticks, low, high)
    short = figures[0][1].axes[0]
    assert min(float(t.get_text()) for t in short.get_xticklabels()) > 56889


def test_reused_figures_draw_the_same_pictures(products):
    import io

    def png(fig) -> bytes:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=60)
        return buffer.getvalue()

    with Session() as session:
        sources = session.scalars(sa.select(Source).where(
            Source.project == products.demo.pars.name, Source.lightcurves.any())
            .order_by(Source.id).limit(3)).all()
        fresh = [png(plot_source(source, session=session)) for source in sources]
        plt.close("all")
        with plots.reused_figures():
            figures = [plot_source(source, session=session) for source in reversed(sources[1:])]
            assert figures[0] is figures[1]            # drawn again on the same figure
            again = [png(plot_source(source, session=session)) for source in reversed(sources)]
        assert plt.get_fignums() == []
    assert again[::-1] == fresh and len(set(fresh)) == 3
