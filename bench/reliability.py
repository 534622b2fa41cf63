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
``tests/test_inputs_trust.py``.

Then it runs the trust trials, each kind in a pytest process of its own (both
databases, real small file systems, which need root), and prints how many ran,
how many held and how long they took: a full disk at each kind of write, a
read-only data root or database, a database refusing, dropped or deleted during
the run, infrastructure errors in a row; namespaces and raw-data identity (two
catalogs reusing names, other download parameters, another target's file, a
project named like an observatory, names differing in case, an old root
migrated); repair safety (repair during a run, links out of the root, the
user's files, writers in other PID namespaces, a damaged histogram, a report
killed between renames); stale results.

Usage::

    python bench/reliability.py                  # one fault run, seed 2026, SQLite
    python bench/reliability.py --seeds 3        # three fault runs with different seeds
    python bench/reliability.py --rate 0.2
    python bench/reliability.py --trials-only    # the trust trials alone
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
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


#: Trust trials: (kind, test file, pytest -k expression).
TRUST_TRIALS = (
    ("disk full", "tests/test_clear_stops.py",
     "disk_full or free_space or full_disk"),
    ("read-only root or database", "tests/test_clear_stops.py", "read_only or without_rights"),
    ("database outage", "tests/test_clear_stops.py",
     "deleted_during or dropped_during or infrastructure_errors"),
    ("driver killed under its workers", "tests/test_clear_stops.py", "driver_is_killed"),
    ("namespaces and raw-data identity", "tests/test_raw_identity.py", ""),
    ("repair safety and writers", "tests/test_repair_safety.py", ""),
    ("stale results", "tests/test_stale_results.py", ""),
)


def trust_trials(folder: Path) -> list[tuple[str, int, int, float]]:
    """Run each kind of trust trial; returns (kind, trials, held, seconds) per kind."""
    figures = []
    for kind, path, expression in TRUST_TRIALS:
        report = folder / f"{len(figures)}.xml"
        command = [sys.executable, "-m", "pytest", path, "-q", "-p", "no:cacheprovider",
                   f"--junitxml={report}", "-o", "junit_family=xunit2"]
        if expression:
            command += ["-k", expression]
        begin = time.perf_counter()
        subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT}"))
        seconds = time.perf_counter() - begin
        cases = ElementTree.parse(report).getroot().iter("testcase") if report.exists() else []
        trials = held = 0
        for case in cases:
            outcome = {child.tag for child in case}
            if "skipped" in outcome:
                continue
            trials += 1
            held += not outcome & {"failure", "error"}
        figures.append((kind, trials, held, seconds))
        print(f"  {kind}: {held} of {trials} held ({seconds:.0f} s)", flush=True)
    return figures


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
    parser.add_argument("--trials-only", action="store_true",
                        help="run the trust trials alone (no fault run)")
    args = parser.parse_args()
    if args.trials_only:
        with tempfile.TemporaryDirectory(prefix="skyretriever-trials-") as tmp:
            print("Trust trials")
            figures = trust_trials(Path(tmp))
        return 0 if all(held == trials > 0 for _, trials, held, _ in figures) else 1
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
    print(f"  rows and files lost: {sum(lost_total.values())}")
    print("\nTrust trials (each kind in a pytest process of its own, SQLite and PostgreSQL)")
    with tempfile.TemporaryDirectory(prefix="skyretriever-trials-") as tmp:
        figures = trust_trials(Path(tmp))
    trials_held = all(held == trials > 0 for _, trials, held, _ in figures)
    print(f"  in all: {sum(f[2] for f in figures)} of {sum(f[1] for f in figures)} held")
    return 0 if survived and trials_held and not sum(lost_total.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
