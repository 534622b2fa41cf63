"""Observatories: the base class, the demo archive, and the real surveys."""

from __future__ import annotations

from skyretriever.observatories.base import (
    OBSERVATORIES,
    ObservatoryParameters,
    ProjectContext,
    ReducerParameters,
    VirtualObservatory,
    observatory_class,
    register_observatory,
)
from skyretriever.observatories.demo import DemoParameters, VirtualDemoObs

__all__ = [
    "OBSERVATORIES",
    "DemoParameters",
    "ObservatoryParameters",
    "ProjectContext",
    "ReducerParameters",
    "VirtualDemoObs",
    "VirtualObservatory",
    "observatory_class",
    "register_observatory",
]
