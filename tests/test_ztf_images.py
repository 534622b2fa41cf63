"""ZTF science-image cutouts (``image_cutouts: true``) from the simulated IRSA Image Back End.

The simulated IBE (``skyretriever.testing.ibe``) serves one science image per
epoch of the light-curve service's objects, so the magnitudes measured on the
cutouts can be checked against the light curves IRSA sends for the same star.
"""

from __future__ import annotations

import hashlib
import io
import urllib.parse
import urllib.request
import warnings

import numpy as np
import pytest
import sqlalchemy as sa
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from skyretriever.database import Session
from skyretriever.images.ibe import SCIENCE_PATH, cutout_params, science_image_path
from skyretriever.models import Lightcurve, RawImages, Source
from skyretriever.observatories.ztf import VirtualZTF, ZtfParameters
from skyretriever.parameters import ParameterError
from skyretriever.testing import Faults, SimulatedArchives, SimulatedSky, SimulatedStar
from skyretriever.testing.ibe import IbeService
from skyretriever.testing.irsa import ztf_objects
from skyretriever.testing.server import ArchiveServer, Reply
from ztf_support import QUICK_NET, gaia_catalog, ztf_sky, ztf_stars

#: One season of ZTF (the simulated survey's first), so a star has 48-72 images.
FIRST_SEASON = [58200.0, 58420.0]


@pytest.fixture(scope="module")
def sky():
    stars = {star.name: star for star in ztf_stars()}
    return ztf_sky([stars["flare_wd"], stars["south_wd"], stars["by_oid"]])


@pytest.fixture
def archives(sky):
    with SimulatedArchives(sky) as archives:
        archives.add_ibe()
        yield archives


def _row(sky, name: str) -> dict:
    star = sky.star(name)
    ra, dec = star.position_at(2016.0)
    return {"name": name, "ra": float(ra), "dec": float(dec), "mag": star.gaia_magnitude,
            "pmra": star.pmra, "pmdec": star.pmdec}


def _obs(archives, **kwargs) -> VirtualZTF:
    return VirtualZTF(**archives.ztf_image_kwargs(time_range=FIRST_SEASON,
                                                  **{**QUICK_NET, **kwargs}))


def _season_mags(sky, name: str) -> dict[str, np.ndarray]:
    """The light-curve service's magnitudes of a star's own objects in the first season."""
    found = {}
    for obj in ztf_objects(sky.star(name), sky.seed)[:3]:
        keep = (obj.table["mjd"] >= FIRST_SEASON[0]) & (obj.table["mjd"] <= FIRST_SEASON[1])
        found.setdefault(obj.filtercode, (obj.table["mjd"][keep], obj.table["mag"][keep]))
    return found


def test_a_project_stores_ztf_cutouts_as_images_and_their_light_curves(
        project_factory, archives, sky, tmp_path):
    catalog = gaia_catalog(sky, tmp_path)
    project = project_factory(obs_names=["ZTF"], catalog_kwargs={"filename": catalog},
                              ZTF=archives.ztf_image_kwargs(time_range=FIRST_SEASON,
                                                            **QUICK_NET))
    summary = project.run()
    assert summary.failures == []
    assert (summary.counts["done"], summary.counts["empty"]) == (3, 1)
    service = archives.ibe.services[0]
    searches = [r for r in archives.ibe.records if "/search/" in r.path]
    assert len(searches) == 3 and all("ct=csv" in r.query for r in searches)
    assert all("obsjd+BETWEEN" in r.query or "obsjd%20BETWEEN" in r.query for r in searches)

    with Session() as session:
        raws = {r.source_name: r for r in session.scalars(sa.select(RawImages))}
        # South of Dec -30: no image holds it; recorded as empty, no file.
        assert raws["south_wd"].is_empty and raws["south_wd"].filename is None
        flare = raws["flare_wd"]
        expected = service.search(*(float(v) for v in flare.altdata["query"]["POS"].split(",")),
                                  where=flare.altdata["query"]["WHERE"])
        assert flare.is_intact() and flare.num_points == len(expected) > 40
        assert flare.observatory == "ztf" and flare.altdata["images_found"] == len(expected)
        cutouts = flare.data
        assert [c.extra["obsjd"] for _, c in sorted(cutouts.items())] == \
            [row["obsjd"] for row in expected]
        for cutout, row in zip((c for _, c in sorted(cutouts.items())), expected):
            assert (cutout.sector, cutout.camera, cutout.ccd) == (row["field"], row["ccdid"],
                                                                 row["qid"])
            assert cutout.shape == (30, 30)  # 30 arcsec at 1.012 arcsec a pixel
            header = fits.Header.fromstring(cutout.primary_header)
            assert header["MAGZP"] == row["magzp"] and header["OBSJD"] == row["obsjd"]
            # The star (600 and 800 mas/yr) is where the WCS says, at that epoch.
            x, y = cutout.extra["pixel"]
            brightest = np.unravel_index(np.argmax(cutout.flux[0]), cutout.shape)
            assert abs(brightest[0] - y) <= 1 and abs(brightest[1] - x) <= 1
        source = session.scalar(sa.select(Source).where(Source.name == "flare_wd"))
        curves = session.scalars(sa.select(Lightcurve).where(Lightcurve.source_id == source.id)
                                 ).all()
        truth = _season_mags(sky, "flare_wd")
        assert sorted(lc.filter for lc in curves) == sorted(truth)
        for lc in curves:
            times, mags = truth[lc.filter]
            data = lc.data.sort_values("mjd")
            assert len(data) == len(times)
            np.testing.assert_allclose(data["mjd"], np.sort(times), atol=1e-5)
            measured = data["mag"].to_numpy()
            # Forced photometry on the cutouts gives the light-curve service's magnitudes.
            assert np.median(np.abs(measured - mags[np.argsort(times)])) < 0.02
    # Everything is done: the second run asks IBE nothing (the empty star included).
    archives.reset_stats()
    again = project.run()
    assert again.counts["downloaded"] == 0 and archives.ibe.count() == 0
    # The report's source page shows the first cutout with its aperture.
    from skyretriever.report import write_report

    index = write_report(project, folder=tmp_path / "report", top=3)
    page = (index.parent / "sources" / "flare_wd.html").read_text()
    assert 'id="cutout-plot"' in page and "ztf cutout (its first science image)" in page


def test_astroquery_ibe_works_against_the_simulator(archives, sky):
    from astroquery.ipac.irsa.ibe import IbeClass

    client = IbeClass()
    client.URL = archives.ibe.url + "/ibe/"
    row = _row(sky, "by_oid")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = client.query_region(coordinate=SkyCoord(row["ra"], row["dec"], unit="deg"),
                                    mission="ztf", dataset="products", table="sci",
                                    where="filtercode='zr'")
    expected = archives.ibe.services[0].search(row["ra"], row["dec"], "filtercode='zr'")
    assert len(table) == len(expected) == 144
    assert set(table["filtercode"]) == {"zr"}
    np.testing.assert_allclose(table["obsjd"], [r["obsjd"] for r in expected])
    # The cutout of the first image, by the URL IBE's documentation gives.
    first = {name: table[name][0] for name in table.colnames}
    url = (f"{archives.ibe.url}/ibe/data/ztf/products/sci/{science_image_path(first)}?"
           + urllib.parse.urlencode(cutout_params(row["ra"], row["dec"], 20.0)))
    with urllib.request.urlopen(url) as answer:
        hdu = fits.open(io.BytesIO(answer.read()))[0]
    assert hdu.data.shape == (20, 20) and hdu.header["FILTER"] == "ZTF_r"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, y = WCS(hdu.header).all_world2pix([[row["ra"], row["dec"]]], 0)[0]
    assert 8 < x < 12 and 8 < y < 12


def test_faults_are_survived_and_give_the_same_cutouts(archives, sky, data_root):
    row = _row(sky, "by_oid")
    # Faulty first: the server draws faults for requests it has not seen yet.
    archives.set_faults(Faults(truncate_rate=0.3, html_rate=0.2, unavailable_rate=0.2,
                               retry_after=0, seed=3, faults_per_request=1))
    faulty = _obs(archives, bands=["g"], max_attempts=4).download(row)
    assert any(r.fault for r in archives.ibe.records), "the faults were met"
    archives.set_faults(None)
    clean = _obs(archives, bands=["g"]).download(row)
    assert sorted(faulty.data) == sorted(clean.data) and len(clean.data) == 24
    for key, cutout in clean.data.items():
        np.testing.assert_array_equal(faulty.data[key].flux, cutout.flux)


class _Elsewhere(IbeService):
    """Sends the cutout of a position 40 arcsec away from the one asked for."""

    def handle_cutout(self, request):
        ra, dec = (float(v) for v in request.arg("center").split(","))
        request.query = {**request.query, "center": [f"{ra},{dec + 40 / 3600}"]}
        return super().handle_cutout(request)


class _NotATable(IbeService):
    def handle_search(self, request):
        return Reply.text("status,message\nerror,try later\n", content_type="text/csv")


def test_wrong_answers_fail_the_source_and_write_nothing(project_factory, sky, tmp_path,
                                                        data_root):
    catalog = gaia_catalog(sky, tmp_path)
    for service, reason in ((_Elsewhere(sky), "does not hold the position asked for"),
                            (_NotATable(sky), "not IBE's image table")):
        with ArchiveServer([service]) as running:
            project = project_factory(
                name=f"ztf_bad_{type(service).__name__}", obs_names=["ZTF"],
                catalog_kwargs={"filename": catalog},
                ZTF={"image_cutouts": True, "ibe_url": running.url + "/ibe",
                     "time_range": FIRST_SEASON, "bands": ["r"], **QUICK_NET})
            summary = project.run()
        failed = dict(summary.failures)
        assert set(failed) == {"flare_wd", "by_oid"} if reason.startswith("does") else \
            {"flare_wd", "by_oid", "south_wd"}
        assert all(reason in text for text in failed.values())
        # No raw file and no temporary file is left (the empty star has no file either).
        assert not [p for p in data_root.rglob("*") if p.is_file()
                    and (p.suffix == ".h5" or ".tmp" in p.parts and p.suffix != ".lock")]


@pytest.mark.parametrize("settings, message", [
    ({"cutout_size": 0}, "cutout_size"),
    ({"cutout_size": 5000}, "cutout_size"),
    ({"cutout_size": 10, "background_radius": 8}, "background_radius"),
    ({"ibe_url": "ftp://irsa.example/ibe"}, "ibe_url"),
])
def test_bad_image_parameters_are_clear_errors(settings, message):
    with pytest.raises(ParameterError, match=message):
        VirtualZTF(image_cutouts=True, **settings)


def test_light_curve_projects_keep_their_hashes():
    # The image parameters count only when image_cutouts is on.
    plain = VirtualZTF()
    assert set(plain.download_settings()) == {"collection", "bands", "time_range",
                                              "bad_catflags_mask", "match_radius",
                                              "position_epoch"}
    assert not {"image_cutouts", "cutout_size", "aperture_radius"} & set(
        ZtfParameters().to_dict(critical_only=True))
    assert VirtualZTF(cutout_size=60).download_hash == plain.download_hash
    images = VirtualZTF(image_cutouts=True)
    assert images.data_type == "images" and plain.data_type == "photometry"
    assert images.download_hash != plain.download_hash
    assert VirtualZTF(image_cutouts=True, cutout_size=60).download_hash != images.download_hash
    assert ZtfParameters(image_cutouts=True, aperture_radius=3.0).to_dict(
        critical_only=True)["aperture_radius"] == 3.0


class _EveryImage(IbeService):
    """A search that lists every image of the sky, wherever the position is."""

    def search(self, ra, dec, where=None):
        elsewhere = super().search(*_position(self.sky, "flare_wd"), where)
        return super().search(ra, dec, where) + elsewhere


def _position(sky, name):
    row = _row(sky, name)
    return row["ra"], row["dec"]


def test_an_image_the_cutout_misses_is_left_out_and_named(sky, data_root):
    # IBE answers HTTP 400 to a cutout that misses its image: that image is left out,
    # named in the provenance; the others are kept.
    with ArchiveServer([_EveryImage(sky)]) as running:
        obs = VirtualZTF(image_cutouts=True, ibe_url=running.url + "/ibe", bands=["g"],
                         time_range=FIRST_SEASON, **QUICK_NET)
        raw = obs.download(_row(sky, "by_oid"))
        statuses = sorted({r.status for r in running.records if "/data/" in r.path})
    assert statuses == [200, 400]
    assert raw.num_points == 24 and raw.altdata["images_found"] == 48
    missed = raw.altdata["images_missed"]
    assert len(missed) == 24 and all(text.startswith("HTTP 400") for text in missed.values())
    assert {c.sector for c in raw.data.values()} == {
        ztf_objects(sky.star("by_oid"), sky.seed)[0].table["field"][0]}


def test_the_module_examples_run():
    import doctest

    import skyretriever.images.ibe as ibe
    import skyretriever.testing.ibe as simulated

    for module in (ibe, simulated):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def _three_band_star() -> SimulatedStar:
    """A star the simulated survey sees in g, r and i: 6 seasons x 24 epochs x 3 = 432 images."""
    name = next(f"busy{i}" for i in range(100)
                if int(hashlib.sha256(f"busy{i}".encode()).hexdigest(), 16) % 3 == 0)
    return SimulatedStar(name, 30.0, 25.0, gaia_id=7100, gmag=16.0)


def test_hundreds_of_images_are_fetched_within_the_host_limit_and_stored(data_root):
    star = _three_band_star()
    busy = SimulatedSky([star], days_per_sector=1.0)
    row = {"name": star.name, "ra": star.ra, "dec": star.dec, "mag": 16.0}
    with ArchiveServer([IbeService(busy)]) as running:
        obs = VirtualZTF(image_cutouts=True, ibe_url=running.url + "/ibe",
                         bands=["g", "r", "i"], max_connections_per_host=4, **QUICK_NET)
        raw = obs.download(row)
        assert running.max_in_flight == 4             # in parallel, never past the limit
        listed = running.count("/ibe/search")
        served = running.count("/ibe/data/")
        # One image, asked again outside the client: the same pixels as stored.
        key = 300
        path = raw.data[key].extra["image"]
        query = urllib.parse.urlencode(cutout_params(row["ra"], row["dec"], obs.pars.cutout_size))
        with urllib.request.urlopen(f"{running.url}/ibe/{SCIENCE_PATH}/{path}?{query}") as answer:
            pixels = fits.getdata(io.BytesIO(answer.read()))
    assert (listed, served) == (1, 432)
    assert len(raw.data) == raw.num_points == raw.altdata["images_found"] == 432
    assert "images_capped" not in raw.altdata
    times = [cutout.time[0] for _, cutout in sorted(raw.data.items())]
    assert times == sorted(times)                     # the keys number the images in time order
    np.testing.assert_array_equal(raw.data[key].flux[0], pixels)
    raw.save()
    assert len(raw.sector_rows) == 432 and raw.sector_rows[key].group == "s0300"
    again = RawImages(filename=raw.filename, checksum=raw.checksum, file_size=raw.file_size)
    np.testing.assert_array_equal(again.load()[key].flux[0], pixels)


def test_max_images_keeps_that_many_evenly_spaced_and_says_so(data_root):
    star = _three_band_star()
    busy = SimulatedSky([star], days_per_sector=1.0)
    row = {"name": star.name, "ra": star.ra, "dec": star.dec, "mag": 16.0}
    with ArchiveServer([IbeService(busy)]) as running:
        obs = VirtualZTF(image_cutouts=True, ibe_url=running.url + "/ibe",
                         bands=["g", "r", "i"], max_images=40, **QUICK_NET)
        raw = obs.download(row)
        served = running.count("/ibe/data/")
        rows = IbeService(busy).search(star.ra, star.dec)
    assert served == len(raw.data) == 40
    assert raw.altdata["images_found"] == 432
    assert raw.altdata["images_capped"]["found"] == 432
    assert raw.altdata["images_capped"]["kept"] == 40
    kept = [cutout.extra["obsjd"] for _, cutout in sorted(raw.data.items())]
    assert kept[0] == rows[0]["obsjd"] and kept[-1] == rows[-1]["obsjd"]
    assert VirtualZTF(image_cutouts=True, max_images=40).download_hash != \
        VirtualZTF(image_cutouts=True).download_hash
