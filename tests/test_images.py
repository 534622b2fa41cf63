"""The image data type: TESS FFI cutouts from the S3 cubes (byte ranges) and from TESScut.

Everything runs against the simulated bucket and TESScut of
``skyretriever.testing.ffi`` on loopback HTTP, whose cubes are made by
astrocut's ``CubeFactory`` from FFI files in the real layout.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sqlalchemy as sa
from astropy.coordinates import SkyCoord

from skyretriever import storage
from skyretriever.database import SmartSession
from skyretriever.models import Lightcurve, Properties, RawImages, Source, SourceRawData
from skyretriever.observatories.tessffi import VirtualTESSFFI
from skyretriever.parameters import ParameterError
from skyretriever.testing.ffi import CubeBucketService, FFISky, FFIStar, TesscutService
from skyretriever.testing.server import ArchiveServer, Reply

STARS = [FFIStar("bright", 100.0, -30.0, tmag=10.0),
         FFIStar("faint", 100.07, -29.95, tmag=11.5)]
OFF_SKY = {"name": "nowhere", "ra": 10.0, "dec": 40.0, "mag": 12.0}
FAST = {"max_attempts": 3, "backoff": 0.01, "timeout": 20.0}


@pytest.fixture(scope="module")
def ffi_sky(tmp_path_factory):
    return FFISky.simple(tmp_path_factory.mktemp("ffi"), STARS, sectors=(1, 2), frames=96,
                         shape=(48, 48))


@pytest.fixture
def server(ffi_sky):
    with ArchiveServer([TesscutService(ffi_sky), CubeBucketService(ffi_sky)]) as running:
        yield running


def _row(star: FFIStar) -> dict:
    return {"name": star.name, "ra": star.ra, "dec": star.dec, "mag": star.tmag}


def _s3(server, **kwargs) -> VirtualTESSFFI:
    return VirtualTESSFFI(route="s3", s3_endpoint_url=server.url, **FAST, **kwargs)


def _tesscut(server, **kwargs) -> VirtualTESSFFI:
    return VirtualTESSFFI(route="tesscut", tesscut_url=server.url + "/tesscut", **FAST, **kwargs)


def test_the_s3_route_cuts_what_astrocut_cuts_reading_only_the_cutout(server, ffi_sky, data_root):
    import astrocut

    obs = _s3(server, cutout_size=7)
    raw = obs.download(_row(STARS[0]))
    assert raw.sectors == [1, 2] and raw.num_points == 192
    bucket = next(s for s in server.services if isinstance(s, CubeBucketService))
    for sector in ffi_sky.sectors:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = astrocut.CutoutFactory().cube_cut(
                str(sector.cube_path), SkyCoord(100.0, -30.0, unit="deg"), 7, memory_only=True)
        cutout = raw.data[sector.sector]
        np.testing.assert_array_equal(cutout.flux, reference[1].data["FLUX"])
        np.testing.assert_array_equal(cutout.flux_err, reference[1].data["FLUX_ERR"])
        np.testing.assert_array_equal(cutout.quality, reference[1].data["QUALITY"])
        np.testing.assert_allclose(cutout.time, reference[1].data["TIME"])
        # Bytes read per cutout: within 1.5x of the cutout's own size (flux and error).
        assert cutout.extra["bytes"] <= 1.5 * cutout.flux.size * 8
    assert bucket.ranges, "the cube was read by ranges, never whole"
    # A second source on the same cubes reads no header again (cached per cube).
    before = server.count()
    obs.download(_row(STARS[1]))
    # 7 rows of 7 pixels, one range per row (the rows lie 41 pixels apart), in 2 sectors.
    assert server.count() - before == 2 * 7


def test_both_routes_give_the_same_pixels(server, data_root):
    s3 = _s3(server, cutout_size=9).download(_row(STARS[1]))
    tesscut = _tesscut(server, cutout_size=9).download(_row(STARS[1]))
    assert s3.sectors == tesscut.sectors == [1, 2]
    for sector in (1, 2):
        np.testing.assert_array_equal(s3.data[sector].flux, tesscut.data[sector].flux)
        np.testing.assert_array_equal(s3.data[sector].quality, tesscut.data[sector].quality)


def test_astroquery_tesscut_works_against_the_simulator(server):
    from astroquery.exceptions import NoResultsWarning
    from astroquery.mast.cutouts import TesscutClass

    client = TesscutClass()
    client._service_api_connection.REQUEST_URL = server.url + "/tesscut/api/v0.1/"
    sectors = client.get_sectors(coordinates=SkyCoord(100.0, -30.0, unit="deg"))
    assert list(sectors["sectorName"]) == ["tess-s0001-1-1", "tess-s0002-1-1"]
    assert list(sectors["sector"]) == [1, 2]
    cutouts = client.get_cutouts(coordinates=SkyCoord(100.0, -30.0, unit="deg"), size=5,
                                 sector=2)
    assert len(cutouts) == 1 and cutouts[0][1].data["FLUX"].shape == (96, 5, 5)
    assert cutouts[0].filename.endswith("_5x5_astrocut.fits")
    with pytest.warns(NoResultsWarning, match="does not overlap"):
        assert client.get_cutouts(coordinates=SkyCoord(10.0, 40.0, unit="deg"), size=5) == []


def test_a_star_off_every_sector_is_empty_on_both_routes(server, data_root):
    for obs in (_s3(server), _tesscut(server)):
        raw = obs.download(OFF_SKY)
        assert raw.is_empty and raw.sectors == []
        raw.save()
        assert raw.filename is None


def test_tesscut_504s_are_retried(ffi_sky, data_root):
    service = TesscutService(ffi_sky, gateway_timeouts=2)
    with ArchiveServer([service]) as running:
        obs = VirtualTESSFFI(route="tesscut", tesscut_url=running.url + "/tesscut",
                             max_attempts=3, backoff=0.01, sectors=[1])
        raw = obs.download(_row(STARS[0]))
        assert raw.sectors == [1]
        statuses = [r.status for r in running.records if r.path.endswith("/astrocut")]
        assert statuses == [504, 504, 200]


class _NotAZip(TesscutService):
    def astrocut(self, request):
        return Reply(body=b"<html>maintenance</html>", content_type="application/zip")


class _WrongRange(CubeBucketService):
    """Answers every ranged read with the bytes one pixel further on."""

    def handle(self, request):
        wanted = request.headers.get("range")
        if wanted and request.path.endswith("cube.fits"):
            first, last = (int(v) for v in wanted.split("=")[1].split("-"))
            if first > 50_000:
                request.headers = {**request.headers, "range": f"bytes={first + 8}-{last + 8}"}
        return super().handle(request)


def _catalog(tmp_path, rows) -> str:
    path = tmp_path / "ffi_catalog.csv"
    lines = ["name,ra,dec,mag"] + [f"{r['name']},{r['ra']},{r['dec']},{r['mag']}" for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_project_run_makes_ffi_light_curves_and_resumes(project_factory, server, tmp_path,
                                                          data_root):
    rows = [_row(STARS[0]), _row(STARS[1]), OFF_SKY]
    project = project_factory(
        name="ffi", obs_names=["TESSFFI"],
        catalog_kwargs={"kind": "file", "filename": _catalog(tmp_path, rows)},
        TESSFFI={"route": "s3", "s3_endpoint_url": server.url, **FAST})
    summary = project.run()
    assert summary.failures == []
    assert (summary.counts["done"], summary.counts["empty"]) == (3, 1)
    with SmartSession() as session:
        raws = {r.source_name: r for r in session.scalars(sa.select(RawImages))}
        assert raws["nowhere"].is_empty and raws["nowhere"].filename is None
        bright = raws["bright"]
        assert bright.is_intact() and bright.sectors == [1, 2] and bright.cutout_size == 11
        source = session.scalar(sa.select(Source).where(Source.name == "bright"))
        link = session.get(SourceRawData, (source.id, "tessffi"))
        assert link.raw_id == bright.id
        curves = session.scalars(sa.select(Lightcurve).where(Lightcurve.source_id == source.id)
                                 .order_by(Lightcurve.series_number)).all()
        assert [(lc.series_number, lc.series_total) for lc in curves] == [(1, 2), (2, 2)]
        for lc, sector in zip(curves, (1, 2)):
            assert lc.raw_id == bright.id and set(lc.data["sector"]) == {sector}
            # The flagged frames (DQUALITY 32) are flagged in the light curve.
            assert lc.num_points == 96 and lc.num_good_points == 94
            # The aperture (2 px) holds most of the star's light, the background removed.
            assert 0.85 * STARS[0].flux < lc.flux_mean < 1.02 * STARS[0].flux
            assert lc.to_lightkurve().meta["SECTOR"] == sector
        assert session.scalar(sa.select(Properties).where(Properties.source_id == source.id))
    # Everything is done: the second run lists the bucket (for sectors added since) and
    # reads no cube.
    server.reset_stats()
    again = project.run()
    assert again.counts["downloaded"] == 0
    assert [(r.method, r.path) for r in server.records] == [("GET", "/stpubdata")]
    # The report's source page shows the cutout with the aperture.
    from skyretriever.report import write_report

    index = write_report(project, folder=tmp_path / "report", top=5)
    pages = {p.name: p.read_text() for p in (index.parent / "sources").glob("*.html")}
    bright = next(text for name, text in pages.items() if "bright" in name)
    assert 'id="cutout-plot"' in bright and "tessffi cutout" in bright
    assert list((index.parent / "sources").glob("*bright*_tessffi_cutout.png"))
    nowhere = next(text for name, text in pages.items() if "nowhere" in name)
    assert 'id="cutout-plot"' not in nowhere


def test_an_answer_that_is_not_a_zip_fails_the_source_and_writes_nothing(
        project_factory, ffi_sky, tmp_path, data_root):
    with ArchiveServer([_NotAZip(ffi_sky)]) as running:
        project = project_factory(
            name="ffi_bad", obs_names=["TESSFFI"],
            catalog_kwargs={"kind": "file", "filename": _catalog(tmp_path, [_row(STARS[0])])},
            TESSFFI={"route": "tesscut", "tesscut_url": running.url + "/tesscut",
                     "max_attempts": 2, "backoff": 0.01})
        summary = project.run()
    assert len(summary.failures) == 1 and "neither a zip" in summary.failures[0][1]
    assert not list((data_root / "raw").rglob("*.h5"))


def test_a_wrong_range_is_refused(ffi_sky, data_root):
    with ArchiveServer([_WrongRange(ffi_sky)]) as running:
        obs = VirtualTESSFFI(route="s3", s3_endpoint_url=running.url, max_attempts=2,
                             backoff=0.01)
        with pytest.raises(Exception, match="asked for bytes"):
            obs.download(_row(STARS[0]))


@pytest.mark.parametrize("size", [0, 500])
def test_a_cutout_size_out_of_bounds_is_a_clear_error(size):
    with pytest.raises(ParameterError, match="cutout_size"):
        VirtualTESSFFI(cutout_size=size)


def test_raw_images_load_lazily_checked_and_become_a_target_pixel_file(server, data_root):
    raw = _s3(server).download(_row(STARS[0]))
    raw.save()
    again = RawImages(source_name=raw.source_name, observatory=raw.observatory, ra=raw.ra,
                      dec=raw.dec, filename=raw.filename, checksum=raw.checksum,
                      file_size=raw.file_size)
    assert again._data is None
    np.testing.assert_array_equal(again.data[2].flux, raw.data[2].flux)
    tpf = again.to_lightkurve(sector=2)
    # lightkurve's default quality mask drops the two frames flagged 32 in the cube.
    assert type(tpf).__name__ == "TessTargetPixelFile" and tpf.flux.shape == (94, 11, 11)
    assert tpf.sector == 2
    column, row = tpf.wcs.all_world2pix([[STARS[0].ra, STARS[0].dec]], 0)[0]
    brightest = np.unravel_index(np.nanargmax(np.nanmedian(raw.data[2].flux, axis=0)), (11, 11))
    assert (round(float(row)), round(float(column))) == tuple(int(v) for v in brightest)
    with pytest.raises(ValueError, match="no cutout of sector 5"):
        again.to_lightkurve(sector=5)
    # A file changed on disk is refused, not read.
    path = storage.full_path(raw.filename)
    content = bytearray(path.read_bytes())
    content[-100] ^= 0xFF
    path.write_bytes(bytes(content))
    damaged = RawImages(source_name=raw.source_name, observatory=raw.observatory, ra=raw.ra,
                        dec=raw.dec, filename=raw.filename, checksum=raw.checksum,
                        file_size=raw.file_size)
    with pytest.raises(storage.ChecksumError):
        _ = damaged.data


def test_plot_draws_a_frame_with_the_aperture(server, data_root, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import skyretriever.plots  # noqa: F401 - registers the figures

    raw = _s3(server).download(_row(STARS[0]))
    fig = raw.plot(sector=2, filename=tmp_path / "cutout.png")
    assert (tmp_path / "cutout.png").stat().st_size > 1000
    ax = fig.axes[0]
    assert "sector 2" in ax.get_title() and "aperture 2 px" in ax.get_title()
    image = ax.images[0].get_array()
    np.testing.assert_allclose(image, np.nanmedian(raw.data[2].flux, axis=0))
    with pytest.raises(ValueError, match="no cutout of sector 7"):
        raw.plot(sector=7)


@pytest.fixture(scope="module")
def transit_sky(tmp_path_factory):
    from skyretriever.testing.stars import Transit

    host = FFIStar("host", 150.0, 10.0, tmag=10.0,
                   transit=Transit(period=1.37, epoch=2458326.1, depth=0.02, duration=0.12))
    return host, FFISky.simple(tmp_path_factory.mktemp("ffi_transit"), [host], sectors=(1, 2),
                               frames=240, shape=(32, 32))


def test_a_transit_in_the_ffis_is_found_in_the_ffi_light_curve(transit_sky, data_root):
    from skyretriever.analysis.analysis import Analysis

    host, sky = transit_sky
    with ArchiveServer([CubeBucketService(sky)]) as running:
        obs = VirtualTESSFFI(route="s3", s3_endpoint_url=running.url, **FAST)
        row = _row(host)
        raw = obs.download(row)
    lightcurves = obs.reduce(raw)
    assert [lc.num_points for lc in lightcurves] == [240, 240]
    result = Analysis(finders=["transit"]).analyze("images", lightcurves, row)
    transits = [d for d in result.detections if d["finder"] == "transit"]
    assert len(transits) == 1
    assert transits[0]["period"] == pytest.approx(host.transit.period, rel=0.005)
    assert transits[0]["depth"] == pytest.approx(host.transit.depth, rel=0.3)


class _BucketMissingSome(CubeBucketService):
    """A bucket that does not have some FFIs (they are only on MAST's HTTPS archive)."""

    def __init__(self, sky, missing):
        super().__init__(sky)
        self.missing = set(missing)

    def handle(self, request):
        if any(request.path.endswith(name) for name in self.missing):
            return Reply(status=404, body=b"<Error><Code>NoSuchKey</Code></Error>",
                         content_type="application/xml")
        return super().handle(request)


def test_bulk_ffis_are_downloaded_verified_recorded_and_resumed(project_factory, ffi_sky,
                                                                data_root, tmp_path, capsys,
                                                                database_url):
    import hashlib

    from skyretriever.cli import main
    from skyretriever.models import FFIFile

    sector = ffi_sky.sectors[0]
    missing = [p.name for p in sector.ffi_paths[:3]]
    with ArchiveServer([_BucketMissingSome(ffi_sky, missing)]) as running:
        settings = {"s3_endpoint_url": running.url, **FAST,
                    "ffi_https_url": running.url + "/missions/tess/ffi"}
        project = project_factory(name="starskope", obs_names=["TESSFFI"], TESSFFI=settings)
        done = project.download_ffis(1, 1, 1)
        assert (done.files, done.downloaded, done.kept, done.failures) == (96, 96, 0, [])
        with SmartSession() as session:
            rows = {r.key.rsplit("/", 1)[-1]: r for r in session.scalars(sa.select(FFIFile))}
        assert len(rows) == 96
        for path in sector.ffi_paths:
            row = rows[path.name]
            assert row.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
            assert storage.full_path(row.filename).read_bytes() == path.read_bytes()
            assert row.route == ("https" if path.name in missing else "s3")
        # Interrupted runs: a file lost, a file damaged, a file whose row never came.
        lost, damaged, unrecorded = (rows[p.name] for p in sector.ffi_paths[10:13])
        storage.full_path(lost.filename).unlink()
        storage.full_path(damaged.filename).write_bytes(b"SIMPLE  = garbage")
        with SmartSession() as session:
            session.execute(sa.delete(FFIFile).where(FFIFile.key == unrecorded.key))
            session.commit()
        running.reset_stats()
        again = project.download_ffis(1, 1, 1)
        assert (again.downloaded, again.kept, again.failures) == (2, 94, [])
        file_gets = [r for r in running.records if r.path.endswith("_ffic.fits")]
        assert sorted(r.path.rsplit("/", 1)[-1] for r in file_gets) == sorted(
            [lost.key.rsplit("/", 1)[-1], damaged.key.rsplit("/", 1)[-1]])
        with SmartSession() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(FFIFile)) == 96
    # The command line: a project without TESSFFI is a one-line error.
    config = tmp_path / "no_ffi.yaml"
    config.write_text(f"project: {{name: noffi, progress: false}}\ndata_root: \"{data_root}\"\n"
                      f"database: {{url: \"{database_url}\"}}\n"
                      "catalog: {default: test, num_sources: 2}\n")
    assert main(["ffi", str(config), "--sector", "1", "--camera", "1", "--ccd", "1"]) == 1
    assert "no TESSFFI observatory" in capsys.readouterr().err


class _OtherPosition(TesscutService):
    """Answers every cutout request with the cutout of a position 10 pixels away."""

    def astrocut(self, request):
        request.query = {**request.query, "ra": [str(float(request.query["ra"][0]) + 0.07)]}
        return super().astrocut(request)


def test_a_cutout_of_another_position_is_refused(ffi_sky, data_root):
    with ArchiveServer([_OtherPosition(ffi_sky)]) as running:
        obs = VirtualTESSFFI(route="tesscut", tesscut_url=running.url + "/tesscut", **FAST)
        with pytest.raises(ValueError, match="does not hold the position asked for"):
            obs.download(_row(STARS[0]))


def test_cube_answers_cut_short_are_asked_again_and_the_cutout_is_whole(ffi_sky, data_root):
    from skyretriever.testing.server import Faults

    reference = None
    with ArchiveServer([CubeBucketService(ffi_sky)]) as running:
        reference = _s3(running).download(_row(STARS[1]))
    faults = Faults(truncate_rate=0.3, seed=3)
    with ArchiveServer([CubeBucketService(ffi_sky)], faults=faults) as running:
        obs = VirtualTESSFFI(route="s3", s3_endpoint_url=running.url, max_attempts=6,
                             backoff=0.01)
        raw = obs.download(_row(STARS[1]))
        cut = [r for r in running.records if r.fault == "truncate"]
    assert len(cut) >= 3, "the faults hit some ranged reads"
    for sector in (1, 2):
        np.testing.assert_array_equal(raw.data[sector].flux, reference.data[sector].flux)


def test_check_finds_and_repairs_damaged_and_unlinked_image_files(project_factory, server,
                                                                  tmp_path, data_root):
    from skyretriever.checker import check_project

    rows = [_row(STARS[0]), _row(STARS[1])]
    project = project_factory(
        name="ffi_check", obs_names=["TESSFFI"],
        catalog_kwargs={"kind": "file", "filename": _catalog(tmp_path, rows)},
        TESSFFI={"route": "s3", "s3_endpoint_url": server.url, **FAST})
    assert project.run().failures == []
    report = check_project(project)
    assert report.clean, str(report)
    with SmartSession() as session:
        raws = {r.source_name: r for r in session.scalars(sa.select(RawImages))}
        bright, faint = raws["bright"], raws["faint"]
        path = storage.full_path(bright.filename)
        path.write_bytes(path.read_bytes()[:-10] + b"0123456789")      # damaged on disk
        session.delete(faint)                      # a file whose row is gone (a crash)
        session.commit()
    report = check_project(project)
    counts = report.counts()
    # As for photometry: the damaged file, the source left without raw data, and the file
    # without its row (which a run adopts), with the light curves made from it.
    assert (counts["checksum mismatch"], counts["inconsistent source"],
            counts["raw file a run will adopt"]) == (1, 1, 1), str(report)
    assert "TESSFFI_images_bright" in str(report)
    check_project(project, repair=True)
    summary = project.run()
    assert summary.failures == [] and summary.counts["downloaded"] == 1
    with SmartSession() as session:
        raws = {r.source_name: r for r in session.scalars(sa.select(RawImages))}
        assert raws["bright"].is_intact() and raws["faint"].is_intact()
        assert raws["faint"].filename == faint.filename
    assert check_project(project).clean


def test_the_aperture_is_part_of_the_config_hash_and_the_route_is_not(project_factory, tmp_path):
    catalog = _catalog(tmp_path, [_row(STARS[0])])

    def cfg_hash(name, **settings):    # one project name: the name is in the hashed config
        project = project_factory(name="hashed", obs_names=["TESSFFI"], TESSFFI=settings,
                                  catalog_kwargs={"kind": "file", "filename": catalog})
        return project.cfg_hash

    base = cfg_hash("a")
    assert cfg_hash("b", aperture_radius=3.0) != base
    assert cfg_hash("c", background_radius=5.0) != base
    assert cfg_hash("d", route="tesscut") == base


def test_the_module_examples_run(data_root):
    import doctest

    import skyretriever.images.cube as cube
    import skyretriever.models.images as images
    import skyretriever.observatories.tessffi as tessffi

    for module in (cube, images, tessffi):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__
