"""The consistency checker: do the database and the data root agree?

``skyretriever check CONFIG [--repair]`` looks at one project (its sources,
light curves, analysis rows, reduced files and histograms) and at the raw data
of its observatories, and reports:

- ``missing file``: a row whose file is not on disk;
- ``checksum mismatch``: a file whose size or SHA-256 differs from its row;
- ``file without row``: a product file no row points at;
- ``temporary file``: a file half-written by a process that has died;
- ``wrong config hash``: a row whose config hash differs from its source's;
- ``inconsistent source``: a source marked done whose products are not all there;
- ``histogram``: a histogram file that lacks committed batches or holds unknown ones.

With ``repair=True`` it fixes what can be fixed and says what it did: rows of
missing or damaged files are deleted and their sources marked for the next run
to make again (raw data is downloaded again), raw files without rows are
re-linked (as :meth:`VirtualObservatory.populate_sources` does) or deleted when
unreadable, reduced files without rows and dead writers' temporary files are
deleted, rows of a wrong config hash are deleted, and histogram files are
folded or rebuilt from the committed batches.

Examples
--------
>>> from skyretriever import Project
>>> from skyretriever.checker import check_project
>>> report = check_project(Project(cfg_file="configs/demo.yaml"))         # doctest: +SKIP
>>> report.clean                                                          # doctest: +SKIP
True
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from skyretriever import database, storage
from skyretriever.analysis.histogram import Histogram
from skyretriever.models import (
    Detection,
    HistogramBatch,
    Lightcurve,
    Properties,
    RawPhotometry,
    Source,
    SourceRawData,
)
from skyretriever.observatories.base import raw_identity_filter
from skyretriever.pipeline import raw_row_from_file

__all__ = ["CheckReport", "Finding", "check_project"]

#: Temporary folders of other hosts are only removed once this old (their writer may be alive).
FOREIGN_TEMPORARY_AGE = 24 * 3600


@dataclass
class Finding:
    """One problem: what kind, where, the details, and what the repair did (if it ran)."""

    kind: str
    where: str
    detail: str
    repair: str | None = None

    def __str__(self) -> str:
        text = f"{self.kind}: {self.where}: {self.detail}"
        return f"{text} -> {self.repair}" if self.repair else text


@dataclass
class CheckReport:
    """Everything one check found, and what it repaired."""

    findings: list[Finding] = field(default_factory=list)
    files_checked: int = 0
    rows_checked: int = 0

    @property
    def clean(self) -> bool:
        return not self.findings

    def counts(self) -> Counter:
        return Counter(finding.kind for finding in self.findings)

    def __str__(self) -> str:
        if self.clean:
            return (f"consistent: {self.rows_checked} rows and {self.files_checked} files "
                    "agree")
        lines = [str(finding) for finding in self.findings]
        summary = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts().items()))
        lines.append(f"found {len(self.findings)} problem(s): {summary} "
                     f"({self.rows_checked} rows and {self.files_checked} files checked)")
        return "\n".join(lines)


class _Checker:
    def __init__(self, project: Any, repair: bool, checksums: bool) -> None:
        self.project = project
        self.repair = repair
        self.checksums = checksums
        self.report = CheckReport()
        self.context = project.context
        self.root = storage.data_root()
        self.observatories = list(project.observatories)
        self.redo_sources: set[int] = set()
        self.actions: list[Callable[[], None]] = []
        self.session = None

    def add(self, kind: str, where: str | Path, detail: str, repair: str | None = None,
            action: Callable[[], None] | None = None) -> None:
        """Record a finding, and the action that repairs it (run after every check)."""
        if isinstance(where, Path):
            where = where.relative_to(self.root).as_posix() if where.is_relative_to(
                self.root) else str(where)
        self.report.findings.append(Finding(kind, where, detail, repair if self.repair else None))
        if action is not None:
            self.actions.append(action)

    def file_problem(self, filename: str, checksum: str | None, size: int | None,
                     cache: dict[str, str | None]) -> str | None:
        """None when the file is intact; otherwise what is wrong (cached per file)."""
        if filename in cache:
            return cache[filename]
        path = storage.full_path(filename)
        self.report.files_checked += 1
        if not path.exists():
            problem = "missing file"
        elif size is not None and path.stat().st_size != size:
            problem = "checksum mismatch"
        elif self.checksums and checksum is not None and storage.file_sha256(path) != checksum:
            problem = "checksum mismatch"
        else:
            problem = None
        cache[filename] = problem
        return problem

    # -- rows against files ----------------------------------------------------------------
    def check_raw_rows(self, session) -> None:
        cache: dict[str, str | None] = {}
        rows = session.execute(sa.select(
            RawPhotometry.id, RawPhotometry.source_name, RawPhotometry.observatory,
            RawPhotometry.filename, RawPhotometry.checksum, RawPhotometry.file_size,
        ).where(RawPhotometry.observatory.in_(self.observatories),
                RawPhotometry.is_empty.is_(False))).all()
        self.report.rows_checked += len(rows)
        for raw_id, name, observatory, filename, checksum, size in rows:
            problem = self.file_problem(filename, checksum, size, cache) if filename else (
                "missing file")
            if problem:
                self.add(problem, filename or f"raw data of {name!r} ({observatory})",
                         f"raw data of source {name!r} ({observatory})",
                         "row deleted, source marked to download again",
                         lambda raw_id=raw_id, name=name, filename=filename:
                         self._forget_raw(raw_id, name, filename))

    def _forget_raw(self, raw_id: int, name: str, filename: str | None) -> None:
        if filename:
            storage.full_path(filename).unlink(missing_ok=True)
        self.redo_sources |= set(self.session.scalars(sa.select(SourceRawData.source_id).where(
            SourceRawData.raw_id == raw_id)))
        self.session.execute(sa.delete(RawPhotometry).where(RawPhotometry.id == raw_id))

    def check_lightcurve_rows(self, session) -> None:
        cache: dict[str, str | None] = {}
        rows = session.execute(
            sa.select(Lightcurve.id, Lightcurve.source_id, Lightcurve.filename,
                      Lightcurve.checksum, Lightcurve.file_size, Source.name)
            .join(Source).where(Source.project == self.context.name,
                                Source.cfg_hash == self.context.cfg_hash)
        ).all()
        self.report.rows_checked += len(rows)
        reported: set[str | None] = set()
        for _lc_id, source_id, filename, checksum, size, name in rows:
            problem = self.file_problem(filename, checksum, size, cache) if filename else (
                "missing file")
            if problem and filename not in reported:
                reported.add(filename)
                self.add(problem, filename or f"light curves of {name!r}",
                         f"light curves of source {name!r}",
                         "rows deleted, source marked to reduce again",
                         lambda source_id=source_id, filename=filename:
                         self._forget_lightcurves(source_id, filename))

    def _forget_lightcurves(self, source_id: int, filename: str | None) -> None:
        if filename:
            storage.full_path(filename).unlink(missing_ok=True)
        self.session.execute(sa.delete(Lightcurve).where(
            Lightcurve.source_id == source_id,
            Lightcurve.filename == filename if filename else Lightcurve.filename.is_(None)))
        self.redo_sources.add(source_id)

    # -- files against rows ----------------------------------------------------------------
    def check_raw_files(self, session) -> None:
        for observatory in self.observatories:
            folder = self.root / storage.RAW_FOLDER / observatory.upper()
            if not folder.exists():
                continue
            known = set(session.scalars(sa.select(RawPhotometry.filename).where(
                RawPhotometry.observatory == observatory, RawPhotometry.filename.is_not(None))))
            for path in sorted(folder.glob(f"RA*/{observatory.upper()}_photometry_*.h5")):
                self.report.files_checked += 1
                relative = path.relative_to(self.root).as_posix()
                if relative in known:
                    continue
                self.add("file without row", path, "raw data no row points at",
                         "re-linked (row made from the file), or deleted if unreadable",
                         lambda relative=relative: self._relink_raw(relative))

    def _relink_raw(self, relative: str) -> None:
        values = raw_row_from_file(relative)
        if values is None:
            storage.full_path(relative).unlink(missing_ok=True)
            return
        session = self.session
        existing = session.scalar(sa.select(RawPhotometry).where(*raw_identity_filter(values)))
        if existing is None:
            session.add(RawPhotometry(**values))
        else:
            for key, value in values.items():
                setattr(existing, key, value)
        session.flush()
        # Sources of that name in this project run again, and find it if it is their target.
        self.redo_sources |= set(session.scalars(sa.select(Source.id).where(
            Source.project == self.context.name, Source.cfg_hash == self.context.cfg_hash,
            Source.name == values["source_name"])))

    def check_reduced_files(self, session) -> None:
        folder = self.root / storage.project_path(self.context.folder)
        if not folder.exists():
            return
        known = set(session.scalars(sa.select(Lightcurve.filename).join(Source).where(
            Source.project == self.context.name, Source.cfg_hash == self.context.cfg_hash)))
        for path in sorted(folder.glob("RA*/*_reduced.h5")):
            self.report.files_checked += 1
            if path.relative_to(self.root).as_posix() not in known:
                self.add("file without row", path, "reduced light curves no row points at",
                         "deleted (the next run reduces again where needed)",
                         lambda path=path: path.unlink(missing_ok=True))

    def check_temporary_files(self) -> None:
        base = self.root / storage.TEMP_FOLDER
        folders = [f for f in base.iterdir() if f.is_dir()] if base.exists() else []
        for folder in folders:
            files = [f for f in folder.iterdir() if f.is_file()]
            alive = storage.writer_alive(folder.name)
            if alive or not files:
                continue
            age = time.time() - max(f.stat().st_mtime for f in files)
            if alive is None and age < FOREIGN_TEMPORARY_AGE:
                self.add("temporary file", folder,
                         f"{len(files)} file(s) being written on another host (or left there); "
                         "left alone for a day")
                continue
            self.add("temporary file", folder,
                     f"{len(files)} file(s) half-written by a process that died", "deleted",
                     lambda folder=folder: shutil.rmtree(folder, ignore_errors=True))
        for path in self.root.rglob(f"*{storage.TEMP_SUFFIX}"):
            if path.is_file() and storage.TEMP_FOLDER not in path.relative_to(self.root).parts:
                self.add("temporary file", path, "half-written file beside a product",
                         "deleted", lambda path=path: path.unlink(missing_ok=True))

    # -- rows against rows -----------------------------------------------------------------
    def check_config_hashes(self, session) -> None:
        mine = (Source.project == self.context.name, Source.cfg_hash == self.context.cfg_hash)
        for model, label in ((Lightcurve, "light curve"), (Properties, "properties"),
                             (Detection, "detection")):
            wrong = session.execute(sa.select(model.id, model.source_id).join(Source).where(
                *mine, sa.or_(model.cfg_hash != Source.cfg_hash, model.project != Source.project)
            )).all()
            self.report.rows_checked += len(wrong)
            for row_id, source_id in wrong:
                self.add("wrong config hash", f"{model.__tablename__} row {row_id}",
                         f"{label} made with another configuration than its source",
                         "deleted, source marked for the next run",
                         lambda model=model, row_id=row_id, source_id=source_id:
                         self._forget_row(model, row_id, source_id))

    def _forget_row(self, model: type, row_id: int, source_id: int) -> None:
        self.session.execute(sa.delete(model).where(model.id == row_id))
        self.redo_sources.add(source_id)

    def check_done_sources(self, session) -> None:
        mine = (Source.project == self.context.name, Source.cfg_hash == self.context.cfg_hash)
        done = session.execute(sa.select(Source.id, Source.name).where(
            *mine, Source.status == "done")).all()
        self.report.rows_checked += len(done)
        with_properties = set(session.scalars(sa.select(Properties.source_id).join(Source).where(
            *mine)))
        raw_counts = Counter(session.scalars(
            sa.select(SourceRawData.source_id).join(Source).where(
                *mine, SourceRawData.observatory.in_(self.observatories))))
        for source_id, name in done:
            missing = []
            if source_id not in with_properties:
                missing.append("properties")
            if raw_counts[source_id] < len(self.observatories):
                missing.append("raw data")
            if missing:
                self.add("inconsistent source", f"source {name!r}",
                         f"marked done but has no {' or '.join(missing)}",
                         "marked for the next run",
                         lambda source_id=source_id: self.redo_sources.add(source_id))

    def check_histograms(self, session) -> None:
        name = self.project.analysis.histogram_name
        path = self.project.histogram_path(name)
        committed = set(session.scalars(sa.select(HistogramBatch.id).where(
            HistogramBatch.project == self.context.name,
            HistogramBatch.cfg_hash == self.context.cfg_hash, HistogramBatch.name == name)))
        held = Histogram.load(path).batch_ids if path.exists() else set()
        self.report.files_checked += int(path.exists())
        unknown, lacking = held - committed, committed - held
        if unknown:
            self.add("histogram", path,
                     f"holds {len(unknown)} batch(es) the database does not have",
                     "rebuilt from the committed batches",
                     lambda: (path.unlink(missing_ok=True), self.project.update_histograms()))
        elif lacking:
            self.add("histogram", path, f"lacks {len(lacking)} committed batch(es)",
                     "folded them in", self.project.update_histograms)

    def run(self) -> CheckReport:
        """Find everything first (as a plain check would), then apply the repairs."""
        with database.Session() as session:
            self.session = session
            self.check_temporary_files()
            self.check_raw_rows(session)
            self.check_lightcurve_rows(session)
            self.check_raw_files(session)
            self.check_reduced_files(session)
            self.check_config_hashes(session)
            self.check_done_sources(session)
            self.check_histograms(session)
            if not self.repair:
                return self.report
            histogram_actions = self.actions[-1:] if self.report.findings and \
                self.report.findings[-1].kind == "histogram" else []
            for action in self.actions[: len(self.actions) - len(histogram_actions)]:
                action()
            if self.redo_sources:
                ids = list(self.redo_sources)
                session.execute(sa.delete(Detection).where(Detection.source_id.in_(ids)))
                session.execute(sa.delete(Properties).where(Properties.source_id.in_(ids)))
                session.execute(sa.update(Source).where(Source.id.in_(ids)).values(
                    status="new", error="marked by skyretriever check --repair"))
            session.commit()
            for action in histogram_actions:
                action()
        return self.report


def check_project(project: Any, repair: bool = False, checksums: bool = True) -> CheckReport:
    """Check (and with ``repair``, fix) a project's rows and files; see the module docstring.

    ``checksums=False`` compares file sizes only, which is much faster on big data roots.
    """
    database.upgrade()
    return _Checker(project, repair, checksums).run()
