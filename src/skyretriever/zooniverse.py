"""Zooniverse: subject sets out (images and a manifest), classifications back (as detections).

**Export.** :func:`export_subject_set` writes a folder that panoptes-cli's
``subject-set upload-subjects SET manifest.csv`` takes as it is: each event's
images of one wavelength are split into subjects of ``frames_per_subject``
frames overlapping by ``overlap`` (the last subject ends on the last frame);
each subject's images are copied into the folder and named in the manifest's
file columns ``frame_0``, ``frame_1``... (paths relative to the manifest, each
non-empty and at most 1 MiB). Metadata columns hidden from volunteers start with
``#`` (the subject key, event name, wavelength, frame times, the
``mapping_file`` of the frames' pixel mappings), ``%event`` is indexed; no FITS
header goes into the manifest (the mappings are in JSON files beside it).

The same export works for light curves (:func:`export_lightcurve_subjects`):
a subject per source with its light-curve plot.

**Upload.** :func:`upload_subject_set` sends an exported folder to a Panoptes
project through panoptes-client (the optional ``zooniverse`` extra), resumably:
each subject is created with its manifest row as metadata, its files are put
at the upload URLs Panoptes answers (through :mod:`skyretriever.net`, retried
and checked), and it is recorded in ``upload_state.json`` beside the manifest
before it is linked to the set, in batches. A second run (after a kill, a 504
or a lost connection) finishes the set: subjects already in the set (found by
their ``#subject_key``, or ``%source`` for light curves) and those recorded
but not yet linked are not sent again. The credentials come from
``PANOPTES_USERNAME`` / ``PANOPTES_PASSWORD`` (``PANOPTES_ENDPOINT``), else
from panoptes-cli's ``~/.panoptes/config.yml``; they are never logged nor
written.

**Import.** :func:`import_classifications` reads a Panoptes classification
export (CSV: ``classification_id, user_name, user_id, ..., workflow_id,
annotations, subject_data, subject_ids``), keeps one workflow if asked, and
per subject clusters the volunteers' boxes (``rotateRectangle`` marks ``x, y,
width, height, angle``, in image pixels) with scikit-learn's DBSCAN over the
distance 1 - IoU (eps 0.8, min_samples 2, the Solar Jet Hunter's settings).
panoptes_aggregation is not used: it pins ``packaging<24.3`` and cannot share
this environment (astropy needs ``packaging>=25``). Each cluster becomes a
Detection of its event (finder ``zooniverse``): the consensus box (the mean of
the members' centres, sizes and angles) in image pixels, FITS pixels and
helioprojective arcsec, the number of volunteers who drew it, the agreement
(their share of the subject's volunteers), and the answers to the questions.
Importing the same file again replaces those detections with the same ones.

Examples
--------
>>> split_frames(10, 4, 1)
[(0, 4), (3, 7), (6, 10)]
>>> split_frames(3, 5, 1)
[(0, 3)]
"""

from __future__ import annotations

import csv
import json
import logging
import math
import mimetypes
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from skyretriever import queries, storage
from skyretriever.database import Session
from skyretriever.net import NetworkError, NetworkPolicy, shared_client
from skyretriever.solar.images import MAX_IMAGE_BYTES, ImageMapping

__all__ = ["ZooniverseError", "box_iou", "cluster_boxes", "export_subject_set", "import_classifications",
           "export_lightcurve_subjects", "panoptes_credentials", "split_frames",
           "upload_subject_set"]

log = logging.getLogger(__name__)

FINDER = "zooniverse"
#: DBSCAN over 1 - IoU, as the Solar Jet Hunter's aggregation does.
EPS, MIN_SAMPLES = 0.8, 2
MANIFEST = "manifest.csv"
UPLOAD_STATE = "upload_state.json"
#: The manifest columns that name a subject, in order of preference (events, light curves).
KEY_COLUMNS = ("#subject_key", "%source")
DEFAULT_ENDPOINT = "https://www.zooniverse.org"


class ZooniverseError(ValueError):
    """A subject set that cannot be made, or a classification export that cannot be read."""


def split_frames(count: int, frames_per_subject: int, overlap: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each subject's frames: ``frames_per_subject`` long, overlapping."""
    if frames_per_subject < 1 or not 0 <= overlap < frames_per_subject:
        raise ZooniverseError(f"frames_per_subject {frames_per_subject} and overlap {overlap}: "
                              "need frames_per_subject >= 1 and 0 <= overlap < frames_per_subject")
    if count <= frames_per_subject:
        return [(0, count)] if count else []
    step, windows, start = frames_per_subject - overlap, [], 0
    while start + frames_per_subject < count:
        windows.append((start, start + frames_per_subject))
        start += step
    windows.append((count - frames_per_subject, count))
    return windows


def _copy(source: Path, target: Path) -> None:
    with storage.atomic_write(target) as temporary:
        Path(temporary).write_bytes(source.read_bytes())


def export_subject_set(project: Any, folder: str | Path, *, frames_per_subject: int = 5,
                       overlap: int = 1, wavelength: int | None = None) -> Path:
    """Write the subject-set folder of the project's events; returns the manifest's path.

    Raises
    ------
    ZooniverseError
        If an image is missing, empty or over 1 MiB, or no event has images.
    """
    folder = Path(folder)
    obs = project.observatories.get("aia")
    if obs is None:
        raise ZooniverseError("the project has no AIA observatory: nothing to export")
    with Session() as session:
        events = queries.event_cutouts(session, project.context)
        events = [(source.name, source.start_time, raw) for source, raw in events]
    rows: list[dict[str, Any]] = []
    for name, _start, raw in events:
        images_folder = storage.full_path(obs.images_folder(raw))
        index = images_folder / "images.json"
        if not index.is_file():
            raise ZooniverseError(f"event {name!r} has no images ({index} is missing): run the "
                                  "project with reduction first")
        entries = json.loads(index.read_text(encoding="utf-8"))
        waves = sorted({e["wavelength"] for e in entries})
        for wave in [wavelength] if wavelength is not None else waves:
            frames = [e for e in entries if e["wavelength"] == wave]
            for start, stop in split_frames(len(frames), frames_per_subject, overlap):
                key = f"{storage.sanitize_name(name)}_{wave}_{start:04d}"
                chosen = frames[start:stop]
                row: dict[str, Any] = {}
                for number, entry in enumerate(chosen):
                    source = images_folder / entry["image"]
                    size = source.stat().st_size if source.is_file() else 0
                    if not 0 < size <= MAX_IMAGE_BYTES:
                        raise ZooniverseError(f"{source}: {size} bytes; a subject's file must "
                                              "be non-empty and at most 1 MiB")
                    target = f"{key}/{number}.png"
                    _copy(source, folder / target)
                    row[f"frame_{number}"] = target
                mapping_file = f"{key}/mapping.json"
                with storage.atomic_write(folder / mapping_file) as temporary:
                    Path(temporary).write_text(json.dumps(
                        [{"frame": n, "fits": e["fits"], "time": e["time"],
                          "mapping": e["mapping"]} for n, e in enumerate(chosen)]),
                        encoding="utf-8")
                row.update({"#subject_key": key, "%event": name, "#wavelength": wave,
                            "#first_frame": start, "#frames": len(chosen),
                            "#start_time": chosen[0]["time"], "#end_time": chosen[-1]["time"],
                            "#mapping_file": mapping_file})
                rows.append(row)
    if not rows:
        raise ZooniverseError("no event of the project has images to export")
    columns = [f"frame_{n}" for n in range(max(len([k for k in r if k.startswith("frame_")])
                                               for r in rows))]
    columns += ["#subject_key", "%event", "#wavelength", "#first_frame", "#frames",
                "#start_time", "#end_time", "#mapping_file"]
    manifest = folder / MANIFEST
    with storage.atomic_write(manifest) as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
    return manifest


def export_lightcurve_subjects(project: Any, folder: str | Path,
                               draw: Callable[[Any, Any, Path], None]) -> Path:
    """A subject per done source with its light-curve plot (as Planet Hunters TESS does).

    Sources with no light curve to plot get no subject.

    ``draw(source, session, path)`` writes the source's plot (the command line
    passes :func:`skyretriever.plots.plot_source`). The manifest has ``frame_0``
    (the plot), ``%source`` (indexed), and ``#ra``, ``#dec``, ``#mag`` hidden.

    Raises
    ------
    ZooniverseError
        If a plot is empty or over 1 MiB, or no source is done.
    """
    folder = Path(folder)
    rows = []
    with Session() as session:
        for source in queries.done_source_rows(session, project.context):
            target = f"{storage.sanitize_name(source.name)}/lightcurves.png"
            try:
                draw(source, session, folder / target)
            except ValueError:  # nothing to plot (no data from any observatory): no subject
                continue
            size = (folder / target).stat().st_size if (folder / target).is_file() else 0
            if not 0 < size <= MAX_IMAGE_BYTES:
                raise ZooniverseError(f"{folder / target}: {size} bytes; a subject's file must "
                                      "be non-empty and at most 1 MiB")
            rows.append({"frame_0": target, "%source": source.name, "#ra": source.ra,
                         "#dec": source.dec, "#mag": source.mag})
    if not rows:
        raise ZooniverseError("no source of the project is done: nothing to export")
    manifest = folder / MANIFEST
    with storage.atomic_write(manifest) as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["frame_0", "%source", "#ra", "#dec",
                                                        "#mag"])
            writer.writeheader()
            writer.writerows(rows)
    return manifest


# -- upload -------------------------------------------------------------------------------
def panoptes_credentials(config_file: str | Path | None = None) -> tuple[str, str, str]:
    """``(username, password, endpoint)`` for Panoptes, from the environment or panoptes-cli.

    ``PANOPTES_USERNAME`` and ``PANOPTES_PASSWORD`` (and ``PANOPTES_ENDPOINT``)
    win; otherwise panoptes-cli's configuration file (``~/.panoptes/config.yml``,
    keys ``username``, ``password``, ``endpoint``) is read.

    Raises
    ------
    ZooniverseError
        If neither gives a username and a password (the message names no secret).
    """
    path = Path(config_file) if config_file else Path.home() / ".panoptes" / "config.yml"
    stored: dict[str, Any] = {}
    if path.is_file():
        try:
            stored = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ZooniverseError(f"{path}: cannot read the panoptes configuration "
                                  f"({type(error).__name__})") from None
        stored = stored if isinstance(stored, dict) else {}
    username = os.environ.get("PANOPTES_USERNAME") or stored.get("username")
    password = os.environ.get("PANOPTES_PASSWORD") or stored.get("password")
    endpoint = os.environ.get("PANOPTES_ENDPOINT") or stored.get("endpoint") or DEFAULT_ENDPOINT
    if not username or not password:
        raise ZooniverseError("no Zooniverse credentials: set PANOPTES_USERNAME and "
                              f"PANOPTES_PASSWORD, or write them in {path} (panoptes configure)")
    return str(username), str(password), str(endpoint).rstrip("/")


def _subject_key(row: dict[str, str]) -> str:
    for column in KEY_COLUMNS:
        if row.get(column):
            return row[column]
    raise ZooniverseError(f"a manifest row has none of the key columns {KEY_COLUMNS}: "
                          f"{sorted(row)[:8]}")


def _read_state(path: Path, endpoint: str, project_id: str, name: str) -> dict[str, Any]:
    fresh = {"endpoint": endpoint, "project": project_id, "subject_set_name": name,
             "subject_set": None, "subjects": {}, "linked": []}
    if not path.is_file():
        return fresh
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return fresh  # written atomically, so only a hand-edited file is broken
    same = (state.get("endpoint"), state.get("project"), state.get("subject_set_name")) == (
        endpoint, project_id, name)
    return {**fresh, **state} if same else fresh


def _write_state(path: Path, state: dict[str, Any]) -> None:
    with storage.atomic_write(path, beside=True) as temporary:
        Path(temporary).write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")


def upload_subject_set(folder: str | Path, project_id: int | str, subject_set_name: str, *,
                       link_batch: int = 25, policy: NetworkPolicy | None = None,
                       config_file: str | Path | None = None) -> dict[str, int]:
    """Upload an exported subject-set folder to a Panoptes project; resumable.

    The set named ``subject_set_name`` is found in the project or created. Returns
    counts: ``subjects`` in the manifest, ``uploaded`` now, ``already`` there before,
    ``linked`` now.

    Raises
    ------
    ZooniverseError
        Without credentials, when the login or the API refuses, or a file is missing or
        over 1 MiB (what was uploaded before stays recorded: run it again to finish).
    """
    try:
        from panoptes_client import Panoptes, Project, Subject, SubjectSet
        from panoptes_client.panoptes import PanoptesAPIException
    except ImportError:
        raise ZooniverseError("uploading needs panoptes-client: pip install "
                              "'skyretriever[zooniverse]'") from None
    folder, project_id = Path(folder), str(project_id)
    with open(folder / MANIFEST, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    files = {_subject_key(row): [row[c] for c in row if c.startswith("frame_") and row[c]]
             for row in rows}
    if len(files) != len(rows):
        raise ZooniverseError(f"{folder / MANIFEST}: subject keys repeat")
    for key, names in files.items():
        for name in names:
            size = (folder / name).stat().st_size if (folder / name).is_file() else 0
            if not 0 < size <= MAX_IMAGE_BYTES:
                raise ZooniverseError(f"{folder / name} (subject {key}): {size} bytes; a "
                                      "subject's file must be non-empty and at most 1 MiB")
    username, password, endpoint = panoptes_credentials(config_file)
    state_path = folder / UPLOAD_STATE
    state = _read_state(state_path, endpoint, project_id, subject_set_name)
    http = shared_client(policy)
    counts = {"subjects": len(rows), "uploaded": 0, "already": 0, "linked": 0}
    try:
        client = Panoptes(endpoint=endpoint, username=username, password=password)
    except PanoptesAPIException as error:
        raise ZooniverseError(f"the Zooniverse login at {endpoint} failed: {error}") from None
    except OSError as error:  # requests' connection errors
        raise ZooniverseError(f"cannot reach {endpoint}: {type(error).__name__}") from None
    with client:
        try:
            project = Project.find(project_id)
            subject_set = _subject_set(SubjectSet, project, subject_set_name, state)
            state["subject_set"] = str(subject_set.id)
            _write_state(state_path, state)
            in_set = {}
            for subject in Subject.where(subject_set_id=subject_set.id):
                metadata = subject.metadata or {}
                key = next((metadata[c] for c in KEY_COLUMNS if metadata.get(c)), None)
                if key is not None:
                    in_set[key] = str(subject.id)
            pending = [state["subjects"][key] for key in files
                       if key in state["subjects"] and key not in in_set]
            for row in rows:
                key = _subject_key(row)
                if key in in_set:
                    counts["already"] += 1
                    continue
                if key in state["subjects"]:
                    continue  # made and uploaded by an earlier run, not linked yet
                subject = Subject()
                subject.links.project = project
                subject.metadata.update(row)
                kinds = [mimetypes.guess_type(name)[0] or "image/png" for name in files[key]]
                subject.locations.extend(kinds)
                subject.modified_attributes.add("locations")
                subject.save()
                for location, name in zip(subject.raw["locations"], files[key]):
                    ((kind, url),) = location.items()
                    http.request("PUT", url, data=(folder / name).read_bytes(),
                                 headers={"Content-Type": kind, "x-ms-blob-type": "BlockBlob"},
                                 what=f"the upload of {name}")
                state["subjects"][key] = str(subject.id)
                _write_state(state_path, state)
                counts["uploaded"] += 1
                pending.append(str(subject.id))
                if len(pending) >= link_batch:
                    counts["linked"] += _link(subject_set, pending, state, state_path)
            counts["linked"] += _link(subject_set, pending, state, state_path)
        except (PanoptesAPIException, NetworkError) as error:
            raise ZooniverseError(f"the upload to {endpoint} stopped ({error}); what was sent "
                                  f"is recorded in {state_path}: run it again to finish") from None
    log.info("subject set %r (%s): %d subjects uploaded, %d already there", subject_set_name,
             state["subject_set"], counts["uploaded"], counts["already"])
    return counts


def _subject_set(subject_set_class: Any, project: Any, name: str, state: dict[str, Any]) -> Any:
    """The set this upload goes to: the one recorded, else the project's of that name, else new."""
    if state.get("subject_set"):
        return subject_set_class.find(state["subject_set"])
    found = next(iter(subject_set_class.where(project_id=project.id, display_name=name)), None)
    if found is not None:
        return found
    subject_set = subject_set_class()
    subject_set.links.project = project
    subject_set.display_name = name
    subject_set.save()
    return subject_set


def _link(subject_set: Any, pending: list[str], state: dict[str, Any], state_path: Path) -> int:
    """Link the pending subjects to the set; returns how many, and empties ``pending``."""
    if not pending:
        return 0
    subject_set.add(list(pending))
    linked = len(pending)
    state["linked"] = sorted(set(state["linked"]) | set(pending), key=int)
    _write_state(state_path, state)
    pending.clear()
    return linked


# -- boxes ---------------------------------------------------------------------------------
def _corners(x: float, y: float, width: float, height: float, angle: float) -> np.ndarray:
    """Corners of a rotated rectangle (centre x, y; angle in degrees, counter-clockwise)."""
    a = math.radians(angle)
    half = np.array([[-width, -height], [width, -height], [width, height], [-width, height]]) / 2
    rotation = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return half @ rotation.T + np.array([x, y])


def _clip(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """The convex polygon ``subject`` cut by the convex polygon ``clip`` (both anticlockwise)."""
    def inside(point, a, b):
        return (b[0] - a[0]) * (point[1] - a[1]) - (b[1] - a[1]) * (point[0] - a[0]) >= 0

    output = list(subject)
    for i in range(len(clip)):
        a, b = clip[i], clip[(i + 1) % len(clip)]
        points, output = output, []
        for j in range(len(points)):
            current, previous = points[j], points[j - 1]
            if inside(current, a, b):
                if not inside(previous, a, b):
                    output.append(_crossing(previous, current, a, b))
                output.append(current)
            elif inside(previous, a, b):
                output.append(_crossing(previous, current, a, b))
        if not output:
            break
    return np.array(output)


def _crossing(p, q, a, b):
    d1, d2 = q - p, b - a
    denominator = d1[0] * d2[1] - d1[1] * d2[0]
    t = ((a[0] - p[0]) * d2[1] - (a[1] - p[1]) * d2[0]) / denominator
    return p + t * d1


def _area(polygon: np.ndarray) -> float:
    if len(polygon) < 3:
        return 0.0
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def box_iou(first: tuple[float, ...], second: tuple[float, ...]) -> float:
    """Intersection over union of two rotated rectangles ``(x, y, width, height, angle)``.

    Examples
    --------
    >>> round(box_iou((0, 0, 2, 2, 0), (1, 0, 2, 2, 0)), 3)
    0.333
    >>> round(box_iou((0, 0, 4, 1, 0), (0, 0, 4, 1, 90)), 3)
    0.143
    """
    one, two = _corners(*first), _corners(*second)
    common = _area(_clip(one, two))
    union = _area(one) + _area(two) - common
    return common / union if union > 0 else 0.0


def _mean_box(boxes: list[tuple[float, ...]]) -> tuple[float, ...]:
    values = np.array(boxes, dtype=float)
    # Angles of rectangles repeat every 180 degrees: average on the doubled circle.
    doubled = np.radians(values[:, 4] * 2)
    angle = math.degrees(math.atan2(np.sin(doubled).mean(), np.cos(doubled).mean())) / 2
    return (*values[:, :4].mean(axis=0).tolist(), angle)


# -- classifications -----------------------------------------------------------------------
@dataclass
class _Mark:
    user: str
    classification: str
    frame: int
    box: tuple[float, float, float, float, float]


def _json_field(text: str, what: str, line: int, classification: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError) as error:
        raise ZooniverseError(f"classification export line {line} (classification "
                              f"{classification}): {what} is not JSON ({error})") from None


def _marks_and_answers(annotations: list[Any], user: str, classification: str, line: int
                       ) -> tuple[list[_Mark], dict[str, str]]:
    marks, answers = [], {}
    for task in annotations if isinstance(annotations, list) else []:
        if not isinstance(task, dict):
            continue
        value = task.get("value")
        if isinstance(value, list):
            for mark in value:
                if not isinstance(mark, dict) or not {"x", "y", "width", "height"} <= set(mark):
                    continue
                try:
                    box = tuple(float(mark.get(k, 0.0) or 0.0) for k in
                                ("x", "y", "width", "height", "angle"))
                except (TypeError, ValueError):
                    raise ZooniverseError(f"classification export line {line} (classification "
                                          f"{classification}): a mark has no numbers: "
                                          f"{mark!r}"[:300]) from None
                if box[2] > 0 and box[3] > 0 and all(math.isfinite(v) for v in box):
                    marks.append(_Mark(user, classification, int(mark.get("frame") or 0), box))
        elif isinstance(value, (str, int, float)) or value is None:
            answers[str(task.get("task_label") or task.get("task"))] = str(value)
    return marks, answers


def import_classifications(project: Any, csv_path: str | Path, subject_set: str | Path,
                           workflow: int | None = None) -> dict[str, int]:
    """Aggregate a classification export into detections; returns counts of what was read.

    ``subject_set`` is the exported folder (its manifest and mapping files).

    Raises
    ------
    ZooniverseError
        On a row whose JSON is broken, or subjects that are not of this subject set (nothing
        is written then).
    """
    subject_set = Path(subject_set)
    with open(subject_set / MANIFEST, newline="", encoding="utf-8") as handle:
        manifest = {row["#subject_key"]: row for row in csv.DictReader(handle)}
    subjects: dict[str, dict[str, Any]] = {}
    foreign: list[str] = []
    read = kept = 0
    with open(csv_path, newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            read += 1
            if workflow is not None and str(row.get("workflow_id")) != str(workflow):
                continue
            classification = str(row.get("classification_id"))
            data = _json_field(row.get("subject_data", ""), "subject_data", line, classification)
            annotations = _json_field(row.get("annotations", ""), "annotations", line,
                                      classification)
            subject_id = str(row.get("subject_ids", "")).split(";")[0]
            metadata = (data or {}).get(subject_id) or {}
            key = metadata.get("#subject_key") or metadata.get("subject_key")
            if key not in manifest:
                foreign.append(subject_id)
                continue
            kept += 1
            user = row.get("user_id") or row.get("user_name") or f"anonymous {classification}"
            marks, answers = _marks_and_answers(annotations, str(user), classification, line)
            subject = subjects.setdefault(key, {"users": set(), "marks": [], "answers": Counter(),
                                                "subject_id": subject_id})
            subject["users"].add(str(user))
            subject["marks"] += marks
            for question, answer in answers.items():
                subject["answers"][f"{question}: {answer}"] += 1
    if foreign:
        shown = ", ".join(sorted(set(foreign))[:10])
        raise ZooniverseError(f"{csv_path}: {len(foreign)} classification(s) of subjects not in "
                              f"the subject set {subject_set} (subject ids {shown}...); give the "
                              "export of this subject set's workflow (--workflow)")
    detections: list[dict[str, Any]] = []
    names = sorted({manifest[key]["%event"] for key in subjects})
    with Session() as session:
        ids = queries.source_ids_by_name(session, project.context, names)
        missing = [name for name in names if name not in ids]
        if missing:
            raise ZooniverseError(f"events {missing[:5]} are not sources of project "
                                  f"{project.context.name!r}")
        for key, subject in subjects.items():
            detections += _subject_detections(key, subject, manifest[key], subject_set,
                                              ids[manifest[key]["%event"]], project)
        queries.replace_finder_detections(session, project.context, FINDER,
                                          [ids[n] for n in names], list(subjects), detections)
        session.commit()
    return {"classifications": read, "used": kept, "subjects": len(subjects),
            "detections": len(detections)}


def cluster_boxes(boxes: list[tuple[float, ...]]) -> list[tuple[tuple[float, ...], list[int]]]:
    """The consensus boxes of volunteers' boxes: DBSCAN over 1 - IoU, then the members' mean.

    Returns each cluster's mean box ``(x, y, width, height, angle)`` and its members' indices.

    Examples
    --------
    >>> boxes = [(10, 10, 8, 4, 0), (10.5, 10, 8, 4, 2), (60, 60, 5, 5, 0)]
    >>> [(round(box[0], 2), members) for box, members in cluster_boxes(boxes)]
    [(10.25, [0, 1])]
    """
    from sklearn.cluster import DBSCAN

    if len(boxes) < MIN_SAMPLES:
        return []
    distance = np.zeros((len(boxes), len(boxes)))
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            distance[i, j] = distance[j, i] = 1.0 - box_iou(boxes[i], boxes[j])
    labels = DBSCAN(eps=EPS, min_samples=MIN_SAMPLES, metric="precomputed").fit(distance).labels_
    clusters = []
    for label in sorted(set(labels) - {-1}):
        members = np.flatnonzero(labels == label).tolist()
        clusters.append((_mean_box([boxes[i] for i in members]), members))
    return clusters


def _subject_detections(key: str, subject: dict[str, Any], row: dict[str, str],
                        subject_set: Path, source_id: int, project: Any
                        ) -> list[dict[str, Any]]:
    marks: list[_Mark] = subject["marks"]
    volunteers = len(subject["users"])
    if len(marks) < MIN_SAMPLES:
        return []
    frames = json.loads((subject_set / row["#mapping_file"]).read_text(encoding="utf-8"))
    found = []
    for box, indices in cluster_boxes([m.box for m in marks]):
        members = [marks[i] for i in indices]
        users = {m.user for m in members}
        frame = Counter(m.frame for m in members).most_common(1)[0][0]
        frame = min(max(frame, 0), len(frames) - 1)
        mapping = ImageMapping.from_json(frames[frame]["mapping"])
        corners = _corners(*box)
        fits_x, fits_y = mapping.to_fits(corners[:, 0], corners[:, 1])
        world_x, world_y = mapping.to_world(corners[:, 0], corners[:, 1])
        centre = mapping.to_world(box[0], box[1])
        scale = float(np.hypot(*np.subtract(mapping.to_world(box[0] + 1, box[1]), centre)))
        agreement = len(users) / volunteers if volunteers else 0.0
        found.append({
            "source_id": source_id, "project": project.context.name,
            "cfg_hash": project.context.cfg_hash, "finder": FINDER, "observatory": "aia",
            "filter": str(row["#wavelength"]), "is_simulated": False,
            "snr": float(len(users)), "score": float(agreement), "num_points": len(users),
            "sign": 1, "extra": {
                "subject_key": key, "subject_id": subject["subject_id"], "frame": frame,
                "fits": frames[frame]["fits"], "time": frames[frame]["time"],
                "box_image": dict(zip(("x", "y", "width", "height", "angle"), box)),
                "corners_fits": np.column_stack([fits_x, fits_y]).round(4).tolist(),
                "corners_hpc": np.column_stack([world_x, world_y]).round(4).tolist(),
                "box_hpc": {"x": float(centre[0]), "y": float(centre[1]),
                            "width": box[2] * scale, "height": box[3] * scale,
                            "angle": box[4]},
                "volunteers": len(users), "subject_volunteers": volunteers,
                "agreement": agreement, "answers": dict(subject["answers"])},
        })
    return found
