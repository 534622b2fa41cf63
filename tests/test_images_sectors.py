"""Raw images by sector: the rows of ``raw_image_sectors``, the sector query, and a later run
that adds the sectors a source's file lacks (and only those) without harming the file.

The simulated bucket and TESScut of ``skyretriever.testing.ffi`` are given a new
sector between runs (:meth:`FFISky.add_sector`), as MAST publishing one.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import sqlalchemy as sa

from skyretriever import queries
from skyretriever.database import SmartSession
from skyretriever.models import Lightcurve, RawImages, RawImageSector, Source
from skyretriever.models.images import BTJD_TO_MJD, Cutout
from skyretriever.observatories.tessffi import VirtualTESSFFI
from skyretriever.testing.ffi import (
    PIXEL_ARCSEC,
    CubeBucketService,
    FFISector,
    FFISky,
    FFIStar,
    TesscutService,
)
from skyretriever.testing.server import ArchiveServer, Reply

STARS = [FFIStar("bright", 100.0, -30.0, tmag=10.0),
         FFIStar("faint", 100.07, -29.95, tmag=11.5)]
ROWS = [{"name": s.name, "ra": s.ra, "dec": s.dec, "mag": s.tmag} for s in STARS]
OFF_SKY = {"name": "nowhere", "ra": 10.0, "dec": 40.0, "mag": 12.0}
FAST = {"max_attempts": 2, "backoff": 0.01, "timeout": 20.0}
FRAMES, SHAPE = 24, (40, 40)


class _Bucket(CubeBucketService):
    """The bucket, answering HTTP 500 for the cubes whose key holds one of ``broken``."""

    def __init__(self, sky):
        super().__init__(sky)
        self.broken: set[str] = set()

    def handle(self, request):
        if any(part in request.path for part in self.broken):
            return Reply(status=500, body=b"<Error><Code>InternalError</Code></Error>",
                         content_type="application/xml")
        return super().handle(request)


def _sky(tmp_path, sectors=(1, 2)) -> FFISky:
    return FFISky.simple(tmp_path / "ffi", STARS, sectors=sectors, frames=FRAMES, shape=SHAPE)


def _third_sector() -> FFISector:
    """Sector 3 as FFISky.simple would have made it (pointing 3.3 pixels on per sector)."""
    offset = 3.3 * 2 * PIXEL_ARCSEC / 3600.0
    return FFISector(3, 1, 1, (STARS[0].ra + offset, STARS[0].dec - offset / 2), shape=SHAPE,
                     frames=FRAMES, start_btjd=1325.3 + 27.4 * 2)


def _catalog(tmp_path, rows) -> str:
    path = tmp_path / "catalog.csv"
    path.write_text("name,ra,dec,mag\n" + "".join(
        f"{r['name']},{r['ra']},{r['dec']},{r['mag']}\n" for r in rows))
    return str(path)


def _raws(session) -> dict[str, RawImages]:
    return {r.source_name: r for r in session.scalars(sa.select(RawImages))}


def _with_cutouts(project, sector: int) -> list[str]:
    with SmartSession() as session:
        return [source.name for source, _ in
                queries.sources_with_cutouts(session, project.context, sector)]


def test_a_new_sector_is_added_to_the_file_and_only_it_is_read(project_factory, tmp_path,
                                                               data_root):
    sky = _sky(tmp_path)
    bucket = _Bucket(sky)
    with ArchiveServer([bucket]) as server:
        project = project_factory(
            name="ffi_sectors", obs_names=["TESSFFI"],
            catalog_kwargs={"kind": "file", "filename": _catalog(tmp_path, [*ROWS, OFF_SKY])},
            TESSFFI={"route": "s3", "s3_endpoint_url": server.url, **FAST})
        assert project.run().failures == []
        with SmartSession() as session:
            bright = _raws(session)["bright"]
            first_id, first_checksum = bright.id, bright.checksum
            first_pixels = bright.data[1].flux.copy()
            groups = [(g.group, g.sector, g.camera, g.ccd, g.num_frames, g.cutout_rows,
                       g.cutout_columns) for g in bright.sector_rows]
            assert groups == [("s0001", 1, 1, 1, FRAMES, 11, 11), ("s0002", 2, 1, 1, FRAMES, 11, 11)]
            second = bright.sector_rows[1]
            assert second.time_start == pytest.approx(float(bright.data[2].time[0]) + BTJD_TO_MJD)
            assert bright.time_end == second.time_end
        assert _with_cutouts(project, 2) == ["bright", "faint"]
        assert _with_cutouts(project, 3) == []

        # Nothing new in the bucket: a later run lists it and reads no cube.
        server.reset_stats()
        again = project.run()
        assert again.counts["downloaded"] == 0 and again.counts["skipped"] == 3
        assert [r.path for r in server.records] == ["/stpubdata"]

        # MAST publishes sector 3, but its cube fails: the sources fail, their files and rows
        # stay as they were.
        sky.add_sector(_third_sector())
        bucket.broken = {"tess-s0003-1-1-cube.fits"}
        broken = project.run()
        assert sorted(name for name, _ in broken.failures) == ["bright", "faint", "nowhere"]
        assert all("tess-s0003-1-1" in error for _, error in broken.failures)
        with SmartSession() as session:
            bright = _raws(session)["bright"]
            assert (bright.checksum, bright.sectors) == (first_checksum, [1, 2])
            assert bright.is_intact() and len(bright.sector_rows) == 2

        # The cube is back: only sector 3 is read, added to the same file and row.
        bucket.broken = set()
        server.reset_stats()
        fixed = project.run()
        assert fixed.failures == [] and fixed.counts["downloaded"] == 2
        cube_reads = {r.path for r in server.records if r.path != "/stpubdata"}
        assert cube_reads == {"/stpubdata/tess/public/mast/tess-s0003-1-1-cube.fits"}
        with SmartSession() as session:
            raws = _raws(session)
            bright = raws["bright"]
            assert bright.id == first_id and bright.sectors == [1, 2, 3]
            assert bright.checksum != first_checksum and bright.is_intact()
            assert bright.num_points == 3 * FRAMES
            assert [g.group for g in bright.sector_rows] == ["s0001", "s0002", "s0003"]
            np.testing.assert_array_equal(bright.data[1].flux, first_pixels)
            assert bright.altdata["sectors_added"] == [3]
            assert raws["nowhere"].is_empty and raws["nowhere"].sector_rows == []
            source = session.scalar(sa.select(Source).where(Source.name == "bright"))
            curves = session.scalars(sa.select(Lightcurve).where(
                Lightcurve.source_id == source.id).order_by(Lightcurve.series_number)).all()
            assert [(lc.series_total, set(lc.data["sector"])) for lc in curves] == [
                (3, {1}), (3, {2}), (3, {3})]
            assert all(lc.raw_id == first_id for lc in curves)
            # One group row per sector, no more: the old ones were replaced, not added to.
            assert session.scalar(sa.select(sa.func.count()).select_from(RawImageSector)) == 6
        assert _with_cutouts(project, 3) == ["bright", "faint"]


def test_widening_sectors_fetches_only_the_new_ones(project_factory, tmp_path, data_root):
    sky = _sky(tmp_path)
    with ArchiveServer([TesscutService(sky)]) as server:
        settings = {"route": "tesscut", "tesscut_url": server.url + "/tesscut", **FAST}
        catalog = {"kind": "file", "filename": _catalog(tmp_path, ROWS[:1])}
        narrow = project_factory(name="ffi_narrow", obs_names=["TESSFFI"],
                                 catalog_kwargs=catalog, TESSFFI={**settings, "sectors": [1]})
        assert narrow.run().failures == []
        server.reset_stats()
        wide = project_factory(name="ffi_wide", obs_names=["TESSFFI"], catalog_kwargs=catalog,
                               TESSFFI={**settings, "sectors": [1, 2]})
        summary = wide.run()
        assert summary.failures == [] and summary.counts["downloaded"] == 1
        cutouts = [r.query for r in server.records if r.path.endswith("/astrocut")]
        assert len(cutouts) == 1 and "sector=2" in cutouts[0]
        with SmartSession() as session:
            (raw,) = _raws(session).values()     # one raw product, shared by both projects
            assert raw.sectors == [1, 2] and [g.sector for g in raw.sector_rows] == [1, 2]
            counts = dict(session.execute(
                sa.select(Source.project, sa.func.count(Lightcurve.id))
                .join(Lightcurve, Lightcurve.source_id == Source.id)
                .group_by(Source.project)).all())
        # Each project's light curves are of its own sectors.
        assert counts == {"ffi_narrow": 1, "ffi_wide": 2}
        assert _with_cutouts(wide, 2) == ["bright"]


def test_sectors_are_not_in_the_download_hash_which_products_made_before_keep():
    before = json.dumps({"observatory": "tessffi", "parameters": {
        "cutout_size": 11, "product": "SPOC", "sectors": None}}, sort_keys=True,
        separators=(",", ":"))
    expected = hashlib.sha256(before.encode()).hexdigest()[:16]
    assert VirtualTESSFFI().download_hash == expected
    assert VirtualTESSFFI(sectors=[1, 5]).download_hash == expected
    assert VirtualTESSFFI(cutout_size=9).download_hash != expected


def _cutouts(sectors) -> dict[int, Cutout]:
    cube = np.ones((3, 5, 5), np.float32)
    return {s: Cutout(sector=s, camera=2, ccd=4, time=np.arange(3.0) + 1325.0 + 27.4 * s,
                      timecorr=np.zeros(3), cadenceno=np.arange(3), flux=cube * s,
                      flux_err=cube * 0.1, quality=np.zeros(3, np.int32), wcs_header="",
                      primary_header="", corner=(10, 20)) for s in sectors}


def test_a_row_brought_up_to_a_file_replaces_its_sector_rows(database_url, data_root):
    # What check --repair and populate_sources do to a row whose file changed: its sector
    # rows follow (sector 1 goes, 2 stays, 3 comes) and no (row, key) is ever held twice.
    raw = RawImages(data=_cutouts([1, 2]), source_name="star", observatory="tessffi",
                    ra=10.0, dec=5.0, download_hash="abc", target_key="k")
    raw.save()
    with SmartSession() as session:
        session.add(raw)
        session.commit()
        raw_id = raw.id
    newer = RawImages(data=_cutouts([2, 3]), source_name="star", observatory="tessffi",
                      ra=10.0, dec=5.0, download_hash="abc", target_key="k")
    newer.save()
    with SmartSession() as session:
        queries.save_raw_row(session, newer.column_values(), RawImages)
        session.commit()
    with SmartSession() as session:
        row = session.get(RawImages, raw_id)
        assert row.sectors == [2, 3] and row.is_intact()
        assert [(g.key, g.camera, g.ccd, g.num_frames) for g in row.sector_rows] == [
            (2, 2, 4, 3), (3, 2, 4, 3)]
        assert row.sector_rows[1].time_start == pytest.approx(1325.0 + 27.4 * 3 + BTJD_TO_MJD)
        session.delete(row)
        session.commit()
        assert session.scalar(sa.select(sa.func.count()).select_from(RawImageSector)) == 0


def test_check_repair_makes_the_sector_rows_of_files_written_before_them(project_factory,
                                                                        data_root):
    from skyretriever.checker import check_project

    project = project_factory(name="ffi_check", obs_names=["TESSFFI"],
                              catalog_kwargs={"default": "test", "num_sources": 2})
    raw = RawImages(data=_cutouts([4, 7]), source_name="old", observatory="tessffi",
                    ra=10.0, dec=5.0, download_hash="abc", target_key="k")
    raw.save()
    with SmartSession() as session:
        session.add(raw)
        session.commit()
        # As a row written before migration 0009_image_sectors: no sector rows.
        session.execute(sa.delete(RawImageSector))
        session.commit()
    report = check_project(project)
    (finding,) = [f for f in report.findings if f.kind == "raw images without sector rows"]
    assert finding.where == raw.filename
    repaired = check_project(project, repair=True)
    assert [f.repair for f in repaired.findings if f.kind == finding.kind] == [
        "2 sector row(s) made from the file"]
    with SmartSession() as session:
        assert [(g.group, g.sector, g.num_frames) for g in session.get(
            RawImages, raw.id).sector_rows] == [("s0004", 4, 3), ("s0007", 7, 3)]
    assert not [f for f in check_project(project).findings if f.kind == finding.kind]
