"""Helpers shared by the solar tests: two simulated jets, quick network settings, the simulated
HEK, JSOC and SSW services, and the catalog and AIA settings of a project of their events."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from skyretriever.testing.aia import JsocService, SswService
from skyretriever.testing.hek import HekService, SolarEvent
from skyretriever.testing.server import ArchiveServer

#: The email the jsoc route sends (JSOC requires one); never to be written or logged.
EMAIL = "user@example.org"
#: A jet with a known box (arcsec), 9 frames a wavelength at the tests' cadence.
JET = SolarEvent("jet1", "2020-06-07T21:30:00", "2020-06-07T21:36:00", 612.0, 318.0,
                 width=48.0, height=30.0)
#: Another event on the other side of the disc, 7 frames a wavelength.
OTHER = SolarEvent("jet2", "2020-06-07T23:00:00", "2020-06-07T23:04:00", -700.0, -250.0)
#: AIA parameters for tests: quick retries and polls, a minute's padding and cadence.
QUICK = {"max_attempts": 4, "backoff": 0.0, "timeout": 5.0, "poll_interval": 0.05,
         "poll_interval_max": 0.2, "padding": [1, 1], "cadence": 60}


@contextlib.contextmanager
def solar_services(events: tuple[SolarEvent, ...] = (JET, OTHER)
                   ) -> Iterator[tuple[ArchiveServer, JsocService, SswService]]:
    """HEK, JSOC and SSW simulators of ``events`` on one running server."""
    jsoc, ssw = JsocService(list(events)), SswService(list(events))
    with ArchiveServer([HekService(list(events)), jsoc, ssw]) as server:
        yield server, jsoc, ssw


def hek_catalog(server: ArchiveServer, tmp_path: Path) -> dict[str, Any]:
    """The catalog settings of a project of the simulated HEK's events of 2020-06-07."""
    return {"kind": "hek", "hek_url": server.url + "/hek/her",
            "time_range": ["2020-06-07", "2020-06-08"], "cache_dir": str(tmp_path / "c")}


def aia_settings(server: ArchiveServer, route: str = "ssw", **extra: Any) -> dict[str, Any]:
    """The AIA observatory's settings for the simulated services (``extra`` overrides)."""
    return {"route": route, "jsoc_url": server.url, "ssw_url": server.url, **QUICK, **extra}
