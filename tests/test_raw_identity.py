"""Raw data belongs to the star and download asked for; raw data and projects apart on disk.

Issue 14, findings 1 (the layout half), 5, 6, 8 and 9: names reused by two catalogs for
other stars, other download parameters, an archive sending another target's file,
project ``demo`` beside observatory ``demo``, project names that differ only in case,
and data roots made before the ``raw/`` and ``projects/`` folders.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command

from skyretriever import database, storage
from skyretriever.checker import check_project
from skyretriever.database import Session
from skyretriever.models import Lightcurve, RawPhotometry, Source
from skyretriever.parameters import ParameterError
from skyretriever.testing import SimulatedArchives
from tests.helpers import snapshot
from tests.mast_support import QUICK, small_sky, tess_stars, write_catalog
from tests.ztf_support import QUICK_NET, gaia_catalog, ztf_sky

NAMES = [f"S{i}" for i in range(1, 21)]


def _catalog(folder: Path, name: str, ra0: float, dec: float, mag: float) -> str:
    path = folder / name
    pd.DataFrame({"name": NAMES, "ra": [ra0 + i for i in range(len(NAMES))],
                  "dec": [dec] * len(NAMES), "mag": [mag] * len(NAMES)}).to_csv(path, index=False)
    return str(path)


def _raw_of_project(session, project: str, observatory: str = "demo") -> dict[str, RawPhotometry]:
    """Each source's raw data as the project sees it (through its link)."""
    sources = session.scalars(sa.select(Source).where(Source.project == project)).all()
    found = {}
    for source in sources:
        [raw] = [r for r in source.raw_photometry if r.observatory == observatory]
        found[source.name] = raw
    return found


# -- finding 5: names reused for other stars -------------------------------------------------
def test_two_catalogs_reusing_names_get_their_own_stars_data(project_factory, tmp_path):
    first_catalog = _catalog(tmp_path, "first.csv", 10.0, 5.0, 14.0)
    second_catalog = _catalog(tmp_path, "second.csv", 200.0, -30.0, 17.0)
    demo = {"empty_fraction": 0.0}
    first = project_factory("first", catalog_kwargs={"filename": first_catalog}, demo=demo)
    second = project_factory("second", catalog_kwargs={"filename": second_catalog}, demo=demo)
    assert first.run().counts["downloaded"] == 20
    summary = second.run()
    assert summary.failures == []
    assert summary.counts["downloaded"] == 20           # its own stars: nothing to share

    with Session() as session:
        for project, ra0, dec, mag in (("first", 10.0, 5.0, 14.0), ("second", 200.0, -30.0, 17.0)):
            raws = _raw_of_project(session, project)
            assert sorted(raws) == sorted(NAMES)
            for index, name in enumerate(NAMES):
                raw = raws[name]
                assert (raw.ra, raw.dec) == (ra0 + index, dec), (project, name)
                # The demo archive makes a star's magnitudes from the catalog's: r is the base.
                r_band = raw.data.loc[raw.data["filter"] == "r", "mag"]
                assert np.median(r_band) == pytest.approx(mag, abs=0.1), (project, name)
            lightcurves = session.scalars(sa.select(Lightcurve).join(Source).where(
                Source.project == project)).all()
            assert {lc.raw_data.ra for lc in lightcurves} == {ra0 + i for i in range(20)}
        assert session.scalar(sa.select(sa.func.count()).select_from(RawPhotometry)) == 40
        files = {r.filename for r in session.scalars(sa.select(RawPhotometry))}
        assert len(files) == 40                             # S1 and S1 never share a file
    assert check_project(second).clean
    # A third project on the first catalog's stars reuses the first's raw data.
    third = project_factory("third", catalog_kwargs={"filename": first_catalog}, demo=demo)
    assert third.run().counts["downloaded"] == 0


def test_raw_data_is_reused_within_the_match_radius_only(project_factory, tmp_path):
    demo = {"empty_fraction": 0.0}
    base = _catalog(tmp_path, "base.csv", 10.0, 5.0, 14.0)
    near = tmp_path / "near.csv"                            # 1 arcsec north: the same stars
    frame = pd.read_csv(base)
    frame["dec"] += 1.0 / 3600
    frame.to_csv(near, index=False)
    far = tmp_path / "far.csv"                              # 3 arcsec north: other stars
    frame["dec"] += 2.0 / 3600
    frame.to_csv(far, index=False)
    project_factory("base", catalog_kwargs={"filename": base}, demo=demo).run()
    assert project_factory("near", catalog_kwargs={"filename": str(near)},
                           demo=demo).run().counts["downloaded"] == 0
    assert project_factory("far", catalog_kwargs={"filename": str(far)},
                           demo=demo).run().counts["downloaded"] == 20


def test_disagreeing_cross_ids_mean_another_star(project_factory, tmp_path):
    demo = {"empty_fraction": 0.0}
    frame = pd.DataFrame({"name": ["S1"], "ra": [10.0], "dec": [5.0], "mag": [14.0],
                          "gaia_id": [111]})
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.assign(gaia_id=[222]).to_csv(tmp_path / "b.csv", index=False)
    project_factory("a", catalog_kwargs={"filename": str(tmp_path / "a.csv")}, demo=demo).run()
    b = project_factory("b", catalog_kwargs={"filename": str(tmp_path / "b.csv")}, demo=demo)
    assert b.run().counts["downloaded"] == 1
    with Session() as session:
        assert _raw_of_project(session, "b")["S1"].cross_ids == {"gaia_id": 222}


# -- finding 6: other download parameters ----------------------------------------------------
@pytest.fixture
def ztf_archives():
    with SimulatedArchives(ztf_sky()) as archives:
        archives.add_irsa()
        yield archives


def test_other_ztf_bands_download_again(project_factory, ztf_archives, tmp_path):
    catalog = gaia_catalog(ztf_archives.sky, tmp_path)
    g_only = project_factory("g_only", obs_names=["ZTF"], catalog_kwargs={"filename": catalog},
                             ZTF=ztf_archives.ztf_kwargs(**QUICK_NET, bands=["g"]))
    assert g_only.run().failures == []
    ztf_archives.reset_stats()
    r_only = project_factory("r_only", obs_names=["ZTF"], catalog_kwargs={"filename": catalog},
                             ZTF=ztf_archives.ztf_kwargs(**QUICK_NET, bands=["r"]))
    summary = r_only.run()
    assert summary.failures == []
    assert summary.counts["downloaded"] == 5 and ztf_archives.irsa.count(contains="BANDNAME=r") > 0
    with Session() as session:
        for project, band in (("g_only", "zg"), ("r_only", "zr")):
            filters = set(session.scalars(sa.select(Lightcurve.filter).join(Source).where(
                Source.project == project)))
            assert filters == {band}, (project, filters)
            for raw in _raw_of_project(session, project, "ztf").values():
                assert set(raw.filters or []) <= {band}
        hashes = set(session.scalars(sa.select(RawPhotometry.download_hash)))
        assert len(hashes) == 2 and None not in hashes


def test_download_hash_counts_only_what_changes_the_download():
    from skyretriever.observatories.tess import VirtualTESS
    from skyretriever.observatories.ztf import VirtualZTF

    assert VirtualZTF(bands=["g"]).download_hash != VirtualZTF(bands=["r"]).download_hash
    assert VirtualZTF(bad_catflags_mask=32768).download_hash != VirtualZTF().download_hash
    assert (VirtualZTF(irsa_url="http://127.0.0.1:1", max_attempts=2).download_hash
            == VirtualZTF().download_hash)
    assert VirtualZTF(mag_tolerance=3.0).download_hash == VirtualZTF().download_hash
    assert VirtualTESS(sectors=[1]).download_hash != VirtualTESS().download_hash
    assert VirtualTESS(flux_column="sap").download_hash == VirtualTESS().download_hash
    assert (VirtualTESS(mast_url="http://127.0.0.1:1", download_workers=1).download_hash
            == VirtualTESS().download_hash)


# -- finding 9: an archive sending another target's file -------------------------------------
def test_a_file_of_another_tic_fails_its_source_and_is_not_stored(project_factory, tmp_path,
                                                                   data_root):
    sky = small_sky(tess_stars())
    host, quiet = sky.files_of("planet_host")[0], sky.files_of("quiet_star")[0]
    with SimulatedArchives(sky) as archives:
        archives.mast.services[0].served_files[host.data_uri] = sky.file_bytes(quiet.data_uri)
        project = project_factory(
            obs_names=["TESS"], catalog_kwargs={"filename": write_catalog(sky, tmp_path)},
            TESS=archives.observatory_kwargs(**QUICK, use_cloud=False))
        summary = project.run()
    reasons = dict(summary.failures)
    assert list(reasons) == ["planet_host"]
    assert "TICID 301000002" in reasons["planet_host"]
    assert "TICID 301000001" in reasons["planet_host"]
    with Session() as session:
        stored = set(session.scalars(sa.select(RawPhotometry.source_name)))
        assert "planet_host" not in stored and "quiet_star" in stored
    kept = [p.name for p in data_root.rglob("*") if p.is_file()]
    assert not any("planet_host" in name for name in kept), kept


def test_a_file_far_from_the_position_asked_for_is_refused():
    from skyretriever.observatories.mission_files import WrongTargetError, check_target

    primary = {"RA_OBJ": 30.0, "DEC_OBJ": -20.0}
    check_target("f.fits", primary, "TICID", None, (30.0, -20.0 + 5 / 3600), 10.0, "'a'")
    with pytest.raises(WrongTargetError, match="30.0 arcsec from source 'a'"):
        check_target("f.fits", primary, "TICID", None, (30.0, -20.0 + 30 / 3600), 10.0, "'a'")


# -- finding 1, the layout half: project demo beside observatory demo ------------------------
def test_the_demo_project_and_the_demo_observatory_do_not_collide(project_factory, data_root):
    project = project_factory("demo")
    assert project.run().counts["failed"] == 0
    report = check_project(project)
    assert report.clean, str(report)
    assert "file without row" not in str(report)
    assert (data_root / "raw" / "DEMO").is_dir() and (data_root / "projects" / "DEMO").is_dir()
    assert not (data_root / "DEMO").exists()
    before = snapshot(project)
    assert check_project(project, repair=True).clean
    assert snapshot(project) == before


# -- finding 8: project names that differ only in case ---------------------------------------
def test_project_names_differing_only_in_case_are_refused(project_factory, tmp_path,
                                                          data_root, database_url):
    project_factory("relp").run()
    with pytest.raises(ParameterError, match="'RELP' differs only in case from project 'relp'"):
        project_factory("RELP").run()
    # Without the folder, the database says who has the name.
    shutil.rmtree(data_root / "projects" / "RELP")
    with pytest.raises(ParameterError, match="'RELP' differs only in case.* in the database"):
        project_factory("RELP").run()
    with Session() as session:
        assert set(session.scalars(sa.select(Source.project))) == {"relp"}
    # Another database on the same data root: the folder's config.yaml says who owns it.
    # (With its folder and config.yaml gone, relp's results say nothing of what they were made
    # with: the run stops unless asked to redo them.)
    project_factory("relp").run(redo=True)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    try:
        with pytest.raises(ParameterError, match="'Relp' differs only in case.*folder"):
            project_factory("Relp", database_url=other).run()
    finally:
        database.configure(database_url)
    assert not any(p.name.startswith("Relp") for p in (data_root / "projects").iterdir())


# -- the layout of older data roots ----------------------------------------------------------
def _make_old_root(project, data_root: Path) -> None:
    """Turn a finished project's root into one as skyretriever 0004 left it: files at the old
    paths with the old names, rows pointing at them, the schema at 0004."""
    with database._migrating(database.get_url()) as connection:
        command.downgrade(database._alembic_config(connection), "0004")
    with database.get_engine().begin() as connection:
        rows = connection.execute(sa.text(
            "SELECT id, filename, source_name, observatory FROM raw_photometry "
            "WHERE filename IS NOT NULL")).all()
        for raw_id, filename, name, observatory in rows:
            old = Path(filename).parent / (f"{observatory.upper()}_photometry_"
                                           f"{storage.sanitize_name(name)}.h5")
            os.replace(data_root / "raw" / filename, data_root / "raw" / old)
            connection.execute(sa.text("UPDATE raw_photometry SET filename = :f WHERE id = :i"),
                               {"f": old.as_posix(), "i": raw_id})
    for namespace in ("raw", "projects"):
        for folder in (data_root / namespace).iterdir():
            shutil.copytree(folder, data_root / folder.name, dirs_exist_ok=True)
        shutil.rmtree(data_root / namespace)


def _interrupt_after(monkeypatch, moves: int) -> None:
    """The next ``moves`` renames of the layout migration happen, then it is killed."""
    real = os.replace
    count = {"n": 0}

    def replace(source, target):
        if count["n"] >= moves:
            raise KeyboardInterrupt("killed")
        count["n"] += 1
        real(source, target)

    monkeypatch.setattr(storage.os, "replace", replace)


def test_an_old_data_root_is_migrated_even_when_killed_part_way(project_factory, data_root,
                                                                monkeypatch, caplog):
    project = project_factory("demo", demo={"empty_fraction": 0.2})
    project.run()
    reference = snapshot(project)
    _make_old_root(project, data_root)
    assert (data_root / "DEMO" / "config.yaml").exists()
    assert any((data_root / "DEMO").glob("RA*/DEMO_photometry_*_reduced.h5"))
    assert not (data_root / "raw").exists()
    (data_root / "notes").mkdir()                            # the user's own: left alone
    (data_root / "notes" / "todo.txt").write_text("keep me")

    for moves in (0, 3, 10):                                 # killed three times
        with monkeypatch.context() as patch:
            _interrupt_after(patch, moves)
            with pytest.raises(KeyboardInterrupt):
                database.upgrade()
    database.upgrade()                                       # the rerun finishes it
    assert not (data_root / "DEMO").exists()
    assert (data_root / "notes" / "todo.txt").read_text() == "keep me"
    assert storage.migrate_layout() == []                    # nothing left to do
    assert database.current_revision() == database.head_revision()
    report = check_project(project)
    assert report.clean, str(report)

    # Raw rows from before have no download hash: never reused, downloaded again (said once).
    with caplog.at_level(logging.WARNING, logger="skyretriever.project"):
        summary = project.run()
    assert summary.counts["failed"] == 0
    assert summary.counts["downloaded"] == 20
    warnings = [r.getMessage() for r in caplog.records if "not reused" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("20 raw product(s)")
    assert check_project(project).clean
    after = snapshot(project)
    assert after["sources"] == reference["sources"]
    assert after["properties"] == reference["properties"]
    assert after["histogram"] == reference["histogram"]


def test_a_ztf_answer_about_another_target_is_refused(ztf_archives):
    from skyretriever.net import BadAnswer
    from skyretriever.observatories.ztf import VirtualZTF, ZtfAnswer

    obs = VirtualZTF(**ztf_archives.ztf_kwargs(**QUICK_NET))
    rows = {}
    for name in ("flare_wd", "blended"):
        star = ztf_archives.sky.star(name)
        ra, dec = star.position_at(2016.0)
        rows[name] = {"name": name, "ra": float(ra), "dec": float(dec), "pmra": star.pmra,
                      "pmdec": star.pmdec, "mag": star.gaia_magnitude}
    asked, other = obs.fetch(rows["flare_wd"]), obs.fetch(rows["blended"])
    assert len(obs.parse(asked)[0]) > 0                      # the right answer is taken
    with pytest.raises(BadAnswer, match=r"holds object \d+ at .* outside the .* searched"):
        obs.parse(ZtfAnswer(other.text, asked.provenance))
    by_id = obs.fetch({**rows["flare_wd"], "ztf_oid": 123})
    with pytest.raises(BadAnswer, match="not the one asked for"):
        obs.parse(ZtfAnswer(asked.text, by_id.provenance))


def test_a_file_left_without_a_row_is_adopted_only_for_its_own_target(project_factory, tmp_path,
                                                                       data_root):
    from skyretriever.models.datasets import raw_file_identity

    demo = {"empty_fraction": 0.0}
    first = _catalog(tmp_path, "first.csv", 10.0, 5.0, 14.0)
    second = _catalog(tmp_path, "second.csv", 200.0, -30.0, 17.0)
    project_factory("first", catalog_kwargs={"filename": first}, demo=demo).run()
    b = project_factory("second", catalog_kwargs={"filename": second}, demo=demo)
    # Another star's file lies where S1 of the second catalog would be written (copied, or
    # left by a bug): a file without a row, but not of this target.
    row = {"name": "S1", "ra": 200.0, "dec": -30.0}
    identity = b.observatories["demo"].raw_identity(row)
    expected = storage.full_path(storage.raw_filename(
        "demo", "S1", 200.0, raw_file_identity(identity["download_hash"], identity["target_key"])))
    with Session() as session:
        foreign = _raw_of_project(session, "first")["S1"]
    expected.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(foreign.get_fullname(), expected)
    assert b.run().counts["downloaded"] == 20              # S1 too: the file was not adopted
    with Session() as session:
        raw = _raw_of_project(session, "second")["S1"]
        assert (raw.ra, raw.dec) == (200.0, -30.0)
        assert np.median(raw.data.loc[raw.data["filter"] == "r", "mag"]) == pytest.approx(
            17.0, abs=0.1)
    # Its own file, left without a row (a run killed before committing), is adopted.
    with Session() as session:
        session.execute(sa.delete(RawPhotometry).where(RawPhotometry.id == raw.id))
        session.commit()
    summary = b.run()
    assert summary.counts["downloaded"] == 0 and summary.counts["failed"] == 0
    with Session() as session:
        assert _raw_of_project(session, "second")["S1"].filename == raw.filename
