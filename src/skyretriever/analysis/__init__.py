"""Analysis: quality checks, finders, histograms."""

from __future__ import annotations

from skyretriever.analysis.analysis import (
    FINDERS,
    Analysis,
    AnalysisParameters,
    AnalysisResult,
    finder_class,
    load_class,
)
from skyretriever.analysis.finder import Finder, FinderParameters, robust_snr
from skyretriever.analysis.histogram import Histogram, HistogramParameters, update_histogram_file
from skyretriever.analysis.quality import QualityChecker, QualityParameters

__all__ = [
    "FINDERS",
    "Analysis",
    "AnalysisParameters",
    "AnalysisResult",
    "Finder",
    "FinderParameters",
    "Histogram",
    "HistogramParameters",
    "QualityChecker",
    "QualityParameters",
    "finder_class",
    "load_class",
    "robust_snr",
    "update_histogram_file",
]
