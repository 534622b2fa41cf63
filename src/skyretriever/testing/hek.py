"""The simulated Heliophysics Event Knowledgebase (HEK) search service.

:class:`HekService` answers ``GET /hek/her`` as LMSAL's HEK does for
``cmd=search&type=column&cosec=2``: ``event_type`` (a comma list of two-letter
codes, or ``**``), ``event_starttime`` and ``event_endtime`` (an event is
listed when its time span meets the range), ``event_coordsys=helioprojective``
with the box ``x1, x2, y1, y2`` (arcsec; the event's ``hpc_x``, ``hpc_y`` is
inside), attribute filters ``param<N>``, ``op<N>``, ``value<N>`` (``=``,
``!=``, ``<``, ``<=``, ``>``, ``>=``, ``like`` with ``%``), and ``page``
(from 1). The answer is ``{"result": [...], "overmax": bool}``, ``page_size``
records a page, ``overmax`` true while more pages follow. Records carry the
fields the real ones do (``SOL_standard``, ``event_coord1``...,
``hpc_bbox``, ``boundbox_c1ll``...), so sunpy's ``HEKClient`` parses them.
The fault knobs of :class:`~skyretriever.testing.server.Faults` apply (the file
faults, cut bodies and HTML pages, too).

Examples
--------
>>> event = SolarEvent("CJ1", "2020-06-07T21:30:00", "2020-06-07T21:45:00", 789.0, 694.0)
>>> record = hek_record(event)
>>> record["SOL_standard"], record["hpc_coord"]
('SOL2020-06-07T21:30:00L...', 'POINT(789 694)')
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from skyretriever.testing.server import Reply, Request, Route, Service

__all__ = ["HekService", "SolarEvent", "hek_record", "solar_events"]

_TIME = "%Y-%m-%dT%H:%M:%S"


@dataclass(frozen=True)
class SolarEvent:
    """One simulated event: an id, its times (UTC), where it is (arcsec) and its box size."""

    ident: str
    start: str
    end: str
    hpc_x: float
    hpc_y: float
    width: float = 60.0
    height: float = 40.0
    event_type: str = "CJ"
    channel: int = 304
    frm_name: str = "EGSO_SFC"

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(x1, x2, y1, y2) in arcsec."""
        return (self.hpc_x - self.width / 2, self.hpc_x + self.width / 2,
                self.hpc_y - self.height / 2, self.hpc_y + self.height / 2)


def _carrington(x: float, y: float) -> tuple[float, float]:
    """A rough heliographic longitude and latitude (degrees) for the SOL_standard name."""
    radius = 960.0
    sx, sy = max(-1.0, min(1.0, x / radius)), max(-1.0, min(1.0, y / radius))
    latitude = math.degrees(math.asin(sy))
    longitude = math.degrees(math.asin(max(-1.0, min(1.0, sx / max(math.cos(math.radians(
        latitude)), 1e-6)))))
    return longitude, latitude


def hek_record(event: SolarEvent) -> dict[str, Any]:
    """The HEK record of an event, with the fields and formats of the real service."""
    longitude, latitude = _carrington(event.hpc_x, event.hpc_y)
    ew = f"{'W' if longitude >= 0 else 'E'}{abs(round(longitude)):02d}"
    ns = f"{'N' if latitude >= 0 else 'S'}{abs(round(latitude)):02d}"
    x1, x2, y1, y2 = event.bbox
    polygon = (f"POLYGON(({x1:g} {y1:g},{x2:g} {y1:g},{x2:g} {y2:g},{x1:g} {y2:g},"
               f"{x1:g} {y1:g}))")
    return {
        "SOL_standard": f"SOL{event.start}L{(longitude % 360):03.0f}C{90 - latitude:03.0f}",
        "event_type": event.event_type,
        "event_starttime": event.start,
        "event_endtime": event.end,
        "event_peaktime": None,
        "event_coordsys": "UTC-HPC-TOPO",
        "event_coordunit": "arcseconds",
        "event_coord1": event.hpc_x,
        "event_coord2": event.hpc_y,
        "event_coord3": None,
        "hpc_x": event.hpc_x,
        "hpc_y": event.hpc_y,
        "hpc_coord": f"POINT({event.hpc_x:g} {event.hpc_y:g})",
        "hpc_bbox": polygon,
        "hgc_x": longitude,
        "hgc_y": latitude,
        "boundbox_c1ll": x1,
        "boundbox_c1ur": x2,
        "boundbox_c2ll": y1,
        "boundbox_c2ur": y2,
        "frm_name": event.frm_name,
        "frm_identifier": "Feature Finding Team",
        "search_frm_name": event.frm_name,
        "obs_observatory": "SDO",
        "obs_instrument": "AIA",
        "obs_channelid": str(event.channel),
        "event_description": f"Coronal jet {event.ident} {ew}{ns}",
        "gs_movieurl": "",
        "kb_archivid": f"ivo://helio-informatics.org/{event.event_type}_{event.ident}",
    }


def solar_events(count: int, start: str = "2020-06-01T00:00:00", every_hours: float = 9.0,
                 seed: int = 0) -> list[SolarEvent]:
    """``count`` coronal jets, one every ``every_hours`` from ``start``, near the limb."""
    first = dt.datetime.fromisoformat(start)
    events = []
    for index in range(count):
        begin = first + dt.timedelta(hours=every_hours * index)
        angle = math.radians((seed * 37 + index * 53) % 360)
        radius = 700.0 + (index * 29 % 200)
        events.append(SolarEvent(
            f"{seed}_{index:05d}", begin.strftime(_TIME),
            (begin + dt.timedelta(minutes=10 + index % 20)).strftime(_TIME),
            round(radius * math.cos(angle), 1), round(radius * math.sin(angle), 1),
            channel=(304, 171)[index % 2]))
    return events


def _like(pattern: str, text: str) -> bool:
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("%")), text, re.S) is not None


def _compare(value: Any, operator: str, wanted: str) -> bool:
    if value is None:
        return False
    if operator == "like":
        return _like(wanted, str(value))
    try:
        left, right = float(value), float(wanted)
    except ValueError:
        left, right = str(value), wanted  # type: ignore[assignment]
    return {"=": left == right, "!=": left != right, "<": left < right, "<=": left <= right,
            ">": left > right, ">=": left >= right}[operator]


class HekService(Service):
    """The HEK search service over a list of :class:`SolarEvent`."""

    name = "hek"

    def __init__(self, events: list[SolarEvent], page_size: int = 100) -> None:
        self.records = [hek_record(event) for event in events]
        self.page_size = page_size
        self.routes = [Route(("GET",), "/hek/her", self.search)]

    def _error(self, message: str) -> Reply:
        # HEK's own errors come as a short HTML page with status 200.
        return Reply.text(f"<html><body><h1>HER error</h1><p>{message}</p></body></html>",
                          content_type="text/html")

    def search(self, request: Request) -> Reply:
        if request.arg("cmd") != "search":
            return self._error(f"unknown cmd {request.arg('cmd')!r}")
        try:
            start = dt.datetime.strptime(request.arg("event_starttime", ""), _TIME)
            end = dt.datetime.strptime(request.arg("event_endtime", ""), _TIME)
            box = [float(request.arg(name, default)) for name, default in
                   (("x1", "-1200"), ("x2", "1200"), ("y1", "-1200"), ("y2", "1200"))]
            page = int(request.arg("page", "1"))
        except ValueError as error:
            return self._error(f"bad parameter: {error}")
        types = {t.strip().upper() for t in request.arg("event_type", "**").split(",")}
        filters = []
        number = 0
        while request.arg(f"param{number}") is not None:
            filters.append((request.arg(f"param{number}"), request.arg(f"op{number}", "="),
                            request.arg(f"value{number}", "")))
            number += 1
        matches = []
        for record in self.records:
            lower = {key.lower(): value for key, value in record.items()}  # HEK ignores case
            if "**" not in types and record["event_type"] not in types:
                continue
            began = dt.datetime.strptime(record["event_starttime"], _TIME)
            ended = dt.datetime.strptime(record["event_endtime"], _TIME)
            if ended < start or began > end:
                continue
            if not (box[0] <= record["hpc_x"] <= box[1] and box[2] <= record["hpc_y"] <= box[3]):
                continue
            if all(_compare(lower.get(name.lower()), operator, value)
                   for name, operator, value in filters):
                matches.append(record)
        first = (page - 1) * self.page_size
        result = matches[first:first + self.page_size]
        # Served as a "file", so that cut bodies and HTML maintenance pages hit these answers too.
        return Reply.file(json.dumps({"result": result,
                                      "overmax": first + self.page_size < len(matches)}).encode(),
                          content_type="application/json")
