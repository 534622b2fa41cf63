"""One target without a catalog: ``skyretriever.fetch``, ``skyretriever get`` and
``Project.run(rows=...)``, against the simulated MAST (its name resolver included), on
SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from contextlib import redirect_stdout

import pytest
import yaml

import skyretriever
from skyretriever import Project
from skyretriever.catalogs.errors import CatalogError
from skyretriever.catalogs.names import cross_ids_in_name
from skyretriever.cli import main
from skyretriever.testing import SimulatedArchives
from tests.mast_support import QUICK, small_sky, tess_stars


@pytest.fixture(scope="module")
def sky():
    return small_sky(tess_stars())


@pytest.fixture
def archives(sky):
    with SimulatedArchives(sky) as archives:
        yield archives


@pytest.fixture
def settings(archives, database_url, data_root):
    """Where fetch runs: the test database and data root, TESS at the simulated MAST."""
    return {"database_url": database_url, "data_root": str(data_root),
            "resolver_url": archives.mast_url + "/Santa-war/query",
            "TESS": archives.observatory_kwargs(**QUICK),
            "execution_kwargs": {"scheduler": "serial"}}


def test_a_tic_name_is_resolved_fetched_and_its_light_curves_returned(archives, settings):
    curves = skyretriever.fetch("TIC 301000001", observatories=["TESS"], **settings)
    assert archives.mast.count("/Santa-war/query") == 1
    assert [(lc.observatory, lc.series_number, lc.series_total) for lc in curves] == [
        ("tess", 1, 2), ("tess", 2, 2)]
    for curve, sector in zip(curves, (1, 2)):
        assert set(curve.data["sector"]) == {sector}      # loaded, usable without a session
        assert curve.source.name == "TIC 301000001" and curve.source.tic_id == 301_000_001
        converted = curve.to_lightkurve()
        assert converted.meta["TICID"] == 301_000_001 and len(converted) == len(curve.data)
        assert converted.time.format == "btjd"
    # The star was matched by its TIC id, in the default project, analysed.
    proj = Project(name="fetched", cfg_file=False, obs_names=["TESS"], version_control=True,
                   database_url=settings["database_url"], data_root=settings["data_root"])
    assert proj.status()["sources"]["done"] == 1 and proj.status()["properties"] == 1

    # The same target again: nothing is downloaded, the same curves come back.
    archives.reset_stats()
    again = skyretriever.fetch("TIC 301000001", observatories=["TESS"], **settings)
    assert [lc.id for lc in again] == [lc.id for lc in curves]
    assert archives.mast.count("/api/v0.1/Download") == 0 and archives.s3.count() == 0


def test_a_plain_name_is_resolved_to_a_position_and_matched_there(archives, settings):
    curves = skyretriever.fetch("quiet_star", observatories=["TESS"], **settings)
    assert sorted({int(s) for lc in curves for s in lc.data["sector"]}) == [3, 4]
    assert curves[0].source.ra == pytest.approx(60.0)
    assert curves[0].source.tic_id == 301_000_002       # the resolver's canonical name, TIC n


def test_fetches_from_other_observatories_go_to_a_folder_of_their_own(archives, settings):
    skyretriever.fetch("TIC 301000001", observatories=["TESS"], **settings)
    settings = {**settings, "demo": {"wait_time": 0}}
    curves = skyretriever.fetch("TIC 301000001", observatories=["TESS", "demo"], **settings)
    assert {lc.observatory for lc in curves} == {"tess", "demo"}
    assert len({lc.cfg_hash for lc in curves}) == 1


def test_a_position_needs_no_resolver_and_a_star_without_data_gives_none(archives, settings):
    curves = skyretriever.fetch(ra="8h00m00s", dec=-60.0, observatories=["TESS"], **settings)
    assert curves == []                                   # no_data_star: observed by nobody
    assert archives.mast.count("/Santa-war/query") == 0
    curves = skyretriever.fetch(ra=90.0, dec=45.0, observatories=["TESS"], **settings)
    assert len(curves) == 1 and curves[0].source.name == "J90.00000+45.00000"


def test_an_unknown_name_or_half_a_position_is_a_clear_error(archives, settings):
    with pytest.raises(CatalogError, match="knows no object named 'no such star'.*ra=, dec="):
        skyretriever.fetch("no such star", **settings)
    with pytest.raises(CatalogError, match="give both ra and dec"):
        skyretriever.fetch(ra=10.0, **settings)


def test_the_names_that_spell_a_mission_id():
    assert cross_ids_in_name(" TIC 0025155310 ") == {"tic_id": 25155310}
    assert cross_ids_in_name("KIC 8462852") == {"kic_id": 8462852}
    assert cross_ids_in_name("ktwo201367065") == {"epic_id": 201367065}
    assert cross_ids_in_name("Gaia DR3 4472832130942575872") == {"gaia_id": 4472832130942575872}
    assert cross_ids_in_name("TIC 12 b") == {}                       # a planet, not a star id


def test_a_project_runs_given_rows_without_a_catalog(project_factory, archives):
    proj = project_factory("onestar", catalog_kwargs={}, obs_names=["demo"])
    first = proj.run(rows=[{"name": "one", "ra": "12h30m00s", "dec": "+10d00m00s", "mag": 14.0}])
    assert first.counts["done"] == 1 and first.failures == []
    # Another star into the same project later: the configuration did not change.
    second = proj.run(rows=[{"name": "two", "ra": 187.5, "dec": 11.0}])
    assert second.counts["done"] == 1
    assert proj.status()["sources"]["done"] == 2
    with pytest.raises(CatalogError) as error:
        proj.run(rows=[{"name": "bad", "ra": 400.0, "dec": 1.0}, {"name": "no position"}])
    message = str(error.value)
    assert "rows given" in message and "row 0: RA outside" in message
    assert "row 1: RA is missing" in message and "bad_rows" not in message
    with pytest.raises(CatalogError, match=r"rows\[0\] is a str"):
        proj.run(rows=["one"])
    with pytest.raises(CatalogError, match="give a filename or choose a preset"):
        proj.run()                                    # the whole catalog: there is none


def test_get_prints_every_point_as_csv_with_the_settings_of_a_config(archives, settings,
                                                                     tmp_path, capsys):
    config = tmp_path / "one.yaml"
    config.write_text(yaml.safe_dump({
        "project": {"name": "single", "obs_names": ["TESS"], "progress": False},
        "database": {"url": settings["database_url"]},
        "data_root": settings["data_root"],
        "observatories": {"tess": settings["TESS"]},
        "execution": {"scheduler": "serial"},
    }))
    output = io.StringIO()
    with redirect_stdout(output):
        status = main(["get", "TIC 301000001", "--obs", "TESS", "--config", str(config),
                       "--resolver-url", settings["resolver_url"], "--format", "csv"])
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(output.getvalue())))
    curves = Project(cfg_file=config).lightcurves_of("TIC 301000001")
    assert len(rows) == sum(len(lc.data) for lc in curves) > 0
    assert {row["series"] for row in rows} == {"1", "2"}
    assert {row["observatory"] for row in rows} == {"tess"}
    first = curves[0].data.iloc[0]
    assert float(rows[0]["flux"]) == pytest.approx(float(first["flux"]))

    with redirect_stdout(io.StringIO()) as text:
        assert main(["get", "TIC 301000001", "--config", str(config),
                     "--resolver-url", settings["resolver_url"]]) == 0
    assert "TIC 301000001: 2 light curve(s)" in text.getvalue()
    assert main(["get", "nobody at all", "--config", str(config),
                 "--resolver-url", settings["resolver_url"]]) == 1
    assert "knows no object named 'nobody at all'" in capsys.readouterr().err
