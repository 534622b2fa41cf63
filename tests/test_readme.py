"""The README's examples run as written.

Every Python block of the README runs in a fresh interpreter, in a folder holding
the repository's configs and catalogs, after the demo project ran there. The
blocks that ask real archives (MAST, IRSA) run against the simulated ones: the
test adds their addresses, and the only other change is a smaller catalog; each
change is listed below and must still apply, so an edit of the README shows up
here. Every ``skyretriever`` command line of the README is parsed by the command
line's own parser, and those on the demo project run; every YAML block is read.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from skyretriever.cli import _parser
from skyretriever.testing import SimulatedArchives, SimulatedStar
from skyretriever.testing.ffi import CubeBucketService, FFISky, FFIStar
from skyretriever.testing.server import ArchiveServer
from tests.mast_support import QUICK, kepler_stars, small_sky, tess_stars

REPOSITORY = Path(__file__).resolve().parent.parent
README = (REPOSITORY / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```", README, re.S | re.M)
PYTHON_BLOCKS = [text for language, text in BLOCKS if language == "python"]

#: What the test changes in a block (found by its first words) so it runs here, and why.
ADAPTATIONS: dict[str, list[tuple[str, str]]] = {
    # 1000 stars of the demo observatory take minutes; 30 show the same.
    'proj = Project(\n    name="wd_flares"': [('"num_sources": 1000', '"num_sources": 30')],
    # MAST's resolver and archives, and IRSA, are the simulated ones.
    "import skyretriever\n": [
        ('observatories=["TESS"])', 'observatories=["TESS"], **SIMULATED)'),
        ('observatories=["TESS", "ZTF"])', 'observatories=["TESS", "ZTF"], **SIMULATED)'),
    ],
    # The FFI cubes are the simulated bucket's.
    "import sqlalchemy as sa\nfrom skyretriever import Project\nfrom skyretriever.database "
    "import Session\nfrom skyretriever.models import RawImages": [
        ('obs_names=["TESSFFI"],', 'obs_names=["TESSFFI"], TESSFFI=SIMULATED["TESSFFI"],'),
    ],
    'proj = Project(\n    name="planet_hosts"': [
        ('obs_names=["TESS", "Kepler", "K2"],',
         'obs_names=["TESS", "Kepler", "K2"], obs_kwargs=SIMULATED["TESS"],'),
    ],
}


def _adapted(block: str) -> str:
    for start, changes in ADAPTATIONS.items():
        if start in block:
            for old, new in changes:
                assert old in block, f"the README's block starting {start!r} no longer has {old!r}"
                block = block.replace(old, new)
    return block


def _environment(folder: Path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("SKYRETRIEVER_DATA", "SKYRETRIEVER_DB_URL")}
    environment["PYTHONPATH"] = os.pathsep.join([str(REPOSITORY / "src"), str(folder)])
    environment["MPLBACKEND"] = "Agg"
    return environment


def _readme_sky():
    """The stars the README names (TIC 25155310 where it is), and the planet hosts."""
    star = SimulatedStar("TIC 25155310", 63.3739, -69.2267, tic_id=25155310, tmag=9.5,
                         tess_sectors=(1, 2))
    return small_sky([star, *tess_stars(), *kepler_stars()])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder like the repository's, with the demo project run in it."""
    here = tmp_path_factory.mktemp("readme")
    for name in ("configs", "extensions"):
        shutil.copytree(REPOSITORY / name, here / name)
    (here / "catalogs").mkdir()
    shutil.copy(REPOSITORY / "catalogs" / "demo.csv", here / "catalogs" / "demo.csv")
    result = subprocess.run([sys.executable, "-m", "skyretriever", "run", "configs/demo.yaml",
                             "--no-progress"], cwd=here, env=_environment(here),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return here


@pytest.fixture(scope="module")
def archives(folder):
    sky = _readme_sky()
    hosts = sky.catalog(tess_stars() + kepler_stars())
    hosts.to_csv(folder / "catalogs" / "hosts.csv", index=False)
    with SimulatedArchives(sky) as archives:
        archives.add_irsa()
        archives.start()
        yield archives


@pytest.fixture(scope="module")
def ffi_bucket(folder, tmp_path_factory):
    """The FFI cubes of two sectors around two stars, in a simulated bucket."""
    stars = [FFIStar("bright", 100.0, -30.0, tmag=10.0), FFIStar("faint", 100.07, -29.95,
                                                                  tmag=11.5)]
    sky = FFISky.simple(tmp_path_factory.mktemp("ffi"), stars, sectors=(1, 2), frames=48,
                        shape=(48, 48))
    (folder / "catalogs" / "ffi_stars.csv").write_text(
        "name,ra,dec\n" + "".join(f"{s.name},{s.ra},{s.dec}\n" for s in stars))
    with ArchiveServer([CubeBucketService(sky)]) as running:
        yield running


def test_the_readme_has_the_blocks_this_test_knows():
    assert len(PYTHON_BLOCKS) >= 7
    for start in ADAPTATIONS:
        assert any(start in block for block in PYTHON_BLOCKS), f"no block starts {start!r}"


@pytest.mark.slow
@pytest.mark.parametrize("number", range(len(PYTHON_BLOCKS)))
def test_a_python_block_runs_as_written(number, folder, archives, ffi_bucket):
    block = _adapted(PYTHON_BLOCKS[number])
    simulated = {"resolver_url": archives.mast_url + "/Santa-war/query",
                 "TESS": archives.observatory_kwargs(**QUICK),
                 "TESSFFI": {"route": "s3", "s3_endpoint_url": ffi_bucket.url,
                             "max_attempts": 3, "backoff": 0.01},
                 "ZTF": archives.ztf_kwargs(max_attempts=3, backoff=0.0)}
    prelude = f"import json\nSIMULATED = json.loads({json.dumps(json.dumps(simulated))})\n"
    result = subprocess.run([sys.executable, "-c", prelude + block], cwd=folder,
                            env=_environment(folder), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"{block}\n{result.stderr[-3000:]}"


def _command_lines() -> list[list[str]]:
    lines = []
    for language, text in BLOCKS:
        if language not in ("", "bash"):
            continue
        for line in text.replace("\\\n", " ").splitlines():
            if not line.lstrip().startswith("skyretriever "):
                continue
            words = shlex.split(line, comments=True)
            if words[:1] == ["skyretriever"]:
                lines.append(words[1 : words.index(">")] if ">" in words else words[1:])
    return lines


def test_every_command_line_of_the_readme_parses():
    lines = _command_lines()
    assert len(lines) >= 12
    parser = _parser()
    for words in lines:
        words = [re.sub(r"\$\(\(.*?\)\)", "0", word) for word in words]   # a job array's index
        args = parser.parse_args(words)
        assert args.command == words[0]


@pytest.mark.slow
def test_the_command_lines_on_the_demo_project_run(folder):
    ran = 0
    for words in _command_lines():
        if "configs/demo.yaml" not in words or words[0] in ("run", "report"):
            continue          # the demo ran already; the report has tests of its own
        result = subprocess.run([sys.executable, "-m", "skyretriever", *words], cwd=folder,
                                env=_environment(folder), capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"{words}\n{result.stderr[-2000:]}"
        assert result.stdout.strip()
        ran += 1
    assert ran >= 4
    assert (folder / "DEMO-0042.png").stat().st_size > 10_000


def test_every_yaml_block_reads():
    texts = [text for language, text in BLOCKS if language == "yaml"]
    assert len(texts) >= 3
    for text in texts:
        assert isinstance(yaml.safe_load(text.replace("catalog: {default: exoplanet",
                                                      "other: {default: exoplanet")
                                          .replace("catalog: {default: wd", "third: {default: wd")),
                          dict)
