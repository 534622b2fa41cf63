"""Cone searches over sources with the HEALPix index, on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command

from skyretriever import database
from skyretriever.database import Session
from skyretriever.healpix import angular_distance
from skyretriever.models import Source


def test_cone_search_finds_exactly_the_sources_within_the_radius(project_factory):
    project = project_factory(catalog_kwargs={"default": "test", "num_sources": 3000})
    project.run(reduce=False, analyze=False)                     # rows only, quickly
    with Session() as session:
        rows = session.execute(sa.select(Source.name, Source.ra, Source.dec)).all()
    names = np.array([r.name for r in rows])
    ras, decs = np.array([r.ra for r in rows]), np.array([r.dec for r in rows])
    rng = np.random.default_rng(3)
    for ra, dec, radius in [(float(ras[0]), float(decs[0]), 0.001), (10.0, 80.0, 12.0),
                            (359.9, -0.5, 8.0), (180.0, -89.5, 15.0),
                            *[(rng.uniform(0, 360), rng.uniform(-60, 60), rng.uniform(1, 10))
                              for _ in range(5)]]:
        expected = set(names[angular_distance(ra, dec, ras, decs) <= radius])
        found = Source.cone_search(ra, dec, radius, project=project.context.name)
        assert {s.name for s in found} == expected
        distances = [s.distance for s in found]
        assert distances == sorted(distances) and all(d <= radius for d in distances)
    nearest = Source.cone_search(float(ras[0]), float(decs[0]), 1 / 3600)
    assert nearest[0].name == names[0] and nearest[0].distance < 1e-9


def test_cone_search_refuses_bad_cones(database_url):
    with pytest.raises(ValueError, match="finite number"):
        Source.cone_search("1 OR 1=1", 0.0, 1.0)
    with pytest.raises(ValueError, match="radius"):
        Source.cone_search(1.0, 0.0, -1.0)


def test_the_migration_fills_the_index_of_existing_sources(database_url):
    command.downgrade(database._alembic_config(), "0002")
    with database.get_engine().begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO sources (name, project, cfg_hash, ra, dec, status, counted, created_at, "
            "modified_at) VALUES ('old', 'p', '', 150.1, 2.2, 'done', false, "
            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    database.upgrade()
    with Session() as session:
        (found,) = Source.cone_search(150.1, 2.2, 1 / 3600, session=session)
        assert found.name == "old" and found.healpix is not None
