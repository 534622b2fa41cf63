"""The local view's other parts (secondary eclipse, odd and even transits) and their model files."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from skyretriever.analysis import Analysis
from skyretriever.analysis.classifier import (
    ConvolutionalClassifier,
    GradientBoostingClassifier,
    ModelFileError,
    TrainingParameters,
    load_model,
    save_model,
)
from skyretriever.analysis.views import candidate_views, fold
from skyretriever.parameters import ParameterError

ALL = ("transit", "secondary", "odd", "even")
GLOBAL, LOCAL = 61, 31


def _light_curve(depths: tuple[float, float], secondary: float, seed: int = 2):
    """27 days at 7 minutes: box eclipses of ``depths`` alternating by cycle, and a secondary."""
    rng = np.random.default_rng(seed)
    t = np.arange(0.0, 27.0, 0.005)
    period, epoch, duration = 2.7, 0.9, 0.12
    flux = 1 + 1e-4 * rng.standard_normal(len(t))
    cycle = np.floor((t - epoch) / period + 0.5).astype(int)
    primary = np.abs(fold(t, period, epoch)) < duration / 2
    flux[primary & (cycle % 2 == 0)] -= depths[0]
    flux[primary & (cycle % 2 == 1)] -= depths[1]
    flux[np.abs(fold(t, period, epoch + period / 2)) < duration / 2] -= secondary
    return t, flux, period, epoch, duration


def _parts(views, bins: int = 81) -> dict[str, np.ndarray]:
    return dict(zip(ALL, views.local_view.reshape(len(ALL), bins), strict=True))


def test_a_binarys_secondary_part_shows_the_secondarys_depth_in_the_primarys_depths():
    views = candidate_views(*_light_curve((4e-3, 4e-3), secondary=1.2e-3), global_bins=201,
                            local_bins=81, local_kinds=ALL)
    assert views.local_view.shape == (4 * 81,) and views.global_view.shape == (201,)
    parts = _parts(views)
    # the window of +-4 durations: the eclipse is the middle eighth
    assert float(parts["transit"].min()) == -1.0
    assert np.median(parts["secondary"][37:44]) == pytest.approx(-0.3, abs=0.03)
    assert np.all(np.abs(parts["secondary"][:30]) < 0.1)
    # equal eclipses: odd and even as deep as the transit part
    assert np.median(parts["odd"][37:44]) == pytest.approx(-1.0, abs=0.05)
    assert np.median(parts["even"][37:44]) == pytest.approx(-1.0, abs=0.05)
    # the transit part is the view of the transit part alone
    alone = candidate_views(*_light_curve((4e-3, 4e-3), secondary=1.2e-3), global_bins=201,
                            local_bins=81)
    np.testing.assert_array_equal(alone.local_view, parts["transit"])
    np.testing.assert_array_equal(alone.global_view, views.global_view)


def test_a_planet_has_no_secondary_and_odd_and_even_transits_of_one_depth():
    parts = _parts(candidate_views(*_light_curve((3e-3, 3e-3), secondary=0.0), global_bins=201,
                                   local_bins=81, local_kinds=ALL))
    assert np.all(np.abs(parts["secondary"]) < 0.15)
    assert np.median(parts["odd"][37:44]) == pytest.approx(np.median(parts["even"][37:44]),
                                                           abs=0.05)


def test_a_binary_found_at_half_its_period_shows_two_depths_in_odd_and_even():
    # eclipses of 4 and 2 ppt alternating: the epoch's cycle (0) is an even one
    parts = _parts(candidate_views(*_light_curve((4e-3, 2e-3), secondary=0.0), global_bins=201,
                                   local_bins=81, local_kinds=ALL))
    assert np.median(parts["even"][37:44]) == pytest.approx(-4 / 3, abs=0.1)
    assert np.median(parts["odd"][37:44]) == pytest.approx(-2 / 3, abs=0.1)
    # the transit part's depth is the median of both, normalised to -1
    assert float(parts["transit"].min()) == -1.0


def test_local_parts_are_checked_in_the_views_the_models_and_the_config():
    t, flux, period, epoch, duration = _light_curve((4e-3, 4e-3), secondary=0.0)
    for kinds in (("secondary",), ("transit", "odd", "odd"), ("transit", "tertiary")):
        with pytest.raises(ValueError, match="give 'transit' first"):
            candidate_views(t, flux, period, epoch, duration, local_kinds=kinds)
    with pytest.raises(ParameterError, match="analysis.classifier.local_kinds: .*"
                                             "give 'transit' first"):
        Analysis(finders=["transit"], classifier={"local_kinds": ["odd", "transit"]})
    model = GradientBoostingClassifier(GLOBAL, LOCAL, local_kinds=("transit", "secondary"))
    with pytest.raises(ValueError, match=r"views of 61 and 31 bins given to a model of 61 and "
                                         r"62 \(31 for each local part: transit, secondary\)"):
        model.fit(np.zeros((4, GLOBAL)), np.zeros((4, LOCAL)), np.array([0, 1, 0, 1]), None,
                  TrainingParameters())


def _toy(count: int, parts: int, seed: int):
    """Box dips (label 1) and dips with a secondary (label 0), told apart by the secondary only."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 2
    global_views = rng.normal(0, 0.1, (count, GLOBAL)).astype(np.float32)
    local = rng.normal(0, 0.1, (count, parts, LOCAL)).astype(np.float32)
    local[:, 0, 12:19] -= 1.0
    global_views[:, 29:32] -= 1.0
    if parts > 1:
        local[labels == 0, 1, 12:19] -= 0.6
    return global_views, local.reshape(count, -1), labels


@pytest.mark.parametrize("cls", [ConvolutionalClassifier, GradientBoostingClassifier])
def test_a_model_learns_from_the_secondary_part_and_its_file_keeps_the_parts(tmp_path, cls):
    kinds = ("transit", "secondary")
    global_views, local_views, labels = _toy(400, 2, seed=1)
    numbers = np.ones((400, 3))      # S/N, SDE and duty cycle alike
    model = cls(GLOBAL, LOCAL, seed=1, local_kinds=kinds)
    model.fit(global_views[:300], local_views[:300], labels[:300], None,
              TrainingParameters(epochs=20, batch_size=32, max_iterations=50),
              numbers=numbers[:300])
    scores = model.scores(global_views[300:], local_views[300:], numbers[300:])
    # the transit parts are alike: only the secondary part tells the labels apart
    assert np.mean((scores >= 0.5) == (labels[300:] == 1)) >= 0.95
    path = tmp_path / "model.skm"
    save_model(model, path, {})
    loaded, info = load_model(path, GLOBAL, LOCAL, local_kinds=kinds)
    assert info["local_kinds"] == list(kinds) and info["format_version"] == 4
    assert loaded.local_kinds == kinds
    np.testing.assert_allclose(loaded.scores(global_views[300:], local_views[300:],
                                             numbers[300:]), scores, rtol=1e-6)
    with pytest.raises(ModelFileError, match="trained on the local view parts transit, "
                                             "secondary, and analysis.classifier.local_kinds "
                                             "asks for transit, odd, even"):
        load_model(path, GLOBAL, LOCAL, local_kinds=("transit", "odd", "even"))


def test_a_model_file_of_format_2_is_a_model_of_the_transit_part_alone(tmp_path):
    global_views, local_views, labels = _toy(60, 1, seed=2)
    model = GradientBoostingClassifier(GLOBAL, LOCAL, candidate_numbers=())
    model.fit(global_views, local_views, labels, None, TrainingParameters(max_iterations=5))
    path, old = tmp_path / "model.skm", tmp_path / "old.skm"
    save_model(model, path, {})
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.namelist():
            data = source.read(item)
            if item == "model.json":
                info = json.loads(data)
                del info["local_kinds"]
                data = json.dumps({**info, "format_version": 2}).encode()
            target.writestr(item, data)
    loaded, _ = load_model(old, GLOBAL, LOCAL, local_kinds=("transit",))
    assert loaded.local_kinds == ("transit",)
    np.testing.assert_allclose(loaded.scores(global_views, local_views),
                               model.scores(global_views, local_views))
    with pytest.raises(ModelFileError, match=r"parts transit \(model file format 2, made "
                                             r"before local views had other parts\).*asks for "
                                             r"transit, secondary, odd, even.*train again"):
        load_model(old, GLOBAL, LOCAL, local_kinds=ALL)
    # the analysis' classifier step reads the file with its config's parts
    analysis = Analysis(finders=["transit"], classifier={
        "enabled": True, "model": "gbt", "model_file": str(old), "global_bins": GLOBAL,
        "local_bins": LOCAL, "local_kinds": list(ALL)})
    with pytest.raises(ModelFileError, match="made before local views had other parts"):
        analysis.classifier.model()


def test_odd_transits_in_no_light_curve_give_a_flat_odd_part():
    # one transit in the light curve (period longer than the data): the odd part has no point
    t, flux, _, epoch, duration = _light_curve((4e-3, 4e-3), secondary=0.0)
    keep = t < 2.0
    parts = _parts(candidate_views(t[keep], flux[keep], 2.7, epoch, duration, global_bins=201,
                                   local_bins=81, local_kinds=ALL))
    assert np.all(parts["odd"] == 0.0)
    assert np.median(parts["even"][37:44]) == pytest.approx(-1.0, abs=0.05)


def test_examples_keep_their_series_and_the_views_made_from_them_are_the_examples_views():
    from skyretriever.analysis.synthetic import as_lightcurve, sector_lightcurve
    from skyretriever.analysis.training import make_examples

    analysis = Analysis(finders=["transit"], transit={"max_period": 5.0}, classifier={
        "global_bins": GLOBAL, "local_bins": LOCAL, "local_kinds": list(ALL),
        "training": {"snr": [10.0, 30.0], "period": [0.5, 5.0]}})
    rng = np.random.default_rng(4)
    stars = {f"s{i}": [analysis.check_quality(as_lightcurve(sector_lightcurve(
        rng, days=12.0, cadence_minutes=30.0, gaps=(), noise_ppm=800.0)))[0]]
        for i in range(2)}
    made = make_examples(analysis, stars, 8, seed=3, keep_series=True)
    assert len(made) > 0 and len(made.series) == len(made)
    assert made.local_views.shape == (len(made), 4 * LOCAL)
    for index, series in enumerate(made.series):
        views = analysis.classifier.views(*series)
        np.testing.assert_allclose(views.local_view, made.local_views[index], atol=1e-6)
        np.testing.assert_allclose(views.global_view, made.global_views[index], atol=1e-6)
        period, _, duration = series[2:]
        assert made.duty_cycle[index] == duration / period      # the candidate's, a number
    assert np.all((made.duty_cycle > 0) & (made.duty_cycle <= 0.15 * (1 + 2e-3)))
    assert made.numbers(("snr", "duty_cycle")).tolist() == [
        [snr, duty] for snr, duty in zip(made.snr.tolist(), made.duty_cycle.tolist())]
    assert make_examples(analysis, stars, 2, seed=3).series is None
