"""Solar events: the reduction of AIA cutouts to images and movies (:mod:`.images`)."""

from __future__ import annotations

from skyretriever.solar.images import ImageMapping, render_event, render_frame

__all__ = ["ImageMapping", "render_event", "render_frame"]
