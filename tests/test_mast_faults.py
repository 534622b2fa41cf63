"""Every fault knob of the simulated archives, through Project.run, on SQLite and PostgreSQL.

For each fault: when it clears up on retry, the run finishes with every
source done; when it persists, each source is done or recorded as failed with
the fault as its reason, no bad file is kept, and the next run (archives
healthy again) completes exactly the failed sources.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import sqlalchemy as sa

from skyretriever.database import Session
from skyretriever.models import Lightcurve, RawPhotometry, Source
from skyretriever.testing import Faults, SimulatedArchives
from tests.mast_support import QUICK, leftover_problems, small_sky, tess_stars, write_catalog

FILE_PATHS = ("/api/v0.1/Download/file", "/stpubdata/")
KNOBS = {
    "unavailable": (Faults(unavailable_rate=1.0, retry_after=0, paths=FILE_PATHS), "HTTP 503"),
    "throttle": (Faults(throttle_rate=1.0, retry_after=0, paths=FILE_PATHS), "HTTP 429"),
    "reset": (Faults(reset_rate=1.0, paths=FILE_PATHS), "(?i)connection|reset|aborted"),
    "truncate": (Faults(truncate_rate=1.0, paths=FILE_PATHS), "body cut"),
    "html": (Faults(html_rate=1.0, paths=FILE_PATHS), "does not start with SIMPLE"),
    "executing": (Faults(executing_rate=1.0), "still EXECUTING"),
}
WITH_DATA = ["planet_host", "quiet_star", "fast_star"]


@pytest.fixture(scope="module")
def sky():
    return small_sky(tess_stars())


@pytest.fixture
def archives(sky):
    with SimulatedArchives(sky) as archives:
        yield archives


@pytest.fixture
def make_project(project_factory, archives, sky, tmp_path):
    catalog = write_catalog(sky, tmp_path)

    def make(**tess):
        return project_factory(obs_names=["TESS"],
                               catalog_kwargs={"kind": "file", "filename": catalog},
                               TESS=archives.observatory_kwargs(**{**QUICK, "keep_fits": True,
                                                                   "query_timeout": 0.6, **tess}))

    return make


def statuses() -> dict[str, tuple[str, str | None]]:
    with Session() as session:
        return {name: (status, error) for name, status, error in session.execute(
            sa.select(Source.name, Source.status, Source.error))}


def check_files_are_whole(data_root) -> None:
    assert leftover_problems(data_root) == []
    with Session() as session:
        for raw in session.scalars(sa.select(RawPhotometry)):
            assert raw.is_empty or raw.is_intact()
        for lightcurve in session.scalars(sa.select(Lightcurve)):
            assert lightcurve.is_intact()


@pytest.mark.parametrize("knob", list(KNOBS))
def test_a_fault_that_clears_on_retry_costs_nothing(knob, make_project, archives, data_root):
    faults = replace(KNOBS[knob][0], paths=(), faults_per_request=1)
    archives.set_faults(faults)
    summary = make_project().run()
    assert summary.failures == [] and summary.counts["done"] == 4
    injected = archives.mast.summary()["faults"].get(knob, 0) + archives.s3.summary()[
        "faults"].get(knob, 0)
    assert injected > 0
    check_files_are_whole(data_root)


@pytest.mark.parametrize("knob", list(KNOBS))
def test_a_fault_that_persists_fails_sources_until_the_next_run(knob, make_project, archives,
                                                                data_root):
    faults, reason = KNOBS[knob]
    archives.set_faults(faults)
    project = make_project()
    first = project.run()
    assert first.counts["sources"] == 4
    failed = sorted(name for name, _ in first.failures)
    # A query that never completes fails every source (even the one without data);
    # a file that never arrives fails the sources that have files.
    assert failed == (sorted([*WITH_DATA, "no_data_star"]) if knob == "executing"
                      else sorted(WITH_DATA))
    for name, (status, error) in statuses().items():
        if name in failed:
            assert status == "failed"
            assert error.startswith("download (tess): ")
            assert re.search(reason, error), error
        else:
            assert status == "done"
    with Session() as session:
        kept = set(session.scalars(sa.select(RawPhotometry.source_name)))
    assert kept.isdisjoint(failed)
    check_files_are_whole(data_root)

    archives.set_faults(None)
    second = project.run()
    assert second.failures == []
    assert second.counts["done"] == len(failed) and second.counts["skipped"] == 4 - len(failed)
    assert second.counts["downloaded"] == len(failed)
    assert {status for status, _ in statuses().values()} == {"done"}
    check_files_are_whole(data_root)


def test_every_fault_at_once_with_latency(make_project, archives, data_root):
    archives.set_faults(Faults(latency=0.02, unavailable_rate=0.3, throttle_rate=0.2,
                               reset_rate=0.2, truncate_rate=0.3, html_rate=0.3,
                               executing_rate=0.3, retry_after=0, seed=7, faults_per_request=3))
    summary = make_project(max_attempts=6).run()
    assert summary.failures == [] and summary.counts["done"] == 4
    seen = {**archives.mast.summary()["faults"], **archives.s3.summary()["faults"]}
    assert len(seen) >= 3, seen  # faults earlier in a request's handling hide the later ones
    check_files_are_whole(data_root)
