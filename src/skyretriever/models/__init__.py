"""The tables: one module per model.

Importing this package defines the tables; it creates no engine and no table.
"""

from __future__ import annotations

from skyretriever.models.base import Base
from skyretriever.models.datasets import (
    Lightcurve,
    RawPhotometry,
    SourceRawData,
    save_lightcurves,
)
from skyretriever.models.detection import Detection
from skyretriever.models.histogram import Histogram, HistogramBatch, HistogramParameters
from skyretriever.models.images import Cutout, FFIFile, RawImages, RawImageSector
from skyretriever.models.properties import Properties
from skyretriever.models.raw import RawData, data_types, raw_data_class
from skyretriever.models.solar import CutoutJob, RawCutouts
from skyretriever.models.source import Source

__all__ = [
    "Base",
    "Cutout",
    "CutoutJob",
    "Detection",
    "FFIFile",
    "Histogram",
    "HistogramBatch",
    "HistogramParameters",
    "Lightcurve",
    "Properties",
    "RawCutouts",
    "RawData",
    "RawImageSector",
    "RawImages",
    "RawPhotometry",
    "Source",
    "SourceRawData",
    "data_types",
    "raw_data_class",
    "save_lightcurves",
]
