#!/usr/bin/env python3
"""Set up the environment and run the demo project or the test suite.

Needs nothing but Python 3.11: it creates ``.venv`` beside this file, installs
the exact pins of ``requirements.txt`` and the package itself (editable), and
reinstalls only when ``requirements.txt`` or ``pyproject.toml`` change.

Examples
--------
    python3 tasks.py demo          # run configs/demo.yaml end to end
    python3 tasks.py test          # lint, check the layers, then the whole test suite
    python3 tasks.py test -k storage -x   # extra arguments go to pytest
    python3 tasks.py simulate configs/wd_flares.yaml   # a ready project on simulated archives
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SKYRETRIEVER_VENV", ROOT / ".venv"))
BIN = VENV / "bin"


def _stamp() -> str:
    digest = hashlib.sha256()
    for name in ("requirements.txt", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    """Create the virtual environment and install the pinned requirements once."""
    stamp_file = VENV / ".skyretriever-stamp"
    if stamp_file.exists() and stamp_file.read_text() == _stamp():
        return
    if not (BIN / "python").exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing pinned requirements (about a minute the first time)", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "-r", str(ROOT / "requirements.txt")], check=True)
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "-e", str(ROOT)],
                   check=True)
    stamp_file.write_text(_stamp())


def run(*command: str) -> int:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(command, cwd=ROOT, env=env).returncode


def demo(args: list[str]) -> int:
    return run(str(BIN / "skyretriever"), "run", "configs/demo.yaml", *args)


def simulate(args: list[str]) -> int:
    return run(str(BIN / "python"), "-m", "skyretriever.testing", "run", *args)


def test(args: list[str]) -> int:
    # Lint the folders that exist (extensions/ and bench/ arrive with later work).
    paths = [p for p in ("src", "tests", "bench", "extensions", "tasks.py") if (ROOT / p).exists()]
    status = run(str(BIN / "ruff"), "check", *paths)
    if status:
        return status
    # The layers of docs/architecture.md (contracts in pyproject.toml).
    status = run(str(BIN / "lint-imports"), "--no-cache")
    if status:
        return status
    # Copies of real mission files (tests/test_real_files.py) come from a PyPI sdist, fetched
    # once into a cache; without them those tests skip, except under CI=true, where this fails.
    status = run(str(BIN / "python"), "bench/real_files.py")
    if status and os.environ.get("CI") == "true":
        return status
    workers = ["-n", os.environ.get("SKYRETRIEVER_TEST_WORKERS", "2")]
    return run(str(BIN / "python"), "-m", "pytest", *workers, *args)


def main() -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - tasks.py runs on whatever python3 is first
        print(f"skyretriever needs Python 3.11 or later; this is {sys.version.split()[0]} "
              f"({sys.executable}). Run tasks.py with python3.11.", file=sys.stderr)
        return 2
    commands = {"demo": demo, "simulate": simulate, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    ensure_venv()
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
