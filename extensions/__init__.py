"""Examples of user code: subclasses of skyretriever's Analysis and Finder, loaded from YAML.

- ``custom_analysis.AmplitudeAnalysis``: an Analysis with one parameter more;
- ``flare_rate.FlareRateAnalysis``: an Analysis with its own parameters and an
  overridden ``analyze_photometry`` (flare rates and upper limits);
- ``dimming.DimmingFinder``: a Finder subclass, listed as ``module:Class``.

``configs/extension_demo.yaml`` points a project at the last two::

    project:
      analysis_module: extensions.flare_rate
      analysis_class: FlareRateAnalysis
    analysis:
      finders: [peak, "extensions.dimming:DimmingFinder"]
"""
