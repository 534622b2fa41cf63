"""MAST missions: sources downloading at once follow the connection limit unless given."""

from __future__ import annotations

import pytest

from skyretriever.observatories import VirtualK2, VirtualKepler, VirtualTESS
from skyretriever.observatories.tess import TessParameters
from skyretriever.parameters import ParameterError


@pytest.mark.parametrize("observatory", [VirtualTESS, VirtualK2, VirtualKepler])
def test_download_workers_follow_max_connections_per_host(observatory):
    assert observatory(mast_url="http://127.0.0.1:1").pars.download_workers == 16
    assert observatory(mast_url="http://127.0.0.1:1",
                       max_connections_per_host=3).pars.download_workers == 6
    assert observatory(mast_url="http://127.0.0.1:1", max_connections_per_host=3,
                       download_workers=5).pars.download_workers == 5


def test_download_workers_given_in_any_layer_win():
    assert TessParameters.build({"max_connections_per_host": 4}).download_workers == 8
    assert TessParameters.build({"download_workers": 3},
                                {"max_connections_per_host": 4}).download_workers == 3
    with pytest.raises(ParameterError, match="max_connections_per_host"):
        TessParameters.build({"max_connections_per_host": 0})
