"""The consistency checker: every kind of problem is found, repaired, and the next run completes."""

from __future__ import annotations

import sqlalchemy as sa

from skyretriever import storage
from skyretriever.checker import check_project
from skyretriever.cli import main
from skyretriever.database import Session
from skyretriever.models import HistogramBatch, Lightcurve, Properties, RawPhotometry, Source
from tests.helpers import snapshot


def _finished(project_factory, **kwargs):
    project = project_factory(**kwargs)
    project.run()
    return project, snapshot(project)


def _damage(path) -> None:
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))


def test_a_finished_project_is_consistent(project_factory):
    project, _ = _finished(project_factory)
    report = check_project(project)
    assert report.clean, str(report)
    assert report.files_checked > 20 and report.rows_checked > 20
    assert "consistent" in str(report)


def test_every_kind_of_problem_is_found_and_repaired(project_factory):
    project, reference = _finished(project_factory)
    with Session() as session:
        raws = session.scalars(sa.select(RawPhotometry).where(~RawPhotometry.is_empty)).all()
        lost_raw, damaged_raw, orphan_raw = raws[0], raws[1], raws[2]
        damaged_lc = session.scalars(sa.select(Lightcurve).join(Source).where(
            Source.name == raws[3].source_name)).first()
        lost_lc = session.scalars(sa.select(Lightcurve).join(Source).where(
            Source.name == raws[4].source_name)).first()
        wrong = session.scalars(sa.select(Properties).join(Source).where(
            Source.name == raws[5].source_name)).one()
        wrong.cfg_hash = "f" * 64
        session.delete(orphan_raw)                         # a file no row points at
        session.commit()
        done_without_properties = session.scalars(sa.select(Source).where(
            Source.name == raws[6].source_name)).one()
        session.delete(done_without_properties.properties)
        session.commit()
    lost_raw.get_fullname().unlink()
    _damage(damaged_raw.get_fullname())
    _damage(damaged_lc.get_fullname())
    lost_lc.get_fullname().unlink()
    orphan_reduced = storage.full_path(
        f"{storage.project_path(project.context.folder)}/RA000/DEMO_photometry_x_reduced.h5")
    orphan_reduced.parent.mkdir(parents=True, exist_ok=True)
    orphan_reduced.write_bytes(b"not really")
    dead = storage.data_root() / storage.TEMP_FOLDER / f"{storage._HOST}.999999999"
    dead.mkdir(parents=True)
    (dead / "half.h5.0000.tmp").write_bytes(b"half")
    with Session() as session:                               # a batch the file does not hold
        session.add(HistogramBatch(project=project.context.name, cfg_hash=project.context.cfg_hash,
                                   name="analysis", num_sources=0, counts={}))
        session.commit()

    report = check_project(project)
    kinds = report.counts()
    # Deleting the raw row also deleted its light curves (foreign key cascade): their reduced
    # file has no rows now, and that source is done without raw data.
    # The raw file without its row and the reduced file whose rows went are readable: a run
    # takes them up, so they are reported apart; the reduced file of junk is a problem.
    assert kinds == {"missing file": 2, "checksum mismatch": 2, "file without row": 1,
                     "raw file a run will adopt": 1, "reduced file a run will write again": 1,
                     "temporary file": 1, "wrong config hash": 1, "inconsistent source": 2,
                     "histogram": 1}, str(report)
    assert {f.kind for f in report.pending} == {"raw file a run will adopt",
                                                "reduced file a run will write again"}
    assert len(report.problems) == 10 and not report.clean
    text = str(report)
    assert lost_raw.filename in text and damaged_lc.filename in text
    assert "found 10 problem(s)" in text and "wrong config hash" in text
    assert "left by an interrupted run, not problems: 1 raw file a run will adopt" in text
    assert orphan_raw.filename not in text          # counted, not listed, without --repair

    repaired = check_project(project, repair=True)
    assert repaired.counts() == kinds
    assert all(finding.repair and finding.fixed for finding in repaired.findings)
    assert repaired.clean and "all repaired" in str(repaired)
    by_kind = {finding.kind: finding for finding in repaired.findings}
    assert by_kind["raw file a run will adopt"].where == orphan_raw.filename
    assert by_kind["raw file a run will adopt"].repair == (
        f"re-linked as raw data of source {orphan_raw.source_name!r}")
    assert "re-linked" in str(repaired) and "deleted" in str(repaired)
    assert not dead.exists() and not orphan_reduced.exists()
    # nothing deleted: what repair took away is in the quarantine folder, as each finding says
    root = storage.data_root()
    quarantined = {p.relative_to(root).as_posix() for p in
                   (root / storage.QUARANTINE_FOLDER).rglob("*") if p.is_file()}
    said = {text.split("moved to ")[1].split(";")[0] for text in
            (finding.repair for finding in repaired.findings) if "moved to " in text}
    moved_files = {p for p in quarantined if any(p == s or p.startswith(f"{s}/") for s in said)}
    assert moved_files == quarantined and len(said) == 5, (said, quarantined)
    assert {p.split("/", 2)[2] for p in quarantined} >= {
        damaged_raw.filename, damaged_lc.filename,
        orphan_reduced.relative_to(root).as_posix(),
        f"{storage.TEMP_FOLDER}/{dead.name}/half.h5.0000.tmp"}, quarantined
    by_where = {finding.where: finding.repair for finding in repaired.findings}
    assert by_where[damaged_raw.filename].startswith(f"moved to {storage.QUARANTINE_FOLDER}/")
    assert by_where[damaged_raw.filename].endswith(
        f"{damaged_raw.filename}; row deleted, source marked to download again")

    summary = project.run()
    assert summary.counts["failed"] == 0
    assert summary.counts["downloaded"] == 2                # the lost and the damaged raw files
    assert check_project(project).clean
    after = snapshot(project)
    assert after == reference                               # histograms not counted twice


def test_check_command_exit_status(project_factory, tmp_path, database_url, data_root, capsys):
    config = tmp_path / "check.yaml"
    config.write_text(
        "project: {name: checked, progress: false}\n"
        f"database: {{url: \"{database_url}\"}}\ndata_root: \"{data_root}\"\n"
        "catalog: {default: test, num_sources: 6}\nexecution: {scheduler: serial}\n")
    assert main(["run", str(config)]) == 0
    assert main(["check", str(config)]) == 0
    assert "consistent" in capsys.readouterr().out
    with Session() as session:
        raw = session.scalars(sa.select(RawPhotometry).where(~RawPhotometry.is_empty)).first()
    raw.get_fullname().unlink()
    assert main(["check", str(config), "--no-checksums"]) == 4
    assert "missing file" in capsys.readouterr().out
    assert main(["check", str(config), "--repair"]) == 0      # every problem repaired
    assert "marked to download again" in capsys.readouterr().out
    assert main(["run", str(config)]) == 0
    assert main(["check", str(config)]) == 0


def test_files_an_interrupted_run_left_are_not_problems(project_factory, tmp_path, database_url,
                                                       data_root, capsys):
    # What Ctrl-C between a batch's files and its commit leaves: files with no rows yet.
    config = tmp_path / "left.yaml"
    config.write_text(
        "project: {name: left, progress: false}\n"
        f"database: {{url: \"{database_url}\"}}\ndata_root: \"{data_root}\"\n"
        "catalog: {default: test, num_sources: 4}\nexecution: {scheduler: serial}\n")
    assert main(["run", str(config)]) == 0
    with Session() as session:
        raw = session.scalars(sa.select(RawPhotometry).where(~RawPhotometry.is_empty)).first()
        session.delete(raw)                 # its light curves go too (the foreign key cascades)
        for source in session.scalars(sa.select(Source).where(Source.name == raw.source_name)):
            source.status = "new"           # the batch's commit never came
        session.commit()
    capsys.readouterr()
    assert main(["check", str(config)]) == 0
    out = capsys.readouterr().out
    assert "no problems" in out and "found" not in out
    assert ("left by an interrupted run, not problems: 1 raw file a run will adopt, "
            "1 reduced file a run will write again") in out
    assert main(["check", str(config), "--repair"]) == 0
    out = capsys.readouterr().out
    assert f"raw file a run will adopt: {raw.filename}" in out
    assert f"re-linked as raw data of source {raw.source_name!r}" in out
    assert main(["run", str(config)]) == 0
    assert main(["check", str(config)]) == 0
    assert "consistent" in capsys.readouterr().out
