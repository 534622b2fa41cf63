"""Analysis: quality checks, finders (peaks, transits), injections, periodograms, histograms."""

from __future__ import annotations

from skyretriever.analysis.analysis import (
    FINDERS,
    Analysis,
    AnalysisParameters,
    AnalysisResult,
    finder_class,
    load_class,
)
from skyretriever.analysis.finder import (
    Finder,
    FinderParameters,
    FinderResult,
    PeakFinderParameters,
    robust_snr,
)
from skyretriever.analysis.histogram import (
    Histogram,
    HistogramParameters,
    recovery_efficiency,
    update_histogram_file,
)
from skyretriever.analysis.periodogram import PeriodogramParameters, lomb_scargle_peak
from skyretriever.analysis.quality import QualityChecker, QualityParameters
from skyretriever.analysis.simulator import (
    Distribution,
    InjectedEvent,
    Simulator,
    SimulatorParameters,
)
from skyretriever.analysis.transit import TransitCandidate, TransitFinder, TransitFinderParameters

__all__ = [
    "FINDERS",
    "Analysis",
    "AnalysisParameters",
    "AnalysisResult",
    "Distribution",
    "Finder",
    "FinderParameters",
    "FinderResult",
    "Histogram",
    "HistogramParameters",
    "InjectedEvent",
    "PeakFinderParameters",
    "PeriodogramParameters",
    "QualityChecker",
    "QualityParameters",
    "Simulator",
    "SimulatorParameters",
    "TransitCandidate",
    "TransitFinder",
    "TransitFinderParameters",
    "finder_class",
    "load_class",
    "lomb_scargle_peak",
    "recovery_efficiency",
    "robust_snr",
    "update_histogram_file",
]
