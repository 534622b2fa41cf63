"""The simulated MAST portal: the services, column configs, downloads and path look-ups.

:class:`MastService` answers what ``astroquery.mast`` and skyretriever send:

- ``POST /api/v0/invoke`` (form field ``request``, a JSON service request) for
  ``Mast.Caom.Filtered``, ``Mast.Caom.Filtered.Position``, ``Mast.Caom.Cone``,
  ``Mast.Caom.Products``, ``Mast.Catalogs.Tic.Cone`` (any case),
  ``Mast.Catalogs.Filtered.Tic[.Position].Rows`` and ``Mast.Catalogs.All.Tic``,
  with paging and ``EXECUTING`` answers (the ``executing_rate`` fault);
- ``POST /portal/Mashup/Mashup.asmx/columnsconfig`` (form ``colConfigId``);
- ``GET``/``HEAD /api/v0.1/Download/file?uri=...`` with ``Content-Length``,
  ``Accept-Ranges`` and ``Range``;
- ``GET /api/v0.1/path_lookup/?uri=U1&uri=U2``;
- ``GET /Santa-war/query?name=...`` (the name resolver, served here too).

Null values follow MAST: -999 for integers, ``null`` for floats, ``""`` for strings.

For tests of broken or hostile archives, what the portal answers can be
changed: ``row_hooks[service](rows)`` rewrites the rows of a service (lower-case
name, e.g. ``"mast.caom.products"``), ``served_files[data_uri]`` is sent in place
of a file, and ``cloud_paths[data_uri]`` is the path ``path_lookup`` answers.

Examples
--------
>>> from skyretriever.testing import SimulatedSky, SimulatedStar
>>> sky = SimulatedSky([SimulatedStar("a", 10.0, 5.0, tic_id=7, tess_sectors=(1,))])
>>> service = MastService(sky)
>>> [route.path for route in service.routes][:2]
['/api/v0/invoke', '/portal/Mashup/Mashup.asmx/columnsconfig']
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from skyretriever.healpix import angular_distance
from skyretriever.testing.server import Reply, Request, Route, Service
from skyretriever.testing.sky import SimulatedSky

__all__ = ["MastService", "OBSERVATION_FIELDS", "PRODUCT_FIELDS", "TIC_FIELDS"]

#: Column types of CAOM observation rows, as MAST declares them in ``fields``.
OBSERVATION_FIELDS = {
    "intentType": "string", "obs_collection": "string", "provenance_name": "string",
    "instrument_name": "string", "project": "string", "filters": "string",
    "wavelength_region": "string", "target_name": "string", "target_classification": "string",
    "obs_id": "string", "s_ra": "float", "s_dec": "float", "dataproduct_type": "string",
    "proposal_pi": "string", "calib_level": "int", "t_min": "float", "t_max": "float",
    "t_exptime": "float", "em_min": "float", "em_max": "float", "obs_title": "string",
    "t_obs_release": "float", "proposal_id": "string", "proposal_type": "string",
    "sequence_number": "int", "s_region": "string", "jpegURL": "string", "dataURL": "string",
    "dataRights": "string", "mtFlag": "boolean", "srcDen": "float", "obsid": "string",
    "objID": "string",
}
PRODUCT_FIELDS = {
    "obsID": "string", "obs_collection": "string", "dataproduct_type": "string",
    "obs_id": "string", "description": "string", "type": "string", "dataURI": "string",
    "productType": "string", "productGroupDescription": "string",
    "productSubGroupDescription": "string", "productDocumentationURL": "string",
    "project": "string", "prvversion": "string", "proposal_id": "string",
    "productFilename": "string", "size": "int", "parent_obsid": "string",
    "dataRights": "string", "calib_level": "int",
}
TIC_FIELDS = {
    "ID": "string", "ra": "float", "dec": "float", "pmRA": "float", "pmDEC": "float",
    "plx": "float", "Tmag": "float", "Teff": "float", "logg": "float", "rad": "float",
    "mass": "float", "GAIA": "string", "KIC": "string", "objType": "string",
}
_VOT_TYPES = {"string": "char", "float": "double", "int": "int", "boolean": "boolean"}
_DEFAULT_PAGE_SIZE = 50000


class MastError(ValueError):
    """A request the real portal would answer with ``status: ERROR``."""


def _json_safe(value: Any, kind: str) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if kind == "float" and (value is None or (isinstance(value, float) and math.isnan(value))):
        return None
    return value


def _column(row: dict[str, Any], name: str) -> tuple[bool, Any]:
    if name in row:
        return True, row[name]
    lowered = name.lower()
    for key, value in row.items():
        if key.lower() == lowered:
            return True, value
    return False, None


def _filter_matches(row: dict[str, Any], entry: dict[str, Any]) -> bool:
    name = entry.get("paramName")
    found, value = _column(row, str(name))
    if not found:
        raise MastError(f"Unknown column '{name}' in filters")
    values = entry.get("values") or []
    free_text = entry.get("freeText")
    if values and isinstance(values[0], dict):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return any(float(r.get("min", -math.inf)) <= float(value) <= float(r.get("max", math.inf))
                   for r in values)
    text = "" if value is None else str(value).lower()
    if any(text == str(v).lower() for v in values):
        return True
    if free_text:
        return fnmatch.fnmatch(text, str(free_text).lower().replace("%", "*"))
    return False


def _parse_position(text: str) -> tuple[float, float, float]:
    try:
        ra, dec, radius = (float(part) for part in str(text).split(","))
    except ValueError:
        raise MastError(f"cannot parse position {text!r}; expected 'ra, dec, radius'") from None
    return ra, dec, radius


class MastService(Service):
    """The MAST portal API over a :class:`~skyretriever.testing.sky.SimulatedSky`."""

    name = "mast"

    def __init__(self, sky: SimulatedSky) -> None:
        self.sky = sky
        #: Changes to answers, for tests of broken or hostile archives (see the module doc).
        self.row_hooks: dict[str, Callable[[list[dict]], list[dict]]] = {}
        self.served_files: dict[str, bytes] = {}
        self.cloud_paths: dict[str, str] = {}
        self.routes = [
            Route(("POST",), "/api/v0/invoke", self.invoke),
            Route(("POST",), "/portal/Mashup/Mashup.asmx/columnsconfig", self.columns_config),
            Route(("GET",), "/api/v0.1/Download/file", self.download),
            Route(("GET",), "/api/v0.1/path_lookup", self.path_lookup, prefix=True),
            Route(("GET",), "/Santa-war/query", self.resolve),
        ]
        self._services: dict[str, Callable[[dict[str, Any]], tuple[list[dict], dict]]] = {
            "mast.caom.filtered": self._caom_filtered,
            "mast.caom.filtered.position": self._caom_filtered,
            "mast.caom.cone": self._caom_cone,
            "mast.caom.products": self._caom_products,
            "mast.catalogs.tic.cone": self._tic_cone,
            "mast.catalogs.filtered.tic.rows": self._tic_filtered,
            "mast.catalogs.filtered.tic": self._tic_filtered,
            "mast.catalogs.filtered.tic.position.rows": self._tic_filtered,
            "mast.catalogs.filtered.tic.position": self._tic_filtered,
        }

    # -- requests ------------------------------------------------------------------------------
    @staticmethod
    def _service_request(request: Request) -> dict[str, Any]:
        text = (request.form().get("request") or [""])[0]
        try:
            value = json.loads(text)
        except ValueError:
            raise MastError(f"the request field is not JSON: {text[:100]!r}") from None
        if not isinstance(value, dict) or "service" not in value:
            raise MastError("the request has no 'service'")
        return value

    def request_key(self, request: Request) -> str:
        if request.path == "/api/v0/invoke":
            try:
                value = self._service_request(request)
            except MastError:
                return super().request_key(request)
            value.pop("cacheBreaker", None)  # each try of a query sends a new one
            return "invoke " + json.dumps(value, sort_keys=True)
        return super().request_key(request)

    def invoke(self, request: Request) -> Reply:
        try:
            service_request = self._service_request(request)
            service = str(service_request["service"])
            params = service_request.get("params") or {}
            if service.lower() == "mast.catalogs.all.tic":
                return Reply.json({"status": "COMPLETE", "data": {"Tables": [{
                    "ExtendedProperties": {"discreteHistogram": {}, "continuousHistogram": {}}
                }]}})
            handler = self._services.get(service.lower())
            if handler is None:
                raise MastError(f"Unknown service: {service}")
            if request.fault("executing"):
                reply = Reply.json({"status": "EXECUTING", "msg": "", "data": [], "fields": []})
                reply.fault = "executing"
                return reply
            rows, field_types = handler(params)
            hook = self.row_hooks.get(service.lower())
            if hook is not None:
                rows = hook([dict(row) for row in rows])
        except MastError as error:
            return Reply.json({"status": "ERROR", "msg": str(error), "data": [], "fields": []})
        columns = params.get("columns", "*")
        if columns and columns != "*":
            wanted = [c.strip() for c in str(columns).split(",")]
            field_types = {name: kind for name, kind in field_types.items() if name in wanted}
        page_size = int(service_request.get("pagesize") or _DEFAULT_PAGE_SIZE)
        page = int(service_request.get("page") or 1)
        pages = max(1, math.ceil(len(rows) / page_size))
        chosen = rows[(page - 1) * page_size : page * page_size]
        data = [{name: _json_safe(row.get(name), kind) for name, kind in field_types.items()}
                for row in chosen]
        return Reply.json({
            "status": "COMPLETE", "msg": "", "data": data,
            "fields": [{"name": name, "type": kind} for name, kind in field_types.items()],
            "paging": {"page": page, "pageSize": page_size, "pagesFiltered": pages,
                       "rows": len(chosen), "rowsFiltered": len(rows), "rowsTotal": len(rows)},
        })

    # -- services --------------------------------------------------------------------------------
    def _caom_filtered(self, params: dict[str, Any]) -> tuple[list[dict], dict]:
        filters = params.get("filters") or []
        if not filters:
            raise MastError("Mast.Caom.Filtered needs at least one filter")
        rows = [row for row in self.sky.observations
                if all(_filter_matches(row, entry) for entry in filters)]
        field_types = dict(OBSERVATION_FIELDS)
        if params.get("position"):
            ra, dec, radius = _parse_position(params["position"])
            rows = self._within(rows, ra, dec, radius, "s_ra", "s_dec", "distance")
            field_types["distance"] = "float"
        return rows, field_types

    def _caom_cone(self, params: dict[str, Any]) -> tuple[list[dict], dict]:
        ra, dec, radius = (float(params[k]) for k in ("ra", "dec", "radius"))
        rows = self._within(self.sky.observations, ra, dec, radius, "s_ra", "s_dec", "distance")
        return rows, {**OBSERVATION_FIELDS, "distance": "float"}

    def _caom_products(self, params: dict[str, Any]) -> tuple[list[dict], dict]:
        obsids = [part.strip() for part in str(params.get("obsid", "")).split(",") if part.strip()]
        if not obsids:
            raise MastError("Mast.Caom.Products needs obsid")
        rows = [row for obsid in obsids for row in self.sky.products(obsid)]
        return rows, PRODUCT_FIELDS

    def _tic_cone(self, params: dict[str, Any]) -> tuple[list[dict], dict]:
        ra, dec, radius = (float(params[k]) for k in ("ra", "dec", "radius"))
        rows = self._within(self.sky.tic, ra, dec, radius, "ra", "dec", "dstArcSec")
        return rows, {**TIC_FIELDS, "dstArcSec": "float"}

    def _tic_filtered(self, params: dict[str, Any]) -> tuple[list[dict], dict]:
        filters = params.get("filters") or []
        rows = [row for row in self.sky.tic if all(_filter_matches(row, e) for e in filters)]
        field_types = dict(TIC_FIELDS)
        if params.get("position"):
            ra, dec, radius = _parse_position(params["position"])
            rows = self._within(rows, ra, dec, radius, "ra", "dec", "dstArcSec")
            field_types["dstArcSec"] = "float"
        elif not filters:
            raise MastError("Mast.Catalogs.Filtered.Tic needs filters or a position")
        return rows, field_types

    @staticmethod
    def _within(rows: list[dict], ra: float, dec: float, radius_deg: float, ra_key: str,
                dec_key: str, distance_key: str) -> list[dict]:
        if not rows:
            return []
        distances = angular_distance(ra, dec, np.array([r[ra_key] for r in rows]),
                                     np.array([r[dec_key] for r in rows])) * 3600.0
        found = [dict(row, **{distance_key: float(d)}) for row, d in zip(rows, distances)
                 if d <= radius_deg * 3600.0]
        return sorted(found, key=lambda row: row[distance_key])

    # -- the other endpoints -------------------------------------------------------------------
    def columns_config(self, request: Request) -> Reply:
        name = ((request.form().get("colConfigId") or [""])[0]).lower()
        if name in ("mast.caom.cone", "mast.caom.filtered", "mast.caom.filtered.position"):
            types = {**OBSERVATION_FIELDS, "distance": "float"}
        elif name == "mast.caom.products":
            types = PRODUCT_FIELDS
        elif name in ("mast.catalogs.tess.cone", "mast.catalogs.tic.cone"):
            types = {**TIC_FIELDS, "dstArcSec": "float"}
        else:
            return Reply.json({})
        return Reply.json({
            column: {"text": column, "type": kind, "vot.datatype": _VOT_TYPES[kind],
                     "vot.description": column, "visible": True}
            for column, kind in types.items()
        })

    def download(self, request: Request) -> Reply:
        uri = request.arg("uri")
        if not uri:
            return Reply.text("missing uri parameter\n", status=400)
        content = self.served_files.get(uri) or self.sky.file_bytes(uri)
        if content is None:
            return Reply.text(f"file not found: {uri}\n", status=404)
        filename = uri.rsplit("/", 1)[-1]
        return Reply.file(content, headers={
            "Content-Disposition": f"attachment; filename={filename}"})

    def path_lookup(self, request: Request) -> Reply:
        answer = {}
        for uri in request.query.get("uri", []):
            product = self.sky.files.get(uri)
            if uri in self.cloud_paths:
                answer[uri] = {"status_code": 200, "path": self.cloud_paths[uri]}
            elif product is not None and product.cloud_key is not None:
                path = product.cloud_key
                if path.startswith("mast/hlsp/"):
                    path = "/hlsp_local/public/" + path[len("mast/"):]
                else:
                    path = "/" + path
                answer[uri] = {"status_code": 200, "path": path}
            else:
                answer[uri] = {"status_code": 404, "path": None}
        return Reply.json(answer)

    def resolve(self, request: Request) -> Reply:
        name = request.arg("name") or ""
        star = self.sky.resolve(name)
        if star is None:
            return Reply.json({"resolvedCoordinate": []})
        return Reply.json({"resolvedCoordinate": [{
            "searchString": name.lower(), "resolver": "TIC", "cached": False,
            "canonicalName": f"TIC {star.tic_id}" if star.tic_id else star.name,
            "ra": star.ra, "decl": star.dec, "objectType": "Star",
        }]})
