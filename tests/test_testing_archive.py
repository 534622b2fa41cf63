"""The simulated archives speak MAST's and S3's protocols as astroquery, lightkurve and boto3 see them."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from astropy.io import fits

from skyretriever.net import HttpClient, NetworkPolicy
from skyretriever.testing import BUCKET, Faults, SimulatedArchives, SimulatedStar
from skyretriever.testing.fitsfiles import SIMULATED_QUALITY_BITS, expected_flux
from tests.mast_support import TRANSIT, small_sky

PORTAL_URLS = {"MAST_REQUEST_URL": "/api/v0/invoke",
               "COLUMNS_CONFIG_URL": "/portal/Mashup/Mashup.asmx/columnsconfig",
               "MAST_DOWNLOAD_URL": "/api/v0.1/Download/file"}


@pytest.fixture(scope="module")
def sky():
    return small_sky()


@pytest.fixture
def archives(sky):
    with SimulatedArchives(sky) as archives:
        yield archives


@pytest.fixture
def observations(archives):
    """astroquery's Observations pointed at the simulated portal (its URLs are fixed at import)."""
    from astroquery.mast import Observations

    connection = Observations._portal_api_connection
    for name, path in PORTAL_URLS.items():
        setattr(connection, name, archives.mast_url + path)
    yield Observations
    for name in PORTAL_URLS:
        connection.__dict__.pop(name, None)


def invoke(archives, service, params, **extra):
    body = json.dumps({"service": service, "params": params, "format": "json",
                       "pagesize": extra.pop("pagesize", 50000), "page": extra.pop("page", 1)})
    return HttpClient().request_json("POST", archives.mast_url + "/api/v0/invoke",
                                     data={"request": body})


def test_astroquery_finds_and_downloads_light_curves(observations, archives, sky, tmp_path):
    star = sky.star("planet_host")
    found = observations.query_criteria(target_name=str(star.tic_id), obs_collection="TESS")
    assert sorted(found["sequence_number"]) == [1, 2]
    products = observations.get_product_list(found)
    assert sorted(set(products["productSubGroupDescription"])) == ["LC", "TP"]
    light_curves = observations.filter_products(products, productSubGroupDescription="LC")
    manifest = observations.download_products(light_curves, download_dir=str(tmp_path))
    assert list(manifest["Status"]) == ["COMPLETE", "COMPLETE"]
    for path in manifest["Local Path"]:
        uri = next(p.data_uri for p in sky.files_of(star) if p.filename in path)
        with open(path, "rb") as handle:
            assert handle.read() == sky.file_bytes(uri)
    downloads = [r.method for r in archives.mast.records if r.path == "/api/v0.1/Download/file"]
    assert downloads == ["HEAD", "GET", "HEAD", "GET"]


def test_lightkurve_searches_and_reads_every_mission(observations, sky, tmp_path):
    import lightkurve as lk

    cases = [(f"TIC {sky.star('planet_host').tic_id}", "SPOC", 120, "SECTOR", [1, 2]),
             (f"KIC {sky.star('kepler_host').kic_id}", "Kepler", "long", "QUARTER", [1, 2, 3]),
             (f"EPIC {sky.star('k2_star').epic_id}", "K2", "long", "CAMPAIGN", [3, 5])]
    for target, author, exptime, keyword, sequences in cases:
        result = lk.search_lightcurve(target, author=author, exptime=exptime)
        collection = result.download_all(download_dir=str(tmp_path))
        assert sorted(lc.meta[keyword] for lc in collection) == sequences, target
    fast = lk.search_lightcurve(f"TIC {sky.star('fast_star').tic_id}", author="SPOC", exptime=20)
    assert list(fast.exptime.value) == [20.0]


def test_boto3_reads_the_bucket_unsigned_with_path_style(archives, sky, tmp_path):
    import boto3
    import botocore
    from botocore.config import Config

    client = boto3.session.Session().client(
        "s3", endpoint_url=archives.s3_endpoint_url, region_name="us-east-1",
        config=Config(signature_version=botocore.UNSIGNED, s3={"addressing_style": "path"}))
    product = sky.files_of("quiet_star")[0]
    assert product.cloud_key.startswith("tess/public/tid/s0003/0000/0003/0100/0002/tess")
    content = sky.file_bytes(product.data_uri)
    head = client.head_object(Bucket=BUCKET, Key=product.cloud_key)
    assert head["ContentLength"] == len(content) and head["ETag"].startswith('"')
    part = client.get_object(Bucket=BUCKET, Key=product.cloud_key, Range="bytes=0-79")
    assert part["Body"].read() == content[:80] and part["ContentRange"].endswith(f"/{len(content)}")
    client.download_file(BUCKET, product.cloud_key, str(tmp_path / "lc.fits"))
    assert (tmp_path / "lc.fits").read_bytes() == content
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.get_object(Bucket=BUCKET, Key="tess/public/tid/no/such/file.fits")
    assert caught.value.response["Error"]["Code"] == "NoSuchKey"
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix="k2/public/lightcurves/")
    assert sorted(item["Key"].rsplit("/", 1)[-1] for item in listed["Contents"]) == [
        "ktwo206089508-c03_llc.fits", "ktwo206089508-c05_llc.fits"]
    assert [r.path for r in archives.s3.records][:1] == [f"/{BUCKET}/{product.cloud_key}"]


def test_invoke_pages_and_reports_nulls_and_errors(archives, sky):
    kic = sky.star("kepler_host").kic_id
    params = {"columns": "*", "filters": [
        {"paramName": "obs_collection", "values": ["TESS", "Kepler"]},
        {"paramName": "t_exptime", "values": [{"min": 100, "max": 2000}]}]}
    first = invoke(archives, "Mast.Caom.Filtered", params, pagesize=2, page=1)
    total = first["paging"]["rowsFiltered"]
    assert first["status"] == "COMPLETE" and len(first["data"]) == 2
    assert first["paging"]["pagesFiltered"] == -(-total // 2)
    every = [row for page in range(1, first["paging"]["pagesFiltered"] + 1)
             for row in invoke(archives, "Mast.Caom.Filtered", params, pagesize=2, page=page)["data"]]
    assert len(every) == total == 6  # 2 + 2 + 1 TESS 2-min sectors and 1 Kepler observation
    kepler = next(row for row in every if row["target_name"] == f"kplr{kic:09d}")
    assert kepler["sequence_number"] == -999
    types = {f["name"]: f["type"] for f in first["fields"]}
    assert types["t_exptime"] == "float" and types["obsid"] == "string"
    wrong = invoke(archives, "Mast.Caom.Filtered", {"filters": [{"paramName": "nope", "values": []}]})
    assert wrong["status"] == "ERROR" and "nope" in wrong["msg"]
    cone = invoke(archives, "Mast.Catalogs.Tic.Cone", {"ra": 30.0, "dec": -20.0, "radius": 0.003})
    nearest, neighbour = cone["data"]  # the star, and its fainter neighbour without data
    assert nearest["ID"] == "301000001" and nearest["dstArcSec"] < 0.01
    assert 3.0 <= neighbour["dstArcSec"] <= 6.0 and neighbour["Tmag"] == nearest["Tmag"] + 4


def test_executing_answers_come_before_the_result(archives):
    archives.set_faults(Faults(executing_rate=1.0, faults_per_request=2))
    params = {"ra": 60.0, "dec": 10.0, "radius": 0.001}
    statuses = [invoke(archives, "Mast.Catalogs.Tic.Cone", params)["status"] for _ in range(3)]
    assert statuses == ["EXECUTING", "EXECUTING", "COMPLETE"]


def test_astroquery_waits_through_executing(observations, archives, sky):
    archives.set_faults(Faults(executing_rate=1.0, faults_per_request=1))
    found = observations.query_criteria(target_name=str(sky.star("quiet_star").tic_id),
                                        obs_collection="TESS")
    assert sorted(found["sequence_number"]) == [3, 4]
    assert archives.mast.summary()["faults"]["executing"] >= 1


def test_download_answers_head_and_ranges(archives, sky):
    product = sky.files_of("planet_host")[0]
    content = sky.file_bytes(product.data_uri)
    url = f"{archives.mast_url}/api/v0.1/Download/file?uri={product.data_uri}"
    head = urllib.request.urlopen(urllib.request.Request(url, method="HEAD"))
    assert int(head.headers["Content-Length"]) == len(content)
    assert head.headers["Accept-Ranges"] == "bytes"
    ranged = urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=100-"}))
    assert ranged.status == 206 and ranged.read() == content[100:]
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{archives.mast_url}/api/v0.1/Download/file?uri=mast:TESS/x.fits")
    assert caught.value.code == 404


def test_path_lookup_and_resolver_answer_like_mast(archives, sky):
    cloudless = small_sky([SimulatedStar("offline", 1.0, 1.0, tic_id=9, tess_sectors=(7,),
                                         in_cloud=False)])
    product = sky.files_of("planet_host")[0]
    answer = HttpClient().request_json("GET", archives.mast_url + "/api/v0.1/path_lookup/",
                                       params={"uri": [product.data_uri, "mast:TESS/none.fits"]})
    assert answer[product.data_uri] == {"status_code": 200, "path": "/" + product.cloud_key}
    assert answer["mast:TESS/none.fits"] == {"status_code": 404, "path": None}
    with SimulatedArchives(cloudless) as other:
        uri = cloudless.files_of("offline")[0].data_uri
        missing = HttpClient().request_json("GET", other.mast_url + "/api/v0.1/path_lookup/",
                                            params={"uri": [uri]})
        assert missing[uri]["path"] is None
    resolved = HttpClient().request_json("GET", archives.mast_url + "/Santa-war/query",
                                         params={"name": "KIC 8264588", "outputFormat": "json"})
    entry = resolved["resolvedCoordinate"][0]
    assert entry["searchString"] == "kic 8264588" and entry["ra"] == 290.0


def test_files_have_the_mission_layouts(sky, tmp_path):
    from lightkurve.io.detect import detect_filetype

    for name, mission, quality, kind, reference in (
            ("planet_host", "TESS", "QUALITY", "TessLightCurve", 2457000),
            ("kepler_host", "Kepler", "SAP_QUALITY", "KeplerLightCurve", 2454833),
            ("k2_star", "K2", "SAP_QUALITY", "KeplerLightCurve", 2454833)):
        product = sky.files_of(name)[0]
        path = tmp_path / product.filename
        path.write_bytes(sky.file_bytes(product.data_uri))
        with fits.open(path) as hdul:
            assert [hdu.name for hdu in hdul] == ["PRIMARY", "LIGHTCURVE", "APERTURE"]
            assert detect_filetype(hdul) == kind
            table = hdul["LIGHTCURVE"]
            assert table.columns.names[:10] == [
                "TIME", "TIMECORR", "CADENCENO", "SAP_FLUX", "SAP_FLUX_ERR", "SAP_BKG",
                "SAP_BKG_ERR", "PDCSAP_FLUX", "PDCSAP_FLUX_ERR", quality]
            assert table.columns["TIME"].unit == f"BJD - {reference}, days"
            assert table.columns["PDCSAP_FLUX"].unit == "e-/s"
            assert table.columns["TIME"].format == "D" and table.columns[quality].format == "J"
            assert table.header["BJDREFI"] == reference and table.header["TIMESYS"] == "TDB"
            assert hdul["APERTURE"].data.shape == (11, 11)
            primary = hdul[0].header
            assert primary["TELESCOP"] == ("TESS" if mission == "TESS" else "Kepler")
            if mission == "TESS":
                assert primary["OBJECT"] == f"TIC {product.star.tic_id}"
                assert primary["SECTOR"] == product.sequence
            else:
                assert primary["KEPLERID"] in (product.star.kic_id, product.star.epic_id)
                assert primary["QUARTER" if mission == "Kepler" else "CAMPAIGN"] == product.sequence
            data = table.data
            assert np.isnan(data["TIME"]).any()
            bits = {int(b) for b in np.unique(data[quality]) if b}
            assert bits == set(SIMULATED_QUALITY_BITS["TESS" if mission == "TESS" else "Kepler"])


def test_files_carry_the_star_and_its_transit(sky):
    import io

    for name, mission in (("planet_host", "TESS"), ("kepler_host", "Kepler")):
        star = sky.star(name)
        for product in sky.files_of(star):
            with fits.open(io.BytesIO(sky.file_bytes(product.data_uri))) as hdul:
                data = hdul["LIGHTCURVE"].data
                reference = hdul["LIGHTCURVE"].header["BJDREFI"]
            good = np.isfinite(data["TIME"])
            bjd, flux = data["TIME"][good] + reference, data["PDCSAP_FLUX"][good]
            dipped = TRANSIT.in_transit(bjd)
            assert dipped.sum() >= 3
            out = np.median(flux[~dipped])
            magnitude = star.tmag if mission == "TESS" else star.kepler_magnitude
            assert out == pytest.approx(expected_flux(magnitude, mission), rel=2e-3)
            assert 1 - np.median(flux[dipped]) / out == pytest.approx(TRANSIT.depth, abs=2e-3)


def test_faults_are_deterministic_and_checked():
    faults = Faults(unavailable_rate=0.5, seed=3)
    draws = [faults.hits("unavailable", "GET /x", n) for n in range(200)]
    assert draws == [Faults(unavailable_rate=0.5, seed=3).hits("unavailable", "GET /x", n)
                     for n in range(200)]
    assert 60 < sum(draws) < 140
    assert not Faults(unavailable_rate=1.0, faults_per_request=2).hits("unavailable", "k", 2)
    with pytest.raises(ValueError, match="latncy"):
        Faults.from_dict({"latncy": 1})
    with pytest.raises(ValueError, match="between 0 and 1"):
        Faults(html_rate=2)


def test_admin_endpoints_report_and_change_faults(archives):
    client = HttpClient(NetworkPolicy(max_attempts=1))
    client.request_json("POST", archives.mast_url + "/_sim/faults",
                        data=json.dumps({"unavailable_rate": 1.0, "retry_after": 0}).encode())
    assert archives.mast.faults.unavailable_rate == 1.0
    with pytest.raises(Exception, match="503"):
        client.request("GET", archives.mast_url + "/api/v0.1/path_lookup/?uri=x")
    stats = client.request_json("GET", archives.mast_url + "/_sim/stats")
    assert stats["faults"] == {"unavailable": 1} and stats["by_status"] == {"503": 1}
    client.request_json("POST", archives.mast_url + "/_sim/stats/reset", data=b"")
    assert client.request_json("GET", archives.mast_url + "/_sim/stats")["requests"] == 0
    bad = HttpClient(NetworkPolicy(max_attempts=1))
    with pytest.raises(Exception, match="400"):
        bad.request("POST", archives.mast_url + "/_sim/faults", data=b'{"nope": 1}')


def test_serve_command_prints_its_urls_and_serves(tmp_path):
    catalog = tmp_path / "sim.csv"
    process = subprocess.Popen(
        [sys.executable, "-m", "skyretriever.testing", "serve", "--stars", "3", "--catalog",
         str(catalog), "--latency", "0.01"], stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("{"):
                break
        urls = json.loads(lines[-1])
        assert any("MAST portal" in line for line in lines)
        stats = HttpClient().request_json("GET", urls["mast_url"] + "/_sim/stats")
        assert stats["requests"] == 0
        s3_stats = HttpClient().request_json("GET", urls["s3_endpoint_url"] + "/_sim/stats")
        assert s3_stats["requests"] == 0
        assert len(catalog.read_text().splitlines()) == 4
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
