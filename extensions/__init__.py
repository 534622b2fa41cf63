"""Examples of user code: an Analysis subclass and a Finder subclass, loaded from YAML.

``configs/extension_demo.yaml`` points a project at both::

    project:
      analysis_module: extensions.flare_rate
      analysis_class: FlareRateAnalysis
    analysis:
      finders: [peak, "extensions.dimming:DimmingFinder"]
"""
