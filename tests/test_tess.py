"""TESS, K2 and Kepler end to end through Project.run, on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from skyretriever.database import Session
from skyretriever.models import Lightcurve, RawPhotometry, Source
from skyretriever.testing import SimulatedArchives
from tests.mast_support import (
    QUICK,
    kepler_stars,
    leftover_problems,
    small_sky,
    tess_stars,
    write_catalog,
)


@pytest.fixture(scope="module")
def sky():
    return small_sky()


@pytest.fixture
def archives(sky):
    with SimulatedArchives(sky) as archives:
        yield archives


def raw_of(session, name: str, observatory: str) -> RawPhotometry:
    return session.scalars(sa.select(RawPhotometry).where(
        RawPhotometry.source_name == name, RawPhotometry.observatory == observatory)).one()


def lightcurves_of(session, name: str, observatory: str) -> list[Lightcurve]:
    return list(session.scalars(
        sa.select(Lightcurve).join(Source).where(Source.name == name,
                                                 Lightcurve.observatory == observatory)
        .order_by(Lightcurve.series_number)))


def test_tess_end_to_end(project_factory, archives, sky, tmp_path, data_root):
    catalog = write_catalog(sky, tmp_path, tess_stars())
    proj = project_factory(obs_names=["TESS"], catalog_kwargs={"kind": "file", "filename": catalog},
                           TESS=archives.observatory_kwargs(**QUICK))
    summary = proj.run()
    assert summary.failures == []
    assert (summary.counts["done"], summary.counts["empty"], summary.counts["downloaded"]) == (4, 1, 4)
    with Session() as session:
        empty = raw_of(session, "no_data_star", "tess")
        assert empty.is_empty and empty.filename is None
        raw = raw_of(session, "planet_host", "tess")
        assert raw.is_intact() and raw.filters == ["TESS"]
        assert sorted(raw.data["sector"].unique()) == [1, 2]
        assert raw.num_points == len(raw.data) == sum(
            r["num_rows"] for r in raw.altdata["products"])
        assert [p["sequence"] for p in raw.altdata["products"]] == [1, 2]
        assert raw.altdata["headers"][raw.altdata["products"][0]["filename"]]["primary"][
            "TICID"] == 301_000_001
        host = sky.star("planet_host")
        lightcurves = lightcurves_of(session, "planet_host", "tess")
        assert [(lc.series_number, lc.series_total) for lc in lightcurves] == [(1, 2), (2, 2)]
        assert [lc.time_start for lc in lightcurves] == sorted(lc.time_start for lc in lightcurves)
        for lc, sector in zip(lightcurves, (1, 2)):
            assert lc.is_intact() and lc.filter == "TESS" and lc.exptime == pytest.approx(120.0)
            assert set(lc.data["sector"]) == {sector}
            assert lc.num_good_points == int((~lc.data["qflag"]).sum()) < lc.num_points
            assert lc.mag_mean == pytest.approx(host.tmag, abs=0.01)
            flagged = (lc.data["quality"].to_numpy() & 17087) != 0
            np.testing.assert_array_equal(lc.data["qflag"].to_numpy(), flagged)
        assert len(lightcurves_of(session, "fast_star", "tess")) == 1  # 120 s only, by default
    assert leftover_problems(data_root) == []
    assert not (data_root / "raw" / "TESS" / "fits").exists() or not any(
        (data_root / "raw" / "TESS" / "fits").iterdir())

    # Everything is done: the next run asks the archives nothing (the empty source included).
    archives.reset_stats()
    again = proj.run()
    assert again.counts["skipped"] == 4 and again.counts["downloaded"] == 0
    assert archives.mast.count() == 0 and archives.s3.count() == 0


def test_three_missions_in_one_project(project_factory, archives, sky, tmp_path):
    stars = [sky.star("planet_host"), *kepler_stars()]
    catalog = write_catalog(sky, tmp_path, stars)
    where = archives.observatory_kwargs(**QUICK)
    proj = project_factory(obs_names=["TESS", "Kepler", "K2"],
                           catalog_kwargs={"kind": "file", "filename": catalog},
                           TESS=where, Kepler=where, K2=where)
    summary = proj.run()
    assert summary.failures == [] and summary.counts["done"] == 3
    with Session() as session:
        expected = {("planet_host", "tess"): [1, 2], ("kepler_host", "kepler"): [1, 2, 3],
                    ("k2_star", "k2"): [3, 5]}
        for name in ("planet_host", "kepler_host", "k2_star"):
            for observatory in ("tess", "kepler", "k2"):
                raw = raw_of(session, name, observatory)
                sequences = expected.get((name, observatory))
                assert raw.is_empty == (sequences is None), (name, observatory)
                lightcurves = lightcurves_of(session, name, observatory)
                column = {"tess": "sector", "kepler": "quarter", "k2": "campaign"}[observatory]
                assert [lc.data[column].iloc[0] for lc in lightcurves] == (sequences or [])
        kepler = lightcurves_of(session, "kepler_host", "kepler")[0]
        assert kepler.filter == "Kepler" and "bkjd" in kepler.data
        np.testing.assert_allclose(kepler.data["bjd"], kepler.data["bkjd"] + 2454833, atol=1e-9)
        assert kepler.mag_mean == pytest.approx(sky.star("kepler_host").kepler_magnitude, abs=0.01)
        # A K2 star without an EPIC id in the catalog for Kepler: searched by position, none found.
        assert raw_of(session, "k2_star", "kepler").altdata["resolved_by"] == "position search"


def test_source_without_tess_data_is_not_asked_again(project_factory, archives, sky, tmp_path):
    catalog = write_catalog(sky, tmp_path, [sky.star("no_data_star")])
    proj = project_factory(obs_names=["TESS"], catalog_kwargs={"kind": "file", "filename": catalog},
                           TESS=archives.observatory_kwargs(**QUICK))
    first = proj.run()
    assert (first.counts["done"], first.counts["empty"]) == (1, 1)
    assert archives.mast.count("/api/v0/invoke") == 1  # its observations (none, so no products)
    assert archives.s3.count() == 0
    archives.reset_stats()
    proj.run()
    proj.run(source_names=["no_data_star"])
    assert archives.mast.count() == 0


def test_worker_processes_and_download_threads(project_factory, archives, sky, tmp_path):
    catalog = write_catalog(sky, tmp_path, tess_stars())
    proj = project_factory(obs_names=["TESS"], catalog_kwargs={"kind": "file", "filename": catalog},
                           TESS=archives.observatory_kwargs(**QUICK, max_connections_per_host=2),
                           execution_kwargs={"scheduler": "local", "workers": 2,
                                             "start_method": "spawn"})
    summary = proj.run()
    assert summary.failures == [] and summary.counts["done"] == 4
    assert archives.s3.max_in_flight <= 2 and archives.mast.max_in_flight <= 2
    with Session() as session:
        assert session.scalar(sa.select(sa.func.count(Lightcurve.id))) == 5
