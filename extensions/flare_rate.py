"""FlareRateAnalysis: the standard analysis, plus each star's flare rate and an upper limit.

An example of an Analysis subclass with parameters of its own and an
overridden :meth:`~skyretriever.analysis.Analysis.analyze_photometry`. It
counts the real flares at least ``rate_snr`` strong, divides by the time the
star was watched, and, where no flare was seen, gives the Poisson upper limit
on the rate at ``confidence``. Injected flares measure the recovery efficiency
of the same search, which the rate is corrected for. The values go into the
Properties row's ``extra`` column.

Use it from YAML::

    project:
      analysis_module: extensions.flare_rate
      analysis_class: FlareRateAnalysis
    analysis:
      rate_snr: 7.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.stats import chi2

from skyretriever.analysis import Analysis, AnalysisParameters, AnalysisResult
from skyretriever.models import Lightcurve
from skyretriever.parameters import parameter

__all__ = ["FlareRateAnalysis", "FlareRateParameters", "poisson_upper_limit"]


def poisson_upper_limit(count: int, confidence: float = 0.95) -> float:
    """Upper limit on a Poisson mean after seeing ``count`` events.

    Examples
    --------
    >>> round(poisson_upper_limit(0), 3), round(poisson_upper_limit(3), 3)
    (2.996, 7.754)
    """
    return float(chi2.ppf(confidence, 2 * (count + 1)) / 2)


class FlareRateParameters(AnalysisParameters):
    """The standard analysis parameters, and those of the flare rate."""

    rate_snr: float = parameter(7.0, "Flares at least this strong count toward the rate.", gt=0)
    confidence: float = parameter(0.95, "Confidence of the upper limit on the rate.", gt=0, lt=1)


class FlareRateAnalysis(Analysis):
    """The standard analysis, with each star's flare rate (or its upper limit) in Properties.

    Examples
    --------
    >>> from skyretriever.observatories.demo import VirtualDemoObs
    >>> obs = VirtualDemoObs(empty_fraction=0, flare_fraction=0)
    >>> row = {"name": "quiet star", "ra": 1.0, "dec": 2.0, "mag": 15.0}
    >>> result = FlareRateAnalysis(rate_snr=7.0).analyze_photometry(obs.reduce(obs.download(row)), row)
    >>> extra = result.properties["extra"]
    >>> extra["flares"], round(extra["watched_days"]), round(extra["flare_rate_upper_limit"], 3)
    (0, 105, 0.028)
    """

    Parameters = FlareRateParameters

    def analyze_photometry(self, lightcurves: list[Lightcurve], source: Mapping[str, Any]
                           ) -> AnalysisResult:
        result = super().analyze_photometry(lightcurves, source)
        flares = [d for d in result.detections
                  if not d["is_simulated"] and d["finder"] == "peak" and d["sign"] > 0
                  and d["score"] >= self.pars.rate_snr]
        days = _watched_days(lightcurves)
        injected = [d for d in result.detections if d["is_simulated"]]
        efficiency = (len(injected) / result.properties["num_injected"]
                      if result.properties["num_injected"] else None)
        extra = dict(result.properties.get("extra") or {})
        extra.update(flares=len(flares), watched_days=days, recovery_efficiency=efficiency)
        if days > 0:
            correction = efficiency if efficiency else 1.0
            extra["flare_rate"] = len(flares) / days / correction
            extra["flare_rate_upper_limit"] = (
                poisson_upper_limit(len(flares), self.pars.confidence) / days / correction
            )
        result.properties["extra"] = extra
        return result


def _watched_days(lightcurves: list[Lightcurve]) -> float:
    """Time covered by the light curves, without their gaps longer than a day."""
    total = 0.0
    for lightcurve in lightcurves:
        times = np.sort(lightcurve.data["mjd"].to_numpy(dtype=float))
        steps = np.diff(times)
        total += float(np.sum(steps[steps <= 1.0]))
    return total
