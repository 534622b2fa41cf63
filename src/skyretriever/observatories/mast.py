"""VirtualMAST: the observatory base of TESS, K2 and Kepler.

For a batch of catalog rows (:meth:`VirtualMAST.prepare_download`) it finds each
source's target (the catalog's cross-id, else a search by position), asks
for the observations of up to ``download_batch_size`` targets in one query,
for their products in batches of 500 observations, and for the cloud paths
of the light-curve files in batches of 50 (:mod:`skyretriever.observatories.mast_client`).
Each source's download then fetches its files (S3 first when ``use_cloud``,
:mod:`skyretriever.observatories.s3`; MAST HTTPS otherwise or when the bucket
fails), reads them (:mod:`skyretriever.observatories.mission_files`), and
returns one table holding every sector/campaign/quarter, with the FITS headers
and product ids as provenance. A source with nothing at MAST gets an empty
table; a source whose files cannot be fetched raises, so the run records it and
the next run tries again.

Nothing is taken on trust: every file must be one of the mission with the
columns and units the reduction reads (:func:`~skyretriever.observatories.mission_files.check_layout`),
and of the target asked for; a file that is not is deleted and its source
fails with the reason.

Examples
--------
>>> from skyretriever.observatories import VirtualTESS
>>> obs = VirtualTESS(mast_url="https://mast.stsci.edu", use_cloud=False)
>>> obs.prepare_download([{"name": "pi_men", "ra": 84.29, "dec": -80.47,
...                        "tic_id": 261136679}])                           # doctest: +SKIP
>>> frame, altdata = obs.download_from_observatory(
...     {"name": "pi_men", "ra": 84.29, "dec": -80.47, "tic_id": 261136679})   # doctest: +SKIP
"""

from __future__ import annotations

import abc
import contextlib
import logging
import math
import shutil
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import field_validator

from skyretriever import storage
from skyretriever.fitsfile import InvalidFileError, validate_fits_bytes
from skyretriever.net import NetworkError, NetworkParameters, shared_client, validate_archive_url
from skyretriever.observatories.base import (
    ObservatoryParameters,
    ProjectContext,
    VirtualObservatory,
)
from skyretriever.observatories.mast_client import (
    MastClient,
    MastError,
    as_float,
    as_int,
    check_data_uri,
    in_chunks,
)
from skyretriever.observatories.mission_files import (
    BJDREF_TESS,
    TESS_ZERO_POINT,
    LightcurveLayout,
    WrongTargetError,
    check_target,
    read_lightcurve_fits,
    trailing_number,
)
from skyretriever.observatories.runtime import RuntimeState
from skyretriever.observatories.s3 import S3Bucket
from skyretriever.parameters import parameter

__all__ = [
    "FILE_READER",
    "FetchedFiles",
    "MastParameters",
    "ProductInfo",
    "Resolution",
    "SourcePlan",
    "VirtualMAST",
    "lightcurves_from_files",
    "one_table",
]

log = logging.getLogger(__name__)


# -- what a source's download needs ----------------------------------------------------------
@dataclass
class ProductInfo:
    """One light-curve file chosen for a source."""

    data_uri: str
    filename: str
    obs_id: str
    obsid: str
    sequence: int | None
    exptime: float | None
    author: str
    size: int | None = None
    cloud_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Resolution:
    """How a catalog row was matched to a MAST target (``target_name`` ``None``: no match)."""

    target_name: str | None
    provenance: dict[str, Any] = field(default_factory=dict)
    observations: list[dict[str, Any]] | None = None


@dataclass
class SourcePlan:
    """What one source's download fetches, found by the batch queries (or why it cannot)."""

    target_name: str | None
    products: list[ProductInfo] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class FetchedFiles:
    """What :meth:`VirtualMAST.fetch` hands to :meth:`VirtualMAST.parse`: the row, its plan,
    the provenance so far, and each file as (product, route, path, bytes)."""

    cat_row: dict[str, Any]
    plan: SourcePlan
    altdata: dict[str, Any]
    files: list[tuple[ProductInfo, str, str, bytes]] = field(default_factory=list)


#: The name the raw data of MAST files are read back by (:func:`lightcurves_from_files`).
FILE_READER = "mast-lightcurves"


def one_table(frames: list[pd.DataFrame], options: dict[str, Any]) -> pd.DataFrame:
    """The tables of a source's files as one, with the sequence and band columns.

    ``options``: ``sequences`` (one per frame), ``sequence_column``, ``band``.
    """
    sequence_column = options["sequence_column"]
    # The sequence and band columns are added once to the whole table, not to each file's.
    table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    table[sequence_column] = np.repeat(np.array(options["sequences"], dtype=np.int64),
                                       [len(frame) for frame in frames])
    table["filter"] = options["band"]
    # Columns in the order they had when each file's table got both columns (a file with
    # columns the others lack puts them after the first file's).
    order = list(dict.fromkeys(column for frame in frames for column in
                               (*frame.columns, sequence_column, "filter")))
    return table if list(table.columns) == order else table[order]


def lightcurves_from_files(files: list[tuple[str, bytes]], options: dict[str, Any]
                           ) -> pd.DataFrame:
    """The raw table of a source's MAST light-curve files, as :meth:`VirtualMAST.parse` made it
    (the files were checked then; they are read again, not checked)."""
    frames = [read_lightcurve_fits(name, None, content)[0] for name, content in files]
    return one_table(frames, options)


storage.register_file_reader(FILE_READER, lightcurves_from_files)


# -- the observatory base --------------------------------------------------------------------
class MastParameters(ObservatoryParameters, NetworkParameters):
    """Parameters shared by the MAST missions (TESS, K2, Kepler)."""

    # Timeouts, retries and backoff are NetworkParameters'; MAST and its bucket take more
    # requests at once than the network default.

    mast_url: str = parameter(
        "https://mast.stsci.edu", "Base URL of the MAST portal (or a mirror or simulator).",
        critical=False,
    )
    s3_endpoint_url: str | None = parameter(
        None, "S3 endpoint of the public bucket; None uses AWS (us-east-1).", critical=False
    )
    s3_bucket: str = parameter("stpubdata", "Public bucket holding MAST's files.", critical=False)
    s3_region: str = parameter("us-east-1", "Region of the public bucket.", critical=False)
    use_cloud: bool = parameter(
        True, "Fetch files from the S3 bucket when they are there (else, and on failure, MAST HTTPS).",
        critical=False,
    )
    flux_column: Literal["pdcsap", "sap"] = parameter(
        "pdcsap", "Flux of the reduced light curves: pdcsap (PDCSAP_FLUX) or sap (SAP_FLUX)."
    )
    match_radius: float = parameter(
        10.0, "Radius (arcsec) to find a source without a cross-id by its position.", gt=0
    )
    match_mag_tolerance: float | None = parameter(
        1.0, "Largest |catalog mag - TIC Tmag| for a positional TIC match; None ignores magnitudes.",
        ge=0,
    )
    position_epoch: float = parameter(
        2016.0, "Epoch (year) of catalog positions; moved to 2000 with pmra/pmdec for matching."
    )
    max_connections_per_host: int = parameter(
        8, "Requests in flight at once to one host (MAST, the S3 endpoint), across all sources.",
        critical=False, ge=1,
    )
    query_timeout: float = parameter(
        600.0, "Seconds to keep asking while MAST answers EXECUTING.", critical=False, gt=0
    )
    page_size: int = parameter(50000, "Rows per page of MAST query results.", critical=False, ge=1)
    keep_fits: bool = parameter(
        False, "Also write downloaded FITS files under DATA_ROOT/raw/<OBS>/fits (the raw data "
        "holds them anyway; files are fetched into memory and written there only when asked, "
        "or when a source fails part-way).",
        critical=False,
    )
    download_workers: int = parameter(
        16, "Sources downloading at once for this observatory (within max_connections_per_host); "
        "when not given, twice max_connections_per_host.",
        critical=False, ge=1,
    )

    @classmethod
    def prepare_input(cls, data: dict[str, Any]) -> dict[str, Any]:
        """``download_workers`` follows ``max_connections_per_host`` unless it is given.

        Twice as many sources as connections: while one source's file is parsed
        and stored (CPU), another's request keeps the connection busy.
        """
        data = super().prepare_input(data)
        connections = data.get("max_connections_per_host",
                               cls.model_fields["max_connections_per_host"].default)
        if ("download_workers" not in data and isinstance(connections, int)
                and not isinstance(connections, bool) and connections >= 1):
            data["download_workers"] = 2 * connections
        return data

    @field_validator("mast_url", "s3_endpoint_url")
    @classmethod
    def _plain_archive_url(cls, value: str | None) -> str | None:
        return None if value is None else validate_archive_url(value)


class VirtualMAST(RuntimeState, VirtualObservatory):
    """Base of the MAST missions: batched queries, S3/HTTPS downloads, FITS reading.

    Subclasses set the mission's constants and say how a catalog row names a
    target (:meth:`target_from_row`), which observations and files are wanted
    (:meth:`observation_criteria`, :meth:`wanted_observation`,
    :meth:`wanted_product`), and which sector, campaign or quarter a file
    holds (:meth:`product_sequence`).
    """

    Parameters: ClassVar[type[MastParameters]] = MastParameters
    #: Primary-header keyword holding the target's id (the number in ``target_name``).
    target_id_keyword: ClassVar[str] = "TICID"
    #: Which target a row resolves to; subclasses add which files are asked for.
    download_parameters: ClassVar[tuple[str, ...]] = ("match_radius", "match_mag_tolerance",
                                                      "position_epoch")
    #: Mission name as MAST spells it in ``obs_collection`` and ``project``.
    mission: ClassVar[str] = ""
    #: Raw column saying which sector/campaign/quarter each row comes from.
    sequence_column: ClassVar[str] = ""
    #: Name of the mission's time column in the reduced light curves (``btjd``, ``bkjd``).
    time_column: ClassVar[str] = ""
    #: The ``filter`` of every point (the mission's bandpass).
    band: ClassVar[str] = ""
    #: Raw column holding the quality bits.
    quality_column: ClassVar[str] = "quality"
    zero_point: ClassVar[tuple[float, float]] = TESS_ZERO_POINT
    #: ``TELESCOP`` of the mission's files, and the BJD their TIME counts from.
    telescope: ClassVar[str] = "TESS"
    bjd_reference: ClassVar[int] = BJDREF_TESS

    def __init__(self, pars: MastParameters | None = None, context: ProjectContext | None = None,
                 **kwargs: Any) -> None:
        super().__init__(pars, context, **kwargs)
        self._init_runtime()

    #: Attributes made at run time (clients, locks, the batch's plans); never pickled:
    #: worker processes reduce, they never download.
    _RUNTIME = ("_mast", "_mast_key", "_s3", "_s3_key", "_plans", "_runtime_lock")

    def _init_runtime(self) -> None:
        self._mast: MastClient | None = None
        self._s3: S3Bucket | None = None
        self._mast_key: tuple | None = None
        self._s3_key: tuple | None = None
        self._plans: dict[str, SourcePlan] = {}
        self._runtime_lock = threading.Lock()

    # -- clients ---------------------------------------------------------------------------
    @property
    def mast(self) -> MastClient:
        """The MAST portal client (on the shared HTTP client: the host limit holds across missions).

        Made on first use, and again if the parameters it depends on changed.
        """
        pars = self.pars
        key = (pars.mast_url, pars.page_size, pars.query_timeout, pars.network_policy())
        with self._runtime_lock:
            if self._mast is None or self._mast_key != key:
                self._mast = MastClient(pars.mast_url, shared_client(key[-1]),
                                        page_size=pars.page_size, query_timeout=pars.query_timeout)
                self._mast_key = key
            return self._mast

    @property
    def s3(self) -> S3Bucket:
        """The public bucket (made on first use, and again if its parameters changed)."""
        pars = self.pars
        key = (pars.s3_bucket, pars.s3_endpoint_url, pars.s3_region, pars.network_policy())
        with self._runtime_lock:
            if self._s3 is None or self._s3_key != key:
                self._s3 = S3Bucket(*key[:3], shared_client(key[-1]))
                self._s3_key = key
            return self._s3

    # -- what subclasses say -------------------------------------------------------------------
    @abc.abstractmethod
    def target_from_row(self, row: dict[str, Any]) -> str | None:
        """The MAST ``target_name`` given by the row's cross-id, or ``None``."""

    @abc.abstractmethod
    def observation_criteria(self) -> list[dict[str, Any]]:
        """Filters (besides ``target_name``) of the observation queries."""

    @abc.abstractmethod
    def wanted_observation(self, observation: dict[str, Any]) -> bool:
        """Whether an observation row is one this observatory's parameters ask for."""

    @abc.abstractmethod
    def wanted_product(self, product: dict[str, Any], observation: dict[str, Any]) -> bool:
        """Whether a product row is a light-curve file this observatory's parameters ask for."""

    def product_sequence(self, product: dict[str, Any], observation: dict[str, Any]) -> int | None:
        """The sector, campaign or quarter a product holds (``None`` if the rows do not say)."""
        return as_int(observation.get("sequence_number"))

    def wanted_sequences(self) -> list[int] | None:
        """The sectors, campaigns or quarters asked for (``None``: all)."""
        return None

    def sequence_criteria(self) -> list[dict[str, Any]]:
        """Query filters choosing the wanted sequences (observations hold one sequence each)."""
        wanted = self.wanted_sequences()
        if wanted is None:
            return []
        return [{"paramName": "sequence_number", "values": [str(s) for s in wanted]}]

    def product_exptime(self, product: dict[str, Any], observation: dict[str, Any]) -> float | None:
        return as_float(observation.get("t_exptime"))

    # -- resolving catalog rows to targets -----------------------------------------------------
    def resolve_targets(self, rows: list[dict[str, Any]]) -> dict[str, Resolution]:
        """Each row's MAST target: its cross-id, else the nearest target observed near it."""
        found: dict[str, Resolution] = {}
        by_position = []
        for row in rows:
            target = self.target_from_row(row)
            if target is not None:
                found[row["name"]] = Resolution(target, {"resolved_by": "catalog cross-id"})
            else:
                by_position.append(row)
        radius = self.pars.match_radius
        criteria = self.observation_criteria()

        def search(row: dict[str, Any]) -> Resolution:
            ra, dec = self.position_at_2000(row)
            observations = [o for o in self.mast.observations_near(ra, dec, radius / 3600.0,
                                                                   criteria)
                            if (o.get("distance") or 0.0) <= radius]
            if not observations:
                return Resolution(None, {"resolved_by": "position search",
                                         "reason": f"no {self.mission} target observed within "
                                                   f"{radius:g} arcsec"})
            nearest = observations[0]
            target = nearest["target_name"]
            return Resolution(target, {"resolved_by": "position search",
                                       "distance_arcsec": nearest.get("distance")},
                              observations=[o for o in observations if o["target_name"] == target])

        for row, resolution in zip(by_position, self.mast.map(search, by_position)):
            found[row["name"]] = resolution
        return found

    def position_at_2000(self, row: dict[str, Any]) -> tuple[float, float]:
        """The row's position moved to epoch 2000 with its proper motion (if it has one)."""
        ra, dec = float(row["ra"]), float(row["dec"])
        pmra, pmdec = row.get("pmra"), row.get("pmdec")
        if pmra is None or pmdec is None or not (math.isfinite(pmra) and math.isfinite(pmdec)):
            return ra, dec
        years = 2000.0 - self.pars.position_epoch
        dec2000 = dec + pmdec * years / 3.6e6
        ra2000 = ra + pmra * years / 3.6e6 / max(math.cos(math.radians(dec)), 1e-6)
        return ra2000 % 360.0, max(-90.0, min(90.0, dec2000))

    # -- planning a batch ------------------------------------------------------------------------
    def plan_sources(self, rows: list[dict[str, Any]]) -> dict[str, SourcePlan]:
        """The files each row's download will fetch, found with batched queries.

        Targets are resolved (:meth:`resolve_targets`), their observations
        asked for ``download_batch_size`` targets at a time, the products of
        the wanted observations 500 observations at a time, and (with
        ``use_cloud``) the S3 keys of the chosen files 50 at a time.

        Raises
        ------
        skyretriever.net.NetworkError
            If MAST cannot be queried (:class:`MastError` if it refused a query).
        """
        resolutions = self.resolve_targets(rows)
        observations = self._wanted_observations(resolutions)
        obsids = sorted({str(o["obsid"]) for found in observations.values() for o in found})
        products: dict[str, list[dict[str, Any]]] = {}
        for product in self.mast.products(obsids):
            products.setdefault(str(product.get("obsID") or product.get("parent_obsid")),
                                []).append(product)
        plans = {row["name"]: self._plan(resolutions[row["name"]],
                                         observations.get(row["name"], []), products)
                 for row in rows}
        if self.pars.use_cloud:
            chosen = [p for plan in plans.values() for p in plan.products]
            keys = self.mast.cloud_keys([p.data_uri for p in chosen]) if chosen else {}
            for product in chosen:
                product.cloud_key = keys.get(product.data_uri)
        return plans

    def _wanted_observations(self, resolutions: dict[str, Resolution]
                             ) -> dict[str, list[dict[str, Any]]]:
        """The wanted observations of each resolved source (targets queried in batches)."""
        named = sorted({r.target_name for r in resolutions.values()
                        if r.target_name is not None and r.observations is None})
        criteria = self.observation_criteria()
        batches = self.mast.map(lambda chunk: self.mast.observations(chunk, criteria),
                                in_chunks(named, self.pars.download_batch_size))
        by_target: dict[str, list[dict[str, Any]]] = {}
        for observation in (o for batch in batches for o in batch):
            target = str(observation.get("target_name", "")).lower()
            by_target.setdefault(target, []).append(observation)
        wanted = {}
        for name, resolution in resolutions.items():
            if resolution.target_name is None:
                continue
            found = (resolution.observations if resolution.observations is not None
                     else by_target.get(resolution.target_name.lower(), []))
            wanted[name] = [o for o in found if o.get("obsid") and self.wanted_observation(o)]
        return wanted

    def _plan(self, resolution: Resolution, observations: list[dict[str, Any]],
              products: dict[str, list[dict[str, Any]]]) -> SourcePlan:
        """One source's plan: its wanted light-curve files, in sequence and cadence order."""
        provenance = {"archive": "MAST", "mission": self.mission,
                      "target_name": resolution.target_name, **resolution.provenance}
        plan = SourcePlan(resolution.target_name, provenance=provenance)
        wanted = self.wanted_sequences()
        seen = set()
        for observation in observations:
            for product in products.get(str(observation["obsid"]), []):
                uri = product.get("dataURI") or ""
                if not uri or uri in seen or not self.wanted_product(product, observation):
                    continue
                sequence = self.product_sequence(product, observation)
                if wanted is not None and sequence is not None and sequence not in wanted:
                    continue
                seen.add(uri)
                plan.products.append(ProductInfo(
                    data_uri=uri, filename=product.get("productFilename") or uri.rsplit("/")[-1],
                    obs_id=str(observation.get("obs_id") or ""), obsid=str(observation["obsid"]),
                    sequence=sequence, exptime=self.product_exptime(product, observation),
                    author=str(observation.get("provenance_name") or ""),
                    size=as_int(product.get("size")),
                ))
        plan.products.sort(key=lambda p: (p.sequence if p.sequence is not None else -1,
                                          p.exptime or 0.0, p.filename))
        if resolution.target_name is not None and not plan.products:
            provenance["reason"] = f"MAST has no {self.mission} light curves of the asked kind"
        return plan

    def prepare_download(self, cat_rows: list[dict[str, Any]]) -> None:
        """Query MAST once for the whole batch; each source's download then only fetches files.

        If MAST refuses the batch query (``ERROR``), each source asks on its own
        (one bad target does not fail the others). If MAST cannot be reached
        at all, the batch's sources fail at once with that reason, rather than
        each retrying a dead archive; the next run tries them again.
        """
        try:
            plans = self.plan_sources(cat_rows)
        except MastError as error:
            log.warning("%s: batch query refused (%s); querying source by source",
                        self.name, error)
            plans = {}
        except NetworkError as error:
            reason = f"MAST query for the batch failed: {error}"
            plans = {row["name"]: SourcePlan(None, error=reason) for row in cat_rows}
        with self._runtime_lock:
            self._plans = plans

    def _take_plan(self, row: dict[str, Any]) -> SourcePlan:
        with self._runtime_lock:
            plan = self._plans.pop(row["name"], None)
        if plan is None:
            plan = self.plan_sources([row])[row["name"]]
        if plan.error is not None:
            raise NetworkError(plan.error)
        return plan

    # -- downloading ---------------------------------------------------------------------------
    def lightcurve_layout(self) -> LightcurveLayout:
        """What this mission's files must hold: its telescope and sequence keyword, and the
        columns the reduction reads (both fluxes: raw data is shared by every project)."""
        return LightcurveLayout(
            mission=self.mission, telescope=self.telescope,
            sequence_keyword=self.sequence_column.upper(), bjd_reference=self.bjd_reference,
            columns=("TIME", "SAP_FLUX", "SAP_FLUX_ERR", "PDCSAP_FLUX", "PDCSAP_FLUX_ERR",
                     self.quality_column.upper()),
        )

    def fits_folder(self, source_name: str, target_key: str = "") -> Path:
        """Where a source's FITS files are downloaded:
        ``DATA_ROOT/raw/<OBS>/fits/<source>[_<target key>]``.

        The target's key (:func:`~skyretriever.models.datasets.target_key`) keeps two
        stars of the same name (in two catalogs) out of each other's folder.
        """
        name = storage.sanitize_name(source_name)
        return (storage.data_root() / storage.RAW_FOLDER / self.name.upper() / "fits"
                / (f"{name}_{target_key[:10]}" if target_key else name))

    def fetch_file(self, product: ProductInfo, folder: Path) -> tuple[bytes, str]:
        """A product's file, in memory, and how it came: ``"cache"``, ``"s3"`` or ``"https"``.

        A complete file left in ``folder`` by an earlier try (:meth:`fetch` keeps
        what it fetched when a source fails part-way, so its next try fetches
        only what is missing) is reused. Otherwise the S3 bucket is tried first
        (when ``use_cloud`` and the file has a cloud key), then MAST HTTPS. A
        product whose data URI is not a MAST one is refused
        (:class:`~skyretriever.net.ForbiddenHost`).
        """
        check_data_uri(product.data_uri)
        kept = storage.ensure_inside_root(folder / storage.sanitize_name(product.filename))
        if kept.exists():
            try:
                content = kept.read_bytes()
                validate_fits_bytes(content)
                return content, "cache"
            except (ValueError, OSError):
                kept.unlink(missing_ok=True)
        if self.pars.use_cloud and product.cloud_key:
            try:
                return self.s3.read(product.cloud_key), "s3"
            except NetworkError as error:
                log.info("%s: S3 failed for %s (%s); using MAST HTTPS", self.name,
                         product.filename, error)
        return self.mast.read(product.data_uri), "https"

    def fetch(self, cat_row: dict[str, Any]) -> FetchedFiles:
        """Fetch every light-curve file MAST has for one catalog row (on a download thread).

        The files are fetched into memory: they are stored as the raw data once read
        (:meth:`source_files`). They are written to the source's FITS folder
        (:meth:`fits_folder`) only when ``keep_fits`` asks for them, or when a later
        file of the source fails, so that the next try fetches only what is missing.

        Raises
        ------
        skyretriever.net.NetworkError
            If a file could not be fetched (the source is then recorded as failed,
            and tried again by the next run).
        """
        plan = self._take_plan(cat_row)
        altdata: dict[str, Any] = {**plan.provenance, "mast_url": self.pars.mast_url,
                                   "products": [], "headers": {}}
        fetched = FetchedFiles(cat_row=dict(cat_row), plan=plan, altdata=altdata)
        if not plan.products:
            return fetched
        folder = self.fits_folder(cat_row["name"], self.raw_identity(cat_row)["target_key"])
        for product in plan.products:
            try:
                content, route = self.fetch_file(product, folder)
            except Exception:
                with contextlib.suppress(OSError):     # the error that matters is the fetch's
                    self._keep_files(fetched.files)
                raise
            path = folder / storage.sanitize_name(product.filename)
            fetched.files.append((product, route, str(path), content))
        if self.pars.keep_fits:
            self._keep_files(fetched.files)
        elif folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        return fetched

    @staticmethod
    def _keep_files(files: list[tuple[ProductInfo, str, str, bytes]]) -> None:
        """Write fetched files to their FITS folder (each atomically; those that came from
        it are there already)."""
        for _, route, path, content in files:
            if route != "cache":
                with storage.atomic_write(Path(path), beside=True) as temporary:
                    temporary.write_bytes(content)

    def parse(self, fetched: FetchedFiles) -> tuple[pd.DataFrame, dict]:
        """Read the fetched files (in a worker process): one table with a sequence column.

        Raises
        ------
        skyretriever.fitsfile.InvalidFileError
            If a file is whole but not a light curve of this mission, or is of another
            target than the row's (the kept copy of the file is deleted).
        """
        altdata = {**fetched.altdata, "products": [], "headers": {}}
        wanted = self.wanted_sequences()
        frames: list[pd.DataFrame] = []
        sequences: list[int] = []
        for product, route, path, content in fetched.files:
            try:
                frame, headers = read_lightcurve_fits(path, self.lightcurve_layout(), content)
            except InvalidFileError as error:
                Path(path).unlink(missing_ok=True)
                raise InvalidFileError(f"{product.data_uri} (from {route}) cannot be read as a "
                                       f"light curve: {error}") from error
            try:
                self.check_target(Path(path), headers["primary"], fetched.plan, fetched.cat_row)
            except WrongTargetError:
                Path(path).unlink(missing_ok=True)
                raise
            # MAST's rows name the sequence as users ask for it (K2's campaign 9 is one
            # campaign, though its files are named c91 and c92); the header is the fallback.
            sequence = product.sequence
            if sequence is None:
                sequence = as_int(headers["primary"].get(self.sequence_column.upper()))
            if wanted is not None and sequence not in wanted:
                continue
            sequences.append(-1 if sequence is None else sequence)
            frames.append(frame)
            altdata["products"].append({**product.to_dict(), "sequence": sequence,
                                        "route": route, "num_rows": len(frame)})
            altdata["headers"][product.filename] = headers
        if not frames:
            return pd.DataFrame(), altdata
        return one_table(frames, self._table_options(sequences)), altdata

    def download_from_observatory(self, cat_row: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
        """Every light curve MAST has for one catalog row, as one table with a sequence column
        (:meth:`fetch`, then :meth:`parse`).

        Raises
        ------
        skyretriever.net.NetworkError
            If MAST could not be queried or a file could not be fetched (the
            source is then recorded as failed, and tried again by the next run).
        skyretriever.fitsfile.InvalidFileError
            If a file is whole but not a light curve this reader knows.
        """
        return self.parse(self.fetch(cat_row))

    def source_files(self, fetched: FetchedFiles, altdata: dict[str, Any]
                     ) -> tuple[str, list[tuple[str, bytes]], dict[str, Any]] | None:
        """The FITS files the table was read from (those :meth:`parse` kept), to be kept as
        the raw data, byte for byte, with what :func:`lightcurves_from_files` needs."""
        kept = altdata.get("products") or []
        if not kept:
            return None
        content = {product.filename: data for product, _, _, data in fetched.files}
        files = [(product["filename"], content[product["filename"]]) for product in kept]
        sequences = [-1 if product["sequence"] is None else product["sequence"]
                     for product in kept]
        return FILE_READER, files, self._table_options(sequences)

    def _table_options(self, sequences: list[int]) -> dict[str, Any]:
        return {"sequences": sequences, "sequence_column": self.sequence_column,
                "band": self.band}

    def check_target(self, path: Path, primary: dict[str, Any], plan: SourcePlan,
                     cat_row: dict[str, Any]) -> None:
        """Refuse a file of another target than the row's (:func:`check_target`): by the id
        in ``target_name`` (the catalog's cross-id or the target found near the row), else by
        position within ``match_radius``."""
        check_target(path.name, primary, self.target_id_keyword, trailing_number(plan.target_name),
                     self.position_at_2000(cat_row), self.pars.match_radius,
                     repr(cat_row["name"]))

    # -- reducing --------------------------------------------------------------------------------
    def standardize(self, frame: pd.DataFrame, altdata: dict[str, Any]) -> pd.DataFrame:
        """Raw FITS columns to the standard ones, the mission's time, centroids and cadence.

        ``flux``/``flux_err`` come from PDCSAP (or SAP, by ``flux_column``);
        ``mag`` is made with the mission's zero point (NaN for fluxes <= 0);
        ``mjd`` is the barycentric date (TDB) minus 2400000.5.
        """
        flux_name = "pdcsap_flux" if self.pars.flux_column == "pdcsap" else "sap_flux"
        flux = frame[flux_name].to_numpy(dtype=float)
        flux_err = frame[f"{flux_name}_err"].to_numpy(dtype=float)
        zero_mag, zero_flux = self.zero_point
        with np.errstate(divide="ignore", invalid="ignore"):
            positive = np.where(flux > 0, flux, np.nan)
            mag = zero_mag - 2.5 * np.log10(positive / zero_flux)
            mag_err = 2.5 / np.log(10) * flux_err / positive

        def column(name: str, dtype: Any = float) -> np.ndarray:
            if name in frame:
                return frame[name].to_numpy(dtype=dtype)
            return np.full(len(frame), np.nan)

        return pd.DataFrame({
            "mjd": column("mjd"),
            "bjd": column("bjd"),
            self.time_column: column("time"),
            "flux": flux,
            "flux_err": flux_err,
            "mag": mag,
            "mag_err": mag_err,
            "filter": self.band,
            "quality": frame[self.quality_column].to_numpy(dtype=np.int64),
            "exptime": column("exptime"),
            "centroid_col": column("mom_centr1"),
            "centroid_row": column("mom_centr2"),
            "cadenceno": frame["cadenceno"].to_numpy(dtype=np.int64) if "cadenceno" in frame
            else np.full(len(frame), -1, dtype=np.int64),
            "sap_bkg": column("sap_bkg"),
            self.sequence_column: frame[self.sequence_column].to_numpy(dtype=np.int64),
        }, copy=False)      # columns as they are: the light curves gather theirs from them
