"""Helpers shared by the ZTF and remote-catalog tests: a small sky and its catalog rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from skyretriever.testing import SimulatedSky, SimulatedStar, Transit
from skyretriever.testing.stars import Flare

#: Observatory and catalog parameters for tests: quick retries, no waiting between attempts.
QUICK_NET = {"max_attempts": 3, "backoff": 0.0, "timeout": 10.0}

FLARE = Flare(peak_mjd=58200.0 + 365.25 * 2 + 50.0, amplitude=2.0, decay=3.0)


def ztf_stars() -> list[SimulatedStar]:
    """White dwarfs and hosts for ZTF: a fast-moving flare star, one in the south, a blend,
    one whose catalog magnitude is wrong, one known by its ZTF object id."""
    return [
        SimulatedStar("flare_wd", 30.0, 25.0, gaia_id=7001, tic_id=4001, gmag=16.0,
                      pmra=600.0, pmdec=-800.0, flare=FLARE, wd_probability=0.95),
        SimulatedStar("south_wd", 40.0, -45.0, gaia_id=7002, tic_id=4002, gmag=16.5,
                      wd_probability=0.9),
        SimulatedStar("blended", 50.0, 5.0, gaia_id=7003, tic_id=4003, gmag=15.0,
                      ztf_neighbours=((1.2, 3.0),), wd_probability=0.8),
        SimulatedStar("wrong_mag", 60.0, 35.0, gaia_id=7004, tic_id=4004, gmag=17.0,
                      wd_probability=0.3),
        SimulatedStar("by_oid", 70.0, 15.0, gaia_id=7005, tic_id=4005, gmag=14.0,
                      transit=Transit(period=1.5, epoch=2458400.0, depth=0.01)),
    ]


def ztf_sky(stars: list[SimulatedStar] | None = None) -> SimulatedSky:
    return SimulatedSky(stars if stars is not None else ztf_stars(), days_per_sector=1.0)


def gaia_catalog(sky: SimulatedSky, folder: Path, mag_offsets: dict[str, float] | None = None,
                 oids: dict[str, int] | None = None, name: str = "targets.csv") -> str:
    """A catalog of the sky as Gaia gives it: positions at 2016.0 with proper motions,
    G magnitudes (shifted by ``mag_offsets``) and, for some stars, a ZTF object id."""
    rows = []
    for star in sky.stars:
        ra, dec = star.position_at(2016.0)
        row = {"name": star.name, "ra": float(ra), "dec": float(dec),
               "mag": star.gaia_magnitude + (mag_offsets or {}).get(star.name, 0.0),
               "pmra": star.pmra, "pmdec": star.pmdec, "gaia_id": star.gaia_id}
        if oids:
            row["ztf_oid"] = oids.get(star.name)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "ztf_oid" in frame:
        frame["ztf_oid"] = frame["ztf_oid"].astype("Int64")
    path = folder / name
    frame.to_csv(path, index=False)
    return str(path)
