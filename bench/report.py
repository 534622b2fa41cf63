"""Time of the HTML report of the demo project (200 stars), with its plots.

Runs the project of ``--config`` first if it has not run (the demo: 200 synthetic
stars of ``catalogs/demo.csv``; a finished project is only checked), then writes
its report ``--rounds`` times, each in a fresh process, into a temporary folder,
and prints per round the wall time of ``write_report`` (imports not counted; they
are printed apart), the CPU time of the process and of its drawing workers, and
how many figures were made.

Usage::

    python bench/report.py                              # configs/demo.yaml, default workers
    python bench/report.py --workers 1 --rounds 3       # every figure drawn in one process
    python bench/report.py --no-source-plots            # the summary's figures only
    python bench/report.py --against 743eaf5            # this tree and that commit, in turn

``--against REF`` measures the code of git commit REF in the same run (checked out
in a temporary worktree, imported from its ``src``), turn about with this tree's
rounds, and prints both medians and their ratio. Other work on the machine changes
the figures: say what else was running when you quote them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run in a fresh process: the report of the project, timed without the imports.
MEASURE = r"""
import json, os, resource, sys, time
begin = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from skyretriever import Project
from skyretriever import report as report_module
imported = time.perf_counter() - begin
project = Project(cfg_file=sys.argv[2])
options = json.loads(sys.argv[4])
if "workers" in options and "workers" not in report_module.write_report.__code__.co_varnames:
    options.pop("workers")                     # code from before the drawing workers
cpu = time.process_time()
start = time.perf_counter()
index = report_module.write_report(project, folder=sys.argv[3], progress=False, **options)
wall = time.perf_counter() - start
children = resource.getrusage(resource.RUSAGE_CHILDREN)
folder = index.parent
figures = sum(1 for p in folder.rglob("*.png") if not p.name.endswith("_thumb.png"))
print(json.dumps({"wall": wall, "cpu": time.process_time() - cpu,
                  "workers_cpu": children.ru_utime + children.ru_stime,
                  "imports": imported, "figures": figures}))
"""


def ensure_run(config: Path) -> None:
    """Run the project once if it has not finished (a finished one is only checked)."""
    code = ("import sys; from skyretriever import Project; "
            "Project(cfg_file=sys.argv[1], progress=False).run()")
    subprocess.run([sys.executable, "-c", code, str(config)], check=True,
                   stdout=subprocess.DEVNULL)


def measure(src: Path, config: Path, options: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_report_") as scratch:
        done = subprocess.run(
            [sys.executable, "-c", MEASURE, str(src), str(config),
             str(Path(scratch) / "report"), json.dumps(options)],
            capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"the report failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def checkout(ref: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), ref],
                   check=True, capture_output=True)
    return where / "src"


def describe(label: str, result: dict) -> str:
    return (f"{label}: {result['wall']:.1f} s ({result['figures']} figures; CPU "
            f"{result['cpu']:.1f} s here + {result['workers_cpu']:.1f} s in workers; "
            f"imports {result['imports']:.1f} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None,
                        help="processes drawing the figures (default: the report's own)")
    parser.add_argument("--top", type=int, default=None)
    parser.add_argument("--no-source-plots", action="store_true")
    parser.add_argument("--against", metavar="REF", help="also measure git commit REF")
    args = parser.parse_args()

    config = Path(args.config).resolve()
    ensure_run(config)
    options: dict = {}
    if args.workers is not None:
        options["workers"] = args.workers
    if args.top is not None:
        options["top"] = args.top
    if args.no_source_plots:
        options["source_plots"] = False
    print(f"report of {config.name}: {os.cpu_count()} cores, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the start; options {options}")

    trees = [("this tree", ROOT / "src")]
    scratch = Path(tempfile.mkdtemp(prefix="bench_report_tree_"))
    try:
        if args.against:
            trees.append((args.against, checkout(args.against, scratch / "tree")))
        walls: dict[str, list[float]] = {label: [] for label, _ in trees}
        for number in range(1, args.rounds + 1):
            for label, src in trees:
                result = measure(src, config, options)
                walls[label].append(result["wall"])
                print(describe(f"round {number}, {label}", result), flush=True)
        medians = {label: statistics.median(values) for label, values in walls.items()}
        for label, value in medians.items():
            print(f"median {label}: {value:.1f} s")
        if args.against:
            print(f"{args.against} / this tree: {medians[args.against] / medians['this tree']:.2f}")
        print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        if args.against:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(scratch / "tree")], check=False, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
