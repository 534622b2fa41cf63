"""The transit classifier: views, the two models, model files, evaluation, and a run that uses it.

The run goes through the command line on SQLite and PostgreSQL: a run of the
demo observatory, ``skyretriever train`` on its light curves, a run with the
model, and ``--where 'ml_score > ...'`` against the rows themselves.
"""

from __future__ import annotations

import json
import re
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from scipy.stats import binned_statistic

from skyretriever.analysis import Analysis, load_class
from skyretriever.analysis.classifier import (
    ConvolutionalClassifier,
    GradientBoostingClassifier,
    ModelFileError,
    TrainingParameters,
    candidate_numbers,
    load_model,
    model_class,
    save_model,
)
from skyretriever.analysis.training import evaluate, split_by_source
from skyretriever.analysis.views import binned_median, candidate_views, fold
from skyretriever.cli import main
from skyretriever.database import Session
from skyretriever.models import Detection, Lightcurve, Properties, Source
from skyretriever.observatories.demo import VirtualDemoObs
from skyretriever.parameters import ParameterError
from skyretriever.plots import plot_power_spectrum, plot_source_spectra, plot_spectrogram

GLOBAL, LOCAL = 61, 31


def _toy_views(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of box dips (label 1) and of noise with a one-sided spike (label 0)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    global_views = rng.normal(0, 0.25, (count, GLOBAL)).astype(np.float32)
    local_views = rng.normal(0, 0.25, (count, LOCAL)).astype(np.float32)
    local_views[labels == 1, 12:19] -= 1.0
    global_views[labels == 1, 29:32] -= 1.0
    local_views[labels == 0, 3] -= 1.0
    return global_views, local_views, labels


def _toy_numbers(labels: np.ndarray, seed: int) -> np.ndarray:
    """S/N, SDE and duty cycle of toy candidates: higher and shorter for the dips, overlapping."""
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(5, 12, len(labels)) + 3 * labels,
                            rng.uniform(3, 10, len(labels)) + 3 * labels,
                            rng.uniform(0.01, 0.15, len(labels)) / (1 + labels)])


# -- views -------------------------------------------------------------------------------------
def test_binned_median_equals_scipy_binned_statistic_where_bins_have_data():
    rng = np.random.default_rng(5)
    x, y = rng.uniform(-1, 1, 3000), rng.standard_normal(3000)
    ours = binned_median(x, y, -1.0, 1.0, 50)
    theirs = binned_statistic(x, y, "median", bins=50, range=(-1, 1)).statistic
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-11)
    # a global view's case: relative flux, most bins holding one to three points, points
    # outside the range and a NaN left out
    x, y = rng.uniform(-1.1, 1.1, 4000), 1.0 + 1e-3 * rng.standard_normal(4000)
    y[7] = np.nan
    ours = binned_median(x, y, -1.0, 1.0, 2001)
    good = np.isfinite(y)
    theirs = binned_statistic(x[good], y[good], "median", bins=2001, range=(-1, 1)).statistic
    filled = np.isfinite(theirs)
    assert 0.8 < filled.mean() < 1.0
    np.testing.assert_allclose(ours[filled], theirs[filled], rtol=0, atol=1e-14)


def test_binned_median_fills_empty_bins_from_their_neighbours():
    x = np.array([0.05, 0.15, 0.95])          # bins 0, 1 and 9 of ten over [0, 1)
    result = binned_median(x, np.array([1.0, 2.0, 9.0]), 0.0, 1.0, 10)
    # bins 2 to 8 lie on the line from bin 1 (2.0) to bin 9 (9.0)
    np.testing.assert_allclose(result, np.r_[1.0, np.linspace(2.0, 9.0, 9)])


def test_views_of_a_box_transit_are_centred_at_minus_one_and_flat_elsewhere():
    rng = np.random.default_rng(2)
    t = np.arange(0.0, 27.0, 0.005)
    period, epoch, duration = 2.7, 0.9, 0.12
    flux = 1 + 2e-4 * rng.standard_normal(len(t))
    flux[np.abs(fold(t, period, epoch)) < duration / 2] -= 5e-3
    views = candidate_views(t, flux, period, epoch, duration, global_bins=201, local_bins=81)
    local = views.local_view
    # the local view spans +-4 durations: the transit is the middle eighth
    assert float(local.min()) == -1.0
    assert np.all(local[37:44] < -0.8)
    assert np.all(np.abs(local[:30]) < 0.2) and np.all(np.abs(local[-30:]) < 0.2)
    centre = views.global_view[100]
    assert centre < -0.8 and abs(float(np.median(views.global_view))) < 1e-6


def test_views_refuse_a_light_curve_too_short_and_a_candidate_without_a_period():
    t = np.linspace(0, 1, 20)
    with pytest.raises(ValueError, match="too short for the views: 20 points"):
        candidate_views(t, np.ones(20), 0.5, 0.1, 0.05, min_points=100)
    with pytest.raises(ValueError, match="no usable candidate"):
        candidate_views(t, np.ones(20), float("nan"), 0.1, 0.05)


# -- models ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ConvolutionalClassifier, GradientBoostingClassifier])
def test_each_model_learns_to_tell_dips_from_spikes_on_held_out_views(cls):
    train = _toy_views(256, seed=1)
    test = _toy_views(200, seed=2)
    model = cls(GLOBAL, LOCAL, seed=4, candidate_numbers=())     # the views alone
    model.fit(*train, None, TrainingParameters(epochs=12, batch_size=32, max_iterations=60))
    result = evaluate(test[2], model.predict(test[0], test[1]), 0.5)
    assert result.auc > 0.97
    (true_negatives, false_positives), (false_negatives, true_positives) = result.confusion
    assert true_positives + true_negatives >= 180


def test_the_cnn_is_deterministic_with_a_seed_and_changes_with_it():
    global_views, local_views, labels = _toy_views(96, seed=3)
    pars = TrainingParameters(epochs=3, batch_size=16)
    scores = []
    for seed in (7, 7, 8):
        model = ConvolutionalClassifier(GLOBAL, LOCAL, seed=seed, candidate_numbers=())
        model.fit(global_views, local_views, labels, None, pars)
        scores.append(model.predict(global_views[:10], local_views[:10]))
    np.testing.assert_array_equal(scores[0], scores[1])
    assert not np.allclose(scores[0], scores[2])


@pytest.mark.parametrize("networks", [1, 3])
def test_the_cnn_scores_the_mean_of_its_networks_with_batch_normalisation_statistics_learnt(
        networks):
    import torch

    global_views, local_views, labels = _toy_views(96, seed=9)
    numbers = _toy_numbers(labels, seed=9)
    model = ConvolutionalClassifier(GLOBAL, LOCAL, seed=2)
    model.fit(global_views, local_views, labels, None,
              TrainingParameters(epochs=2, batch_size=16, networks=networks), numbers=numbers)
    assert len(model.networks) == networks
    for network in model.networks:      # statistics far from the initial 0 and 1
        for layer in network.modules():
            if isinstance(layer, torch.nn.BatchNorm1d):
                layer.running_mean.uniform_(-1, 1)
                layer.running_var.uniform_(0.3, 3)
    model._steps = None
    inputs = model._inputs(global_views, local_views, numbers)
    with torch.no_grad():
        each = np.array([torch.sigmoid(network(*inputs)).numpy() for network in model.networks])
    scores = model.predict(global_views, local_views, numbers=numbers)
    np.testing.assert_allclose(scores, each.mean(axis=0), rtol=0, atol=1e-6)
    assert np.ptp(scores) > 1e-3     # the scores differ from one example to the next
    if networks > 1:                 # the networks differ, and the score is not the first's
        assert np.abs(each[1] - each[0]).max() > 1e-3
        assert np.abs(scores - each[0]).max() > 1e-4
    np.testing.assert_allclose(model.predict(global_views[:1], local_views[:1],
                                             numbers=numbers[:1]), scores[:1],
                               rtol=0, atol=1e-6)


def test_a_cnn_of_several_networks_is_saved_and_read_back_whole(tmp_path):
    global_views, local_views, labels = _toy_views(64, seed=4)
    numbers = _toy_numbers(labels, seed=4)
    model = ConvolutionalClassifier(GLOBAL, LOCAL, seed=5)
    model.fit(global_views, local_views, labels, None,
              TrainingParameters(epochs=1, batch_size=16, networks=2), numbers=numbers)
    save_model(model, tmp_path / "two.skm", {})
    loaded, info = load_model(tmp_path / "two.skm", GLOBAL, LOCAL)
    assert len(loaded.networks) == 2
    np.testing.assert_allclose(loaded.predict(global_views, local_views, numbers=numbers),
                               model.predict(global_views, local_views, numbers=numbers),
                               rtol=0, atol=1e-7)


def test_the_boosted_trees_score_as_scikit_learn_does_with_missing_values():
    global_views, local_views, labels = _toy_views(500, seed=10)
    numbers = _toy_numbers(labels, seed=10)
    model = GradientBoostingClassifier(GLOBAL, LOCAL, seed=0)
    model.fit(global_views[:440], local_views[:440], labels[:440], None,
              TrainingParameters(max_iterations=80), numbers=numbers[:440])
    assert model._forest is not None
    test_global, test_local = global_views[440:].copy(), local_views[440:].copy()
    test_local[:5, :] = np.nan
    expected = model.estimator.predict_proba(model._features(test_global, test_local,
                                                             numbers[440:]))[:, 1]
    scores = model.predict(test_global, test_local, numbers=numbers[440:])
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)
    assert 0.05 < scores.mean() < 0.95


def test_a_model_refuses_views_of_other_sizes():
    model = GradientBoostingClassifier(GLOBAL, LOCAL)
    with pytest.raises(ValueError, match="views of 60 and 31 bins given to a model of 61 and 31"):
        model.fit(np.zeros((4, 60)), np.zeros((4, 31)), np.array([0, 1, 0, 1]), None,
                  TrainingParameters())


def test_a_model_of_fewer_numbers_is_given_its_own_in_its_order(tmp_path):
    from skyretriever.analysis.transit import TransitCandidate

    global_views, local_views, labels = _toy_views(80, seed=8)
    numbers = _toy_numbers(labels, seed=8)      # snr, sde, duty cycle
    # a file of a model that takes the duty cycle and the S/N, in that order (as one of
    # a model that took only S/N and SDE, before the duty cycle, reads)
    model = GradientBoostingClassifier(GLOBAL, LOCAL, candidate_numbers=("duty_cycle", "snr"))
    model.fit(global_views, local_views, labels, None, TrainingParameters(max_iterations=20),
              numbers=numbers[:, [2, 0]])
    save_model(model, tmp_path / "model.skm", {})
    loaded, _ = load_model(tmp_path / "model.skm", GLOBAL, LOCAL)
    assert loaded.candidate_numbers == ("duty_cycle", "snr")
    candidates = [TransitCandidate(period=2.0, epoch=0.0, duration=duration, depth=1e-3,
                                   depth_err=1e-4, snr=snr, snr_white=snr, sde=9.0,
                                   num_transits=10, num_points=100, time_start=0.0,
                                   time_end=27.0)
                  for duration, snr in ((0.05, 12.0), (0.25, 8.0))]
    given = candidate_numbers(candidates, loaded.candidate_numbers)
    np.testing.assert_allclose(given, [[0.025, 12.0], [0.125, 8.0]])
    np.testing.assert_allclose(loaded.scores(global_views[:2], local_views[:2], given),
                               model.predict(global_views[:2], local_views[:2],
                                             numbers=np.array([[0.025, 12.0], [0.125, 8.0]])))
    with pytest.raises(ValueError, match="3 numbers per candidate given to a model of 2"):
        loaded.scores(global_views[:2], local_views[:2], numbers[:2])


# -- model files -------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ConvolutionalClassifier, GradientBoostingClassifier])
def test_a_model_file_gives_back_the_same_scores_and_its_metadata(tmp_path, cls):
    global_views, local_views, labels = _toy_views(64, seed=6)
    numbers = _toy_numbers(labels, seed=6)
    model = cls(GLOBAL, LOCAL, seed=1)
    model.fit(global_views, local_views, labels, None,
              TrainingParameters(epochs=2, batch_size=16, max_iterations=20), numbers=numbers)
    path = tmp_path / "models" / "model.skm"
    save_model(model, path, {"data": {"examples": 64}})
    loaded, info = load_model(path, GLOBAL, LOCAL)
    assert type(loaded) is cls and info["data"] == {"examples": 64}
    assert info["model"] == cls.name and (info["global_bins"], info["local_bins"]) == (61, 31)
    assert loaded.candidate_numbers == ("snr", "sde", "duty_cycle") == tuple(
        info["candidate_numbers"])
    np.testing.assert_allclose(loaded.predict(global_views, local_views, numbers=numbers),
                               model.predict(global_views, local_views, numbers=numbers),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="also takes the candidates' snr, sde, duty_cycle"):
        loaded.scores(global_views, local_views)
    assert json.loads((tmp_path / "models" / "model.skm.json").read_text())["model"] == cls.name
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.skm", "model.skm.json"]


def test_missing_damaged_and_mismatched_model_files_are_clear_errors(tmp_path):
    global_views, local_views, labels = _toy_views(40, seed=6)
    model = GradientBoostingClassifier(GLOBAL, LOCAL, candidate_numbers=())
    model.fit(global_views, local_views, labels, None, TrainingParameters(max_iterations=5))
    path = tmp_path / "model.skm"
    save_model(model, path, {})
    with pytest.raises(ModelFileError, match=r"no model file at .*nothing\.skm.*skyretriever train"):
        load_model(tmp_path / "nothing.skm")
    with pytest.raises(ModelFileError, match="trained on views of 61 \\(global\\) and 31 "
                                             "\\(local\\) bins.*asks for 2001 and 201"):
        load_model(path, 2001, 201)
    damaged = tmp_path / "damaged.skm"
    damaged.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ModelFileError, match="not a readable skyretriever model file"):
        load_model(damaged, GLOBAL, LOCAL)
    # A CNN of the first file format (another network head) is refused by name, not as damage.
    old = tmp_path / "old_cnn.skm"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.namelist():
            data = source.read(item)
            if item == "model.json":
                data = json.dumps({**json.loads(data), "model": "cnn",
                                   "format_version": 1}).encode()
            target.writestr(item, data)
    with pytest.raises(ModelFileError, match="CNN made by an older skyretriever.*train it again"):
        load_model(old, GLOBAL, LOCAL)


# -- evaluation --------------------------------------------------------------------------------
def test_evaluation_counts_recall_at_99_percent_precision_and_the_confusion_matrix():
    labels = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.65, 0.6, 0.3, 0.2, 0.1])
    result = evaluate(labels, scores, threshold=0.62)
    # the first three are transits; a fourth needs the negative at 0.65 (precision 0.8)
    assert result.recall_at_99_precision == 0.75
    assert result.confusion == [[3, 1], [1, 3]]
    assert result.auc == pytest.approx(15 / 16)


def test_examples_keep_only_transits_the_search_would_report_and_search_a_star_once():
    """Positives the search reports; negatives with rotational modulation; stars searched once."""
    from skyretriever.analysis.synthetic import as_lightcurve, sector_lightcurve
    from skyretriever.analysis.training import make_examples

    analysis = Analysis(finders=["transit"], transit={"max_period": 5.0}, classifier={
        "global_bins": GLOBAL, "local_bins": LOCAL,
        "training": {"snr": [4.0, 9.0], "period": [0.5, 5.0],
                     "negatives": {"none": 1.0, "variable": 0.5}, "positive_fraction": 0.6}})
    rng = np.random.default_rng(4)
    stars = {f"s{i}": [analysis.check_quality(as_lightcurve(sector_lightcurve(
        rng, days=12.0, cadence_minutes=30.0, gaps=(), noise_ppm=800.0)))[0]]
        for i in range(2)}
    made = make_examples(analysis, stars, 24, seed=3)
    transits = made.kinds == "transit"
    threshold = analysis.finders[0].pars.snr_threshold
    assert transits.any() and (made.snr[transits] >= threshold).all()
    # injections of S/N 4-9: some are found weaker than a detection, and are left out
    assert made.dropped["transit: injected transit found below the S/N threshold"] > 0
    # a spotted star's modulation is a negative
    variable = made.kinds == "variable"
    assert variable.any() and (made.labels[variable] == 0).all()
    # a star as it is gives one example, the same each time it is drawn
    for name in stars:
        mine = (made.kinds == "none") & (made.sources == name)
        if mine.sum() > 1:
            assert (made.local_views[mine] == made.local_views[mine][0]).all()


def test_examples_made_in_chunks_on_worker_processes_are_the_examples_made_at_once():
    from skyretriever.analysis.synthetic import as_lightcurve, sector_lightcurve
    from skyretriever.analysis.training import (
        EXAMPLE_ARRAYS,
        Examples,
        keep_example_input,
        make_example_chunk,
        make_examples,
    )
    from skyretriever.execution import run_in_processes

    analysis = Analysis(finders=["transit"], transit={"max_period": 5.0}, classifier={
        "global_bins": GLOBAL, "local_bins": LOCAL,
        "training": {"snr": [5.0, 30.0], "period": [0.5, 5.0]}})
    rng = np.random.default_rng(5)
    stars = {f"s{i}": [analysis.check_quality(as_lightcurve(sector_lightcurve(
        rng, days=12.0, cadence_minutes=30.0, gaps=(), noise_ppm=800.0)))[0]]
        for i in range(3)}
    at_once = make_examples(analysis, stars, 14, seed=7)
    chunks = {}
    for index, chunk in run_in_processes(make_example_chunk, [(0, 6), (6, 5), (11, 3)], 2,
                                         setup=keep_example_input,
                                         setup_args=(analysis, stars, 7)):
        chunks[index] = chunk
    joined = Examples.joined([chunks[index] for index in range(3)])
    assert len(at_once) > 5 and at_once.dropped == joined.dropped
    for name in EXAMPLE_ARRAYS:
        np.testing.assert_array_equal(getattr(joined, name), getattr(at_once, name))
    # a chunk is its own part of the sequence, not its start again
    assert not np.array_equal(chunks[1].local_views, at_once.local_views[:len(chunks[1])])


def test_split_by_source_keeps_each_source_in_one_part_with_the_fractions_of_sources():
    sources = [f"s{i % 20}" for i in range(200)]
    parts = split_by_source(sources, [0.7, 0.15, 0.15], seed=3)
    by_source = {}
    for source, part in zip(sources, parts):
        by_source.setdefault(source, set()).add(int(part))
    assert all(len(found) == 1 for found in by_source.values())
    counts = np.bincount([found.pop() for found in by_source.values()], minlength=3)
    assert counts.tolist() == [14, 3, 3]


# -- the analysis step -------------------------------------------------------------------------
def _demo_frames(analysis: Analysis, name: str, num_points: int = 800) -> list[pd.DataFrame]:
    obs = VirtualDemoObs(num_seasons=1, num_points=num_points, season_length=27.0,
                         filters=["r"], exptime=600, flare_fraction=0, empty_fraction=0)
    row = {"name": name, "ra": 1.0, "dec": 2.0, "mag": 14.0}
    return obs.reduce(obs.download(row))


def test_the_analysis_records_why_a_candidate_was_not_scored_and_goes_on(tmp_path):
    global_views, local_views, labels = _toy_views(40, seed=6)
    model = GradientBoostingClassifier(GLOBAL, LOCAL, candidate_numbers=())
    model.fit(global_views, local_views, labels, None, TrainingParameters(max_iterations=5))
    save_model(model, tmp_path / "model.skm", {})
    classifier = {"enabled": True, "model": "gbt", "model_file": str(tmp_path / "model.skm"),
                  "global_bins": GLOBAL, "local_bins": LOCAL}
    row = {"name": "star", "ra": 1.0, "dec": 2.0, "mag": 14.0}
    scored = Analysis(finders=["transit"], classifier=classifier)
    lightcurves = _demo_frames(scored, "star")
    result = scored.analyze_photometry(lightcurves, row)
    assert 0.0 <= result.properties["ml_score"] <= 1.0
    assert "ml_not_scored" not in (result.properties["extra"] or {})
    assert scored.timings["classifier"] > 0
    short = Analysis(finders=["transit"], classifier={**classifier, "min_points": 5000})
    result = short.analyze_photometry(lightcurves, row)
    assert result.properties["ml_score"] is None
    reason = result.properties["extra"]["ml_not_scored"]
    assert re.fullmatch(r"light curve too short for the views: 7\d\d points, fewer than 5000",
                        reason), reason
    assert result.properties["transit_period"] is not None     # the rest of the analysis ran
    other = Analysis(finders=["transit"], classifier={**classifier, "global_bins": 201})
    with pytest.raises(ParameterError, match="trained on views of 61"):
        other.check_ready()
    result = other.analyze_photometry(lightcurves, row)
    assert result.properties["ml_score"] is None
    assert "trained on views of 61" in result.properties["extra"]["ml_not_scored"]


def test_the_classifier_needs_the_transit_search_and_a_known_model():
    with pytest.raises(ParameterError, match="add 'transit' to analysis.finders"):
        Analysis(finders=["peak"], classifier={"enabled": True, "model_file": "m.skm"})
    with pytest.raises(ParameterError, match="unknown model 'forest'"):
        Analysis(finders=["transit"], classifier={"enabled": True, "model": "forest",
                                                  "model_file": "m.skm"})


# -- spacekit's analyzer views -----------------------------------------------------------------
def test_power_spectrum_peaks_at_the_frequency_of_a_sinusoid_and_the_spectrogram_draws_it(
        tmp_path):
    t = np.arange(0.0, 20.0, 0.02)
    frame = pd.DataFrame({"mjd": t, "flux": 100 * (1 + 0.01 * np.sin(2 * np.pi * 1.5 * t)),
                          "flux_err": np.ones(len(t)), "qflag": np.zeros(len(t), bool)})
    lightcurve = Lightcurve(observatory="demo", filter="r", series_number=1, series_total=1,
                            num_points=len(t), exptime=30.0)
    lightcurve._data = frame
    figure = plot_power_spectrum(lightcurve, filename=tmp_path / "fft.png")
    frequency, power = figure.axes[0].lines[0].get_data()
    assert frequency[np.argmax(power)] == pytest.approx(1.5, abs=0.05)
    figure = plot_spectrogram(lightcurve, filename=tmp_path / "spectrogram.png")
    image = figure.axes[0].images[0].get_array()
    # specgram draws the highest frequency (the Nyquist, 25 / d) in the first row
    frequencies = np.linspace(25, 0, image.shape[0])
    assert frequencies[np.argmax(np.asarray(image).mean(axis=1))] == pytest.approx(1.5, abs=0.6)
    assert (tmp_path / "fft.png").stat().st_size > 1000
    assert (tmp_path / "spectrogram.png").stat().st_size > 1000


# -- a run on the demo observatory, on SQLite and PostgreSQL -----------------------------------
def _config(tmp_path: Path, database_url: str, data_root: Path) -> Path:
    path = tmp_path / "ml.yaml"
    path.write_text(textwrap.dedent(f"""
        project: {{name: ml_test, obs_names: [demo], version_control: false, progress: false}}
        database: {{url: "{database_url}"}}
        data_root: "{data_root}"
        catalog: {{default: test, num_sources: 20}}
        observatories:
          demo: {{num_seasons: 1, num_points: 500, season_length: 20.0, filters: [r],
                  exptime: 600, flare_fraction: 0.1, empty_fraction: 0}}
        analysis:
          finders: [transit]
          transit: {{min_points: 50, max_period: 6.0, bin_minutes: 30}}
          classifier:
            enabled: true
            model: gbt
            model_file: models/ml_test.skm
            global_bins: {GLOBAL}
            local_bins: {LOCAL}
            min_points: 50
            training: {{examples: 60, period: [0.5, 6.0], snr: [10, 60], max_iterations: 40}}
        execution: {{scheduler: serial}}
    """))
    return path


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_run_train_run_and_query_ml_score(tmp_path, database_url, data_root, capsys):
    config = _config(tmp_path, database_url, data_root)
    code, _, err = _run(capsys, "run", config)
    assert code == 0, err
    with Session() as session:
        rows = session.execute(sa.select(Properties.ml_score, Properties.extra)).all()
    assert len(rows) == 20 and all(score is None for score, _ in rows)
    assert all("no model file" in extra["ml_not_scored"] for _, extra in rows)

    code, out, err = _run(capsys, "train", config)
    assert code == 0, err
    model_file = tmp_path / "models" / "ml_test.skm"
    info = json.loads(model_file.with_name("ml_test.skm.json").read_text())
    assert info["data"]["examples"] + sum(info["data"]["dropped"].values()) == 60
    assert info["data"]["sources"] <= 20 and info["data"]["parts"]["test"] > 0
    assert "AUC" in out and f"{info['metrics']['model']['auc']:6.3f}" in out
    for kind in ("roc", "precision_recall", "confusion"):
        assert (tmp_path / "models" / "ml_test.skm_figures" / f"{kind}.png").stat().st_size > 0
    # made in chunks on two worker processes, the examples are those made in one
    local = config.with_name("ml_local.yaml")
    local.write_text(config.read_text().replace("scheduler: serial", "scheduler: local, workers: 2")
                     .replace("models/ml_test.skm", "models/ml_local.skm"))
    code, _, err = _run(capsys, "train", local)
    assert code == 0, err
    local_info = json.loads((tmp_path / "models" / "ml_local.skm.json").read_text())
    assert {**local_info["data"], "seconds": None} == {**info["data"], "seconds": None}
    assert local_info["test_scores"] == info["test_scores"]

    # the model file's hash is part of the configuration: the results must be made again
    code, _, err = _run(capsys, "run", config)
    assert code == 1 and "--redo" in err
    code, _, err = _run(capsys, "run", config, "--redo")
    assert code == 0, err
    with Session() as session:
        scores = dict(session.execute(sa.select(Source.name, Properties.ml_score)
                                      .join(Properties)).all())
        transit_scores = session.scalars(sa.select(Detection.ml_score).where(
            Detection.finder == "transit", Detection.is_simulated.is_(False))).all()
    assert len(scores) == 20 and all(0.0 <= s <= 1.0 for s in scores.values())
    assert all(s is not None and 0.0 <= s <= 1.0 for s in transit_scores)
    distinct = sorted(set(scores.values()))
    # The model tells the sources apart. Fitted on 60 examples, its trees have two leaves
    # each (scikit-learn's 20 examples a leaf at least), and may all split one number at
    # one value: two scores are then all it gives.
    assert len(distinct) > 1, scores
    cut = (distinct[0] + distinct[-1]) / 2
    code, out, _ = _run(capsys, "sources", config, "--where", f"ml_score > {cut}",
                        "--format", "json")
    assert code == 0
    listed = {row["name"]: row["ml_score"] for row in json.loads(out)}
    assert listed == {name: s for name, s in scores.items() if s > cut}
    assert 0 < len(listed) < 20

    # spacekit's analyzer views of a source: from the command line, and in the report
    with Session() as session:
        transit_host = session.scalars(sa.select(Source.name).join(Detection).where(
            Detection.finder == "transit", Detection.is_simulated.is_(False))).first()
        name = transit_host or min(scores)
        source = session.scalars(sa.select(Source).where(Source.name == name)).one()
        figure = plot_source_spectra(source, "power_spectrum", session=session)
        frequency, _ = figure.axes[0].lines[0].get_data()
        data = source.lightcurves[0].data
        times = np.sort(data["mjd"].to_numpy()[~data["qflag"].to_numpy(bool)])
    assert len(figure.axes) == 1                       # one light curve, one panel
    nyquist = 0.5 / np.median(np.diff(times))          # the demo's times are irregular
    assert frequency.max() == pytest.approx(nyquist, rel=0.01)
    code, out, err = _run(capsys, "show", config, name, "--plot", tmp_path / "spectrogram.png",
                          "--plot-kind", "spectrogram")
    assert code == 0, err
    assert "plot saved to" in out and (tmp_path / "spectrogram.png").stat().st_size > 5000
    if transit_host is not None:
        code, out, err = _run(capsys, "report", config)
        assert code == 0, err
        page = Path(out.strip().splitlines()[-1]).parent / "sources" / f"{transit_host}.html"
        text = page.read_text()
        assert 'id="power-spectrum-plot"' in text and 'id="spectrogram-plot"' in text


def test_a_model_of_ones_own_is_named_in_the_config_fitted_saved_and_scored(tmp_path):
    global_views, local_views, labels = _toy_views(120, seed=8)
    path = tmp_path / "logistic.skm"
    name = "extensions.logistic_classifier:LogisticClassifier"
    analysis = Analysis(finders=["transit"], classifier={
        "enabled": True, "model": name, "model_file": str(path),
        "global_bins": GLOBAL, "local_bins": LOCAL})
    cls = model_class(name, load_class)
    model = cls(GLOBAL, LOCAL)
    model.fit(global_views[:80], local_views[:80], labels[:80], None, TrainingParameters())
    save_model(model, path, {})
    analysis.check_ready()
    loaded = analysis.classifier.model()
    assert type(loaded).__name__ == "LogisticClassifier"
    scores = loaded.predict(global_views[80:], local_views[80:])
    assert evaluate(labels[80:], scores, 0.5).auc > 0.97


def test_a_cnn_file_of_format_3_holds_one_network_and_scores_as_before(tmp_path):
    import io

    import torch

    global_views, local_views, labels = _toy_views(64, seed=6)
    numbers = _toy_numbers(labels, seed=6)
    model = ConvolutionalClassifier(GLOBAL, LOCAL, seed=1)
    model.fit(global_views, local_views, labels, None,
              TrainingParameters(epochs=1, batch_size=16, networks=1), numbers=numbers)
    path, old = tmp_path / "model.skm", tmp_path / "old.skm"
    save_model(model, path, {})
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.namelist():
            data = source.read(item)
            if item == "model.json":    # format 3 wrote one network's state dict as it is
                data = json.dumps({**json.loads(data), "format_version": 3}).encode()
            elif item == "weights.bin":
                buffer = io.BytesIO()
                torch.save(model.networks[0].state_dict(), buffer)
                data = buffer.getvalue()
            target.writestr(item, data)
    loaded, info = load_model(old, GLOBAL, LOCAL)
    assert info["format_version"] == 3 and len(loaded.networks) == 1
    np.testing.assert_allclose(loaded.predict(global_views, local_views, numbers=numbers),
                               model.predict(global_views, local_views, numbers=numbers),
                               rtol=0, atol=1e-7)


def test_the_cnn_keeps_the_averaged_weights_it_judged_best_on_the_validation_part():
    import torch

    global_views, local_views, labels = _toy_views(160, seed=12)
    numbers = _toy_numbers(labels, seed=12)
    train, valid = slice(0, 120), slice(120, 160)
    validation = (global_views[valid], local_views[valid], labels[valid], numbers[valid])
    kept = {}
    for decay in (0.0, 0.9):
        model = ConvolutionalClassifier(GLOBAL, LOCAL, seed=4)
        history = model.fit(global_views[train], local_views[train], labels[train], validation,
                            TrainingParameters(epochs=6, batch_size=16, weight_average=decay),
                            numbers=numbers[train])
        scores = model.predict(*validation[:2], numbers=numbers[valid])
        positives = labels[train].sum()
        loss = torch.nn.BCELoss(weight=torch.from_numpy(
            np.where(labels[valid] == 1, (len(labels[train]) - positives) / positives, 1.0)))(
            torch.from_numpy(scores), torch.from_numpy(labels[valid].astype(float)))
        # the model kept is the one whose validation loss was the lowest of its history
        assert float(loss) == pytest.approx(min(history["validation_loss"]), rel=1e-4)
        kept[decay] = scores
    assert np.abs(kept[0.0] - kept[0.9]).max() > 1e-3
