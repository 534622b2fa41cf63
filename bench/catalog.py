"""Reading a catalog file of white-dwarf size (1.3 million rows) a chunk at a time.

Writes a catalog shaped like the Gaia EDR3 white-dwarf catalogue (a
``WDJ...`` name, Gaia source_id, position, G magnitude, parallax and its
error, proper motions, the white-dwarf probability Pwd) to a temporary folder
in each format asked for, then, for each format in a fresh process, times
``Catalog.load()`` (one checking pass over the file) and reading every row as
``Project.run`` does (``iter_slices`` in lists of 500), and prints per format:
seconds and rows per second for each, the tracemalloc peak (a second pass
with tracemalloc on, which slows Python down; pyarrow's buffers are not traced)
and how much the process's peak resident memory (ru_maxrss, read as Linux's
VmHWM reset once the libraries are loaded) grew over the run.

Usage::

    python bench/catalog.py                         # 1,300,000 rows, CSV and Parquet
    python bench/catalog.py 200000 --formats csv,parquet,fits,hdf5
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

SUFFIXES = {"csv": ".csv", "parquet": ".parquet", "fits": ".fits", "hdf5": ".h5"}
WRITE_BATCH = 100_000
COLUMNS = {"name": "WDJ_name", "ra": "ra", "dec": "dec", "mag": "phot_g_mean_mag",
           "gaia_id": "source_id", "pmra": "pmra", "pmdec": "pmdec"}


def batch(first: int, size: int, seed: int = 7) -> pd.DataFrame:
    """Rows ``first`` to ``first + size`` of the synthetic white-dwarf catalog."""
    rng = np.random.default_rng(seed + first)
    ra = rng.uniform(0, 360, size)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, size)))
    hours, minutes = np.divmod(ra / 15 * 60, 60)
    degrees, arcmin = np.divmod(np.abs(dec) * 60, 60)
    names = [f"WDJ{int(h):02d}{m:05.2f}{'+' if d >= 0 else '-'}{int(g):02d}{a:05.2f}_{first + i}"
             for i, (h, m, d, g, a) in enumerate(zip(hours, minutes, dec, degrees, arcmin))]
    parallax = rng.gamma(2.0, 2.0, size)
    return pd.DataFrame({
        "WDJ_name": names,
        "source_id": rng.integers(10**15, 6 * 10**18, size, dtype=np.int64),
        "ra": ra, "dec": dec,
        "phot_g_mean_mag": rng.uniform(12, 21, size),
        "parallax": parallax, "parallax_error": parallax * rng.uniform(0.01, 0.5, size),
        "pmra": rng.normal(0, 50, size), "pmdec": rng.normal(0, 50, size),
        "Pwd": rng.uniform(0, 1, size),
    })


def write(path: Path, fmt: str, rows: int) -> None:
    """The catalog in one format, written a batch at a time (the writer never holds it all)."""
    batches = (batch(first, min(WRITE_BATCH, rows - first))
               for first in range(0, rows, WRITE_BATCH))
    if fmt == "csv":
        with open(path, "w", encoding="utf-8", newline="") as handle:
            for index, frame in enumerate(batches):
                frame.to_csv(handle, index=False, header=index == 0)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer = None
        for frame in batches:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        writer.close()
    elif fmt == "fits":
        from astropy.io import fits

        first = batch(0, 1)
        formats = {"WDJ_name": "40A", "source_id": "K"}
        columns = [fits.Column(name=c, format=formats.get(c, "D")) for c in first.columns]
        header = fits.BinTableHDU.from_columns(columns, nrows=rows).header
        with open(path, "wb") as handle:
            handle.write(fits.PrimaryHDU().header.tostring().encode("ascii"))
            handle.write(header.tostring().encode("ascii"))
            dtype = np.dtype([("WDJ_name", "S40"), ("source_id", ">i8")]
                             + [(c, ">f8") for c in first.columns[2:]])
            written = 0
            for frame in batches:
                records = np.empty(len(frame), dtype=dtype)
                for column in frame.columns:
                    values = frame[column].to_numpy()
                    records[column] = (np.char.encode(values.astype(str), "ascii")
                                       if column == "WDJ_name" else values)
                handle.write(records.tobytes())
                written += records.nbytes
            handle.write(b"\0" * (-written % 2880))
    elif fmt == "hdf5":
        import h5py

        with h5py.File(path, "w") as handle:
            data = None
            for frame in batches:
                records = frame.to_records(index=False)
                records = records.astype([("WDJ_name", "S40")] + [
                    (c, records.dtype[c]) for c in frame.columns[1:]])
                if data is None:
                    data = handle.create_dataset("catalog", shape=(0,), maxshape=(None,),
                                                 dtype=records.dtype, chunks=(10_000,))
                data.resize(len(data) + len(records), axis=0)
                data[-len(records):] = records
    else:
        raise ValueError(fmt)


def _status(key: str) -> int | None:
    """A memory figure of /proc/self/status in kB (VmRSS, VmHWM), None off Linux."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(f"{key}:"))
    except (OSError, StopIteration):
        return None


def _resident_baseline() -> int:
    """Resident memory now (kB), with the process's peak reset to it where Linux allows.

    getrusage's ru_maxrss cannot be reset and in a child process it starts from the
    parent's size at fork; VmHWM (the same peak, for this process's memory alone)
    is reset by writing 5 to /proc/self/clear_refs.
    """
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass
    return _status("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _resident_peak() -> int:
    return _status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(path: str, fmt: str, traced: bool) -> dict[str, float]:
    """Load the catalog and read every row in slices of 500; seconds and memory."""
    import h5py  # noqa: F401  (the readers' libraries are loaded before the baseline)
    import pyarrow.parquet  # noqa: F401
    from astropy.io import fits  # noqa: F401
    from astropy.table import Table  # noqa: F401

    from skyretriever.catalogs import Catalog

    baseline = _resident_baseline()
    if traced:
        tracemalloc.start()
    begin = time.perf_counter()
    catalog = Catalog(filename=path, columns=COLUMNS, mag_filter="Gaia_G",
                      hdf5_path="catalog" if fmt == "hdf5" else None).load()
    loaded = time.perf_counter()
    rows = 0
    for rows_of_slice in catalog.iter_slices(0, None, 500):
        rows += len(rows_of_slice)
    done = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1] if traced else 0
    if traced:
        tracemalloc.stop()
    growth = _resident_peak() - baseline
    assert rows == len(catalog), (rows, len(catalog))
    return {"rows": rows, "load_s": loaded - begin, "iterate_s": done - loaded,
            "tracemalloc_peak_mb": peak / 2**20, "maxrss_growth_mb": growth / 1024}


def in_fresh_process(path: Path, fmt: str, traced: bool) -> dict[str, float]:
    command = [sys.executable, __file__, "--measure", str(path), "--format", fmt]
    if traced:
        command.append("--traced")
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="?", type=int, default=1_300_000)
    parser.add_argument("--formats", default="csv,parquet")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--format", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.format, args.traced)))
        return
    with tempfile.TemporaryDirectory(prefix="skyretriever_bench_") as folder:
        print(f"catalog of {args.rows:,} rows ({', '.join(COLUMNS.values())}, parallax, "
              "parallax_error, Pwd); slices of 500")
        for fmt in args.formats.split(","):
            path = Path(folder) / f"wd{SUFFIXES[fmt]}"
            begin = time.perf_counter()
            write(path, fmt, args.rows)
            size = path.stat().st_size / 2**20
            print(f"\n{fmt}: {size:,.0f} MB written in {time.perf_counter() - begin:.1f} s")
            timed = in_fresh_process(path, fmt, traced=False)
            traced = in_fresh_process(path, fmt, traced=True)
            rows = timed["rows"]
            print(f"  load     {timed['load_s']:7.2f} s  {rows / timed['load_s']:>11,.0f} rows/s")
            print(f"  iterate  {timed['iterate_s']:7.2f} s  "
                  f"{rows / timed['iterate_s']:>11,.0f} rows/s")
            print(f"  memory   tracemalloc peak {traced['tracemalloc_peak_mb']:.1f} MB, "
                  f"ru_maxrss growth {timed['maxrss_growth_mb']:.1f} MB "
                  f"({timed['maxrss_growth_mb'] * 2**20 / rows:.1f} bytes a row)")
            path.unlink()


if __name__ == "__main__":
    main()
