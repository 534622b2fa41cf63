"""TransitFinder: the grids, the search on known transits, stitching, and the acceptance tests.

The acceptance tests use simulated light curves with known truth at 10-min
cadence (the cadence of TESS full-frame images): the search bins 2-min data
to 10 min anyway, so this loses nothing and costs a fifth of the time, which
keeps 100 light curves per test at about 35 s on one idle core. 100 is the
fewest that tells 95% from 90% recovered, and a false-alarm rate of at most
1% from 3%. Seeds are fixed, so the tests are repeatable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skyretriever.analysis import Analysis, TransitFinder
from skyretriever.analysis.simulator import transit_model
from skyretriever.analysis.synthetic import as_lightcurve, sector_lightcurve, signal_times
from skyretriever.analysis.transit import duration_grid, period_grid

CADENCE = 10.0  # minutes
ORBIT_GAPS = ((13.2, 14.2),)


def _frame(rng: np.random.Generator, **kwargs) -> pd.DataFrame:
    kwargs.setdefault("cadence_minutes", CADENCE)
    return sector_lightcurve(rng, **kwargs)


# -- grids -----------------------------------------------------------------------------------
def test_period_grid_keeps_phase_drift_below_a_third_of_the_shortest_duration():
    span, duration = 27.0, 1 / 24
    grid = period_grid(span, 0.5, 13.5, duration, oversample=3)
    drift = span * np.diff(np.log(grid))  # days a transit moves over the span between trials
    assert drift.max() <= duration / 3 * 1.0001
    assert drift.min() >= duration / 3 * 0.99  # and no finer: no wasted trials
    assert grid[0] == pytest.approx(0.5) and grid[-1] == pytest.approx(13.5)
    # twice the span, twice the periods (a grid uniform in frequency would grow four times)
    assert len(period_grid(2 * span, 0.5, 13.5, duration, oversample=3)) == pytest.approx(
        2 * len(grid), rel=0.01)


def test_duration_grid_spans_the_range_in_bounded_steps():
    grid = duration_grid(1.0, 8.0, 1.35)
    assert grid[0] == 1.0 and grid[-1] == pytest.approx(8.0)
    assert np.all(grid[1:] / grid[:-1] <= 1.35)


def test_plan_tries_long_durations_only_at_long_periods():
    finder = TransitFinder()
    plan = finder._plan(span=27.0, num_points=4000)
    shortest_periods = plan[0][0]
    assert np.all(plan[0][1] <= 0.15 * shortest_periods[0])       # max_duty_cycle
    assert plan[-1][1].max() == pytest.approx(8 / 24)               # 8 h at the longest
    assert plan[-1][0][-1] == pytest.approx(13.5)                   # span / (3 - 1)


def test_long_spans_get_a_coarser_grid_within_the_budget():
    finder = TransitFinder(max_evaluations=2e7)
    plan = finder._plan(span=200.0, num_points=5000)
    periods = sum(len(chunk) for chunk, _ in plan)
    full = len(period_grid(200.0, 0.3, 30.0, 1 / 24, oversample=3))
    assert periods < full / 5


# -- one search --------------------------------------------------------------------------------
def test_search_measures_a_known_transit():
    rng = np.random.default_rng(11)
    times = signal_times(cadence_minutes=2.0)
    period, epoch, duration, depth = 3.853, times[0] + 0.71, 0.11, 0.002
    signal = transit_model(times, period, epoch, duration, depth)
    frame = sector_lightcurve(rng, noise_ppm=1000, signal=signal)
    candidate = TransitFinder().search(frame["mjd"].to_numpy(), frame["flux"].to_numpy())
    assert candidate.period == pytest.approx(period, rel=5e-4)
    assert candidate.epoch == pytest.approx(epoch, abs=0.01)
    assert candidate.duration == pytest.approx(duration, rel=0.2)
    # the 1-day trend takes about a tenth of a shallow transit's depth with it (the
    # transits are a tenth of each window) and adds its own noise on the transit's
    # time scale, which the S/N counts: together they cost 10-20% of the S/N
    assert candidate.depth == pytest.approx(depth * 0.92, rel=0.06)
    assert candidate.num_transits == 7
    expected_snr = depth / 1e-3 * np.sqrt(duration / (2 / 1440) * 7)
    assert 0.75 * expected_snr < candidate.snr < expected_snr
    assert candidate.snr_white == pytest.approx(expected_snr * 0.92, rel=0.1)
    assert candidate.sde > 8  # pure noise: below 7.6 in 100 of 100 sectors
    assert candidate.passes(TransitFinder().pars)


@pytest.mark.parametrize("period, duration", [(0.7, 0.1), (0.62, 0.09), (1.3, 0.1)])
def test_short_periods_near_the_duty_cycle_limit_are_not_doubled(period, duration):
    # 14% of the period in transit: the coarse search tries no box that long at these
    # periods, and twice the period (every other transit, a full box) scored higher.
    rng = np.random.default_rng(4)
    times = signal_times(cadence_minutes=CADENCE)
    signal = transit_model(times, period, times[0] + 0.3, duration, 0.005)
    frame = _frame(rng, mag=10, noise_ppm=1000, red_ppm=200, variability_ppm=0, signal=signal)
    finder = TransitFinder()
    candidate = finder.search(frame["mjd"].to_numpy(), frame["flux"].to_numpy())
    assert candidate.period == pytest.approx(period, rel=1e-3)
    assert candidate.depth == pytest.approx(0.005, rel=0.1)
    assert candidate.passes(finder.pars)


@pytest.mark.parametrize("seed, period, amplitude", [(4, 0.43, 0.004), (6, 0.35, 0.002),
                                                      (7, 0.9, 0.003)])
def test_a_spotted_stars_candidate_keeps_the_duty_cycle_limit(seed, period, amplitude):
    # A smooth modulation fits a box as long as the search allows; the refinement used to
    # stretch it past the coarse search's limit (1.8 h at 0.35 d, 21% of the orbit; a real
    # flare star's 7.9 h at 0.43 d), where no transit lasts.
    rng = np.random.default_rng(seed)
    times = signal_times(cadence_minutes=CADENCE)
    angle = 2 * np.pi * times / period
    signal = 1 + amplitude * (np.sin(angle) + 0.3 * np.sin(2 * angle + 1))
    frame = _frame(rng, mag=10, noise_ppm=1000, red_ppm=200, variability_ppm=0, signal=signal)
    finder = TransitFinder()
    candidate = finder.search(frame["mjd"].to_numpy(), frame["flux"].to_numpy())
    assert candidate.period == pytest.approx(period, rel=2e-3)
    assert 0.1 < candidate.duty_cycle <= finder.pars.max_duty_cycle * (1 + 2e-3)
    assert candidate.duty_cycle == candidate.duration / candidate.period


def test_find_source_stitches_sectors_normalised_on_their_own():
    """Two sectors of one star at flux levels 30% apart, with trends: one detection from both."""
    rng = np.random.default_rng(5)
    period, depth = 9.7, 0.003
    frames = []
    for start, level in ((58325.3, 1.0), (58353.3, 1.3)):
        times = signal_times(start=start, cadence_minutes=CADENCE)
        signal = transit_model(times, period, 58327.0, 0.15, depth)
        signal = signal * level * (1 + 0.002 * np.sin((times - start) / 5))  # slow systematics
        frame = _frame(rng, start=start, noise_ppm=800, signal=signal)
        frame["filter"] = "TESS"
        frames.append(frame)
    before = [frame.copy() for frame in frames]
    result = TransitFinder().find_source(frames)
    assert len(result.detections) == 1
    detection = result.detections[0]
    assert detection["lightcurve_index"] == [0, 1]
    assert detection["period"] == pytest.approx(period, rel=1e-3)
    assert detection["extra"]["num_transits"] == 6                  # 3 in each sector
    assert detection["sign"] == -1 and detection["score"] == detection["snr"] > 7
    assert result.properties["transit_period"] == detection["period"]
    for frame, copy in zip(frames, before):
        pd.testing.assert_frame_equal(frame, copy)   # inputs are not modified
    # together the sectors give a stronger detection than either alone
    alone = [TransitFinder().find_source([frame]).properties["transit_snr"] for frame in frames]
    assert detection["snr"] > 1.2 * max(alone)


def test_spline_detrending_finds_the_transit_under_strong_variability():
    rng = np.random.default_rng(8)
    times = signal_times(cadence_minutes=CADENCE)
    signal = transit_model(times, 2.31, times[0] + 0.5, 0.09, 0.003)
    frame = _frame(rng, noise_ppm=1000, variability_ppm=10_000, rotation_period=5.0,
                   signal=signal)
    snr = {}
    for method in ("spline", "window"):
        detections = TransitFinder(detrend=method).find_source([frame]).detections
        assert len(detections) == 1, method
        assert detections[0]["period"] == pytest.approx(2.31, rel=1e-3)
        snr[method] = detections[0]["snr"]
    assert snr["spline"] > snr["window"] > 10   # the spline follows the 5-day spots better
    # without detrending the 1% spot modulation is correlated noise swamping the transits
    undetrended = TransitFinder(detrend="none").find_source([frame])
    assert undetrended.detections == [] and undetrended.properties["transit_snr"] < 5


def test_best_candidate_goes_to_properties_even_below_threshold():
    frame = _frame(np.random.default_rng(3), noise_ppm=1000)
    result = TransitFinder().find_source([frame])
    assert result.detections == []
    assert 0 < result.properties["transit_snr"] < 7
    assert set(result.properties) == {"transit_period", "transit_epoch", "transit_duration",
                                      "transit_depth", "transit_snr", "transit_sde"}


def test_sparse_or_short_data_is_not_searched():
    rng = np.random.default_rng(1)
    sparse = _frame(rng, cadence_minutes=24 * 60.0, days=400.0, gaps=())  # one epoch a day
    assert TransitFinder().find_source([sparse]).properties == {}
    short = _frame(rng, days=0.5, gaps=())       # 3 transits need periods under 0.25 days
    assert TransitFinder().find_source([short]).properties == {}


# -- acceptance: recovery --------------------------------------------------------------------
def _planet(index: int) -> tuple[pd.DataFrame, float, float]:
    """A light curve with one planet of known period and S/N; at least 3 transits with data.

    Periods are log-uniform over 0.5-15 days, S/N uniform over 10-20 (the
    matched-filter S/N of all transits against the white noise), durations
    those of a Sun-like star with impact parameter 0-0.7, transits
    trapezoids with a 10% ingress. The span is one 27-day sector, or up to
    two for the long periods, with a one-day gap every 13.5 days.
    """
    rng = np.random.default_rng(index)
    period = float(np.exp(rng.uniform(np.log(0.5), np.log(15.0))))
    impact = rng.uniform(0, 0.7)
    duration = 13 / 24 * (period / 365.25) ** (1 / 3) * np.sqrt(1 - impact**2)
    days = float(np.clip(3.2 * period + 1, 27, 54))
    gaps = tuple((start + 13.5 - 0.8, start + 13.5) for start in np.arange(0, days, 13.5))
    times = signal_times(days=days, cadence_minutes=CADENCE, gaps=gaps)
    while True:
        epoch = times[0] + rng.uniform(0, period)
        inside = np.abs((times - epoch + period / 2) % period - period / 2) < duration / 2
        if len(np.unique(np.round((times[inside] - epoch) / period))) >= 3:
            break
    snr = rng.uniform(10, 20)
    shape = 1 - transit_model(times, period, epoch, duration, 1.0, ingress=0.1)
    depth = snr * 1e-3 / np.sqrt(np.sum(shape**2))
    frame = sector_lightcurve(rng, days=days, cadence_minutes=CADENCE, gaps=gaps, noise_ppm=1000,
                              flagged_fraction=0, missing_fraction=0, signal=1 - depth * shape)
    return frame, period, snr


@pytest.mark.slow
def test_acceptance_transits_with_snr_10_to_20_are_recovered_within_0_1_percent():
    finder = TransitFinder()
    recovered = []
    for index in range(100):
        frame, period, _ = _planet(index)
        detections = finder.find_source([frame]).detections
        recovered.append(any(abs(d["period"] / period - 1) <= 1e-3 for d in detections))
    # Measured: 99 of these 100; 292 of 300 with seeds 100-399 (59 of 63 with S/N 10-12).
    # The misses are periods 0.1-0.3% off, where the noise makes a slightly wrong period
    # fit better than the true one; at an S/N of exactly 10 (90 of 100 found) one in ten.
    assert sum(recovered) >= 95


# -- acceptance: false alarms ----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("noise", ["white", "red"])
def test_acceptance_pure_noise_gives_at_most_1_percent_false_candidates(noise):
    """100 sectors of noise: white (1000 ppm per 10 min), or red on top of white.

    The red noise (500 ppm, decorrelating over 1.2 hours) is as strong as the
    white noise on a transit's time scale; a search that took only the white
    noise into account would find "transits" in most of these light curves.
    """
    finder = TransitFinder()
    red = {"red_ppm": 500.0, "red_timescale": 0.05} if noise == "red" else {}
    false = 0
    white_snr = []
    for index in range(100):
        frame = _frame(np.random.default_rng(1000 + index), noise_ppm=1000, **red)
        result = finder.find_source([frame])
        false += bool(result.detections)
        white_snr.append(result.properties["transit_snr"])
    assert false <= 1
    assert np.median(white_snr) > 4  # the search did run and report its best candidate


# -- acceptance: a real-format TESS light curve ----------------------------------------------
# pi Mensae c (TIC 261136679), found in TESS sector 1 (Huang et al. 2018, ApJL 868, L39):
PI_MEN_C = {"period": 6.2679, "epoch_btjd": 1325.5036, "duration": 2.95 / 24, "depth": 290e-6}
TESS_DEFAULT_MASK = 17087  # lightkurve's default quality bitmask


def _write_tess_sector_1(path, rng: np.random.Generator) -> None:
    """A TESS-SPOC 2-min light-curve file of sector 1 with pi Men c's transits.

    The layout of ``*_lc.fits`` (/work/shared/reference/archives.md): PRIMARY
    with the target's keywords, LIGHTCURVE with TIME in BTJD (BJD - 2457000),
    PDCSAP_FLUX in e-/s and QUALITY bits, APERTURE. Momentum dumps every 3.125
    days (Desat and ManualExclude bits, no flux), a few cadences with no
    time, scattered-light ramps at the start of each orbit, centroid jitter.
    """
    from astropy.io import fits

    time = np.arange(1325.2934, 1353.1775, 2 / 1440)
    cadence = np.arange(len(time)) + 70_000
    in_gap = (time > 1338.5238) & (time < 1339.6515)
    time, cadence = time[~in_gap], cadence[~in_gap]
    n = len(time)
    quality = np.zeros(n, dtype=np.int32)
    for dump in np.arange(1326.9, 1353.2, 3.125):
        quality[np.abs(time - dump) < 0.01] |= 32 | 128
    quality[rng.random(n) < 0.002] |= 2048  # stray light: flagged but outside the default mask
    level = 10 ** (-0.4 * (5.1 - 20.44))      # Tmag 5.1
    phase = (time - PI_MEN_C["epoch_btjd"] + PI_MEN_C["period"] / 2) % PI_MEN_C["period"]
    transit = transit_model(phase, PI_MEN_C["period"], PI_MEN_C["period"] / 2,
                            PI_MEN_C["duration"], PI_MEN_C["depth"], ingress=0.07,
                            limb_darkening=(0.3, 0.3))
    since_orbit_start = np.where(time < 1339.65, time - 1325.29, time - 1339.65)
    ramp = 1 + 0.0006 * np.exp(-since_orbit_start / 0.4)
    flux = level * transit * ramp * (1 + 250e-6 * rng.standard_normal(n))
    flux[(quality & 128) != 0] = np.nan
    time = time.copy()
    time[rng.random(n) < 0.001] = np.nan
    centroid = 1000.0 + 0.002 * rng.standard_normal((2, n))
    centroid[:, rng.random(n) < 0.002] += 0.05          # pointing excursions
    columns = [
        fits.Column("TIME", "D", unit="BJD - 2457000, days", array=time),
        fits.Column("TIMECORR", "E", unit="d", array=np.zeros(n)),
        fits.Column("CADENCENO", "J", array=cadence),
        fits.Column("SAP_FLUX", "E", unit="e-/s", array=flux * 0.98),
        fits.Column("SAP_FLUX_ERR", "E", unit="e-/s", array=np.full(n, level * 250e-6)),
        fits.Column("SAP_BKG", "E", unit="e-/s", array=np.full(n, 50.0)),
        fits.Column("SAP_BKG_ERR", "E", unit="e-/s", array=np.full(n, 1.0)),
        fits.Column("PDCSAP_FLUX", "E", unit="e-/s", array=flux),
        fits.Column("PDCSAP_FLUX_ERR", "E", unit="e-/s", array=np.full(n, level * 250e-6)),
        fits.Column("QUALITY", "J", array=quality),
        fits.Column("PSF_CENTR1", "D", unit="pixel", array=np.full(n, np.nan)),
        fits.Column("PSF_CENTR2", "D", unit="pixel", array=np.full(n, np.nan)),
        fits.Column("MOM_CENTR1", "D", unit="pixel", array=centroid[0]),
        fits.Column("MOM_CENTR2", "D", unit="pixel", array=centroid[1]),
        fits.Column("POS_CORR1", "E", unit="pixel", array=np.zeros(n)),
        fits.Column("POS_CORR2", "E", unit="pixel", array=np.zeros(n)),
    ]
    primary = fits.PrimaryHDU()
    primary.header.update({"TELESCOP": "TESS", "ORIGIN": "NASA/Ames", "OBJECT": "TIC 261136679",
                           "TICID": 261136679, "SECTOR": 1, "CAMERA": 4, "CCD": 2,
                           "RA_OBJ": 84.2919, "DEC_OBJ": -80.4690, "TESSMAG": 5.105,
                           "CREATOR": "3455 LightCurveExporterPipelineModule"})
    table = fits.BinTableHDU.from_columns(columns, name="LIGHTCURVE")
    table.header.update({"TIMESYS": "TDB", "BJDREFI": 2457000, "BJDREFF": 0.0,
                         "TIMEUNIT": "d", "TIMEDEL": 2 / 1440, "CROWDSAP": 0.99,
                         "FLFRCSAP": 0.92})
    aperture = fits.ImageHDU(np.ones((11, 11), dtype=np.int32), name="APERTURE")
    fits.HDUList([primary, table, aperture]).writeto(path)


def _read_as_reduced(path) -> pd.DataFrame:
    """The file in the standard reduced columns, as the TESS reducer makes them.

    TODO(lead): when the MAST work is merged, read the simulated archive's
    FITS files through the TESS observatory's reducer instead of this stand-in.
    """
    from astropy.io import fits

    with fits.open(path) as hdus:
        header, data = hdus["LIGHTCURVE"].header, hdus["LIGHTCURVE"].data
        table = {name: np.asarray(data[name]).astype(float) for name in
                 ("TIME", "PDCSAP_FLUX", "PDCSAP_FLUX_ERR", "MOM_CENTR1", "MOM_CENTR2")}
        quality = np.asarray(data["QUALITY"]).astype(np.int64)
        reference = header["BJDREFI"] + header["BJDREFF"]
        exptime = header["TIMEDEL"] * 86400
    keep = np.isfinite(table["TIME"])
    flux = table["PDCSAP_FLUX"][keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        mag = 20.44 - 2.5 * np.log10(flux)
    return pd.DataFrame({
        "mjd": table["TIME"][keep] + reference - 2400000.5,
        "flux": flux,
        "flux_err": table["PDCSAP_FLUX_ERR"][keep],
        "mag": mag,
        "mag_err": 2.5 / np.log(10) * table["PDCSAP_FLUX_ERR"][keep] / flux,
        "filter": "TESS",
        "quality": quality[keep],
        "qflag": (quality[keep] & TESS_DEFAULT_MASK) != 0,
        "exptime": exptime,
        "mom_centr1": table["MOM_CENTR1"][keep],
        "mom_centr2": table["MOM_CENTR2"][keep],
    })


def test_acceptance_tess_file_of_pi_men_reports_its_published_period(tmp_path):
    path = tmp_path / "tess2018206045859-s0001-0000000261136679-0120-s_lc.fits"
    _write_tess_sector_1(path, np.random.default_rng(2018))
    frame = _read_as_reduced(path)
    lightcurve = as_lightcurve(frame)
    analysis = Analysis(finders=["peak", "transit"])
    result = analysis.analyze_photometry([lightcurve], {"name": "TIC 261136679", "mag": 5.1})
    transits = [d for d in result.detections if d["finder"] == "transit"]
    assert len(transits) == 1
    found = transits[0]
    assert found["period"] == pytest.approx(PI_MEN_C["period"], rel=1e-3)
    epoch_mjd = PI_MEN_C["epoch_btjd"] + 2457000 - 2400000.5
    assert found["epoch"] == pytest.approx(epoch_mjd, abs=0.02)
    assert found["depth"] == pytest.approx(PI_MEN_C["depth"], rel=0.25)
    assert found["extra"]["num_transits"] == 5 and found["snr"] > 15
    assert found["lightcurve_index"] == 0 and found["filter"] == "TESS"
    assert result.properties["transit_period"] == found["period"]
    counts = result.properties["quality_counts"]
    assert counts["quality_flags"] == frame["qflag"].sum() > 100    # momentum dumps
    assert ((frame["quality"] & 2048) != 0).sum() > 0                # stray light: kept
    assert counts["position_outliers"] > 10                           # the centroid excursions
    assert lightcurve.data["qflag"].sum() == frame["qflag"].sum()  # the table was not changed
