"""Fetch the real mission light-curve files the download benchmark serves copies of.

The files (a TESS SPOC 2-minute sector, a K2 campaign, two Kepler quarters) come
from altaipony 2.1.2's source distribution on PyPI, fetched with ``pip download``
and checked against the SHA-256 recorded in
:data:`skyretriever.testing.realfiles.REAL_FILES`. They go to
``~/.cache/skyretriever/real-files`` (or ``$SKYRETRIEVER_REAL_FILES``, or the
folder given), where ``bench/download.py --real-files`` and
``tests/test_real_files.py`` find them.

Examples
--------
    python bench/real_files.py                 # into the default cache
    python bench/real_files.py /tmp/real       # into a folder of your choice
"""

from __future__ import annotations

import argparse
import sys

from skyretriever.testing.realfiles import (
    REAL_FILES,
    RealFilesUnavailable,
    default_cache,
    fetch_real_files,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default=None,
                        help=f"where to keep them (default {default_cache()})")
    args = parser.parse_args()
    try:
        paths = fetch_real_files(args.folder)
    except RealFilesUnavailable as error:
        print(error, file=sys.stderr)
        return 1
    by_name = {real.name: real for real in REAL_FILES}
    for path in paths:
        real = by_name[path.name]
        print(f"{real.mission:<7} {real.size / 1e6:5.2f} MB  sha256 {real.sha256[:16]}...  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
