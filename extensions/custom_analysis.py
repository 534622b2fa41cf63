"""An Analysis subclass with its own parameter: the amplitude of each source's variability.

Use it from a YAML file::

    project:
      analysis_module: extensions.custom_analysis
      analysis_class: AmplitudeAnalysis
    analysis:
      min_amplitude: 0.3

or ``Project(..., analysis_module="extensions.custom_analysis",
analysis_class="AmplitudeAnalysis", analysis_kwargs={"min_amplitude": 0.3})``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from skyretriever.analysis import Analysis, AnalysisParameters, AnalysisResult
from skyretriever.models import Lightcurve
from skyretriever.parameters import parameter

__all__ = ["AmplitudeAnalysis", "AmplitudeParameters"]


class AmplitudeParameters(AnalysisParameters):
    """The standard analysis parameters and one more."""

    min_amplitude: float = parameter(
        0.3, "Peak-to-peak amplitude (magnitudes, 5th to 95th percentile) that marks a variable.",
        ge=0,
    )


class AmplitudeAnalysis(Analysis):
    """The standard analysis, plus each source's amplitude and a 'variable' mark in Properties.extra.

    Examples
    --------
    >>> analysis = AmplitudeAnalysis(min_amplitude=0.5)
    >>> analysis.pars.min_amplitude
    0.5
    """

    Parameters = AmplitudeParameters

    def analyze_photometry(self, lightcurves: list[Lightcurve], source: Mapping[str, Any]
                           ) -> AnalysisResult:
        result = super().analyze_photometry(lightcurves, source)
        amplitudes = []
        for lightcurve in lightcurves:
            checked, _ = self.check_quality(lightcurve)
            mags = checked.loc[~checked["qflag"], "mag"].to_numpy(dtype=float)
            mags = mags[np.isfinite(mags)]
            if len(mags) >= 5:
                low, high = np.percentile(mags, [5, 95])
                amplitudes.append(float(high - low))
        if amplitudes:
            amplitude = max(amplitudes)
            result.properties["extra"] = {
                "amplitude_mag": amplitude,
                "variable": amplitude >= self.pars.min_amplitude,
            }
        return result
