"""skyretriever: time-series photometry for every star in a catalog.

Public names: :class:`Project`, :class:`Catalog`, the observatories and the
models. Importing the package creates no engine, connection or table.

The package is built in layers, each using only itself and those below
(``docs/architecture.md`` has the map and the recipes; ``lint-imports``
enforces it): presentation (``cli``, ``report``, ``plots``, ``query``) >
application (``fetching`` > ``project``) > orchestration (``pipeline``, ``execution``,
``checker``, ``queries``) > domain (``observatories``, ``catalogs``,
``analysis``) > data (``models``, ``database``, ``migrations``) > foundation
(``parameters``, ``storage``, ``net``, ``healpix``, ``fitsfile``, ``errors``,
``drawing``, ``progress``, ``_version``). ``testing`` stands apart: it may use
anything and nothing here imports it. Nothing inside the package imports this
face.

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
from skyretriever.fetching import fetch
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
    "fetch",
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
