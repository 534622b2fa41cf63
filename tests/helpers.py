"""Helpers shared by several test modules."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from skyretriever import storage
from skyretriever.analysis import Histogram
from skyretriever.database import Session
from skyretriever.models import Detection, Lightcurve, Properties, RawPhotometry, Source


def snapshot(project: Any, data_root: Path | None = None) -> dict[str, Any]:
    """Every row of the project (without ids and times) and every product file's checksum."""
    with Session() as session:
        sources = sorted(
            (s.name, s.status, s.error) for s in session.scalars(sa.select(Source))
        )
        raws = sorted((r.source_name, r.observatory, r.is_empty, r.num_points, r.checksum)
                      for r in session.scalars(sa.select(RawPhotometry)))
        lightcurves = sorted((lc.source.name, lc.observatory, lc.series_number, lc.num_points,
                              lc.checksum, lc.raw_data.source_name)
                             for lc in session.scalars(sa.select(Lightcurve)))
        properties = sorted((p.source.name, p.num_points, round(p.best_snr or 0, 9),
                             p.num_detections) for p in session.scalars(sa.select(Properties)))
        detections = sorted((d.source.name, d.lightcurve.series_number, d.time_peak,
                             round(d.snr, 9)) for d in session.scalars(sa.select(Detection)))
    files = {}
    root = data_root or project.data_root
    for path in sorted(root.rglob("*.h5")):
        if path.relative_to(root).parts[0] == storage.QUARANTINE_FOLDER:
            continue                      # what check --repair moved aside: not a product
        files[path.relative_to(root).as_posix()] = hashlib.sha256(
            path.read_bytes()).hexdigest()
    histogram = Histogram.load(project.histogram_path())
    return {"sources": sources, "raw": raws, "lightcurves": lightcurves,
            "properties": properties, "detections": detections, "files": files,
            "histogram": {v: c.tolist() for v, c in histogram.counts.items()}}
