"""Remote catalog presets (gaia, exoplanet_hosts, wd) through the simulated services:
queries, paging, the cache (the second load is offline), bad rows, injection attempts,
faults, and a project run that starts from a remote catalog."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from skyretriever.catalogs import Catalog, CatalogError
from skyretriever.database import Session
from skyretriever.models import Source
from skyretriever.net import NetworkError
from skyretriever.parameters import ParameterError
from skyretriever.testing import Faults, SimulatedArchives, SimulatedStar
from skyretriever.testing.tap import GAIA_PATH
from ztf_support import QUICK_NET, ztf_sky, ztf_stars

GAIA_CONE = [30.0, 25.0, 1.0]


def remote_stars() -> list[SimulatedStar]:
    """The ZTF stars plus a cluster of faint Gaia stars near the first one, for paging."""
    cluster = [SimulatedStar(f"faint_{i}", 30.0 + 0.01 * i, 25.0, gaia_id=9000 + i,
                             gmag=19.0 + 0.1 * i, parallax=0.2 + 0.1 * i) for i in range(7)]
    return [*ztf_stars(), *cluster]


@pytest.fixture(scope="module")
def sky():
    return ztf_sky(remote_stars())


@pytest.fixture
def archives(sky):
    with SimulatedArchives(sky) as archives:
        archives.add_catalogs(max_sync_rows=3)
        yield archives


@pytest.fixture
def services(archives):
    gaia, exoplanets, files = archives.catalogs.services
    return {"gaia": gaia, "exoplanets": exoplanets, "files": files}


def catalog(archives, tmp_path, **kwargs) -> Catalog:
    # Pages no larger than the service's cap on synchronous answers (3 rows here).
    options = {"cache_dir": str(tmp_path / "cache"), "page_size": 3, **QUICK_NET, **kwargs}
    return Catalog(**archives.catalog_kwargs(**options))


def test_gaia_cone_with_cuts_is_paged_and_named(archives, services, tmp_path):
    cat = catalog(archives, tmp_path, default="gaia", cone=GAIA_CONE, mag_limit=19.45,
                  page_size=2)
    rows = cat.get_rows()
    # flare_wd (G 16) and faint_0..4 (G 19.0-19.4); the service caps answers at 3 rows.
    assert [row["gaia_id"] for row in rows] == [7001, 9000, 9001, 9002, 9003, 9004]
    assert rows[0]["name"] == "Gaia DR3 7001" and rows[0]["mag"] == 16.0
    assert rows[0]["mag_filter"] == "Gaia_G" and rows[0]["pmra"] == 600.0
    assert rows[1]["extra"]["parallax"] == pytest.approx(0.2)
    queries = services["gaia"].queries
    assert len(queries) == 4  # pages of 2: 2, 2, 2, then 0
    assert all("TOP 2 " in q and "phot_g_mean_mag <= 19.45" in q for q in queries)
    assert "source_id > 9002" in queries[2] and "source_id >" not in queries[0]
    assert cat.source_file.endswith(".csv") and cat.source_file.startswith(str(tmp_path))


def test_gaia_box_parallax_cut_and_max_rows(archives, services, tmp_path):
    cat = catalog(archives, tmp_path, default="gaia", box=[29.5, 30.5, 24.5, 25.5],
                  min_parallax=0.45, max_rows=3, page_size=2)
    assert [row["gaia_id"] for row in cat.get_rows()] == [7001, 9003, 9004]
    assert [q.split("TOP ")[1].split()[0] for q in services["gaia"].queries] == ["2", "1"]
    # A box through RA 0 uses OR on RA; nothing is there.
    wrapped = catalog(archives, tmp_path, default="gaia", box=[359.0, 1.0, -1.0, 1.0])
    assert len(wrapped) == 0
    assert "(ra >= 359.0 OR ra <= 1.0)" in services["gaia"].queries[-1]


def test_gaia_needs_a_region(archives, tmp_path):
    with pytest.raises(CatalogError, match="needs a region"):
        catalog(archives, tmp_path, default="gaia").load()
    assert archives.catalogs.count() == 0


def test_exoplanet_hosts_one_row_per_host_with_its_planets(archives, services, tmp_path):
    planets = services["exoplanets"].tables["pscomppars"]
    second = dict(planets[0], pl_name="by_oid c", pl_orbper=7.25, pl_tranmid=None,
                  pl_trandep=None, tran_flag=0)
    planets.append(second)
    cat = catalog(archives, tmp_path, default="exoplanet_hosts", mag_limit=15)
    rows = cat.get_rows()
    assert [row["name"] for row in rows] == ["by_oid"]
    host = rows[0]
    assert (host["tic_id"], host["gaia_id"], host["mag"]) == (4005, 7005, 10.0)
    assert host["mag_filter"] == "TESS" and host["extra"]["num_planets"] == 2
    b, c = host["extra"]["planets"]
    assert (b["name"], b["period"], b["epoch"], b["transiting"]) == ("by_oid b", 1.5,
                                                                     2458400.0, True)
    assert b["depth"] == pytest.approx(1.0) and b["duration"] == pytest.approx(2.4)
    assert (c["name"], c["period"], c["epoch"], c["transiting"]) == ("by_oid c", 7.25,
                                                                     None, False)
    assert "sy_tmag <= 15.0" in services["exoplanets"].queries[0]
    assert archives.catalogs.count(path="/TAP/sync", method="GET") == 1


def test_bad_rows_of_a_remote_catalog_are_reported(archives, services, tmp_path):
    planets = services["exoplanets"].tables["pscomppars"]
    planets.append(dict(planets[0], hostname="lost host", pl_name="lost host b", ra=None))
    with pytest.raises(CatalogError, match=r"(?s)1 unusable row.*row 1: RA is missing"):
        catalog(archives, tmp_path, default="exoplanet_hosts").load()
    kept = catalog(archives, tmp_path, default="exoplanet_hosts", bad_rows="skip")
    assert [row["name"] for row in kept.get_rows()] == ["by_oid"]
    assert [str(bad) for bad in kept.bad_rows] == ["row 1: RA is missing or not a number"]


def test_white_dwarfs_downloaded_once_with_probability_and_magnitude_cuts(archives, tmp_path):
    cat = catalog(archives, tmp_path, default="wd", mag_limit=16.2)
    rows = cat.get_rows()
    # wrong_mag has Pwd 0.3 (< 0.75); south_wd (G 16.5) is fainter than 16.2.
    assert [row["gaia_id"] for row in rows] == [7001, 7003]
    assert rows[0]["name"].startswith("WDJ0200") and rows[0]["mag_filter"] == "Gaia_G"
    assert rows[0]["extra"]["Pwd"] == pytest.approx(0.95)
    assert cat.source_file.endswith(".fits.gz")
    everything = catalog(archives, tmp_path, default="wd", min_wd_probability=0.0)
    assert len(everything) == 4
    # Other cuts reuse the one download.
    assert archives.catalogs.count(path="/catalogues/") == 1
    csv = catalog(archives, tmp_path, default="wd", wd_catalog_url=archives.catalogs.url
                  + "/catalogues/gaiaedr3_wd_main.csv", cone=[50.0, 5.0, 0.1])
    assert [row["name"] for row in csv.get_rows()] == [rows[1]["name"]]


@pytest.mark.parametrize("preset,options", [("gaia", {"cone": GAIA_CONE}),
                                            ("exoplanet_hosts", {}), ("wd", {})])
def test_the_second_load_is_offline_and_the_hash_comes_from_the_cached_file(
        archives, tmp_path, preset, options):
    first = catalog(archives, tmp_path, default=preset, **options)
    rows = first.get_rows()
    digest = first.catalog_hash
    assert archives.catalogs.count() >= 1 and len(rows) > 0
    urls = archives.catalog_kwargs()
    archives.catalogs.stop()
    offline = {"cache_dir": str(tmp_path / "cache"), "page_size": 3, **QUICK_NET, **urls}
    again = Catalog(default=preset, **offline, **options)
    assert again.catalog_hash == digest  # worked out from the cache: no network
    assert again.get_rows() == rows
    with pytest.raises(NetworkError):
        Catalog(default=preset, refresh=True, **offline, **options).load()


def test_a_changed_query_is_a_new_cache_file_and_a_new_hash(archives, tmp_path):
    bright = catalog(archives, tmp_path, default="gaia", cone=GAIA_CONE, mag_limit=17)
    faint = catalog(archives, tmp_path, default="gaia", cone=GAIA_CONE, mag_limit=20)
    assert bright.catalog_hash != faint.catalog_hash
    assert bright.source_file != faint.source_file
    assert len(bright) == 1 and len(faint) == 8


@pytest.mark.parametrize("bad", [
    {"gaia_table": "gaiadr3.gaia_source WHERE 1=1 --"},
    {"gaia_table": "gaiadr3.gaia_source; DROP TABLE x"},
])
def test_an_injection_through_the_table_name_never_reaches_the_service(archives, tmp_path, bad):
    with pytest.raises(CatalogError, match="catalog.gaia_table: not a valid ADQL"):
        catalog(archives, tmp_path, default="gaia", cone=GAIA_CONE, **bad).load()
    assert archives.catalogs.count() == 0


@pytest.mark.parametrize("bad,message", [
    ({"cone": ["30) OR 1=1 --", 25.0, 1.0]}, "valid number"),
    ({"mag_limit": "17 OR 1=1"}, "valid number"),
    ({"cone": [30.0, 25.0, float("inf")]}, "finite"),
    ({"box": [10.0, 20.0, 30.0, 20.0]}, "dec_min < dec_max"),
    ({"default": "gaia' OR '1'='1"}, "unknown preset"),
])
def test_an_injection_through_a_parameter_or_catalog_name_is_rejected(archives, tmp_path, bad,
                                                                      message):
    with pytest.raises(ParameterError, match=message):
        catalog(archives, tmp_path, **{"default": "gaia", **bad})
    assert archives.catalogs.count() == 0


def test_the_service_s_refusal_is_reported(archives, tmp_path):
    with pytest.raises(CatalogError, match="refused the query.*gaiadr2.gaia_source.*not exist"):
        catalog(archives, tmp_path, default="gaia", cone=GAIA_CONE,
                gaia_table="gaiadr2.gaia_source").load()
    assert not any((tmp_path / "cache").glob("*")), "no cache file for a refused query"


@pytest.mark.parametrize("knob", ["unavailable", "throttle", "reset", "truncate", "html"])
def test_catalog_faults_retried_or_reported_then_loaded(archives, tmp_path, knob):
    faults = Faults(**{f"{knob}_rate": 1.0}, retry_after=0, faults_per_request=1)
    archives.set_faults(faults, servers=["catalogs"])
    assert len(catalog(archives, tmp_path, default="exoplanet_hosts")) == 1
    archives.set_faults(Faults(**{f"{knob}_rate": 1.0}, retry_after=0), servers=["catalogs"])
    with pytest.raises(NetworkError):
        catalog(archives, tmp_path, default="wd").load()
    assert not list((tmp_path / "cache").glob("wd_*")), "a failed download is never cached"
    archives.set_faults(None)
    assert len(catalog(archives, tmp_path, default="wd")) == 3


def test_a_project_runs_from_a_remote_catalog(project_factory, archives, tmp_path):
    archives.add_irsa()
    proj = project_factory(
        obs_names=["ZTF"],
        catalog_kwargs=archives.catalog_kwargs(default="wd", cache_dir=str(tmp_path / "c"),
                                               **QUICK_NET),
        ZTF=archives.ztf_kwargs(**QUICK_NET))
    summary = proj.run()
    assert summary.failures == [] and summary.counts["done"] == 3
    with Session() as session:
        sources = {s.name: s for s in session.scalars(sa.select(Source))}
    assert len(sources) == 3 and all(s.gaia_id for s in sources.values())
    config = (proj.output_folder / "config.yaml").read_text()
    assert f"catalog_hash: {proj.catalog.catalog_hash}" in config
    assert "wd_catalog_url" not in config and "default: wd" in config


def test_gaia_url_is_not_in_the_hash_but_the_cone_is(archives, tmp_path):
    from skyretriever import Project

    def config_of(**kwargs):
        proj = Project(name="h", cfg_file=False, obs_names=["demo"], data_root=str(tmp_path),
                       catalog_kwargs=archives.catalog_kwargs(
                           default="gaia", cache_dir=str(tmp_path / "c"), **kwargs))
        return proj.critical_config()["catalog"]

    base = config_of(cone=GAIA_CONE)
    assert base == config_of(cone=GAIA_CONE, page_size=1, timeout=5.0)
    assert base != config_of(cone=[30.0, 25.0, 0.5])
    assert GAIA_PATH not in str(base)
