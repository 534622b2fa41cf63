"""Observatories: the base class, the demo archive, and the real surveys (TESS, K2, Kepler, ZTF)."""

from __future__ import annotations

from skyretriever.observatories.aia import AiaParameters, VirtualAIA
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
from skyretriever.observatories.k2 import K2Parameters, VirtualK2
from skyretriever.observatories.kepler import KeplerParameters, VirtualKepler
from skyretriever.observatories.mast import MastParameters, VirtualMAST
from skyretriever.observatories.tess import TessParameters, VirtualTESS
from skyretriever.observatories.tessffi import TessFFIParameters, VirtualTESSFFI
from skyretriever.observatories.ztf import VirtualZTF, ZtfParameters

__all__ = [
    "TessFFIParameters",
    "VirtualTESSFFI",
    "OBSERVATORIES",
    "AiaParameters",
    "DemoParameters",
    "K2Parameters",
    "KeplerParameters",
    "MastParameters",
    "ObservatoryParameters",
    "ProjectContext",
    "ReducerParameters",
    "TessParameters",
    "VirtualAIA",
    "VirtualDemoObs",
    "VirtualK2",
    "VirtualKepler",
    "VirtualMAST",
    "VirtualObservatory",
    "VirtualTESS",
    "VirtualZTF",
    "ZtfParameters",
    "observatory_class",
    "register_observatory",
]
