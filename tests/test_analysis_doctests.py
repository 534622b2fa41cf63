"""The examples in the analysis modules' and extensions' docstrings run and say what they do."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "skyretriever.analysis.analysis",
    "skyretriever.analysis.finder",
    "skyretriever.analysis.histogram",
    "skyretriever.analysis.periodogram",
    "skyretriever.analysis.quality",
    "skyretriever.analysis.series",
    "skyretriever.analysis.simulator",
    "skyretriever.analysis.synthetic",
    "skyretriever.analysis.transit",
    "skyretriever.analysis.views",
    "skyretriever.analysis.classifier",
    "skyretriever.analysis.training",
    "extensions.dimming",
    "extensions.flare_rate",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
