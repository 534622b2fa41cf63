"""Shared fixtures: the database backends, a data root, and a project factory.

Database tests take the ``database_url`` fixture (or ``project_factory``),
which runs each of them twice: on a SQLite file and on PostgreSQL. The
PostgreSQL leg uses a throwaway database made for this test session (one per
xdist worker) and dropped afterwards; tables are emptied after every test.
Locally, a missing server skips that leg with a clear message; under
``CI=true`` it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from skyretriever import database, storage

POSTGRES_ADMIN_URL = os.environ.get(
    "SKYRETRIEVER_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
TABLES = ("cutout_jobs", "raw_cutouts", "raw_image_sectors", "raw_images", "ffi_files", "detections", "properties",
          "lightcurves", "source_raw_data", "raw_photometry", "sources", "histogram_batches")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for this session (per xdist worker), dropped at the end."""
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"skyretriever_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as error:
        admin.dispose()
        message = (f"PostgreSQL is not reachable at {database.redact_url(POSTGRES_ADMIN_URL)} "
                   f"({str(error.orig).strip().splitlines()[0]})")
        if _in_ci():
            pytest.fail(f"{message}; CI=true requires PostgreSQL", pytrace=False)
        pytest.skip(f"{message}; start it to run the PostgreSQL leg")
    url = sa.engine.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(False)
    yield url
    database.configure("sqlite:///:memory:")
    with admin.connect() as connection:
        connection.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"
        ), {"name": name})
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture
def data_root(tmp_path: Path) -> Iterator[Path]:
    """A fresh data root for one test, configured for this process."""
    root = tmp_path / "data"
    storage.configure(root)
    yield root
    storage.configure(tmp_path / "unused")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_url(backend: str, data_root: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A configured, migrated, empty database of each backend (the test runs once per backend)."""
    if backend == "sqlite":
        url = f"sqlite:///{data_root.parent / 'test.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    database.configure(url)
    database.upgrade()
    yield url
    if backend == "postgresql":
        with database.get_engine().begin() as connection:
            connection.execute(sa.text(
                f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"
            ))
    database.configure("sqlite:///:memory:")


@pytest.fixture
def project_factory(database_url: str, data_root: Path):
    """Make a Project on the test database and data root; keyword arguments as for Project.

    Defaults: no YAML file, the serial scheduler, no progress bar, the synthetic
    test catalog of 20 sources, the demo observatory.
    """
    from skyretriever import Project

    def make(name: str = "test_project", **kwargs: Any) -> Project:
        kwargs.setdefault("cfg_file", False)
        kwargs.setdefault("database_url", database_url)
        kwargs.setdefault("data_root", str(data_root))
        kwargs.setdefault("progress", False)
        kwargs.setdefault("catalog_kwargs", {"default": "test", "num_sources": 20})
        execution = {"scheduler": "serial", **kwargs.pop("execution_kwargs", {})}
        return Project(name=name, execution_kwargs=execution, **kwargs)

    return make
