"""Analysis: quality checks, then the finders, then properties, histogram counts and injections.

One call of :meth:`Analysis.analyze_photometry` handles every light curve of
one source (from every observatory) and returns plain values: a Properties
row, Detection rows (real ones, and simulated ones from injections) and
sparse histogram counts. It never changes the light curves it is given; the
quality checker, finders and simulator work on copies.

The steps, each timed in :attr:`Analysis.timings`:

1. ``quality``: the :class:`QualityChecker` flags epochs in a copy of each table;
2. one step per finder (``peak``, ``transit``, ...): :meth:`Finder.find_source`
   over the checked tables;
3. ``properties``: statistics and the Lomb-Scargle peak;
4. ``classifier`` (when ``classifier.enabled``): the best transit candidate
   of the source and each transit detection, folded into AstroNet-style views
   and scored by the trained model (:mod:`skyretriever.analysis.classifier`);
   the score goes to the ``ml_score`` columns of Properties and Detection, or
   the reason it could not be made to ``extra["ml_not_scored"]``;
5. ``injections``: ``num_injections`` events from the :class:`Simulator`, each
   put into copies of the checked tables and searched by the same finders.

Subclass it in ``extensions/`` to add parameters or override
``analyze_photometry``; point a project at it with ``analysis_module`` and
``analysis_class``.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from skyretriever.analysis.classifier import Classifier, ClassifierParameters, ModelFileError
from skyretriever.analysis.finder import Finder, FinderResult, good_epochs
from skyretriever.analysis.histogram import (
    Histogram,
    HistogramParameters,
    SparseCounts,
    add_sparse,
)
from skyretriever.analysis.periodogram import PeriodogramParameters, lomb_scargle_peak
from skyretriever.analysis.quality import QualityChecker, QualityParameters
from skyretriever.analysis.series import MAD_TO_SIGMA, median
from skyretriever.analysis.simulator import Simulator, SimulatorParameters
from skyretriever.analysis.transit import TransitFinder
from skyretriever.models.datasets import Lightcurve
from skyretriever.models.detection import Detection
from skyretriever.models.properties import Properties
from skyretriever.parameters import (
    ParameterError,
    Parameters,
    merge,
    parameter,
    unknown_key_message,
)

__all__ = [
    "FINDERS",
    "Analysis",
    "AnalysisParameters",
    "AnalysisResult",
    "finder_class",
    "load_class",
]

FINDERS: dict[str, type[Finder]] = {"peak": Finder, "transit": TransitFinder}

#: Columns the pipeline fills itself; everything else in a row comes from the analysis.
_ROW_KEYS = ("id", "source_id", "lightcurve_id", "project", "cfg_hash", "created_at")
DETECTION_COLUMNS = tuple(c.key for c in Detection.__table__.columns if c.key not in _ROW_KEYS)
PROPERTIES_COLUMNS = tuple(c.key for c in Properties.__table__.columns if c.key not in _ROW_KEYS)


def load_class(path: str, what: str = "class") -> type:
    """Import ``package.module:Class`` (or ``package.module.Class``).

    Raises
    ------
    ParameterError
        If the module cannot be imported or has no such class.
    """
    module_name, _, class_name = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not class_name:
        raise ParameterError(f"{what} {path!r}: expected 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ParameterError(f"{what} {path!r}: cannot import {module_name!r}: {error}") from None
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise ParameterError(f"{what} {path!r}: module {module_name!r} has no {class_name!r}") from None


def finder_class(name: str) -> type[Finder]:
    """The finder class for a registered name (``peak``) or a ``module:Class`` path."""
    if name in FINDERS:
        return FINDERS[name]
    if ":" in name or "." in name:
        cls = load_class(name, "analysis.finders entry")
        if not (isinstance(cls, type) and issubclass(cls, Finder)):
            raise ParameterError(f"analysis.finders: {name!r} is not a Finder subclass")
        return cls
    raise ParameterError("analysis.finders: " + unknown_key_message(name, FINDERS, "finder"))


def _finder_key(name: str) -> str:
    """Section name of a finder in the configuration: its registered name or class name."""
    return name if name in FINDERS else finder_class(name).name


class AnalysisParameters(Parameters):
    """Parameters of the analysis: the checks, the finders, injections and the histogram bins."""

    aliases = {"finder_kwargs": "finder", "quality_kwargs": "quality",
               "histogram_kwargs": "histogram", "simulator_kwargs": "simulator"}

    finders: list[str] = parameter(
        ["peak"], "Finders to run, by name (peak, transit) or 'module:Class'; each is "
        "configured under its name.",
    )
    finder: dict[str, Any] = parameter(
        {}, "Parameters given to every finder (each finder checks them)."
    )
    finder_sections: dict[str, dict[str, Any]] = parameter(
        {}, "Parameters of single finders, by finder name (from the sections named after them)."
    )
    quality: QualityParameters = parameter(
        default_factory=QualityParameters, doc="Which quality checks run."
    )
    periodogram: PeriodogramParameters = parameter(
        default_factory=PeriodogramParameters, doc="The Lomb-Scargle periodogram peak."
    )
    num_injections: int = parameter(
        0, "Events injected into each source's light curves to measure the efficiency.", ge=0
    )
    simulator: SimulatorParameters = parameter(
        default_factory=SimulatorParameters, doc="What is injected and when it counts as found."
    )
    histogram: HistogramParameters = parameter(
        default_factory=HistogramParameters, doc="Bins of the histograms."
    )
    classifier: ClassifierParameters = parameter(
        default_factory=ClassifierParameters,
        doc="Scoring transit candidates with a trained model (off by default).",
    )

    @classmethod
    def prepare_input(cls, data: dict[str, Any]) -> dict[str, Any]:
        finders = data.get("finders", cls.model_fields["finders"].default)
        if not isinstance(finders, list):
            return data
        sections = dict(data.get("finder_sections") or {})
        for key in finders:
            if not isinstance(key, str):
                continue
            short = key.rpartition(":")[2] if ":" in key else key
            candidates = {key, short, short.lower()}
            try:
                candidates.add(finder_class(key).name)
            except ParameterError:
                pass  # reported with its reason when the finder is built
            for candidate in candidates:
                if candidate in data and candidate not in cls.model_fields:
                    sections[key] = merge(sections.get(key), data.pop(candidate))
        if sections:
            data["finder_sections"] = sections
        return data


@dataclass
class AnalysisResult:
    """What the analysis of one source produced, as plain values."""

    properties: dict[str, Any]
    detections: list[dict[str, Any]] = field(default_factory=list)
    histogram: SparseCounts = field(default_factory=dict)


class Analysis:
    """Quality checks, finders, properties, injections and histogram counts, one source at a time.

    Parameters
    ----------
    pars
        An :class:`AnalysisParameters` (or subclass) object, or ``None`` to build one from ``kwargs``.

    Examples
    --------
    >>> from skyretriever.observatories.demo import VirtualDemoObs
    >>> obs = VirtualDemoObs(empty_fraction=0, flare_fraction=0)
    >>> row = {"name": "star", "ra": 1.0, "dec": 2.0, "mag": 15.0}
    >>> lightcurves = obs.reduce(obs.download(row))
    >>> analysis = Analysis(num_injections=2, simulator={"flare": {"snr": 30, "decay_time": 5}})
    >>> result = analysis.analyze_photometry(lightcurves, row)
    >>> result.properties["num_lightcurves"], result.properties["num_injected"]
    (4, 2)
    >>> sorted(analysis.timings)
    ['injections', 'peak', 'properties', 'quality']
    """

    Parameters = AnalysisParameters
    histogram_name = "analysis"

    def __init__(self, pars: AnalysisParameters | None = None, **kwargs: Any) -> None:
        if pars is None:
            pars = self.Parameters.build(kwargs, where="analysis")
        elif kwargs:
            pars = self.Parameters.build(pars.model_dump(), kwargs, where="analysis")
        self.pars = pars
        self.quality_checker = QualityChecker(pars.quality)
        self.finders: list[Finder] = []
        for name in pars.finders:
            cls = finder_class(name)
            section = pars.finder_sections.get(name) or pars.finder_sections.get(_finder_key(name))
            unknown = [key for key in pars.finder if key not in cls.Parameters.model_fields]
            if unknown:  # name the section the user wrote, not the finder it was given to
                owners = [other for other in pars.finders
                          if unknown[0] in finder_class(other).Parameters.model_fields]
                hint = (f" ({unknown[0]!r} is a parameter of the {owners[0]} finder: put it "
                        f"under analysis.{_finder_key(owners[0])})") if owners else ""
                raise ParameterError(
                    f"analysis.finder (given to every finder; the {name} finder has no such "
                    "parameter): " + unknown_key_message(unknown[0], cls.Parameters.model_fields)
                    + hint)
            self.finders.append(cls(cls.Parameters.build(
                pars.finder, section, where=f"analysis.{_finder_key(name)}"
            )))
        self.simulator = Simulator(pars.simulator)
        if pars.num_injections:
            self._check_injections()
        self.histogram = Histogram(pars.histogram, self.histogram_name)
        self.classifier = Classifier(pars.classifier, load_class)
        if pars.classifier.enabled and not any(isinstance(f, TransitFinder) for f in self.finders):
            raise ParameterError("analysis.classifier: the classifier scores the transit "
                                 "search's candidates; add 'transit' to analysis.finders")
        #: Seconds spent in each step since this object was made (in this process).
        self.timings: Counter = Counter()

    def _check_injections(self) -> None:
        for kind, weight in self.pars.simulator.events.items():
            if weight > 0 and not any(finder.recovers(kind) for finder in self.finders):
                hint = {"transit": "add 'transit' to analysis.finders",
                        "dip": "set find_dips: true for the peak finder"}.get(kind, "add a finder")
                raise ParameterError(
                    f"analysis.simulator.events: {kind} injections need a finder that finds "
                    f"{kind}s, and none of {self.pars.finders} does ({hint}, or set its "
                    "frequency to 0)"
                )

    def resolved_parameters(self) -> dict[str, Any]:
        """Every parameter of the analysis and its finders, for ``config.yaml``."""
        values = self.pars.to_dict()
        values.pop("finder_sections", None)
        values.pop("finder", None)
        for finder in self.finders:
            values[finder.name] = finder.pars.to_dict()
        return values

    def critical_parameters(self) -> dict[str, Any]:
        """The parameters that change results (for the config hash)."""
        values = self.pars.to_dict(critical_only=True)
        values.pop("finder_sections", None)
        values.pop("finder", None)
        for finder in self.finders:
            values[finder.name] = finder.pars.to_dict(critical_only=True)
        if self.pars.classifier.enabled:
            values["classifier"]["model_sha256"] = self.classifier.model_hash()
        return values

    def check_ready(self) -> None:
        """Raise ParameterError for what would stop every source (a classifier model file
        that is damaged or made for other views).

        A model file not made yet is no error: the run goes on, each source records
        why it was not scored, and ``skyretriever train`` can use its light curves.
        """
        if self.pars.classifier.enabled:
            if self.classifier.model_hash() is None:
                logging.getLogger(__name__).warning(
                    "analysis.classifier.model_file %s does not exist yet: no source will be "
                    "scored (make it with 'skyretriever train CONFIG')",
                    self.pars.classifier.model_file)
                return
            try:
                self.classifier.model()
            except ModelFileError as error:
                raise ParameterError(f"analysis.classifier.model_file: {error}") from None

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Add the time spent in the block to ``timings[step]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[step] += time.perf_counter() - start

    # -- the work --------------------------------------------------------------------------
    def check_quality(self, lightcurve: Lightcurve) -> tuple[pd.DataFrame, dict[str, int]]:
        """A checked copy of a light curve's table and the epochs each check flagged."""
        return self.quality_checker.check(lightcurve.data)

    def search(self, frames: Sequence[pd.DataFrame], timed: bool = True) -> FinderResult:
        """Run every finder on the checked tables of one source and gather what they found.

        ``scores`` are those of the first finder that scores the epochs of each
        table; ``properties`` are merged over the finders. With ``timed``, each
        finder's time goes to ``timings[<finder name>]``.
        """
        result = FinderResult(scores=[None] * len(frames))
        for finder in self.finders:
            start = time.perf_counter()
            found = finder.find_source(frames)
            if timed:
                self.timings[finder.name] += time.perf_counter() - start
            result.detections += found.detections
            result.properties.update(found.properties)
            result.searched += found.searched
            for index, scores in enumerate(found.scores):
                if result.scores[index] is None and scores is not None:
                    result.scores[index] = scores
        return result

    def analyze(self, data_type: str, products: list[Any], source: Mapping[str, Any]
                ) -> AnalysisResult:
        """Analyse one source's reduced products of one data type.

        The pipeline calls this for every source; it hands the products to
        ``analyze_<data_type>`` (``analyze_photometry`` for light curves), so a
        new data type adds one method here (or in a subclass in ``extensions/``)
        and nothing in the pipeline.

        Examples
        --------
        >>> Analysis().analyze("spectra", [], {"name": "star"})
        Traceback (most recent call last):
        ...
        NotImplementedError: Analysis has no analyze_spectra: it analyses cutouts, images, photometry
        """
        method = getattr(self, f"analyze_{data_type}", None)
        if not callable(method):
            known = sorted(name.removeprefix("analyze_") for name in dir(self)
                           if name.startswith("analyze_") and callable(getattr(self, name)))
            raise NotImplementedError(f"{type(self).__name__} has no analyze_{data_type}: "
                                      f"it analyses {', '.join(known)}")
        return method(products, source)

    def analyze_images(self, lightcurves: list[Lightcurve], source: Mapping[str, Any]
                       ) -> AnalysisResult:
        """Analyse the light curves an image observatory made from its cutouts.

        Image cutouts are reduced to light curves by aperture photometry
        (``VirtualTESSFFI.reduce``), so every check, finder and property of
        :meth:`analyze_photometry` runs on them unchanged.
        """
        return self.analyze_photometry(lightcurves, source)

    def analyze_cutouts(self, images: list[dict[str, Any]], source: Mapping[str, Any]
                        ) -> AnalysisResult:
        """Solar events' image cutouts: what was made (the volunteers find the jets).

        ``images`` are the entries the AIA reduction made (image, FITS file,
        wavelength, time, pixel mapping); the properties count them.
        """
        wavelengths = sorted({int(entry["wavelength"]) for entry in images})
        return AnalysisResult(properties={
            "has_data": bool(images), "num_lightcurves": 0, "num_points": len(images),
            "num_good_points": len(images), "num_detections": 0, "num_injected": 0,
            "num_recovered": 0,
            "extra": {"num_images": len(images), "wavelengths": wavelengths},
        })

    def analyze_photometry(self, lightcurves: list[Lightcurve], source: Mapping[str, Any]
                           ) -> AnalysisResult:
        """Analyse every light curve of one source.

        Parameters
        ----------
        lightcurves
            The source's reduced light curves (any observatories); not modified.
        source
            The catalog row (``name``, ``mag``, ...).

        Returns
        -------
        AnalysisResult
            Properties values (every column; what is not a column goes in
            ``extra``), detections (each with every Detection column and
            ``lightcurve_index``, the position of its light curve in
            ``lightcurves``, or None for an event found in several) and
            histogram counts.
        """
        quality_counts: dict[str, int] = {}
        frames = []
        with self.timed("quality"):
            for lightcurve in lightcurves:
                frame, flagged = self.check_quality(lightcurve)
                frames.append(frame)
                for check, number in flagged.items():
                    quality_counts[check] = quality_counts.get(check, 0) + number
        found = self.search(frames)
        classified: dict[str, Any] = {}
        if self.pars.classifier.enabled:
            with self.timed("classifier"):
                classified = self.classify(found)
        detections = [self._detection_row(d, lightcurves) for d in found.detections]
        counts: SparseCounts = {}
        with self.timed("properties"):
            stats = _Statistics()
            for index, lightcurve in enumerate(lightcurves):
                scores = found.scores[index]
                scores = np.full(len(frames[index]), np.nan) if scores is None else scores
                stats.add(frames[index], scores)
                mine = [d["score"] * d["sign"] for d, raw in zip(detections, found.detections)
                        if _members(raw, len(lightcurves))[0] == index]
                add_sparse(counts, self.histogram.count_lightcurve(
                    self._magnitude(lightcurve, source), lightcurve.exptime, lightcurve.filter,
                    scores, mine, points=int(good_epochs(frames[index]).sum()),
                ))
            properties = stats.properties(len(lightcurves))
            if self.pars.periodogram.enabled:
                properties.update(lomb_scargle_peak(*stats.series(), pars=self.pars.periodogram))
            properties.update(found.properties)
            properties.update(classified)
        num_real = len(detections)
        injected = recovered = 0
        if self.pars.num_injections and frames:
            with self.timed("injections"):
                for event, match in self.inject_and_search(frames, source):
                    home = lightcurves[event.home]
                    add_sparse(counts, self.histogram.count_injection(
                        event.kind, self._magnitude(home, source), home.exptime, home.filter,
                        event.snr, match is not None,
                    ))
                    injected += 1
                    if match is not None:
                        recovered += 1
                        detections.append(self._detection_row(
                            match, lightcurves, simulated=True, injected=event.record()
                        ))
        properties.update(num_detections=num_real, quality_counts=quality_counts,
                          num_injected=injected, num_recovered=recovered)
        return AnalysisResult(properties=_row(properties, PROPERTIES_COLUMNS),
                              detections=detections, histogram=counts)

    def classify(self, found: FinderResult) -> dict[str, Any]:
        """Score the candidates of the transit search; the Properties values it gives.

        The best candidate of the source (the highest S/N over the filters, as
        the transit finder chooses it) gives ``ml_score``; each transit
        detection gets the score of its own filter's candidate (its
        ``ml_score`` is set in ``found.detections``). What could not be scored
        gets the reason in ``ml_not_scored``.
        """
        if not found.searched:
            return {"ml_score": None, "ml_not_scored": "not searched for transits (too few "
                    "points or too sparse a cadence)"}
        scored = self.classifier.score_searches(found.searched)
        for detection in found.detections:
            if detection.get("period") is None:
                continue
            index = detection.get("lightcurve_index")
            members = list(index) if isinstance(index, (list, tuple)) else [index]
            for search, (score, reason) in zip(found.searched, scored):
                if search.indices == members:
                    detection["ml_score"] = score
                    if reason is not None:
                        detection.setdefault("extra", {})["ml_not_scored"] = reason
        candidates = [(search.candidate.snr, number) for number, search in
                      enumerate(found.searched) if search.candidate is not None]
        if not candidates:
            return {"ml_score": None, "ml_not_scored": "no transit candidate"}
        score, reason = scored[max(candidates)[1]]
        return {"ml_score": score} if reason is None else {"ml_score": None,
                                                           "ml_not_scored": reason}

    def inject_and_search(self, frames: Sequence[pd.DataFrame], source: Mapping[str, Any]):
        """Yield ``(event, matching detection or None)`` for each of ``num_injections`` events.

        Each event goes into fresh copies of ``frames``, searched by every
        finder exactly as the real data were.
        """
        rng = self.simulator.random_state(str(source.get("name", "")))
        for _ in range(self.pars.num_injections):
            event = self.simulator.draw(frames, rng)
            if event is None:
                return
            found = self.search(self.simulator.inject(frames, event), timed=False)
            yield event, self.simulator.best_match(event, found.detections)

    # -- rows ------------------------------------------------------------------------------
    @staticmethod
    def _magnitude(lightcurve: Lightcurve, source: Mapping[str, Any]) -> float | None:
        """The magnitude a light curve is counted under: the catalog's, else its own mean."""
        mag = source.get("mag")
        return mag if mag is not None and np.isfinite(mag) else lightcurve.mag_mean

    @staticmethod
    def _detection_row(found: Mapping[str, Any], lightcurves: Sequence[Lightcurve],
                       simulated: bool = False, injected: dict[str, Any] | None = None
                       ) -> dict[str, Any]:
        """A finder's detection as a full Detection row, with ``lightcurve_index``."""
        values = dict(found)
        for key in ("score", "snr"):
            if values.get(key) is None:
                raise ValueError(f"finder {values.get('finder')!r} reported a detection "
                                 f"without {key!r}: {sorted(values)}")
        members = _members(values, len(lightcurves))
        values.pop("lightcurve_index", None)
        values.setdefault("sign", 1)
        values.setdefault("num_points", 0)
        for key in ("observatory", "filter"):
            shared = {getattr(lightcurves[i], key) for i in members}
            values[key] = shared.pop() if len(shared) == 1 else None
        values.update(is_simulated=simulated, injected=injected)
        row = _row(values, DETECTION_COLUMNS)
        row["lightcurve_index"] = members[0] if len(members) == 1 else None
        return row


def _members(detection: Mapping[str, Any], count: int) -> list[int]:
    """The light curves a finder's detection came from, of ``count``.

    ``lightcurve_index`` is one index or a list of them; a finder that gives
    none found the event in all the light curves together.
    """
    index = detection.get("lightcurve_index")
    if isinstance(index, (list, tuple)):
        return [int(i) for i in index]
    return [int(index)] if index is not None else list(range(count))


def _row(values: Mapping[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    """Every column (None where not given); values that are not columns go into ``extra``."""
    row = dict.fromkeys(columns)
    extra = dict(values.get("extra") or {})
    for key, value in values.items():
        if key in row:
            row[key] = value
        elif key != "extra":
            extra[key] = value
    row["extra"] = _json_safe(extra) or None
    if row.get("injected") is not None:
        row["injected"] = _json_safe(row["injected"])
    return row


def _json_safe(value: Any) -> Any:
    """A value for a JSON column, nested ones too: numpy to Python, NaN and infinities to None.

    (PostgreSQL's JSONB refuses NaN, and the standard json module cannot write numpy integers.)
    """
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


class _Statistics:
    """Accumulates the numbers that go into Properties over a source's light curves."""

    def __init__(self) -> None:
        self.num_points = 0
        self.num_good = 0
        self.times: list[float] = []
        self.mag_residuals: list[np.ndarray] = []
        self.mags: list[np.ndarray] = []
        self.flux_residuals: list[np.ndarray] = []
        self.best_snr: float | None = None
        self.normalised: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, frame: pd.DataFrame, scores: np.ndarray) -> None:
        self.num_points += len(frame)
        good = ~frame["qflag"].to_numpy(dtype=bool)
        self.num_good += int(good.sum())
        if not good.any():
            return
        times = frame["mjd"].to_numpy(dtype=float)[good]
        self.times += [float(times.min()), float(times.max())]
        if "mag" in frame:
            mags = frame["mag"].to_numpy(dtype=float)[good]
            mags = mags[np.isfinite(mags)]
            if len(mags):
                self.mags.append(mags)
                self.mag_residuals.append(mags - mags.mean())
        usable = good_epochs(frame)
        flux = frame["flux"].to_numpy(dtype=float)[usable]
        middle = median(flux)
        if len(flux) and middle > 0:
            self.flux_residuals.append(flux / middle - 1.0)
            self.normalised.append((frame["mjd"].to_numpy(dtype=float)[usable], flux / middle))
        finite = scores[np.isfinite(scores)]
        if len(finite):
            best = float(np.max(np.abs(finite)))
            self.best_snr = best if self.best_snr is None else max(self.best_snr, best)

    def series(self) -> tuple[np.ndarray, np.ndarray]:
        """Times and flux over each light curve's median, of every light curve together."""
        if not self.normalised:
            return np.array([]), np.array([])
        times, flux = (np.concatenate(arrays) for arrays in zip(*self.normalised))
        return times, flux

    def properties(self, num_lightcurves: int) -> dict[str, Any]:
        mags = np.concatenate(self.mags) if self.mags else np.array([])
        residuals = np.concatenate(self.mag_residuals) if self.mag_residuals else np.array([])
        flux = np.concatenate(self.flux_residuals) if self.flux_residuals else np.array([])
        return {
            "has_data": self.num_points > 0,
            "num_lightcurves": num_lightcurves,
            "num_points": self.num_points,
            "num_good_points": self.num_good,
            "time_span": (max(self.times) - min(self.times)) if self.times else None,
            "mag_mean": float(mags.mean()) if len(mags) else None,
            "mag_median": median(mags) if len(mags) else None,
            "mag_rms": float(residuals.std()) if len(residuals) else None,
            "flux_rms_ppm": float(MAD_TO_SIGMA * median(np.abs(flux - median(flux))) * 1e6)
            if len(flux) else None,
            "best_snr": self.best_snr,
        }
