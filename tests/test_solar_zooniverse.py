"""Zooniverse: a subject set exported from a project of HEK events (images and a manifest
panoptes-cli reads), synthetic volunteers' classifications aggregated back into detections
whose helioprojective box matches the known jet; bad exports refused; SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import sqlalchemy as sa

from skyretriever import queries, storage
from skyretriever.cli import main
from skyretriever.database import Session
from skyretriever.models import Detection, Lightcurve, Source
from skyretriever.plots import plot_detection
from skyretriever.report import write_report
from skyretriever.solar.images import MAX_IMAGE_BYTES, ImageMapping
from skyretriever.testing.panoptes import PanoptesService
from skyretriever.testing.server import ArchiveServer
from skyretriever.testing.zooniverse import classification_export
from skyretriever.zooniverse import (
    ZooniverseError,
    box_iou,
    cluster_boxes,
    export_subject_set,
    import_classifications,
    split_frames,
)
from tests.solar_support import JET, aia_settings, hek_catalog, solar_services


@pytest.fixture
def solar_project(project_factory, tmp_path):
    with solar_services() as (server, _, _):
        project = project_factory(obs_names=["aia"], catalog_kwargs=hek_catalog(server, tmp_path),
                                  aia=aia_settings(server))
        assert project.run().counts["done"] == 2
    return project


def true_boxes(folder, manifest_rows) -> dict[str, tuple[float, ...]]:
    """The jet's box in each of its subjects' image pixels (from the stored mapping)."""
    truth = {}
    for row in manifest_rows:
        if not row["%event"].startswith("SOL2020-06-07T21:30"):
            continue
        frames = json.loads((folder / row["#mapping_file"]).read_text())
        mapping = ImageMapping.from_json(frames[len(frames) // 2]["mapping"])
        x, y = mapping.from_world(JET.hpc_x, JET.hpc_y)
        scale = 0.6 * mapping.binning
        truth[row["#subject_key"]] = (float(x), float(y), JET.width / scale,
                                      JET.height / scale, 0.0)
    return truth


def _event_cutouts(project):
    with Session() as session:
        return queries.event_cutouts(session, project.context)


def detections() -> list[Detection]:
    with Session() as session:
        return session.scalars(sa.select(Detection).order_by(Detection.id)).all()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from tests.test_report import Chromium, _chromium

    chromium = Chromium(_chromium(), tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def check_event_pages(browser, index, found) -> None:
    """The jet's page in a browser: its movie, the volunteers' table (agreement, number)
    and the consensus boxes drawn on their frames; the other event's page (its movie
    removed): its frames and no box."""
    from PIL import Image

    with Session() as session:
        names = {s.id: s.name for s in session.scalars(sa.select(Source))}
    (source_id,) = {d.source_id for d in found}
    stem = storage.sanitize_name(names[source_id])
    page = index.parent / "sources" / f"{stem}.html"
    browser.open(page.resolve().as_uri())
    assert browser.problems() == []
    shown = browser.evaluate(
        "Array.from(document.images).map(i => [i.id, i.complete, i.naturalWidth])")
    assert ["event-movie-304", True, 200] in shown
    for detection in found:
        assert [f"consensus-{detection.id}", True, 400] in shown
    with Image.open(page.parent / f"{stem}_movie_304.png") as movie:
        assert movie.n_frames == 9
    cells = browser.evaluate(
        "Array.from(document.querySelectorAll('#volunteer-boxes tbody tr')).map(r =>"
        " Array.from(r.cells).map(c => c.textContent))")
    by_id = {int(row[0]): row for row in cells}
    assert sorted(by_id) == sorted(d.id for d in found)
    for detection in found:
        row, extra = by_id[detection.id], detection.extra
        assert row[4] == f"{extra['volunteers']} of {extra['subject_volunteers']}"
        assert row[5] == f"{extra['agreement']:.0%}"
        assert abs(float(row[6]) - JET.hpc_x) <= 2.0 and abs(float(row[7]) - JET.hpc_y) <= 2.0
        # The box is drawn (cyan, the frame twice its size) where the consensus is.
        with Image.open(page.parent / f"{stem}_box_{detection.id}.png") as drawn:
            pixels = np.asarray(drawn.convert("RGB")).astype(int)
        ys, xs = np.nonzero((pixels[..., 0] == 0) & (pixels[..., 1] == 255)
                            & (pixels[..., 2] == 255))
        box = extra["box_image"]
        assert abs((xs.min() + xs.max()) / 2 - (2 * box["x"] + 0.5)) < 2
        assert abs((ys.min() + ys.max()) / 2 - (2 * box["y"] + 0.5)) < 2
        assert 1.6 * box["width"] < xs.max() - xs.min() < 2.4 * box["width"] + 4
    other = next(name for ident, name in names.items() if ident != source_id)
    browser.open((page.parent / f"{storage.sanitize_name(other)}.html").resolve().as_uri())
    assert browser.problems() == []
    assert browser.evaluate("document.getElementById('event-movie-304')") is None
    frames = browser.evaluate("Array.from(document.querySelectorAll('img.event-frame'))"
                              ".map(i => i.complete && i.naturalWidth)")
    assert frames == [200] * 7  # its 7 frames (up to 8 are shown)
    assert "No box that volunteers agree on" in browser.evaluate("document.body.textContent")


def test_export_import_gives_the_known_jet_in_solar_coordinates(solar_project, tmp_path,
                                                                browser):
    folder = tmp_path / "subjects"
    manifest = export_subject_set(solar_project, folder, frames_per_subject=5, overlap=1)
    with open(manifest, newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, list(reader)
    # 9 frames of the jet -> (0, 5), (4, 9); 7 of the other event -> (0, 5), (2, 7).
    assert [r["#first_frame"] for r in rows] == ["0", "4", "0", "2"]
    assert header[:5] == [f"frame_{n}" for n in range(5)]
    assert "%event" in header and all(c.startswith(("frame_", "#", "%")) for c in header)
    for row in rows:
        for n in range(int(row["#frames"])):
            path = folder / row[f"frame_{n}"]
            assert 0 < path.stat().st_size <= MAX_IMAGE_BYTES
    text = manifest.read_text()
    assert "CTYPE1" not in text and "HPLN" not in text  # no FITS header in the manifest
    truth = true_boxes(folder, rows)
    assert len(truth) == 2
    export = tmp_path / "classifications.csv"
    export.write_text(classification_export(manifest, truth, volunteers=15, seed=3))
    counts = import_classifications(solar_project, export, folder, workflow=21225)
    assert counts == {"classifications": 60, "used": 60, "subjects": 4, "detections": 2}
    found = detections()
    assert {d.extra["subject_key"] for d in found} == set(truth)
    for detection in found:
        box = detection.extra["box_hpc"]
        hek_box = (JET.hpc_x, JET.hpc_y, JET.width, JET.height, 0.0)
        assert abs(box["x"] - JET.hpc_x) <= 2.0 and abs(box["y"] - JET.hpc_y) <= 2.0
        assert box_iou((box["x"], box["y"], box["width"], box["height"], box["angle"]),
                       hek_box) > 0.7
        assert 9 <= detection.extra["volunteers"] <= 15 and detection.score > 0.6
        assert detection.extra["answers"]["Is there a jet in this video?: Yes"] >= 12
        corners = detection.extra["corners_fits"]
        assert len(corners) == 4 and all(0 <= x <= 200 and 0 <= y <= 200 for x, y in corners)
    # The detection's plot: its frame with the consensus box, and a report that shows it.
    figure = plot_detection(found[0], filename=tmp_path / "jet.png")
    assert "volunteers (agreement" in figure.axes[0].get_title()
    assert figure.axes[0].patches[0].get_xy().shape == (5, 2)  # a closed four-corner box
    assert (tmp_path / "jet.png").stat().st_size > 1000
    # The other event without its movie: its page shows its frames instead.
    obs = solar_project.observatories["aia"]
    (other_raw,) = [raw for source, raw in _event_cutouts(solar_project)
                    if source.id != found[0].source_id]
    (storage.full_path(obs.images_folder(other_raw)) / "movie_304.png").unlink()
    index = write_report(solar_project, tmp_path / "report")
    assert (index.parent / "detections" / f"{found[0].id}.png").stat().st_size > 1000
    check_event_pages(browser, index, found)
    # The same file again: the same detections, none added.
    import_classifications(solar_project, export, folder)
    again = detections()
    assert len(again) == 2
    assert sorted(d.extra["box_hpc"]["x"] for d in again) == sorted(
        d.extra["box_hpc"]["x"] for d in found)


def test_bad_classification_exports_are_refused_and_nothing_is_written(solar_project, tmp_path):
    folder = tmp_path / "subjects"
    manifest = export_subject_set(solar_project, folder)
    rows = list(csv.DictReader(open(manifest, newline="")))
    text = classification_export(manifest, true_boxes(folder, rows), volunteers=3)
    lines = text.splitlines(keepends=True)
    # In the CSV the JSON's quotes are doubled.
    broken = lines[:2] + [lines[2].replace('""task"": ""T0""', '""task"": T0 broken')] + lines[3:]
    assert broken[2] != lines[2]
    (tmp_path / "broken.csv").write_text("".join(broken))
    with pytest.raises(ZooniverseError, match=r"line 3 \(classification 500000002\): "
                                              r"annotations is not JSON"):
        import_classifications(solar_project, tmp_path / "broken.csv", folder)
    foreign = text.replace('""#subject_key"": ""', '""#subject_key"": ""elsewhere_')
    assert foreign != text
    (tmp_path / "foreign.csv").write_text(foreign)
    with pytest.raises(ZooniverseError, match=r"12 classification\(s\) of subjects not in the "
                                              r"subject set.*80000000"):
        import_classifications(solar_project, tmp_path / "foreign.csv", folder)
    assert detections() == []
    # An image over Zooniverse's 1 MiB: refused, and no manifest is written.
    raw_images = next(solar_project.observatories["aia"].images_folder(raw) for _, raw in
                      _event_cutouts(solar_project))
    (storage.full_path(raw_images) / "304" / "0002.png").write_bytes(b"x" * (MAX_IMAGE_BYTES + 1))
    with pytest.raises(ZooniverseError, match="at most 1 MiB"):
        export_subject_set(solar_project, tmp_path / "too_big")
    assert not (tmp_path / "too_big" / "manifest.csv").exists()
    # Another workflow's classifications are left out.
    (tmp_path / "good.csv").write_text(text)
    counts = import_classifications(solar_project, tmp_path / "good.csv", folder, workflow=1)
    assert counts["used"] == 0 and detections() == []


def test_the_command_line_exports_imports_and_uploads(solar_project, tmp_path, database_url,
                                                      data_root, capsys, monkeypatch):
    config = tmp_path / "solar.yaml"
    config.write_text(
        f"project: {{name: {solar_project.pars.name}, progress: false, obs_names: [aia]}}\n"
        f"database: {{url: '{database_url}'}}\n"
        f"data_root: '{data_root}'\n"
        f"catalog: {json.dumps(solar_project.catalog.pars.model_dump(mode='json'))}\n"
        f"observatories: {{aia: {json.dumps(solar_project.observatories['aia'].pars.model_dump(mode='json'))}}}\n"
)
    assert main(["zooniverse", "export", str(config), "--output", str(tmp_path / "s"),
                 "--frames-per-subject", "9", "--overlap", "0"]) == 0
    manifest = capsys.readouterr().out.strip()
    assert manifest.endswith("manifest.csv") and len(list(csv.DictReader(open(manifest)))) == 2
    rows = list(csv.DictReader(open(manifest)))
    export = tmp_path / "c.csv"
    export.write_text(classification_export(manifest, true_boxes(tmp_path / "s", rows)))
    assert main(["zooniverse", "import", str(config), str(export), "--subject-set",
                 str(tmp_path / "s")]) == 0
    assert "1 detections" in capsys.readouterr().out
    # The upload (credentials from the environment), then again: nothing sent twice.
    panoptes = PanoptesService(users={"jethunter": "pw"})
    zooniverse_project = panoptes.add_project("Solar Jet Hunter")
    with ArchiveServer([panoptes]) as server:
        for name, value in (("USERNAME", "jethunter"), ("PASSWORD", "pw"),
                            ("ENDPOINT", server.url)):
            monkeypatch.setenv(f"PANOPTES_{name}", value)
        for _ in range(2):
            assert main(["zooniverse", "upload", str(config), "--project", zooniverse_project,
                         "--subject-set", "jets", "--folder", str(tmp_path / "s")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "2 subjects, 2 uploaded, 0 already, 2 linked", "2 subjects, 0 uploaded, 2 already, 0 linked"]
    (subject_set,) = panoptes.subject_sets.values()
    assert len(subject_set["subject_ids"]) == 2 == len(panoptes.subjects)
    assert main(["zooniverse", "import", str(config), str(tmp_path / "missing.csv"),
                 "--subject-set", str(tmp_path / "s")]) == 1


def test_frames_are_split_with_overlap_and_bad_splits_are_refused():
    assert split_frames(9, 5, 1) == [(0, 5), (4, 9)]
    assert split_frames(12, 5, 2) == [(0, 5), (3, 8), (6, 11), (7, 12)]
    assert split_frames(0, 5, 1) == []
    with pytest.raises(ZooniverseError, match="overlap"):
        split_frames(9, 3, 3)


def test_thin_diagonal_boxes_agree_less_than_compact_ones():
    import random

    from skyretriever.testing.zooniverse import noisy_mark

    def consensus(truth, seed):
        rng = random.Random(seed)
        marks = [noisy_mark(truth, rng, 2.0) for _ in range(15)]
        boxes = [tuple(m[k] for k in ("x", "y", "width", "height", "angle")) for m in marks]
        pairwise = np.mean([box_iou(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]])
        clusters = cluster_boxes(boxes)
        return pairwise, clusters

    compact, thin = (100.0, 100.0, 40.0, 30.0, 0.0), (100.0, 100.0, 60.0, 8.0, 40.0)
    for seed in range(3):
        pairwise_compact, clusters_compact = consensus(compact, seed)
        pairwise_thin, clusters_thin = consensus(thin, seed)
        # Volunteers' thin diagonal boxes overlap each other far less...
        assert pairwise_thin < pairwise_compact - 0.2
        # ...the compact jet is one cluster of everyone, close to the truth;
        assert len(clusters_compact) == 1 and len(clusters_compact[0][1]) == 15
        assert box_iou(clusters_compact[0][0], compact) > 0.85
        # the thin one is found by fewer volunteers or further from the truth.
        best_thin = max(clusters_thin, key=lambda c: len(c[1]), default=((0, 0, 1, 1, 0), []))
        assert (len(best_thin[1]) < 15 or box_iou(best_thin[0], thin)
                < box_iou(clusters_compact[0][0], compact))


def test_light_curves_export_as_one_subject_per_source(project_factory, tmp_path, database_url,
                                                       data_root, capsys):
    project = project_factory(name="stars", catalog_kwargs={"default": "test", "num_sources": 4})
    assert project.run().counts["done"] == 4
    config = tmp_path / "stars.yaml"
    config.write_text(
        "project: {name: stars, progress: false, obs_names: [demo]}\n"
        f"database: {{url: '{database_url}'}}\n"
        f"data_root: '{data_root}'\n"
        "catalog: {default: test, num_sources: 4}\n")
    assert main(["zooniverse", "export", str(config), "--output", str(tmp_path / "lc")]) == 0
    manifest = capsys.readouterr().out.strip()
    rows = list(csv.DictReader(open(manifest)))
    with Session() as session:
        plotted = sorted(set(session.scalars(sa.select(Source.name).join(Lightcurve))))
    assert sorted(r["%source"] for r in rows) == plotted and len(plotted) >= 2
    for row in rows:
        size = (tmp_path / "lc" / row["frame_0"]).stat().st_size
        assert 1000 < size <= MAX_IMAGE_BYTES
        assert -90 <= float(row["#dec"]) <= 90
