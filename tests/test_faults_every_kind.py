"""Every fault kind at once, on every simulated archive, through whole runs (SQLite and PostgreSQL).

MAST, the S3 bucket, IRSA and the catalog services (Gaia TAP) each answer 10%
of requests with each fault kind: 503 and 429 with ``Retry-After``, connection
resets, timeouts (the answer stalls past the client's timeout), cut bodies,
HTML error pages served as files, and ``EXECUTING`` answers from MAST. The
project (TESS, K2, Kepler and ZTF, its catalog from Gaia) runs until every
source is done, with the faults on all the time. Each run must end with every
source done or failed with a fault as its reason, keep no bad file (every
kept file checks out, the consistency checker finds nothing), and keep its
hands off the archives: no request asked more than ``max_attempts`` times in
a row after failures, retries spaced by the backoff and ``Retry-After``, and
never more requests in flight on a host than ``max_connections_per_host``.
In the end the rows and data equal those of a run on healthy archives.

The first tests check the timeout fault itself and the in-flight and retry
accounting the big test relies on (including that a client that hammers is caught).

The helpers here are used by ``bench/reliability.py`` too, which prints the figures.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import urllib3
from astropy.io import fits

from skyretriever import Project
from skyretriever.checker import check_project
from skyretriever.database import Session
from skyretriever.models import Detection, Lightcurve, Properties, RawPhotometry, Source
from skyretriever.net import HttpClient, NetworkError, NetworkPolicy, RetriesExhausted
from skyretriever.testing import (
    ArchiveServer,
    Faults,
    Reply,
    Route,
    Service,
    SimulatedArchives,
    SimulatedSky,
    SimulatedStar,
    Transit,
)
from skyretriever.testing.server import FAULT_KINDS, RetryAudit, audit_retries
from tests.mast_support import leftover_problems

FAULT_RATE = 0.1
#: The client side: few attempts (so some sources fail and the next run must finish
#: them), a short timeout (the stall is longer), a small backoff.
NET = {"max_attempts": 4, "backoff": 0.05, "timeout": 0.5}
STALL = 1.5
RETRY_AFTER = 1
#: The per-host bound each client is given, by simulated server.
CONNECTIONS = {"mast": 3, "s3": 3, "irsa": 2, "catalogs": 2}
#: A catalog that cannot be read stops the whole run, so its client tries longer.
CATALOG_ATTEMPTS = 10
OBSERVATORIES = ["TESS", "K2", "Kepler", "ZTF"]
MAX_RUNS = 5
#: Download threads and worker processes (spawned: the simulated archives are threads here).
EXECUTION = {"scheduler": "local", "workers": 2, "start_method": "spawn"}
#: What a failure's reason says, for each way a fault can end a source's download.
FAULT_REASONS = re.compile(
    r"HTTP 503|HTTP 429|SlowDown|TooManyRequests|(?i:reset|aborted|connection|timed? ?out|"
    r"read timeout|body cut|received \d+ of|not valid|HTML page|not JSON|EXECUTING|"
    r"IncompleteRead|ResponseStreamingError|endpoint)"
)
_TRANSIT = Transit(period=0.6, epoch=2457000.0 + 1325.3, depth=0.01, duration=0.08)


def fault_stars() -> list[SimulatedStar]:
    """24 stars with Gaia ids: 16 with TESS sectors, 3 Kepler and 3 K2 targets, ZTF for all
    north of Dec -30, one star with nothing but ZTF and one with nothing at all."""
    stars = [SimulatedStar(f"tess_{i}", (7.0 + 22.0 * i) % 360.0, -28.0 + 5.0 * i,
                           tic_id=410_000_000 + i, gaia_id=6_100_000 + i, tmag=9.0 + 0.2 * i,
                           tess_sectors=tuple(range(1 + i % 13, 2 + i % 13 + i % 3)),
                           transit=_TRANSIT if i % 5 == 0 else None) for i in range(16)]
    stars += [SimulatedStar(f"kepler_{i}", 288.0 + 2.0 * i, 42.0 + 1.5 * i,
                            tic_id=420_000_000 + i, kic_id=8_300_000 + i, gaia_id=6_200_000 + i,
                            tmag=10.5 + 0.3 * i, kepler_quarters=(1 + i, 2 + i)) for i in range(3)]
    stars += [SimulatedStar(f"k2_{i}", 165.0 + 3.0 * i, 1.0 + i, tic_id=430_000_000 + i,
                            epic_id=206_300_000 + i, gaia_id=6_300_000 + i, tmag=11.0 + 0.3 * i,
                            k2_campaigns=(3 + i,)) for i in range(3)]
    return [*stars,
            SimulatedStar("ztf_only", 100.0, 30.0, gaia_id=6_400_001, gmag=15.5),
            SimulatedStar("nothing", 350.0, -70.0, gaia_id=6_400_002, gmag=16.0)]


def fault_sky() -> SimulatedSky:
    sky = SimulatedSky(fault_stars(), days_per_sector=1.0)
    sky.prepare_files()  # made once, so a slow first answer is not taken for a timeout
    return sky


def every_fault(seed: int = 2026, rate: float = FAULT_RATE) -> Faults:
    """``rate`` of the requests with each fault kind."""
    return Faults(**{f"{kind}_rate": rate for kind in FAULT_KINDS}, retry_after=RETRY_AFTER,
                  stall=STALL, seed=seed)


def start_archives(sky: SimulatedSky) -> SimulatedArchives:
    archives = SimulatedArchives(sky).start()
    archives.add_irsa()
    archives.add_catalogs()
    return archives


def project_kwargs(archives: SimulatedArchives, cache_dir: Path) -> dict[str, Any]:
    """The project on the simulated archives: TESS, K2, Kepler and ZTF, its catalog from Gaia."""
    mast = archives.observatory_kwargs(**NET, query_timeout=60.0, keep_fits=True,
                                       max_connections_per_host=CONNECTIONS["mast"])
    assert CONNECTIONS["mast"] == CONNECTIONS["s3"]  # one client for both hosts
    return {
        "obs_names": OBSERVATORIES,
        "catalog_kwargs": archives.catalog_kwargs(
            default="gaia", box=[0.0, 360.0, -90.0, 90.0], page_size=3,
            cache_dir=str(cache_dir), **{**NET, "max_attempts": CATALOG_ATTEMPTS},
            max_connections_per_host=CONNECTIONS["catalogs"]),
        "TESS": mast, "K2": mast, "Kepler": mast,
        "ZTF": archives.ztf_kwargs(**NET, max_connections_per_host=CONNECTIONS["irsa"]),
    }


def _digest(frame: pd.DataFrame | None) -> str:
    if frame is None or len(frame) == 0:
        return ""
    frame = frame.reindex(sorted(frame.columns), axis=1)
    values = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(values.tobytes() + ",".join(frame.columns).encode()).hexdigest()


def content() -> dict[str, Any]:
    """Every row of the configured database that a run makes, with digests of the data
    (not of the files: provenance such as query times and routes differs from run to run)."""
    with Session() as session:
        raw = {(r.source_name, r.observatory): (r.is_empty, r.num_points,
                                               _digest(None if r.is_empty else r.data))
               for r in session.scalars(sa.select(RawPhotometry))}
        lightcurves = sorted((lc.source.name, lc.observatory, lc.series_number, lc.num_points,
                              _digest(lc.data)) for lc in session.scalars(sa.select(Lightcurve)))
        properties = sorted((p.source.name, p.num_points, round(p.best_snr or 0.0, 6),
                             p.num_detections) for p in session.scalars(sa.select(Properties)))
        detections = sorted((d.source.name, d.lightcurve.series_number, round(d.time_peak, 6),
                             round(d.snr, 6)) for d in session.scalars(sa.select(Detection)))
        sources = sorted(session.scalars(sa.select(Source.name)))
    return {"sources": sources, "raw": raw, "lightcurves": lightcurves,
            "properties": properties, "detections": detections}


def statuses() -> dict[str, tuple[str, str | None]]:
    with Session() as session:
        return {name: (status, error) for name, status, error in session.execute(
            sa.select(Source.name, Source.status, Source.error))}


def kept_file_problems(data_root: Path) -> list[str]:
    """Partial files, FITS files that are not whole, rows whose file fails its checksum."""
    problems = leftover_problems(data_root)
    with Session() as session:
        for raw in session.scalars(sa.select(RawPhotometry)):
            if not (raw.is_empty or raw.is_intact()):
                problems.append(f"raw file {raw.filename} fails its checksum")
        for lc in session.scalars(sa.select(Lightcurve)):
            if not lc.is_intact():
                problems.append(f"light-curve file {lc.filename} fails its checksum")
    return problems


@dataclass
class RunRecord:
    """One run under faults: its summary, what it left, and how it treated each archive."""

    number: int
    counts: Counter
    failures: list[tuple[str, str]]
    statuses: dict[str, tuple[str, str | None]]
    raw_before: set[tuple[str, str]]
    raw_after: set[tuple[str, str]]
    file_problems: list[str]
    checker_findings: list[str]
    audits: dict[str, RetryAudit] = field(default_factory=dict)
    max_in_flight: dict[str, int] = field(default_factory=dict)
    faults: dict[str, Counter] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)


def _raw_pairs() -> set[tuple[str, str]]:
    with Session() as session:
        return set(session.execute(sa.select(RawPhotometry.source_name,
                                             RawPhotometry.observatory)).tuples())


def run_until_done(project: Project, archives: SimulatedArchives, data_root: Path,
                   max_runs: int = MAX_RUNS) -> list[RunRecord]:
    """Run the project again and again (faults on) until no source fails, at most ``max_runs``."""
    from skyretriever import database

    database.upgrade()
    runs = []
    for number in range(1, max_runs + 1):
        archives.reset_stats()
        before = _raw_pairs()
        summary = project.run()
        for server in archives.servers.values():
            assert server.wait_idle(2 * STALL + 5), f"{server.name} still busy"
        report = check_project(project)
        record = RunRecord(number, summary.counts, list(summary.failures), statuses(), before,
                           _raw_pairs(), kept_file_problems(data_root),
                           [str(finding) for finding in report.findings])
        for name, server in archives.servers.items():
            attempts = CATALOG_ATTEMPTS if name == "catalogs" else NET["max_attempts"]
            record.audits[name] = audit_retries(server.records, max_attempts=attempts,
                                                backoff=NET["backoff"])
            record.max_in_flight[name] = server.max_in_flight
            record.faults[name] = Counter(server.summary(log=False)["faults"])
            record.requests[name] = server.summary(log=False)["requests"]
        runs.append(record)
        if not summary.failures:
            break
    return runs


# -- the timeout fault, in-flight counts and the retry audit ----------------------------------
def fits_bytes(rows: int) -> bytes:
    table = fits.BinTableHDU.from_columns([
        fits.Column(name="TIME", format="D", array=np.arange(rows, dtype=float)),
        fits.Column(name="FLUX", format="E", array=np.ones(rows, dtype=np.float32))])
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    return buffer.getvalue()


class Files(Service):
    """``GET /answer`` (JSON) and ``GET /f/<anything>`` (one FITS file)."""

    name = "files"

    def __init__(self, content: bytes = b"") -> None:
        self.content = content
        self.routes = [Route(("GET",), "/answer", lambda request: Reply.json({"ok": True})),
                       Route(("GET",), "/f/", lambda request: Reply.file(self.content),
                             prefix=True)]


def test_a_timeout_stalls_past_the_client_timeout_and_ends_when_the_client_leaves():
    faults = Faults(timeout_rate=1.0, stall=20.0, faults_per_request=1)
    with ArchiveServer([Files()], faults) as server:
        client = HttpClient(NetworkPolicy(max_attempts=2, backoff=0.0, timeout=0.3))
        begin = time.monotonic()
        assert client.request_json("GET", server.url + "/answer") == {"ok": True}
        elapsed = time.monotonic() - begin
        assert server.wait_idle(2.0)  # the stalled thread ended with its client, not 20 s later
    assert 0.3 <= elapsed < 5.0
    assert [r.fault for r in server.records] == ["timeout", None]
    with pytest.raises(ValueError, match="stall"):
        Faults(timeout_rate=0.1, stall=600)


def test_a_file_that_stalls_half_way_is_resumed(tmp_path):
    from skyretriever.fitsfile import validate_fits

    content = fits_bytes(25_000)
    faults = Faults(timeout_rate=1.0, stall=20.0, faults_per_request=1)
    with ArchiveServer([Files(content)], faults) as server:
        client = HttpClient(NetworkPolicy(max_attempts=3, backoff=0.0, timeout=0.3))
        target = client.download(server.url + "/f/x.fits", tmp_path / "x.fits",
                                 validator=validate_fits)
    assert target.read_bytes() == content
    first, second = server.records
    assert first.fault == "timeout" and second.status == 206
    resumed_from = int(second.headers["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from <= len(content) // 2


def test_a_patient_client_gets_the_late_answer():
    with ArchiveServer([Files()], Faults(timeout_rate=1.0, stall=0.4)) as server:
        begin = time.monotonic()
        assert HttpClient(NetworkPolicy(timeout=5.0)).request_json(
            "GET", server.url + "/answer") == {"ok": True}
        assert time.monotonic() - begin >= 0.4
    assert [r.fault for r in server.records] == ["timeout"]


def test_stalled_requests_end_when_the_server_stops():
    server = ArchiveServer([Files()], Faults(timeout_rate=1.0, stall=30.0)).start()
    client = HttpClient(NetworkPolicy(max_attempts=1, timeout=50.0))
    outcome: list[BaseException] = []
    caller = threading.Thread(target=lambda: outcome.append(pytest.raises(
        NetworkError, client.request, "GET", server.url + "/answer").value))
    caller.start()
    time.sleep(0.3)
    begin = time.monotonic()
    server.stop()
    caller.join(10)
    assert time.monotonic() - begin < 5.0 and not caller.is_alive() and outcome


def test_in_flight_stays_within_the_client_limit_under_every_fault():
    """8 threads, 2 connections: the count at the server never passes 2, whatever fails."""
    content = fits_bytes(2_000)
    faults = replace_rates(Faults(latency=0.02, retry_after=0, stall=1.0, seed=3), 0.15)
    with ArchiveServer([Files(content)], faults) as server:
        policy = NetworkPolicy(max_connections_per_host=2, max_attempts=8, backoff=0.02,
                               timeout=0.3)
        client = HttpClient(policy)

        def fetch(number: int) -> bool:
            try:
                client.request("GET", f"{server.url}/f/{number}.fits")
                return True
            except RetriesExhausted:
                return False

        with ThreadPoolExecutor(8) as pool:
            fetched = list(pool.map(fetch, range(40)))
        assert server.wait_idle(5.0)
    assert sum(fetched) >= 35
    assert server.max_in_flight == 2  # reached, never passed
    injected = server.summary(log=False)["faults"]
    assert {"timeout", "reset", "truncate", "unavailable"} <= set(injected), injected
    audit = audit_retries(server.records, max_attempts=8, backoff=0.02)
    assert audit.violations == [] and audit.failures == sum(injected.values())


def replace_rates(faults: Faults, rate: float) -> Faults:
    from dataclasses import replace

    return replace(faults, **{f"{kind}_rate": rate for kind in FAULT_KINDS
                              if kind != "executing"})


def test_the_audit_catches_a_client_that_hammers():
    unavailable = Faults(unavailable_rate=1.0, retry_after=1)
    with ArchiveServer([Files()], unavailable) as server:
        pool = urllib3.PoolManager(retries=False)
        for _ in range(5):  # no waiting, no limit: what the rules forbid
            assert pool.request("GET", server.url + "/answer").status == 503
    audit = audit_retries(server.records, max_attempts=3, backoff=0.5)
    assert audit.failures == 5 and audit.longest_streak == 5
    assert any("5 failed answers in a row (max_attempts 3)" in v for v in audit.violations)
    assert sum("sooner than 1.000 s" in v for v in audit.violations) == 2  # tries 2 and 3
    assert any("asked 5 times" in v for v in audit.violations)
    # The client of skyretriever, on the same archive, breaks none of them.
    with ArchiveServer([Files()], unavailable) as server:
        with pytest.raises(RetriesExhausted):
            HttpClient(NetworkPolicy(max_attempts=3, backoff=0.5)).request(
                "GET", server.url + "/answer")
    assert audit_retries(server.records, max_attempts=3, backoff=0.5).violations == []


def test_a_timeout_that_persists_fails_sources_until_the_next_run(project_factory, data_root,
                                                                  tmp_path):
    from tests.mast_support import small_sky, tess_stars, write_catalog

    sky = small_sky(tess_stars())
    files = ("/api/v0.1/Download/file", "/stpubdata/")
    with SimulatedArchives(sky, Faults(timeout_rate=1.0, stall=2.0, paths=files)) as archives:
        project = project_factory(
            obs_names=["TESS"], catalog_kwargs={"filename": write_catalog(sky, tmp_path)},
            TESS=archives.observatory_kwargs(max_attempts=2, backoff=0.0, timeout=0.3))
        first = project.run()
        assert sorted(name for name, _ in first.failures) == ["fast_star", "planet_host",
                                                              "quiet_star"]
        assert all(re.search("(?i)timed out|read timeout", reason) and "failed 2 time(s)" in reason
                   for _, reason in first.failures), first.failures
        # Each stalled answer ended when its client gave up, not 2 s later.
        assert all(server.wait_idle(1.0) for server in archives.servers.values())
        assert kept_file_problems(data_root) == [] and check_project(project).clean
        archives.set_faults(None)
        second = project.run()
    assert second.failures == [] and second.counts["downloaded"] == 3
    assert {status for status, _ in statuses().values()} == {"done"}


# -- every fault kind through whole runs ------------------------------------------------------
@pytest.fixture(scope="module")
def sky():
    return fault_sky()


@pytest.fixture(scope="module")
def archives(sky):
    archives = start_archives(sky)
    yield archives
    archives.stop()


@pytest.fixture(scope="module")
def reference(archives, tmp_path_factory):
    """What a run on healthy archives makes (its own SQLite database and data root)."""
    from skyretriever import database, storage

    folder = tmp_path_factory.mktemp("reference")
    archives.set_faults(None)
    project = Project(name="faults", cfg_file=False, data_root=str(folder / "data"),
                      database_url=f"sqlite:///{folder / 'reference.db'}", progress=False,
                      execution_kwargs=EXECUTION, **project_kwargs(archives, folder / "cache"))
    summary = project.run()
    assert summary.failures == [] and summary.counts["done"] == len(fault_stars())
    result = content()
    database.configure("sqlite:///:memory:")
    storage.configure(folder / "unused")
    return result


@pytest.mark.slow
def test_every_fault_kind_at_once_on_every_archive(project_factory, archives, sky, reference,
                                                   data_root, tmp_path):
    archives.set_faults(every_fault())
    try:
        project = project_factory(name="faults", execution_kwargs=EXECUTION,
                                  **project_kwargs(archives, tmp_path / "cache"))
        runs = run_until_done(project, archives, data_root)
    finally:
        archives.set_faults(None)
    names = {star.name for star in fault_stars()}
    catalog_names = {f"Gaia DR3 {star.gaia_id}": star.name for star in fault_stars()}
    assert len(catalog_names) == len(names)

    # The faults did happen: every kind, and on every archive.
    by_server = {server: sum((run.faults[server] for run in runs), Counter())
                 for server in CONNECTIONS}
    assert set(sum(by_server.values(), Counter())) == set(FAULT_KINDS), by_server
    assert by_server["mast"]["executing"] > 0
    assert all(sum(faults.values()) > 0 for faults in by_server.values()), by_server
    assert sum(by_server[server]["truncate"] + by_server[server]["html"]
               for server in ("s3", "irsa", "catalogs")) > 0, by_server

    for run in runs:
        where = f"run {run.number}"
        # Every source is done, or failed with a fault as its reason.
        assert set(run.statuses) == set(catalog_names), where
        for name, (status, error) in run.statuses.items():
            assert status in ("done", "failed"), (where, name, status)
            if status == "failed":
                assert error and error.startswith("download ("), (where, name, error)
                assert FAULT_REASONS.search(error), (where, name, error)
        failed = {name for name, _ in run.failures}
        assert failed == {n for n, (s, _) in run.statuses.items() if s == "failed"}, where
        # No bad file kept, nothing the checker would report.
        assert run.file_problems == [], (where, run.file_problems)
        assert run.checker_findings == [], (where, run.checker_findings)
        # Polite to every host: bounded, spaced retries; the per-host bound held.
        for server, audit in run.audits.items():
            assert audit.violations == [], (where, server, audit.violations[:5])
            bound = CATALOG_ATTEMPTS if server == "catalogs" else NET["max_attempts"]
            assert audit.longest_streak <= bound, (where, server)
            assert run.max_in_flight[server] <= CONNECTIONS[server], (where, server,
                                                                      run.max_in_flight)
        # Per source: one cone search each at IRSA, each file once from the bucket, each
        # asked at most max_attempts times.
        attempts = NET["max_attempts"]
        assert run.audits["irsa"].keys <= len(names), where
        assert run.requests["irsa"] <= attempts * len(names), where
        assert run.audits["s3"].keys <= len(sky.files), where
        assert run.requests["s3"] <= attempts * len(sky.files), where
        # A run downloads only what the runs before it left undone (raw files written
        # whole for a source that failed on another observatory are adopted, not fetched).
        if run.number > 1:
            assert run.counts["skipped"] + run.counts["done"] + run.counts["failed"] == len(
                names), where
            missing = {(s, o) for s in catalog_names for o in ("tess", "k2", "kepler", "ztf")}
            assert 0 < run.counts["downloaded"] <= len(missing - run.raw_before), where

    # The runs finished the work, and nothing was lost on the way.
    last = runs[-1]
    assert last.failures == [], [run.failures for run in runs]
    assert {status for status, _ in last.statuses.values()} == {"done"}
    assert content() == reference
