"""VirtualTESS: TESS light curves (SPOC 2-min and 20-s, TESS-SPOC from full-frame images) from MAST.

A catalog row is matched to a TIC id by its ``tic_id``; else by its
``gaia_id`` (one TIC query for the whole batch); else by a TIC cone search
around its position (moved to epoch 2000 with its proper motion), keeping the
nearest star within ``match_radius`` whose TESS magnitude is within
``match_mag_tolerance`` of the catalog's ``mag``. Raw data holds every sector
(column ``sector``); reduction gives one light curve per sector and cadence,
with ``btjd`` (BJD - 2457000) beside ``mjd``.

Examples
--------
>>> obs = VirtualTESS(mast_url="http://127.0.0.1:8000", use_cloud=False, sectors=[1, 2])
>>> obs.pars.cadences, obs.quality_mask
([120], 17087)
>>> raw = obs.download({"name": "pi Men", "ra": 84.29, "dec": -80.47, "mag": 5.1,
...                     "tic_id": 261136679})                                   # doctest: +SKIP
>>> [lc.series_number for lc in obs.reduce(raw)]                                # doctest: +SKIP
[1, 2]
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import model_validator

from skyretriever.healpix import angular_distance
from skyretriever.observatories.base import register_observatory
from skyretriever.observatories.mast import MastParameters, Resolution, VirtualMAST
from skyretriever.observatories.mast_client import exptime_filter, exptime_matches, in_chunks
from skyretriever.observatories.mission_files import TESS_QUALITY_PRESETS, TESS_ZERO_POINT
from skyretriever.parameters import parameter

__all__ = ["AUTHOR_CADENCES", "TessParameters", "VirtualTESS"]

#: The cadences (seconds) each supported pipeline makes light curves at.
AUTHOR_CADENCES = {"SPOC": (20, 120), "TESS-SPOC": (200, 600, 1800)}
#: MAST ``obs_collection`` of each pipeline's light curves.
AUTHOR_COLLECTIONS = {"SPOC": "TESS", "TESS-SPOC": "HLSP"}


class TessParameters(MastParameters):
    """Which TESS light curves to fetch, and how."""

    authors: list[Literal["SPOC", "TESS-SPOC"]] = parameter(
        ["SPOC"], "Pipelines: SPOC (2-min and 20-s targets), TESS-SPOC (full-frame images).",
        min_length=1,
    )
    cadences: list[Literal[20, 120, 200, 600, 1800]] = parameter(
        [120], "Cadences in seconds: 20, 120 (SPOC); 200, 600, 1800 (TESS-SPOC).", min_length=1
    )
    sectors: list[int] | None = parameter(None, "Sectors to fetch (None: every sector).")

    @model_validator(mode="after")
    def _authors_have_cadences(self) -> TessParameters:
        for author in self.authors:
            if not set(AUTHOR_CADENCES[author]) & set(self.cadences):
                raise ValueError(
                    f"authors: {author} makes light curves at {list(AUTHOR_CADENCES[author])} s, "
                    f"none of which is in cadences={self.cadences}; add one, or every source "
                    "would be recorded as having no data"
                )
        return self


@register_observatory
class VirtualTESS(VirtualMAST):
    """TESS light curves from MAST (the S3 bucket first, MAST HTTPS as fallback)."""

    name = "tess"
    Parameters = TessParameters
    download_parameters = (*VirtualMAST.download_parameters, "authors", "cadences", "sectors")
    QUALITY_PRESETS = TESS_QUALITY_PRESETS
    split_columns = ("sector", "exptime")
    mission = "TESS"
    sequence_column = "sector"
    time_column = "btjd"
    band = "TESS"
    quality_column = "quality"
    zero_point = TESS_ZERO_POINT

    def target_from_row(self, row: dict[str, Any]) -> str | None:
        tic = row.get("tic_id")
        return None if tic is None else str(int(tic))

    def observation_criteria(self) -> list[dict[str, Any]]:
        pars = self.pars
        return [
            {"paramName": "obs_collection",
             "values": sorted({AUTHOR_COLLECTIONS[a] for a in pars.authors})},
            {"paramName": "dataproduct_type", "values": ["timeseries"]},
            {"paramName": "provenance_name", "values": list(pars.authors)},
            exptime_filter(pars.cadences),
            *self.sequence_criteria(),
        ]

    def wanted_observation(self, observation: dict[str, Any]) -> bool:
        pars = self.pars
        author = str(observation.get("provenance_name") or "").upper()
        return (
            author in {a.upper() for a in pars.authors}
            and str(observation.get("target_name", "")) not in ("TESS FFI", "TICA FFI")
            and exptime_matches(observation.get("t_exptime"), pars.cadences)
        )

    def wanted_product(self, product: dict[str, Any], observation: dict[str, Any]) -> bool:
        filename = str(product.get("productFilename") or "").lower()
        kind = str(product.get("productType") or "SCIENCE").upper()
        return filename.endswith("lc.fits") and kind == "SCIENCE"

    def wanted_sequences(self) -> list[int] | None:
        return self.pars.sectors

    # -- TIC matching ------------------------------------------------------------------------
    def resolve_targets(self, rows: list[dict[str, Any]]) -> dict[str, Resolution]:
        """TIC ids from ``tic_id``, else ``gaia_id`` (batched), else position and magnitude."""
        found: dict[str, Resolution] = {}
        for row in rows:
            if row.get("tic_id") is not None:
                found[row["name"]] = Resolution(self.target_from_row(row),
                                                {"resolved_by": "catalog tic_id"})
        by_gaia = [r for r in rows if r["name"] not in found and r.get("gaia_id") is not None]
        if by_gaia:
            gaia_ids = sorted({str(int(r["gaia_id"])) for r in by_gaia})
            tic_rows = [tic for chunk in in_chunks(gaia_ids, self.pars.download_batch_size)
                        for tic in self.mast.tic_rows("GAIA", chunk)]
            tic_by_gaia = {str(tic.get("GAIA")): tic for tic in tic_rows if tic.get("GAIA")}
            for row in by_gaia:
                tic = tic_by_gaia.get(str(int(row["gaia_id"])))
                if tic is not None:
                    found[row["name"]] = Resolution(
                        str(int(tic["ID"])), {"resolved_by": "gaia_id", "tic": _tic_summary(tic)})
        by_position = [r for r in rows if r["name"] not in found]
        for row, resolution in zip(by_position, self.mast.map(self._match_tic, by_position)):
            found[row["name"]] = resolution
        return found

    def _match_tic(self, row: dict[str, Any]) -> Resolution:
        """The nearest TIC star within ``match_radius`` whose Tmag is close to the row's mag."""
        pars = self.pars
        ra, dec = self.position_at_2000(row)
        candidates = self.mast.tic_cone(ra, dec, pars.match_radius / 3600.0)
        mag = row.get("mag")
        use_mag = (pars.match_mag_tolerance is not None and mag is not None
                   and math.isfinite(mag))
        matches = []
        for tic in candidates:
            distance = float(angular_distance(ra, dec, float(tic["ra"]), float(tic["dec"]))) * 3600.0
            if distance > pars.match_radius:
                continue
            tmag = tic.get("Tmag")
            if use_mag and (tmag is None or abs(float(tmag) - mag) > pars.match_mag_tolerance):
                continue
            matches.append((distance, tic))
        provenance: dict[str, Any] = {"resolved_by": "TIC cone", "candidates": len(candidates)}
        if not matches:
            clause = (f" with Tmag within {pars.match_mag_tolerance:g} of {mag:.2f}"
                      if use_mag else "")
            provenance["reason"] = f"no TIC star within {pars.match_radius:g} arcsec{clause}"
            return Resolution(None, provenance)
        distance, tic = min(matches, key=lambda item: item[0])
        provenance.update(distance_arcsec=round(distance, 4), tic=_tic_summary(tic))
        return Resolution(str(int(tic["ID"])), provenance)


def _tic_summary(tic: dict[str, Any]) -> dict[str, Any]:
    return {key: tic.get(key) for key in ("ID", "ra", "dec", "Tmag", "Teff", "GAIA", "KIC")
            if key in tic}
