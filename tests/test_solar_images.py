"""HEK events -> AIA cutouts -> images and movies through a project run (the pipeline of every
data type), on SQLite and PostgreSQL: rows and links, images under 1 MiB, a movie per
wavelength, the jet where HEK put it, the pixel <-> Sun mapping exact and stored."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from skyretriever import storage
from skyretriever.checker import check_project
from skyretriever.database import Session
from skyretriever.models import CutoutJob, Properties, RawCutouts, Source, SourceRawData
from skyretriever.solar.images import MAX_IMAGE_BYTES, ImageMapping, render_frame
from skyretriever.testing.aia import aia_cutout
from tests.solar_support import EMAIL, JET, aia_settings, hek_catalog, solar_services


@pytest.fixture
def services():
    with solar_services() as running:
        yield running


def _image_files(data_root) -> dict[str, tuple[int, int]]:
    """Every file under the projects' AIA image folders: (inode, mtime) by relative path."""
    return {str(path.relative_to(data_root)): (path.stat().st_ino, path.stat().st_mtime_ns)
            for path in (data_root / "projects").rglob("*") if path.is_file()
            and "AIA_images" in str(path)}


def _table_rows() -> dict[str, list]:
    """The rows' keys (a row written again gets a new id), and when each source changed."""
    with Session() as session:
        rows = {model.__tablename__: sorted(session.execute(sa.select(
                    *model.__table__.primary_key.columns)).tuples().all())
                for model in (Source, RawCutouts, SourceRawData, CutoutJob, Properties)}
        rows["modified"] = sorted(session.execute(sa.select(
            Source.id, Source.modified_at)).tuples().all())
    return rows


@pytest.mark.parametrize("route", ["jsoc", "ssw"])
def test_a_project_of_events_downloads_cutouts_and_makes_images_and_movies(
        project_factory, services, data_root, tmp_path, route):
    server, jsoc, ssw = services
    project = project_factory(
        obs_names=["aia"],
        catalog_kwargs=hek_catalog(server, tmp_path),
        aia=aia_settings(server, route, notify=EMAIL, wavelengths=[171, 304]))
    summary = project.run()
    assert summary.failures == [] and summary.counts["done"] == 2
    with Session() as session:
        sources = {s.name: s for s in session.scalars(sa.select(Source))}
        raws = session.scalars(sa.select(RawCutouts).order_by(RawCutouts.time_start)).all()
        links = session.execute(sa.select(SourceRawData.source_id, SourceRawData.raw_id)).all()
        properties = session.scalars(sa.select(Properties)).all()
    # JET: 21:29-21:37 and OTHER: 22:59-23:05, every minute, two wavelengths.
    assert [raw.num_frames for raw in raws] == [18, 14]
    assert {(s, r) for s, r in links} == {
        (sources[raw.source_name].id, raw.id) for raw in raws}
    assert sorted(p.extra["num_images"] for p in properties) == [14, 18]
    obs = project.observatories["aia"]
    jet_raw = raws[0]
    folder = storage.full_path(obs.images_folder(jet_raw))
    entries = json.loads((folder / "images.json").read_text())
    assert len(entries) == 18
    for entry in entries:
        size = (folder / entry["image"]).stat().st_size
        assert 0 < size < MAX_IMAGE_BYTES
    for wavelength, count in ((171, 9), (304, 9)):
        with Image.open(folder / f"movie_{wavelength}.png") as movie:
            assert movie.n_frames == count and movie.size == (200, 200)
    # Mid-event in 304: the brightest part of the image is where HEK put the jet (within 2 arcsec).
    middle = next(e for e in entries if e["wavelength"] == 304
                  and e["time"].startswith("2020-06-07T21:33"))
    mapping = ImageMapping.from_json(middle["mapping"])
    with Image.open(folder / middle["image"]) as picture:
        red = np.asarray(picture.convert("RGB"), dtype=float).sum(axis=2)
    # The centroid of the brightest pixels (the scaling saturates the jet's top).
    y, x = np.nonzero(red >= 0.95 * red.max())
    tx, ty = mapping.to_world(x.mean(), y.mean())
    assert abs(tx - JET.hpc_x) <= 2.0 and abs(ty - JET.hpc_y) <= 2.0
    # A second run finds everything done: no job, no file asked for again, no image made
    # again (each file the same inode and time), no row added.
    made, rows = _image_files(data_root), _table_rows()
    assert len([name for name in made if name.endswith("/reduction.json")]) == 2
    server.reset_stats()
    again = project.run()
    assert again.counts.get("downloaded", 0) == 0 and server.count() == 0
    assert len((jsoc if route == "jsoc" else ssw).submitted) == 2
    assert _image_files(data_root) == made and _table_rows() == rows
    assert check_project(project).clean
    if route == "ssw":
        # Another scaling: every image is made again (new files, other pixels).
        frame = folder / middle["image"]
        asinh = np.asarray(Image.open(frame))
        scaled = project_factory(
            obs_names=["aia"], catalog_kwargs=hek_catalog(server, tmp_path),
            aia=aia_settings(server, route, notify=EMAIL, wavelengths=[171, 304],
                             scaling="log"))
        assert scaled.run(redo=True).counts["done"] == 2
        remade = _image_files(data_root)
        assert set(remade) == set(made) and all(remade[name] != made[name] for name in made)
        assert not np.array_equal(np.asarray(Image.open(frame)), asinh)


def test_pixel_world_pixel_round_trip_is_exact_and_the_mapping_is_stored(tmp_path):
    storage.configure(tmp_path / "data")
    hdu = aia_cutout([JET], "2020-06-07T21:33:00", 304, 600.0, 310.0, 300.0, 180.0)
    hdu.header["CROTA2"] = 12.0  # a rotated image: the mapping must follow the PC matrix
    angle = np.radians(12.0)
    hdu.header.update({"PC1_1": np.cos(angle), "PC1_2": -np.sin(angle),
                       "PC2_1": np.sin(angle), "PC2_2": np.cos(angle)})
    fits_path = tmp_path / "frame.fits"
    hdu.writeto(fits_path)
    mapping = render_frame(fits_path, tmp_path / "frame.png", max_size=256)
    assert mapping.binning == 2 and (mapping.png_width, mapping.png_height) == (250, 150)
    rng = np.random.default_rng(7)
    x, y = rng.uniform(0, 249, 500), rng.uniform(0, 149, 500)
    back_x, back_y = mapping.from_world(*mapping.to_world(x, y))
    assert np.max(np.abs(back_x - x)) < 0.01 and np.max(np.abs(back_y - y)) < 0.01
    rebuilt = ImageMapping.from_json(json.loads(json.dumps(mapping.to_json())))
    assert np.allclose(rebuilt.to_world(x, y), mapping.to_world(x, y), atol=1e-9, rtol=0)
    # The image's top-left pixel is the FITS image's top-left 2x2 block (north up).
    fx, fy = mapping.to_fits(0.0, 0.0)
    assert (fx, fy) == (0.5, 298.5)
    with Image.open(tmp_path / "frame.png") as picture:
        assert picture.size == (250, 150)


def test_an_image_over_the_zooniverse_limit_is_refused_and_nothing_is_left(tmp_path):
    storage.configure(tmp_path / "data")
    rng = np.random.default_rng(1)
    hdu = aia_cutout([], "2020-06-07T21:33:00", 171, 0.0, 0.0, 1200.0, 1200.0)
    hdu.data = rng.uniform(0, 5000, hdu.data.shape).astype(np.float32)  # noise: no compression
    hdu.writeto(tmp_path / "noisy.fits")
    with pytest.raises(ValueError, match="over the 1 MiB Zooniverse limit"):
        render_frame(tmp_path / "noisy.fits", tmp_path / "noisy.png", max_size=2000)
    assert not (tmp_path / "noisy.png").exists()
    assert render_frame(tmp_path / "noisy.fits", tmp_path / "small.png", max_size=400).binning == 5


_KILLED_PROJECT = """
import sys
from skyretriever import Project
project = Project(name="killed", cfg_file=False, obs_names=["aia"], database_url=sys.argv[1],
                  data_root=sys.argv[2], progress=False, execution_kwargs={{"scheduler": "serial"}},
                  catalog_kwargs={catalog!r}, aia={aia!r})
project.run()
"""


@pytest.mark.slow
def test_sigkill_of_a_run_while_jobs_pend_then_the_next_run_finishes_and_check_is_clean(
        project_factory, services, database_url, data_root, tmp_path):
    import signal
    import subprocess
    import sys
    import time


    server, _, ssw = services
    ssw.never_finish = True
    catalog, aia = hek_catalog(server, tmp_path), aia_settings(server)
    script = _KILLED_PROJECT.format(catalog=catalog, aia=aia)
    child = subprocess.Popen([sys.executable, "-c", script, database_url, str(data_root)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with Session() as session:
                polling = session.scalars(sa.select(CutoutJob).where(
                    CutoutJob.state == "polling", CutoutJob.polls >= 2)).all()
            if polling:
                break
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        else:
            pytest.fail("the killed run never polled a job")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    sent = list(ssw.submitted)
    assert len(sent) >= 1
    ssw.never_finish = False
    project = project_factory(name="killed", obs_names=["aia"], catalog_kwargs=catalog, aia=aia)
    summary = project.run()
    assert summary.failures == [] and summary.counts["done"] == 2
    # The pending job was polled again, not sent again; the other event's job was sent once.
    assert ssw.submitted[:len(sent)] == sent and len(ssw.submitted) == 2
    with Session() as session:
        assert sorted(j.state for j in session.scalars(sa.select(CutoutJob))) == ["done", "done"]
    assert check_project(project).clean
