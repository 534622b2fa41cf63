"""The fault knobs of the simulated IRSA, through Project.run on SQLite and PostgreSQL.

When a fault clears up on retry the run finishes with every source done; when
it persists, the sources are recorded as failed with the fault as the reason,
and the next run (IRSA healthy again) completes exactly those.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import sqlalchemy as sa

from skyretriever.database import Session
from skyretriever.models import Source
from skyretriever.testing import Faults, SimulatedArchives
from ztf_support import QUICK_NET, gaia_catalog, ztf_sky

KNOBS = {
    "unavailable": (Faults(unavailable_rate=1.0, retry_after=0), "HTTP 503"),
    "throttle": (Faults(throttle_rate=1.0, retry_after=0), "HTTP 429"),
    "reset": (Faults(reset_rate=1.0), "(?i)connection|reset|aborted"),
    "truncate": (Faults(truncate_rate=1.0), "body cut|received"),
    "html": (Faults(html_rate=1.0), "HTML page instead of a CSV table"),
}


@pytest.fixture(scope="module")
def sky():
    return ztf_sky()


@pytest.fixture
def archives(sky):
    with SimulatedArchives(sky) as archives:
        archives.add_irsa()
        yield archives


@pytest.fixture
def project(project_factory, archives, sky, tmp_path):
    catalog = gaia_catalog(sky, tmp_path)
    return project_factory(obs_names=["ZTF"], catalog_kwargs={"filename": catalog},
                           ZTF=archives.ztf_kwargs(**QUICK_NET))


@pytest.mark.parametrize("knob", list(KNOBS))
def test_a_fault_that_clears_on_retry_costs_nothing(knob, project, archives):
    archives.set_faults(replace(KNOBS[knob][0], faults_per_request=1), servers=["irsa"])
    summary = project.run()
    assert summary.failures == [] and summary.counts["done"] == 5
    assert archives.irsa.summary()["faults"].get(knob, 0) == 5


@pytest.mark.parametrize("knob", list(KNOBS))
def test_a_fault_that_persists_fails_sources_until_the_next_run(knob, project, archives):
    faults, reason = KNOBS[knob]
    archives.set_faults(faults, servers=["irsa"])
    first = project.run()
    assert sorted(name for name, _ in first.failures) == sorted(row["name"] for row in project.catalog)
    with Session() as session:
        for status, error in session.execute(sa.select(Source.status, Source.error)):
            assert status == "failed" and error.startswith("download (ztf): ")
            assert re.search(reason, error), error
    archives.set_faults(None)
    second = project.run()
    assert second.failures == [] and second.counts["done"] == 5
    assert second.counts["downloaded"] == 5
