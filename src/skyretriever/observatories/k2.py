"""VirtualK2: K2 light curves (long or short cadence, every campaign) from MAST.

A catalog row is matched by its ``epic_id``; without one, by the nearest K2
target observed within ``match_radius`` of its position. Raw data holds
every campaign (column ``campaign``); reduction gives one light curve per
campaign, with ``bkjd`` (BJD - 2454833) beside ``mjd``.

Examples
--------
>>> obs = VirtualK2(campaigns=[1])
>>> obs.target_from_row({"name": "K2-18", "epic_id": 201912552})
'ktwo201912552'
>>> obs.quality_mask
1130799
"""

from __future__ import annotations

from typing import Any, Literal

from skyretriever.observatories.base import register_observatory
from skyretriever.observatories.kepler import kepler_file_wanted
from skyretriever.observatories.mast import (
    KEPLER_QUALITY_PRESETS,
    KEPLER_ZERO_POINT,
    MastParameters,
    VirtualMAST,
    exptime_filter,
    exptime_matches,
)
from skyretriever.parameters import parameter

__all__ = ["K2Parameters", "VirtualK2"]


class K2Parameters(MastParameters):
    """Which K2 light curves to fetch, and how."""

    cadences: list[Literal[60, 1800]] = parameter(
        [1800], "Cadences in seconds: 1800 (long cadence), 60 (short cadence).", min_length=1
    )
    campaigns: list[int] | None = parameter(None, "Campaigns to fetch (None: every campaign).")


@register_observatory
class VirtualK2(VirtualMAST):
    """K2 light curves from MAST (the S3 bucket first, MAST HTTPS as fallback)."""

    name = "k2"
    Parameters = K2Parameters
    QUALITY_PRESETS = KEPLER_QUALITY_PRESETS
    split_columns = ("campaign", "exptime")
    mission = "K2"
    sequence_column = "campaign"
    time_column = "bkjd"
    band = "Kepler"
    quality_column = "sap_quality"
    zero_point = KEPLER_ZERO_POINT

    def target_from_row(self, row: dict[str, Any]) -> str | None:
        epic = row.get("epic_id")
        return None if epic is None else f"ktwo{int(epic):09d}"

    def observation_criteria(self) -> list[dict[str, Any]]:
        criteria = [
            {"paramName": "obs_collection", "values": ["K2"]},
            {"paramName": "provenance_name", "values": ["K2"]},
            {"paramName": "dataproduct_type", "values": ["cube", "timeseries"]},
            exptime_filter(self.pars.cadences),
        ]
        if self.pars.campaigns is not None:
            criteria.append({"paramName": "sequence_number",
                             "values": [str(c) for c in self.pars.campaigns]})
        return criteria

    def wanted_observation(self, observation: dict[str, Any]) -> bool:
        return (str(observation.get("provenance_name") or "").upper() == "K2"
                and exptime_matches(observation.get("t_exptime"), self.pars.cadences))

    def wanted_product(self, product: dict[str, Any], observation: dict[str, Any]) -> bool:
        return kepler_file_wanted(product, self.pars.cadences)

    def wanted_sequences(self) -> list[int] | None:
        return self.pars.campaigns
