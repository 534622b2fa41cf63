"""Nothing let in, nothing let out: the hosts we talk to, the queries we send, the secrets we keep.

- Downloads come only from the configured archive hosts: a MAST product whose
  data URI names another host, a cloud path that is not a key of the bucket, a
  redirect of MAST, IRSA or a TAP service to another host: each is refused
  before anything is sent there (the other host, a second loopback address,
  127.0.0.2, counts its requests: none).
- No redirect to another host carries credentials (``Authorization``,
  ``Cookie``), while a redirect within a host keeps them.
- No query is built from user text: whatever text goes into the catalog's
  parameters or rows, the ADQL that reaches the (simulated) TAP service holds
  only numbers and checked identifiers, IRSA's parameters only numbers, and
  hostile names reach SQL only as bound values (stored verbatim).
- Secrets (database passwords, IRSA credentials, tokens) never appear in
  errors, logs, ``config.yaml``, the config hash or the status output.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyretriever import Project, database
from skyretriever.catalogs import Catalog, CatalogError
from skyretriever.cli import main
from skyretriever.database import Session
from skyretriever.models import (
    Detection,
    HistogramBatch,
    Lightcurve,
    Properties,
    RawPhotometry,
    Source,
)
from skyretriever.net import (
    ForbiddenHost,
    HttpClient,
    HttpError,
    NetworkError,
    NetworkPolicy,
    RetriesExhausted,
)
from skyretriever.observatories import VirtualTESS
from skyretriever.observatories.mast_client import check_data_uri
from skyretriever.observatories.ztf import PASSWORD_VARIABLE, USER_VARIABLE, VirtualZTF
from skyretriever.parameters import ParameterError
from skyretriever.testing import ArchiveServer, Reply, Route, Service, SimulatedArchives
from skyretriever.testing.tap import GAIA_PATH
from tests.mast_support import QUICK, catalog_rows, small_sky, tess_stars
from ztf_support import QUICK_NET, ztf_sky

FAST = NetworkPolicy(max_attempts=3, backoff=0.0, timeout=5.0, connect_timeout=2.0)
SECRET = "Sup3r-S3cret-T0ken"
#: A second loopback address: another host, as far as URLs and clients are concerned.
OTHER_HOST = "127.0.0.2"


class Landing(Service):
    """Where a redirect would lead: answers everything, and counts."""

    name = "elsewhere"

    def __init__(self) -> None:
        self.routes = [Route(("GET", "POST"), "/", self.answer, prefix=True)]

    def answer(self, request):
        return Reply.file(b"SIMPLE  =                    T" + b" " * 2850, headers={})


class Redirecting(Service):
    """Redirects every request under ``prefix`` to ``target`` + the same path and query."""

    name = "redirecting"

    def __init__(self, prefix: str, target: str, status: int = 302) -> None:
        self.target = target
        self.status = status
        self.routes = [Route(("GET", "POST"), prefix, self.answer, prefix=True)]

    def answer(self, request):
        query = "&".join(f"{k}={v}" for k, values in request.query.items() for v in values)
        location = f"{self.target}{request.path}" + (f"?{query}" if query else "")
        return Reply(status=self.status, headers={"Location": location})


@pytest.fixture
def elsewhere():
    with ArchiveServer([Landing()], host=OTHER_HOST, name="elsewhere") as server:
        yield server


@pytest.fixture
def serve():
    servers = []

    def start(*services: Service, host: str = "127.0.0.1") -> ArchiveServer:
        server = ArchiveServer(services, host=host).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# -- credentials and redirects ---------------------------------------------------------------
def test_the_other_loopback_host_is_another_host(elsewhere, serve):
    here = serve(Landing())
    assert elsewhere.url.startswith(f"http://{OTHER_HOST}:") and here.url.startswith(
        "http://127.0.0.1:")
    assert HttpClient(FAST).request("GET", elsewhere.url + "/x").status == 200
    assert elsewhere.count("/x") == 1


REDIRECT_STATUSES = [301, 302, 303, 307, 308]


@pytest.mark.parametrize("status", REDIRECT_STATUSES)
def test_a_redirect_to_another_host_carries_no_credentials(elsewhere, serve, status):
    start = serve(Redirecting("/go", elsewhere.url, status),
                  Redirecting("/stay", "/landed", status), Landing())
    client = HttpClient(FAST)
    secrets = {"Authorization": f"Bearer {SECRET}", "Cookie": f"session={SECRET}",
               "Proxy-Authorization": f"Basic {SECRET}"}
    client.request("GET", start.url + "/go/file", headers=secrets)
    [landed] = elsewhere.records
    assert landed.path == "/go/file"
    assert not {"authorization", "cookie", "proxy-authorization"} & set(landed.headers)
    assert SECRET not in json.dumps(landed.headers)
    # Within one host the credentials go on: a relative Location, or the same host named.
    client.request("GET", start.url + "/stay/file", headers=secrets)
    start.services[1].target = start.url + "/landed"
    client.request("GET", start.url + "/stay/file", headers=secrets)
    followed = [r for r in start.records if r.path == "/landed/stay/file"]
    assert len(followed) == 2
    assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in followed)


def test_requests_kept_to_their_hosts_refuse_redirects_elsewhere(elsewhere, serve, tmp_path):
    start = serve(Redirecting("/", elsewhere.url))
    client = HttpClient(FAST)
    with pytest.raises(ForbiddenHost, match=f"redirected to http://{OTHER_HOST}:.*refused"):
        client.request("GET", start.url + "/api", allowed_hosts=[start.url])
    with pytest.raises(ForbiddenHost, match="is not on one of the configured archive hosts"):
        client.request("GET", elsewhere.url + "/api", allowed_hosts=[start.url])
    with pytest.raises(ForbiddenHost):
        client.download(start.url + "/f.fits", tmp_path / "f.fits", allowed_hosts=[start.url])
    assert elsewhere.count() == 0
    assert start.count() == 2  # refused at once: not retried
    assert list(tmp_path.iterdir()) == []


def test_irsa_credentials_never_follow_a_redirect(elsewhere, serve, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    irsa = serve(Redirecting("/cgi-bin", elsewhere.url))
    monkeypatch.setenv(USER_VARIABLE, "alice")
    monkeypatch.setenv(PASSWORD_VARIABLE, SECRET)
    obs = VirtualZTF(irsa_url=irsa.url, collection="ztf_private", **QUICK_NET)
    with pytest.raises(ForbiddenHost) as error:
        obs.fetch({"name": "x", "ra": 50.0, "dec": 5.0, "mag": 15.0})
    assert elsewhere.count() == 0
    header = base64.b64encode(f"alice:{SECRET}".encode()).decode()
    assert irsa.records[0].headers["authorization"] == f"Basic {header}"  # IRSA itself got them
    for text in (str(error.value), caplog.text):
        assert SECRET not in text and header not in text


# -- downloads only from the configured hosts -------------------------------------------------
@pytest.fixture
def tess_sky():
    return small_sky(tess_stars())


def _files_under(root) -> list:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_a_product_pointing_at_another_host_is_refused(tess_sky, elsewhere, data_root):
    with SimulatedArchives(tess_sky) as archives:
        mast = archives.mast.services[0]
        evil = f"{elsewhere.url}/evil_lc.fits"

        def point_elsewhere(rows):
            for row in rows:
                if "s0001" in row["dataURI"]:
                    row["dataURI"] = evil
            return rows

        mast.row_hooks["mast.caom.products"] = point_elsewhere
        obs = VirtualTESS(**archives.observatory_kwargs(**QUICK, use_cloud=False))
        rows = catalog_rows(tess_stars())
        obs.prepare_download(rows)
        with pytest.raises(ForbiddenHost, match="is not a MAST data URI"):
            obs.download(rows[0])                      # planet_host: sectors 1 and 2
        assert not obs.download(rows[1]).is_empty      # quiet_star: sectors 3 and 4
    assert elsewhere.count() == 0
    assert archives.mast.count(contains="evil") == 0
    assert all("planet_host" not in str(p) for p in _files_under(data_root))


BAD_DATA_URIS = [
    "https://elsewhere.example/x_lc.fits", "mast:TESS/../../etc/passwd", "file:///etc/passwd",
    "mast:TESS/product/a b_lc.fits", "//elsewhere.example/x", "", "mast:", "mast:TESS",
    "mast:TESS/product/x_lc.fits?redirect=http://elsewhere.example", "s3://stpubdata/tess/x",
]


@pytest.mark.parametrize("uri", BAD_DATA_URIS)
def test_only_mast_data_uris_are_fetched(uri):
    with pytest.raises(ForbiddenHost):
        check_data_uri(uri)


def test_a_cloud_path_that_is_not_a_bucket_key_is_not_used(tess_sky, elsewhere, data_root):
    with SimulatedArchives(tess_sky) as archives:
        mast = archives.mast.services[0]
        product = tess_sky.files_of("quiet_star")[0]
        mast.cloud_paths[product.data_uri] = f"{elsewhere.url}/../{product.cloud_key}"
        obs = VirtualTESS(**archives.observatory_kwargs(**QUICK))
        rows = catalog_rows(tess_stars())
        obs.prepare_download(rows[1:2])
        raw = obs.download(rows[1])
        routes = {p["filename"]: p["route"] for p in raw.altdata["products"]}
        assert routes[product.filename] == "https" and set(routes.values()) == {"https", "s3"}
        assert archives.s3.count() == 1  # only the other file, with its real key
    assert elsewhere.count() == 0


def test_a_mast_download_redirected_elsewhere_is_refused(tess_sky, elsewhere, data_root):
    with SimulatedArchives(tess_sky) as archives:
        mast = archives.mast.services[0]
        mast.routes.insert(0, Route(("GET",), "/api/v0.1/Download/file",
                                    Redirecting("/", elsewhere.url).answer))
        obs = VirtualTESS(**archives.observatory_kwargs(**QUICK, use_cloud=False))
        rows = catalog_rows(tess_stars())
        obs.prepare_download(rows[1:2])
        with pytest.raises(ForbiddenHost, match=f"redirected to http://{OTHER_HOST}"):
            obs.download(rows[1])
        assert archives.mast.count("/api/v0.1/Download/file") == 1  # not retried
    assert elsewhere.count() == 0
    assert [p for p in _files_under(data_root) if p.suffix == ".fits"] == []


def test_a_tap_service_redirected_elsewhere_is_refused(elsewhere, serve, tmp_path):
    tap = serve(Redirecting(GAIA_PATH, elsewhere.url))
    with pytest.raises(ForbiddenHost):
        Catalog(default="gaia", cone=[30.0, 25.0, 1.0], gaia_tap_url=tap.url + GAIA_PATH,
                cache_dir=str(tmp_path), **QUICK_NET).load()
    with pytest.raises(ForbiddenHost):
        Catalog(default="wd", wd_catalog_url=tap.url + GAIA_PATH + "/wd.csv",
                cache_dir=str(tmp_path), **QUICK_NET).load()
    assert elsewhere.count() == 0 and list(tmp_path.iterdir()) == []


BAD_ARCHIVE_URLS = [
    ("mast_url", {"mast_url": f"https://alice:{SECRET}@mast.stsci.edu"}),
    ("s3_endpoint_url", {"s3_endpoint_url": f"http://key:{SECRET}@127.0.0.1:9000"}),
    ("irsa_url", {"irsa_url": f"https://alice:{SECRET}@irsa.ipac.caltech.edu"}),
    ("gaia_tap_url", {"gaia_tap_url": f"https://alice:{SECRET}@gea.esac.esa.int/tap"}),
    ("exoplanet_archive_url", {"exoplanet_archive_url": f"https://u:{SECRET}@example.org"}),
    ("wd_catalog_url", {"wd_catalog_url": f"https://u:{SECRET}@example.org/wd.fits.gz"}),
    ("mast_url", {"mast_url": "ftp://mast.stsci.edu"}),
    ("mast_url", {"mast_url": "https://mast.stsci.edu:port"}),
]


@pytest.mark.parametrize("name,kwargs", BAD_ARCHIVE_URLS)
def test_archive_urls_hold_no_credentials(name, kwargs):
    with pytest.raises(ParameterError, match=name) as error:
        if name in ("mast_url", "s3_endpoint_url"):
            VirtualTESS(**kwargs)
        elif name == "irsa_url":
            VirtualZTF(**kwargs)
        else:
            Catalog(**kwargs)
    assert SECRET not in str(error.value)


# -- no query built from user text --------------------------------------------------------------
@pytest.fixture(scope="module")
def catalog_archives():
    with SimulatedArchives(ztf_sky()) as archives:
        archives.add_catalogs()
        yield archives


_ADQL_TOKEN = re.compile(r"'ICRS'|[A-Za-z_][A-Za-z0-9_.]*|[+-]?\d+(\.\d*)?([eE][+-]?\d+)?|"
                         r"<=|>=|[=<>(),*]|\s+")
_ADQL_WORDS = {"SELECT", "TOP", "FROM", "WHERE", "AND", "OR", "ORDER", "BY", "ASC", "CONTAINS",
               "POINT", "CIRCLE", "ra", "dec", "source_id", "parallax", "parallax_error",
               "parallax_over_error", "pmra", "pmdec", "phot_g_mean_mag", "phot_bp_mean_mag",
               "phot_rp_mean_mag", "gaiadr3.gaia_source"}


def _only_known_tokens(adql: str, table: str) -> bool:
    position = 0
    while position < len(adql):
        match = _ADQL_TOKEN.match(adql, position)
        if match is None or match.end() == position:
            return False
        token = match.group(0).strip()
        if token and token[0].isalpha() and token not in _ADQL_WORDS | {table}:
            return False
        position = match.end()
    return True


ADQL_EXAMPLES, IRSA_EXAMPLES, NAME_EXAMPLES = 60, 200, 6


@settings(max_examples=ADQL_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=st.one_of(st.text(max_size=40), st.sampled_from(
           ["gaiadr3.gaia_source", "gaiadr3.gaia_source WHERE 1=1 --", "x'; DROP TABLE y; --",
            "gaiadr3.gaia_source UNION SELECT * FROM secrets", "a.b.c.d"])),
       cone=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                               st.integers(-10**6, 10**6), st.text(max_size=12)),
                     min_size=3, max_size=3),
       mag=st.one_of(st.none(), st.floats(allow_nan=True), st.text(max_size=12)))
def test_adql_is_never_built_from_user_text(catalog_archives, tmp_path_factory, table, cone,
                                            mag):
    gaia = catalog_archives.catalogs.services[0]
    before = len(gaia.queries)
    folder = tmp_path_factory.mktemp("adql")
    try:
        Catalog(**catalog_archives.catalog_kwargs(
            default="gaia", gaia_table=table, cone=cone, mag_limit=mag, cache_dir=str(folder),
            **QUICK_NET)).load()
    except (ParameterError, CatalogError):
        pass  # refused: with a message, and nothing sent (checked below)
    except NetworkError as error:  # the simulated service said no to a well-formed query
        assert "does not exist" in str(error) or "refused" in str(error), error
    sent = gaia.queries[before:]
    for adql in sent:
        assert _only_known_tokens(adql, table), adql
    if sent:
        assert isinstance(table, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", table)
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in cone)


@settings(max_examples=IRSA_EXAMPLES, deadline=None)
@given(name=st.text(max_size=60),
       ra=st.floats(0, 359.999), dec=st.floats(-90, 90),
       pm=st.one_of(st.none(), st.floats(-5000, 5000)),
       oid=st.one_of(st.none(), st.integers(0, 2**62)))
def test_irsa_parameters_hold_only_numbers(name, ra, dec, pm, oid):
    obs = VirtualZTF(irsa_url="http://127.0.0.1:9")
    row = {"name": name, "ra": ra, "dec": dec, "pmra": pm, "pmdec": pm, "ztf_oid": oid}
    by_position = obs.query_params(row, years=(2018.0, 2025.0))
    assert re.fullmatch(r"CIRCLE \S+ \S+ \S+", by_position["POS"])
    assert all(math.isfinite(float(v)) for v in by_position["POS"].split()[1:])
    if oid is not None:
        assert obs.query_params(ids=[oid])["ID"] == [str(oid)]
    assert set(by_position) <= {"POS", "BANDNAME", "FORMAT", "TIME", "BAD_CATFLAGS_MASK",
                                "COLLECTION"}
    # The name (any text of the catalog) changes nothing that is sent.
    assert obs.query_params({**row, "name": "another name"}, years=(2018.0, 2025.0)) == by_position


@settings(max_examples=NAME_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(names=st.lists(st.text(min_size=1, max_size=40).filter(  # white space around a name
    lambda t: t.strip() == t and "\x00" not in t), min_size=2, max_size=5, unique_by=str))  # is refused
def test_hostile_names_reach_sql_only_as_values(project_factory, data_root, tmp_path_factory,
                                                names):
    folder = tmp_path_factory.mktemp("names")
    catalog = folder / "names.parquet"  # any text survives Parquet as written
    pd.DataFrame({"name": names, "ra": np.linspace(10, 300, len(names)),
                  "dec": np.linspace(-60, 60, len(names))}).to_parquet(catalog)
    project = project_factory(name="names", catalog_kwargs={"filename": str(catalog)},
                              demo={"empty_fraction": 0.0, "wait_time": 0.0})
    try:
        summary = project.run(analyze=False)
        assert summary.counts["failed"] == 0 and summary.counts["sources"] == len(names)
        with Session() as session:
            stored = session.scalars(sa.select(Source.name)).all()
            raw_names = session.scalars(sa.select(RawPhotometry.source_name)).all()
        assert sorted(stored) == sorted(names) and sorted(raw_names) == sorted(names)
    finally:
        with Session() as session:
            for model in (Detection, Properties, Lightcurve, Source, RawPhotometry,
                          HistogramBatch):
                session.execute(sa.delete(model))
            session.commit()


# -- secrets ---------------------------------------------------------------------------------
def test_a_password_in_the_environment_url_is_never_shown(postgres_url, tmp_path, data_root,
                                                          monkeypatch, caplog, capsys):
    url = sa.engine.make_url(postgres_url).set(password=SECRET).render_as_string(False)
    monkeypatch.setenv(database.ENV_URL, url)
    config = tmp_path / "env.yaml"
    config.write_text(
        "project: {name: from_env, progress: false}\n"
        f"data_root: \"{data_root}\"\n"
        "catalog: {default: test, num_sources: 3}\nexecution: {scheduler: serial}\n")
    caplog.set_level(logging.DEBUG)
    try:
        database.configure(None)
        assert main(["-v", "run", str(config)]) == 0
        assert main(["status", str(config), "--format", "json"]) == 0
        project = Project(cfg_file=config)
        places = [capsys.readouterr().out, caplog.text, project.cfg_hash, project.config_text(),
                  repr(project), str(project.status()), json.dumps(project.full_config()),
                  *(p.read_text(errors="replace") for p in data_root.rglob("*.yaml"))]
        for text in places:
            assert SECRET not in text
        # a wrong one from the environment: the error says where it came from, not the secret
        monkeypatch.setenv(database.ENV_URL, url.replace("+psycopg2", "+psycogp2"))
        with pytest.raises(database.DatabaseError, match=r"\$SKYRETRIEVER_DB_URL: unknown driver"
                           ) as error:
            database.configure(None)
        assert SECRET not in str(error.value)
    finally:
        monkeypatch.delenv(database.ENV_URL)
        database.configure("sqlite:///:memory:")
        with sa.create_engine(postgres_url).begin() as connection:
            connection.execute(sa.text(
                "TRUNCATE detections, properties, lightcurves, raw_photometry, sources, "
                "histogram_batches RESTART IDENTITY CASCADE"))


def test_tokens_sent_to_an_archive_are_not_in_errors_or_logs(serve, caplog):
    caplog.set_level(logging.DEBUG)
    refusing = serve(Service())
    refusing.services[0].routes = [
        Route(("GET",), "/denied", lambda r: Reply.text("no such token\n", status=401)),
        Route(("GET",), "/busy", lambda r: Reply.text("busy\n", status=503)),
    ]
    client = HttpClient(FAST)
    headers = {"Authorization": f"Bearer {SECRET}", "Cookie": f"token={SECRET}"}
    with pytest.raises(HttpError) as denied:
        client.request("GET", refusing.url + "/denied", headers=headers)
    with pytest.raises(RetriesExhausted) as busy:
        client.request("GET", refusing.url + "/busy", headers=headers)
    for text in (str(denied.value), denied.value.body, str(busy.value), caplog.text):
        assert SECRET not in text
    assert refusing.records[0].headers["authorization"] == f"Bearer {SECRET}"


def test_a_wrong_irsa_password_is_refused_without_showing_it(monkeypatch, caplog, data_root):
    caplog.set_level(logging.DEBUG)
    sky = ztf_sky()
    with SimulatedArchives(sky) as archives:
        archives.add_irsa(private={"ztf_private": ("alice", "the-right-one")})
        monkeypatch.setenv(USER_VARIABLE, "alice")
        monkeypatch.setenv(PASSWORD_VARIABLE, SECRET)
        obs = VirtualZTF(**archives.ztf_kwargs(**QUICK_NET, collection="ztf_private"))
        with pytest.raises(NetworkError, match="refused access to ztf_private") as error:
            obs.fetch({"name": "x", "ra": 50.0, "dec": 5.0, "mag": 15.0})
    header = base64.b64encode(f"alice:{SECRET}".encode()).decode()
    for text in (str(error.value), repr(obs), repr(obs.pars), caplog.text,
                 json.dumps(obs.pars.to_dict())):
        assert SECRET not in text and header not in text


def hostile_input_counts() -> dict[str, int]:
    """How many hostile inputs this module tries (for ``bench/reliability.py``)."""
    # Redirects to another host (each status, and from MAST, IRSA, TAP and the catalogue
    # file), foreign data URIs and cloud paths, and URLs with credentials.
    return {"foreign hosts, redirects and URLs": len(REDIRECT_STATUSES) + 5 + len(BAD_DATA_URIS)
            + 2 + len(BAD_ARCHIVE_URLS),
            "query-injection property-test examples": ADQL_EXAMPLES + IRSA_EXAMPLES
            + NAME_EXAMPLES}
