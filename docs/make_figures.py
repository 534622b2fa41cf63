"""Draw the README's figures from a finished demo project.

Run the demo first (``python3 tasks.py demo``), then::

    .venv/bin/python docs/make_figures.py          # writes docs/images/*.png

The figures are the strongest real detection's source (every light curve on
one time axis), that detection with its event window, and the flare
recovery efficiency of a short run with injections over the same stars.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"


def main() -> int:
    from skyretriever import Project
    from skyretriever.database import Session
    from skyretriever.models import Detection

    project = Project(cfg_file=str(ROOT / "configs" / "demo.yaml"))
    IMAGES.mkdir(parents=True, exist_ok=True)
    with Session() as session:
        detection = session.scalars(
            sa.select(Detection).where(Detection.project == project.context.name,
                                       Detection.is_simulated.is_(False))
            .order_by(Detection.snr.desc()).limit(1)).first()
        if detection is None:
            print("no detections: run the demo first (python3 tasks.py demo)", file=sys.stderr)
            return 1
        plt.close(detection.source.plot(session=session, filename=IMAGES / "demo_source.png"))
        plt.close(detection.plot(session=session, filename=IMAGES / "demo_detection.png"))

    # Recovery efficiency needs injections: a separate small project over the same stars.
    injected = Project(
        name="demo_injections", cfg_file=False, data_root=str(project.data_root),
        database_url=project.database_url.render_as_string(hide_password=False),
        progress=False,
        obs_names=["demo"], catalog_kwargs={"default": "demo"},
        demo={"wait_time": 0.0, "flare_fraction": 0.2, "empty_fraction": 0.1},
        analysis_kwargs={"num_injections": 3},
    )
    injected.run()
    from skyretriever.analysis.histogram import Histogram

    histogram = Histogram.load(injected.histogram_path())
    plt.close(histogram.plot(along="score", filename=IMAGES / "demo_efficiency.png"))
    print(f"figures written to {IMAGES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
