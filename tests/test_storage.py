"""Storage: safe names, paths, atomic HDF5 writes, checksums, loading."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyretriever import storage
from skyretriever.storage import (
    ChecksumError,
    StorageError,
    read_table,
    sanitize_name,
    write_tables,
)


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/b", "a\\b", "nul\x00byte", "..", ".",
                                  "x" * 500, "Gaia DR3 1234", "étoile", "星", "", " ", "a:b*c?"])
def test_sanitised_names_are_safe_path_pieces(name):
    safe = sanitize_name(name)
    assert safe and len(safe) <= storage.MAX_NAME_LENGTH
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert ".." not in safe and not safe.startswith(".")
    assert safe.isascii()


def test_names_that_need_no_change_are_kept_and_others_never_collide():
    assert sanitize_name("TIC_25155310") == "TIC_25155310"
    assert sanitize_name("a/b") != sanitize_name("a_b")
    assert sanitize_name("a/b") != sanitize_name("a\\b")
    assert sanitize_name("x" * 200) != sanitize_name("x" * 201)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=300))
def test_sanitize_name_property(name):
    safe = sanitize_name(name)
    assert 0 < len(safe) <= storage.MAX_NAME_LENGTH
    assert set(safe) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-")
    assert ".." not in safe and not safe.startswith(".")
    assert sanitize_name(name) == safe                                # deterministic


def test_paths_follow_the_documented_layout(data_root):
    assert storage.raw_filename("demo", "star 1", 10.7, "0123456789") == (
        f"raw/DEMO/RA010/DEMO_photometry_{sanitize_name('star 1')}_0123456789.h5"
    )
    assert storage.reduced_filename("WD_FLARES_abc", "tess", "s", 359.99) == (
        "projects/WD_FLARES_abc/RA359/TESS_photometry_s_reduced.h5"
    )
    assert storage.reduction_key("s", 2, 10) == "s_reduction_02_of_10"
    assert storage.project_folder_name("wd_flares", "abc", True) == "WD_FLARES_abc"
    assert storage.project_folder_name("wd_flares", "abc", False) == "WD_FLARES"
    for bad in ("../outside.h5", "/etc/passwd", "a/../../b"):
        with pytest.raises(StorageError, match="outside the data root"):
            storage.full_path(bad)
    with pytest.raises(StorageError, match="not a finite number"):
        storage.ra_folder(float("nan"))


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "mjd": np.array([60000.5, 60001.25, np.nan]),
        "flux": np.array([1.5, -2.0, 3.0], dtype=np.float32),
        "quality": np.array([0, 128, 2**31 - 1], dtype=np.int64),
        "qflag": np.array([False, True, False]),
        "filter": np.array(["g", "zr", "étoile"], dtype=object),
    })


def test_tables_round_trip_with_types_metadata_and_checksum(data_root):
    frame = _frame()
    info = write_tables("T/RA001/t.h5", {"one": (frame, {"header": {"TICID": 5}}),
                                         "empty": (frame.iloc[:0], None)})
    path = storage.full_path(info.filename)
    assert info.checksum == storage.file_sha256(path) and info.file_size == path.stat().st_size
    loaded, metadata = read_table(info.filename, "one", info.checksum, info.file_size)
    assert metadata == {"header": {"TICID": 5}}
    pd.testing.assert_frame_equal(loaded, frame, check_dtype=True)
    empty, _ = read_table(info.filename, "empty")
    assert list(empty.columns) == list(frame.columns) and len(empty) == 0
    assert storage.read_table_keys(info.filename) == ["empty", "one"]
    assert not list(path.parent.glob("*.tmp"))


def test_large_metadata_does_not_hit_the_attribute_limit(data_root):
    header = {f"KEY{i:05d}": "x" * 60 for i in range(2000)}           # about 150 kB of JSON
    info = write_tables("T/RA001/big.h5", {"k": (_frame(), {"header": header})})
    _, metadata = read_table(info.filename, "k", info.checksum)
    assert metadata["header"] == header
    assert storage.read_table_keys(info.filename) == ["k"]


def test_a_changed_file_fails_its_checksum(data_root):
    info = write_tables("T/RA001/c.h5", {"k": (_frame(), {})})
    path = storage.full_path(info.filename)
    content = bytearray(path.read_bytes())
    content[-10] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(ChecksumError, match="does not match the checksum"):
        read_table(info.filename, "k", info.checksum, info.file_size)
    path.unlink()
    with pytest.raises(StorageError, match="missing"):
        read_table(info.filename, "k", info.checksum)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(data_root):
    info = write_tables("T/RA001/a.h5", {"k": (_frame(), {})})
    bad = pd.DataFrame({"when": [object()]})
    bad["when"] = pd.Series([pd.Timedelta(1, "D")])                   # not storable
    with pytest.raises(StorageError, match="cannot store a column"):
        write_tables("T/RA001/a.h5", {"k": (bad, {})})
    assert storage.verify_file(storage.full_path(info.filename), info.checksum, info.file_size)
    assert not list(storage.full_path("T/RA001").glob("*.tmp"))


def test_the_same_tables_always_give_the_same_bytes(data_root):
    first = write_tables("T/RA001/d.h5", {"k": (_frame(), {"a": 1}), "l": (_frame(), None)})
    again = write_tables("T/RA001/d.h5", {"k": (_frame(), {"a": 1}), "l": (_frame(), None)})
    assert first.checksum == again.checksum
    big = pd.DataFrame({"mjd": np.arange(20000.0), "flux": np.ones(20000)})   # compressed path
    one = write_tables("T/RA001/e.h5", {"k": (big, {})})
    two = write_tables("T/RA001/e.h5", {"k": (big, {})})
    assert one.checksum == two.checksum
    assert read_table(two.filename, "k", two.checksum)[0].equals(big)


def test_the_fast_writer_gives_the_bytes_of_h5py_own_api(data_root):
    """Small tables skip HDF5's compound conversion and h5py's attribute layer: the file
    must still be the one h5py's ordinary calls make (any reader sees the same thing)."""
    import h5py

    frame = _frame()
    frame.attrs["units"] = {"mjd": "d"}              # the units a table carries are not stored
    info = write_tables("T/RA001/f.h5", {"k": (frame, {"a": 1}), "l": (frame.iloc[:2], None)})
    with h5py.File("expected", "w", driver="core", backing_store=False) as handle:
        for key, table, metadata in (("k", frame, {"a": 1}), ("l", frame.iloc[:2], {})):
            records, kinds = storage._frame_to_records(table)
            properties = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            properties.set_obj_track_times(False)
            dataset = h5py.h5d.create(handle.id, key.encode(), h5py.h5t.py_create(
                records.dtype, logical=True), h5py.h5s.create_simple((len(records),)),
                dcpl=properties)
            dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, records)          # converted by HDF5
            text = json.dumps(metadata)
            h5py.Dataset(dataset).attrs[storage._DESCRIPTION] = (
                f'{json.dumps({"columns": kinds})[:-1]}, "metadata": {text}}}')
        handle.flush()
        expected = handle.id.get_file_image()
    assert storage.full_path(info.filename).read_bytes() == expected
    assert read_table(info.filename, "l")[0].equals(frame.iloc[:2].reset_index(drop=True))


def test_temporary_files_live_in_a_folder_per_writer_and_dead_ones_are_cleared(data_root):
    import subprocess
    import sys

    final = storage.full_path("T/RA001/f.h5")
    temporary = storage.temporary_path(final)
    assert temporary.parent.parent == data_root / storage.TEMP_FOLDER
    assert storage.writer_alive(temporary.parent.name) is True
    # a writer that has died: a finished child process's folder
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead = temporary.parent.with_name(f"{temporary.parent.name.rpartition('.')[0]}."
                                      f"{child.stdout.strip()}")
    dead.mkdir()
    (dead / "half.h5.abcd.tmp").write_bytes(b"half")
    # another host's folder whose writer holds no lock is dead too (the lock, not the
    # host name or pid, tells; see tests/test_repair_safety.py for live foreign writers)
    foreign = data_root / storage.TEMP_FOLDER / "otherhost.1"
    foreign.mkdir()
    assert storage.writer_alive(foreign.name) is False
    assert storage.clean_temporary() == sorted([dead, foreign])
    assert not dead.exists() and not foreign.exists() and temporary.parent.exists()


def test_writing_many_files_does_not_grow_memory(data_root):
    """A long run writes a file or two per source; nothing may be kept per file.

    (h5py 3.15 kept about 15 small objects per file it wrote, some 0.5 kB: 50 MB
    per worker over 100,000 sources.)
    """
    import gc
    import tracemalloc

    frame = pd.DataFrame({"mjd": np.arange(100.0), "mag": np.ones(100), "filter": ["g"] * 100})

    def write(first: int, count: int) -> None:
        for number in range(first, first + count):
            storage.write_tables(f"DEMO/RA{number % 360:03d}/file_{number}.h5",
                                 {f"key_{number}": (frame, {"source_name": f"s{number}"})})

    write(0, 200)                                      # caches and pools filled
    gc.collect()
    tracemalloc.start()
    try:
        # Two windows: what is kept per file grows in both, while a table that doubles
        # once (Python's interned strings, which pathlib fills) grows in only one.
        growths = []
        for first in (200, 2200):
            before = tracemalloc.get_traced_memory()[0]
            write(first, 2000)
            gc.collect()
            growths.append(tracemalloc.get_traced_memory()[0] - before)
    finally:
        tracemalloc.stop()
    grown = min(growths)
    assert grown < 100 * 1024, f"{grown / 2000:.0f} bytes kept per file written"



def test_a_run_says_half_written_files_only_where_there_were_some(project_factory, data_root,
                                                                 caplog):
    died = data_root / storage.TEMP_FOLDER / "otherhost.1"          # a writer that died mid-write
    died.mkdir(parents=True)
    (died / "half.h5.abcd.tmp").write_bytes(b"half")
    (died / "half2.h5.abcd.tmp").write_bytes(b"half")
    ended = data_root / storage.TEMP_FOLDER / "otherhost.2"         # one that ended: empty
    ended.mkdir()
    project = project_factory(name="tidy", obs_names=["demo"],
                              catalog_kwargs={"default": "test", "num_sources": 2})
    with caplog.at_level(logging.DEBUG, logger="skyretriever.project"):
        project.run()
    said = {(r.levelno, r.getMessage()) for r in caplog.records
            if "temporary" in r.getMessage() or "half-written" in r.getMessage()}
    assert said == {
        (logging.INFO, f"removed 2 file(s) half-written by a run that died: {died}"),
        (logging.DEBUG, f"removed the empty temporary folder of a finished process: {ended}")}
    assert not died.exists() and not ended.exists()


def test_a_product_of_kept_files_is_a_plain_tar_and_a_damaged_one_is_refused(data_root):
    import tarfile

    storage.register_file_reader("sizes", lambda files, options: pd.DataFrame(
        {"name": [name for name, _ in files], "size": [len(data) for _, data in files]}))
    files = [("a.fits", b"x" * 3000), ("../b name.fits", b"")]
    info = storage.write_files_table("raw/DEMO/RA010/DEMO_photometry_k_0a1b2c3d4e.h5", "k",
                                     files, "sizes", {}, {"source_name": "k"})
    path = storage.full_path(info.filename)
    assert storage.is_raw_filename(info.filename, "demo")
    # Any tar reader gets the files back, under safe names, byte for byte.
    with tarfile.open(path) as archive:
        assert archive.getnames() == ["skyretriever.json", "a.fits",
                                      storage.sanitize_name("../b name.fits")]
        assert "/" not in archive.getnames()[2]
        assert archive.extractfile("a.fits").read() == b"x" * 3000
        assert json.loads(archive.extractfile("skyretriever.json").read())["files"] == [
            "a.fits", "../b name.fits"]
    assert path.stat().st_size % tarfile.RECORDSIZE == 0
    frame, metadata = storage.read_table(info.filename, "k", info.checksum, info.file_size)
    assert list(frame["size"]) == [3000, 0] and metadata == {"source_name": "k"}
    assert storage.read_table_keys(info.filename) == ["k"]
    with pytest.raises(storage.StorageError, match="has no table 'other'"):
        storage.read_table(info.filename, "other")
    # The same files always make the same bytes.
    again = storage.write_files_table("raw/DEMO/RA010/DEMO_photometry_k_0a1b2c3d4e.h5", "k",
                                      files, "sizes", {}, {"source_name": "k"})
    assert again.checksum == info.checksum
    # Cut short: the row's checksum refuses it; read without one, tar's own reading does.
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(storage.ChecksumError):
        storage.read_table(info.filename, "k", info.checksum, info.file_size)
    with pytest.raises(storage.StorageError, match="cannot read"):
        storage.read_table(info.filename, "k")
    # A tar of other files is not taken for a product.
    with tarfile.open(path, "w") as archive:
        member = tarfile.TarInfo("notes.txt")
        archive.addfile(member)
    with pytest.raises(storage.StorageError, match="first member is not skyretriever.json"):
        storage.read_table_keys(info.filename)


@pytest.mark.parametrize("values", [["TESS"] * 5, [""] * 3, ["é"] * 2, ["g", "r", "g"],
                                    ["g", None, "g"], ["TESS", "TESS", 3], ["a", pd.NA]])
def test_text_columns_read_back_as_written(values, data_root):
    frame = pd.DataFrame({"filter": pd.Series(values, dtype=object), "mjd": np.arange(len(values),
                                                                                      dtype=float)})
    info = storage.write_tables("raw/DEMO/RA010/t.h5", {"t": (frame, None)})
    back, _ = storage.read_table(info.filename, "t", info.checksum)
    assert list(back["filter"]) == ["" if v is None else str(v) for v in values]
    assert list(storage._object_text(np.array(values, dtype=object))) == [
        ("" if v is None else str(v)).encode() for v in values]


def test_a_table_of_many_blocks_of_records_reads_back_as_written(data_root):
    """Records are filled a block of rows at a time: the rows of every block, and the last
    block's remainder, land in their place."""
    rows = 3 * (storage._RECORD_BLOCK_BYTES // 33) + 7
    generator = np.random.default_rng(5)
    frame = pd.DataFrame({"mjd": np.arange(rows, dtype=float), "flux": generator.random(rows),
                          "quality": generator.integers(0, 2**20, rows),
                          "qflag": generator.random(rows) < 0.1,
                          "filter": np.full(rows, "TESS", dtype=object),
                          "ccd": generator.integers(0, 4, rows).astype(np.int32)})
    records, _ = storage._frame_to_records(frame)
    assert records.dtype.itemsize == 33 and rows > 3 * storage._RECORD_BLOCK_BYTES // 33
    info = storage.write_tables("raw/DEMO/RA010/many.h5", {"many": (frame, None)})
    back, _ = storage.read_table(info.filename, "many", info.checksum)
    pd.testing.assert_frame_equal(back, frame)


def test_tables_written_as_parts_read_back_one_by_one_from_one_dataset(data_root):
    """A source's light curves are the parts of one table: each key reads back its own rows
    and metadata, the keys keep their order, and the file holds one dataset for them."""
    import h5py

    frame = _frame()
    tables = {"s_reduction_02_of_03": (frame.iloc[1:], {"series_number": 2}),
              "s_reduction_01_of_03": (frame.iloc[:1], {"series_number": 1, "filter": "g"}),
              "s_reduction_03_of_03": (frame.iloc[:0], None)}
    info = storage.write_table_parts("projects/P/RA001/s.h5", tables)
    path = storage.full_path(info.filename)
    assert info.checksum == storage.file_sha256(path) and info.file_size == path.stat().st_size
    assert storage.read_table_keys(info.filename) == list(tables)
    for key, (table, metadata) in tables.items():
        back, back_metadata = read_table(info.filename, key, info.checksum, info.file_size)
        pd.testing.assert_frame_equal(back, table.reset_index(drop=True), check_dtype=True)
        assert back_metadata == (metadata or {})
    with h5py.File(path, "r") as handle:
        assert list(handle) == [storage._PARTS] and len(handle[storage._PARTS]) == len(frame)
    with pytest.raises(StorageError, match="has no table 's_reduction_04_of_03'"):
        read_table(info.filename, "s_reduction_04_of_03")
    with pytest.raises(StorageError, match="has no table"):
        read_table(info.filename, storage._PARTS)        # the dataset is not a table itself
    for write in (storage.write_tables, storage.write_table_parts):
        with pytest.raises(StorageError, match="names the parts of a table"):
            write("projects/P/RA001/r.h5", {storage._PARTS: (frame, None), "x": (frame, None)})
    damaged = bytearray(path.read_bytes())
    damaged[-100] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(ChecksumError):
        read_table(info.filename, "s_reduction_01_of_03", info.checksum)


def test_parts_of_other_columns_or_types_are_written_as_tables_of_their_own(data_root):
    import h5py

    frame = _frame()
    other_type = frame.assign(quality=frame["quality"].astype(np.int32))
    for second in (other_type, frame[["mjd", "flux"]], frame[["flux", "mjd", "quality", "qflag",
                                                                   "filter"]]):
        info = storage.write_table_parts("projects/P/RA001/o.h5",
                                         {"a": (frame, {"n": 1}), "b": (second, {"n": 2})})
        with h5py.File(storage.full_path(info.filename), "r") as handle:
            assert sorted(handle) == ["a", "b"]
        back, metadata = read_table(info.filename, "b", info.checksum)
        pd.testing.assert_frame_equal(back, second, check_dtype=True)
        assert metadata == {"n": 2}


def test_parts_with_long_metadata_and_many_rows_read_back(data_root):
    """Metadata past HDF5's 64 kB attribute limit goes beside the dataset; a compressed
    table of parts is read a part at a time."""
    rows = 40_000
    generator = np.random.default_rng(3)
    frame = pd.DataFrame({"mjd": np.arange(rows, dtype=float), "flux": generator.random(rows),
                          "filter": np.where(generator.random(rows) < 0.5, "g", "r").astype(object)})
    header = {f"KEY{i:05d}": "x" * 60 for i in range(2000)}
    tables = {"one": (frame.iloc[:25_000], {"header": header}), "two": (frame.iloc[25_000:], {})}
    info = storage.write_table_parts("projects/P/RA001/l.h5", tables)
    assert storage.read_table_keys(info.filename) == ["one", "two"]
    back, metadata = read_table(info.filename, "two", info.checksum)
    pd.testing.assert_frame_equal(back, frame.iloc[25_000:].reset_index(drop=True))
    assert read_table(info.filename, "one")[1] == {"header": header} and metadata == {}


def test_large_tables_written_one_after_another_and_in_threads_keep_their_own_rows(data_root):
    """Large records are made in memory each thread reuses: a file written after another,
    or beside one written in another thread, holds its own rows, never the other's."""
    from concurrent.futures import ThreadPoolExecutor

    rows = 2 * storage._SCRATCH_BYTES[0] // 17 + 5          # above the scratch threshold

    def table(seed: int) -> pd.DataFrame:
        generator = np.random.default_rng(seed)
        return pd.DataFrame({"mjd": generator.random(rows), "cadenceno": np.arange(rows) + seed,
                             "qflag": generator.random(rows) < 0.5})

    def write(seed: int) -> tuple[int, str, str]:
        one = storage.write_tables(f"raw/DEMO/RA010/w{seed}.h5", {"k": (table(seed), None)})
        two = storage.write_table_parts(f"projects/P/RA010/p{seed}.h5",
                                        {"a": (table(seed + 1), None), "b": (table(seed), None)})
        return seed, one.filename, two.filename

    with ThreadPoolExecutor(4) as pool:
        written = list(pool.map(write, range(0, 80, 10)))
    written += [write(100), write(110)]                       # one after another, one thread
    for seed, single, parts in written:
        pd.testing.assert_frame_equal(read_table(single, "k")[0], table(seed))
        pd.testing.assert_frame_equal(read_table(parts, "a")[0], table(seed + 1))
        pd.testing.assert_frame_equal(read_table(parts, "b")[0], table(seed))
