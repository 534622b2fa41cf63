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

from typing import Any

from skyretriever.observatories.base import register_observatory
from skyretriever.observatories.kepler import KeplerSpacecraftParameters, VirtualKeplerSpacecraft
from skyretriever.parameters import parameter

__all__ = ["K2Parameters", "VirtualK2"]


class K2Parameters(KeplerSpacecraftParameters):
    """Which K2 light curves to fetch, and how."""

    campaigns: list[int] | None = parameter(None, "Campaigns to fetch (None: every campaign).")


@register_observatory
class VirtualK2(VirtualKeplerSpacecraft):
    """K2 light curves from MAST (the S3 bucket first, MAST HTTPS as fallback)."""

    name = "k2"
    Parameters = K2Parameters
    download_parameters = (*VirtualKeplerSpacecraft.download_parameters, "cadences", "campaigns")
    split_columns = ("campaign", "exptime")
    mission = "K2"
    sequence_column = "campaign"

    def target_from_row(self, row: dict[str, Any]) -> str | None:
        epic = row.get("epic_id")
        return None if epic is None else f"ktwo{int(epic):09d}"

    def wanted_sequences(self) -> list[int] | None:
        return self.pars.campaigns
