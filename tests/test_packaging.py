"""What an installed package holds: the built wheel carries the demo catalog, so the
``default: demo`` preset works outside the repository, and the config hash does not
depend on where the package is installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from skyretriever import Project
from skyretriever.catalogs.catalog import DEMO_CATALOG

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (the checkout is left as it was)."""
    tree = tmp_path_factory.mktemp("tree")
    shutil.copytree(REPOSITORY / "src", tree / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPOSITORY / name, tree / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check", "-w", str(out),
                    str(tree)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("skyretriever-*.whl")
    return built


def test_the_wheel_holds_the_demo_catalog_and_the_migrations(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "skyretriever/catalogs/demo.csv" in names
    assert "skyretriever/migrations/versions/0001_initial_schema.py" in names
    shipped = zipfile.ZipFile(wheel).read("skyretriever/catalogs/demo.csv")
    assert shipped == DEMO_CATALOG.read_bytes()
    rows = [line for line in shipped.decode().splitlines() if line.startswith("DEMO-")]
    assert len(rows) == 200


@pytest.mark.slow
def test_the_demo_preset_works_from_the_installed_wheel_in_any_folder(wheel, tmp_path):
    """The wheel unpacked where no repository is near: the preset finds its catalog, and
    the catalog part of the config hash is the same as in the checkout."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = textwrap.dedent("""
        import json, skyretriever
        from skyretriever import Project
        proj = Project(name="packaged", cfg_file=False, catalog_kwargs={"default": "demo"},
                       obs_names=["demo"])
        print(json.dumps({"file": skyretriever.__file__, "rows": len(proj.catalog.load()),
                          "catalog": proj.critical_config()["catalog"]}))
    """)
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environment["PYTHONPATH"] = str(site)
    result = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]

    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["file"].startswith(str(site))                 # not the checkout's package
    assert found["rows"] == 200
    here = Project(name="packaged", cfg_file=False, catalog_kwargs={"default": "demo"},
                   obs_names=["demo"]).critical_config()["catalog"]
    assert found["catalog"] == here
    assert "filename" not in here          # the preset's file, wherever it is installed
