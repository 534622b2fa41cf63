"""The simulated ZTF light-curve HATS collection in IRSA's bucket ``ipac-irsa-ztf``.

:func:`build_ztf_collection` writes, with hats-import, the collection of the
same ZTF objects and epochs the simulated light-curve API
(:mod:`skyretriever.testing.irsa`) serves: one row per object (``objectid``,
``filterid``, ``fieldid``, ``rcid``, ``objra``, ``objdec`` as float32,
``nepochs``) and a nested ``lightcurve`` column (``hmjd``, ``mag``,
``magerr``, ``clrcoeff``, ``catflags``), partitioned by HEALPix pixel
(``dataset/Norder=K/Dir=D/Npix=N/part0.snappy.parquet``), with a margin
catalog, under ``contributed/dr23/lc/hats``.

:class:`HatsBucketService` serves a folder as a public S3 bucket (``GET`` with
``Range``, ``HEAD``, ListObjectsV2), with the server's fault knobs.

Examples
--------
>>> from skyretriever.testing import SimulatedSky, SimulatedStar
>>> sky = SimulatedSky([SimulatedStar("wd", 10.0, 20.0, gmag=16.0)])
>>> table = ztf_collection_table(sky)
>>> table.column("objectid").to_pylist() == [o.oid for o in ztf_objects(sky.stars[0])]
True
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from skyretriever.testing.irsa import BAND_NUMBERS, ZtfObject, ztf_objects
from skyretriever.testing.s3 import S3Service
from skyretriever.testing.sky import SimulatedSky

__all__ = ["COLLECTION_PREFIX", "HATS_BUCKET", "HatsBucketService", "build_ztf_collection",
           "ztf_collection_table"]

HATS_BUCKET = "ipac-irsa-ztf"
#: Where the light-curve collection lies in the bucket (DR23), and its catalog's folder.
COLLECTION_PREFIX = "contributed/dr23/lc/hats"
CATALOG_NAME = "ztf_dr23_lc-hats"
MARGIN_ARCSEC = 10.0

_LIGHTCURVE = pa.struct([
    ("hmjd", pa.list_(pa.float64())), ("mag", pa.list_(pa.float32())),
    ("magerr", pa.list_(pa.float32())), ("clrcoeff", pa.list_(pa.float32())),
    ("catflags", pa.list_(pa.int32())),
])


def _objects(sky: SimulatedSky) -> list[ZtfObject]:
    return [obj for star in sky.stars for obj in ztf_objects(star, sky.seed)]


def ztf_collection_table(sky: SimulatedSky) -> pa.Table:
    """One row per ZTF object of the sky, as IRSA's Parquet light curves hold them."""
    objects = _objects(sky)

    def column(name: str, dtype) -> pa.Array:
        return pa.array([np.asarray(o.table[name], dtype=dtype) for o in objects],
                        type=pa.list_(pa.from_numpy_dtype(dtype)))

    hmjd = pa.array([np.asarray(o.table["hjd"], dtype=float) - 2400000.5 for o in objects],
                    type=pa.list_(pa.float64()))
    lightcurve = pa.StructArray.from_arrays(
        [hmjd, column("mag", np.float32), column("magerr", np.float32),
         column("clrcoeff", np.float32), column("catflags", np.int32)],
        fields=list(_LIGHTCURVE))
    return pa.table({
        "objectid": pa.array([o.oid for o in objects], type=pa.int64()),
        "filterid": pa.array([BAND_NUMBERS[o.filtercode] for o in objects], type=pa.int8()),
        "fieldid": pa.array([int(o.table["field"][0]) for o in objects], type=pa.int16()),
        "rcid": pa.array([(int(o.table["ccdid"][0]) - 1) * 4 + int(o.table["qid"][0]) - 1
                          for o in objects], type=pa.int8()),
        "objra": pa.array([o.ra for o in objects], type=pa.float32()),
        "objdec": pa.array([o.dec for o in objects], type=pa.float32()),
        "nepochs": pa.array([len(o) for o in objects], type=pa.int64()),
        "lightcurve": lightcurve,
    })


def build_ztf_collection(sky: SimulatedSky, root: Path | str, *, table: pa.Table | None = None,
                         pixel_threshold: int = 2_000, highest_order: int = 7,
                         constant_order: int = -1, rows_per_group: int | None = None) -> Path:
    """Write the sky's ZTF objects as a HATS collection with hats-import; return its folder.

    The collection is ``root / COLLECTION_PREFIX`` (so ``root`` is the bucket's
    folder): the catalog ``ztf_dr23_lc-hats`` and a 10-arcsec margin. (No
    ``objectid`` index: hats-import 0.10's index step wants dask 2025.3, the project
    pins a later one.) ``pixel_threshold`` (objects per partition) sets how
    finely the sky is split, unless ``constant_order`` (>= 0) fixes the partitions'
    order. ``rows_per_group`` splits each partition file into Parquet row groups of that
    many objects (``None``: one group), which readers filtering on ``_healpix_29``
    skip. ``table`` replaces the sky's objects (benchmarks).
    """
    from dask.distributed import Client
    from hats_import.collection.arguments import CollectionArguments
    from hats_import.pipeline import pipeline_with_client

    root = Path(root)
    collection = root / COLLECTION_PREFIX
    staging = root.parent / f".{root.name}-staging"
    staging.mkdir(parents=True, exist_ok=True)
    source = staging / "objects.parquet"
    pq.write_table(table if table is not None else ztf_collection_table(sky), source)
    arguments = (
        CollectionArguments(output_path=collection.parent, output_artifact_name=collection.name,
                            tmp_dir=staging / "tmp", progress_bar=False, resume=False)
        .catalog(input_file_list=[str(source)], file_reader="parquet", ra_column="objra",
                 dec_column="objdec", sort_columns="objectid",
                 output_artifact_name=CATALOG_NAME, pixel_threshold=pixel_threshold,
                 highest_healpix_order=highest_order, constant_healpix_order=constant_order,
                 npix_suffix="/",
                 row_group_kwargs={"num_rows": rows_per_group} if rows_per_group else None,
                 npix_parquet_name="part0.snappy.parquet")
        .add_margin(margin_threshold=MARGIN_ARCSEC, is_default=True)
    )
    with Client(processes=False, n_workers=1, threads_per_worker=1,
                dashboard_address=":0") as client:
        pipeline_with_client(arguments, client)
    shutil.rmtree(staging, ignore_errors=True)
    return collection


class HatsBucketService(S3Service):
    """A folder served as a public S3 bucket (IRSA's ``ipac-irsa-ztf`` by default)."""

    name = "hats-s3"

    def __init__(self, root: Path | str, bucket: str = HATS_BUCKET) -> None:
        super().__init__(SimulatedSky([]), bucket)
        self.root = Path(root)

    def keys(self, prefix: str) -> list[str]:
        start = self.root / prefix if (self.root / prefix).is_dir() else self.root
        return sorted(key for path in start.rglob("*") if path.is_file()
                      and (key := path.relative_to(self.root).as_posix()).startswith(prefix))

    def size(self, key: str) -> int:
        return (self.root / key).stat().st_size

    def content(self, key: str) -> bytes | None:
        path = (self.root / key).resolve()
        if not path.is_file() or self.root.resolve() not in path.parents:
            return None
        return path.read_bytes()
