"""The static HTML report: pages, values, escaping, links, atomic replacement; Chromium.

Every test runs on SQLite and on PostgreSQL (``project_factory``). The project
is a real run of the demo observatory over a catalog with hostile names, two of
whose sources an archive refuses. The browser test drives Debian's headless
Chromium over the DevTools protocol (a websocket on loopback): pages load
without console errors, tables sort when a header is clicked, every relative
link resolves in a copy of the report folder, and a screenshot is taken.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from skyretriever import Project, storage
from skyretriever.database import Session
from skyretriever.models import Detection, Properties, Source
from skyretriever.observatories import VirtualDemoObs, register_observatory
from skyretriever.report import MARKER_FILE, ReportError, write_report

HOSTILE_NAMES = ['<script>alert("report")</script>', "\"quoted\" & 'single'", "a/b",
                 "../../outside", "..", "</td></tr></table><h1>", "TIC 1+2", "étoile"]
NAMES = [f"star_{i:02d}" for i in range(12)] + HOSTILE_NAMES
REFUSED = {"star_03", HOSTILE_NAMES[0]}
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
             "source", "track", "wbr"}


@register_observatory
class RefusingDemoObs(VirtualDemoObs):
    """The demo archive, refusing the sources named in ``refused`` (a stand-in archive)."""

    name = "refusing"
    refused: ClassVar[set[str]] = set()

    def fetch(self, cat_row: dict[str, Any]):
        if cat_row["name"] in self.refused:
            raise ConnectionError(f"archive refused {cat_row['name']}")
        return super().fetch(cat_row)


def _catalog(tmp_path: Path) -> Path:
    path = tmp_path / "report_catalog.csv"
    pd.DataFrame({"name": NAMES, "ra": np.linspace(5, 355, len(NAMES)),
                  "dec": np.linspace(-60, 60, len(NAMES)),
                  "mag": np.linspace(11, 18, len(NAMES))}).to_csv(path, index=False)
    return path


@pytest.fixture
def ran(project_factory, tmp_path):
    """A project run to the end: (project, summary)."""
    RefusingDemoObs.refused = set(REFUSED)
    project = project_factory(name="report_test", obs_names=["refusing"],
                              catalog_kwargs={"filename": str(_catalog(tmp_path))},
                              refusing={"flare_fraction": 0.8, "empty_fraction": 0.1},
                              analysis_kwargs={"num_injections": 1})
    summary = project.run()
    RefusingDemoObs.refused = set()
    assert summary.counts["failed"] == len(REFUSED)
    return project, summary


# -- reading pages back --------------------------------------------------------------------
class Page(HTMLParser):
    """What a test needs of one HTML page: links, scripts, text by id, table cells."""

    def __init__(self, path: Path) -> None:
        super().__init__(convert_charrefs=True)
        self.path = path
        self.links: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.text: dict[str, str] = {}
        self.tables: dict[str, dict[str, list]] = {}
        self._open: list[tuple[str, str | None]] = []
        self._table: str | None = None
        self._section = "body"
        self._cell: dict[str, Any] | None = None
        self.feed(path.read_text(encoding="utf-8"))
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name in ("href", "src"):
            if attributes.get(name) is not None:
                self.links.append(attributes[name])
        if tag == "script":
            self.scripts.append(attributes)
        if tag == "table" and attributes.get("id"):
            self._table = attributes["id"]
            self.tables[self._table] = {"head": [], "body": []}
        elif self._table is not None:
            if tag in ("thead", "tbody"):
                self._section = "head" if tag == "thead" else "body"
            elif tag == "tr":
                self.tables[self._table][self._section].append([])
            elif tag in ("td", "th"):
                self._cell = {"text": "", "value": attributes.get("data-value"), "href": None,
                              "img": None, "attrs": attributes}
                self.tables[self._table][self._section][-1].append(self._cell)
            elif tag == "a" and self._cell is not None and self._cell["href"] is None:
                self._cell["href"] = attributes.get("href")
            elif tag == "img" and self._cell is not None:
                self._cell["img"] = attributes.get("src")
        if tag not in VOID_TAGS:
            self._open.append((tag, attributes.get("id")))
            if attributes.get("id"):
                self.text[attributes["id"]] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._cell = None
        if tag == "table":
            self._table, self._section = None, "body"
        while self._open:
            open_tag, _ = self._open.pop()
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, element_id in self._open:
            if element_id:
                self.text[element_id] += data
        if self._cell is not None:
            self._cell["text"] += data

    def body(self, table: str) -> list[list[dict[str, Any]]]:
        return self.tables[table]["body"]

    def column(self, table: str) -> list[str]:
        return [cell["text"] for cell in self.tables[table]["head"][0]]


def _report_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _check_links(folder: Path) -> int:
    """Every href and src of every page is relative and names a file inside the folder."""
    checked = 0
    root = folder.resolve()
    for path in folder.rglob("*.html"):
        for link in Page(path).links:
            parts = urlsplit(link)
            assert not parts.scheme and not parts.netloc and not parts.path.startswith("/"), (
                f"{path.name}: link {link!r} is not relative")
            target = (path.parent / unquote(parts.path)).resolve()
            assert root in target.parents, f"{path.name}: {link!r} leaves the report folder"
            assert target.is_file(), f"{path.name}: {link!r} names no file"
            checked += 1
    return checked


def _source_page(folder: Path, name: str) -> Path:
    return folder / "sources" / f"{storage.sanitize_name(name)}.html"


# -- the report's content -------------------------------------------------------------------
def test_report_shows_the_run_sources_detections_and_failures(ran, tmp_path):
    project, summary = ran
    index = write_report(project, summary=summary, top=10, per_page=8, plots=False)
    folder = index.parent
    assert index == project.output_folder / "report" / "index.html"
    assert (folder / MARKER_FILE).is_file()

    with Session() as session:
        sources = session.scalars(sa.select(Source).order_by(Source.id)).all()
        states = Counter(s.status for s in sources)
        expected_top = session.execute(
            sa.select(Source.name, Detection.snr).join(Source).where(~Detection.is_simulated)
            .order_by(Detection.snr.desc()).limit(10)).all()
        failed = {(s.name, s.error) for s in sources if s.status == "failed"}
        per_source = {s.name: (len(s.lightcurves), len(s.detections),
                               s.properties.best_snr if s.properties else None)
                      for s in sources}
    assert len(sources) == len(NAMES) and len(expected_top) == 10

    page = Page(index)
    shown_states = {row[0]["text"]: int(row[1]["text"]) for row in page.body("source-states")}
    assert shown_states == {"done": states["done"], "failed": states["failed"],
                            "new": states["new"], "all": len(NAMES)}
    top = page.body("top-detections")
    assert [row[2]["text"] for row in top] == [name for name, _ in expected_top]
    column = page.column("top-detections").index("S/N")
    assert [float(row[column]["value"]) for row in top] == pytest.approx(
        [snr for _, snr in expected_top], rel=1e-12)
    assert [int(row[0]["text"]) for row in top] == list(range(1, 11))
    config = (project.output_folder / "config.yaml").read_bytes()
    run = {row[0]["text"]: row[1]["text"] for row in page.body("run")}
    assert run["cfg_hash (SHA-256 of config.yaml)"] == hashlib.sha256(config).hexdigest()
    assert _pre_text(index) == config.decode()
    steps = {row[0]["text"]: row[1]["text"] for row in page.body("step-times")}
    assert steps == {step: f"{seconds:.2f}" for step, seconds in summary.seconds.items()}
    assert {(row[0]["text"], row[1]["text"]) for row in page.body("failure-list")} == failed

    everything = Page(folder / "failures.html")
    assert {(row[1]["text"], row[2]["text"]) for row in everything.body("all-failures")} == failed
    assert all("archive refused" in reason for _, reason in failed)

    # The source list: 8 per page, every source exactly once, each linking to its page,
    # and each source page linking back to the list page that holds it.
    pages = sorted(folder.glob("sources_*.html"), key=lambda p: int(p.stem.split("_")[1]))
    assert len(pages) == math.ceil(len(NAMES) / 8)
    listed: list[str] = []
    for number, list_page in enumerate(pages, 1):
        rows = Page(list_page).body("sources")
        assert len(rows) == (8 if number < len(pages) else len(NAMES) - 8 * (len(pages) - 1))
        for row in rows:
            name = row[1]["text"]
            listed.append(name)
            target = (folder / unquote(row[1]["href"])).resolve()
            assert target == _source_page(folder, name).resolve()
            back = Page(target).links
            assert f"../sources_{number}.html" in back
    assert sorted(listed) == sorted(NAMES)

    for name, (lightcurves, detections, best_snr) in per_source.items():
        source_page = Page(_source_page(folder, name))
        assert source_page.text["source-name"] == name
        if lightcurves:
            assert len(source_page.body("lightcurves")) == lightcurves
        if detections:
            assert len(source_page.body("source-detections")) == detections
        if best_snr is not None:
            shown = {row[0]["text"]: row[1]["text"]
                     for row in source_page.body("analysis-properties")}
            assert shown["best S/N"] == f"{best_snr:.2f}"

    # Hostile names are text everywhere: one script per page (ours, inline), no markup
    # from a name, and every link relative and inside the folder.
    for path in folder.rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        assert "<script>alert" not in text and "</td></tr></table><h1>" not in text
        scripts = Page(path).scripts
        assert len(scripts) == 1 and "src" not in scripts[0], path.name
        assert "http://" not in text and "https://" not in text, path.name
    assert _check_links(folder) > 3 * len(NAMES)
    assert all(folder.resolve() in p.resolve().parents for p in _report_files(folder))

    # Reading the sources in batches of 3 gives the same pages as batches of 200.
    small = write_report(project, folder=tmp_path / "small_batches", top=10, per_page=8,
                         plots=False, batch_size=3).parent
    for path in [*folder.glob("sources_*.html"), *(folder / "sources").glob("*.html")]:
        assert (small / path.relative_to(folder)).read_bytes() == path.read_bytes(), path.name


def _pre_text(index: Path) -> str:
    """The text of the (only) <pre> element of a page."""

    class Pre(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.inside, self.text = False, ""

        def handle_starttag(self, tag, attrs):
            self.inside = self.inside or tag == "pre"

        def handle_endtag(self, tag):
            if tag == "pre":
                self.inside = False

        def handle_data(self, data):
            if self.inside:
                self.text += data

    parser = Pre()
    parser.feed(index.read_text(encoding="utf-8"))
    return parser.text


def test_a_project_that_never_ran_gets_a_report_with_its_configuration(project_factory):
    project = project_factory(name="report_empty")
    index = write_report(project, plots=False)
    page = Page(index)
    run = {row[0]["text"]: row[1]["text"] for row in page.body("run")}
    assert run["cfg_hash (SHA-256 of config.yaml)"] == project.cfg_hash
    assert _pre_text(index) == project.config_text()
    assert not (project.output_folder / "config.yaml").exists()
    assert {row[0]["text"]: int(row[1]["text"]) for row in page.body("source-states")} == {
        "done": 0, "failed": 0, "new": 0, "all": 0}
    assert "top-detections" not in page.tables and "step-times" not in page.tables
    assert Page(index.parent / "sources_1.html").body("sources") == []
    assert _check_links(index.parent) > 0


def test_bad_arguments_and_foreign_folders_are_refused_and_left_alone(project_factory, tmp_path):
    project = project_factory(name="report_refusals")
    for keyword, value in (("top", -1), ("top", 2.5), ("per_page", 0), ("batch_size", True)):
        with pytest.raises(ValueError, match=f"write_report: {keyword} must be"):
            write_report(project, plots=False, **{keyword: value})
    foreign = tmp_path / "my_documents"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("do not delete")
    with pytest.raises(ReportError, match="is not a skyretriever report.*refusing to replace"):
        write_report(project, folder=foreign, plots=False)
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]
    a_file = tmp_path / "report.html"
    a_file.write_text("a file")
    with pytest.raises(ReportError, match="exists and is not a folder"):
        write_report(project, folder=a_file, plots=False)
    assert a_file.read_text() == "a file"
    assert not list(tmp_path.glob("*.tmp")), "no temporary folder is left behind"


def test_a_new_report_replaces_the_old_one_whole(project_factory, data_root):
    project = project_factory(name="report_replace")
    index = write_report(project, plots=False)
    stale = index.parent / "sources" / "removed_source.html"
    stale.write_text("a page of a source that is gone")
    again = write_report(project, plots=False)
    assert again == index and index.is_file() and not stale.exists()
    leftovers = [p for p in (data_root / storage.TEMP_FOLDER).rglob("*") if "report" in p.name]
    assert leftovers == [], "the old report and the build folder are both removed"


def test_plots_are_drawn_and_a_damaged_file_costs_only_its_plots(project_factory):
    from PIL import Image

    project = project_factory(name="report_plots",
                              catalog_kwargs={"default": "test", "num_sources": 5},
                              demo={"flare_fraction": 1.0, "empty_fraction": 0.0})
    project.run()
    with Session() as session:
        sources = session.scalars(sa.select(Source).order_by(Source.id)).all()
        damaged = sources[0].name
        for lightcurve in sources[0].lightcurves:      # damage every file of the first source
            lightcurve.get_fullname().write_bytes(b"not HDF5 any more")
        others = [s.name for s in sources[1:]]
        damaged_detections = sum(not d.is_simulated for d in sources[0].detections)
        top = session.scalars(sa.select(Detection.id).join(Source)
                              .where(~Detection.is_simulated, Source.name != damaged)
                              .order_by(Detection.snr.desc()).limit(3)).all()
    assert others and top
    folder = write_report(project, top=50).parent

    def size(path: Path) -> tuple[int, int]:
        with Image.open(path) as image:
            image.verify()
            return image.size

    for axis in ("mag", "score", "cadence", "filter"):
        assert min(size(folder / "plots" / f"histogram_{axis}.png")) > 300
    for name in others:
        assert min(size(folder / "sources" / f"{storage.sanitize_name(name)}.png")) > 300
    for detection_id in top:
        full = size(folder / "detections" / f"{detection_id}.png")
        thumb = size(folder / "detections" / f"{detection_id}_thumb.png")
        assert thumb[0] <= 320 and thumb[1] <= 240 and full[0] > 2 * thumb[0]
    assert not (folder / "sources" / f"{storage.sanitize_name(damaged)}.png").exists()
    assert "could not be made" in _source_page(folder, damaged).read_text()
    index = folder / "index.html"
    failed_plots = Page(index).text["plot-failures"]
    assert f"source {damaged!r}" in failed_plots and "ChecksumError" in failed_plots
    # Its light curves, and each of its detections once (not again on its own page).
    assert f"Plots not made ({1 + damaged_detections})" in failed_plots
    assert all(f"{name!r}" not in failed_plots for name in others)
    assert _check_links(folder) > 0


KILLED_REPORT = """
import sys
from skyretriever import Project
from skyretriever.report import write_report
write_report(Project(cfg_file=sys.argv[1]), top=0, progress=False)
"""


@pytest.mark.slow
def test_a_report_killed_half_way_leaves_the_good_one_in_place(database_url, data_root, tmp_path):
    config = tmp_path / "report_kill.yaml"
    config.write_text(yaml.safe_dump({
        "project": {"name": "report_kill", "obs_names": ["demo"], "progress": False},
        "database": {"url": database_url}, "data_root": str(data_root),
        "catalog": {"default": "test", "num_sources": 12},
        "observatories": {"demo": {"flare_fraction": 0.5, "empty_fraction": 0.0}},
        "execution": {"scheduler": "serial"},
    }))
    project = Project(cfg_file=str(config))
    project.run()
    index = write_report(project, plots=False)
    good = {p.relative_to(index.parent): p.read_bytes() for p in _report_files(index.parent)}

    process = subprocess.Popen([sys.executable, "-c", KILLED_REPORT, str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    temporary = data_root / storage.TEMP_FOLDER
    deadline = time.monotonic() + 300
    while True:
        built = list(temporary.glob(f"*.{process.pid}/report.*.tmp"))
        if built and len(list((built[0] / "sources").glob("*.png"))) >= 2:
            break
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the report never got to the source plots"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()

    after = {p.relative_to(index.parent): p.read_bytes() for p in _report_files(index.parent)}
    assert after == good, "the half-written report replaced nothing"
    assert built[0].is_dir()
    # What the next run does first. The report's drawing workers (forked) hold their
    # parent's folder lock until they follow it, within a second (die_with_parent).
    removed: list[Path] = []
    deadline = time.monotonic() + 30
    while built[0].parent not in removed and time.monotonic() < deadline:
        removed += storage.clean_temporary()
        time.sleep(0.1)
    assert built[0].parent in removed and not built[0].exists()
    assert write_report(project, plots=False) == index


MEASURED_REPORT = """
import gc, logging, sys, tracemalloc
from skyretriever import Project
from skyretriever.report import write_report
project = Project(cfg_file=sys.argv[1])
write_report(project, plots=False, progress=False)   # imports and caches are not what is measured
gc.collect()
logging.disable(logging.CRITICAL)
tracemalloc.start()
index = write_report(project, plots=False, progress=False, batch_size=int(sys.argv[2]),
                     per_page=100)
print(tracemalloc.get_traced_memory()[1], index)
"""


@pytest.mark.slow
def test_memory_stays_flat_over_many_sources(database_url, data_root, tmp_path):
    """Peak memory of a report of 1500 sources is about that of 150: sources are streamed.

    Each report is measured in a process of its own, as ``skyretriever report`` runs:
    tracemalloc counts what every thread of a process allocates, and inside the test
    session earlier tests leave threads and state behind (on PostgreSQL the peak once grew
    with the report's length that way, by about 6 kB per source, and never alone).
    """
    config = tmp_path / "report_memory.yaml"
    config.write_text(yaml.safe_dump({
        "project": {"name": "report_memory", "obs_names": ["demo"], "progress": False},
        "database": {"url": database_url}, "data_root": str(data_root),
        "catalog": {"default": "test", "num_sources": 20},
        "execution": {"scheduler": "serial"},
    }))
    context = Project(cfg_file=str(config)).context

    def add_sources(first: int, count: int) -> None:
        with Session() as session:
            session.execute(sa.insert(Source), [
                {"name": f"memory_{i:05d}", "project": context.name, "cfg_hash": context.cfg_hash,
                 "cat_index": i, "ra": (i * 0.37) % 360, "dec": (i % 170) - 85.0, "mag": 15.0,
                 "status": "failed" if i % 7 == 0 else "new",
                 "error": f"download (demo): reason number {i}" if i % 7 == 0 else None}
                for i in range(first, first + count)])
            session.commit()

    def peak(batch_size: int) -> tuple[int, Path]:
        done = subprocess.run([sys.executable, "-c", MEASURED_REPORT, str(config), str(batch_size)],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        traced, index = done.stdout.splitlines()[-1].split(" ", 1)
        return int(traced), Path(index)

    peaks = []
    for first, count in ((0, 150), (150, 1350)):
        add_sources(first, count)
        traced, index = peak(50)
        peaks.append(traced)
        assert len(list((index.parent / "sources").glob("*.html"))) == first + count
    failures = Page(index.parent / "failures.html").body("all-failures")
    assert len(failures) == len(range(0, 1500, 7))
    assert peaks[1] < 1.5 * peaks[0] + 500_000, peaks
    # The measure can tell: all 1500 sources in one batch peak several times higher.
    assert peak(2000)[0] > 3 * peaks[1], (peaks, "holding every source is not visible")


# -- in the browser -------------------------------------------------------------------------
def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    message = "Debian's chromium is not installed (apt-get install chromium chromium-driver)"
    if _in_ci():
        pytest.fail(f"{message}; CI=true requires it for the browser test", pytrace=False)
    pytest.skip(f"{message}; the browser test needs it")


class Chromium:
    """One tab of headless Chromium, driven over the DevTools protocol on a loopback websocket."""

    def __init__(self, executable: str, profile: Path) -> None:
        import websocket

        profile.mkdir(parents=True, exist_ok=True)
        self.log = open(profile / "chromium.log", "wb")
        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "--window-size=1280,1000", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"chromium did not start; see {profile / 'chromium.log'}")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as answer:
            tabs = [t for t in json.load(answer) if t.get("type") == "page"]
        self.socket = websocket.create_connection(tabs[0]["webSocketDebuggerUrl"], timeout=60,
                                                  suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str) -> dict[str, Any]:
        while True:
            for message in self.events:
                if message["method"] == event:
                    self.events.remove(message)
                    return message
            message = json.loads(self.socket.recv())
            if "method" in message:
                self.events.append(message)

    def open(self, url: str) -> None:
        """Load a page; its console errors, exceptions, dialogs and requests start afresh."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        self.evaluate("document.readyState")   # everything the page logged has arrived

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, failed loads and dialogs since the page opened."""
        found = []
        for message in self.events:
            method, params = message["method"], message["params"]
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(f"console.{params['type']}: {params['args']}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url')}")
            elif method == "Network.loadingFailed":
                found.append(f"failed load: {params.get('errorText')}")
            elif method == "Page.javascriptDialogOpening":
                found.append(f"dialog: {params.get('message')}")
        return found

    def requested(self) -> list[str]:
        return [m["params"]["request"]["url"] for m in self.events
                if m["method"] == "Network.requestWillBeSent"]

    def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) in the middle of the element."""
        x, y = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                      clickCount=1)

    def screenshot(self, path: Path) -> bytes:
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": size["width"],
                               "height": min(size["height"], 6000), "scale": 1})
        data = base64.b64decode(shot["data"])
        path.write_bytes(data)
        return data

    def close(self) -> None:
        socket = getattr(self, "socket", None)
        if socket is not None:
            socket.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = _chromium()
    chromium = Chromium(executable, tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def _column_values(browser: Chromium, table: str, column: int, attribute: bool) -> list:
    read = "c.getAttribute('data-value')" if attribute else "c.textContent.trim()"
    return browser.evaluate(
        f"Array.from(document.querySelectorAll('#{table} tbody tr')).map(r => r.cells[{column}])"
        f".map(c => {read})")


def test_report_in_headless_chromium(ran, browser, tmp_path):
    project, summary = ran
    written = write_report(project, summary=summary, top=12).parent
    # Where the report lies must not matter: look at a copy somewhere else.
    folder = tmp_path / "copied elsewhere" / "report"
    shutil.copytree(written, folder)
    base = folder.resolve().as_uri()

    browser.open(f"{base}/index.html")
    assert browser.problems() == []
    assert all(url.startswith("file://") for url in browser.requested()), browser.requested()
    assert browser.evaluate("document.title") == "skyretriever report: report_test"
    images = browser.evaluate("Array.from(document.images).map(i => [i.src, i.naturalWidth])")
    assert images and all(width > 0 for _, width in images), images
    assert browser.evaluate("document.scripts.length") == 1

    # Sorting the top detections: S/N ascending, then descending, by clicks on the header.
    headers = browser.evaluate(
        "Array.from(document.querySelectorAll('#top-detections thead th')).map(h => h.textContent)")
    snr_column, rank_column = headers.index("S/N"), headers.index("rank")
    shown = [float(v) for v in _column_values(browser, "top-detections", snr_column, True)]
    assert shown == sorted(shown, reverse=True) and len(shown) == 12
    browser.click(f"#top-detections thead th:nth-child({snr_column + 1})")
    ascending = [float(v) for v in _column_values(browser, "top-detections", snr_column, True)]
    assert ascending == sorted(shown)
    assert _column_values(browser, "top-detections", rank_column, False) == [
        str(rank) for rank in range(12, 0, -1)]
    assert browser.evaluate(
        f"document.querySelectorAll('#top-detections thead th')[{snr_column}]"
        ".getAttribute('aria-sort')") == "ascending"
    browser.click(f"#top-detections thead th:nth-child({snr_column + 1})")
    assert [float(v) for v in _column_values(browser, "top-detections", snr_column, True)] == shown
    source_column = headers.index("source")
    names_before = _column_values(browser, "top-detections", source_column, False)
    browser.click(f"#top-detections thead th:nth-child({source_column + 1})")
    names = _column_values(browser, "top-detections", source_column, False)
    assert sorted(names) == sorted(names_before)
    assert browser.evaluate(
        f"(n => n.every((x, i) => i === 0 || n[i - 1].localeCompare(x) <= 0))({json.dumps(names)})")
    assert browser.problems() == []

    # The source list: sources without a best S/N (the refused ones) sort last both ways.
    browser.open(f"{base}/sources_1.html")
    assert browser.problems() == []
    headers = browser.evaluate(
        "Array.from(document.querySelectorAll('#sources thead th')).map(h => h.textContent)")
    best = headers.index("best S/N")
    for _ in ("ascending", "descending"):
        browser.click(f"#sources thead th:nth-child({best + 1})")
        values = _column_values(browser, "sources", best, True)   # None: a blank cell
        numbers = [float(v) for v in values if v is not None]
        assert values[len(numbers):] == [None] * (len(values) - len(numbers))
        assert len(values) - len(numbers) >= len(REFUSED)
        assert numbers in (sorted(numbers), sorted(numbers, reverse=True))
    assert numbers == sorted(numbers, reverse=True)

    # Every page the index and the list link to opens without errors, with its images, and
    # every link the browser resolves points at a file inside the copied folder.
    pages = {f"{base}/index.html", f"{base}/sources_1.html"}
    seen: set[str] = set()
    assert browser.evaluate("window.innerWidth") == 1280
    while pages:
        url = pages.pop()
        seen.add(url)
        browser.open(url)
        assert browser.problems() == [], url
        # Nothing scrolls sideways at 1280 pixels: neither the page nor any table's box.
        widths = browser.evaluate(
            "[[document.documentElement.scrollWidth, document.documentElement.clientWidth],"
            " ...Array.from(document.querySelectorAll('table, .wide'))"
            "     .map(e => [e.scrollWidth, e.clientWidth, e.id || e.className])]")
        page_width, page_room = widths[0]
        assert page_width <= page_room, (url, widths[0])
        assert [w for w in widths[1:] if w[0] > w[1]] == [], url
        assert all(u.startswith("file://") for u in browser.requested()), url
        loaded = browser.evaluate(
            "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        assert loaded, url
        for link in browser.evaluate("Array.from(document.querySelectorAll('a[href]'))"
                                     ".map(a => a.href)"):
            target = Path(unquote(urlsplit(link).path))
            assert folder.resolve() in target.parents and target.is_file(), (url, link)
            plain = link.split("#")[0]
            if plain.endswith(".html") and plain not in seen:
                pages.add(plain)
    assert len(seen) >= len(NAMES) + 3          # index, failures, the list and every source

    hostile = _source_page(folder, HOSTILE_NAMES[0]).resolve().as_uri()
    browser.open(hostile)
    assert browser.evaluate("document.getElementById('source-name').textContent") == \
        HOSTILE_NAMES[0]
    assert browser.evaluate("document.scripts.length") == 1 and browser.problems() == []

    browser.open(f"{base}/index.html")
    shot = browser.screenshot(tmp_path / "report_index.png")
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(shot[16:20], "big"), int.from_bytes(shot[20:24], "big")
    assert width >= 1000 and height > 1500
    if os.environ.get("SKYRETRIEVER_REPORT_SCREENSHOT"):
        shutil.copy(tmp_path / "report_index.png", os.environ["SKYRETRIEVER_REPORT_SCREENSHOT"])


# -- labels, units, command-line options (issue 16, point 10) ---------------------------------
def test_properties_have_labels_units_and_sensible_precision(ran):
    project, _ = ran
    with Session() as session:
        source = session.scalars(sa.select(Source).join(Source.properties).where(
            Source.project == project.pars.name, Properties.ls_period.is_not(None))
            .order_by(Source.id)).first()
        source.properties.ls_false_alarm = 1.234e-7   # tiny: '0.000000' in six decimals
        session.commit()
        name, values = source.name, {c.key: getattr(source.properties, c.key)
                                     for c in Properties.__table__.columns}
        exptime = source.lightcurves[0].exptime
    folder = write_report(project, plots=False, top=5).parent
    page = Page(_source_page(folder, name))
    shown = {row[0]["text"]: row[1]["text"] for row in page.body("analysis-properties")}
    assert shown["Lomb-Scargle false-alarm probability"] == "1.2e-07"
    assert shown["Lomb-Scargle period"] == f"{values['ls_period']:.6g} d"
    assert shown["time span"] == f"{values['time_span']:.1f} d"
    assert shown["mean magnitude"] == f"{values['mag_mean']:.3f} mag"
    assert shown["best S/N"] == f"{values['best_snr']:.2f}"
    assert shown["epochs"] == str(values["num_points"])
    # labels for people: no raw column name is left in any table head or label cell
    raw_names = {c.key for model in (Properties, Source, Detection)
                 for c in model.__table__.columns if "_" in c.key}
    for path in [*folder.glob("*.html"), *(folder / "sources").glob("*.html")]:
        parsed = Page(path)
        labels = [cell["text"] for table in parsed.tables.values()
                  for row in [*table["head"], *table["body"]] for cell in row[:1]]
        labels += [cell["text"] for table in parsed.tables.values()
                   for row in table["head"] for cell in row]
        assert not raw_names & set(labels), (path.name, raw_names & set(labels))
    catalog = {row[0]["text"]: row[1]["text"] for row in page.body("source-properties")}
    assert catalog["RA"].endswith(" deg") and catalog["magnitude"].endswith(" mag")
    heads = page.column("lightcurves")
    assert "exposure (s)" in heads and "start (MJD)" in heads
    column = heads.index("exposure (s)")
    assert float(page.body("lightcurves")[0][column]["value"]) == exptime


def test_report_command_top_and_no_source_plots(ran, capsys, database_url, data_root, tmp_path):
    from skyretriever.cli import main

    project, _ = ran
    config = tmp_path / "report_test.yaml"   # the project of `ran`, as a user's YAML file
    config.write_text(yaml.safe_dump({
        "project": {"name": "report_test", "obs_names": ["refusing"], "progress": False},
        "database": {"url": database_url}, "data_root": str(data_root),
        "catalog": {"filename": str(tmp_path / "report_catalog.csv")},
        "observatories": {"refusing": {"flare_fraction": 0.8, "empty_fraction": 0.1}},
        "analysis": {"num_injections": 1}, "execution": {"scheduler": "serial"},
    }))
    with Session() as session:
        real = session.scalars(sa.select(Detection.id).join(Source).where(
            Source.project == project.pars.name, ~Detection.is_simulated)
            .order_by(Detection.snr.desc(), Detection.id)).all()
    assert len(real) > 3
    assert main(["report", str(config), "--top", "3", "--no-source-plots"]) == 0
    index = Path(capsys.readouterr().out.strip().splitlines()[-1])
    folder = index.parent
    assert [int(row[0]["text"]) for row in Page(index).body("top-detections")] == [1, 2, 3]
    assert list((folder / "sources").glob("*.png")) == []        # no source plots
    assert sorted(int(p.stem) for p in (folder / "detections").glob("*[0-9].png")) == sorted(
        real[:3])                                                # the top three only
    assert "Plots were not asked for" in _source_page(folder, "star_00").read_text()
    # the default draws every source's light curves and its best detections
    assert main(["report", str(config)]) == 0
    capsys.readouterr()
    assert len(list((folder / "sources").glob("*.png"))) > 5
    assert set(real) <= {int(p.stem) for p in (folder / "detections").glob("*[0-9].png")}


def test_histograms_without_injections_are_one_panel_figures(project_factory):
    from PIL import Image

    project = project_factory(name="report_no_injections",
                              catalog_kwargs={"default": "test", "num_sources": 4},
                              demo={"flare_fraction": 1.0, "empty_fraction": 0.0},
                              analysis_kwargs={"num_injections": 0})
    project.run()
    folder = write_report(project, top=2, workers=1).parent
    for axis in ("mag", "score"):
        with Image.open(folder / "plots" / f"histogram_{axis}.png") as image:
            width, height = image.size
        assert height < 0.7 * width, "a counts panel, without an empty efficiency panel"
    assert "Nothing was injected" in (folder / "index.html").read_text()


def test_each_stage_of_the_report_has_a_progress_bar(ran, database_url, data_root, tmp_path):
    """On a terminal (a pseudo-terminal here), every stage shows its own bar."""
    import pty

    config = tmp_path / "report_progress.yaml"
    config.write_text(yaml.safe_dump({
        "project": {"name": "report_test", "obs_names": ["refusing"], "progress": True},
        "database": {"url": database_url}, "data_root": str(data_root),
        "catalog": {"filename": str(tmp_path / "report_catalog.csv")},
        "observatories": {"refusing": {"flare_fraction": 0.8, "empty_fraction": 0.1}},
        "analysis": {"num_injections": 1}, "execution": {"scheduler": "serial"},
    }))
    # the observatory of `ran` is registered by this module: the command runs it in here
    code = ("import sys, tests.test_report; from skyretriever.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    leader, follower = pty.openpty()
    with subprocess.Popen([sys.executable, "-c", code, "report", str(config), "--top", "2",
                           "--no-source-plots"], cwd=Path(__file__).parent.parent,
                          stdout=subprocess.PIPE, stderr=follower) as process:
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:                 # the command closed its end
                break
            if not chunk:
                break
            shown += chunk
        output = process.stdout.read().decode()
    os.close(leader)
    assert process.returncode == 0, shown.decode(errors="replace")[-2000:]
    text = shown.decode(errors="replace")
    for stage, total in (("top detections", 2), ("histograms", 4), ("sources", len(NAMES)),
                         ("failures", len(REFUSED))):
        assert f"report report_test: {stage}" in text, (stage, text[-1500:])
        assert f"{total}/{total}" in text.split(f"report report_test: {stage}")[-1], stage
    assert output.strip().endswith("index.html")
