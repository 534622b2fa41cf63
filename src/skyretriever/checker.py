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
- ``histogram``: a histogram file that lacks committed batches or holds unknown ones;
- ``raw images without sector rows``: a ``raw_images`` row with a file but no
  ``raw_image_sectors`` rows (written before migration ``0009_image_sectors``);
  the repair makes them from the file.

Files an interrupted run left behind are reported apart, not as problems:
readable raw data no row points at (the next run adopts it for its source, as
``--repair`` does now) and readable reduced files no row points at (the next run
writes them again). ``file without row`` is left for files that are neither.

- ``symbolic link``: a link inside the data root that leads out of it (never followed).

With ``repair=True`` it fixes what can be fixed and says, file by file, what it
did: rows of missing or damaged files are deleted and their sources marked for
the next run to make again (raw data is downloaded again), raw files without rows
are re-linked (as :meth:`VirtualObservatory.populate_sources` does), rows of a
wrong config hash are deleted, and histogram files are folded or rebuilt from the
committed batches (a damaged one too).

A repair never destroys a file: what it would delete (a damaged product, a file
no row points at that cannot be re-linked, a dead writer's temporary folder, an
unreadable histogram) is moved to ``DATA_ROOT/quarantine/<time>-<pid>/<relative
path>``. It touches only files named as skyretriever names its products (raw
files of the project's observatories, reduced files in the project's folder,
the temporary folders ``DATA_ROOT/.tmp/<writer>`` of writers that no longer hold
their lock); never another file (``notes.tmp``), a file that any row of any
project points at, or anything behind a symbolic link. It holds the data root's
lock alone, so it refuses to start while a run uses the data root (and runs
refuse to start while it repairs).

Examples
--------
>>> from skyretriever import Project
>>> from skyretriever.checker import check_project
>>> report = check_project(Project(cfg_file="configs/demo.yaml"))         # doctest: +SKIP
>>> report.clean                                                          # doctest: +SKIP
True
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyretriever import database, queries, storage
from skyretriever.analysis.histogram import Histogram, HistogramFileError
from skyretriever.models import Detection, Lightcurve, Properties, RawImages, RawPhotometry

__all__ = ["CheckReport", "Finding", "check_project"]

log = logging.getLogger(__name__)

#: What a repair step does: returns what it did (or None to keep the finding's planned text).
Action = Callable[[], "str | None"]


@dataclass
class Finding:
    """One problem: what kind, where, the details, and what the repair did (if it ran)."""

    kind: str
    where: str
    detail: str
    repair: str | None = None
    #: A file an interrupted run left that the next run takes up: not a problem.
    pending: bool = False
    #: The repair ran (``--repair``): what the finding was is no longer so.
    fixed: bool = False

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
    def problems(self) -> list[Finding]:
        """The findings that are problems (files a run will take up are not)."""
        return [finding for finding in self.findings if not finding.pending]

    @property
    def pending(self) -> list[Finding]:
        """Files an interrupted run left that the next run takes up."""
        return [finding for finding in self.findings if finding.pending]

    @property
    def clean(self) -> bool:
        """No problem is left: none was found, or the repair fixed every one."""
        return all(finding.fixed for finding in self.problems)

    def counts(self) -> Counter:
        return Counter(finding.kind for finding in self.findings)

    def __str__(self) -> str:
        checked = f"{self.rows_checked} rows and {self.files_checked} files"
        if not self.findings:
            return f"consistent: {checked} agree"
        repairing = any(finding.repair for finding in self.findings)
        # Problems one per line; files a run takes up one per line only when repaired
        # (each says what was done), else counted.
        lines = [str(finding) for finding in self.problems]
        if repairing:
            lines += [str(finding) for finding in self.pending]
        problems = Counter(finding.kind for finding in self.problems)
        if problems:
            summary = ", ".join(f"{n} {kind}" for kind, n in sorted(problems.items()))
            left = sum(not finding.fixed for finding in self.problems)
            state = (f"; {left} not repaired" if left else "; all repaired") if repairing else ""
            lines.append(f"found {len(self.problems)} problem(s): {summary}{state} "
                         f"({checked} checked)")
        else:
            lines.append(f"no problems: {checked} checked")
        pending = Counter(finding.kind for finding in self.pending)
        if pending:
            what = ", ".join(f"{n} {kind}" for kind, n in sorted(pending.items()))
            then = ("taken up now" if repairing else
                    "the next run takes them up; check --repair does it now")
            lines.append(f"left by an interrupted run, not problems: {what} ({then})")
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
        self.actions: list[tuple[Finding, Action]] = []
        self.after_commit: list[tuple[Finding, Action]] = []
        self.quarantine_batch = storage.quarantine_batch()
        self.session = None
        # Files that a row of any project points at: a repair never moves them.
        self.raw_files: set[str] = set()
        self.reduced_files: set[str] = set()
        self.links: set[Path] = set()

    def add(self, kind: str, where: str | Path, detail: str, repair: str | None = None,
            action: Action | None = None, after_commit: bool = False,
            pending: bool = False) -> None:
        """Record a finding, and the action that repairs it (run after every check)."""
        if isinstance(where, Path):
            where = self.relative(where)
        finding = Finding(kind, where, detail, repair if self.repair else None, pending)
        self.report.findings.append(finding)
        if action is not None:
            (self.after_commit if after_commit else self.actions).append((finding, action))

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) \
            else str(path)

    def quarantine(self, path: Path) -> str:
        """Move a file or folder to the quarantine folder; says where it went."""
        moved = storage.quarantine(path, self.quarantine_batch)
        return f"moved to {self.relative(moved)}"

    def quarantine_if_there(self, filename: str | None) -> str:
        """Quarantine a product file that is still on disk (damaged): ``"moved to ...; "``."""
        if not filename:
            return ""
        try:
            path = storage.full_path(filename)
        except storage.StorageError:          # behind a link out of the root: left alone
            return ""
        return f"{self.quarantine(path)}; " if path.is_file() and not path.is_symlink() else ""

    def link_finding(self, path: Path) -> None:
        if path in self.links:             # a folder shared by raw and reduced files: once
            return
        self.links.add(path)
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(Path(os.path.realpath(self.root))):
            self.add("symbolic link", path, f"leads out of the data root, to {str(real)!r}",
                     "left alone (not followed; runs refuse to write through it)")

    def file_problem(self, filename: str, checksum: str | None, size: int | None,
                     cache: dict[str, str | None]) -> str | None:
        """None when the file is intact; otherwise what is wrong (cached per file)."""
        if filename in cache:
            return cache[filename]
        self.report.files_checked += 1
        try:
            path = storage.full_path(filename)
        except storage.StorageError:          # through a link out of the root: not ours
            cache[filename] = "missing file"
            return "missing file"
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
        rows = [(model, row) for name in self.observatories
                for model in [self._raw_model(name)]
                for row in queries.raw_file_rows(session, [name], model)]
        self.report.rows_checked += len(rows)
        for model, (raw_id, name, observatory, filename, checksum, size) in rows:
            problem = self.file_problem(filename, checksum, size, cache) if filename else (
                "missing file")
            if problem:
                self.add(problem, filename or f"raw data of {name!r} ({observatory})",
                         f"raw data of source {name!r} ({observatory})",
                         "row deleted, source marked to download again",
                         lambda raw_id=raw_id, name=name, filename=filename, model=model:
                         self._forget_raw(raw_id, name, filename, model))

    def check_image_sectors(self, session) -> None:
        names = [name for name in self.observatories
                 if self._raw_model(name) is RawImages]
        if not names:
            return
        for raw_id, name, filename in queries.raw_images_without_sectors(session, names):
            self.add("raw images without sector rows", filename,
                     f"raw images of source {name!r} have no raw_image_sectors rows (made "
                     "before they existed)", "sector rows made from the file",
                     lambda raw_id=raw_id: self._make_image_sectors(raw_id))

    def _make_image_sectors(self, raw_id: int) -> str:
        row = queries.by_id(self.session, RawImages, raw_id)
        if row is None:                      # deleted by another repair (its file is damaged)
            return "left alone: the row was deleted (its file is damaged)"
        try:
            row.load()
        except storage.StorageError as error:
            return f"left alone: {error}"
        row.compute_summaries()
        return f"{len(row.sector_rows)} sector row(s) made from the file"

    def _raw_model(self, observatory: str) -> type:
        """The raw table of an observatory's data type (raw_photometry, raw_images)."""
        return self.project.observatories[observatory].raw_class

    def _forget_raw(self, raw_id: int, name: str, filename: str | None,
                    model: type = RawPhotometry) -> str:
        moved = self.quarantine_if_there(filename)
        self.redo_sources |= set(queries.sources_using_raw(self.session, raw_id, model))
        queries.delete_raw_row(self.session, raw_id, model)
        return f"{moved}row deleted, source marked to download again"

    def check_lightcurve_rows(self, session) -> None:
        cache: dict[str, str | None] = {}
        rows = queries.lightcurve_file_rows(session, self.context)
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

    def _forget_lightcurves(self, source_id: int, filename: str | None) -> str:
        moved = self.quarantine_if_there(filename)
        queries.delete_lightcurves_in_file(self.session, source_id, filename)
        self.redo_sources.add(source_id)
        return f"{moved}rows deleted, source marked to reduce again"

    # -- files against rows ----------------------------------------------------------------
    def known_files(self, session) -> None:
        """The files rows of any project point at (shared folders hold others' files)."""
        self.raw_files = set().union(*(queries.raw_filenames(session, model) for model in
                                       {RawPhotometry, *map(self._raw_model, self.observatories)}))
        self.reduced_files = queries.lightcurve_filenames(session)

    def check_raw_files(self, session) -> None:
        for observatory in self.observatories:
            # only names skyretriever gives raw files: never a reduced file or another file
            data_type = self.project.observatories[observatory].data_type
            for relative in storage.raw_files(observatory, on_link=self.link_finding,
                                              data_type=data_type):
                self.report.files_checked += 1
                if relative in self.raw_files or relative in self.reduced_files:
                    continue
                raw = self._raw_model(observatory).from_file(relative)
                if raw is not None and str(raw.observatory).lower() == observatory.lower():
                    self.add("raw file a run will adopt", relative,
                             f"raw data of source {raw.source_name!r} no row points at yet",
                             "re-linked (row made from the file)",
                             lambda relative=relative, observatory=observatory:
                             self._relink_raw(relative, observatory), pending=True)
                    continue
                self.add("file without row", relative, "raw data no row points at",
                         "moved to the quarantine folder (not readable raw data of this "
                         "observatory)",
                         lambda relative=relative, observatory=observatory:
                         self._relink_raw(relative, observatory))

    def _relink_raw(self, relative: str, observatory: str) -> str:
        model = self._raw_model(observatory)
        raw = model.from_file(relative)
        values = None if raw is None else raw.column_values()
        if values is None or str(values["observatory"]).lower() != observatory.lower():
            what = "unreadable" if values is None else f"raw data of {values['observatory']}"
            return f"{what}: {self.quarantine(storage.full_path(relative))}"
        queries.save_raw_row(self.session, values, model)
        # Sources of that name in this project run again, and find it if it is their target.
        self.redo_sources |= set(queries.source_ids_named(self.session, self.context,
                                                          values["source_name"]))
        return f"re-linked as raw data of source {values['source_name']!r}"

    def check_reduced_files(self, session) -> None:
        folder = self.project.output_folder
        for relative in storage.walk_files(folder, on_link=self.link_finding):
            if not storage.is_reduced_filename(relative, self.relative(folder)):
                continue
            self.report.files_checked += 1
            if relative in self.reduced_files or relative in self.raw_files:
                continue
            if _readable(relative):
                self.add("reduced file a run will write again", relative,
                         "light curves no row points at (the next run reduces the source "
                         "again)", "moved to the quarantine folder",
                         lambda relative=relative: self.quarantine(storage.full_path(relative)),
                         pending=True)
                continue
            self.add("file without row", relative, "reduced light curves no row points at",
                     "moved to the quarantine folder (the next run reduces again where needed)",
                     lambda relative=relative: self.quarantine(storage.full_path(relative)))

    def check_temporary_files(self) -> None:
        """Only the writers' folders ``DATA_ROOT/.tmp/<writer>``, and only dead writers'."""
        base = self.root / storage.TEMP_FOLDER
        if base.is_symlink() or not base.is_dir():
            return
        for folder in sorted(base.iterdir()):
            if folder.is_symlink() or not folder.is_dir() or storage.writer_alive(folder):
                continue
            left = [p for p in folder.iterdir() if p.name != storage.WRITER_LOCK]
            if not left:          # an empty folder of a finished process: the next run clears it
                continue
            self.add("temporary file", folder,
                     f"{len(left)} file(s) half-written by a process that died",
                     "moved to the quarantine folder",
                     lambda folder=folder: self.quarantine(folder))

    # -- rows against rows -----------------------------------------------------------------
    def check_config_hashes(self, session) -> None:
        for model, label in ((Lightcurve, "light curve"), (Properties, "properties"),
                             (Detection, "detection")):
            wrong = queries.rows_of_another_configuration(session, self.context, model)
            self.report.rows_checked += len(wrong)
            for row_id, source_id in wrong:
                self.add("wrong config hash", f"{model.__tablename__} row {row_id}",
                         f"{label} made with another configuration than its source",
                         "row deleted, source marked for the next run",
                         lambda model=model, row_id=row_id, source_id=source_id:
                         self._forget_row(model, row_id, source_id))

    def _forget_row(self, model: type, row_id: int, source_id: int) -> None:
        queries.delete_row(self.session, model, row_id)
        self.redo_sources.add(source_id)

    def check_done_sources(self, session) -> None:
        done = queries.done_sources(session, self.context)
        self.report.rows_checked += len(done)
        with_properties = queries.project_analysed_source_ids(session, self.context)
        raw_counts = Counter(queries.raw_link_source_ids(session, self.context,
                                                         self.observatories))
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
        committed = set(queries.histogram_batch_ids(session, self.context, name))
        self.report.files_checked += int(path.exists())
        try:
            held = Histogram.load(path).batch_ids if path.exists() else set()
        except HistogramFileError as error:
            self.add("histogram", path, str(error).replace(f"{str(path)!r} ", ""),
                     f"moved to the quarantine folder, rebuilt from the {len(committed)} "
                     "committed batch(es)", lambda: self._rebuild_histogram(path),
                     after_commit=True)
            return
        unknown, lacking = held - committed, committed - held
        if unknown:
            self.add("histogram", path,
                     f"holds {len(unknown)} batch(es) the database does not have",
                     f"moved to the quarantine folder, rebuilt from the {len(committed)} "
                     "committed batch(es)", lambda: self._rebuild_histogram(path),
                     after_commit=True)
        elif lacking:
            self.add("histogram", path, f"lacks {len(lacking)} committed batch(es)",
                     "folded them in", self.project.update_histograms, after_commit=True)

    def _rebuild_histogram(self, path: Path) -> str:
        moved = self.quarantine(path) if path.exists() else "was missing"
        batches = len(self.project.update_histograms().batch_ids)
        return f"{moved}; rebuilt from the {batches} committed batch(es)"

    def _apply(self, steps: list[tuple[Finding, Action]]) -> None:
        for finding, action in steps:
            done = action()
            if isinstance(done, str):
                finding.repair = done
            finding.fixed = True

    def run(self) -> CheckReport:
        """Find everything first (as a plain check would), then apply the repairs."""
        with database.Session() as session:
            self.session = session
            self.known_files(session)
            self.check_temporary_files()
            self.check_raw_rows(session)
            self.check_image_sectors(session)
            self.check_lightcurve_rows(session)
            self.check_raw_files(session)
            self.check_reduced_files(session)
            self.check_config_hashes(session)
            self.check_done_sources(session)
            self.check_histograms(session)
            if not self.repair:
                return self.report
            self._apply(self.actions)
            if self.redo_sources:
                queries.mark_for_redo(session, list(self.redo_sources),
                                      "marked by skyretriever check --repair")
            session.commit()
            self._apply(self.after_commit)
        for finding in self.report.findings:
            if finding.repair:
                log.info("repair: %s", finding)
        return self.report


def _readable(relative: str) -> bool:
    """Whether a product file opens and its tables read (checksums are the rows' business)."""
    try:
        keys = storage.read_table_keys(relative)
        return bool(keys) and all(storage.read_table(relative, key) is not None for key in keys)
    except Exception:  # any damage: the file is not one a run wrote whole
        return False


def check_project(project: Any, repair: bool = False, checksums: bool = True) -> CheckReport:
    """Check (and with ``repair``, fix) a project's rows and files; see the module docstring.

    ``checksums=False`` compares file sizes only, which is much faster on big data roots.

    Raises
    ------
    skyretriever.storage.DataRootBusy
        With ``repair``, when a run (or another repair) uses the data root: the repair
        does not start.
    """
    if not repair:
        database.upgrade()
        return _Checker(project, repair, checksums).run()
    with storage.data_root_lock(f"check --repair of project {project.pars.name!r}",
                                exclusive=True):
        database.upgrade()
        return _Checker(project, repair, checksums).run()
