"""The transit classifier: models that score a candidate's views, and their model files.

A model gets the AstroNet-style views of a transit candidate
(:mod:`skyretriever.analysis.views`) and returns the probability that it is a
transit (``ml_score``, 0 to 1). Two models come with the package:

- ``cnn``: a 1-D convolutional network of spacekit's kind on PyTorch (CPU):
  one column of convolution, max pooling and batch normalisation blocks per
  view, each view given with a smoothed copy as a second channel (spacekit's
  uniform filter), then dropout and dense layers to one sigmoid output.
  Training is deterministic with a seed. ``training.networks`` fits several
  from successive seeds; the model then scores their mean.
- ``gbt``: scikit-learn's histogram gradient boosting on the same views, each
  averaged to fewer bins, and a few numbers read off them (the depth of the
  secondary at phase 0.5, the scatter out of transit).

Another model is a subclass of :class:`TransitClassifier` named in the config
as ``module:Class`` (see the README's classifier section).

Both may take more parts of the local view (``local_kinds``: the secondary
eclipse's window, the odd and the even transits; see
:mod:`skyretriever.analysis.views`): the CNN as more channels of its local
column, the gradient boosting as more averaged bins and depths.

A model file is a ZIP archive holding ``model.json`` (format version, model,
view sizes and local view parts, training parameters, data summary, metrics) and ``weights.bin``
(a CNN's: ``{"networks": [state dict, ...]}`` from format 4 on, one state dict before);
it is written in one step (:func:`save_model`), and the same JSON is written
beside it as ``<model file>.json`` for people to read. Its SHA-256 enters the
config hash of the projects that use it.
"""

from __future__ import annotations

import functools
import io
import json
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from skyretriever import storage
from skyretriever._version import __version__
from skyretriever.analysis.transit import StitchedSearch
from skyretriever.analysis.views import CandidateViews, candidate_views, check_local_kinds
from skyretriever.parameters import ParameterError, Parameters, parameter

__all__ = [
    "CANDIDATE_NUMBERS",
    "MODEL_FILE_FORMAT",
    "MODELS",
    "Classifier",
    "ClassifierParameters",
    "ConvolutionalClassifier",
    "GradientBoostingClassifier",
    "ModelFileError",
    "TrainingParameters",
    "TransitClassifier",
    "candidate_numbers",
    "load_model",
    "model_class",
    "read_model_metadata",
    "save_model",
]

MODEL_FILE_FORMAT = "skyretriever-transit-classifier"
#: From format 4 a CNN's ``weights.bin`` holds a list of networks (``{"networks": [...]}``).
MODEL_FILE_VERSION = 4
#: Files before format 3 hold models of the local view's transit part alone.
_FIRST_KINDS_VERSION = 3
#: Files of format 1 hold a CNN of another head (views only): trained again, not read.
_FIRST_CNN_VERSION = 2
#: The CNN's defaults: networks fitted (their mean is the score), and the decay of the
#: moving average of the weights (on 9,283 examples, AUC on S/N 7-20 of 0.98999-0.9910
#: in five fits with it, 0.9893-0.9909 in three without).
NETWORKS_DEFAULT = 1
WEIGHT_AVERAGE_DEFAULT = 0.995
#: Numbers of a candidate a model may take beside its views: the transit search's S/N
#: and SDE (what AstroNet's threshold-crossing events had passed before it saw them),
#: and its duty cycle (duration over period: a transit lasts a small part of its orbit;
#: a spotted star's modulation gives boxes at the search's limit, 14-15% of the period).
CANDIDATE_NUMBERS = ("snr", "sde", "duty_cycle")
#: How each number is put on the network's scale: ``(log(max(value, floor)) - centre) / spread``.
#: S/N and SDE are centred on 10 and spread over decades; duty cycles run from about 0.005
#: (a long period) to the search's limit of 0.15.
_NUMBER_SCALES = {"snr": (0.5, 2.3, 0.5), "sde": (0.5, 2.3, 0.5),
                  "duty_cycle": (1e-4, -3.5, 1.0)}


def candidate_numbers(candidates: Sequence[Any], names: Sequence[str]) -> np.ndarray:
    """The ``names`` attributes of each candidate, one row each (NaN where missing)."""
    return np.array([[float(getattr(c, n, np.nan) if getattr(c, n, None) is not None
                             else np.nan) for n in names] for c in candidates],
                    dtype=float).reshape(len(candidates), len(names))


@functools.cache
def _number_scales(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The floors, centres and spreads of ``names`` (made once: scoring calls it per source)."""
    return tuple(np.array([_NUMBER_SCALES[name][i] for name in names]) for i in range(3))


def _scaled_numbers(numbers: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """The candidates' numbers (columns ``names``) on log scales of unit spread; 0 if unknown."""
    floor, centre, spread = _number_scales(tuple(names))
    scaled = ((np.log(np.maximum(numbers, floor)) - centre) / spread).astype(np.float32)
    scaled[np.isnan(scaled)] = 0.0
    return scaled


class ModelFileError(ValueError):
    """A model file cannot be used: missing, damaged, or made for other views."""


class TrainingParameters(Parameters):
    """How ``skyretriever train`` makes its examples and fits the model."""

    examples: int = parameter(2000, "Number of examples made (positives and negatives).", ge=10)
    positive_fraction: float = parameter(
        0.5, "Fraction of examples with an injected transit.", gt=0, lt=1
    )
    period: list[float] = parameter(
        [0.5, 20.0], "Range of injected periods (days), drawn log-uniformly.",
        min_length=2, max_length=2,
    )
    snr: list[float] = parameter(
        [7.0, 60.0], "Range of the injected transits' expected S/N, drawn log-uniformly "
        "(eclipsing binaries: from 10 to its top; with transits of 7-20 against binaries of "
        "10-60, real hot Jupiters of S/N 200-430 scored below 0.1).",
        min_length=2, max_length=2,
    )
    negatives: dict[str, float] = parameter(
        {"none": 1.0, "flare": 1.0, "dip": 1.0, "eclipsing_binary": 1.0, "variable": 1.0},
        "Relative frequency of each kind of negative: none (the star as it is), flare, "
        "dip (one occultation), eclipsing_binary (V-shaped eclipses and a secondary), "
        "variable (rotational modulation: a sinusoid and its harmonic).",
    )
    split: list[float] = parameter(
        [0.7, 0.15, 0.15], "Fractions of the sources for training, validation and test "
        "(examples of one source stay in one part).", min_length=3, max_length=3,
    )
    epochs: int = parameter(40, "Most passes over the training examples.", ge=1)
    patience: int = parameter(
        10, "Stop when the validation loss has not improved for this many epochs.", ge=1
    )
    batch_size: int = parameter(64, "Examples per step.", ge=1)
    learning_rate: float = parameter(
        3e-4, "Adam's learning rate (CNN; 1e-3 overfitted 425 training examples within two "
        "epochs, AUC 0.74; 3e-4 gave 0.93 on the same test set).", gt=0,
    )
    max_iterations: int = parameter(300, "Boosting iterations (gradient boosting).", ge=1)
    seed: int = parameter(0, "Random seed of the examples, the split and the fit.")
    threads: int = parameter(1, "CPU threads used to fit.", ge=1)
    weight_average: float = parameter(
        WEIGHT_AVERAGE_DEFAULT, "CNN: decay per step of a moving average of the weights "
        "(less in the first steps), which is what is judged on the validation part and kept "
        "(0: the weights as fitted).",
        ge=0, lt=1,
    )
    networks: int = parameter(
        NETWORKS_DEFAULT, "Networks the CNN fits from successive seeds; it scores their mean.",
        ge=1,
    )


class ClassifierParameters(Parameters):
    """The classifier step: score each source's best transit candidate with a trained model."""

    enabled: bool = parameter(False, "Score transit candidates with the model.")
    model: str = parameter(
        "cnn", "Model: cnn (1-D convolutional network), gbt (gradient boosting) or "
        "'module:Class' (a TransitClassifier subclass).",
    )
    model_file: str | None = parameter(
        None, "The model file (skyretriever train writes it; its hash enters the config "
        "hash, its path does not).", critical=False,
    )
    global_bins: int = parameter(2001, "Bins of the global view (the whole orbit).", ge=11)
    local_bins: int = parameter(201, "Bins of the local view (around the transit).", ge=11)
    local_durations: float = parameter(
        4.0, "Half-width of the local view, in transit durations.", gt=0
    )
    local_kinds: list[str] = parameter(
        ["transit"], "Parts of the local view, each local_bins long: transit (first), then "
        "any of secondary (the window at phase 0.5), odd and even (the odd and the even "
        "transits alone); the model file must have been trained on the same.", min_length=1,
    )
    min_points: int = parameter(
        100, "Fewest points a stitched light curve needs to be scored.", ge=3
    )
    threshold: float = parameter(
        0.5, "Score above which a candidate counts as a transit (confusion matrix, reports).",
        ge=0, le=1, critical=False,
    )
    training: TrainingParameters = parameter(
        default_factory=TrainingParameters, doc="How skyretriever train makes the model.",
        critical=False,
    )


# -- models ----------------------------------------------------------------------------------
class TransitClassifier:
    """A model scoring candidates' views: fit, predict, and its state as bytes.

    Subclasses set ``name`` and implement :meth:`fit`, :meth:`predict`,
    :meth:`state` and :meth:`load_state`. A model that also takes numbers
    of the candidate from the search (:data:`CANDIDATE_NUMBERS`, as ExoMiner
    takes scalar diagnostics beside its views) names them in
    ``candidate_numbers``; its ``fit`` and ``predict`` then get them as
    ``numbers`` (one row per example), and the validation tuple a fourth part.
    """

    name: ClassVar[str] = "base"
    #: The candidate's numbers the model takes beside the views (none by default).
    default_numbers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, global_bins: int, local_bins: int, seed: int = 0, threads: int = 1,
                 candidate_numbers: Sequence[str] | None = None,
                 local_kinds: Sequence[str] = ("transit",)) -> None:
        #: The local view's parts (each ``local_bins`` long, laid end to end).
        self.local_kinds = check_local_kinds(tuple(local_kinds))
        self.global_bins = int(global_bins)
        self.local_bins = int(local_bins)
        self.seed = int(seed)
        self.threads = int(threads)
        self.candidate_numbers = tuple(self.default_numbers if candidate_numbers is None
                                       else candidate_numbers)
        unknown = set(self.candidate_numbers) - set(CANDIDATE_NUMBERS)
        if unknown:
            raise ValueError(f"unknown candidate numbers {sorted(unknown)}: use some of "
                             f"{', '.join(CANDIDATE_NUMBERS)}")

    def scores(self, global_views: np.ndarray, local_views: np.ndarray,
               numbers: np.ndarray | None = None) -> np.ndarray:
        """:meth:`predict`, given the candidates' numbers when the model takes them."""
        if not self.candidate_numbers:
            return self.predict(global_views, local_views)
        return self.predict(global_views, local_views, numbers=self.check_numbers(
            numbers, len(global_views)))

    def check_numbers(self, numbers: np.ndarray | None, count: int) -> np.ndarray:
        """``numbers`` as a float array of ``count`` rows of this model's numbers."""
        if numbers is None:
            raise ValueError(f"the {self.name} model also takes the candidates' "
                             f"{', '.join(self.candidate_numbers)}")
        numbers = np.asarray(numbers, dtype=float).reshape(count, -1)
        if numbers.shape[1] != len(self.candidate_numbers):
            raise ValueError(f"{numbers.shape[1]} numbers per candidate given to a model "
                             f"of {len(self.candidate_numbers)}")
        return numbers

    def fit(self, global_views: np.ndarray, local_views: np.ndarray, labels: np.ndarray,
            validation: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
            pars: TrainingParameters) -> dict[str, list[float]]:
        """Fit on views (``(n, global_bins)``, ``(n, local_bins)``) and 0/1 labels; the history."""
        raise NotImplementedError

    def predict(self, global_views: np.ndarray, local_views: np.ndarray) -> np.ndarray:
        """Scores from 0 to 1, one per example."""
        raise NotImplementedError

    def state(self) -> bytes:
        """Everything :meth:`load_state` needs to predict again."""
        raise NotImplementedError

    def load_state(self, data: bytes) -> None:
        raise NotImplementedError

    def check_views(self, global_views: np.ndarray, local_views: np.ndarray) -> None:
        """Raise ValueError unless the views have this model's sizes."""
        local_length = self.local_bins * len(self.local_kinds)
        if global_views.shape[-1] != self.global_bins or local_views.shape[-1] != local_length:
            raise ValueError(f"views of {global_views.shape[-1]} and {local_views.shape[-1]} "
                             f"bins given to a model of {self.global_bins} and "
                             f"{local_length} ({self.local_bins} for each local part: "
                             f"{', '.join(self.local_kinds)})")


def _averaged(views: np.ndarray, bins: int) -> np.ndarray:
    """Each row averaged to ``bins`` nearly equal parts."""
    edges = np.linspace(0, views.shape[1], bins + 1).astype(int)
    return np.add.reduceat(views, edges[:-1], axis=1) / np.diff(edges)


def view_features(global_views: np.ndarray, local_views: np.ndarray, parts: int = 1
                  ) -> np.ndarray:
    """The gradient-boosting features: coarser views and numbers read off them.

    The global view averaged to 101 bins, the local view's transit part to 51,
    then the minimum near phase 0.5 (a secondary eclipse), the scatter of the
    global view away from the transit and of the local view's wings, and the
    difference of the local view's two halves (asymmetry, as of a flare's
    tail). Each further part of the local view (``parts`` in all) adds itself
    averaged to 25 bins and the mean of its middle fifth (a depth, in the
    transit's depths).
    """
    global_views = np.asarray(global_views, dtype=np.float64)
    local_views = np.asarray(local_views, dtype=np.float64)
    extra = []
    if parts > 1:
        split = local_views.reshape(len(local_views), parts, -1)
        local_views = split[:, 0]
        width = split.shape[2]
        middle = slice(width * 2 // 5, max(width * 3 // 5, width * 2 // 5 + 1))
        for part in range(1, parts):
            extra += [_averaged(split[:, part], min(25, width)),
                      split[:, part, middle].mean(axis=1)[:, None]]
    n_global, n_local = global_views.shape[1], local_views.shape[1]
    centre, quarter = n_global // 2, max(n_global // 8, 1)
    edges = np.concatenate([global_views[:, :quarter], global_views[:, -quarter:]], axis=1)
    away = np.concatenate([global_views[:, : centre - quarter],
                           global_views[:, centre + quarter:]], axis=1)
    wings = np.concatenate([local_views[:, : n_local // 4], local_views[:, -(n_local // 4):]],
                           axis=1)
    numbers = np.column_stack([
        edges.min(axis=1) if edges.size else np.zeros(len(global_views)),
        np.std(away, axis=1),
        np.std(wings, axis=1),
        local_views[:, : n_local // 2].mean(axis=1) - local_views[:, -(n_local // 2):].mean(axis=1),
    ])
    return np.hstack([_averaged(global_views, min(101, n_global)),
                      _averaged(local_views, min(51, n_local)), numbers, *extra])


@functools.cache
def _thread_controller() -> Any:
    # made once: looking for the loaded OpenMP and BLAS libraries takes tens of milliseconds
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _threads(count: int) -> Any:
    """A context in which OpenMP and BLAS use at most ``count`` threads."""
    return _thread_controller().limit(limits=count)


class _Forest:
    """All the trees of a fitted binary HistGradientBoostingClassifier, walked at once.

    scikit-learn walks its trees one Python call each (15 microseconds a tree,
    300 trees for one candidate: 5 ms); here every tree takes its next step in
    the same numpy operation, one per level. The same decisions as
    scikit-learn's predictor: go left when the value is at most the threshold,
    a missing value where the node says. ``None`` from :meth:`of` when the
    estimator is not of that form (categorical features, a scikit-learn whose
    internals differ); then scikit-learn's own ``predict_proba`` is used.
    """

    def __init__(self, nodes: list[np.ndarray], baseline: float) -> None:
        starts = np.cumsum([0] + [len(tree) for tree in nodes[:-1]])
        table = np.concatenate(nodes)
        shift = np.repeat(starts, [len(tree) for tree in nodes])
        self.roots = starts.astype(np.intp)
        self.feature = table["feature_idx"].astype(np.intp)
        self.threshold = table["num_threshold"].astype(np.float64)
        self.missing_left = table["missing_go_to_left"].astype(bool)
        leaf = table["is_leaf"].astype(bool)
        # a leaf points to itself, so a walk may take more steps than its tree is deep
        self.left = np.where(leaf, np.arange(len(table)), table["left"] + shift).astype(np.intp)
        self.right = np.where(leaf, np.arange(len(table)), table["right"] + shift).astype(np.intp)
        self.value = table["value"].astype(np.float64)
        self.levels = int(table["depth"].max()) if len(table) else 0
        self.baseline = float(baseline)

    @classmethod
    def of(cls, estimator: Any) -> _Forest | None:
        try:
            trees = [iteration[0].nodes for iteration in estimator._predictors]
            if any(len(iteration) != 1 for iteration in estimator._predictors) or any(
                    tree["is_categorical"].any() for tree in trees) or not trees:
                return None
            baseline = np.ravel(estimator._baseline_prediction)
            if len(baseline) != 1:
                return None
            return cls(trees, baseline[0])
        except (AttributeError, KeyError, TypeError, ValueError):
            return None

    def probability(self, features: np.ndarray) -> np.ndarray:
        """The probability of the positive class for each row of ``features``."""
        rows = np.arange(len(features))[:, None]
        node = np.broadcast_to(self.roots, (len(features), len(self.roots)))
        for _ in range(self.levels):
            value = features[rows, self.feature[node]]
            left = np.where(np.isnan(value), self.missing_left[node],
                            value <= self.threshold[node])
            node = np.where(left, self.left[node], self.right[node])
        raw = self.baseline + self.value[node].sum(axis=1)
        return 1.0 / (1.0 + np.exp(-raw))


class GradientBoostingClassifier(TransitClassifier):
    """scikit-learn's histogram gradient boosting on :func:`view_features`.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> labels = np.arange(200) % 2
    >>> local = rng.normal(0, 0.3, (200, 21)); local[labels == 1, 8:13] -= 1
    >>> numbers = np.column_stack([rng.uniform(7, 20, 200), rng.uniform(6, 15, 200),
    ...                            rng.uniform(0.01, 0.15, 200)])   # S/N, SDE, duty cycle
    >>> model = GradientBoostingClassifier(31, 21)          # views, and the candidate's numbers
    >>> _ = model.fit(rng.normal(0, 0.3, (200, 31)), local, labels, None, TrainingParameters(),
    ...               numbers=numbers)
    >>> bool(model.predict(np.zeros((1, 31)), local[1:2], numbers=numbers[1:2])[0] > 0.9)
    True
    """

    name: ClassVar[str] = "gbt"
    default_numbers: ClassVar[tuple[str, ...]] = CANDIDATE_NUMBERS

    def __init__(self, global_bins: int, local_bins: int, seed: int = 0, threads: int = 1,
                 candidate_numbers: Sequence[str] | None = None,
                 local_kinds: Sequence[str] = ("transit",)) -> None:
        super().__init__(global_bins, local_bins, seed, threads, candidate_numbers, local_kinds)
        self.estimator: Any = None
        self._forest: _Forest | None = None

    def _features(self, global_views, local_views, numbers) -> np.ndarray:
        features = view_features(global_views, local_views, len(self.local_kinds))
        if not self.candidate_numbers:
            return features
        numbers = self.check_numbers(numbers, len(features))
        return np.hstack([features, _scaled_numbers(numbers, self.candidate_numbers)])

    def fit(self, global_views, local_views, labels, validation, pars, numbers=None):
        from sklearn.ensemble import HistGradientBoostingClassifier

        self.check_views(global_views, local_views)
        count = len(labels)
        # scikit-learn's defaults (leaves of 20, early stopping on 15%) need a few hundred
        # examples; a small set gets smaller leaves and every iteration
        self.estimator = HistGradientBoostingClassifier(
            max_iter=pars.max_iterations, learning_rate=0.1, early_stopping=count >= 400,
            validation_fraction=0.15, n_iter_no_change=20, random_state=self.seed,
            min_samples_leaf=int(min(20, max(3, count // 20))),
        )
        with _threads(self.threads):
            self.estimator.fit(self._features(global_views, local_views, numbers),
                               np.asarray(labels, int))
        self._forest = _Forest.of(self.estimator)
        return {"train_loss": [float(x) for x in -self.estimator.train_score_],
                "validation_loss": [float(x) for x in -getattr(
                    self.estimator, "validation_score_", np.array([]))]}

    def predict(self, global_views, local_views, numbers=None):
        if self.estimator is None:
            raise RuntimeError("the gradient-boosting model is not fitted")
        self.check_views(global_views, local_views)
        features = self._features(global_views, local_views, numbers)
        if self._forest is not None:
            return self._forest.probability(features)
        # scikit-learn's OpenMP threads cost more than they give on one candidate at a time
        # (70 ms instead of 5 ms per call on a busy two-core machine)
        with _threads(self.threads):
            return self.estimator.predict_proba(features)[:, 1]

    def state(self) -> bytes:
        return pickle.dumps(self.estimator, protocol=pickle.HIGHEST_PROTOCOL)

    def load_state(self, data: bytes) -> None:
        # The model file is the project's own (written by skyretriever train).
        self.estimator = pickle.loads(data)
        self._forest = _Forest.of(self.estimator)


def _smoothed(views: np.ndarray, size: int) -> np.ndarray:
    """Running mean of ``size`` bins along each row (spacekit's second channel)."""
    from scipy.ndimage import uniform_filter1d

    return uniform_filter1d(views, size=size, axis=-1, mode="nearest")


def _column_blocks(length: int) -> list[tuple[int, int, int]]:
    """(filters, kernel, pool) of each convolution block of a view of ``length`` bins.

    spacekit's four blocks of 8, 16, 32 and 64 filters of width 11 pooled by 4
    for long views; fewer, narrower ones while the view is still longer than 8
    bins.
    """
    blocks = []
    for filters in (8, 16, 32, 64):
        if length < 16:
            break
        kernel = 11 if length >= 200 else 5
        pool = 4 if length >= 64 else 2
        blocks.append((filters, kernel, pool))
        length //= pool
    return blocks or [(8, 3, 1)]


def _network(global_bins: int, local_bins: int, numbers: int = 0, local_parts: int = 1) -> Any:
    """The convolutional network (a ``torch.nn.Module``) for views of these sizes.

    Each view comes with its smoothed copy (two channels); the local column
    takes two channels per part of the local view.
    """
    import torch
    from torch import nn

    def column(length: int, channels: int = 2) -> tuple[nn.Sequential, int]:
        layers: list[nn.Module] = []
        for number, (filters, kernel, pool) in enumerate(_column_blocks(length)):
            layers += [nn.Conv1d(channels, filters, kernel, padding=kernel // 2), nn.ReLU()]
            if pool > 1:
                layers.append(nn.MaxPool1d(pool))
                length //= pool
            if number < 3:
                layers.append(nn.BatchNorm1d(filters))
            channels = filters
        return nn.Sequential(*layers, nn.Flatten()), channels * length

    class Network(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.global_column, global_size = column(global_bins)
            self.local_column, local_size = column(local_bins, 2 * local_parts)
            # dropout on the views' features only: the candidate's numbers are two inputs
            # among a thousand, and dropping them half the time would hide them
            self.dropout = nn.Dropout(0.5)
            # the numbers through a small layer of their own (AUC 0.973 -> 0.992 on the
            # benchmark's 2,877 examples, against joining them to the head directly)
            self.numbers = (nn.Sequential(nn.Linear(numbers, 16), nn.ReLU()) if numbers
                            else nn.Sequential())
            self.head = nn.Sequential(
                nn.Linear(global_size + local_size + (16 if numbers else 0), 64), nn.ReLU(),
                nn.Dropout(0.25), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1),
            )

        def forward(self, global_views: torch.Tensor, local_views: torch.Tensor,
                    numbers: torch.Tensor) -> torch.Tensor:
            joined = torch.cat([self.dropout(torch.cat([self.global_column(global_views),
                                                        self.local_column(local_views)], dim=1)),
                                self.numbers(numbers)], dim=1)
            return self.head(joined).squeeze(1)   # logits; the sigmoid is in predict

    return Network()


@functools.cache
def _torch() -> Any:
    """The torch module, imported when first needed (an import statement costs each call)."""
    import torch

    return torch


def _scoring_steps(modules: Any) -> list[tuple[Any, ...]]:
    """The layers of an ``nn.Sequential`` in eval mode as plain operations (for scoring).

    Calling each module costs more than its arithmetic on one candidate's views
    (the network took 410 microseconds a call, these steps 190): scoring runs
    these, with batch normalisation as a multiply-add and dropout left out.
    """
    from torch import nn

    steps: list[tuple[Any, ...]] = []
    for module in modules:
        if isinstance(module, nn.Conv1d):
            steps.append(("conv", module.weight.detach(), module.bias.detach(),
                          module.padding[0]))
        elif isinstance(module, nn.Linear):
            steps.append(("linear", module.weight.detach(), module.bias.detach()))
        elif isinstance(module, nn.ReLU):
            steps.append(("relu",))
        elif isinstance(module, nn.MaxPool1d):
            steps.append(("pool", module.kernel_size))
        elif isinstance(module, nn.BatchNorm1d):
            scale = (module.weight / (module.running_var + module.eps).sqrt()).detach()
            shift = (module.bias - module.running_mean * scale).detach()
            steps.append(("scale", scale[:, None], shift[:, None]))
        elif isinstance(module, nn.Flatten):
            steps.append(("flatten",))
        elif not isinstance(module, nn.Dropout):
            raise TypeError(f"no scoring step for {type(module).__name__}")
    return steps


def _run_steps(steps: list[tuple[Any, ...]], values: Any) -> Any:
    torch = _torch()
    for step in steps:
        kind = step[0]
        if kind == "conv":
            values = torch.conv1d(values, step[1], step[2], padding=step[3])
        elif kind == "linear":
            values = torch.nn.functional.linear(values, step[1], step[2])
        elif kind == "relu":
            values = torch.relu_(values)
        elif kind == "pool":    # torch's own (functional's wrapper costs as much again)
            values = torch.max_pool1d(values, step[1])
        elif kind == "scale":
            values = torch.addcmul(step[2], values, step[1])
        else:
            values = values.flatten(1)
    return values


def _moving_average(decay: float) -> Any:
    """An exponential moving average of tensors, for ``AveragedModel(multi_avg_fn=...)``.

    The new weights count ``max(1 - decay, 4 / (n + 4))`` after ``n`` updates:
    the average spans about the last quarter of the steps so far, and at most
    ``1 / (1 - decay)`` steps, so a short fit (a small project: a few steps an
    epoch) averages its recent weights rather than keeping its first ones.
    Integer buffers (batch normalisation's count) take the current value.
    """
    import torch

    @torch.no_grad()
    def update(averaged: list[Any], current: list[Any], count: Any) -> None:
        weight = max(1.0 - decay, 4.0 / (float(count) + 4.0))
        for old, new in zip(averaged, current, strict=True):
            if old.is_floating_point():
                old.lerp_(new, weight)
            else:
                old.copy_(new)

    return update


class ConvolutionalClassifier(TransitClassifier):
    """1-D convolutional networks of spacekit's kind on PyTorch (CPU), deterministic with a seed.

    The model is ``training.networks`` networks fitted alike from seeds
    ``seed``, ``seed + 1``, ...; its score is the mean of theirs (networks
    from different seeds err on different faint transits, so their mean
    ranks candidates better than any one of them).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> labels = np.arange(128) % 2
    >>> local = rng.normal(0, 0.3, (128, 21)).astype(np.float32); local[labels == 1, 8:13] -= 1
    >>> model = ConvolutionalClassifier(31, 21, seed=3, candidate_numbers=())   # views alone
    >>> history = model.fit(rng.normal(0, 0.3, (128, 31)), local, labels, None,
    ...                     TrainingParameters(epochs=15, batch_size=16, networks=1))
    >>> bool(history["train_loss"][-1] < history["train_loss"][0])
    True
    """

    name: ClassVar[str] = "cnn"
    default_numbers: ClassVar[tuple[str, ...]] = CANDIDATE_NUMBERS

    def __init__(self, global_bins: int, local_bins: int, seed: int = 0, threads: int = 1,
                 candidate_numbers: Sequence[str] | None = None,
                 local_kinds: Sequence[str] = ("transit",)) -> None:
        super().__init__(global_bins, local_bins, seed, threads, candidate_numbers, local_kinds)
        #: The fitted networks (``torch.nn.Module``), whose mean score is the model's.
        self.networks: list[Any] = []
        self._steps: tuple[Any, ...] | None = None

    def _inputs(self, global_views: np.ndarray, local_views: np.ndarray,
                numbers: np.ndarray | None = None) -> tuple[Any, Any, Any]:
        """Tensors of the views (each part with its smoothed copy) and of the candidate numbers."""
        import torch

        def channels(views: np.ndarray, parts: int = 1) -> Any:
            views = np.asarray(views, dtype=np.float32).reshape(len(views), parts, -1)
            size = max(3, views.shape[-1] // 50)
            return torch.from_numpy(np.concatenate([views, _smoothed(views, size)], axis=1))

        count = len(global_views)
        scaled = (_scaled_numbers(self.check_numbers(numbers, count), self.candidate_numbers)
                  if self.candidate_numbers else np.zeros((count, 0), np.float32))
        return (channels(global_views), channels(local_views, len(self.local_kinds)),
                torch.from_numpy(scaled))

    def _build(self, seed: int) -> Any:
        import torch

        torch.manual_seed(seed)
        return _network(self.global_bins, self.local_bins, len(self.candidate_numbers),
                        len(self.local_kinds))

    def fit(self, global_views, local_views, labels, validation, pars, numbers=None):
        """Fit ``pars.networks`` networks; the first one's history (``networks``: each one's)."""
        import torch

        self.check_views(global_views, local_views)
        torch.set_num_threads(self.threads)
        inputs = self._inputs(global_views, local_views, numbers)
        targets = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        checked = None
        if validation is not None:
            checked = (self._inputs(*validation[:2], *validation[3:]),
                       torch.from_numpy(np.asarray(validation[2], dtype=np.float32)))
        self.networks, self._steps = [], None
        histories = []
        # deterministic while fitting, and as before after (it is torch's global setting)
        was_deterministic = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            for number in range(pars.networks):
                network, history = self._fit_network(self.seed + number, inputs, targets,
                                                     checked, pars)
                self.networks.append(network)
                histories.append(history)
        finally:
            torch.use_deterministic_algorithms(was_deterministic)
        history = dict(histories[0])
        if len(histories) > 1:
            history["networks"] = histories
        return history

    def _fit_network(self, seed: int, inputs: tuple[Any, Any, Any], targets: Any,
                     checked: tuple[Any, Any] | None, pars: TrainingParameters
                     ) -> tuple[Any, dict[str, list[float]]]:
        """One network fitted from ``seed``, stopped early on ``checked``; it and its history."""
        import torch

        network = self._build(seed)
        positives = float(targets.sum())
        weight = torch.tensor((len(targets) - positives) / max(positives, 1.0))
        loss_function = torch.nn.BCEWithLogitsLoss(pos_weight=weight)
        optimiser = torch.optim.Adam(network.parameters(), lr=pars.learning_rate)
        # the averaged weights (and batch normalisation statistics) are judged and kept
        judged = network
        if pars.weight_average > 0:
            from torch.optim.swa_utils import AveragedModel

            averaged = AveragedModel(network, multi_avg_fn=_moving_average(pars.weight_average),
                                     use_buffers=True)
            judged = averaged.module
        rng = np.random.default_rng(seed)
        history: dict[str, list[float]] = {"train_loss": [], "validation_loss": []}
        best_loss, best_state, waited = np.inf, None, 0
        for _ in range(pars.epochs):
            network.train()
            order = rng.permutation(len(targets))
            total = 0.0
            for first in range(0, len(order), pars.batch_size):
                batch = torch.from_numpy(order[first:first + pars.batch_size])
                if len(batch) < 2:      # batch normalisation needs two examples
                    continue
                global_batch, local_batch = inputs[0][batch], inputs[1][batch]
                # AstroNet's augmentation: a transit reversed in time is still a transit
                if rng.random() < 0.5:
                    global_batch, local_batch = global_batch.flip(-1), local_batch.flip(-1)
                optimiser.zero_grad()
                loss = loss_function(network(global_batch, local_batch, inputs[2][batch]),
                                     targets[batch])
                loss.backward()
                optimiser.step()
                if judged is not network:
                    averaged.update_parameters(network)
                total += float(loss.detach()) * len(batch)
            history["train_loss"].append(total / len(targets))
            if checked is None:
                continue
            judged.eval()
            with torch.no_grad():
                loss = float(loss_function(judged(*checked[0]), checked[1]))
            history["validation_loss"].append(loss)
            if loss < best_loss - 1e-4:
                best_loss, waited = loss, 0
                best_state = {k: v.clone() for k, v in judged.state_dict().items()}
            else:
                waited += 1
                if waited >= pars.patience:
                    break
        if best_state is None and judged is not network:
            best_state = judged.state_dict()
        if best_state is not None:
            network.load_state_dict(best_state)
        network.eval()
        return network, history

    def predict(self, global_views, local_views, numbers=None):
        import torch

        if not self.networks:
            raise RuntimeError("the convolutional model is not fitted")
        self.check_views(global_views, local_views)
        # a run scores one source's candidates per call, where the call's overhead counts:
        # inference mode, and each network's layers as plain steps (_scoring_steps; run side
        # by side as grouped convolutions, they were no faster)
        with torch.inference_mode():
            if self._steps is None:
                self._steps = tuple(
                    tuple(_scoring_steps(getattr(network, part)) for part in (
                        "global_column", "local_column", "numbers", "head"))
                    for network in self.networks)
            inputs = self._inputs(global_views, local_views, numbers)
            scores = [torch.sigmoid(_run_steps(steps[3], torch.cat(
                [_run_steps(column, values) for column, values in zip(steps[:3], inputs,
                                                                      strict=True)],
                dim=1))[:, 0]) for steps in self._steps]
            return torch.stack(scores).mean(dim=0).numpy().astype(float)

    def state(self) -> bytes:
        import torch

        buffer = io.BytesIO()
        torch.save({"networks": [network.state_dict() for network in self.networks]}, buffer)
        return buffer.getvalue()

    def load_state(self, data: bytes) -> None:
        """Read :meth:`state` (a file before format 4 holds one network's weights alone)."""
        import torch

        torch.set_num_threads(self.threads)
        saved = torch.load(io.BytesIO(data), weights_only=True)
        states = saved["networks"] if "networks" in saved else [saved]
        if not states:
            raise ValueError("the model holds no network")
        self.networks, self._steps = [], None
        for number, weights in enumerate(states):
            network = self._build(self.seed + number)
            network.load_state_dict(weights)
            network.eval()
            self.networks.append(network)


MODELS: dict[str, type[TransitClassifier]] = {
    "cnn": ConvolutionalClassifier,
    "gbt": GradientBoostingClassifier,
}


def model_class(name: str, load: Any = None) -> type[TransitClassifier]:
    """The model class for ``cnn``, ``gbt`` or ``module:Class`` (``load`` imports the last)."""
    if name in MODELS:
        return MODELS[name]
    if (":" in name or "." in name) and load is not None:
        cls = load(name, "analysis.classifier.model")
        if not (isinstance(cls, type) and issubclass(cls, TransitClassifier)):
            raise ParameterError(f"analysis.classifier.model: {name!r} is not a "
                                 "TransitClassifier subclass")
        return cls
    raise ParameterError(f"analysis.classifier.model: unknown model {name!r}; use "
                         f"{', '.join(MODELS)} or 'module:Class'")


# -- model files -----------------------------------------------------------------------------
def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def save_model(model: TransitClassifier, path: str | Path, metadata: Mapping[str, Any]
               ) -> dict[str, Any]:
    """Write the model file (in one step) and ``<path>.json`` beside it; the metadata written.

    ``metadata`` adds what the caller knows (training parameters, data summary,
    metrics, view settings) to what the model says of itself.
    """
    path = Path(path)
    info = {
        "format": MODEL_FILE_FORMAT,
        "format_version": MODEL_FILE_VERSION,
        "skyretriever_version": __version__,
        "model": model.name,
        "class": _class_path(type(model)),
        "global_bins": model.global_bins,
        "local_bins": model.local_bins,
        "local_kinds": list(model.local_kinds),
        "candidate_numbers": list(model.candidate_numbers),
        "seed": model.seed,
        **metadata,
    }
    text = json.dumps(info, indent=2, sort_keys=True, default=_plain)
    with storage.atomic_write(path) as temporary:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("model.json", text)
            archive.writestr("weights.bin", model.state())
    with storage.atomic_write(path.with_name(path.name + ".json")) as temporary:
        temporary.write_text(text + "\n")
    return json.loads(text)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to a model file")


def read_model_metadata(path: str | Path) -> dict[str, Any]:
    """The ``model.json`` of a model file.

    Raises
    ------
    ModelFileError
        If the file is missing, not a model file, damaged, or of a newer format.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"no model file at {str(path)!r}; make one with "
                             "'skyretriever train CONFIG'")
    try:
        with zipfile.ZipFile(path) as archive:
            info = json.loads(archive.read("model.json"))
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, EOFError) as error:
        raise ModelFileError(f"{str(path)!r} is not a readable skyretriever model file "
                             f"(damaged?): {error}") from None
    if not isinstance(info, dict) or info.get("format") != MODEL_FILE_FORMAT:
        raise ModelFileError(f"{str(path)!r} is not a skyretriever model file")
    if int(info.get("format_version", 0)) > MODEL_FILE_VERSION:
        raise ModelFileError(f"{str(path)!r} has model file format "
                             f"{info.get('format_version')}; this skyretriever reads "
                             f"{MODEL_FILE_VERSION} (upgrade skyretriever)")
    return info


def load_model(path: str | Path, global_bins: int | None = None,
               local_bins: int | None = None, load: Any = None, threads: int = 1,
               local_kinds: Sequence[str] | None = None
               ) -> tuple[TransitClassifier, dict[str, Any]]:
    """The model in a model file and its metadata, checked against the views asked for.

    A file of format 1 or 2 (before the local view had parts) holds a model of
    the transit part alone.

    Raises
    ------
    ModelFileError
        If the file is missing or damaged, or its model was trained on views
        of other sizes than ``global_bins`` and ``local_bins``, or on other
        local view parts than ``local_kinds``.
    """
    info = read_model_metadata(path)
    if info.get("model") == "cnn" and int(info.get("format_version", 0)) < _FIRST_CNN_VERSION:
        raise ModelFileError(
            f"{str(path)!r} holds a CNN made by an older skyretriever (model file format "
            f"{info.get('format_version')}), whose network this one no longer builds: train it "
            "again with 'skyretriever train CONFIG'")
    sizes = (info.get("global_bins"), info.get("local_bins"))
    if (global_bins, local_bins) != (None, None) and sizes != (global_bins, local_bins):
        raise ModelFileError(
            f"the model in {str(path)!r} was trained on views of {sizes[0]} (global) and "
            f"{sizes[1]} (local) bins, and analysis.classifier asks for {global_bins} and "
            f"{local_bins}: set global_bins and local_bins as in the model, or train again")
    trained_kinds = tuple(info.get("local_kinds", ("transit",))
                          if int(info.get("format_version", 0)) >= _FIRST_KINDS_VERSION
                          else ("transit",))
    if local_kinds is not None and tuple(local_kinds) != trained_kinds:
        made_by = ("" if int(info.get("format_version", 0)) >= _FIRST_KINDS_VERSION else
                   f" (model file format {info.get('format_version')}, made before local "
                   "views had other parts)")
        raise ModelFileError(
            f"the model in {str(path)!r} was trained on the local view parts "
            f"{', '.join(trained_kinds)}{made_by}, and analysis.classifier.local_kinds asks "
            f"for {', '.join(local_kinds)}: set local_kinds as in the model, or train again")
    try:
        cls = model_class(str(info.get("model")), load)
    except ParameterError:
        try:
            cls = model_class(str(info.get("class")), load)
        except ParameterError as error:
            raise ModelFileError(f"{str(path)!r}: {error}") from None
    # a model of the transit part alone is built as before (a subclass need not know kinds)
    kinds = {} if trained_kinds == ("transit",) else {"local_kinds": trained_kinds}
    try:   # a file written before models took the candidate's numbers has none
        model = cls(int(sizes[0]), int(sizes[1]), seed=int(info.get("seed", 0)),
                    threads=threads, candidate_numbers=info.get("candidate_numbers", ()),
                    **kinds)
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"{str(path)!r}: {error}") from None
    try:
        with zipfile.ZipFile(path) as archive:
            model.load_state(archive.read("weights.bin"))
    except Exception as error:  # any failure to rebuild the weights is a damaged file
        raise ModelFileError(f"{str(path)!r}: the {info.get('model')} model's weights cannot "
                             f"be read (damaged?): {type(error).__name__}: {error}") from None
    return model, info


# -- the analysis step -----------------------------------------------------------------------
class Classifier:
    """The classifier step of the analysis: views of candidates, scored by the model file's model.

    The model is read when first needed (in each worker process) and is not
    pickled with the analysis.
    """

    def __init__(self, pars: ClassifierParameters, load: Any = None) -> None:
        self.pars = pars
        self._load = load
        self._model: TransitClassifier | None = None
        self._error: str | None = None
        try:
            check_local_kinds(pars.local_kinds)
        except ValueError as error:
            raise ParameterError(f"analysis.classifier.local_kinds: {error}") from None
        if pars.enabled:
            model_class(pars.model, load)   # an unknown model is a configuration error now
            if not pars.model_file:
                raise ParameterError("analysis.classifier.model_file: give the path of the "
                                     "model file (skyretriever train writes it)")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_model"] = None
        state["_error"] = None
        return state

    def model_hash(self) -> str | None:
        """SHA-256 of the model file (``None`` when there is none yet)."""
        if not self.pars.model_file or not Path(self.pars.model_file).is_file():
            return None
        return storage.file_sha256(self.pars.model_file)

    def model(self) -> TransitClassifier:
        """The model of the model file (read once).

        Raises
        ------
        ModelFileError
            If the model file cannot be used (see :func:`load_model`).
        """
        if self._model is None:
            if self._error is not None:
                raise ModelFileError(self._error)
            try:
                self._model, _ = load_model(self.pars.model_file, self.pars.global_bins,
                                            self.pars.local_bins, self._load,
                                            local_kinds=self.pars.local_kinds)
            except ModelFileError as error:
                self._error = str(error)
                raise
        return self._model

    def views(self, times: np.ndarray, flux: np.ndarray, period: float, epoch: float,
              duration: float) -> CandidateViews:
        """The views of a candidate (ValueError when they cannot be made)."""
        pars = self.pars
        return candidate_views(times, flux, period, epoch, duration, pars.global_bins,
                               pars.local_bins, pars.local_durations, pars.min_points,
                               tuple(pars.local_kinds))

    def score_searches(self, searched: Sequence[StitchedSearch]
                       ) -> list[tuple[float | None, str | None]]:
        """``(score, None)`` or ``(None, reason not scored)`` for each search's candidate."""
        results: list[tuple[float | None, str | None]] = []
        views: list[CandidateViews] = []
        candidates: list[Any] = []
        where: list[int] = []
        for search in searched:
            candidate = search.candidate
            if candidate is None:
                results.append((None, "no transit candidate"))
                continue
            try:
                made = self.views(search.times, search.flux, candidate.period,
                                  candidate.epoch, candidate.duration)
            except ValueError as error:
                results.append((None, str(error)))
                continue
            results.append((None, None))
            views.append(made)
            candidates.append(candidate)
            where.append(len(results) - 1)
        if views:
            try:
                model = self.model()
                scores = model.scores(np.stack([v.global_view for v in views]),
                                      np.stack([v.local_view for v in views]),
                                      candidate_numbers(candidates, model.candidate_numbers))
            except (ModelFileError, ValueError) as error:
                reason = str(error)
                return [(None, reason) if r == (None, None) else r for r in results]
            for index, score in zip(where, scores):
                results[index] = (float(score), None)
        return results
