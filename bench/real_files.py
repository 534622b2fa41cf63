"""Fetch the real mission light-curve files of the benchmarks and tests.

The files the download benchmark serves copies of (a TESS SPOC 2-minute sector,
a K2 campaign, two Kepler quarters of flare stars) come from altaipony 2.1.2's
source distribution on PyPI, fetched with ``pip download`` and checked against
the SHA-256 recorded in :data:`skyretriever.testing.realfiles.REAL_FILES`. They
go to ``~/.cache/skyretriever/real-files`` (or ``$SKYRETRIEVER_REAL_FILES``, or
the folder given), where ``bench/download.py --real-files`` and
``tests/test_real_files.py`` find them.

The light curves of planet hosts (:data:`~skyretriever.testing.realfiles.PLANET_FILES`:
WASP-4, TOI-216, K2-140, K2-32 and two TESS stars of unknown status, from the
pytransit, eleanor and juliet sdists) go to its subfolder ``planets/``, where
``bench/classifier.py --planets`` and ``tests/test_real_planets.py`` find them.

``--astropy-data`` also downloads two planet hosts from astropy's documentation
data (:data:`~skyretriever.testing.realfiles.ASTROPY_DATA_FILES`: HAT-P-7, a Kepler
short-cadence quarter, and WASP-126, a TESS sector) from data.astropy.org into
``planets/``, where ``bench/classifier.py --planets`` scores them too; no test needs them.

Examples
--------
    python bench/real_files.py                 # into the default cache
    python bench/real_files.py /tmp/real       # into a folder of your choice
    python bench/real_files.py --astropy-data  # and HAT-P-7 and WASP-126 from data.astropy.org
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from skyretriever.testing.realfiles import (
    ASTROPY_DATA_FILES,
    PLANET_FILES,
    REAL_FILES,
    RealFilesUnavailable,
    default_cache,
    fetch_astropy_data,
    fetch_real_files,
    planet_cache,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default=None,
                        help=f"where to keep them (default {default_cache()})")
    parser.add_argument("--astropy-data", action="store_true",
                        help="also HAT-P-7 and WASP-126 from data.astropy.org (benchmarks only)")
    args = parser.parse_args()
    planets = Path(args.folder) / "planets" if args.folder else planet_cache()
    try:
        paths = fetch_real_files(args.folder) + fetch_real_files(planets, files=PLANET_FILES)
        if args.astropy_data:
            paths += fetch_astropy_data(planets)
    except RealFilesUnavailable as error:
        print(error, file=sys.stderr)
        return 1
    by_name = {real.name: real for real in REAL_FILES + PLANET_FILES + ASTROPY_DATA_FILES}
    for path in paths:
        real = by_name[path.name]
        print(f"{real.mission:<7} {real.size / 1e6:5.2f} MB  sha256 {real.sha256[:16]}...  "
              f"{real.target:<24} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
