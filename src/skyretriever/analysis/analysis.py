"""Analysis: quality checks, then the finders, then properties and histogram counts.

One call of :meth:`Analysis.analyze_photometry` handles every light curve of
one source (from every observatory) and returns plain values: a Properties
row, Detection rows and sparse histogram counts. It never changes the light
curves it is given; the quality checker and finders work on copies.

Subclass it in ``extensions/`` to add parameters or override
``analyze_photometry``; point a project at it with ``analysis_module`` and
``analysis_class``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from skyretriever.analysis.finder import MAD_TO_SIGMA, Finder
from skyretriever.analysis.histogram import (
    Histogram,
    HistogramParameters,
    SparseCounts,
    add_sparse,
)
from skyretriever.analysis.quality import QualityChecker, QualityParameters
from skyretriever.models.datasets import Lightcurve
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

FINDERS: dict[str, type[Finder]] = {"peak": Finder}


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
    """Parameters of the analysis: the checks, the finders and the histogram bins."""

    aliases = {"finder_kwargs": "finder", "quality_kwargs": "quality",
               "histogram_kwargs": "histogram"}

    finders: list[str] = parameter(
        ["peak"], "Finders to run, by name or 'module:Class'; each is configured under its name."
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
    histogram: HistogramParameters = parameter(
        default_factory=HistogramParameters, doc="Bins of the histograms."
    )

    @classmethod
    def prepare_input(cls, data: dict[str, Any]) -> dict[str, Any]:
        finders = data.get("finders", cls.model_fields["finders"].default)
        if not isinstance(finders, list):
            return data
        sections = dict(data.get("finder_sections") or {})
        for name in finders:
            key = name if isinstance(name, str) else None
            if key is None:
                continue
            short = key.rpartition(":")[2] if ":" in key else key
            for candidate in {key, short, short.lower()}:
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
    """Quality checks, finders, properties and histogram counts for one source at a time.

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
    >>> result = Analysis().analyze_photometry(lightcurves, row)
    >>> result.properties["num_lightcurves"]
    4
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
            self.finders.append(cls(cls.Parameters.build(
                pars.finder, section, where=f"analysis.{_finder_key(name)}"
            )))
        self.histogram = Histogram(pars.histogram, self.histogram_name)

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
        return values

    # -- the work --------------------------------------------------------------------------
    def check_quality(self, lightcurve: Lightcurve) -> tuple[pd.DataFrame, dict[str, int]]:
        """A checked copy of a light curve's table and the epochs each check flagged."""
        return self.quality_checker.check(lightcurve.data)

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
            Properties values, detections (each with ``lightcurve_index``, the
            position of its light curve in ``lightcurves``) and histogram counts.
        """
        quality_counts: dict[str, int] = {}
        detections: list[dict[str, Any]] = []
        counts: SparseCounts = {}
        stats = _Statistics()
        catalog_mag = source.get("mag")
        for index, lightcurve in enumerate(lightcurves):
            frame, flagged = self.check_quality(lightcurve)
            for check, number in flagged.items():
                quality_counts[check] = quality_counts.get(check, 0) + number
            all_scores = []
            found_here = []
            for finder in self.finders:
                found, scores = finder.find(frame)
                all_scores.append(scores)
                for detection in found:
                    detection.update(
                        lightcurve_index=index,
                        observatory=lightcurve.observatory,
                        filter=lightcurve.filter,
                        is_simulated=False,
                    )
                found_here.extend(found)
            detections.extend(found_here)
            scores = all_scores[0] if all_scores else np.full(len(frame), np.nan)
            stats.add(frame, scores)
            mag = catalog_mag if catalog_mag is not None and np.isfinite(catalog_mag) else (
                lightcurve.mag_mean
            )
            add_sparse(counts, self.histogram.count_lightcurve(
                mag, lightcurve.exptime, lightcurve.filter, scores,
                [d["score"] * d["sign"] for d in found_here],
            ))
        properties = stats.properties(len(lightcurves))
        properties.update(num_detections=len(detections), quality_counts=quality_counts)
        return AnalysisResult(properties=properties, detections=detections, histogram=counts)


class _Statistics:
    """Accumulates the numbers that go into Properties over a source's light curves."""

    def __init__(self) -> None:
        self.num_points = 0
        self.num_good = 0
        self.times: list[float] = []
        self.mags: list[np.ndarray] = []
        self.mag_residuals: list[np.ndarray] = []
        self.flux_residuals: list[np.ndarray] = []
        self.best_snr: float | None = None

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
        flux = frame["flux"].to_numpy(dtype=float)[good]
        flux = flux[np.isfinite(flux)]
        median = np.median(flux) if len(flux) else np.nan
        if len(flux) and median > 0:
            self.flux_residuals.append(flux / median - 1.0)
        finite = scores[np.isfinite(scores)]
        if len(finite):
            best = float(np.max(np.abs(finite)))
            self.best_snr = best if self.best_snr is None else max(self.best_snr, best)

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
            "mag_median": float(np.median(mags)) if len(mags) else None,
            "mag_rms": float(residuals.std()) if len(residuals) else None,
            "flux_rms_ppm": float(MAD_TO_SIGMA * np.median(np.abs(flux - np.median(flux))) * 1e6)
            if len(flux) else None,
            "best_snr": self.best_snr,
        }
