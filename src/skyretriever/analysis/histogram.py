"""The histograms the analysis fills, from :mod:`skyretriever.models.histogram` where they live.

:class:`Histogram` and its helpers are data (a netCDF file beside the
database's :class:`~skyretriever.models.HistogramBatch` rows), so they live in
the data layer; this module keeps the names the analysis and older code use.

Examples
--------
>>> from skyretriever.models import Histogram as FromModels
>>> Histogram is FromModels
True
>>> int(Histogram().total("points"))
0
"""

from __future__ import annotations

from skyretriever.models.histogram import (
    EVENTS,
    OTHER_FILTER,
    VARIABLES,
    Histogram,
    HistogramFileError,
    HistogramParameters,
    SparseCounts,
    add_sparse,
    recovery_efficiency,
    update_histogram_file,
)

__all__ = [
    "EVENTS",
    "OTHER_FILTER",
    "VARIABLES",
    "Histogram",
    "HistogramFileError",
    "HistogramParameters",
    "SparseCounts",
    "add_sparse",
    "recovery_efficiency",
    "update_histogram_file",
]
