"""QualityChecker: named checks that flag epochs, never delete or change them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from skyretriever.parameters import Parameters, parameter

__all__ = ["QualityChecker", "QualityParameters"]


class QualityParameters(Parameters):
    """Which quality checks run; each adds to ``qflag`` and to its own count."""

    quality_flags: bool = parameter(
        True, "Flag epochs whose quality word matched the observatory's bitmask (reducer qflag)."
    )
    non_finite: bool = parameter(True, "Flag epochs whose flux, magnitude or error is not finite.")
    negative_flux: bool = parameter(True, "Flag epochs with zero or negative flux.")
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
        n = len(frame)
        flags = np.zeros(n, dtype=bool)
        counts: dict[str, int] = {}

        def apply(name: str, bad: np.ndarray) -> None:
            counts[name] = int(bad.sum())
            flags[:] |= bad

        if pars.quality_flags and "qflag" in frame:
            apply("quality_flags", frame["qflag"].to_numpy(dtype=bool))
        if pars.non_finite:
            bad = np.zeros(n, dtype=bool)
            for column in ("flux", "flux_err", "mag", "mag_err"):
                if column in frame:
                    bad |= ~np.isfinite(frame[column].to_numpy(dtype=float))
            apply("non_finite", bad)
        if pars.negative_flux and "flux" in frame:
            with np.errstate(invalid="ignore"):
                apply("negative_flux", frame["flux"].to_numpy(dtype=float) <= 0)
        if pars.min_points:
            too_few = (n - flags.sum()) < pars.min_points
            apply("min_points", np.full(n, too_few) & ~flags)
        result = frame.copy()
        result["qflag"] = flags
        return result, counts
