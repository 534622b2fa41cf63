"""The MAST client and the mission observatories against the simulated archives (no database)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from skyretriever.net import NetworkError, RetriesExhausted
from skyretriever.observatories.k2 import VirtualK2
from skyretriever.observatories.kepler import VirtualKepler
from skyretriever.observatories.mast_client import MastError
from skyretriever.observatories.tess import VirtualTESS
from skyretriever.parameters import ParameterError
from skyretriever.testing import Faults, SimulatedArchives, SimulatedSky, SimulatedStar
from tests.mast_support import QUICK, catalog_rows, invoked, small_sky, tess_stars


@pytest.fixture(scope="module")
def sky():
    return small_sky()


@pytest.fixture
def archives(sky, data_root):
    with SimulatedArchives(sky) as archives:
        yield archives


def tess(archives, **kwargs) -> VirtualTESS:
    return VirtualTESS(**archives.observatory_kwargs(**{**QUICK, **kwargs}))


def download_all(obs, rows):
    obs.prepare_download(rows)
    return {row["name"]: obs.download(row) for row in rows}


def test_a_batch_costs_one_query_of_each_kind(archives, sky):
    rows = catalog_rows(tess_stars())
    obs = tess(archives)
    obs.prepare_download(rows)
    assert len(invoked(archives.mast, "Mast.Caom.Filtered")) == 1
    assert len(invoked(archives.mast, "Mast.Caom.Products")) == 1
    assert archives.mast.count("/api/v0.1/path_lookup") == 1
    (query,) = invoked(archives.mast, "Mast.Caom.Filtered")
    targets = next(f["values"] for f in query["params"]["filters"]
                   if f["paramName"] == "target_name")
    assert sorted(targets) == sorted(str(star.tic_id) for star in tess_stars())
    before = archives.mast.count()
    raws = {row["name"]: obs.download(row) for row in rows}
    assert archives.mast.count() == before  # the files came from S3, nothing more was asked
    assert archives.s3.count() == 5  # 2 + 2 + 1 sectors at 2-min cadence
    assert sorted(raws["planet_host"].data["sector"].unique()) == [1, 2]
    assert raws["no_data_star"].data.empty
    assert "no TESS light curves" in raws["no_data_star"].altdata["reason"]
    products = raws["quiet_star"].altdata["products"]
    assert [p["sequence"] for p in products] == [3, 4]
    assert {p["route"] for p in products} == {"s3"}
    assert all(p["obs_id"].startswith("tess") and p["obsid"] for p in products)
    headers = raws["quiet_star"].altdata["headers"][products[0]["filename"]]
    assert headers["primary"]["SECTOR"] == 3 and headers["lightcurve"]["BJDREFI"] == 2457000
    assert "TTYPE1" not in headers["lightcurve"]


def test_batch_size_bounds_the_targets_per_query(archives):
    obs = tess(archives, download_batch_size=2)
    obs.prepare_download(catalog_rows(tess_stars()))
    queries = invoked(archives.mast, "Mast.Caom.Filtered")
    sizes = sorted(len(next(f["values"] for f in q["params"]["filters"]
                            if f["paramName"] == "target_name")) for q in queries)
    assert sizes == [2, 2]


def test_tic_match_uses_position_and_magnitude(archives, sky):
    star = sky.star("planet_host")
    neighbour = next(row for row in sky.tic if row["ID"] != str(star.tic_id)
                     and abs(row["ra"] - star.ra) < 0.01 and abs(row["dec"] - star.dec) < 0.01)
    base = catalog_rows([star], ids=False)[0]
    rows = [
        dict(base, name="at_star"),
        # At the neighbour's position but with the star's magnitude: the star (a few arcsec on).
        dict(base, name="mag_says_star", ra=neighbour["ra"], dec=neighbour["dec"]),
        # The neighbour's magnitude too: the neighbour, which MAST has no data for.
        dict(base, name="neighbour", ra=neighbour["ra"], dec=neighbour["dec"],
             mag=neighbour["Tmag"]),
        dict(base, name="nowhere", ra=star.ra + 1.0),
    ]
    raws = download_all(tess(archives), rows)
    assert raws["at_star"].altdata["target_name"] == str(star.tic_id)
    assert raws["at_star"].altdata["resolved_by"] == "TIC cone"
    assert raws["at_star"].altdata["distance_arcsec"] < 0.01
    assert raws["mag_says_star"].altdata["target_name"] == str(star.tic_id)
    assert 3.0 <= raws["mag_says_star"].altdata["distance_arcsec"] <= 6.0
    assert raws["neighbour"].altdata["target_name"] == neighbour["ID"]
    assert raws["neighbour"].data.empty
    assert raws["nowhere"].data.empty and raws["nowhere"].altdata["target_name"] is None
    assert "no TIC star within 10 arcsec" in raws["nowhere"].altdata["reason"]
    assert len(invoked(archives.mast, "Mast.Catalogs.Tic.Cone")) == 4
    nearest = download_all(tess(archives, match_mag_tolerance=None),
                           [dict(base, name="mag_says_star", ra=neighbour["ra"],
                                 dec=neighbour["dec"])])
    assert nearest["mag_says_star"].altdata["target_name"] == neighbour["ID"]


def test_gaia_ids_resolve_in_one_tic_query(archives, sky):
    star = sky.star("planet_host")
    row = catalog_rows([star], ids=False, gaia_id=star.gaia_id)[0]
    raws = download_all(tess(archives), [row])
    assert raws[star.name].altdata["resolved_by"] == "gaia_id"
    assert raws[star.name].altdata["target_name"] == str(star.tic_id)
    (query,) = invoked(archives.mast, "Mast.Catalogs.Filtered.Tic.Rows")
    assert query["params"]["filters"] == [{"paramName": "GAIA", "values": [str(star.gaia_id)]}]
    assert not invoked(archives.mast, "Mast.Catalogs.Tic.Cone")


def test_proper_motion_moves_catalog_positions_to_2000(data_root):
    mover = SimulatedStar("mover", 50.0, 20.0, tic_id=303_000_001, tmag=9.0, pmra=0.0,
                          pmdec=2000.0, tess_sectors=(1,))
    sky = small_sky([mover], neighbours=False)
    # Catalog position at epoch 2016: 32 arcsec north of the TIC's epoch-2000 position.
    row = catalog_rows([mover], ids=False, dec=20.0 + 2000.0 * 16 / 3.6e6, pmra=0.0,
                       pmdec=2000.0)[0]
    with SimulatedArchives(sky) as archives:
        moved = download_all(tess(archives), [row])["mover"]
        unmoved = download_all(tess(archives), [dict(row, pmra=None, pmdec=None)])["mover"]
    assert moved.altdata["target_name"] == "303000001" and len(moved.data) > 0
    assert unmoved.data.empty


def test_files_come_from_s3_with_https_as_fallback(data_root):
    stars = [SimulatedStar("cloudy", 10.0, 10.0, tic_id=304_000_001, tess_sectors=(1, 2)),
             SimulatedStar("local", 20.0, 10.0, tic_id=304_000_002, tess_sectors=(3,),
                           in_cloud=False)]
    sky = small_sky(stars)
    rows = catalog_rows(stars)
    with SimulatedArchives(sky) as archives:
        routes = {name: [p["route"] for p in raw.altdata["products"]]
                  for name, raw in download_all(tess(archives), rows).items()}
        assert routes == {"cloudy": ["s3", "s3"], "local": ["https"]}
        assert archives.s3.count() == 2 and archives.mast.count("/api/v0.1/Download/file") == 1

        archives.reset_stats()
        raws = download_all(tess(archives, use_cloud=False), rows)
        assert {p["route"] for raw in raws.values() for p in raw.altdata["products"]} == {"https"}
        assert archives.s3.count() == 0 and archives.mast.count("/api/v0.1/path_lookup") == 0

        obs = tess(archives, max_attempts=1)
        archives.s3.stop()  # the bucket is unreachable: MAST HTTPS serves the files
        fallback = download_all(obs, rows)
        assert [p["route"] for p in fallback["cloudy"].altdata["products"]] == ["https", "https"]
        assert fallback["cloudy"].data.equals(raws["cloudy"].data)


def test_a_key_the_bucket_lacks_falls_back_to_mast_https(data_root):
    """The bucket is read with plain HTTPS GETs: its 404 (NoSuchKey) sends the file to MAST."""
    star = SimulatedStar("gone", 10.0, 10.0, tic_id=304_000_003, tess_sectors=(1,))
    sky = small_sky([star])
    rows = catalog_rows([star])
    with SimulatedArchives(sky) as archives:
        obs = tess(archives)
        obs.prepare_download(rows)
        sky.cloud_keys.clear()          # MAST named the key, the bucket no longer has it
        raw = obs.download(rows[0])
        assert [p["route"] for p in raw.altdata["products"]] == ["https"]
        assert [r.status for r in archives.s3.records] == [404]
        assert archives.mast.count("/api/v0.1/Download/file") == 1
        assert sorted(raw.data["sector"].unique()) == [1]


def test_tess_spoc_and_fast_cadence_light_curves(data_root):
    star = SimulatedStar("many", 15.0, -15.0, tic_id=305_000_001, tmag=8.5, tess_sectors=(30,),
                         tess_fast_sectors=(30,), tess_ffi_sectors=(30,))
    sky = small_sky([star])
    with SimulatedArchives(sky) as archives:
        obs = tess(archives, authors=["SPOC", "TESS-SPOC"], cadences=[20, 120, 600])
        raw = download_all(obs, catalog_rows([star]))["many"]
    products = raw.altdata["products"]
    assert sorted((p["author"], p["exptime"]) for p in products) == [
        ("SPOC", 20.0), ("SPOC", 120.0), ("TESS-SPOC", 600.0)]
    hlsp = next(p for p in products if p["author"] == "TESS-SPOC")
    assert hlsp["cloud_key"].startswith("mast/hlsp/tess-spoc/s0030/") and hlsp["route"] == "s3"
    lightcurves = obs.reduce(raw)
    assert sorted(round(lc.exptime) for lc in lightcurves) == [20, 120, 600]
    assert {lc.series_total for lc in lightcurves} == {3}


def test_paged_results_give_the_same_files(archives):
    rows = catalog_rows(tess_stars())
    whole = download_all(tess(archives), rows)
    paged = download_all(tess(archives, page_size=1), rows)
    for name in whole:
        assert whole[name].altdata["products"] == paged[name].altdata["products"]
    assert any(q["page"] > 1 for q in invoked(archives.mast, "Mast.Caom.Products"))


def test_executing_answers_are_waited_for_within_the_query_timeout(archives):
    rows = catalog_rows(tess_stars()[:1])
    archives.set_faults(Faults(executing_rate=1.0, faults_per_request=2), servers=["mast"])
    raw = download_all(tess(archives), rows)["planet_host"]
    assert len(raw.data) > 0
    archives.set_faults(Faults(executing_rate=1.0), servers=["mast"])
    obs = tess(archives, query_timeout=0.6)
    obs.prepare_download(rows)
    with pytest.raises(MastError, match="still EXECUTING after 1 s"):
        obs.download(rows[0])


def test_an_unreachable_archive_fails_the_batch_without_hammering_it(archives):
    archives.set_faults(Faults(unavailable_rate=1.0, retry_after=0), servers=["mast"])
    rows = catalog_rows(tess_stars())
    obs = tess(archives, max_attempts=2)
    obs.prepare_download(rows)
    for row in rows:
        with pytest.raises(NetworkError, match="MAST query for the batch failed.*HTTP 503"):
            obs.download(row)
    assert archives.mast.count() == 2


def test_a_file_that_cannot_be_fetched_fails_its_source(archives):
    archives.set_faults(Faults(truncate_rate=1.0), servers=["mast", "s3"])
    obs = tess(archives, max_attempts=2)
    obs.prepare_download(catalog_rows(tess_stars()[:1]))
    with pytest.raises(RetriesExhausted, match="Download/file.*body cut"):
        obs.download(catalog_rows(tess_stars()[:1])[0])


def _lightkurve_file(sky, tmp_path, product):
    path = tmp_path / product.filename
    path.write_bytes(sky.file_bytes(product.data_uri))
    return path


@pytest.mark.parametrize("mission", ["TESS", "Kepler", "K2"])
def test_light_curves_agree_with_lightkurve(archives, sky, tmp_path, mission):
    import lightkurve as lk

    name = {"TESS": "planet_host", "Kepler": "kepler_host", "K2": "k2_star"}[mission]
    cls = {"TESS": VirtualTESS, "Kepler": VirtualKepler, "K2": VirtualK2}[mission]
    star = sky.star(name)
    products = sky.files_of(star, mission)
    paths = [_lightkurve_file(sky, tmp_path, product) for product in products]
    raw = download_all(cls(**archives.observatory_kwargs(**QUICK)), catalog_rows([star]))[name]
    for flux_column in ("pdcsap", "sap"):
        for preset in ("none", "default", "hard", "hardest"):
            obs = cls(flux_column=flux_column, quality_bitmask=preset)
            lightcurves = obs.reduce(raw)
            assert len(lightcurves) == len(products)
            flagged = []
            for lc, path in zip(lightcurves, paths):
                ours = lc.data
                theirs = lk.read(path, flux_column=f"{flux_column}_flux", quality_bitmask=preset)
                kept = ours[~ours["qflag"]]
                assert len(kept) == len(theirs)
                np.testing.assert_array_equal(kept[obs.time_column], theirs.time.value)
                np.testing.assert_allclose(kept["mjd"], theirs.time.mjd, rtol=0, atol=1e-9)
                np.testing.assert_array_equal(kept["flux"], theirs.flux.value)
                np.testing.assert_array_equal(kept["flux_err"], theirs.flux_err.value)
                np.testing.assert_array_equal(kept["quality"], theirs.quality.value)
                np.testing.assert_array_equal(kept["centroid_col"], theirs.centroid_col.value)
                flagged.append(int(ours["qflag"].sum()))
            if preset == "none":
                assert flagged == [0] * len(products)
            else:
                assert all(count > 0 for count in flagged)


def test_quality_presets_flag_more_as_they_harden(archives, sky):
    counts = []
    for preset in ("none", "default", "hard", "hardest"):
        obs = tess(archives, quality_bitmask=preset)
        raw = download_all(obs, catalog_rows([sky.star("quiet_star")]))["quiet_star"]
        counts.append(sum(int(lc.data["qflag"].sum()) for lc in obs.reduce(raw)))
    assert counts[0] == 0 and counts[0] < counts[1] < counts[2] < counts[3]
    assert tess(archives, quality_bitmask=1024).quality_mask == 1024


def test_reduced_light_curves_have_standard_columns_and_values(archives, sky):
    star = sky.star("planet_host")
    obs = tess(archives)
    raw = download_all(obs, catalog_rows([star]))[star.name]
    lightcurves = obs.reduce(raw)
    assert [lc.series_number for lc in lightcurves] == [1, 2]
    for lc, sector in zip(lightcurves, (1, 2)):
        data = lc.data
        assert set(data["sector"]) == {sector} and lc.filter == "TESS"
        for column in ("mjd", "flux", "flux_err", "mag", "mag_err", "filter", "quality",
                       "qflag", "exptime", "bjd", "btjd", "centroid_col", "centroid_row"):
            assert column in data, column
        assert np.isfinite(data["mjd"]).all()
        np.testing.assert_allclose(data["bjd"], data["btjd"] + 2457000, rtol=0, atol=1e-9)
        np.testing.assert_allclose(data["mjd"], data["bjd"] - 2400000.5, rtol=0, atol=1e-9)
        assert data["exptime"].iloc[0] == pytest.approx(120.0)
        good = data[~data["qflag"]]
        assert np.median(good["mag"]) == pytest.approx(star.tmag, abs=0.005)
        dipped = star.transit.in_transit(good["bjd"].to_numpy())
        depth = 1 - good["flux"][dipped].median() / good["flux"][~dipped].median()
        assert depth == pytest.approx(star.transit.depth, abs=1e-3)


@pytest.mark.parametrize("mission", ["Kepler", "K2"])
def test_kepler_and_k2_find_targets_by_id_and_by_position(archives, sky, mission):
    name = "kepler_host" if mission == "Kepler" else "k2_star"
    cls = VirtualKepler if mission == "Kepler" else VirtualK2
    column = "quarter" if mission == "Kepler" else "campaign"
    star = sky.star(name)
    by_id = catalog_rows([star])[0]
    by_position = dict(catalog_rows([star], ids=False)[0], name="by_position")
    obs = cls(**archives.observatory_kwargs(**QUICK))
    raws = download_all(obs, [by_id, by_position])
    expected = sorted(star.kepler_quarters or star.k2_campaigns)
    for raw in raws.values():
        assert sorted(raw.data[column].unique()) == expected
        assert sorted(lc.data[column].iloc[0] for lc in obs.reduce(raw)) == expected
    assert raws["by_position"].altdata["resolved_by"] == "position search"
    assert raws[name].altdata["resolved_by"] == "catalog cross-id"
    assert len(invoked(archives.mast, "Mast.Caom.Filtered.Position")) == 1
    chosen = cls(**archives.observatory_kwargs(**QUICK, **{f"{column}s": expected[-1:]}))
    raw = download_all(chosen, [by_id])[name]
    assert sorted(raw.data[column].unique()) == expected[-1:]


def test_fits_files_are_kept_only_when_asked(archives, sky, data_root):
    star = sky.star("quiet_star")
    row = catalog_rows([star])[0]
    download_all(tess(archives), [row])
    obs = tess(archives, keep_fits=True)
    folder = obs.fits_folder(star.name, obs.raw_identity(row)["target_key"])
    assert folder.parent == data_root / "raw" / "TESS" / "fits"
    assert not folder.exists()
    download_all(obs, [row])
    kept = sorted(folder.iterdir())
    assert [p.name for p in kept] == [p.filename for p in sky.files_of(star)]
    archives.reset_stats()
    again = download_all(obs, [row])[star.name]
    assert {p["route"] for p in again.altdata["products"]} == {"cache"}
    assert archives.s3.count() == 0


def test_a_source_that_fails_part_way_keeps_what_it_fetched_for_its_next_try(
        archives, sky, data_root):
    """Files are fetched into memory; when a later file of a source fails, those fetched
    before it are written to the FITS folder, and the next try fetches only the rest."""
    from skyretriever.testing.archives import BUCKET

    star = sky.star("planet_host")
    row = catalog_rows([star])[0]
    first, second = sky.files_of(star)
    archives.set_faults(Faults(truncate_rate=1.0, paths=(f"/{BUCKET}/{second.cloud_key}",
                                                         "/api/v0.1/Download")),
                        servers=["s3", "mast"])
    obs = tess(archives, max_attempts=2)
    obs.prepare_download([row])
    with pytest.raises(RetriesExhausted, match="body cut"):
        obs.download(row)
    folder = obs.fits_folder(star.name, obs.raw_identity(row)["target_key"])
    assert [p.name for p in folder.iterdir()] == [first.filename]
    assert (folder / first.filename).read_bytes() == sky.file_bytes(first.data_uri)
    archives.set_faults(None, servers=["s3", "mast"])
    archives.reset_stats()
    raw = download_all(tess(archives), [row])[star.name]
    routes = {p["filename"]: p["route"] for p in raw.altdata["products"]}
    assert routes == {first.filename: "cache", second.filename: "s3"}
    assert archives.s3.count() == 1 and not folder.exists()
    assert sorted(raw.data["sector"].unique()) == [1, 2]


def test_observatories_pickle_without_their_clients(archives, sky):
    obs = tess(archives)
    rows = catalog_rows([sky.star("quiet_star")])
    download_all(obs, rows)
    copy = pickle.loads(pickle.dumps(obs))
    assert copy._mast is None and copy._s3 is None and copy._plans == {}
    assert len(download_all(copy, rows)["quiet_star"].data) > 0


def test_parameters_are_checked():
    with pytest.raises(ParameterError, match="TESS-SPOC makes light curves at"):
        VirtualTESS(authors=["TESS-SPOC"], cadences=[120])
    with pytest.raises(ParameterError, match="cadences"):
        VirtualTESS(cadences=[30])
    with pytest.raises(ParameterError, match="did you mean 'mast_url'"):
        VirtualTESS(mast_ulr="http://x")
    with pytest.raises(ParameterError, match="flux_column"):
        VirtualKepler(flux_column="kspsap")
    assert VirtualK2().quality_mask == 1130799 and VirtualTESS(quality_bitmask="hard").quality_mask == 24319
    assert VirtualTESS().pars.use_cloud and VirtualTESS().pars.mast_url == "https://mast.stsci.edu"


def test_unknown_simulated_targets_are_empty_not_errors(data_root):
    sky = SimulatedSky([SimulatedStar("lonely", 1.0, 1.0, tic_id=306_000_001)])
    with SimulatedArchives(sky) as archives:
        raw = download_all(tess(archives), catalog_rows(sky.stars))["lonely"]
    assert raw.data.empty and raw.altdata["target_name"] == "306000001"


@pytest.mark.parametrize("mission", ["TESS", "Kepler", "K2"])
def test_raw_data_is_kept_as_the_archive_files_and_reads_back_as_the_same_table(
        archives, sky, mission):
    import tarfile

    import pandas as pd

    from skyretriever import storage
    from skyretriever.models import RawPhotometry

    name = {"TESS": "planet_host", "Kepler": "kepler_host", "K2": "k2_star"}[mission]
    cls = {"TESS": VirtualTESS, "Kepler": VirtualKepler, "K2": VirtualK2}[mission]
    star = sky.star(name)
    raw = download_all(cls(**archives.observatory_kwargs(**QUICK)), catalog_rows([star]))[name]
    downloaded = raw.data.copy()
    raw.save()
    # The file is a tar of the archive's files byte for byte, not a table made of them.
    assert raw.filename.endswith(".tar") and storage.is_raw_filename(raw.filename, mission)
    expected = {product.data_uri.rsplit("/", 1)[-1]: sky.file_bytes(product.data_uri)
                for product in sky.files_of(star, mission)}
    with tarfile.open(storage.full_path(raw.filename)) as archive:
        names = archive.getnames()
        stored = {member.name: archive.extractfile(member).read()
                  for member in archive.getmembers()[1:]}
    assert names[0] == "skyretriever.json" and stored == expected
    # Loaded from disk (checksum first) or adopted from the file alone: the same table.
    again = RawPhotometry(**{k: v for k, v in raw.column_values().items()})
    pd.testing.assert_frame_equal(again.data, downloaded)
    assert again.file_metadata["altdata"]["products"] == raw.altdata["products"]
    adopted = RawPhotometry.from_file(raw.filename)
    pd.testing.assert_frame_equal(adopted.data, downloaded)
    assert (adopted.checksum, adopted.num_points) == (raw.checksum, len(downloaded))


def test_a_raw_file_whose_reader_is_unknown_says_so(data_root):
    from skyretriever import storage

    info = storage.write_files_table("raw/TESS/RA000/x.h5", "x", [("a.fits", b"x")],
                                     "no-such-reader", {})
    with pytest.raises(storage.StorageError, match="reader 'no-such-reader', which is not "
                                                   "registered"):
        storage.read_table(info.filename, "x", info.checksum)


def test_raw_files_kept_in_hdf5_by_earlier_versions_read_as_before(archives, sky, data_root):
    """Before the archives, the files went into an HDF5 group (one uint8 dataset each, and
    the description as JSON); such a file reads, and is adopted, as it did."""
    import numpy as np
    import pandas as pd

    from skyretriever import storage
    from skyretriever.models import RawPhotometry

    star = sky.star("planet_host")
    raw = download_all(VirtualTESS(**archives.observatory_kwargs(**QUICK)),
                       catalog_rows([star]))["planet_host"]
    downloaded = raw.data.copy()
    raw.save()
    description, files = storage._read_archive(storage.full_path(raw.filename))
    old_name = raw.filename.removesuffix(".tar") + ".h5"
    arrays = {str(number): np.frombuffer(content, np.uint8)
              for number, (_, content) in enumerate(files)}
    old = storage.write_arrays(old_name, {raw.key: (arrays, {
        key: description[key] for key in ("reader", "files", "options", "metadata")})},
        compression="none")
    storage.full_path(raw.filename).unlink()
    frame, metadata = storage.read_table(old.filename, raw.key, old.checksum)
    pd.testing.assert_frame_equal(frame, downloaded)
    assert metadata["source_name"] == "planet_host"
    adopted = RawPhotometry.from_file(old.filename)
    pd.testing.assert_frame_equal(adopted.data, downloaded)
    # Written again, the product becomes an archive and the HDF5 file goes.
    raw.save()
    assert raw.filename.endswith(".tar") and not storage.full_path(old.filename).exists()
    assert storage.raw_file_on_disk(old.filename) == raw.filename
