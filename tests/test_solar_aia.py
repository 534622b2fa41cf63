"""SDO/AIA cutouts of HEK events through the simulated JSOC (drms) and SSW services: both
routes end to end, drms itself against the simulator, jobs as rows (resumed after SIGKILL,
never sent twice), deadlines, the services' failures and faults, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import warnings

import astropy.units as u
import numpy as np
import pytest
import sqlalchemy as sa
from astropy.io import fits
from astropy.wcs import WCS

from skyretriever import storage
from skyretriever.catalogs import Catalog
from skyretriever.database import Session
from skyretriever.models import CutoutJob, RawCutouts
from skyretriever.observatories.aia import CutoutJobFailed, VirtualAIA
from skyretriever.parameters import ParameterError
from skyretriever.testing.server import Faults
from tests.solar_support import EMAIL, JET, QUICK, aia_settings, hek_catalog, solar_services


@pytest.fixture
def services():
    with solar_services() as running:
        yield running


def event_rows(server, tmp_path) -> list[dict]:
    return Catalog(**hek_catalog(server, tmp_path)).get_rows()


def aia(server, route: str, **kwargs) -> VirtualAIA:
    return VirtualAIA(route=route, jsoc_url=server.url, ssw_url=server.url, notify=EMAIL,
                      **{**QUICK, **kwargs})


def brightest_world(path: str) -> tuple[float, float]:
    with fits.open(path) as hdul:
        header, data = hdul[0].header, hdul[0].data
    row, column = np.unravel_index(np.argmax(data), data.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lon, lat = WCS(header).pixel_to_world_values(column, row)
    return float(lon) * 3600.0, float(lat) * 3600.0


def test_drms_itself_exports_and_downloads_from_the_simulated_jsoc(services, tmp_path):
    import drms

    server, jsoc, _ = services
    config = drms.ServerConfig(name="sim", cgi_baseurl=server.url + "/cgi-bin/ajax/",
                               cgi_jsoc_info="jsoc_info", cgi_jsoc_fetch="jsoc_fetch",
                               http_download_baseurl=server.url + "/")
    client = drms.Client(server=config)
    process = {"im_patch": {"t_ref": "2020-06-07T21:30:00", "t": 0, "r": 0, "c": 0,
                            "locunits": "arcsec", "boxunits": "arcsec", "x": 612, "y": 318,
                            "width": 120, "height": 120}}
    # drms names the files from the series' prime keys (jsoc_info series_struct).
    export = client.export("aia.lev1_euv_12s[2020-06-07T21:30:00Z/180s@60s][304,171]{image}",
                           method="url", protocol="fits", email=EMAIL, process=process)
    assert export.wait(timeout=20, sleep=0.05)
    assert len(export.urls) == 6
    downloaded = export.download(str(tmp_path))
    assert len(downloaded) == 6
    with fits.open(downloaded["download"].iloc[0]) as hdul:
        header = hdul[0].header
    assert header["CTYPE1"] == "HPLN-TAN" and header["CRVAL1"] == 612.0
    assert header["WAVELNTH"] in (171, 304) and header["NAXIS1"] == 200
    with pytest.raises(drms.DrmsExportError, match="not been validated"):
        client.export("aia.lev1_euv_12s[2020-06-07T21:30:00Z/60s@60s][304]{image}",
                      method="url", protocol="fits", email="stranger@example.org",
                      process=process).wait(timeout=1, sleep=0)


@pytest.mark.parametrize("route", ["jsoc", "ssw"])
def test_both_routes_bring_the_event_s_frames_with_the_jet_where_hek_says(
        services, database_url, tmp_path, route):
    server, jsoc, ssw = services
    row = next(r for r in event_rows(server, tmp_path) if r["hpc_x"] == JET.hpc_x)
    obs = aia(server, route, wavelengths=[304, 171])
    raw = obs.download(row)
    raw.save()
    # 21:29 to 21:37 every 60 s, two wavelengths.
    assert raw.num_frames == 18 and raw.wavelengths == [171, 304]
    assert isinstance(raw, RawCutouts) and raw.is_intact()
    paths = [str(storage.full_path(relative)) for relative in raw.fits_paths()]
    assert all(os.path.getsize(p) > 2880 for p in paths)
    middle = raw.data.index[(raw.data["wavelength"] == 304)
                            & (raw.data["time"].str.startswith("2020-06-07T21:33"))][0]
    x, y = brightest_world(paths[middle])
    assert abs(x - JET.hpc_x) <= 2.0 and abs(y - JET.hpc_y) <= 2.0
    job = obs.job(row)
    assert job["state"] == "done" and job["polls"] == 3 and len(job["files"]) == 18
    assert len((jsoc if route == "jsoc" else ssw).submitted) == 1
    with Session() as session:
        stored = session.scalars(sa.select(CutoutJob)).one()
    assert EMAIL not in str(stored.parameters) and stored.finished_at is not None
    # A second download finds the job done and the files in place: nothing asked again.
    server.reset_stats()
    assert obs.download(row).num_frames == 18
    assert server.count() == 0


def test_the_field_of_view_grows_with_the_event_s_box(services, tmp_path):
    server, _, _ = services
    row = event_rows(server, tmp_path)[0]
    row["extra"] = {**row["extra"], "bbox_x1": 500.0, "bbox_x2": 700.0}
    request = aia(server, "ssw").cutout_request(row)
    assert request["fovx"] == pytest.approx(240.0) and request["fovy"] == 120.0


def test_a_star_or_a_missing_email_is_a_clear_error(services, database_url, tmp_path):
    server, _, _ = services
    with pytest.raises(ValueError, match="AIA cuts out solar events.*icrs"):
        aia(server, "jsoc").download({"name": "star", "ra": 1.0, "dec": 2.0})
    row = event_rows(server, tmp_path)[0]
    with pytest.raises(ParameterError, match="notify.*registered with JSOC"):
        VirtualAIA(route="jsoc", jsoc_url=server.url, **QUICK).download(row)
    with pytest.raises(ParameterError, match="AIA has no channel"):
        VirtualAIA(wavelengths=[305])


@pytest.mark.parametrize("route", ["jsoc", "ssw"])
def test_a_job_that_never_finishes_fails_at_its_deadline_with_a_reason(
        services, database_url, tmp_path, route):
    server, jsoc, ssw = services
    (jsoc if route == "jsoc" else ssw).never_finish = True
    row = event_rows(server, tmp_path)[0]
    began = time.monotonic()
    with pytest.raises(CutoutJobFailed, match=r"not finished 1 s after it was sent"):
        aia(server, route, job_timeout=1.0).download(row)
    assert time.monotonic() - began < 4.0
    job = aia(server, route).job(row)
    assert job["state"] == "failed" and "given up" in job["error"] and job["polls"] >= 3


@pytest.mark.parametrize("route", ["jsoc", "ssw"])
def test_a_failed_job_is_recorded_with_the_service_s_reason_then_sent_again(
        services, database_url, tmp_path, route):
    server, jsoc, ssw = services
    service = jsoc if route == "jsoc" else ssw
    service.fail_when = ("2020-06-07T2",)
    row = event_rows(server, tmp_path)[0]
    with pytest.raises(CutoutJobFailed, match="no data for"):
        aia(server, route).download(row)
    job = aia(server, route).job(row)
    assert job["state"] == "failed" and "no data for" in job["error"]
    service.fail_when = ()
    assert aia(server, route).download(row).num_frames == 9
    assert len(service.submitted) == 2 and aia(server, route).job(row)["state"] == "done"


_KILLED_RUN = """
import sys
from skyretriever import database, storage
from skyretriever.observatories.aia import VirtualAIA
storage.configure(sys.argv[2]); database.configure(sys.argv[1])
row = {row!r}
VirtualAIA(route={route!r}, jsoc_url={url!r}, ssw_url={url!r}, notify="{email}",
           **{quick!r}).download(row)
"""


@pytest.mark.slow
@pytest.mark.parametrize("route", ["jsoc", "ssw"])
def test_sigkill_while_jobs_are_pending_then_the_next_run_polls_them(
        services, database_url, data_root, tmp_path, route):
    server, jsoc, ssw = services
    service = jsoc if route == "jsoc" else ssw
    service.never_finish = True
    row = event_rows(server, tmp_path)[0]
    script = _KILLED_RUN.format(row=row, route=route, url=server.url, email=EMAIL, quick=QUICK)
    child = subprocess.Popen([sys.executable, "-c", script, database_url, str(data_root)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = aia(server, route).job(row)
            if job is not None and job["state"] == "polling" and job["polls"] >= 2:
                break
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        else:
            pytest.fail("the child never got to poll its job")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert len(service.submitted) == 1
    service.never_finish = False
    raw = aia(server, route).download(row)
    assert raw.num_frames == 9
    assert len(service.submitted) == 1, "the pending job was sent again"
    job = aia(server, route).job(row)
    assert job["state"] == "done" and job["polls"] > 2


@pytest.mark.parametrize("knob", ["unavailable", "reset", "truncate", "html", "timeout"])
@pytest.mark.parametrize("route", ["jsoc", "ssw"])
def test_faults_of_every_kind_are_survived(services, database_url, tmp_path, route, knob):
    server, jsoc, ssw = services
    row = event_rows(server, tmp_path)[0]
    server.faults = Faults(**{f"{knob}_rate": 1.0}, retry_after=0, faults_per_request=1,
                           stall=1.5)
    raw = aia(server, route, timeout=1.0).download(row)
    server.faults = Faults()
    assert raw.num_frames == 9
    first = raw.data["file"].iloc[0]
    folder = aia(server, route).files_folder(row)
    with fits.open(storage.full_path(f"{folder}/{first}")) as hdul:
        assert hdul[0].data.shape == (200, 200)
    assert aia(server, route).job(row)["state"] == "done"
    assert u.Unit(fits.getheader(storage.full_path(f"{folder}/{first}"))["CUNIT1"]) == u.arcsec


@pytest.mark.parametrize("route", ["jsoc", "ssw"])
def test_an_event_with_no_coverage_is_a_recorded_empty_result(
        services, database_url, tmp_path, route):
    server, jsoc, ssw = services
    (jsoc if route == "jsoc" else ssw).empty_when = ("2020-06-07T21",)
    row = next(r for r in event_rows(server, tmp_path) if r["hpc_x"] == JET.hpc_x)
    raw = aia(server, route).download(row)
    raw.save()
    assert raw.is_empty and raw.num_frames == 0 and raw.filename is None
    job = aia(server, route).job(row)
    assert job["state"] == "done" and job["files"] == []


def test_the_jsoc_email_is_in_no_file_row_error_or_log_line(
        project_factory, services, data_root, tmp_path, caplog, monkeypatch):
    from skyretriever.models.base import Base

    server, jsoc, _ = services
    caplog.set_level(logging.DEBUG)
    # Each export request fails once first: the error paths are taken too.
    server.faults = Faults(unavailable_rate=1.0, faults_per_request=1, retry_after=0,
                           paths=("/cgi-bin/ajax/jsoc_fetch",))
    project = project_factory(obs_names=["aia"], catalog_kwargs=hek_catalog(server, tmp_path),
                              aia=aia_settings(server, "jsoc", notify=EMAIL))
    assert project.run().counts["done"] == 2 and len(jsoc.submitted) == 2
    settings = project.output_folder / "settings.yaml"
    assert "notify: null" in settings.read_text()
    # From the environment, an email JSOC does not know (asking for other cutouts than those
    # downloaded): refused, its reason shown without the email.
    unknown = "someone.else@example.org"
    monkeypatch.setenv("SKYRETRIEVER_JSOC_EMAIL", unknown)
    refused = project_factory(name="from_env", obs_names=["aia"],
                              catalog_kwargs=hek_catalog(server, tmp_path),
                              aia=aia_settings(server, "jsoc", wavelengths=[171]))
    summary = refused.run()
    assert summary.counts["failed"] == 2
    reasons = " ".join(reason for _, reason in summary.failures)
    assert "has not been validated or registered" in reasons and "<notify email>" in reasons
    assert "URL for request" in caplog.text  # drms' debug log (with the URLs) was captured
    assert "requester=" not in caplog.text  # drms sends the email's local part otherwise
    secrets = [EMAIL, unknown, "user%40example.org", "someone.else%40example.org"]
    for secret in secrets:
        assert secret not in caplog.text and secret not in reasons
    for path in tmp_path.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not [s for s in secrets if s.encode() in content], path
    with Session() as session:
        for table in Base.metadata.sorted_tables:
            rows = repr(session.execute(sa.select(table)).all())
            assert not [s for s in secrets if s in rows], table.name
