"""Cone searches among many sources with the HEALPix index (``Source.cone_search``).

Fills a throwaway database with N sources spread uniformly over the sky
(rows as the pipeline writes them: name, project, cfg_hash, position, HEALPix
pixel), then times ``Source.cone_search`` (the whole call: the indexed query,
the ORM objects, the exact distances) for cones of several radii centred on
randomly chosen sources, and
prints the median and 95th-percentile time per query and the sources found.

Usage::

    python bench/cone_search.py                       # 1,000,000 sources, PostgreSQL and SQLite
    python bench/cone_search.py 100000 --backend sqlite
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from pipeline import make_database

RADII_ARCSEC = (10.0, 60.0, 600.0, 3600.0, 18000.0)
QUERIES_PER_RADIUS = 100
INSERT_BATCH = 50_000


def fill(n: int, seed: int = 1) -> np.ndarray:
    """Insert ``n`` sources of one project, uniform on the sphere, in batches.

    Returns the positions (ra, dec) of the first batch, the cones' centres.
    """
    from skyretriever import database
    from skyretriever.healpix import healpix_index
    from skyretriever.models import Source

    rng = np.random.default_rng(seed)
    table = Source.__table__
    now = sa.func.current_timestamp()
    engine = database.get_engine()
    centres = None
    for first in range(0, n, INSERT_BATCH):
        size = min(INSERT_BATCH, n - first)
        ra = rng.uniform(0, 360, size)
        dec = np.degrees(np.arcsin(rng.uniform(-1, 1, size)))
        pixels = healpix_index(ra, dec)
        if centres is None:
            centres = np.column_stack([ra, dec])
        rows = [{"name": f"star {first + i}", "project": "bench", "cfg_hash": "",
                 "ra": float(ra[i]), "dec": float(dec[i]), "healpix": int(pixels[i]),
                 "status": "done", "counted": True}
                for i in range(size)]
        with engine.begin() as connection:
            connection.execute(table.insert().values(created_at=now, modified_at=now), rows)
    with engine.begin() as connection:
        connection.execute(sa.text("ANALYZE"))
    return centres


def time_queries(centres: np.ndarray, seed: int = 2) -> list[tuple[float, float, float, float]]:
    """(radius arcsec, median ms, 95th percentile ms, mean sources found) per radius.

    Each cone is centred on a source (so it finds at least that one).
    """
    from skyretriever.database import Session
    from skyretriever.models import Source

    rng = np.random.default_rng(seed)
    figures = []
    with Session() as session:
        Source.cone_search(10.0, 10.0, 1.0, session=session)          # warm the connection
        for radius in RADII_ARCSEC:
            times, found = [], []
            for _ in range(QUERIES_PER_RADIUS):
                ra, dec = (float(x) for x in centres[rng.integers(len(centres))])
                start = time.perf_counter()
                result = Source.cone_search(ra, dec, radius / 3600, session=session,
                                            project="bench")
                times.append(time.perf_counter() - start)
                found.append(len(result))
                session.expunge_all()
            times_ms = np.array(times) * 1000
            figures.append((radius, float(np.median(times_ms)),
                            float(np.percentile(times_ms, 95)), float(np.mean(found))))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, nargs="?", default=1_000_000, help="number of sources")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    from skyretriever import database

    backends = ("postgresql", "sqlite") if args.backend == "both" else (args.backend,)
    print(f"cone search among {args.n:,} sources, {QUERIES_PER_RADIUS} random cones per radius")
    for backend in backends:
        root = Path(tempfile.mkdtemp(prefix="skyretriever-cone-"))
        url, drop = make_database(backend, root)
        try:
            database.configure(url)
            database.upgrade()
            start = time.perf_counter()
            centres = fill(args.n)
            print(f"{backend:>10}: filled in {time.perf_counter() - start:.0f} s")
            for radius, median, p95, found in time_queries(centres):
                print(f"{'':>12}radius {radius:6.0f} arcsec: median {median:6.2f} ms, "
                      f"95th percentile {p95:6.2f} ms, {found:8.1f} sources found on average")
        finally:
            drop()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
