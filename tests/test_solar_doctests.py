"""The examples in the solar modules' docstrings run and give what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["skyretriever.catalogs.hek", "skyretriever.observatories.aia",
           "skyretriever.models.solar", "skyretriever.solar.images", "skyretriever.zooniverse",
           "skyretriever.testing.hek", "skyretriever.testing.aia",
           "skyretriever.testing.zooniverse", "skyretriever.testing.panoptes"]


@pytest.mark.parametrize("name", MODULES)
def test_the_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
