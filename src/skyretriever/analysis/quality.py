"""QualityChecker: named checks that flag epochs, never delete or change them.

Each check is a parameter (switched off with ``false``, ``null`` or an empty
setting), adds the epochs it finds to ``qflag`` and counts them under its own
name, so a Properties row tells how much each check took away:

- ``quality_flags``: the observatory's quality word matched its bitmask
  (the reducer's ``qflag``), and ``quality_bitmask`` adds bits of its own;
- ``non_finite``: flux, magnitude or their errors are not finite;
- ``negative_flux``: zero or negative flux;
- ``saturation``: brighter than a limit per filter;
- ``position_outliers``: centroid or position offsets far from the light
  curve's median, in robust standard deviations (1.4826 MAD) of each axis;
- ``min_points``: a light curve with too few good epochs is flagged whole.

Counts are of epochs newly flagged by each check, in the order above, so
they add up to the flagged total.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from skyretriever.analysis.series import median, robust_std
from skyretriever.parameters import Parameters, parameter

__all__ = ["QualityChecker", "QualityParameters"]

#: Column pairs holding positions per epoch, as the observatories name them.
POSITION_COLUMNS = [
    ["centroid_col", "centroid_row"],
    ["mom_centr1", "mom_centr2"],
    ["ra", "dec"],
]


class QualityParameters(Parameters):
    """Which quality checks run; each adds to ``qflag`` and to its own count."""

    quality_flags: bool = parameter(
        True, "Flag epochs whose quality word matched the observatory's bitmask (reducer qflag)."
    )
    quality_bitmask: int = parameter(
        0, "Further bits of the quality word that flag an epoch (0: only the observatory's).",
        ge=0,
    )
    non_finite: bool = parameter(True, "Flag epochs whose flux, magnitude or error is not finite.")
    negative_flux: bool = parameter(True, "Flag epochs with zero or negative flux.")
    saturation_mag: dict[str, float] = parameter(
        {}, "Per filter, flag epochs brighter than this magnitude as saturated "
        "(e.g. {g: 12.5, r: 12.5}; '*' for every filter).",
    )
    position_sigma: float | None = parameter(
        5.0, "Flag epochs whose centroid or position is this many robust standard deviations "
        "from the median (None: no check).", gt=0,
    )
    position_columns: list[list[str]] = parameter(
        POSITION_COLUMNS, "Column pairs with a position per epoch; each pair present is checked.",
    )
    min_points: int = parameter(
        5, "Flag every epoch of a light curve with fewer good epochs than this.", ge=0
    )


class QualityChecker:
    """Apply the quality checks to one light-curve table.

    Examples
    --------
    >>> frame = pd.DataFrame({"mjd": [1.0, 2, 3, 4, 5, 6], "flux": [1.0, -1, 1, 1, 1, 1],
    ...                       "qflag": [False] * 6})
    >>> checked, counts = QualityChecker().check(frame)
    >>> int(checked["qflag"].sum()), counts["negative_flux"]
    (1, 1)
    >>> bool(frame["qflag"].any())                  # the input is untouched
    False
    """

    Parameters = QualityParameters

    def __init__(self, pars: QualityParameters | None = None, **kwargs: Any) -> None:
        self.pars = pars if pars is not None else self.Parameters.build(kwargs, where="analysis.quality")

    def check(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
        """Return a copy of ``frame`` with ``qflag`` updated, and the epochs each check flagged."""
        pars = self.pars
        # The analysis's own working copy, without the units in ``attrs``: pandas would
        # deep-copy them into every column and slice taken here and by the finders.
        frame = frame.copy()
        frame.attrs = {}
        n = len(frame)
        flags = np.zeros(n, dtype=bool)
        counts: dict[str, int] = {}

        def apply(name: str, bad: np.ndarray) -> None:
            counts[name] = int((bad & ~flags).sum())
            flags[:] |= bad

        if pars.quality_flags:
            bad = frame["qflag"].to_numpy(dtype=bool) if "qflag" in frame else np.zeros(n, bool)
            if pars.quality_bitmask and "quality" in frame:
                bad = bad | ((frame["quality"].to_numpy(dtype=np.int64) & pars.quality_bitmask) != 0)
            apply("quality_flags", bad)
        if pars.non_finite:
            bad = np.zeros(n, dtype=bool)
            for column in ("flux", "flux_err", "mag", "mag_err"):
                if column in frame:
                    bad |= ~np.isfinite(frame[column].to_numpy(dtype=float))
            apply("non_finite", bad)
        if pars.negative_flux and "flux" in frame:
            with np.errstate(invalid="ignore"):
                apply("negative_flux", frame["flux"].to_numpy(dtype=float) <= 0)
        if pars.saturation_mag and "mag" in frame:
            apply("saturation", self._saturated(frame))
        if pars.position_sigma is not None:
            apply("position_outliers", self._position_outliers(frame, ~flags))
        if pars.min_points:
            too_few = (n - flags.sum()) < pars.min_points
            apply("min_points", np.full(n, too_few))
        frame["qflag"] = flags
        return frame, counts

    def _saturated(self, frame: pd.DataFrame) -> np.ndarray:
        """Epochs brighter than the saturation limit of their filter."""
        limits = self.pars.saturation_mag
        default = limits.get("*", -np.inf)
        if "filter" in frame:   # a limit per distinct filter, not per epoch
            codes, bands = pd.factorize(frame["filter"].astype(str))
            limit = np.array([limits.get(band, default) for band in bands] + [default])[codes]
        else:
            limit = np.full(len(frame), default)
        with np.errstate(invalid="ignore"):
            return frame["mag"].to_numpy(dtype=float) < limit

    def _position_outliers(self, frame: pd.DataFrame, good: np.ndarray) -> np.ndarray:
        """Epochs far from the median position, each axis in its own robust standard deviations.

        The median and scatter come from the epochs no earlier check flagged,
        so bad epochs do not widen the scatter that judges them.

        Examples
        --------
        >>> rng = np.random.default_rng(2)
        >>> frame = pd.DataFrame({"ra": 10 + 1e-5 * rng.standard_normal(50),
        ...                       "dec": -5 + 1e-5 * rng.standard_normal(50)})
        >>> frame.loc[7, "ra"] += 2e-4                  # 20 sigma off in one epoch
        >>> np.flatnonzero(QualityChecker()._position_outliers(frame, np.ones(50, bool))).tolist()
        [7]
        """
        outliers = np.zeros(len(frame), dtype=bool)
        for pair in self.pars.position_columns:
            if len(pair) != 2 or not all(column in frame for column in pair):
                continue
            distance = np.zeros(len(frame))
            for column in pair:
                values = frame[column].to_numpy(dtype=float)
                reference = values[good & np.isfinite(values)]
                if len(reference) < 5:
                    break
                offset = values - median(reference)
                if column == "ra":  # right ascension wraps at 360 degrees
                    offset = (offset + 180.0) % 360.0 - 180.0
                scale = robust_std(offset[good])
                if not scale > 0:
                    break
                distance += (offset / scale) ** 2
            else:
                with np.errstate(invalid="ignore"):
                    outliers |= np.sqrt(distance) > self.pars.position_sigma
        return outliers
