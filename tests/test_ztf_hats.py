"""ZTF route 'hats': the same stars through IRSA's light-curve API and through the HATS
collection (built with hats-import from the same simulated sky, served as the
ipac-irsa-ztf bucket) give the same objects, epochs, catflags and light curves, on SQLite
and PostgreSQL; only the row groups in the cones are read, each once per batch, footers
once per run, through bounded caches; bucket faults are survived; a broken partition fails
only the stars that need it."""

from __future__ import annotations

import shutil
from pathlib import Path

import astropy.units as u
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from astropy_healpix import HEALPix

from skyretriever.database import Session
from skyretriever.models import Lightcurve, RawPhotometry, Source
from skyretriever.net import NetworkError
from skyretriever.observatories.ztf import VirtualZTF, heliocentric_delay, hmjd_to_mjd
from skyretriever.observatories.ztf_hats import HatsLightCurves, StarCone
from skyretriever.testing import Faults, SimulatedArchives, SimulatedStar
from skyretriever.testing.hats import COLLECTION_PREFIX, HatsBucketService, build_ztf_collection
from skyretriever.testing.irsa import IrsaService
from ztf_support import QUICK_NET, gaia_catalog, ztf_sky, ztf_stars

#: The collection's partitions are all of this order (nside 4), so a boundary can be placed.
ORDER = 2
ROWS_PER_GROUP = 3


def _boundary_dec(ra: float, low: float, high: float) -> float:
    """A declination (at this ra) where the order-2 pixel changes, to 1e-7 degrees."""
    grid = HEALPix(nside=2**ORDER, order="nested")

    def pixel(dec: float) -> int:
        return int(grid.lonlat_to_healpix(ra * u.deg, dec * u.deg))

    assert pixel(low) != pixel(high)
    while high - low > 1e-7:
        middle = (low + high) / 2
        low, high = (middle, high) if pixel(middle) == pixel(low) else (low, middle)
    return low


def _edge_star() -> SimulatedStar:
    """A star 1" south of a partition boundary in 2016 whose ZTF objects (2018-2024, moving
    1.5"/yr north) lie across it, in the next partition."""
    boundary = _boundary_dec(100.0, 20.0, 40.0)
    dec_2000 = boundary - 1.0 / 3600 - 16 * 1.5 / 3600
    return SimulatedStar("edge_wd", 100.0, dec_2000, gaia_id=7006, gmag=16.2, pmdec=1500.0)


def _cluster() -> list[SimulatedStar]:
    """Three stars a few arcminutes apart: one partition serves them all."""
    return [SimulatedStar(f"cluster_{n}", 200.0 + 0.05 * n, 40.0 + 0.03 * n, gaia_id=7010 + n,
                          gmag=15.5 + n, pmra=-40.0 * n) for n in range(3)]


@pytest.fixture(scope="module")
def sky():
    return ztf_sky([*ztf_stars(), _edge_star(), *_cluster()])


@pytest.fixture(scope="module")
def bucket(sky, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hats") / "ipac-irsa-ztf"
    # Row groups of 3 objects: a star's cone meets some of its partition's groups, not all.
    build_ztf_collection(sky, root, constant_order=ORDER, rows_per_group=ROWS_PER_GROUP)
    return root


@pytest.fixture
def archives(sky, bucket):
    with SimulatedArchives(sky) as archives:
        archives.add_irsa()
        archives.add_ztf_hats(bucket)
        yield archives


def catalog_rows(sky, folder: Path, **options) -> list[dict]:
    frame = pd.read_csv(gaia_catalog(sky, folder, **options))
    return [{key: (None if pd.isna(value) else value) for key, value in row.items()}
            for row in frame.to_dict("records")]


def assert_same_raw(api: pd.DataFrame, hats: pd.DataFrame, name: str) -> None:
    """The same objects and epochs; the columns both have hold the same values."""
    assert len(api) == len(hats), name
    if len(api) == 0:
        return
    api = api.sort_values(["oid", "hjd"], ignore_index=True)
    np.testing.assert_array_equal(api["oid"].to_numpy(), hats["oid"].to_numpy())
    np.testing.assert_array_equal(api["catflags"].to_numpy(), hats["catflags"].to_numpy())
    np.testing.assert_array_equal(api["filtercode"].astype(str).to_numpy(),
                                  hats["filtercode"].to_numpy())
    for column in ("field", "ccdid", "qid"):
        np.testing.assert_array_equal(api[column].to_numpy(), hats[column].to_numpy())
    # hjd to float64 precision at 2.4e6 days; mjd from the inverted light time, < 0.1 s.
    np.testing.assert_allclose(hats["hjd"], api["hjd"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(hats["mjd"], api["mjd"], rtol=0, atol=1e-6)
    # The collection stores magnitudes as float32.
    np.testing.assert_allclose(hats["mag"], api["mag"], rtol=0, atol=2e-6)
    np.testing.assert_allclose(hats["magerr"], api["magerr"], rtol=0, atol=2e-7)
    np.testing.assert_allclose(hats["clrcoeff"], api["clrcoeff"], rtol=0, atol=2e-6)


def assert_same_lightcurves(api: list[Lightcurve], hats: list[Lightcurve], name: str) -> None:
    assert len(api) == len(hats), name
    for one, other in zip(api, hats):
        assert (one.series_number, one.series_total, one.filter) == \
               (other.series_number, other.series_total, other.filter), name
        a, h = one.data, other.data
        assert len(a) == len(h)
        np.testing.assert_array_equal(a["oid"].to_numpy(), h["oid"].to_numpy())
        np.testing.assert_array_equal(a["quality"].to_numpy(), h["quality"].to_numpy())
        np.testing.assert_array_equal(a["qflag"].to_numpy(), h["qflag"].to_numpy())
        np.testing.assert_allclose(h["mjd"], a["mjd"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(h["mag"], a["mag"], rtol=0, atol=2e-6)
        np.testing.assert_allclose(h["flux"], a["flux"], rtol=1e-5)
        np.testing.assert_allclose(h["flux_err"], a["flux_err"], rtol=1e-5)
        assert h["exptime"].isna().all() and (a["exptime"] == 30.0).all()


def test_hmjd_to_mjd_inverts_the_heliocentric_delay():
    mjd = np.linspace(58200.0, 60500.0, 400)
    largest = {}
    for ra, dec in ((0.0, 0.0), (100.0, 28.0), (280.0, -29.0), (270.0, 66.56)):
        delay = heliocentric_delay(mjd, ra, dec)
        largest[(ra, dec)] = np.abs(delay).max()
        np.testing.assert_allclose(hmjd_to_mjd(mjd + delay, ra, dec), mjd, rtol=0, atol=1e-9)
    # Up to 1.017 AU of light time in the ecliptic, almost none towards its pole.
    assert 0.0055 < largest[(0.0, 0.0)] < 0.0059
    assert largest[(270.0, 66.56)] < 0.0001


def test_both_routes_store_the_same_rows_and_light_curves(project_factory, archives, sky,
                                                          tmp_path):
    by_oid = IrsaService(sky).objects_of("by_oid")[1]
    catalog = gaia_catalog(sky, tmp_path, mag_offsets={"wrong_mag": 4.0},
                           oids={"by_oid": by_oid.oid})
    api = project_factory("api_route", obs_names=["ZTF"], catalog_kwargs={"filename": catalog},
                          ZTF=archives.ztf_kwargs(**QUICK_NET))
    hats = project_factory("hats_route", obs_names=["ZTF"],
                           catalog_kwargs={"filename": catalog},
                           ZTF=archives.ztf_hats_kwargs(**QUICK_NET))
    assert api.run().failures == []
    archives.reset_stats()
    summary = hats.run()
    assert summary.failures == []
    assert archives.irsa.count() == 0  # the hats route never asks the API
    # Only the collection's metadata and the partitions' Parquet files are asked for: not
    # the margin catalog (each star's whole cone chooses the partitions).
    paths = {record.path for record in archives.ztf_hats.records}
    assert all(p.startswith(f"/ipac-irsa-ztf/{COLLECTION_PREFIX}/") or p == "/ipac-irsa-ztf"
               for p in paths), paths
    assert not [p for p in paths if "_10arcs" in p]
    assert any(p.endswith("/part0.snappy.parquet") for p in paths)

    with Session() as session:
        def raws(project) -> dict[str, RawPhotometry]:
            download_hash = project.observatories["ztf"].download_hash
            rows = session.scalars(sa.select(RawPhotometry).where(
                RawPhotometry.download_hash == download_hash,
                RawPhotometry.observatory == "ztf"))
            return {raw.source_name: raw for raw in rows}

        def lightcurves(project: str, name: str) -> list[Lightcurve]:
            return list(session.scalars(
                sa.select(Lightcurve).join(Source).where(Source.name == name,
                                                         Source.project == project)
                .order_by(Lightcurve.series_number)))

        api_raws, hats_raws = raws(api), raws(hats)
        assert sorted(api_raws) == sorted(hats_raws) == sorted(s.name for s in sky.stars)
        for name, api_raw in api_raws.items():
            hats_raw = hats_raws[name]
            assert api_raw.download_hash != hats_raw.download_hash
            assert hats_raw.altdata["route"] == "hats"
            assert hats_raw.altdata["data_release"] == "ztf_dr23_lc-hats"
            assert api_raw.is_empty == hats_raw.is_empty, name
            assert hats_raw.altdata["objects"] == api_raw.altdata["objects"], name
            if not api_raw.is_empty:
                assert_same_raw(api_raw.data, hats_raw.data, name)
            assert_same_lightcurves(lightcurves("api_route", name),
                                    lightcurves("hats_route", name), name)

        # What the comparison covers: a blend dropped, a wrong magnitude, the south, an id.
        blended = hats_raws["blended"]
        kept = {int(o) for lc in lightcurves("hats_route", "blended") for o in lc.data["oid"]}
        assert len(blended.altdata["objects"]) > len(kept) > 0
        assert not hats_raws["wrong_mag"].is_empty
        assert lightcurves("hats_route", "wrong_mag") == []
        assert hats_raws["south_wd"].is_empty
        assert set(hats_raws["by_oid"].data["oid"]) == {by_oid.oid}
        assert hats_raws["by_oid"].altdata["resolved_by"] == "catalog ztf_oid"
        # The star near the pixel edge: its objects are in the partition next to its
        # catalog position's pixel (which holds no objects, so has no partition).
        edge = hats_raws["edge_wd"]
        grid = HEALPix(nside=2**ORDER, order="nested")
        own = int(grid.lonlat_to_healpix(edge.ra * u.deg, edge.dec * u.deg))
        assert edge.altdata["partitions"] != [f"Norder={ORDER}/Npix={own}"]
        assert len(edge.altdata["partitions"]) == 1
        assert len(lightcurves("hats_route", "edge_wd")) == 2 * 6 or \
            len(lightcurves("hats_route", "edge_wd")) == 3 * 6


def test_filters_and_bands_match_the_api(archives, sky, tmp_path):
    rows = catalog_rows(sky, tmp_path)
    options = {"bands": ["g", "i"], "time_range": [58500.0, 59300.0],
               "bad_catflags_mask": 32768, **QUICK_NET}
    api = VirtualZTF(**archives.ztf_kwargs(**options))
    hats = VirtualZTF(**archives.ztf_hats_kwargs(**options))
    hats.prepare_download(rows)
    seen = 0
    for row in rows:
        api_raw, hats_raw = api.download(row), hats.download(row)
        assert_same_raw(api_raw.data, hats_raw.data, row["name"])
        if len(hats_raw.data):
            seen += 1
            assert set(hats_raw.data["filtercode"]) <= {"zg", "zi"}
            assert hats_raw.data["mjd"].between(58500.0, 59300.0).all()
            assert (hats_raw.data["catflags"] & 32768 == 0).all()
    assert seen >= 4


def _row_group_spans(path: Path) -> list[tuple[int, int]]:
    """Each row group's bytes ``[start, end)`` in a Parquet file."""
    metadata = pq.ParquetFile(path).metadata
    spans = []
    for group in range(metadata.num_row_groups):
        chunks = [metadata.row_group(group).column(c) for c in range(metadata.num_columns)]
        start = min(c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset
                    for c in chunks)
        spans.append((start, start + sum(c.total_compressed_size for c in chunks)))
    return spans


def _reads(server, bucket: Path) -> dict[str, list[tuple[int, int]]]:
    """The byte ranges ``[start, end)`` of each partition file's GETs, by partition."""
    reads: dict[str, list[tuple[int, int]]] = {}
    for record in server.records:
        if record.method == "GET" and record.path.endswith("part0.snappy.parquet"):
            first, last = (int(b) for b in record.headers["range"].split("=")[1].split("-"))
            reads.setdefault(record.path.split("/", 2)[2], []).append((first, last + 1))
    return reads


def _groups_read(key: str, ranges: list[tuple[int, int]], bucket: Path) -> tuple[int, set[int]]:
    """How many footer reads (the file's tail) and which row groups the other ranges cover."""
    path = bucket / key
    size, spans = path.stat().st_size, _row_group_spans(path)
    footers = [r for r in ranges if r[1] == size]
    data = [r for r in ranges if r[1] != size]
    groups = {g for g, (a, b) in enumerate(spans) for first, end in data if first < b and end > a}
    return len(footers), groups


def test_each_row_group_is_read_once_per_batch_and_each_footer_once(archives, sky, bucket,
                                                                     tmp_path):
    rows = catalog_rows(sky, tmp_path)
    hats = VirtualZTF(**archives.ztf_hats_kwargs(**QUICK_NET))
    hats.hats_collection().structure()
    archives.reset_stats()
    hats.prepare_download(rows)
    partitions: dict[str, int] = {}
    for row in rows:
        for name in hats.fetch(row).provenance["partitions"]:
            partitions[name] = partitions.get(name, 0) + 1
    assert max(partitions.values()) >= 2  # some partitions serve several stars
    reads = _reads(archives.ztf_hats, bucket)
    assert sorted(k.split("/dataset/")[1].replace("Dir=0/", "") for k in reads) == \
        sorted(f"{name}/part0.snappy.parquet" for name in partitions)
    longest_run = 0
    for key, ranges in reads.items():
        footers, groups = _groups_read(key, ranges, bucket)
        assert footers == 1 and groups, (key, ranges)
        # No byte of a file is asked for twice in a batch: each row group is read once.
        data = sorted(r for r in ranges if r[1] != (bucket / key).stat().st_size)
        assert all(a[1] <= b[0] for a, b in zip(data, data[1:])), data
        longest_run = max(longest_run, *(len(_groups_read(key, [r], bucket)[1]) for r in data))
    # Nothing else is asked: a listing of each partition's folder and the ranged GETs, no
    # HEAD before a file's reads.
    assert archives.ztf_hats.count(method="HEAD") == 0
    assert archives.ztf_hats.count() == len(reads) + sum(len(r) for r in reads.values())
    # A row group kept from a run read as one holds only its own memory, no buffer of the
    # others (a slice of the run would keep the whole run alive, beyond the cache's limit).
    assert longest_run >= 2
    kept = hats.hats_collection().row_groups.values()
    buffers = [{b.address for column in table.columns for chunk in column.chunks
                for b in chunk.buffers() if b is not None and b.size} for table in kept]
    assert sum(len(b) for b in buffers) == len(set().union(*buffers))
    assert hats.hats_collection().row_groups.size == \
        sum(table.get_total_buffer_size() for table in kept)
    # Footers are kept serialized (parsed they take ten times the memory) and parse back
    # to the files' own.
    kept_footers = [file for files in hats.hats_collection().footers.values() for file in files]
    assert len(kept_footers) == len(reads)
    for file in kept_footers:
        assert file.metadata.equals(pq.ParquetFile(bucket / file.path.split("/", 1)[1]).metadata)

    # The next batch, the same stars: footers and row groups come from the caches.
    archives.reset_stats()
    hats.prepare_download(rows)
    assert archives.ztf_hats.count() == 0
    assert sum(len(hats.fetch(row).frame) for row in rows) > 0


def test_only_the_row_groups_in_a_cone_are_read(archives, sky, bucket, tmp_path):
    rows = {row["name"]: row for row in catalog_rows(sky, tmp_path)}
    api = VirtualZTF(**archives.ztf_kwargs(**QUICK_NET))
    opened = VirtualZTF(**archives.ztf_hats_kwargs(**QUICK_NET)).hats_collection()
    # Row groups are not kept between batches here, so each batch reads its own.
    collection = HatsLightCurves(opened.url, opened.endpoint_url, opened.client,
                                 row_group_cache_bytes=0)
    star = rows["cluster_0"]
    cone = StarCone("cluster_0", star["ra"], star["dec"], api.search_radius(star))
    expected = api.download(star).data
    for attempt in range(2):
        archives.reset_stats()
        tables, partitions = collection.read([cone], ["g", "r", "i"])
        assert_same_raw(expected, tables["cluster_0"], "cluster_0")
        [[key, ranges]] = _reads(archives.ztf_hats, bucket).items()
        footers, groups = _groups_read(key, ranges, bucket)
        assert footers == (1 if attempt == 0 else 0)  # the footer is kept
        # The file's row groups holding the star's objects are read, those holding only
        # its neighbours' (arcminutes away, in the same partition) are not.
        oids = pq.ParquetFile(bucket / key)
        holds = [set(oids.read_row_group(g, columns=["objectid"])["objectid"].to_pylist())
                 for g in range(oids.metadata.num_row_groups)]
        own = {int(o) for o in expected["oid"]}
        assert groups == {g for g, found in enumerate(holds) if found & own}
        assert 0 < len(groups) < len(holds)
        assert collection.row_groups.size == 0

    # Every star, one batch each, through a cache that holds a third of what they read:
    # it never holds more, and the answers are those of an unbounded cache.
    cones = [StarCone(name, row["ra"], row["dec"], api.search_radius(row))
             for name, row in rows.items()]
    unbounded = HatsLightCurves(opened.url, opened.endpoint_url, opened.client)
    expected = unbounded.read(cones, ["g", "r", "i"])[0]
    limit = unbounded.row_groups.size // 3
    bounded = HatsLightCurves(opened.url, opened.endpoint_url, opened.client,
                              row_group_cache_bytes=limit)
    for cone in cones:
        found = bounded.read([cone], ["g", "r", "i"])[0][cone.name]
        pd.testing.assert_frame_equal(found, expected[cone.name])
        assert bounded.row_groups.size <= limit
    assert 0 < len(bounded.row_groups) < len(unbounded.row_groups)


def test_bucket_faults_are_survived(archives, sky, tmp_path):
    rows = catalog_rows(sky, tmp_path)
    clean = VirtualZTF(**archives.ztf_hats_kwargs(**QUICK_NET))
    clean.prepare_download(rows)
    expected = {row["name"]: clean.download(row).data for row in rows}
    # S3 throttles with 503 SlowDown (unavailable_rate); 429 too, now and then.
    archives.set_faults(Faults(unavailable_rate=0.15, throttle_rate=0.05, reset_rate=0.1,
                               truncate_rate=0.2, retry_after=0, seed=5),
                        servers=["ztf_hats"])
    archives.reset_stats()
    faulty = VirtualZTF(**archives.ztf_hats_kwargs(max_attempts=8, backoff=0.0, timeout=10.0))
    faulty.prepare_download(rows)
    for row in rows:
        pd.testing.assert_frame_equal(faulty.download(row).data, expected[row["name"]])
    faults = archives.ztf_hats.records
    assert sum(1 for r in faults if r.fault) >= 5, [r.fault for r in faults]


def test_a_broken_partition_fails_only_its_stars(project_factory, archives, sky, bucket,
                                                 tmp_path):
    rows = catalog_rows(sky, tmp_path)
    probe = VirtualZTF(**archives.ztf_hats_kwargs(**QUICK_NET))
    probe.prepare_download(rows)
    partitions = {row["name"]: probe.fetch(row).provenance["partitions"] for row in rows}
    broken = partitions["by_oid"][0]
    hit = {name for name, found in partitions.items() if broken in found}
    assert hit and len(hit) < len(rows)
    # A copy of the bucket whose partition file is not Parquet any more.
    copy = tmp_path / "bucket"
    shutil.copytree(bucket, copy)
    order, pixel = (int(part.split("=")[1]) for part in broken.split("/"))
    damaged = next(copy.rglob(f"Norder={order}/Dir=*/Npix={pixel}/part0.snappy.parquet"))
    damaged.write_bytes(b"PAR1 this is not a parquet file " * 40)
    archives.add_server("ztf_hats_broken", [HatsBucketService(copy)])
    kwargs = archives.ztf_hats_kwargs(
        s3_endpoint_url=archives.servers["ztf_hats_broken"].url, **QUICK_NET)

    catalog = gaia_catalog(sky, tmp_path, name="broken.csv")
    project = project_factory("broken_partition", obs_names=["ZTF"],
                              catalog_kwargs={"filename": catalog}, ZTF=kwargs)
    summary = project.run()
    failed = dict(summary.failures)
    assert set(failed) == hit
    for reason in failed.values():
        assert f"Norder={order}/Npix={pixel}" in reason and "could not be read" in reason
    with Session() as session:
        statuses = dict(session.execute(sa.select(Source.name, Source.status).where(
            Source.project == "broken_partition")).all())
    assert {name for name, status in statuses.items() if status == "done"} == \
        {row["name"] for row in rows} - hit

    # Without a project: the error reaches the one source, as a NetworkError.
    direct = VirtualZTF(**kwargs)
    direct.prepare_download(rows)
    for row in rows:
        if row["name"] in hit:
            with pytest.raises(NetworkError, match="could not be read"):
                direct.fetch(row)
        else:
            direct.fetch(row)


def test_lsdb_reads_the_simulated_bucket_unchanged(archives, sky):
    """The simulated bucket speaks S3 as lsdb (over s3fs) expects: a cone search finds the
    objects the simulated API serves for the star."""
    import lsdb
    from upath import UPath

    path = UPath(f"s3://ipac-irsa-ztf/{COLLECTION_PREFIX}", anon=True,
                 client_kwargs={"endpoint_url": archives.ztf_hats.url},
                 use_listings_cache=False, skip_instance_cache=True)
    star = sky.star("blended")
    found = lsdb.open_catalog(path, columns=["objectid", "objra", "objdec", "lightcurve"],
                              search_filter=lsdb.ConeSearch(star.ra, star.dec, 30.0)
                              ).compute(progress_bar=False)
    expected = IrsaService(sky).objects_of(star)
    assert sorted(found["objectid"]) == sorted(o.oid for o in expected)
    epochs = found["lightcurve"].nest.to_flat()
    assert len(epochs) == sum(len(o) for o in expected)
