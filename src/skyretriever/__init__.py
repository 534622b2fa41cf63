"""skyretriever: time-series photometry for every star in a catalog.

Public names: :class:`Project`, :class:`Catalog`, the observatories and the
models. Importing the package creates no engine, connection or table.

Examples
--------
>>> from skyretriever import Project
>>> proj = Project(cfg_file="configs/demo.yaml")            # doctest: +SKIP
>>> print(proj.run())                                       # doctest: +SKIP
"""

from __future__ import annotations

from skyretriever._version import __version__
from skyretriever.analysis import Analysis, Finder, Histogram, QualityChecker
from skyretriever.catalogs import Catalog
from skyretriever.models import (
    Detection,
    HistogramBatch,
    Lightcurve,
    Properties,
    RawPhotometry,
    Source,
)
from skyretriever.observatories import (
    VirtualDemoObs,
    VirtualK2,
    VirtualKepler,
    VirtualObservatory,
    VirtualTESS,
    VirtualZTF,
)
from skyretriever.project import Project, RunSummary

# Fills skyretriever.drawing, so that lc.plot(), source.plot() and the others work.
from skyretriever import plots  # noqa: F401  isort: skip

__all__ = [
    "Analysis",
    "Catalog",
    "Detection",
    "Finder",
    "Histogram",
    "HistogramBatch",
    "Lightcurve",
    "Project",
    "Properties",
    "QualityChecker",
    "RawPhotometry",
    "RunSummary",
    "Source",
    "VirtualDemoObs",
    "VirtualK2",
    "VirtualKepler",
    "VirtualObservatory",
    "VirtualTESS",
    "VirtualZTF",
    "__version__",
]
