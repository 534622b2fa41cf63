#!/usr/bin/env python3
"""Benchmark: light curves per second through the whole analysis of one TESS sector.

Each light curve is one synthetic 27-day sector at 2-minute cadence (about
18,700 epochs, the mid-sector gap, quality-flagged and missing cadences,
white and red noise, spot variability; every third star has a transit). The
analysis runs the quality checks, the peak finder, the transit search, the
properties (statistics, Lomb-Scargle peak) and 3 injections (transits and
flares, each searched by both finders again), in one process. It prints
light curves per second and the time of each step per light curve.

Examples
--------
    .venv/bin/python bench/analysis.py            # 12 light curves
    .venv/bin/python bench/analysis.py -n 30 --injections 0
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from skyretriever.analysis import Analysis
from skyretriever.analysis.simulator import transit_model
from skyretriever.analysis.synthetic import as_lightcurve, sector_lightcurve, signal_times


def make_lightcurves(count: int, seed: int = 0) -> list:
    """``count`` synthetic sectors; every third has a 0.3% transit every 3.3 days."""
    rng = np.random.default_rng(seed)
    times = signal_times()
    lightcurves = []
    for index in range(count):
        signal = transit_model(times, 3.3, times[0] + 1.1, 0.12, 0.003) if index % 3 == 0 else None
        frame = sector_lightcurve(rng, mag=rng.uniform(8, 13), noise_ppm=rng.uniform(300, 3000),
                                  red_ppm=200, variability_ppm=2000, signal=signal)
        lightcurves.append(as_lightcurve(frame))
    return lightcurves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--lightcurves", type=int, default=12)
    parser.add_argument("--injections", type=int, default=3)
    args = parser.parse_args()

    lightcurves = make_lightcurves(args.lightcurves)
    analysis = Analysis(
        finders=["peak", "transit"],
        peak={"detrend_window": 0.5},
        num_injections=args.injections,
        simulator={"events": {"transit": 1.0, "flare": 1.0}},
    )
    # one warm-up source: imports and first calls are not part of the rate
    analysis.analyze_photometry(lightcurves[:1], {"name": "warm-up"})
    analysis.timings.clear()

    found = recovered = 0
    start = time.perf_counter()
    for index, lightcurve in enumerate(lightcurves):
        result = analysis.analyze_photometry([lightcurve], {"name": f"star{index}"})
        found += sum(d["finder"] == "transit" and not d["is_simulated"] for d in result.detections)
        recovered += result.properties["num_recovered"]
    elapsed = time.perf_counter() - start

    count = len(lightcurves)
    points = int(np.mean([lc.num_points for lc in lightcurves]))
    print(f"analysis benchmark: {count} light curves of one TESS sector "
          f"({points} epochs at 2-min cadence), {args.injections} injections each")
    print(f"  {count / elapsed:.2f} light curves per second ({elapsed / count:.2f} s each)")
    print("  time per light curve by step:")
    for step, seconds in sorted(analysis.timings.items(), key=lambda item: -item[1]):
        print(f"    {step:<12} {seconds / count:7.3f} s  ({100 * seconds / elapsed:4.1f}%)")
    print(f"  real transit detections: {found} (transits put in {len(range(0, count, 3))} of "
          f"{count}); injections recovered: {recovered} of {count * args.injections}")


if __name__ == "__main__":
    main()
