"""Project: builds the catalog, observatories and analysis from parameters, and runs them.

Examples
--------
>>> from skyretriever import Project
>>> proj = Project(name="quick", obs_names=["demo"],
...                catalog_kwargs={"default": "test", "num_sources": 20})   # doctest: +SKIP
>>> summary = proj.run()                                                     # doctest: +SKIP
>>> summary.counts["done"]                                                   # doctest: +SKIP
20
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from skyretriever import database, queries, storage
from skyretriever._version import __version__
from skyretriever.analysis.analysis import Analysis, load_class
from skyretriever.analysis.classifier import model_class, save_model
from skyretriever.analysis.histogram import Histogram, HistogramFileError, update_histogram_file
from skyretriever.analysis.training import (
    Examples,
    evaluate,
    fit_model,
    make_examples,
    split_by_source,
)
from skyretriever.catalogs.catalog import Catalog, CatalogParameters
from skyretriever.catalogs.errors import CatalogError
from skyretriever.errors import (
    DiskFull,
    RunStopped,
    check_free_space,
    disk_full_from,
    free_megabytes,
    is_disk_full,
)
from skyretriever.execution import (
    ExecutionParameters,
    make_examples_in_processes,
    make_executor,
)
from skyretriever.fitsfile import validate_fits
from skyretriever.models import Lightcurve
from skyretriever.observatories.base import (
    OBSERVATORIES,
    ProjectContext,
    VirtualObservatory,
    _import_builtin_observatories,
    observatory_class,
)
from skyretriever.parameters import (
    ParameterError,
    Parameters,
    load_yaml,
    merge,
    parameter,
    unknown_key_message,
)
from skyretriever.pipeline import SourceResult, Worker, plan_batch, summarize, write_batch
from skyretriever.progress import progress_bar

__all__ = ["ConfigurationChanged", "Project", "ProjectParameters", "RunSummary"]

log = logging.getLogger(__name__)

SECTIONS = ("project", "database", "data_root", "catalog", "observatories", "analysis", "execution")
#: Examples a worker process makes at a time in `skyretriever train` (a few seconds of work).
_EXAMPLES_PER_CHUNK = 25
CONSTRUCTOR_KEYWORDS = ("catalog_kwargs", "obs_kwargs", "analysis_kwargs", "execution_kwargs",
                        "database_url", "data_root", "analysis_module", "analysis_class")


class ConfigurationChanged(ParameterError):
    """The project's products were made with other parameters, code or catalog than this run's.

    Without version control a project keeps one set of products in one folder;
    reusing them under another configuration would mix results made with
    different values. The message says what changed and how to go on.
    """


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b.c": value}`` (lists and scalars are leaves)."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def configuration_changes(old_text: str, new_text: str, most: int = 10) -> list[str]:
    """What differs between two ``config.yaml`` texts, one line per changed key.

    Examples
    --------
    >>> configuration_changes("a: {b: 1}\nc: 2\n", "a: {b: 3}\nc: 2\n")
    ['a.b: 1 -> 3']
    """
    try:
        old = _flatten(yaml.safe_load(old_text) or {})
    except yaml.YAMLError:
        return ["the recorded config.yaml cannot be read"]
    new = _flatten(yaml.safe_load(new_text) or {})
    missing = object()
    lines = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, missing), new.get(key, missing)
        if before != after:
            lines.append(f"{key}: {'(none)' if before is missing else _short(before)} -> "
                         f"{'(none)' if after is missing else _short(after)}")
    if len(lines) > most:
        lines = lines[:most] + [f"... and {len(lines) - most} more"]
    return lines


class ProjectParameters(Parameters):
    """Parameters of the project itself."""

    name: str = parameter(..., "Name of the project; names its output folder.", min_length=1)
    description: str = parameter("", "Free text describing the project.", critical=False)
    version_control: bool = parameter(
        False, "Keep products of each configuration apart, in a folder named by the config hash."
    )
    obs_names: list[str] = parameter(["demo"], "Observatories to use (demo, TESS, K2, Kepler, ZTF).",
                                     min_length=1)
    analysis_module: str | None = parameter(
        None, "Module of a custom Analysis class (e.g. extensions.my_analysis)."
    )
    analysis_class: str | None = parameter(None, "Name of the custom Analysis class in that module.")
    module_path: list[str] = parameter(
        [], "Folders searched first for analysis_module and for finders named 'module:Class' "
        "(relative to the config file's folder, like every path in it).", critical=False)
    progress: bool = parameter(True, "Show a progress bar during runs.", critical=False)
    verbose: bool = parameter(False, "Log every source's steps.", critical=False)

    @classmethod
    def prepare_input(cls, data: dict[str, Any]) -> dict[str, Any]:
        name = data.get("name")
        if isinstance(name, str) and storage.sanitize_name(name) != name:
            raise ValueError(
                f"name: project name {name!r} may only use letters, digits and . _ + - "
                "(it names a folder)"
            )
        return data


@dataclass
class FFIDownload:
    """What one bulk FFI download did (:meth:`Project.download_ffis`)."""

    files: int = 0
    downloaded: int = 0
    kept: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.files} FFI(s): {self.downloaded} downloaded, {self.kept} already there, "
                 f"{len(self.failures)} failed"]
        lines += [f"  {key}: {error}" for key, error in self.failures[:20]]
        return "\n".join(lines)


def _whole_fits(path: Path) -> bool:
    """Whether ``path`` is a complete FITS file (one left by a run that stopped before its row)."""
    if not path.exists():
        return False
    try:
        validate_fits(path)
    except ValueError:
        return False
    return True


@dataclass
class RunSummary:
    """What one run did: counts, failures with their reasons, and time spent."""

    project: str
    cfg_hash: str
    counts: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    statements: int = 0
    #: (sources committed so far, seconds since the run began) after each batch: the pace
    #: of a long run, to see whether it holds.
    progress: list[tuple[int, float]] = field(default_factory=list)
    #: What the run found about where it worked (a new data root, a database without the
    #: project's rows although its folder is in the data root).
    notes: list[str] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        return self.seconds.get("total", 0.0)

    def __str__(self) -> str:
        c = self.counts
        rate = c["sources"] / self.elapsed if self.elapsed > 0 else 0.0
        lines = [
            f"project {self.project} ({self.cfg_hash[:12] or 'no version control'}): "
            f"{c['sources']} sources in {self.elapsed:.1f} s ({rate:.1f} per second)",
            f"  done {c['done']}, skipped (already done) {c['skipped']}, empty {c['empty']}, "
            f"failed {c['failed']}",
            f"  downloads {c['downloaded']}, light curves reduced {c['reduced']}, "
            f"sources analysed {c['analyzed']}",
        ]
        if self.failures:
            lines.append("  failures:")
            lines += [f"    {name}: {reason}" for name, reason in self.failures[:20]]
            if len(self.failures) > 20:
                lines.append(f"    ... and {len(self.failures) - 20} more "
                             "(skyretriever status lists them)")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


class _ObservatoryDict(dict):
    """Observatories by name, looked up in any case."""

    def __getitem__(self, key: str) -> VirtualObservatory:
        try:
            return super().__getitem__(key.lower())
        except KeyError:
            raise KeyError(unknown_key_message(key, self.keys(), "observatory")) from None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


def _split_observatory_section(section: dict[str, Any], where: str
                               ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Common keys, and per-observatory sub-dictionaries (keys naming an observatory, any case)."""
    _import_builtin_observatories()
    common, per_observatory = {}, {}
    for key, value in (section or {}).items():
        if str(key).lower() in OBSERVATORIES:
            if not isinstance(value, dict):
                raise ParameterError(f"{where}.{key}: expected a mapping of parameters")
            per_observatory[str(key).lower()] = merge(per_observatory.get(str(key).lower()), value)
        else:
            common[key] = value
    return common, per_observatory


def _holding_the_data_root(run: Callable[..., RunSummary]) -> Callable[..., RunSummary]:
    """Hold the data root's shared lock around a run, so no repair works under it."""

    @functools.wraps(run)
    def locked(self: Project, *args: Any, **kwargs: Any) -> RunSummary:
        # A read-only or missing data root is said in one line before the lock is tried.
        _check_data_root(self.data_root)
        with storage.data_root_lock(f"a run of project {self.pars.name!r}"):
            return run(self, *args, **kwargs)

    return locked


class Project:
    """A catalog, the observatories to query for it, and the analysis to run on what they give.

    Parameters
    ----------
    name
        Names the project and its output folder (required unless ``cfg_file`` names it).
    cfg_file
        YAML configuration; default ``configs/<name>.yaml`` if that file exists.
        ``False`` reads no file.
    version_control, obs_names, analysis_module, analysis_class, ...
        Project parameters (see :class:`ProjectParameters`).
    catalog_kwargs, obs_kwargs, analysis_kwargs, execution_kwargs
        Parameters of the catalog, of every observatory, of the analysis, of execution.
    database_url, data_root
        Where rows and files go (default ``$SKYRETRIEVER_DB_URL`` or a SQLite file in
        the data root; ``$SKYRETRIEVER_DATA`` or ``./data``).
    **observatory_kwargs
        ``TESS={...}``, ``demo={...}``: parameters of one observatory (highest priority).

    Examples
    --------
    >>> proj = Project(name="quick", cfg_file=False, catalog_kwargs={"default": "test"},
    ...                obs_kwargs={"reducer": {"gap": 20}}, demo={"num_points": 50})
    >>> proj.observatories["demo"].pars.reducer.gap, proj.demo.pars.num_points
    (20.0, 50)
    """

    def __init__(self, name: str | None = None, cfg_file: str | os.PathLike | bool | None = None,
                 **kwargs: Any) -> None:
        config, self.cfg_file = self._read_config(name, cfg_file)
        #: Paths as the config file wrote them, where they name results (the catalog file):
        #: the config hash keeps the written text, so it does not change with the folder.
        self._written_paths: dict[str, tuple[str, str]] = {}
        #: The catalog's hash as a run recorded it (see :meth:`use_recorded_catalog`).
        self._recorded_catalog_hash: str | None = None
        self._recorded_catalog_rows: int | None = None
        if self.cfg_file is not None:
            config = self._paths_from_config_folder(config)
        unknown = [key for key in config if key not in SECTIONS]
        if unknown:
            raise ParameterError(
                f"{self.cfg_file}: " + unknown_key_message(unknown[0], SECTIONS, "section")
            )
        project_keys = set(ProjectParameters.model_fields)
        project_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in project_keys}
        if name is not None:
            project_kwargs["name"] = name
        observatory_kwargs = {k.lower(): kwargs.pop(k) for k in list(kwargs)
                              if k.lower() in OBSERVATORIES}
        constructor = {k: kwargs.pop(k) for k in list(kwargs) if k in CONSTRUCTOR_KEYWORDS}
        if kwargs:
            key = next(iter(kwargs))
            valid = [*project_keys, *CONSTRUCTOR_KEYWORDS, *(k.upper() for k in OBSERVATORIES)]
            raise ParameterError("Project: " + unknown_key_message(key, valid, "keyword argument"))
        for key in ("analysis_module", "analysis_class"):
            if key in constructor:
                project_kwargs[key] = constructor.pop(key)
        where = f"project section of {self.cfg_file}" if self.cfg_file else "project"
        if "name" not in project_kwargs and not (config.get("project") or {}).get("name"):
            raise ParameterError(
                "Project needs a name: Project(name=...) or 'project: {name: ...}' in the YAML file"
            )
        self.pars = ProjectParameters.build(config.get("project"), project_kwargs, where=where)
        self._configure_storage(config, constructor)
        for folder in reversed(self.pars.module_path):
            if folder not in sys.path:
                sys.path.insert(0, folder)

        source = f" of {self.cfg_file}" if self.cfg_file else ""
        self.catalog = Catalog(CatalogParameters.build(
            config.get("catalog"), constructor.get("catalog_kwargs"), where=f"catalog{source}"
        ))
        self.execution = ExecutionParameters.build(
            config.get("execution"), constructor.get("execution_kwargs"), where=f"execution{source}"
        )
        self.observatories = _ObservatoryDict()
        common, per_observatory = _split_observatory_section(
            config.get("observatories"), f"observatories{source}"
        )
        obs_common_kwargs, obs_per_kwargs = _split_observatory_section(
            constructor.get("obs_kwargs"), "obs_kwargs"
        )
        for obs_name in self.pars.obs_names:
            cls = observatory_class(obs_name)
            pars = cls.Parameters.build(
                common, obs_common_kwargs, per_observatory.get(cls.name),
                obs_per_kwargs.get(cls.name), observatory_kwargs.get(cls.name),
                where=f"observatories.{cls.name}{source}",
            )
            self.observatories[cls.name] = cls(pars)
        kinds = {obs.data_type: obs.name for obs in self.observatories.values()}
        if len(kinds) > 1:  # one analysis per source sees one kind of data
            raise ParameterError(
                f"project.obs_names{source}: the observatories download different data types ("
                + ", ".join(f"{name}: {kind}" for kind, name in kinds.items())
                + "); a project analyses one data type, so make one project per data type")
        # Sections of observatories the project does not use are checked too: a typo there
        # would otherwise wait silently until the observatory is added to obs_names.
        for name in sorted({*per_observatory, *obs_per_kwargs, *observatory_kwargs}
                           - set(self.observatories)):
            cls = observatory_class(name)
            cls.Parameters.build(per_observatory.get(name), obs_per_kwargs.get(name),
                                 observatory_kwargs.get(name),
                                 where=f"observatories.{cls.name}{source} (not in obs_names)")
        analysis_cls = self._analysis_class()
        self.analysis = analysis_cls(analysis_cls.Parameters.build(
            config.get("analysis"), constructor.get("analysis_kwargs"), where=f"analysis{source}"
        ))
        self._context: ProjectContext | None = None
        for obs in self.observatories.values():
            obs.project = self

    # -- construction helpers --------------------------------------------------------------
    @staticmethod
    def _read_config(name: str | None, cfg_file: Any) -> tuple[dict[str, Any], str | None]:
        if cfg_file is False:
            return {}, None
        if cfg_file is None or cfg_file is True:
            if name is None:
                return {}, None
            default = Path("configs") / f"{name}.yaml"
            if not default.exists():
                if cfg_file is True:
                    raise ParameterError(f"no configuration file {str(default)!r}")
                return {}, None
            cfg_file = default
        return load_yaml(cfg_file), str(cfg_file)

    def _paths_from_config_folder(self, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` with the relative paths it writes made relative to the config's folder.

        The data root, a SQLite database file, the catalog file and cache folder, the
        project's ``module_path`` and the classifier's ``model_file``. Paths given as
        keyword arguments or on the command line
        stay relative to the working folder, as do the defaults of what the file leaves out.
        """
        folder = Path(os.path.abspath(str(self.cfg_file))).parent

        def resolved(value: Any) -> Any:
            if not isinstance(value, str) or not value:
                return value
            path = Path(value).expanduser()
            return value if path.is_absolute() else os.path.normpath(folder / path)

        config = dict(config)
        if "data_root" in config:
            config["data_root"] = resolved(config["data_root"])
        section = config.get("database")
        if isinstance(section, dict) and isinstance(section.get("url"), str):
            config["database"] = {**section, "url": _sqlite_url_from(section["url"], folder)}
        section = config.get("catalog")
        if isinstance(section, dict):
            section = dict(section)
            for key in ("filename", "cache_dir"):
                if isinstance(section.get(key), str) and section[key]:
                    section[key], written = resolved(section[key]), section[key]
                    self._written_paths[f"catalog.{key}"] = (written, section[key])
            config["catalog"] = section
        section = config.get("analysis")
        classifier = section.get("classifier") if isinstance(section, dict) else None
        if isinstance(classifier, dict) and isinstance(classifier.get("model_file"), str):
            config["analysis"] = {**section, "classifier": {
                **classifier, "model_file": resolved(classifier["model_file"])}}
        section = config.get("project")
        if isinstance(section, dict) and isinstance(section.get("module_path"), list):
            config["project"] = {**section,
                                 "module_path": [resolved(p) for p in section["module_path"]]}
        return config

    def _configure_storage(self, config: dict[str, Any], constructor: dict[str, Any]) -> None:
        root = constructor.get("data_root") or config.get("data_root")
        if root is not None and not isinstance(root, (str, os.PathLike)):
            raise ParameterError(f"data_root must be a path, not {type(root).__name__}")
        self.data_root = storage.configure(root)
        section = config.get("database") or {}
        if not isinstance(section, dict):
            raise ParameterError("database: expected a mapping such as {url: ...}")
        unknown = [k for k in section if k != "url"]
        if unknown:
            raise ParameterError("database: " + unknown_key_message(unknown[0], ["url"]))
        url = constructor.get("database_url") or section.get("url")
        self.database_url = database.configure(url)

    def _analysis_class(self) -> type[Analysis]:
        module, name = self.pars.analysis_module, self.pars.analysis_class
        if not module and not name:
            return Analysis
        if not (module and name):
            raise ParameterError("analysis_module and analysis_class must be given together")
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        cls = load_class(f"{module}:{name}", "analysis_module/analysis_class")
        if not (isinstance(cls, type) and issubclass(cls, Analysis)):
            raise ParameterError(f"{module}:{name} is not a subclass of skyretriever Analysis")
        return cls

    # -- configuration and hash ------------------------------------------------------------
    def critical_config(self) -> dict[str, Any]:
        """Everything that changes results: the contents of ``config.yaml``."""
        project = self.pars.to_dict(critical_only=True)
        catalog = self.catalog.pars.to_dict(critical_only=True)
        written, resolved = self._written_paths.get("catalog.filename", (None, None))
        if written is not None and catalog.get("filename") == resolved:
            catalog["filename"] = written    # as written: the hash does not follow the folder
        preset = CatalogParameters.presets.get(self.catalog.pars.default or "", {})
        if preset.get("filename") is not None and catalog.get("filename") == preset["filename"]:
            del catalog["filename"]  # a preset's own file, wherever the package is installed
        catalog["catalog_hash"] = (self._recorded_catalog_hash
                                   if self._recorded_catalog_hash is not None
                                   else self.catalog.catalog_hash)
        return {
            "skyretriever_version": __version__,
            "project": project,
            "catalog": catalog,
            "observatories": {name: obs.pars.to_dict(critical_only=True)
                              for name, obs in self.observatories.items()},
            "analysis": self.analysis.critical_parameters(),
        }

    def config_text(self) -> str:
        """``config.yaml`` as text; its SHA-256 is the config hash."""
        header = "# skyretriever configuration: the parameters that change results.\n" \
                 "# The SHA-256 of this file is the project's cfg_hash.\n"
        return header + yaml.safe_dump(self.critical_config(), sort_keys=True)

    @property
    def cfg_hash(self) -> str:
        """SHA-256 of ``config.yaml`` (the parameters that change results)."""
        return hashlib.sha256(self.config_text().encode("utf-8")).hexdigest()

    def full_config(self) -> dict[str, Any]:
        """Every resolved parameter, critical or not (written to ``settings.yaml``)."""
        return {
            "project": self.pars.to_dict(),
            "database": {"url": database.redact_url(self.database_url)},
            "data_root": str(self.data_root),
            "catalog": self.catalog.pars.to_dict(),
            "observatories": {name: obs.pars.to_dict() for name, obs in self.observatories.items()},
            "analysis": self.analysis.resolved_parameters(),
            "execution": self.execution.to_dict(),
            "catalog_rows": self._catalog_rows(),
        }

    def _catalog_rows(self) -> int | None:
        """Rows of the catalog; for a remote catalog not loaded, what a run recorded; None
        without a catalog (a project run with given rows alone)."""
        if not self.catalog.is_configured:
            return None
        if self._recorded_catalog_hash is not None and not self.catalog.is_synthetic \
                and self.catalog.pars.kind != "file" and self.catalog.source_file is None:
            return self._recorded_catalog_rows
        return len(self.catalog)

    def use_recorded_catalog(self) -> Project:
        """Take the catalog's hash from the project folder's ``config.yaml``; returns itself.

        For the commands that read what runs made (``status``, ``sources``, ``report``,
        ``check``...): a remote catalog is then never downloaded (nor its archive
        asked) to work out the config hash. A catalog file or a synthetic catalog is
        read as always (no network). With version control, the folder is the one whose
        ``config.yaml`` matches this configuration apart from the catalog (the newest,
        when the catalog changed between runs).

        Raises
        ------
        ParameterError
            With version control, when no folder of the data root matches (the
            project has not run with this configuration and data root).
        """
        pars = self.catalog.pars
        if self.catalog.is_synthetic or pars.kind == "file":
            return self
        name = storage.sanitize_name(self.pars.name).upper()
        projects = self.data_root / storage.PROJECTS_FOLDER
        if self.pars.version_control:
            self._recorded_catalog_hash = ""
            wanted = yaml.safe_load(yaml.safe_dump(self.critical_config()))  # as a file has it
            candidates = sorted(projects.glob(f"{name}_*/config.yaml")) \
                if projects.is_dir() else []
        else:
            wanted = None
            candidates = [projects / name / "config.yaml"]
        found: list[tuple[float, str, Path]] = []
        for path in candidates:
            try:
                recorded = yaml.safe_load(path.read_text()) or {}
                catalog_hash = recorded["catalog"]["catalog_hash"]
            except (OSError, yaml.YAMLError, KeyError, TypeError):
                continue
            if wanted is not None:
                recorded["catalog"]["catalog_hash"] = ""
                if recorded != wanted:
                    continue
            found.append((path.stat().st_mtime, str(catalog_hash), path))
        if not found:
            self._recorded_catalog_hash = None
            if self.pars.version_control:
                raise ParameterError(
                    f"project {self.pars.name!r} has no results made with this configuration "
                    f"in the data root {str(self.data_root)!r} (no {name}_<cfg_hash>/config.yaml "
                    f"under {str(projects)!r} matches it), and its catalog "
                    f"({self.catalog.describe()}) is not downloaded to look: run the project "
                    "first, or name the data root of its run (data_root, --data-root)")
            self._recorded_catalog_hash, self._recorded_catalog_rows = "", 0
            return self
        _, self._recorded_catalog_hash, path = max(found)
        try:
            settings = yaml.safe_load((path.parent / "settings.yaml").read_text()) or {}
            rows = settings.get("catalog_rows")
        except (OSError, yaml.YAMLError, AttributeError):
            rows = None
        self._recorded_catalog_rows = rows if isinstance(rows, int) else None
        self._context = None
        return self

    def _update_context(self) -> ProjectContext:
        """Work out the config hash and output folder from the parameters as they are now."""
        cfg_hash = self.cfg_hash
        folder = storage.project_folder_name(self.pars.name, cfg_hash, self.pars.version_control)
        self._context = ProjectContext(
            name=self.pars.name,
            cfg_hash=cfg_hash if self.pars.version_control else "",
            folder=folder,
        )
        return self._context

    @property
    def context(self) -> ProjectContext:
        """Name, config hash (empty without version control) and output folder of the project."""
        return self._context if self._context is not None else self._update_context()

    @property
    def output_folder(self) -> Path:
        """``DATA_ROOT/projects/<NAME>`` or, with version control, ``..._<cfg_hash>``."""
        return self.data_root / storage.project_path(self.context.folder)

    def check_name_unique(self) -> None:
        """Refuse a name that differs only in case from a project already in this data root or
        database (``relp`` and ``RELP`` would share one folder, mixing files and histograms).

        Raises
        ------
        ParameterError
            Naming the other project and where it was found.
        """
        name = self.pars.name
        base = storage.sanitize_name(name).upper()
        projects = self.data_root / storage.PROJECTS_FOLDER
        folders = [f for f in projects.iterdir()
                   if f.name == base or f.name.startswith(f"{base}_")] if projects.is_dir() else []
        for folder in folders:
            try:
                other = (yaml.safe_load((folder / "config.yaml").read_text()) or {}
                         ).get("project", {}).get("name")
            except (OSError, yaml.YAMLError, AttributeError):
                continue
            if isinstance(other, str) and other != name and other.lower() == name.lower():
                raise ParameterError(
                    f"project name {name!r} differs only in case from project {other!r} "
                    f"(folder {str(folder)!r}); project names must differ case-insensitively: "
                    f"use {other!r} or another name")
        with database.Session() as session:
            other = queries.project_differing_in_case(session, name)
        if other is not None:
            raise ParameterError(
                f"project name {name!r} differs only in case from project {other!r} in the "
                f"database ({database.redact_url(self.database_url)}); project names must differ "
                f"case-insensitively: use {other!r} or another name")

    def write_config(self) -> Path:
        """Write ``config.yaml`` (hashed) and ``settings.yaml`` (everything) atomically."""
        folder = storage.ensure_inside_root(self.output_folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in (("config.yaml", self.config_text()),
                           ("settings.yaml", yaml.safe_dump(self.full_config(), sort_keys=True))):
            path = folder / name
            if path.exists() and path.read_text() == text:
                continue
            with storage.atomic_write(path, disk_full_at=folder) as temporary:
                temporary.write_text(text)
        return folder / "config.yaml"

    def __getattr__(self, name: str) -> VirtualObservatory:
        observatories = self.__dict__.get("observatories")
        if observatories is not None and name.lower() in observatories:
            return observatories[name.lower()]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"Project(name={self.pars.name!r}, obs_names={self.pars.obs_names!r})"

    # -- running ---------------------------------------------------------------------------
    def _rows(self, start: int | None, stop: int | None, source_names: Iterable[str] | None,
              rows: list[dict[str, Any]] | None) -> Iterator[list[dict[str, Any]]]:
        size = self.execution.batch_size
        if rows is not None:
            for first in range(0, len(rows), size):
                yield rows[first : first + size]
            return
        if source_names is not None:
            wanted = set(source_names)
            batch: list[dict[str, Any]] = []
            for chunk in self.catalog.iter_slices(start or 0, stop, size):
                batch += [row for row in chunk if row["name"] in wanted]
                while len(batch) >= size:
                    yield batch[:size]
                    batch = batch[size:]
            if batch:
                yield batch
            return
        yield from self.catalog.iter_slices(start or 0, stop, size)

    def _count(self, start: int | None, stop: int | None, source_names: Any, rows: Any) -> int:
        if rows is not None:
            return len(rows)
        if source_names is not None:
            return len(set(source_names))
        total = len(self.catalog)
        stop = total if stop is None else min(stop, total)
        return max(0, stop - (start or 0))

    @_holding_the_data_root
    def run(self, start: int | None = None, stop: int | None = None,
            source_names: Iterable[str] | None = None, *, rows: list[dict[str, Any]] | None = None,
            obs_names: Iterable[str] | None = None, reduce: bool = True, analyze: bool = True,
            redo: bool = False) -> RunSummary:
        """Download, reduce and analyse catalog rows ``start`` to ``stop`` (or named sources,
        or ``rows`` given here).

        ``rows`` are targets given as dictionaries instead of catalog rows, e.g.
        ``[{"name": "TIC 25155310", "ra": 63.3739, "dec": -69.2267, "tic_id": 25155310}]``:
        ``name``, ``ra`` and ``dec`` (degrees, or sexagesimal text) and any standard
        catalog column (``mag``, ``pmra``, ``tic_id``...), checked like a catalog file's
        rows. A project needs no catalog to run given rows (see also
        :func:`skyretriever.fetch` for one target by name).

        Resumable: what exists and is intact is skipped (files whose size and time are
        unchanged, or whose SHA-256 matches; see ``execution.verify_files``), so a second run
        of a finished project does no downloads, reductions or analysis. A failure
        on one source is recorded on it (and in the summary) and the run goes on;
        the next run retries it.

        Without version control, products made with other parameters, another code
        version or another catalog are never passed over as done: the run stops with
        :class:`ConfigurationChanged`, which says what changed. ``redo=True`` removes
        the project's results (its rows; its light-curve and histogram files go to
        the data root's quarantine folder; raw data is shared and kept where it still
        fits) and makes them again under the new configuration.

        The run holds the data root's shared lock throughout (other runs may share
        it; ``check --repair`` may not).

        Returns
        -------
        RunSummary
            Counts (done, skipped, empty, failed, downloads...), failures with
            reasons, and time per step.

        Raises
        ------
        skyretriever.storage.DataRootBusy
            If ``check --repair`` is repairing the data root (the run does not start).
        RunStopped
            When the machine under the run fails rather than a source, with a
            one-line message: a read-only data root or database, or a database
            user without rights (found before any source is tried); less than
            ``execution.min_free_mb`` free before a batch, or a write that found
            the disk full ("disk full: PATH, N MB free"); the database gone;
            ``execution.max_infrastructure_errors`` sources in a row failed by
            permissions or I/O errors. Committed batches are kept, nothing is
            half-written, and the next run goes on from there.
        """
        begin = time.perf_counter()
        if analyze:
            self.analysis.check_ready()
        if rows is not None:
            rows = Catalog.checked_rows(rows, self.catalog.pars)
        if rows is None or self.catalog.is_configured:
            self.catalog.load()
        if rows is None and len(self.catalog) == 0:
            skipped = len(self.catalog.bad_rows)
            pars = self.catalog.pars
            where = (f"file {str(pars.filename)!r}" if pars.filename
                     else f"preset {pars.default!r}" if pars.default else f"{pars.kind!r}")
            raise CatalogError(
                f"catalog {where} has no rows to run"
                + (f" ({skipped} bad row(s) left out under bad_rows: skip)" if skipped else "")
            )
        context = self._update_context()
        whole = rows is None and source_names is None and start is None and stop is None
        log.info("project %s: data root %s, database %s", self.pars.name, self.data_root,
                 database.redact_url(self.database_url))
        # A second run of the whole project would do all the work again beside this one:
        # it is refused at once. Runs of parts (a job array's slices) share the lock.
        with storage.project_lock(context.folder, f"a run of project {self.pars.name!r}",
                                  shared=not whole):
            return self._run_locked(context, begin, start, stop, source_names, rows, obs_names,
                                    reduce, analyze, redo)

    def _run_locked(self, context: ProjectContext, begin: float, start: int | None,
                    stop: int | None, source_names: Iterable[str] | None,
                    rows: list[dict[str, Any]] | None, obs_names: Iterable[str] | None,
                    reduce: bool, analyze: bool, redo: bool) -> RunSummary:
        # What would fail every source is found before any is tried, and said in one line
        # (the data root was checked before its lock was taken).
        database.check_writable(tables=False)
        database.upgrade()
        database.check_writable()
        try:
            self.check_name_unique()
            whole = rows is None and source_names is None and start is None and stop is None
            notes = self._place_notes(context, redo, whole)
            self._check_products_match(context, redo)
            for folder, files in storage.clean_temporary_counted().items():
                if files:
                    log.info("removed %d file(s) half-written by a run that died: %s",
                             files, folder)
                else:  # the writer folder of a process that ended: nothing was lost
                    log.debug("removed the empty temporary folder of a finished process: %s",
                              folder)
            self._check_free_space()
            self.write_config()
        except Exception as error:
            stopped = self._stop_for(error)
            if stopped is None:
                raise
            raise stopped from error
        observatories = (list(self.observatories.values()) if obs_names is None
                         else [self.observatories[name] for name in obs_names])
        for obs in observatories:
            obs.begin_run()
        summary = RunSummary(project=self.pars.name, cfg_hash=context.cfg_hash, notes=notes)
        worker = Worker(context, observatories, self.analysis if analyze else None,
                        str(self.data_root))
        download_threads = max(obs.pars.download_workers for obs in observatories)
        total = self._count(start, stop, source_names, rows)
        progress = progress_bar(total, self.pars.progress, self.pars.name,
                                log_every=self.execution.log_interval)
        histogram_batches: list[int] = []
        seconds: Counter = Counter()
        streak: list[SourceResult] = []      # infrastructure failures in a row

        def on_result(result: SourceResult) -> None:
            progress.update(1, "skipped" if result.skipped else
                            "failed" if result.status == "failed" else "done")
            if result.status != "failed" or not result.infrastructure_error:
                streak.clear()
                return
            streak.append(result)
            if len(streak) >= self.execution.max_infrastructure_errors:
                last = (result.error or "")[:300]
                raise RunStopped(
                    f"{len(streak)} sources in a row failed for a reason of the machine, not "
                    f"of the sources (permissions, I/O errors); the last, {result.name}: {last}"
                )
        legacy_raw = 0
        raw_classes = {obs.name: obs.raw_class for obs in observatories}

        def write(results: list) -> None:
            """Commit one batch (its rows in one transaction), then count it."""
            clock = time.perf_counter()
            # SQLite would commit into a deleted file without a word: look before and after.
            database.check_still_there()
            with database.Session() as session:
                written = write_batch(session, results, context,
                                      self.analysis.histogram_name if analyze else None,
                                      raw_classes)
            database.check_still_there()
            seconds["write"] += time.perf_counter() - clock
            log.debug("batch of %d written in %.2f s (%d statements)", len(results),
                      time.perf_counter() - clock, written.statements)
            histogram_batches.extend(written.histogram_batch_ids)
            summary.statements += written.statements
            summary.counts.update(summarize(results))
            summary.failures += [(r.name, r.error or "") for r in results if r.status == "failed"]
            summary.progress.append((summary.counts["sources"], time.perf_counter() - begin))

        # A batch is committed on a thread of its own while the workers go on with the
        # next one (serially when debugging); at most one batch waits to be written, and
        # batches are committed in order.
        writer = (ThreadPoolExecutor(1, thread_name_prefix="write")
                  if self.execution.scheduler != "serial" else None)
        pending = None
        tasks: list = []                     # the batch being worked on, not yet written
        try:
            with make_executor(worker, self.execution, download_threads) as executor:
                for batch in self._rows(start, stop, source_names, rows):
                    tasks = []
                    self._check_free_space()
                    clock = time.perf_counter()
                    with database.Session() as session:
                        tasks = plan_batch(session, batch, context, observatories,
                                           full_checks=self.execution.verify_files == "full")
                    legacy_raw += sum(task.legacy_raw for task in tasks)
                    planned = time.perf_counter() - clock
                    seconds["plan"] += planned
                    clock = time.perf_counter()
                    for obs in observatories:
                        needed = [t.row for t in tasks if obs.name not in t.raw]
                        if needed:
                            _prepare_download(obs, needed)
                    results = executor.run_batch(tasks, reduce, analyze, on_result)
                    seconds["work"] += time.perf_counter() - clock
                    log.debug("batch of %d planned in %.2f s, worked in %.2f s", len(batch),
                              planned, time.perf_counter() - clock)
                    if pending is not None:
                        pending.result()
                    tasks = []               # handed to the writer: no longer in work
                    if writer is None:
                        write(results)
                    else:
                        pending = writer.submit(write, results)
                if pending is not None:
                    pending.result()
            clock = time.perf_counter()
            if analyze:
                self.update_histograms()
            seconds["histograms"] = time.perf_counter() - clock
        except Exception as error:
            stopped = self._stop_for(error)
            if stopped is None:
                raise
            if pending is not None:
                try:
                    pending.result()      # a batch already handed to the writer goes in first
                except Exception:
                    log.debug("the batch being written failed too", exc_info=True)
            if tasks and database.stop_for(error) is None:
                self._record_stop(tasks, context, str(stopped))
            log.debug("run stopped", exc_info=True)
            raise stopped from error
        finally:
            if writer is not None:
                writer.shutdown(wait=True)
            progress.close()
        if legacy_raw:
            log.warning("%d raw product(s) made by an older skyretriever (before download "
                        "parameters and targets were recorded) were not reused: their sources "
                        "were downloaded again", legacy_raw)
        seconds["total"] = time.perf_counter() - begin
        summary.seconds = dict(seconds)
        if self.pars.verbose or summary.failures:
            log.info("%s", summary)
        return summary

    def data_root_is_new(self) -> bool:
        """Whether nothing was downloaded into the data root yet (no raw or project folder)."""
        return not any((self.data_root / folder).exists()
                       for folder in (storage.PROJECTS_FOLDER, storage.RAW_FOLDER))

    def _place_notes(self, context: ProjectContext, redo: bool = False, whole: bool = True
                     ) -> list[str]:
        """What the summary says when the data root is new, or the database lacks a project
        the data root has: a path that followed the working folder, or a mistyped one,
        would otherwise make everything again in a new place without a word."""
        notes = []
        if self.data_root_is_new():
            with database.Session() as session:
                has_results = queries.has_results(session, context)
            # A whole run would make every file again here. Slices may run on machines with
            # data roots of their own (a job array on node-local disks): said, not refused.
            if has_results and not redo and whole:
                raise ConfigurationChanged(
                    f"the database {database.redact_url(self.database_url)} has results of "
                    f"project {self.pars.name}, but the data root {self.data_root} is new "
                    "(nothing downloaded there): their files are in another data root. Give "
                    "that one (data_root in the config, relative to the config's folder, or "
                    "--data-root), or run again with --redo to make them all again here.")
            notes.append(f"the data root {self.data_root} was new (nothing downloaded there "
                         f"before); if project {self.pars.name} ran before with another data "
                         "root, give that one (data_root in the config, relative to the "
                         "config's folder, or --data-root)")
        elif (self.output_folder / "config.yaml").exists():
            with database.Session() as session:
                has_results = queries.has_results(session, context)
            if not has_results:
                notes.append(f"the database {database.redact_url(self.database_url)} had no "
                             f"results of project {self.pars.name}, although its folder "
                             f"{self.output_folder} is in the data root; if it ran with another "
                             "database, give that one (database.url in the config, or "
                             "--database); intact files were adopted, not downloaded again")
        for note in notes:
            log.info("%s", note)
        return notes

    def _check_products_match(self, context: ProjectContext, redo: bool) -> None:
        """Stop (or with ``redo``, clear the results) when the products were made otherwise.

        With version control the folder is named by the config hash, so its
        ``config.yaml`` always matches; without it, the recorded ``config.yaml``
        says what the existing products were made with.
        """
        recorded = self.output_folder / "config.yaml"
        new_text = self.config_text()
        old_text = recorded.read_text() if recorded.exists() else None
        if old_text == new_text:
            return
        with database.Session() as session:
            has_products = queries.has_results(session, context)
        if not has_products:
            return
        if redo:
            self._clear_results(context)
            return
        if old_text is None:
            changes = [f"{recorded} is missing, so what they were made with is unknown"]
        else:
            changes = configuration_changes(old_text, new_text)
        raise ConfigurationChanged(
            f"project {context.name!r} has results made with another configuration "
            f"(version control is off, so {self.output_folder} holds one set of results):\n  "
            + "\n  ".join(changes)
            + "\nTo go on: set 'version_control: true' (each configuration in a folder of "
            "its own), or give the project another name, or run again with --redo "
            "(Project.run(redo=True)) to remake its results under the new configuration."
        )

    def _clear_results(self, context: ProjectContext) -> None:
        """Delete the project's rows and result files (raw data, shared, is kept)."""
        with database.Session() as session:
            filenames = queries.delete_results(session, context)
            session.commit()
        # The old files go to quarantine (nothing is deleted): the user may still want them.
        batch = storage.quarantine_batch()
        paths = [storage.full_path(name) for name in sorted(filenames)]
        for path in [*paths, *self.output_folder.glob("histograms_*.nc")]:
            if path.exists():
                storage.quarantine(path, batch)
        log.warning("project %s: results made with another configuration removed (redo); "
                    "their files are in %s", context.name,
                    storage.data_root() / storage.QUARANTINE_FOLDER / batch)

    def _check_free_space(self) -> None:
        """Stop before a batch when the data root (or a SQLite database's disk) is nearly full."""
        need = self.execution.min_free_mb
        check_free_space(self.data_root, need)
        sqlite_file = database.sqlite_path()
        if sqlite_file is not None:
            check_free_space(sqlite_file.parent, need)

    def _stop_for(self, error: BaseException) -> RunStopped | None:
        """The stop an error means (a full disk, the database gone...), or ``None``."""
        if isinstance(error, RunStopped):
            return error
        stop = database.stop_for(error)
        if stop is not None:
            return stop
        if is_disk_full(error):
            return DiskFull(self.data_root, free_megabytes(self.data_root))
        return None

    def _record_stop(self, tasks: list, context: ProjectContext, reason: str) -> None:
        """Record why the sources of the batch a stop interrupted are not done (if the
        database can still be written; else they are simply left for the next run)."""
        results = [SourceResult(row=task.row, status="failed", error=reason)
                   for task in tasks if task.status != "done"]
        if not results:
            return
        try:
            database.check_still_there()
            with database.Session() as session:
                write_batch(session, results, context, None)
        except Exception:  # the database may be on the full disk too
            log.debug("could not record the stop on the batch's sources", exc_info=True)

    # -- results ---------------------------------------------------------------------------
    def lightcurves_of(self, name: str) -> list[Lightcurve]:
        """The light curves of the project's source ``name``, loaded, by observatory and
        series (empty when it has none); usable after the session is gone.

        Raises
        ------
        KeyError
            If the project has no source of that name.
        """
        with database.Session() as session:
            source = queries.source_named(session, self.context, name)
            if source is None:
                raise KeyError(f"project {self.pars.name!r} has no source named {name!r}")
            curves = queries.source_lightcurves(session, source.id)
            for curve in curves:
                _ = curve.source, curve.data   # loaded: the objects outlive the session
            session.expunge_all()
        return curves

    def histogram_path(self, name: str | None = None) -> Path:
        """``<output folder>/histograms_<name>.nc``."""
        return self.output_folder / f"histograms_{name or self.analysis.histogram_name}.nc"

    def update_histograms(self) -> Histogram:
        """Fold every committed batch of counts that the netCDF file lacks into it.

        Safe when several runs of the project (a job array) finish at once: the
        file is updated under a lock, and each batch is in it exactly once. A file
        that cannot be read is moved to the quarantine folder (with a warning) and
        rebuilt from the committed batches.
        """
        name = self.analysis.histogram_name
        path = storage.ensure_inside_root(self.histogram_path(name))
        with storage.file_lock(path), database.Session() as session:
            try:
                held = Histogram.load(path).batch_ids if path.exists() else set()
            except HistogramFileError as error:
                moved = storage.quarantine(path)
                log.warning("%s; moved to %s and rebuilt from the committed batches", error,
                            moved)
                held = set()
            ids = queries.histogram_batch_ids(session, self.context, name)
            missing = [i for i in ids if i not in held]
            batches = queries.histogram_batches(session, self.context, name, missing)
            return update_histogram_file(path, self.analysis.pars.histogram, name, batches)

    def download_ffis(self, sector: int, camera: int, ccd: int) -> FFIDownload:
        """Download every calibrated FFI of a sector, camera and CCD (the Starskøpe case).

        Through the project's ``TESSFFI`` observatory: the bucket's list of the
        files, each file fetched atomically and checked as FITS (the bucket first,
        MAST HTTPS when the bucket fails), kept under ``DATA_ROOT/ffi/`` and
        recorded in ``ffi_files``. Resumable: a recorded file still intact is not
        fetched again, a complete file left without its row is adopted; one
        file's failure is recorded in the summary and the others go on.

        Examples
        --------
        >>> proj.download_ffis(sector=1, camera=1, ccd=1)              # doctest: +SKIP
        FFIDownload(files=1282, downloaded=1282, kept=0, failures=[])
        """
        obs = self.observatories.get("tessffi")
        if obs is None:
            raise ParameterError("ffi: the project has no TESSFFI observatory (add TESSFFI to "
                                 "obs_names; its s3_endpoint_url and network settings are used)")
        database.upgrade()
        keys = obs.ffi_keys(int(sector), int(camera), int(ccd))
        summary = FFIDownload(files=len(keys))
        with database.Session() as session:
            known = queries.ffi_file_rows(session, sector, camera, ccd)
        bar = progress_bar(len(keys), self.pars.progress, f"FFIs s{sector:04d}-{camera}-{ccd}",
                           unit="file")
        for key in keys:
            bar.update(1)
            relative = f"ffi/s{sector:04d}/{camera}-{ccd}/{key.rsplit('/', 1)[-1]}"
            path = storage.full_path(relative)
            row = known.get(key)
            try:
                if row is not None and storage.verify_file(path, row["checksum"],
                                                           row["file_size"]):
                    summary.kept += 1
                    continue
                route = "adopted"
                if row is not None or not _whole_fits(path):
                    route = obs.fetch_ffi(key, path)
                    summary.downloaded += 1
                else:
                    summary.kept += 1
                values = {"sector": sector, "camera": camera, "ccd": ccd, "key": key,
                          "filename": relative, "checksum": storage.file_sha256(path),
                          "file_size": path.stat().st_size,
                          "route": route if route != "adopted" else "s3"}
                with database.Session() as session:
                    queries.record_ffi_file(session, values)
                    session.commit()
            except Exception as error:  # one file's failure must not stop the others
                log.debug("FFI %s failed", key, exc_info=True)
                summary.failures.append((key, f"{type(error).__name__}: {error}"))
        bar.close()
        return summary
    def train(self, examples: int | None = None, show_progress: bool = True
              ) -> dict[str, Any]:
        """Train the transit classifier on the project's own light curves and write its model file.

        Examples are made from the light curves of the project's analysed
        sources (run the project first) by injection
        (:func:`skyretriever.analysis.training.make_examples`), split by
        source, fitted, and judged on the test part against the transit
        search's SDE. The model file (``analysis.classifier.model_file``) is
        written in one step, with ``<model_file>.json`` beside it.

        Returns
        -------
        dict
            What the model file records: parameters, data summary, history,
            metrics of the model and of the SDE on the test set.
        """
        classifier = self.analysis.pars.classifier
        pars = classifier.training
        if examples is not None:
            pars = pars.model_copy(update={"examples": int(examples)})
        if not classifier.model_file:
            raise ParameterError("analysis.classifier.model_file: give the path the model "
                                 "file is written to")
        model_class(classifier.model, load_class)
        if database.current_revision() is None:
            raise ParameterError(f"the database {database.redact_url(self.database_url)} has "
                                 f"no skyretriever tables yet: run the project first, then "
                                 "train on its light curves")
        with database.Session() as session:
            found = queries.training_lightcurves(session, self.context)
            stars = {name: [self.analysis.check_quality(lc)[0] for lc in lightcurves]
                     for name, lightcurves in found.items()}
        if len(stars) < 3:
            raise ParameterError(
                f"project {self.pars.name!r} has {len(stars)} analysed source(s) with light "
                "curves; training needs at least 3 (one each for training, validation and "
                f"test): run 'skyretriever run' first")
        bar = progress_bar(pars.examples, show_progress, "examples", unit="example")
        try:
            made = self._make_examples(stars, pars, bar)
        finally:
            bar.close()
        parts = split_by_source(made.sources, pars.split, pars.seed)
        for part, name in enumerate(("training", "validation", "test")):
            labels = set(made.labels[parts == part].tolist())
            if labels != {0, 1}:
                raise ParameterError(
                    f"the {name} examples ({int((parts == part).sum())} of {len(made)}, from "
                    f"{len(set(made.sources[parts == part].tolist()))} source(s)) need both "
                    "transits and negatives: make more examples (--examples) or analyse more "
                    "sources")
        log.info("training %s on %d examples (%d made in %.0f s)", classifier.model,
                 int((parts == 0).sum()), len(made), made.seconds)
        model, history, seconds = fit_model(classifier.model, made, parts, pars,
                                            classifier.global_bins, classifier.local_bins,
                                            load_class, classifier.local_kinds)
        test = made.subset(parts == 2)
        begin = time.perf_counter()
        scores = test.scores(model)
        scoring = time.perf_counter() - begin
        sde_threshold = next((f.pars.sde_threshold for f in self.analysis.finders
                              if hasattr(f.pars, "sde_threshold")), 6.0)
        metadata = {
            "project": self.pars.name,
            "local_durations": classifier.local_durations,
            "training": pars.to_dict(),
            "transit_search": next((f.pars.to_dict() for f in self.analysis.finders
                                    if f.name == "transit"), None),
            "data": {**made.summary(),
                     "parts": {name: int((parts == part).sum()) for part, name in
                               enumerate(("train", "validation", "test"))},
                     "test_positives": int(test.labels.sum())},
            "history": history,
            "seconds": {"examples": round(made.seconds, 2), "fit": round(seconds, 2),
                        "score_test": round(scoring, 4)},
            "metrics": {
                "model": evaluate(test.labels, scores, classifier.threshold).as_dict(),
                "sde": evaluate(test.labels, test.sde, sde_threshold).as_dict(),
            },
            "test_scores": {"label": test.labels.tolist(), "score": scores.tolist(),
                            "sde": test.sde.tolist(), "kind": test.kinds.tolist()},
        }
        return save_model(model, classifier.model_file, metadata)

    def _make_examples(self, stars: dict[str, list[Any]], pars: Any, bar: Any) -> Examples:
        """``pars.examples`` examples of ``stars``, on ``execution.workers`` processes.

        The same examples whatever the number of workers
        (:func:`~skyretriever.execution.make_examples_in_processes`).
        """
        workers = min(self.execution.workers or os.cpu_count() or 1,
                      -(-pars.examples // _EXAMPLES_PER_CHUNK))

        def progress(count: int, outcome: str) -> None:
            bar.update(count, "done" if outcome == "made" else "skipped")

        if self.execution.scheduler == "serial" or workers < 2:
            return make_examples(self.analysis, stars, pars.examples, pars.seed,
                                 progress=progress)
        return make_examples_in_processes(
            self.analysis, stars, pars.examples, pars.seed, workers, self.execution.start_method,
            progress=progress, chunk=_EXAMPLES_PER_CHUNK)

    def status(self, max_failures: int = 20) -> dict[str, Any]:
        """Counts per stage and observatory, and the failures with their reasons.

        Examples
        --------
        >>> proj.status()["sources"]                                 # doctest: +SKIP
        {'done': 195, 'failed': 3, 'new': 2}
        """
        context = self._update_context()
        database.upgrade()
        with database.Session() as session:
            by_status = queries.source_counts(session, context)
            observatories = {}
            for obs in self.observatories:
                raw_counts = queries.raw_counts(session, context, obs,
                                                self.observatories[obs].raw_class)
                observatories[obs] = {
                    "raw": raw_counts.get(False, 0) + raw_counts.get(True, 0),
                    "empty": raw_counts.get(True, 0),
                    "lightcurves": queries.lightcurve_count(session, context, obs),
                }
            properties = queries.properties_count(session, context)
            detections = queries.detection_counts(session, context)
            failures = queries.failed_sources(session, context, max_failures)
        return {
            "project": context.name,
            "cfg_hash": context.cfg_hash,
            "folder": str(self.output_folder),
            "database": database.redact_url(self.database_url),
            "catalog_rows": (self._catalog_rows() if self._catalog_rows() is not None
                             else sum(by_status.values())),
            "sources": {state: by_status.get(state, 0) for state in ("done", "failed", "new")},
            "observatories": observatories,
            "properties": properties,
            "detections": {"real": detections.get(False, 0), "simulated": detections.get(True, 0)},
            "failures": [(name, error) for name, error in failures],
        }


def _sqlite_url_from(url: str, folder: Path) -> str:
    """A SQLite URL whose file is relative, made relative to ``folder``; others unchanged.

    Examples
    --------
    >>> _sqlite_url_from("sqlite:///run.db", Path("/work/configs"))
    'sqlite:////work/configs/run.db'
    >>> _sqlite_url_from("postgresql://me@host/db", Path("/work/configs"))
    'postgresql://me@host/db'
    """
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return url                     # database.configure says what is wrong with it
    file = parsed.database
    if not parsed.drivername.startswith("sqlite") or not file or file == ":memory:" \
            or file.startswith("file:") or Path(file).expanduser().is_absolute():
        return url
    return parsed.set(database=os.path.normpath(folder / Path(file).expanduser())
                      ).render_as_string(False)


def _check_data_root(root: Path) -> None:
    """Raise :class:`RunStopped` (one line) when the data root cannot be made or written."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-check-", dir=root)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        full = disk_full_from(error, root) if is_disk_full(error) else None
        if full is not None:
            raise full from error
        raise RunStopped(f"data root {str(root)!r} is not writable: "
                         f"{error.strerror or error}") from error


def _prepare_download(obs: VirtualObservatory, rows: list[dict[str, Any]]) -> None:
    try:
        obs.prepare_download(rows)
    except Exception as error:  # the per-source downloads will try again and record failures
        log.warning("batch query to %s failed (%s); downloading source by source", obs.name, error)
