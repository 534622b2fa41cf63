"""Simulated Zooniverse volunteers: a Panoptes classification export from known boxes.

:func:`classification_export` reads an exported subject set's manifest, gives
each subject a Panoptes subject id, and writes the CSV Panoptes exports
(``classification_id, user_name, user_id, user_ip, workflow_id,
workflow_name, workflow_version, created_at, gold_standard, expert, metadata,
annotations, subject_data, subject_ids``) for ``volunteers`` noisy volunteers
per subject: a question task ``T0`` ("Is there a jet?") and a drawing task
``T1`` of ``rotateRectangle`` marks, drawn around the subject's true box (given
in image pixels by ``truth``) with Gaussian ``noise`` pixels on the centre and
size and a few degrees on the angle; ``miss_rate`` of them draw nothing and
answer "No", ``stray_rate`` draw a box somewhere else.

Examples
--------
>>> import random
>>> mark = noisy_mark((50.0, 40.0, 20.0, 10.0, 0.0), random.Random(1), 1.0)
>>> abs(mark["x"] - 50.0) < 5 and mark["tool_label"]
'Jet'
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Mapping
from pathlib import Path

__all__ = ["COLUMNS", "classification_export", "noisy_mark"]

COLUMNS = ("classification_id", "user_name", "user_id", "user_ip", "workflow_id",
           "workflow_name", "workflow_version", "created_at", "gold_standard", "expert",
           "metadata", "annotations", "subject_data", "subject_ids")


def noisy_mark(box: tuple[float, float, float, float, float], rng: random.Random,
               noise: float, frame: int = 0) -> dict[str, object]:
    """One volunteer's ``rotateRectangle`` mark around ``box`` (x, y, width, height, angle)."""
    x, y, width, height, angle = box
    return {"x": round(x + rng.gauss(0, noise), 2), "y": round(y + rng.gauss(0, noise), 2),
            "width": round(max(2.0, width + rng.gauss(0, noise)), 2),
            "height": round(max(2.0, height + rng.gauss(0, noise)), 2),
            "angle": round(angle + rng.gauss(0, 3.0), 2), "frame": frame, "tool": 0,
            "details": [], "tool_label": "Jet"}


def classification_export(manifest: str | Path,
                          truth: Mapping[str, tuple[float, float, float, float, float]],
                          *, volunteers: int = 12, noise: float = 1.5, miss_rate: float = 0.1,
                          stray_rate: float = 0.1, workflow_id: int = 21225,
                          first_subject_id: int = 80_000_000, seed: int = 0) -> str:
    """The CSV text of a classification export of the subjects of ``manifest``.

    ``truth`` gives the true box of a subject by its ``#subject_key``; subjects
    without one get only "No" answers.
    """
    rng = random.Random(seed)
    with open(manifest, newline="", encoding="utf-8") as handle:
        subjects = list(csv.DictReader(handle))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    number = 500_000_000
    for index, subject in enumerate(subjects):
        subject_id = str(first_subject_id + index)
        data = {subject_id: {"retired": None, **subject}}
        box = truth.get(subject["#subject_key"])
        frames = int(subject.get("#frames") or 1)
        for volunteer in range(volunteers):
            number += 1
            roll = rng.random()
            marks, answer = [], "No"
            if box is not None and roll >= miss_rate:
                answer = "Yes"
                if roll < miss_rate + stray_rate:
                    x, y, width, height, angle = box
                    stray = (x + rng.choice((-1, 1)) * 4 * width, y + 3 * height, width,
                             height, angle)
                    marks = [noisy_mark(stray, rng, noise, rng.randrange(frames))]
                else:
                    marks = [noisy_mark(box, rng, noise, frames // 2)]
            annotations = [
                {"task": "T0", "task_label": "Is there a jet in this video?", "value": answer},
                {"task": "T1", "task_label": "Draw a box around the jet", "value": marks},
            ]
            metadata = {"started_at": "2021-05-01T10:00:00.000Z",
                        "finished_at": "2021-05-01T10:01:30.000Z",
                        "subject_dimensions": [{"naturalWidth": 200, "naturalHeight": 200}] * frames,
                        "user_language": "en", "workflow_version": "9.12"}
            writer.writerow([number, f"volunteer_{volunteer}", 1000 + volunteer,
                             f"ip{volunteer:04x}", workflow_id, "Solar Jet Hunter", "9.12",
                             "2021-05-01 10:01:30 UTC", "", "", json.dumps(metadata),
                             json.dumps(annotations), json.dumps(data), subject_id])
    return out.getvalue()
