"""Solar events from HEK: the simulated service speaks to sunpy's own HEKClient; the
``hek`` catalog preset pages, splits the range into windows, caches, survives faults, and
refuses star-only selections with a clear error; a project of events on both databases."""

from __future__ import annotations

import datetime as dt
import json
import warnings

import astropy.units as u
import numpy as np
import pytest
import sqlalchemy as sa
from astropy.coordinates import GCRS, SkyCoord, get_sun
from astropy.time import Time

from skyretriever.catalogs import Catalog, CatalogError
from skyretriever.database import Session
from skyretriever.models import Source
from skyretriever.net import NetworkError
from skyretriever.parameters import ParameterError
from skyretriever.testing.hek import HekService, SolarEvent, solar_events
from skyretriever.testing.server import ArchiveServer, Faults

QUICK_NET = {"max_attempts": 3, "backoff": 0.0, "timeout": 10.0}
EVENTS = solar_events(60, start="2020-06-01T00:00:00", every_hours=9.0)
# An event across the edge of the first 5-day window: listed by both windows, kept once.
EDGE = SolarEvent("edge", "2020-06-05T23:50:00", "2020-06-06T00:20:00", -650.0, 420.0)


@pytest.fixture
def hek():
    with ArchiveServer([HekService([*EVENTS, EDGE], page_size=4)]) as server:
        yield server


def hek_catalog(server, tmp_path, **kwargs) -> Catalog:
    options = {"kind": "hek", "hek_url": server.url + "/hek/her",
               "time_range": ["2020-06-01", "2020-06-16"], "window_days": 5,
               "cache_dir": str(tmp_path / "cache"), **QUICK_NET, **kwargs}
    return Catalog(**options)


def expected(start: str, end: str, channel: int | None = None) -> list[SolarEvent]:
    first, last = dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end)
    return [e for e in [*EVENTS, EDGE]
            if dt.datetime.fromisoformat(e.end) >= first and dt.datetime.fromisoformat(e.start) <= last
            and (channel is None or e.channel == channel)]


def test_sunpy_hek_client_pages_through_the_simulated_service(hek):
    from sunpy.net import attrs as a
    from sunpy.net.hek import HEKClient

    client = HEKClient(url=hek.url + "/hek/her?")
    result = client.search(a.Time("2020-06-02", "2020-06-08"), a.hek.CJ,
                           a.hek.OBS.ChannelID == "304")
    wanted = expected("2020-06-02", "2020-06-08", channel=304)
    assert len(wanted) > 8  # more than two pages of 4
    assert sorted(result["SOL_standard"]) == sorted(
        json.loads(json.dumps(r))["SOL_standard"] for r in
        [HekService([e]).records[0] for e in wanted])
    # sunpy parsed the records: coordinates in its helioprojective frame, times as Time.
    first = result[0]
    assert first["event_coord"].Tx.to_value(u.arcsec) == pytest.approx(first["hpc_x"].value
                                                                       if hasattr(first["hpc_x"], "value")
                                                                       else first["hpc_x"])
    assert isinstance(first["event_starttime"], Time)
    pages = [r for r in hek.records if r.path == "/hek/her"]
    assert len(pages) == len(wanted) // 4 + 1
    assert all("op0=%3D" in r.query and "param0=OBS_ChannelID" in r.query for r in pages)


def test_the_preset_asks_each_window_page_by_page_and_keeps_each_event_once(hek, tmp_path):
    cat = hek_catalog(hek, tmp_path).load()
    rows = cat.get_rows()
    wanted = expected("2020-06-01", "2020-06-16")
    assert sorted(row["hpc_x"] for row in rows) == sorted(e.hpc_x for e in wanted)
    assert len({row["name"] for row in rows}) == len(rows)
    edge = [row for row in rows if row["hpc_x"] == -650.0]
    assert len(edge) == 1 and edge[0]["start_time"] == "2020-06-05T23:50:00"
    # Three windows of 5 days, each paged until overmax is false.
    queries = [r.query for r in hek.records if r.path == "/hek/her"]
    starts = {q.split("event_starttime=")[1].split("&")[0] for q in queries}
    assert starts == {"2020-06-01T00%3A00%3A00", "2020-06-06T00%3A00%3A00",
                      "2020-06-11T00%3A00%3A00"}
    per_window = [expected(s, e) for s, e in (("2020-06-01", "2020-06-06"),
                                              ("2020-06-06", "2020-06-11"),
                                              ("2020-06-11", "2020-06-16"))]
    assert len(queries) == sum(len(w) // 4 + 1 for w in per_window)
    row = next(r for r in rows if r["hpc_x"] == EVENTS[3].hpc_x)
    assert row["frame"] == "helioprojective" and row["hpc_y"] == EVENTS[3].hpc_y
    assert row["end_time"] == EVENTS[3].end
    assert row["extra"]["bbox_x2"] - row["extra"]["bbox_x1"] == pytest.approx(EVENTS[3].width)
    assert json.loads(row["extra"]["hek_record"])["kb_archivid"].endswith(EVENTS[3].ident)


def test_ra_dec_are_where_the_event_is_on_the_sky_seen_from_earth(hek, tmp_path):
    for row in hek_catalog(hek, tmp_path).get_rows()[:6]:
        time = Time(row["start_time"])
        sun = get_sun(time)
        point = SkyCoord(row["ra"] * u.deg, row["dec"] * u.deg, frame=GCRS(obstime=time))
        offset = point.separation(sun).to_value(u.arcsec)
        # The angular distance from the Sun's centre is the helioprojective radius.
        assert offset == pytest.approx(np.hypot(row["hpc_x"], row["hpc_y"]), abs=1.0)


def test_attribute_filters_box_and_types_reach_the_service(hek, tmp_path):
    rows = hek_catalog(hek, tmp_path, hek_filters={"obs_channelid": 171},
                       hpc_box=[0, 1200, -1200, 1200]).get_rows()
    wanted = [e for e in expected("2020-06-01", "2020-06-16", channel=171) if e.hpc_x >= 0]
    assert sorted(r["hpc_x"] for r in rows) == sorted(e.hpc_x for e in wanted) and wanted
    assert hek_catalog(hek, tmp_path, event_type=["fl"]).get_rows() == []
    with pytest.raises(CatalogError, match="hek_filters.obs_channelid.*operator"):
        hek_catalog(hek, tmp_path, hek_filters={"obs_channelid": ["~", 3]}).load()
    with pytest.raises(CatalogError, match="event_type.*two-letter"):
        hek_catalog(hek, tmp_path, event_type=["cj&x=1"]).load()


def test_the_second_load_is_offline_and_refresh_asks_again(hek, tmp_path):
    first = hek_catalog(hek, tmp_path)
    rows = first.get_rows()
    asked = hek.count("/hek/her")
    again = hek_catalog(hek, tmp_path)
    assert again.get_rows() == rows and hek.count("/hek/her") == asked
    assert again.catalog_hash == first.catalog_hash
    hek_catalog(hek, tmp_path, refresh=True).load()
    assert hek.count("/hek/her") == 2 * asked


def test_star_only_selections_say_they_are_for_stars(tmp_path):
    for star_only in ({"cone": [10.0, 10.0, 1.0]}, {"mag_limit": 12.0},
                      {"box": [0.0, 10.0, 0.0, 10.0]}):
        with pytest.raises(ParameterError, match=r"selects stars.*solar events.*hpc_box"):
            Catalog(default="hek", time_range=["2020-06-01", "2020-06-02"], **star_only)
    with pytest.raises(CatalogError, match="time_range: the hek catalog needs"):
        Catalog(default="hek", cache_dir=str(tmp_path)).load()
    with pytest.raises(CatalogError, match="is not before"):
        Catalog(default="hek", time_range=["2020-06-02", "2020-06-01"],
                cache_dir=str(tmp_path)).load()


@pytest.mark.parametrize("knob", ["unavailable", "reset", "truncate", "html", "timeout"])
def test_faults_are_survived_and_a_failed_load_caches_nothing(hek, tmp_path, knob):
    clean = hek_catalog(hek, tmp_path / "clean").get_rows()
    hek.faults = Faults(**{f"{knob}_rate": 1.0}, retry_after=0, faults_per_request=1, stall=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        survived = hek_catalog(hek, tmp_path / "faulty", timeout=1.0).get_rows()
    assert survived == clean
    hek.faults = Faults(**{f"{knob}_rate": 1.0}, retry_after=0, stall=3.0)
    with pytest.raises(NetworkError):
        hek_catalog(hek, tmp_path / "broken", timeout=1.0, max_attempts=2).load()
    assert not list((tmp_path / "broken").glob("**/hek_*.csv"))


def test_a_project_of_events_has_helioprojective_sources(project_factory, hek, tmp_path):
    proj = project_factory(obs_names=["demo"], catalog_kwargs={
        "kind": "hek", "hek_url": hek.url + "/hek/her", "time_range": ["2020-06-01", "2020-06-04"],
        "cache_dir": str(tmp_path / "c"), **QUICK_NET})
    summary = proj.run(reduce=False, analyze=False)
    wanted = expected("2020-06-01", "2020-06-04")
    assert summary.counts["sources"] == summary.counts["downloaded"] == len(wanted)
    with Session() as session:
        sources = session.scalars(sa.select(Source).order_by(Source.start_time)).all()
        assert [s.frame for s in sources] == ["helioprojective"] * len(wanted)
        assert [s.start_time for s in sources] == sorted(
            dt.datetime.fromisoformat(e.start) for e in wanted)
        assert sources[0].hpc_x == wanted[0].hpc_x
        with pytest.raises(ValueError, match="cone search is for stars.*solar events"):
            Source.cone_search(sources[0].ra, sources[0].dec, 1.0, session=session,
                               project=proj.context.name)
        # Without a project, events are simply not what a cone search finds.
        assert Source.cone_search(sources[0].ra, sources[0].dec, 1.0, session=session) == []
