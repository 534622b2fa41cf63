"""Training the transit classifier on the project's own stars: examples, split, fit, evaluation.

Examples are made from the quality-checked light curves of the project's
sources (:func:`make_examples`):

- **positives**: a transit injected by the :class:`Simulator` (periods drawn
  log-uniformly over ``training.period``, expected S/N log-uniformly over
  ``training.snr``),
  kept when the transit search finds it (its best candidate matches the
  injection) with at least the search's S/N threshold, so that the views are
  those the search would give and no positive is noise;
- **negatives**: the same stars as they are, or with an injected flare, a dip
  (one occultation), an eclipsing-binary-like signal (V-shaped eclipses of
  S/N 10 to the transits' highest, so that no S/N is only one class's, and a
  secondary eclipse at phase 0.5, itself above the S/N threshold) or
  rotational modulation (a sinusoid and its harmonic); the search's best
  candidate whatever it is.

Each example is folded on the search's best period, epoch and duration into
the views the analysis scores. Examples are split by source (all of a star's
examples in one part) into training, validation and test sets; the model is
fitted on the first, stopped early on the second, and judged on the third
(:func:`evaluate`), beside the transit search's SDE used as a score.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from skyretriever.analysis.analysis import Analysis
from skyretriever.analysis.classifier import TransitClassifier, model_class
from skyretriever.analysis.finder import FinderResult, good_epochs
from skyretriever.analysis.simulator import Simulator, transit_model
from skyretriever.analysis.transit import TransitFinder

__all__ = ["EXAMPLE_ARRAYS", "EXAMPLE_KINDS", "Evaluation", "Examples", "evaluate", "fit_model",
           "make_examples", "split_by_source"]

EXAMPLE_KINDS = ("transit", "none", "flare", "dip", "eclipsing_binary", "variable")
#: The arrays of :class:`Examples`, one row per example.
EXAMPLE_ARRAYS = ("global_views", "local_views", "labels", "sources", "kinds", "sde", "snr",
                  "injected_snr", "duty_cycle")


@dataclass
class Examples:
    """Views, labels and what each example is (one row per example)."""

    global_views: np.ndarray
    local_views: np.ndarray
    labels: np.ndarray
    sources: np.ndarray
    kinds: np.ndarray
    sde: np.ndarray
    snr: np.ndarray
    injected_snr: np.ndarray
    #: The best candidate's duration over its period.
    duty_cycle: np.ndarray
    #: Examples asked for but not made, by reason.
    dropped: Counter = field(default_factory=Counter)
    #: Seconds spent making the examples.
    seconds: float = 0.0
    #: With ``make_examples(keep_series=True)``: each example's searched series and best
    #: candidate, ``(times, flux, period, epoch, duration)``, to make other views from later.
    series: list | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, keep: np.ndarray) -> Examples:
        """The examples where ``keep`` is true."""
        series = None
        if self.series is not None:
            series = [s for s, k in zip(self.series, np.asarray(keep), strict=True) if k] \
                if np.asarray(keep).dtype == bool else [self.series[i] for i in keep]
        return Examples(self.global_views[keep], self.local_views[keep], self.labels[keep],
                        self.sources[keep], self.kinds[keep], self.sde[keep], self.snr[keep],
                        self.injected_snr[keep], self.duty_cycle[keep], series=series)

    @classmethod
    def joined(cls, parts: Sequence[Examples]) -> Examples:
        """The examples of ``parts`` one after another (series only when every part has them)."""
        if len(parts) == 1:
            return parts[0]
        series = (sum((p.series for p in parts), []) if all(p.series is not None for p in parts)
                  else None)
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts])
                      for name in EXAMPLE_ARRAYS},
                   dropped=sum((p.dropped for p in parts), Counter()),
                   seconds=sum(p.seconds for p in parts), series=series)

    def numbers(self, names: Sequence[str]) -> np.ndarray | None:
        """The candidates' numbers a model takes (of ``CANDIDATE_NUMBERS``), one row each.

        None when ``names`` is empty.
        """
        if not names:
            return None
        return np.column_stack([getattr(self, name) for name in names]).astype(float)

    def scores(self, model: TransitClassifier) -> np.ndarray:
        """``model``'s scores of these examples."""
        return model.scores(self.global_views, self.local_views,
                            self.numbers(model.candidate_numbers))

    def summary(self) -> dict[str, Any]:
        """Counts by kind, label and source, and what was dropped."""
        return {
            "examples": len(self),
            "positives": int(self.labels.sum()),
            "negatives": int(len(self) - self.labels.sum()),
            "sources": len(set(self.sources.tolist())),
            "by_kind": dict(sorted(Counter(self.kinds.tolist()).items())),
            "dropped": dict(sorted(self.dropped.items())),
            "seconds": round(self.seconds, 1),
        }


def _good_times(frame: pd.DataFrame) -> np.ndarray:
    """The good epochs' times, sorted (the order the simulator's models follow)."""
    return np.sort(frame["mjd"].to_numpy(dtype=float)[good_epochs(frame)], kind="stable")


def _transit_finder(analysis: Analysis) -> TransitFinder:
    for finder in analysis.finders:
        if isinstance(finder, TransitFinder):
            return finder
    return TransitFinder()


def _simulators(analysis: Analysis, span: float) -> dict[str, Simulator]:
    pars = analysis.pars.classifier.training
    finder = _transit_finder(analysis)
    # the search looks no further than span / (min_transits - 1)
    longest = min(pars.period[1], span / max(finder.pars.min_transits - 1, 1))
    period = {"kind": "loguniform", "low": min(pars.period[0], 0.9 * longest), "high": longest}
    return {
        # transits log-uniform in S/N, as real ones are spread (7 to hundreds), and up to the
        # binaries' S/N: with transits of 7-20 against binaries of 10-60 the S/N alone told
        # them apart, and every real hot Jupiter (S/N 200-430: WASP-4, K2-140, K2-32)
        # scored 0.01-0.06, as a binary would
        "transit": Simulator(events={"transit": 1.0}, transit={"period": period, "snr": {
            "kind": "loguniform", "low": pars.snr[0], "high": pars.snr[1]}}),
        # binaries from S/N 10 (a secondary at least 70% as deep as the primary when it must
        # reach S/N 7: below, a binary is a transit at half its period) to the transits' top
        "eclipsing_binary": Simulator(events={"transit": 1.0},
                                      transit={"period": period,
                                               "snr": [min(10.0, pars.snr[1]), pars.snr[1]],
                                               "impact_parameter": [0.0, 0.9]}),
        "flare": Simulator(events={"flare": 1.0}),
        "dip": Simulator(events={"dip": 1.0}),
    }


def _eclipsing_binary(frames: Sequence[pd.DataFrame], simulator: Simulator,
                      rng: np.random.Generator, detectable: float = 7.0
                      ) -> list[pd.DataFrame] | None:
    """Copies of ``frames`` with V-shaped primary eclipses and a shallower secondary.

    The secondary's depth is 10% to 90% of the primary's, and enough for an
    S/N of at least ``detectable``: a binary whose secondary is lost in the
    noise is, in its light curve, a transit, and would be a wrong label.
    """
    event = simulator.draw(frames, rng)
    if event is None:
        return None
    p = event.parameters
    ratio = rng.uniform(min(max(0.1, detectable / max(event.snr, 1e-9)), 0.9), 0.9)
    for index in event.models:
        times = _good_times(frames[index])
        primary = transit_model(times, p["period"], p["epoch"], p["duration"], p["depth"],
                                ingress=0.5)
        secondary = transit_model(times, p["period"], p["epoch"] + 0.5 * p["period"],
                                  p["duration"], ratio * p["depth"], ingress=0.5)
        event.models[index] = primary * secondary
    return simulator.inject(frames, event)


def _variable(frames: Sequence[pd.DataFrame], simulator: Simulator,
              rng: np.random.Generator) -> list[pd.DataFrame] | None:
    """Copies of ``frames`` with rotational modulation: a sinusoid and its first harmonic.

    Periods of 0.3 to 10 days, amplitudes of 0.5 to 30 times the scatter of
    the light curve (at most 30%): what a spotted star leaves after detrending (a smooth
    dip once a period), the false positive the search finds most in real
    stars (altaipony's K2 and Kepler flare stars).
    """
    event = simulator.draw(frames, rng)      # for the light curves and epochs it covers
    if event is None:
        return None
    period = float(np.exp(rng.uniform(np.log(0.3), np.log(10.0))))
    amplitude = float(np.exp(rng.uniform(np.log(0.5), np.log(30.0))))
    harmonic, phases = rng.uniform(0.0, 0.5), rng.uniform(0, 2 * np.pi, 2)
    for index in event.models:
        times = _good_times(frames[index])
        flux = frames[index]["flux"].to_numpy(dtype=float)[good_epochs(frames[index])]
        scatter = float(np.nanstd(np.diff(flux)) / np.sqrt(2) / np.nanmedian(flux))
        angle = 2 * np.pi * times / period
        strength = min(amplitude * scatter, 0.3)     # the flux stays positive
        event.models[index] = 1 + strength * (
            np.sin(angle + phases[0]) + harmonic * np.sin(2 * angle + phases[1]))
    return simulator.inject(frames, event)


def make_examples(analysis: Analysis, stars: Mapping[str, Sequence[pd.DataFrame]],
                  number: int, seed: int = 0,
                  progress: Callable[[int, str], None] | None = None,
                  keep_series: bool = False, first: int = 0) -> Examples:
    """``number`` examples from the quality-checked light curves of ``stars`` (name: tables).

    Each example picks a star and a kind (a transit with probability
    ``training.positive_fraction``, else a negative kind by ``training.negatives``),
    injects it, runs the analysis' transit search and folds the best
    candidate into views. An example that cannot be made (no candidate, an
    injected transit the search missed, a light curve too short for the
    views) is dropped and counted in ``dropped``. ``progress(1, outcome)`` is
    called after each. A star as it is is searched once (the search is
    deterministic), so its examples cost nothing after the first. With
    ``keep_series`` each example's searched series and candidate are kept in
    ``series`` (views of other kinds or sizes can then be made without searching again).

    Each example draws from its own generator (``seed`` and its index), so
    the examples ``first`` to ``first + number - 1`` made apart (``first``)
    and joined (:meth:`Examples.joined`) are those made at once: chunks can
    be made in other processes (:func:`keep_example_input`, :func:`make_example_chunk`).
    """
    pars = analysis.pars.classifier.training
    finder = _transit_finder(analysis)
    classifier = analysis.classifier
    names = sorted(stars)
    if not names:
        raise ValueError("no light curves to make examples from (run the project first)")
    negatives = [kind for kind, weight in pars.negatives.items() if weight > 0]
    unknown = [kind for kind in pars.negatives if kind not in EXAMPLE_KINDS]
    if unknown or not negatives:
        raise ValueError(f"analysis.classifier.training.negatives: use some of "
                         f"{', '.join(EXAMPLE_KINDS[1:])} with positive weights")
    weights = np.array([pars.negatives[kind] for kind in negatives], dtype=float)
    spans = {}
    for name in names:
        times = [_good_times(frame) for frame in stars[name]]
        times = [t for t in times if len(t)]
        spans[name] = (max(t[-1] for t in times) - min(t[0] for t in times)) if times else 0.0
    simulators: dict[str, dict[str, Simulator]] = {}
    as_they_are: dict[str, FinderResult] = {}
    rows: list[tuple] = []
    dropped: Counter = Counter()
    begin = time.perf_counter()
    for number_made in range(first, first + number):
        rng = np.random.default_rng([seed, number_made])
        name = names[int(rng.integers(len(names)))]
        frames = list(stars[name])
        if rng.random() < pars.positive_fraction:
            kind = "transit"
        else:
            kind = negatives[int(rng.choice(len(negatives), p=weights / weights.sum()))]
        if name not in simulators:
            simulators[name] = _simulators(analysis, spans[name])
        event = None
        if kind == "none":
            injected = frames
        elif kind == "variable":
            injected = _variable(frames, simulators[name]["transit"], rng)
        elif kind == "eclipsing_binary":
            injected = _eclipsing_binary(frames, simulators[name][kind], rng,
                                         finder.pars.snr_threshold)
        else:
            event = simulators[name][kind].draw(frames, rng)
            injected = None if event is None else simulators[name][kind].inject(frames, event)
        if kind == "none":
            if name not in as_they_are:
                as_they_are[name] = finder.find_source(frames)
            found = as_they_are[name]
        else:
            found = None if injected is None else finder.find_source(injected)
        outcome = _example(found, kind, event, classifier, simulators[name], name, rows,
                           finder.pars.snr_threshold, keep_series)
        if outcome != "made":
            dropped[f"{kind}: {outcome}"] += 1
        if progress is not None:
            progress(1, outcome)
    if not rows:
        return Examples(np.zeros((0, classifier.pars.global_bins), np.float32),
                        np.zeros((0, classifier.pars.local_bins
                                  * len(classifier.pars.local_kinds)), np.float32),
                        *(np.zeros(0) for _ in range(7)), dropped=dropped,
                        seconds=time.perf_counter() - begin)
    columns = list(zip(*rows))
    return Examples(
        global_views=np.stack(columns[0]), local_views=np.stack(columns[1]),
        labels=np.array(columns[2], dtype=int), sources=np.array(columns[3]),
        kinds=np.array(columns[4]), sde=np.array(columns[5], dtype=float),
        snr=np.array(columns[6], dtype=float), injected_snr=np.array(columns[7], dtype=float),
        duty_cycle=np.array(columns[8], dtype=float), dropped=dropped,
        seconds=time.perf_counter() - begin, series=list(columns[9]) if keep_series else None,
    )


#: What a worker process makes examples from (set by :func:`keep_example_input`).
_EXAMPLE_INPUT: dict[str, Any] = {}


def keep_example_input(analysis: Analysis, stars: Mapping[str, Sequence[pd.DataFrame]],
                       seed: int, keep_series: bool = False) -> None:
    """Keep, in this process, what :func:`make_example_chunk` makes examples from."""
    _EXAMPLE_INPUT.clear()
    _EXAMPLE_INPUT.update(analysis=analysis, stars=stars, seed=seed, keep_series=keep_series)


def make_example_chunk(first: int, number: int) -> Examples:
    """Examples ``first`` to ``first + number - 1`` of what :func:`keep_example_input` kept."""
    if not _EXAMPLE_INPUT:
        raise RuntimeError("keep_example_input was not called in this process")
    return make_examples(number=number, first=first, **_EXAMPLE_INPUT)


def _example(found: FinderResult | None, kind: str, event: Any, classifier: Any,
             simulators: Mapping[str, Simulator], name: str, rows: list[tuple],
             snr_threshold: float, keep_series: bool = False) -> str:
    """Add the example of one searched light curve to ``rows``; what happened."""
    if found is None:
        return "too few points to inject"
    searches = [s for s in found.searched if s.candidate is not None]
    if not searches:
        return "no transit candidate"
    best = max(searches, key=lambda s: s.candidate.snr)
    candidate = best.candidate
    if kind == "transit" and not simulators["transit"].match(
            event, {"period": candidate.period, "epoch": candidate.epoch,
                    "duration": candidate.duration}):
        return "injected transit not found by the search"
    if kind == "transit" and not candidate.snr >= snr_threshold:
        # found, but weaker than the search reports: in a run it would be noise
        return "injected transit found below the S/N threshold"
    try:
        views = classifier.views(best.times, best.flux, candidate.period, candidate.epoch,
                                 candidate.duration)
    except ValueError as error:
        return str(error).split(":")[0]
    rows.append((views.global_view, views.local_view, int(kind == "transit"), name, kind,
                 candidate.sde, candidate.snr, np.nan if event is None else event.snr,
                 candidate.duty_cycle,
                 # the series only when asked: a project's thousands of them would fill memory
                 (np.asarray(best.times, dtype=float), np.asarray(best.flux, dtype=float),
                  candidate.period, candidate.epoch, candidate.duration) if keep_series else None))
    return "made"


def split_by_source(sources: Iterable[str], fractions: Sequence[float], seed: int = 0
                    ) -> np.ndarray:
    """0 (train), 1 (validation) or 2 (test) for each example, all of a source's in one part.

    The sources are shuffled with ``seed`` and cut by the ``fractions`` of
    sources; each part gets at least one source when there are three or more.

    Examples
    --------
    >>> parts = split_by_source(["a", "a", "b", "c", "d", "d"], [0.5, 0.25, 0.25], seed=1)
    >>> sorted(set(parts.tolist()))
    [0, 1, 2]
    >>> bool(parts[0] == parts[1] and parts[4] == parts[5])
    True
    """
    sources = np.asarray(list(sources))
    names = sorted(set(sources.tolist()))
    order = np.random.default_rng(seed).permutation(len(names))
    shares = np.asarray(fractions, dtype=float) / np.sum(fractions)
    counts = np.round(shares * len(names)).astype(int)
    if len(names) >= 3:
        counts = np.maximum(counts, 1)
    counts[0] = len(names) - counts[1] - counts[2]
    part_of = {}
    for position, index in enumerate(order):
        part_of[names[index]] = 0 if position < counts[0] else (
            1 if position < counts[0] + counts[1] else 2)
    return np.array([part_of[s] for s in sources.tolist()], dtype=int)


def fit_model(model_name: str, examples: Examples, parts: np.ndarray, pars: Any,
              global_bins: int, local_bins: int, load: Any = None,
              local_kinds: Sequence[str] = ("transit",),
              candidate_numbers: Sequence[str] | None = None,
              ) -> tuple[TransitClassifier, dict[str, list[float]], float]:
    """A model fitted on part 0, stopped on part 1; its history and the seconds the fit took.

    ``local_kinds`` are the parts of the examples' local views (the analysis'
    ``classifier.local_kinds``); ``candidate_numbers`` those the model takes
    (its class' ``default_numbers`` when None).
    """
    cls = model_class(model_name, load)
    options = {} if tuple(local_kinds) == ("transit",) else {"local_kinds": tuple(local_kinds)}
    if candidate_numbers is not None:
        options["candidate_numbers"] = tuple(candidate_numbers)
    model = cls(global_bins, local_bins, seed=pars.seed, threads=pars.threads, **options)
    train, valid = parts == 0, parts == 1
    if len(set(examples.labels[train].tolist())) < 2:
        raise ValueError("the training examples need both transits and negatives; make more "
                         "(--examples) or use more sources")
    numbers = examples.numbers(model.candidate_numbers)
    given = {} if numbers is None else {"numbers": numbers[train]}
    validation = ((examples.global_views[valid], examples.local_views[valid],
                   examples.labels[valid], *([] if numbers is None else [numbers[valid]]))
                  if valid.any() else None)
    begin = time.perf_counter()
    history = model.fit(examples.global_views[train], examples.local_views[train],
                        examples.labels[train], validation, pars, **given)
    return model, history, time.perf_counter() - begin


@dataclass
class Evaluation:
    """How a score separates transits from the rest on a test set."""

    auc: float
    auprc: float
    recall_at_99_precision: float
    threshold: float
    confusion: list[list[int]]
    roc: dict[str, list[float]]
    precision_recall: dict[str, list[float]]

    def as_dict(self) -> dict[str, Any]:
        return {"auc": self.auc, "auprc": self.auprc,
                "recall_at_99_precision": self.recall_at_99_precision,
                "threshold": self.threshold, "confusion": self.confusion,
                "roc": self.roc, "precision_recall": self.precision_recall}


def _thinned(values: np.ndarray, most: int = 400) -> list[float]:
    if len(values) > most:
        values = values[np.linspace(0, len(values) - 1, most).astype(int)]
    return [float(v) for v in values]


def evaluate(labels: np.ndarray, scores: np.ndarray, threshold: float) -> Evaluation:
    """ROC and precision-recall curves, AUC, AUPRC, recall at 99% precision, confusion matrix.

    ``confusion`` is ``[[true negatives, false positives], [false negatives,
    true positives]]`` for ``scores >= threshold``.

    Examples
    --------
    >>> result = evaluate(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.7, 0.9]), 0.5)
    >>> result.auc, result.confusion, result.recall_at_99_precision
    (1.0, [[1, 1], [0, 2]], 1.0)
    """
    from sklearn.metrics import (
        average_precision_score,
        confusion_matrix,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    labels = np.asarray(labels, dtype=int)
    scores = np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf)
    scores = np.where(np.isneginf(scores), np.min(scores[np.isfinite(scores)], initial=0) - 1,
                      scores)
    if len(set(labels.tolist())) < 2:
        raise ValueError("the test set needs both transits and negatives to be judged")
    false_rate, true_rate, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    reachable = recall[precision >= 0.99]
    predicted = (scores >= threshold).astype(int)
    return Evaluation(
        auc=float(roc_auc_score(labels, scores)),
        auprc=float(average_precision_score(labels, scores)),
        recall_at_99_precision=float(reachable.max()) if len(reachable) else 0.0,
        threshold=float(threshold),
        confusion=confusion_matrix(labels, predicted, labels=[0, 1]).tolist(),
        roc={"false_positive_rate": _thinned(false_rate), "true_positive_rate": _thinned(true_rate)},
        precision_recall={"precision": _thinned(precision), "recall": _thinned(recall)},
    )
