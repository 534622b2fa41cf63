"""VirtualKepler: Kepler light curves (long or short cadence, every quarter) from MAST.

A catalog row is matched by its ``kic_id``; without one, by the nearest
Kepler target observed within ``match_radius`` of its position. MAST holds
one observation per target with every quarter; the quarter of each file is
read from the product description (``... - Q4``) and checked against the
file's ``QUARTER`` keyword. Raw data holds every quarter (column
``quarter``); reduction gives one light curve per quarter, with ``bkjd``
(BJD - 2454833) beside ``mjd``.

:class:`VirtualKeplerSpacecraft` holds what Kepler and K2 share (the same
spacecraft, file layout, quality bits and cadences); :mod:`.k2` builds on it.

Examples
--------
>>> obs = VirtualKepler(quarters=[1, 2, 3])
>>> obs.target_from_row({"name": "Kepler-10", "kic_id": 11904151})
'kplr011904151'
>>> obs.quality_mask
1130799
"""

from __future__ import annotations

import re
from typing import Any, Literal

from skyretriever.observatories.base import register_observatory
from skyretriever.observatories.mast import MastParameters, VirtualMAST
from skyretriever.observatories.mast_client import exptime_filter, exptime_matches
from skyretriever.observatories.mission_files import (
    BJDREF_KEPLER,
    KEPLER_QUALITY_PRESETS,
    KEPLER_ZERO_POINT,
)
from skyretriever.parameters import parameter

__all__ = [
    "KeplerParameters",
    "KeplerSpacecraftParameters",
    "VirtualKepler",
    "VirtualKeplerSpacecraft",
]

#: File-name endings of Kepler and K2 light curves, by cadence (seconds, as MAST's ``t_exptime``).
LIGHTCURVE_SUFFIXES = {1800: "_llc.fits", 60: "_slc.fits"}
_QUARTER_IN_DESCRIPTION = re.compile(r"Q\s*-?\s*(\d+)\s*$", re.IGNORECASE)


class KeplerSpacecraftParameters(MastParameters):
    """Parameters of the Kepler spacecraft's missions (Kepler and K2)."""

    cadences: list[Literal[60, 1800]] = parameter(
        [1800], "Cadences in seconds: 1800 (long cadence), 60 (short cadence).", min_length=1
    )


class KeplerParameters(KeplerSpacecraftParameters):
    """Which Kepler light curves to fetch, and how."""

    quarters: list[int] | None = parameter(None, "Quarters to fetch, 0 to 17 (None: every quarter).")


class VirtualKeplerSpacecraft(VirtualMAST):
    """What Kepler and K2 share: file layout, time system, quality bits, cadences, bandpass."""

    QUALITY_PRESETS = KEPLER_QUALITY_PRESETS
    target_id_keyword = "KEPLERID"
    telescope = "Kepler"
    bjd_reference = BJDREF_KEPLER
    time_column = "bkjd"
    band = "Kepler"
    quality_column = "sap_quality"
    zero_point = KEPLER_ZERO_POINT

    def observation_criteria(self) -> list[dict[str, Any]]:
        return [
            {"paramName": "obs_collection", "values": [self.mission]},
            {"paramName": "provenance_name", "values": [self.mission]},
            {"paramName": "dataproduct_type", "values": ["cube", "timeseries"]},
            exptime_filter(self.pars.cadences),
            *self.sequence_criteria(),
        ]

    def wanted_observation(self, observation: dict[str, Any]) -> bool:
        return (str(observation.get("provenance_name") or "").lower() == self.mission.lower()
                and exptime_matches(observation.get("t_exptime"), self.pars.cadences))

    def wanted_product(self, product: dict[str, Any], observation: dict[str, Any]) -> bool:
        filename = str(product.get("productFilename") or "").lower()
        return any(filename.endswith(LIGHTCURVE_SUFFIXES[c]) for c in self.pars.cadences)


@register_observatory
class VirtualKepler(VirtualKeplerSpacecraft):
    """Kepler light curves from MAST (the S3 bucket first, MAST HTTPS as fallback)."""

    name = "kepler"
    Parameters = KeplerParameters
    download_parameters = (*VirtualKeplerSpacecraft.download_parameters, "cadences", "quarters")
    split_columns = ("quarter", "exptime")
    mission = "Kepler"
    sequence_column = "quarter"

    def target_from_row(self, row: dict[str, Any]) -> str | None:
        kic = row.get("kic_id")
        return None if kic is None else f"kplr{int(kic):09d}"

    def sequence_criteria(self) -> list[dict[str, Any]]:
        return []  # one observation holds every quarter: quarters are chosen file by file

    def product_sequence(self, product: dict[str, Any], observation: dict[str, Any]) -> int | None:
        match = _QUARTER_IN_DESCRIPTION.search(str(product.get("description") or ""))
        return int(match.group(1)) if match else None

    def wanted_sequences(self) -> list[int] | None:
        return self.pars.quarters
