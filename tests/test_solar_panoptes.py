"""Uploading a subject set through the real panoptes-client to the simulated Panoptes API:
every subject once with its files and metadata, a second run adds nothing, a run killed
mid-upload is finished without duplicates, credentials from the environment or
panoptes-cli's file and never logged nor written. (No database: the upload reads the
exported folder.)"""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from skyretriever.net import NetworkPolicy
from skyretriever.testing.panoptes import PanoptesService
from skyretriever.testing.server import ArchiveServer, Faults
from skyretriever.zooniverse import (
    UPLOAD_STATE,
    ZooniverseError,
    panoptes_credentials,
    upload_subject_set,
)

PASSWORD = "s3cret-Pa55word"
QUICK = NetworkPolicy(max_attempts=3, backoff=0.0, timeout=10.0)


def subject_folder(folder, subjects: int = 7, frames: int = 2, key_column: str = "#subject_key"):
    """A subject-set folder as ``zooniverse export`` writes it: small PNGs and a manifest
    (``key_column`` ``%source``: as for light curves, a subject per source)."""
    rng = np.random.default_rng(5)
    rows = []
    for number in range(subjects):
        key = f"SOL2020-06-07_304_{number:04d}"
        row = {}
        for frame in range(frames):
            name = f"{key}/{frame}.png"
            (folder / key).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                folder / name)
            row[f"frame_{frame}"] = name
        rows.append({**row, key_column: key, "%event": "SOL2020-06-07", "#frames": frames})
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return [row[key_column] for row in rows]


@pytest.fixture
def panoptes(monkeypatch, tmp_path):
    service = PanoptesService(users={"jethunter": PASSWORD}, page_size=3)
    project = service.add_project("Solar Jet Hunter")
    with ArchiveServer([service]) as server:
        monkeypatch.setenv("PANOPTES_USERNAME", "jethunter")
        monkeypatch.setenv("PANOPTES_PASSWORD", PASSWORD)
        monkeypatch.setenv("PANOPTES_ENDPOINT", server.url)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        yield server, service, project


def uploaded(service, folder, set_name="jets") -> dict[str, str]:
    """The keys of the set's subjects (each must be there once, with its files intact)."""
    (subject_set,) = [s for s in service.subject_sets.values() if s["display_name"] == set_name]
    members = subject_set["subject_ids"]
    assert len(members) == len(set(members))
    keys = {}
    for ident in members:
        subject = service.subjects[ident]
        key = subject["metadata"]["#subject_key"]
        assert key not in keys, f"{key} twice in the set"
        keys[key] = ident
        for number, (kind, url) in enumerate(subject["upload_urls"]):
            assert kind == "image/png"
            path = "/" + url.split("?")[0].split("/", 3)[3]
            name = subject["metadata"][f"frame_{number}"]
            assert service.media[path] == (folder / name).read_bytes()
    return keys


def test_the_real_panoptes_client_uploads_each_subject_once_with_its_files(
        panoptes, tmp_path, caplog):
    server, service, project = panoptes
    folder = tmp_path / "subjects"
    keys = subject_folder(folder)
    caplog.set_level(logging.DEBUG)
    counts = upload_subject_set(folder, project, "jets", link_batch=3, policy=QUICK)
    assert counts == {"subjects": 7, "uploaded": 7, "already": 0, "linked": 7}
    found = uploaded(service, folder)
    assert sorted(found) == keys
    subject = service.subjects[found[keys[2]]]
    assert subject["metadata"]["%event"] == "SOL2020-06-07"
    assert subject["metadata"]["frame_1"] == f"{keys[2]}/1.png"
    assert subject["links"]["project"] == project
    # Linked in batches of 3 (3, 3, 1), as the client's link call sends them.
    assert server.count("/api/subject_sets/", "POST") == 3
    # A second run finds every subject in the set (3 pages of 3) and sends nothing.
    server.reset_stats()
    again = upload_subject_set(folder, project, "jets", link_batch=3, policy=QUICK)
    assert again == {"subjects": 7, "uploaded": 0, "already": 7, "linked": 0}
    assert server.count("/api/subjects", "POST") == 0 and server.count("/media/", "PUT") == 0
    assert len(service.subjects) == 7 and len(service.subject_sets) == 1
    # The password is in no log record and no file the upload wrote.
    assert caplog.records and PASSWORD not in caplog.text
    state = (folder / UPLOAD_STATE).read_text()
    assert PASSWORD not in state and json.loads(state)["subject_set"] == \
        next(iter(service.subject_sets))


@pytest.mark.slow
def test_an_upload_killed_midway_is_finished_by_the_next_run_without_duplicates(
        panoptes, tmp_path):
    server, service, project = panoptes
    folder = tmp_path / "subjects"
    keys = subject_folder(folder, subjects=8)
    server.faults = Faults(latency=0.05)
    script = ("import sys; from skyretriever.zooniverse import upload_subject_set; "
              "upload_subject_set(sys.argv[1], sys.argv[2], 'jets', link_batch=3)")
    child = subprocess.Popen([sys.executable, "-c", script, str(folder), project],
                             env=dict(os.environ), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while server.count("/api/subjects", "POST") < 5 and child.poll() is None:
            assert time.monotonic() < deadline, "the upload did not start"
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()[-2000:]
    made_before = len(service.subjects)
    assert 5 <= made_before < 8
    server.faults = Faults()
    counts = upload_subject_set(folder, project, "jets", link_batch=3, policy=QUICK)
    assert counts["uploaded"] + counts["already"] <= 8
    assert sorted(uploaded(service, folder)) == keys
    # At most the one subject being made at the kill was made twice (left out of the set).
    assert len(service.subjects) <= 9 and len(service.subject_sets) == 1
    assert upload_subject_set(folder, project, "jets", policy=QUICK)["already"] == 8


def test_credentials_come_from_the_environment_or_the_panoptes_file_and_are_never_shown(
        panoptes, tmp_path, monkeypatch):
    server, service, project = panoptes
    folder = tmp_path / "subjects"
    keys = subject_folder(folder, subjects=2, key_column="%source")
    monkeypatch.setenv("PANOPTES_PASSWORD", "wrong-" + PASSWORD)
    with pytest.raises(ZooniverseError, match="login at .* failed: Invalid email or password") \
            as refused:
        upload_subject_set(folder, project, "jets", policy=QUICK)
    assert PASSWORD not in str(refused.value) and service.subjects == {}
    for name in ("PANOPTES_USERNAME", "PANOPTES_PASSWORD", "PANOPTES_ENDPOINT"):
        monkeypatch.delenv(name)
    with pytest.raises(ZooniverseError, match="PANOPTES_USERNAME and PANOPTES_PASSWORD"):
        upload_subject_set(folder, project, "jets", policy=QUICK)
    # panoptes-cli's configuration file (panoptes configure).
    config = tmp_path / "home" / ".panoptes" / "config.yml"
    config.parent.mkdir(parents=True)
    config.write_text(f"endpoint: {server.url}\nusername: jethunter\npassword: {PASSWORD}\n")
    assert panoptes_credentials() == ("jethunter", PASSWORD, server.url)
    assert upload_subject_set(folder, project, "jets", policy=QUICK)["uploaded"] == 2
    # Subjects of light curves are known by their source: the second run sends nothing.
    assert upload_subject_set(folder, project, "jets", policy=QUICK)["already"] == 2
    assert sorted(s["metadata"]["%source"] for s in service.subjects.values()) == keys
    # A file over Zooniverse's 1 MiB is refused before anything is sent.
    (folder / "SOL2020-06-07_304_0001" / "0.png").write_bytes(b"x" * (1024 * 1024 + 1))
    with pytest.raises(ZooniverseError, match="at most 1 MiB"):
        upload_subject_set(folder, project, "other", policy=QUICK)
    assert len(service.subject_sets) == 1
