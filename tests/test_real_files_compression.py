"""Real-size files stored under each compression setting give the same data back.

Uses copies of a real TESS SPOC sector (see ``tests/test_real_files.py``; skips
without them). The setting reaches the worker processes that write the reduced
files through the environment they inherit.
"""

from __future__ import annotations

import h5py
import pandas as pd
import pytest
import sqlalchemy as sa

from skyretriever import storage
from skyretriever.database import Session
from skyretriever.models import Lightcurve, RawPhotometry
from skyretriever.testing import SimulatedArchives, SimulatedSky
from tests.mast_support import QUICK, write_catalog
from tests.test_real_files import _star, tess_copies  # noqa: F401  (a fixture)


def _compressions(relative: str) -> set:
    """The compression of every table of a file (and of every file kept in a group)."""
    found = set()
    with h5py.File(storage.full_path(relative), "r") as handle:
        for key in handle:
            item = handle[key]
            if isinstance(item, h5py.Group):
                found |= {storage.compression_of(item[name]) for name in item if name != "metadata"}
            elif not key.endswith(".metadata"):
                found.add(storage.compression_of(item))
    return found


@pytest.fixture
def restore_compression():
    yield
    storage.set_compression(None)


def test_uncompressed_and_compressed_runs_store_the_same_data(
        tess_copies, project_factory, tmp_path, restore_compression):  # noqa: F811
    stars = [_star("first", 302_000_001, 30.0, -20.0, tess_sectors=(1, 2)),
             _star("second", 302_000_002, 60.0, 10.0, tess_sectors=(4,))]
    sky = SimulatedSky(stars, real_files=tess_copies)
    with SimulatedArchives(sky) as archives:
        storage.set_compression("none")
        plain = project_factory(
            "plain", obs_names=["TESS"], catalog_kwargs={"filename": write_catalog(sky, tmp_path)},
            TESS=archives.observatory_kwargs(**QUICK, use_cloud=False),
            execution_kwargs={"scheduler": "local", "workers": 2})
        assert plain.run(analyze=False).failures == []
        storage.set_compression(None)
        packed = project_factory(
            "packed", obs_names=["TESS"], catalog_kwargs={"filename": write_catalog(sky, tmp_path)},
            TESS=archives.observatory_kwargs(**QUICK, use_cloud=False))
        assert packed.run(analyze=False).failures == []
    with Session() as session:
        raws = session.scalars(sa.select(RawPhotometry)).all()
        assert sorted(raw.source_name for raw in raws) == ["first", "second"]
        for raw in raws:    # written once, by the first run: the archive's files as they came
            assert raw.filename.endswith(storage.FILES_SUFFIX)
            assert storage.full_path(raw.filename).stat().st_size > 2_000_000 * len(
                set(raw.data["sector"]))
            assert len(raw.data) > 15_000 and set(raw.data["sector"]) <= {1, 2, 4}
        curves = {}
        for lc in session.scalars(sa.select(Lightcurve)).all():
            curves.setdefault(lc.project, {})[lc.key] = lc
        assert set(curves) == {"plain", "packed"} and len(curves["plain"]) == 3
        for key, uncompressed in curves["plain"].items():
            compressed = curves["packed"][key]
            # The worker processes wrote without compression, the serial run with Blosc.
            assert _compressions(uncompressed.filename) == {"none"}
            assert _compressions(compressed.filename) == {"blosc"}
            assert storage.full_path(uncompressed.filename).stat().st_size > \
                2 * storage.full_path(compressed.filename).stat().st_size
            pd.testing.assert_frame_equal(uncompressed.data, compressed.data)
