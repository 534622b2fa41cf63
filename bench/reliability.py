"""Reliability figures: faults injected and survived, kills survived, hostile inputs, rows lost.

Runs the fault run of ``tests/test_faults_every_kind.py``: the simulated MAST,
S3, IRSA and Gaia TAP services each answer ``--rate`` (10%) of requests with
each fault kind (503 and 429 with Retry-After, resets, timeouts, cut bodies,
HTML pages served as files, EXECUTING), while a TESS + K2 + Kepler + ZTF
project whose catalog comes from Gaia runs again and again until every source
is done. It prints, per run, what was injected and what the runs did, how the
client treated each host (requests, longest run of failed answers, breaches
of the retry rules, most requests in flight against the bound), and, against
a run on healthy archives, the rows and files lost or corrupted (should be 0).

Kills are not re-run here (the 20 SIGKILL trials of ``tests/test_kill_resume.py``
take minutes): their count is read from that test. Hostile inputs are counted
from ``tests/test_hostile_input.py``, ``tests/test_security.py`` and
``tests/test_inputs_trust.py``. Clear stops
(a full disk, a read-only data root or database, a database refusing or gone,
infrastructure errors in a row, a driver killed under its workers) are counted
from ``tests/test_clear_stops.py``, which needs root for its small file systems.

Usage::

    python bench/reliability.py                  # one fault run, seed 2026, SQLite
    python bench/reliability.py --seeds 3        # three fault runs with different seeds
    python bench/reliability.py --rate 0.2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tests import test_faults_every_kind as scenario  # noqa: E402

from skyretriever import Project, database, storage  # noqa: E402
from skyretriever.testing.server import FAULT_KINDS  # noqa: E402


def _project(archives, folder: Path, name: str) -> Project:
    return Project(name="faults", cfg_file=False, data_root=str(folder / name / "data"),
                   database_url=f"sqlite:///{folder / name / 'skyretriever.db'}",
                   progress=False, execution_kwargs=scenario.EXECUTION,
                   **scenario.project_kwargs(archives, folder / name / "cache"))


def lost(reference: dict, final: dict) -> dict[str, int]:
    """Rows of the reference run missing from (or different in) the final state."""
    raw_missing = sum(1 for key, value in reference["raw"].items()
                      if final["raw"].get(key) != value)
    return {
        "sources": len(set(reference["sources"]) - set(final["sources"])),
        "raw rows": raw_missing,
        "light curves": len(set(reference["lightcurves"]) - set(final["lightcurves"])),
        "properties": len(set(reference["properties"]) - set(final["properties"])),
        "detections": len(set(reference["detections"]) - set(final["detections"])),
    }


def fault_run(archives, folder: Path, seed: int, rate: float, reference: dict) -> dict:
    archives.set_faults(scenario.every_fault(seed, rate))
    project = _project(archives, folder, f"faults_{seed}")
    begin = time.perf_counter()
    try:
        runs = scenario.run_until_done(project, archives, folder / f"faults_{seed}" / "data")
    finally:
        archives.set_faults(None)
    seconds = time.perf_counter() - begin
    final = scenario.content()
    print(f"\nseed {seed}: {len(runs)} run(s), {seconds:.0f} s")
    for run in runs:
        injected = sum(run.faults.values(), Counter())
        print(f"  run {run.number}: {run.counts['sources']} sources, done {run.counts['done']}, "
              f"skipped {run.counts['skipped']}, failed {run.counts['failed']}, "
              f"downloads {run.counts['downloaded']}; faults injected {sum(injected.values())} "
              f"({', '.join(f'{k} {injected[k]}' for k in FAULT_KINDS)})")
        for name in archives.servers:
            audit = run.audits[name]
            print(f"    {name:9s} requests {run.requests[name]:4d}, failed answers "
                  f"{audit.failures:3d}, longest failed run {audit.longest_streak}, "
                  f"breaches {len(audit.violations)}, in flight at most "
                  f"{run.max_in_flight[name]} (bound {scenario.CONNECTIONS[name]})")
        for problem in run.file_problems + run.checker_findings:
            print(f"    BAD: {problem}")
    missing = lost(reference, final)
    print("  lost or changed against the healthy run: "
          + ", ".join(f"{k} {v}" for k, v in missing.items()))
    return {"runs": runs, "lost": missing, "final_failures": runs[-1].failures}


def kills() -> int:
    from tests import test_kill_resume as kill_test

    return kill_test.TRIALS * 2 * 2  # two schedulers, two databases


def stops() -> dict[str, int]:
    from tests import test_clear_stops

    return test_clear_stops.stop_trials()


def hostile_inputs() -> dict[str, int]:
    from tests import test_hostile_input, test_inputs_trust, test_security

    counts = dict(test_hostile_input.hostile_input_counts())
    for module in (test_security, test_inputs_trust):
        for key, value in module.hostile_input_counts().items():
            counts[key] = counts.get(key, 0) + value
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=1, help="fault runs, each with its own seed")
    parser.add_argument("--rate", type=float, default=scenario.FAULT_RATE,
                        help="fraction of requests given each fault kind")
    args = parser.parse_args()
    sky = scenario.fault_sky()
    archives = scenario.start_archives(sky)
    totals: Counter = Counter()
    survived = True
    lost_total: Counter = Counter()
    try:
        with tempfile.TemporaryDirectory(prefix="skyretriever-reliability-") as tmp:
            folder = Path(tmp)
            reference_project = _project(archives, folder, "reference")
            summary = reference_project.run()
            if summary.failures:
                print(f"the healthy run failed: {summary.failures}")
                return 1
            reference = scenario.content()
            for index in range(args.seeds):
                result = fault_run(archives, folder, 2026 + index, args.rate, reference)
                for run in result["runs"]:
                    totals += sum(run.faults.values(), Counter())
                    survived &= not (run.file_problems or run.checker_findings) and all(
                        not audit.violations for audit in run.audits.values()) and all(
                        run.max_in_flight[n] <= scenario.CONNECTIONS[n] for n in run.max_in_flight)
                survived &= not result["final_failures"]
                lost_total += Counter(result["lost"])
            database.configure("sqlite:///:memory:")
            storage.configure(folder / "unused")
    finally:
        archives.stop()
    print("\nReliability")
    print(f"  kills survived (SIGKILL at random moments, tests/test_kill_resume.py): {kills()}")
    print(f"  faults injected: {sum(totals.values())} "
          f"({', '.join(f'{k} {totals[k]}' for k in FAULT_KINDS)}); "
          f"{'all survived' if survived else 'NOT ALL SURVIVED'}")
    inputs = hostile_inputs()
    print(f"  hostile inputs tried: {sum(inputs.values())} "
          f"({', '.join(f'{k} {v}' for k, v in inputs.items())})")
    trials = stops()
    print(f"  clear stops tried (tests/test_clear_stops.py): {sum(trials.values())} "
          f"({', '.join(f'{k} {v}' for k, v in trials.items())}); each ends in one line that "
          "says what and where, and disk-full runs end, once space is freed, equal to an "
          "uninterrupted run")
    print(f"  rows and files lost: {sum(lost_total.values())}")
    return 0 if survived and not sum(lost_total.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
