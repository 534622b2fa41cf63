"""ZTF from the simulated IRSA: end to end through Project.run (SQLite and PostgreSQL),
proper-motion-corrected search radii, batched object ids, credentials that never leak."""

from __future__ import annotations

import base64
import json
import logging
import pickle

import numpy as np
import pytest
import sqlalchemy as sa

from skyretriever.database import Session
from skyretriever.models import Lightcurve, RawPhotometry, Source
from skyretriever.observatories.ztf import (
    PASSWORD_VARIABLE,
    USER_VARIABLE,
    VirtualZTF,
    mjd_to_year,
)
from skyretriever.parameters import ParameterError
from skyretriever.testing import SimulatedArchives
from skyretriever.testing.irsa import SEASONS, IrsaService
from ztf_support import QUICK_NET, gaia_catalog, ztf_sky

ZTF_YEARS = (2018.0, 2024.5)


@pytest.fixture(scope="module")
def sky():
    return ztf_sky()


@pytest.fixture(scope="module")
def irsa(sky):
    return IrsaService(sky)


@pytest.fixture
def archives(sky):
    with SimulatedArchives(sky) as archives:
        archives.add_irsa(private={"ztf_private": ("alice", "s3cret-pw")})
        yield archives


def lightcurves_of(session, name: str) -> list[Lightcurve]:
    return list(session.scalars(
        sa.select(Lightcurve).join(Source).where(Source.name == name)
        .order_by(Lightcurve.series_number)))


def raw_of(session, name: str) -> RawPhotometry:
    return session.scalars(sa.select(RawPhotometry).where(
        RawPhotometry.source_name == name, RawPhotometry.observatory == "ztf")).one()


def test_ztf_end_to_end(project_factory, archives, sky, irsa, tmp_path):
    by_oid = irsa.objects_of("by_oid")[1]  # the star's zr object
    catalog = gaia_catalog(sky, tmp_path, mag_offsets={"wrong_mag": 4.0},
                           oids={"by_oid": by_oid.oid})
    proj = project_factory(obs_names=["ZTF"], catalog_kwargs={"filename": catalog},
                           ZTF=archives.ztf_kwargs(**QUICK_NET))
    summary = proj.run()
    assert summary.failures == []
    assert (summary.counts["done"], summary.counts["empty"]) == (5, 1)
    # One cone search per star without an id, one id query for the other.
    assert archives.irsa.count(contains="POS=CIRCLE") == 4
    assert archives.irsa.count(contains="ID=") == 1
    assert all("FORMAT=csv" in record.query for record in archives.irsa.records)

    with Session() as session:
        # The fast-moving flare star: found, every object and season its own light curve.
        raw = raw_of(session, "flare_wd")
        objects = irsa.objects_of("flare_wd")
        assert sorted(o["oid"] for o in raw.altdata["objects"]) == sorted(o.oid for o in objects)
        assert raw.altdata["resolved_by"] == "position"
        assert raw.altdata["data_release"].startswith("latest public release")
        assert raw.altdata["query"]["FORMAT"] == "csv"
        assert raw.altdata["search_radius_arcsec"] > 2.0 + 1.0 * 2  # 1"/yr at least 2 years
        assert sorted(raw.filters) == sorted({o.filtercode for o in objects})
        lightcurves = lightcurves_of(session, "flare_wd")
        assert len(lightcurves) == len(objects) * SEASONS
        assert [lc.time_start for lc in lightcurves] == sorted(lc.time_start for lc in lightcurves)
        for lc in lightcurves:
            assert lc.is_intact() and lc.data["oid"].nunique() == 1
            assert lc.filter == lc.data["filter"].iloc[0] in ("zg", "zr", "zi")
            assert lc.time_end - lc.time_start < 160
            flagged = (lc.data["quality"].to_numpy() & 32768) != 0
            np.testing.assert_array_equal(lc.data["qflag"].to_numpy(), flagged)
            assert lc.exptime == pytest.approx(30.0)
        quiet = [lc for lc in lightcurves if lc.filter == "zr"]
        assert np.median([lc.mag_mean for lc in quiet]) == pytest.approx(15.9, abs=0.05)

        # South of Dec -30: no ZTF coverage, an empty answer, recorded and done.
        south = raw_of(session, "south_wd")
        assert south.is_empty and south.altdata["objects"] == []
        assert lightcurves_of(session, "south_wd") == []

        # A blend 1.2" away, 3 mag fainter: in the cone, dropped for its magnitude.
        blended = raw_of(session, "blended")
        objects = irsa.objects_of("blended")
        own = {o.oid for o in objects[: len(objects) // 2]}  # then its neighbour's
        assert {o["oid"] for o in blended.altdata["objects"]} > own
        kept = {int(oid) for lc in lightcurves_of(session, "blended") for oid in lc.data["oid"]}
        assert kept == own

        # Every object 4 mag off the catalog's magnitude: an empty result, not an error.
        wrong = raw_of(session, "wrong_mag")
        assert not wrong.is_empty and lightcurves_of(session, "wrong_mag") == []

        # A catalog ZTF id: exactly that object, no cone search, never judged by position.
        oid_raw = raw_of(session, "by_oid")
        assert oid_raw.altdata["resolved_by"] == "catalog ztf_oid"
        assert oid_raw.altdata["query"]["ID"] == [str(by_oid.oid)]
        assert set(oid_raw.data["oid"]) == {by_oid.oid}
        assert len(lightcurves_of(session, "by_oid")) == SEASONS
        statuses = dict(session.execute(sa.select(Source.name, Source.status)).all())
        assert set(statuses.values()) == {"done"}

    # Nothing is asked again (the empty source included).
    archives.reset_stats()
    again = proj.run()
    assert again.counts["downloaded"] == 0 and archives.irsa.count() == 0


def test_search_radius_grows_with_proper_motion_since_the_catalog_epoch():
    obs = VirtualZTF(match_radius=2.0, position_epoch=2016.0)
    still = {"ra": 10.0, "dec": 20.0, "pmra": None, "pmdec": None}
    moving = {"ra": 10.0, "dec": 20.0, "pmra": 600.0, "pmdec": -800.0}  # 1"/yr
    assert obs.search_radius(still, years=(2018.0, 2024.0)) == 2.0
    assert obs.search_radius(moving, years=(2018.0, 2024.0)) == pytest.approx(2.0 + 8.0)
    assert obs.search_radius(moving, years=(2010.0, 2017.0)) == pytest.approx(2.0 + 6.0)
    # The default span runs from ZTF's first night to today.
    first, last = obs.survey_years()
    assert first == pytest.approx(float(mjd_to_year(58194.0))) and last > 2025.0
    assert obs.search_radius(moving) == pytest.approx(2.0 + (last - 2016.0))
    # time_range narrows it, and is what TIME sends.
    narrow = VirtualZTF(time_range=[58500.0, 58800.0])
    params = narrow.query_params(moving)
    assert params["TIME"] == "58500.0 58800.0"
    expected = 2.0 + (float(mjd_to_year(58800.0)) - 2016.0)
    assert float(params["POS"].split()[3]) * 3600 == pytest.approx(expected)


def test_a_fast_star_is_found_only_with_the_motion_corrected_radius(archives, sky):
    star = sky.star("flare_wd")
    ra, dec = star.position_at(2016.0)
    row = {"name": star.name, "ra": float(ra), "dec": float(dec), "mag": 16.0,
           "pmra": star.pmra, "pmdec": star.pmdec}
    obs = VirtualZTF(**archives.ztf_kwargs(**QUICK_NET))
    found = obs.download(row)
    assert not found.is_empty and len(obs.reduce(found)) > 0
    # Without its proper motion the 2016 position is ~5" from where ZTF saw it: nothing.
    unmoved = obs.download({**row, "pmra": None, "pmdec": None})
    assert unmoved.is_empty


def test_object_ids_are_asked_for_many_at_a_time(archives, sky, irsa):
    obs = VirtualZTF(**archives.ztf_kwargs(**QUICK_NET), ids_per_request=2)
    rows = []
    for star in sky.stars:
        for index, obj in enumerate(irsa.objects_of(star)[:2]):
            rows.append({"name": f"{star.name}_{index}", "ra": star.ra, "dec": star.dec,
                         "mag": None, "ztf_oid": obj.oid})
    assert len(rows) == 8  # south_wd has no objects
    obs.prepare_download(rows)
    assert archives.irsa.count(contains="ID=") == 4 and archives.irsa.count() == 4
    for row in rows:
        frame, altdata = obs.parse(obs.fetch(row))
        assert set(frame["oid"]) == {row["ztf_oid"]}
        assert altdata["objects"][0]["num_points"] == len(frame) > 0
    assert archives.irsa.count() == 4  # the downloads used the batch's answers
    # A row left out of the batch asks on its own.
    obs.fetch(rows[0])
    assert archives.irsa.count() == 5


def test_an_unknown_release_fails_with_irsa_s_reason(archives, sky):
    obs = VirtualZTF(**archives.ztf_kwargs(**QUICK_NET), collection="ztf_dr99")
    with pytest.raises(Exception, match="ztf_dr99.*not found"):
        obs.fetch({"name": "x", "ra": 30.0, "dec": 25.0})


def test_the_release_asked_for_is_sent_and_recorded(archives):
    obs = VirtualZTF(**archives.ztf_kwargs(**QUICK_NET), collection="ztf_dr23",
                     bands=["g"], bad_catflags_mask=32768)
    raw = obs.download({"name": "x", "ra": 50.0, "dec": 5.0, "mag": 15.0})
    assert raw.altdata["data_release"] == "ztf_dr23"
    query = archives.irsa.records[-1].query
    assert "COLLECTION=ztf_dr23" in query and "BANDNAME=g&" in query
    assert "BAD_CATFLAGS_MASK=32768" in query
    assert set(raw.data["filtercode"]) == {"zg"} and (raw.data["catflags"] & 32768 == 0).all()


def test_credentials_are_used_and_never_shown(project_factory, archives, sky, tmp_path,
                                              monkeypatch, caplog):
    monkeypatch.delenv(USER_VARIABLE, raising=False)
    monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)
    caplog.set_level(logging.DEBUG)
    catalog = gaia_catalog(sky, tmp_path)
    make = lambda **ztf: project_factory(  # noqa: E731
        obs_names=["ZTF"], catalog_kwargs={"filename": catalog},
        ZTF=archives.ztf_kwargs(**QUICK_NET, collection="ztf_private", **ztf))
    proj = make()
    first = proj.run()
    assert len(first.failures) == 5  # every source, the one south of ZTF too
    assert all("refused access to ztf_private (HTTP 401)" in reason
               and USER_VARIABLE in reason for _, reason in first.failures)

    # From a netrc file...
    netrc_file = tmp_path / "irsa.netrc"
    host = archives.irsa.url.split("//")[1].split(":")[0]
    netrc_file.write_text(f"machine {host} login alice password s3cret-pw\n")
    netrc_file.chmod(0o600)
    proj = make(credentials_file=str(netrc_file))
    second = proj.run()
    assert second.failures == [] and second.counts["done"] == 5
    sent = {record.headers.get("authorization") for record in archives.irsa.records}
    secret_header = "Basic " + base64.b64encode(b"alice:s3cret-pw").decode()
    assert secret_header in sent

    # ... or from the environment (which wins).
    monkeypatch.setenv(USER_VARIABLE, "alice")
    monkeypatch.setenv(PASSWORD_VARIABLE, "s3cret-pw")
    obs = VirtualZTF(**archives.ztf_kwargs(**QUICK_NET, collection="ztf_private"))
    assert not obs.download({"name": "x", "ra": 50.0, "dec": 5.0, "mag": 15.0}).is_empty

    # The secret is nowhere: logs, errors, config files, provenance, status, pickles.
    places = [caplog.text, repr(obs), repr(obs.pars), str(first),
              (proj.output_folder / "config.yaml").read_text(),
              (proj.output_folder / "settings.yaml").read_text(),
              json.dumps(proj.status(), default=str)]
    with Session() as session:
        places += [json.dumps(raw.altdata) for raw in session.scalars(sa.select(RawPhotometry))]
        places += [str(error) for error in session.scalars(sa.select(Source.error))]
    places.append(pickle.dumps(proj.observatories["ztf"]).decode("latin-1"))
    for text in places:
        assert "s3cret-pw" not in text and secret_header.split()[1] not in text


def test_credentials_in_the_url_or_half_set_are_refused(monkeypatch, tmp_path):
    with pytest.raises(ParameterError, match="must not hold credentials"):
        VirtualZTF(irsa_url="https://alice:pw@irsa.ipac.caltech.edu")
    nowhere = "http://127.0.0.1:9"  # never asked: the credentials fail first
    monkeypatch.setenv(USER_VARIABLE, "alice")
    monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)
    with pytest.raises(ParameterError, match="set both"):
        VirtualZTF(irsa_url=nowhere).fetch({"name": "x", "ra": 1.0, "dec": 2.0})
    monkeypatch.delenv(USER_VARIABLE)
    broken = tmp_path / "netrc"
    broken.write_text("machien 127.0.0.1 login alice password s3cret-pw\n")
    with pytest.raises(ParameterError, match="cannot read .* as a netrc file") as error:
        VirtualZTF(irsa_url=nowhere, credentials_file=str(broken)).fetch(
            {"name": "x", "ra": 1.0, "dec": 2.0})
    assert "s3cret-pw" not in str(error.value)


def test_reduction_in_worker_processes(project_factory, archives, sky, tmp_path):
    catalog = gaia_catalog(sky, tmp_path)
    proj = project_factory(obs_names=["ZTF"], catalog_kwargs={"filename": catalog},
                           ZTF=archives.ztf_kwargs(**QUICK_NET, max_connections_per_host=2),
                           execution_kwargs={"scheduler": "local", "workers": 2,
                                             "start_method": "spawn"})
    summary = proj.run()
    assert summary.failures == [] and summary.counts["done"] == 5
    assert archives.irsa.max_in_flight <= 2
    with Session() as session:
        assert session.scalar(sa.select(sa.func.count(Lightcurve.id))) > 0
