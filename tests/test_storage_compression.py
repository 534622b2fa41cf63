"""Storage: how large tables are compressed, and that every setting (and older files) reads back."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyretriever import storage
from skyretriever.storage import read_table, write_tables

ODD_TEXT = ["TESS", "", "é", "日本語", "🙂🙂", "tab\there", "new\nline", "  spaces  ", "quote'\"",
            "x" * 300, "back\\slash", "TESS"]


def _big_frame(rows: int = 20_000) -> pd.DataFrame:
    """Above the 64 kB compression threshold, with every column kind the writer knows."""
    random = np.random.default_rng(3)
    return pd.DataFrame({
        "mjd": 58_000.0 + np.arange(rows) / 720.0,
        "flux": random.normal(1.0, 0.01, rows).astype(np.float32),
        "quality": random.integers(0, 4096, rows, dtype=np.int32),
        "cadenceno": np.arange(rows, dtype=np.int64),
        "flagged": random.random(rows) < 0.1,
        "filter": np.array(ODD_TEXT * (rows // len(ODD_TEXT)) + ODD_TEXT[: rows % len(ODD_TEXT)],
                           dtype=object),
        "when": pd.to_datetime(58_000 + np.arange(rows), unit="s"),
    })


@pytest.fixture
def default_compression():
    yield
    storage.set_compression(None)


@pytest.mark.parametrize("compression", storage.COMPRESSIONS)
def test_every_compression_reads_back_the_same_table(data_root, compression):
    frame = _big_frame()
    info = write_tables(f"T/RA001/{compression}.h5", {"k": (frame, {"h": {"OBJECT": "TIC 7"}})},
                        compression=compression)
    loaded, metadata = read_table(info.filename, "k", info.checksum, info.file_size)
    pd.testing.assert_frame_equal(loaded, frame)
    assert metadata == {"h": {"OBJECT": "TIC 7"}}
    with h5py.File(storage.full_path(info.filename), "r") as handle:
        dataset = handle["k"]
        assert storage.compression_of(dataset) == compression
        # Blosc shuffles the bytes itself; HDF5's shuffle goes before deflate and LZF.
        assert dataset.shuffle == (compression in ("gzip", "lzf"))
        if compression == "gzip":
            assert dataset.compression_opts == 1


def test_compression_makes_files_smaller_and_the_same_bytes_each_time(data_root):
    frame = _big_frame()
    sizes = {name: write_tables(f"T/RA001/s_{name}.h5", {"k": (frame, {})},
                                compression=name).file_size for name in storage.COMPRESSIONS}
    assert sizes["gzip"] < min(sizes["lzf"], sizes["blosc"])
    assert max(sizes["lzf"], sizes["blosc"]) < sizes["none"] / 2
    for name in ("blosc", "gzip"):
        again = write_tables(f"T/RA001/{name}_again.h5", {"k": (frame, {})}, compression=name)
        first = write_tables(f"T/RA001/{name}_first.h5", {"k": (frame, {})}, compression=name)
        assert again.checksum == first.checksum


def test_blosc_files_read_in_a_process_that_never_imported_skyretriever(data_root):
    """What a user's own h5py script needs for the default files: ``import hdf5plugin``."""
    import subprocess
    import sys

    info = write_tables("T/RA001/theirs.h5", {"k": (_big_frame(), {})})
    path = str(storage.full_path(info.filename))
    script = ("import sys, h5py\n"
              "{plugin}"
              "with h5py.File(sys.argv[1], 'r') as handle:\n"
              "    print(handle['k'][:]['cadenceno'].sum())\n")
    with_plugin = subprocess.run([sys.executable, "-c", script.format(plugin="import hdf5plugin\n"),
                                  path], capture_output=True, text=True, timeout=120)
    assert with_plugin.returncode == 0, with_plugin.stderr[-2000:]
    assert int(with_plugin.stdout) == sum(range(20_000))
    without = subprocess.run([sys.executable, "-c", script.format(plugin=""), path],
                             capture_output=True, text=True, timeout=120)
    assert without.returncode != 0 and "read data" in without.stderr


def test_the_process_setting_is_used_checked_and_inherited(data_root, default_compression,
                                                           monkeypatch):
    assert storage.current_compression() == "blosc"
    assert storage.set_compression("none") == "none"
    info = write_tables("T/RA001/p.h5", {"k": (_big_frame(), {})})
    with h5py.File(storage.full_path(info.filename), "r") as handle:
        assert handle["k"].compression is None
    # Worker processes read the choice from the environment they inherit.
    import os

    assert os.environ[storage.COMPRESSION_VARIABLE] == "none"
    with pytest.raises(ValueError, match="unknown HDF5 compression 'zstd'"):
        storage.set_compression("zstd")
    with pytest.raises(ValueError, match="unknown HDF5 compression 'bz2'"):
        write_tables("T/RA001/q.h5", {"k": (_big_frame(), {})}, compression="bz2")
    monkeypatch.setenv(storage.COMPRESSION_VARIABLE, "gzip9")
    with pytest.raises(ValueError, match=r"\$SKYRETRIEVER_HDF5_COMPRESSION is 'gzip9'"):
        write_tables("T/RA001/q.h5", {"k": (_big_frame(), {})})
    monkeypatch.delenv(storage.COMPRESSION_VARIABLE)
    assert storage.current_compression() == "blosc"


def _write_like_before(path, key: str, frame: pd.DataFrame, metadata: dict) -> None:
    """A file as skyretriever wrote it before the compression setting: gzip level 4 with the
    shuffle, chunks chosen by h5py, strings converted row by row, the description dumped whole."""
    columns, kinds = [], []
    for name in frame.columns:
        values = frame[name].to_numpy()
        if values.dtype.kind == "O":
            text = np.array(["" if v is None else str(v) for v in values], dtype=str)
            values, kind = np.char.encode(text, "utf-8"), "str"
        elif values.dtype.kind == "M":
            values, kind = values.astype("datetime64[ns]").astype(np.int64), "datetime64[ns]"
        elif values.dtype.kind == "b":
            kind = "bool"
        else:
            kind = values.dtype.kind
        columns.append(values)
        kinds.append([name, kind])
    records = np.empty(len(frame), dtype=[(name, v.dtype) for (name, _), v in zip(kinds, columns)])
    for (name, _), values in zip(kinds, columns):
        records[name] = values
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset(key, data=records, compression="gzip",
                                        compression_opts=4, shuffle=True)
        dataset.attrs["skyretriever"] = json.dumps({"columns": kinds, "metadata": metadata})


def test_files_written_before_still_read(data_root):
    frame = _big_frame()
    path = storage.full_path("raw/TESS/RA001/TESS_photometry_old_0123456789.h5")
    _write_like_before(path, "old", frame, {"altdata": {"headers": {"f.fits": {"SECTOR": 1}}}})
    with h5py.File(path, "r") as handle:
        assert handle["old"].compression_opts == 4            # really the old setting
    checksum = storage.file_sha256(path)
    loaded, metadata = read_table("raw/TESS/RA001/TESS_photometry_old_0123456789.h5", "old",
                                  checksum, path.stat().st_size)
    pd.testing.assert_frame_equal(loaded, frame)
    assert metadata == {"altdata": {"headers": {"f.fits": {"SECTOR": 1}}}}


def test_the_description_is_the_same_json_as_before(data_root):
    metadata = {"a": [1, 2.5, None], "b": {"nested": "é"}, "nan": float("nan")}
    info = write_tables("T/RA001/j.h5", {"k": (_big_frame(100), metadata)})
    with h5py.File(storage.full_path(info.filename), "r") as handle:
        text = handle["k"].attrs["skyretriever"]
    kinds = [["mjd", "f"], ["flux", "f"], ["quality", "i"], ["cadenceno", "i"],
             ["flagged", "bool"], ["filter", "str"], ["when", "datetime64[ns]"]]
    assert text == json.dumps({"columns": kinds, "metadata": json.loads(json.dumps(metadata))})


def _row_by_row(values: np.ndarray) -> np.ndarray:
    """What the writer did before it converted strings by their distinct values."""
    text = np.array(["" if v is None else str(v) for v in values], dtype=str)
    try:
        encoded = text.astype(np.bytes_) if len(text) else np.zeros(0, dtype="S1")
    except UnicodeEncodeError:
        encoded = np.char.encode(text, "utf-8")
    return encoded.astype("S1") if encoded.dtype.itemsize == 0 else encoded


@pytest.mark.parametrize("values", [
    ODD_TEXT, [], [""], ["a", None, "b"], ["a\x00", "b"], [1, 1.0, True, "1"],
    [np.nan, None, "x"], ["a", pd.NA], [b"bytes", "bytes"],
], ids=lambda values: repr(values)[:30])
def test_object_columns_convert_as_row_by_row(values):
    column = np.array(values, dtype=object)
    converted, kind = storage._column_for_hdf5(column)
    expected = _row_by_row(column)
    assert kind == "str" and converted.dtype == expected.dtype
    assert converted.tolist() == expected.tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
                          st.none(), st.integers(), st.floats()), max_size=40))
def test_object_column_conversion_property(values):
    column = np.empty(len(values), dtype=object)
    column[:] = values
    converted, _ = storage._column_for_hdf5(column)
    expected = _row_by_row(column)
    assert converted.dtype == expected.dtype and converted.tolist() == expected.tolist()


def test_a_worker_that_did_not_inherit_the_environment_uses_the_drivers_compression(
        data_root, default_compression):
    """A Dask worker of a cluster started elsewhere has its own environment: the pipeline's
    Worker carries the driver's compression to it (here: a process started without it)."""
    import os
    import pickle
    import subprocess
    import sys

    from skyretriever.pipeline import Worker

    storage.set_compression("lzf")
    worker = Worker(None, [], None, str(data_root))
    script = (
        "import pickle, sys\n"
        "import numpy as np, pandas as pd\n"
        "from skyretriever import storage\n"
        "worker = pickle.load(sys.stdin.buffer)\n"
        "print(storage.current_compression())\n"
        "worker.setup()\n"
        "frame = pd.DataFrame({'x': np.arange(20000.0)})\n"
        "print(storage.write_tables('T/RA001/worker.h5', {'k': (frame, {})}).filename)\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != storage.COMPRESSION_VARIABLE}
    result = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(worker),
                            env=environment, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    before, filename = result.stdout.decode().split()
    assert before == "blosc"                     # what such a process has of its own
    with h5py.File(storage.full_path(filename), "r") as handle:
        assert handle["k"].compression == "lzf"
