"""One target without a catalog: ``skyretriever.fetch("TIC 25155310")``.

:func:`fetch` resolves a name (or takes a position), runs the pipeline for that
one target into a project (``fetched`` unless told otherwise: downloads land in
the data root and are kept, so a second call for the same star is instant), and
returns the target's light curves, loaded. The command line's ``skyretriever
get NAME --obs TESS`` is the same.

Examples
--------
>>> import skyretriever
>>> curves = skyretriever.fetch("TIC 25155310", observatories=["TESS"])  # doctest: +SKIP
>>> curves[0].to_lightkurve().plot()                                     # doctest: +SKIP
>>> curves = skyretriever.fetch(ra=63.3739, dec=-69.2267, observatories=["ZTF"])  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from skyretriever.catalogs.errors import CatalogError
from skyretriever.catalogs.names import RESOLVER_URL, cross_ids_in_name, resolve_name
from skyretriever.models import Lightcurve
from skyretriever.project import Project

#: The project :func:`fetch` runs into when no configuration is given.
DEFAULT_PROJECT = "fetched"


class FetchFailed(RuntimeError):
    """The target's run failed (the reason is the pipeline's, as ``status`` would list it)."""


def target_row(name: str | None = None, ra: float | str | None = None,
               dec: float | str | None = None, resolver_url: str = RESOLVER_URL) -> dict[str, Any]:
    """The catalog row of one target: its position given, or its name resolved.

    With ``ra`` and ``dec`` no resolver is asked; the name (default
    ``J<ra><dec>``) still gives a mission id it spells out (``TIC n``...).
    """
    if (ra is None) != (dec is None):
        raise CatalogError("give both ra and dec, or neither (to resolve the name)")
    if ra is None:
        if name is None:
            raise CatalogError("give a target name, or its position (ra=, dec=)")
        return resolve_name(name, resolver_url)
    if name is None:
        try:
            name = f"J{float(ra):.5f}{float(dec):+.5f}"
        except (TypeError, ValueError):
            name = f"J{str(ra).strip()}{str(dec).strip()}"
    return {"name": name, "ra": ra, "dec": dec, **cross_ids_in_name(name)}


def fetch(name: str | None = None, *, ra: float | str | None = None,
          dec: float | str | None = None, observatories: Sequence[str] = ("TESS",),
          cfg_file: str | os.PathLike | None = None, project: str | None = None,
          resolver_url: str = RESOLVER_URL, analyze: bool = True,
          **project_kwargs: Any) -> list[Lightcurve]:
    """Download, reduce (and analyse) one target, and return its light curves.

    Parameters
    ----------
    name
        The target's name, resolved by MAST's name resolver (``"TIC 25155310"``,
        ``"KIC 8462852"``, ``"Proxima Cen"``), unless ``ra`` and ``dec`` are given.
    ra, dec
        The position (ICRS degrees, or sexagesimal text) instead of resolving.
    observatories
        Observatories to ask (``TESS``, ``K2``, ``Kepler``, ``ZTF``, ``demo``).
    cfg_file
        A project's YAML file whose settings (data root, database, observatory and
        analysis parameters) to use; its catalog is not run.
    project
        The project's name: that of ``cfg_file``, else ``"fetched"`` (with version
        control: each set of observatories and parameters has a folder of its own).
    resolver_url
        The name resolver (MAST's by default).
    analyze
        Also run the analysis (its properties and detections are then on the source).
    **project_kwargs
        Anything :class:`~skyretriever.Project` takes: ``data_root``,
        ``database_url``, ``obs_kwargs``, ``tess={...}``...

    Returns
    -------
    list of Lightcurve
        Loaded (``.data``), by observatory and series; ``lc.to_lightkurve()`` for
        lightkurve, ``lc.to_table()`` for astropy. Empty when no observatory has
        data of the target.

    Raises
    ------
    skyretriever.catalogs.errors.CatalogError
        If the name is unknown to the resolver, or the position is not valid.
    FetchFailed
        If the target's download or reduction failed (with the reason).
    """
    row = target_row(name, ra, dec, resolver_url)
    if cfg_file is None:
        project = project or DEFAULT_PROJECT
        # Each choice of observatories (and parameters) in a folder of its own: fetching
        # one star from TESS, then another from TESS and ZTF, mixes nothing.
        project_kwargs.setdefault("version_control", True)
    project_kwargs.setdefault("progress", False)
    proj = Project(name=project, cfg_file=cfg_file if cfg_file is not None else False,
                   obs_names=list(observatories), **project_kwargs)
    summary = proj.run(rows=[row], analyze=analyze)
    failed = [reason for failed_name, reason in summary.failures if failed_name == row["name"]]
    if failed:
        raise FetchFailed(f"{row['name']} (project {proj.pars.name}): {failed[0]}")
    return proj.lightcurves_of(row["name"])
