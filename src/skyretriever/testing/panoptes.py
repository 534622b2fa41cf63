"""The simulated Panoptes API (Zooniverse), speaking what panoptes-client speaks.

:class:`PanoptesService` answers the requests of the real ``panoptes_client``
package, unchanged, pointed at the simulator with ``Panoptes(endpoint=...)``:

- login: ``GET /users/sign_in`` gives the CSRF token in ``x-csrf-token``;
  ``POST /users/sign_in`` (JSON ``{"authenticity_token", "user": {"login",
  "password"}}``) checks the user and sets the session cookie (a wrong
  password gets 401 ``{"error": ...}``); ``POST /oauth/token`` (a form,
  ``grant_type=password``) turns that session into a bearer token;
- the JSON API under ``/api`` (``Accept: application/vnd.api+json;
  version=1``; writes need ``Authorization: Bearer <token>``): ``projects``,
  ``subject_sets`` and ``subjects`` by id or filtered by query (``project_id``,
  ``display_name``, ``subject_set_id``), paginated with ``page`` /
  ``page_size`` and ``meta.<type>.next_href``; creating a subject set or a
  subject (``POST`` with ``{"subjects": {"locations": ["image/png"...],
  "metadata": ..., "links": {"project": id}}}``), answered with the upload URL
  of each location (``{"image/png": "<server>/media/...?sig"}``); linking
  subjects to a set (``POST /api/subject_sets/<id>/links/subjects``; a
  subject already in the set is refused, as Panoptes' unique index does) and
  the links themselves (``GET /api/set_member_subjects``, which the client asks
  before linking);
- media: ``PUT /media/...`` with ``x-ms-blob-type: BlockBlob`` and the
  location's content type (Azure blob storage's upload) stores the bytes;
  ``GET`` gives them back.

The fault knobs of :class:`~skyretriever.testing.server.Faults` apply.
``subjects``, ``subject_sets`` and ``media`` are there for tests to inspect.

Examples
--------
>>> from skyretriever.testing.server import ArchiveServer
>>> service = PanoptesService(users={"volunteer": "secret"})
>>> project = service.add_project("Solar Jet Hunter")
>>> with ArchiveServer([service]) as server:
...     from panoptes_client import Panoptes, Project
...     with Panoptes(endpoint=server.url, username="volunteer", password="secret"):
...         Project.find(project).display_name
'Solar Jet Hunter'
"""

from __future__ import annotations

import json
import secrets
import threading
from typing import Any
from urllib.parse import parse_qs, urlencode

from skyretriever.testing.server import Reply, Request, Route, Service

__all__ = ["PanoptesService"]

_API_ACCEPT = "application/vnd.api+json"
_SLUGS = ("projects", "subject_sets", "subjects")


def _errors(message: str, status: int) -> Reply:
    return Reply.json({"errors": [{"message": message}]}, status=status)


class PanoptesService(Service):
    """Panoptes: users, projects, subject sets, subjects and their media (see the module)."""

    name = "panoptes"

    def __init__(self, users: dict[str, str] | None = None, page_size: int = 20) -> None:
        self.users = dict(users or {})
        self.page_size = page_size
        self.lock = threading.Lock()
        self.tables: dict[str, dict[str, dict[str, Any]]] = {slug: {} for slug in _SLUGS}
        #: Uploaded media by path (``/media/...``).
        self.media: dict[str, bytes] = {}
        self._next_id = 1
        self._csrf: set[str] = set()
        self._sessions: dict[str, str] = {}
        self._tokens: dict[str, str] = {}
        self.routes = [
            Route(("GET", "POST"), "/users/sign_in", self.sign_in),
            Route(("POST",), "/oauth/token", self.token),
            Route(("GET", "POST", "PUT", "DELETE"), "/api/", self.api, prefix=True),
            Route(("GET", "PUT"), "/media/", self.media_file, prefix=True),
        ]

    # -- what tests look at ---------------------------------------------------------------
    @property
    def subjects(self) -> dict[str, dict[str, Any]]:
        return self.tables["subjects"]

    @property
    def subject_sets(self) -> dict[str, dict[str, Any]]:
        return self.tables["subject_sets"]

    def add_project(self, display_name: str) -> str:
        """A project; returns its id."""
        with self.lock:
            return self._insert("projects", {"display_name": display_name, "links": {}})

    def _insert(self, slug: str, values: dict[str, Any]) -> str:
        ident = str(self._next_id)
        self._next_id += 1
        self.tables[slug][ident] = {"id": ident, **values}
        return ident

    # -- login ----------------------------------------------------------------------------
    def sign_in(self, request: Request) -> Reply:
        if request.method == "GET":
            token = secrets.token_hex(8)
            with self.lock:
                self._csrf.add(token)
            return Reply(body=b"{}", headers={"x-csrf-token": token})
        try:
            body = json.loads(request.body)
            user = body["user"]
            login, password = str(user["login"]), str(user["password"])
        except (ValueError, KeyError, TypeError):
            return Reply.json({"error": "Bad request"}, status=400)
        with self.lock:
            if body.get("authenticity_token") not in self._csrf:
                return Reply.json({"error": "Invalid authenticity token"}, status=422)
            if self.users.get(login) != password:
                return Reply.json({"error": "Invalid email or password."}, status=401)
            session = secrets.token_hex(12)
            self._sessions[session] = login
        return Reply(body=json.dumps({"users": [{"id": str(100 + sorted(self.users).index(
            login)), "login": login}]}).encode(),
            headers={"Set-Cookie": f"_panoptes_session={session}; path=/; HttpOnly"})

    def token(self, request: Request) -> Reply:
        form = {k: v[0] for k, v in request.form().items()}
        cookies = dict(part.strip().split("=", 1) for part in
                       request.headers.get("cookie", "").split(";") if "=" in part)
        with self.lock:
            login = self._sessions.get(cookies.get("_panoptes_session", ""))
            if form.get("grant_type") == "refresh_token":
                login = self._tokens.get("refresh:" + form.get("refresh_token", ""))
            if form.get("grant_type") not in ("password", "refresh_token") or login is None:
                return Reply.json({"errors": ["not signed in"]}, status=401)
            access, refresh = secrets.token_hex(16), secrets.token_hex(16)
            self._tokens[access] = login
            self._tokens["refresh:" + refresh] = login
        return Reply.json({"access_token": access, "token_type": "Bearer", "expires_in": 7200,
                           "refresh_token": refresh, "scope": "public user project"})

    # -- the JSON API ---------------------------------------------------------------------
    def api(self, request: Request) -> Reply:
        if _API_ACCEPT not in request.headers.get("accept", ""):
            return _errors("Not Found (Accept must be application/vnd.api+json; version=1)",
                           404)
        authorization = request.headers.get("authorization", "")
        with self.lock:
            user = self._tokens.get(authorization.removeprefix("Bearer ").strip())
        if request.method != "GET" and user is None:
            return _errors("You must be logged in to access this resource.", 401)
        parts = request.path.removeprefix("/api/").strip("/").split("/")
        slug = parts[0]
        if slug == "set_member_subjects" and request.method == "GET":
            with self.lock:
                return self._members({k: v[0] for k, v in request.query.items()})
        if slug not in _SLUGS:
            return _errors(f"Not found: {slug}", 404)
        try:
            body = json.loads(request.body) if request.body else {}
        except ValueError:
            return _errors("the body is not JSON", 400)
        with self.lock:
            if request.method == "GET":
                query = {k: v[0] for k, v in request.query.items()}
                if len(parts) > 1:
                    query["id"] = parts[1]
                return self._list(slug, query)
            if request.method == "POST" and len(parts) == 1:
                return self._create(slug, body.get(slug), request)
            if (request.method == "POST" and slug == "subject_sets" and len(parts) == 4
                    and parts[2:] == ["links", "subjects"]):
                return self._link(parts[1], body.get("subjects"))
        return _errors(f"{request.method} {request.path} is not simulated", 405)

    def _public(self, slug: str, row: dict[str, Any]) -> dict[str, Any]:
        if slug == "subject_sets":
            return {**{k: v for k, v in row.items() if k != "subject_ids"},
                    "set_member_subjects_count": len(row["subject_ids"])}
        if slug == "subjects":
            return {**{k: v for k, v in row.items() if k != "upload_urls"},
                    "locations": [{kind: url.split("?")[0]} for kind, url in
                                  row["upload_urls"]]}
        return row

    def _list(self, slug: str, query: dict[str, str]) -> Reply:
        rows = list(self.tables[slug].values())
        if "id" in query:
            rows = [row for row in rows if row["id"] in query["id"].split(",")]
            if not rows:
                return _errors(f"Could not find {slug} with id='{query['id']}'", 404)
        if "project_id" in query:
            rows = [row for row in rows if row["links"].get("project") == query["project_id"]]
        if "display_name" in query:
            rows = [row for row in rows if row.get("display_name") == query["display_name"]]
        if "subject_set_id" in query:
            members = self.subject_sets.get(query["subject_set_id"], {}).get("subject_ids", [])
            rows = [self.subjects[ident] for ident in members]
        page = max(1, int(query.get("page", 1)))
        size = max(1, int(query.get("page_size", self.page_size)))
        count = len(rows)
        pages = max(1, -(-count // size))
        shown = rows[(page - 1) * size:page * size]
        following = {k: v for k, v in query.items() if k != "id"}
        next_href = (f"/{slug}?{urlencode({**following, 'page': page + 1})}"
                     if page < pages else None)
        meta = {"page": page, "page_size": size, "count": count, "page_count": pages,
                "next_page": page + 1 if next_href else None, "next_href": next_href}
        reply = Reply.json({slug: [self._public(slug, row) for row in shown], "links": {},
                            "meta": {slug: meta}})
        reply.headers["ETag"] = f'W/"{secrets.token_hex(6)}"'
        return reply

    def _members(self, query: dict[str, str]) -> Reply:
        """The links of subjects to sets (``subject_set_id``, ``subject_id`` filter them)."""
        rows = [{"id": f"{set_id}.{subject}", "links": {"subject": subject,
                                                       "subject_set": set_id}}
                for set_id, subject_set in self.subject_sets.items()
                for subject in subject_set["subject_ids"]
                if query.get("subject_set_id", set_id) == set_id
                and query.get("subject_id", subject) == subject]
        return Reply.json({"set_member_subjects": rows, "links": {}, "meta": {
            "set_member_subjects": {"page": 1, "page_count": 1, "count": len(rows),
                                    "next_href": None}}})

    def _create(self, slug: str, values: Any, request: Request) -> Reply:
        if not isinstance(values, dict):
            return _errors(f"expected {{{slug!r}: {{...}}}}", 422)
        project = str((values.get("links") or {}).get("project") or "")
        if project not in self.tables["projects"]:
            return _errors(f"project {project!r} does not exist", 422)
        if slug == "subject_sets":
            name = values.get("display_name")
            if not name:
                return _errors("display_name can't be blank", 422)
            ident = self._insert(slug, {"display_name": name, "metadata": values.get(
                "metadata") or {}, "links": {"project": project}, "subject_ids": []})
        elif slug == "subjects":
            kinds = values.get("locations") or []
            if not kinds or not all(isinstance(k, str) and "/" in k for k in kinds):
                return _errors("locations must be a list of MIME types", 422)
            host = request.headers.get("host", "127.0.0.1")
            ident = str(self._next_id)
            urls = [(kind, f"http://{host}/media/subject_location/{ident}-{number}."
                           f"{kind.split('/')[1]}?sv=2020&sig={secrets.token_hex(6)}")
                    for number, kind in enumerate(kinds)]
            self._insert(slug, {"metadata": values.get("metadata") or {}, "upload_urls": urls,
                                "links": {"project": project}})
        else:
            return _errors(f"creating {slug} is not simulated", 405)
        reply = Reply.json({slug: [self._created(slug, ident)]}, status=201)
        reply.headers["ETag"] = f'W/"{secrets.token_hex(6)}"'
        return reply

    def _created(self, slug: str, ident: str) -> dict[str, Any]:
        row = self.tables[slug][ident]
        if slug == "subjects":  # the creating answer gives the signed upload URLs
            return {**self._public(slug, row),
                    "locations": [{kind: url} for kind, url in row["upload_urls"]]}
        return self._public(slug, row)

    def _link(self, set_id: str, subject_ids: Any) -> Reply:
        subject_set = self.subject_sets.get(set_id)
        if subject_set is None:
            return _errors(f"Could not find subject_sets with id='{set_id}'", 404)
        if not isinstance(subject_ids, list) or not all(str(s) in self.subjects
                                                        for s in subject_ids):
            return _errors("subjects: a list of existing subject ids", 422)
        added = [str(s) for s in subject_ids]
        taken = sorted(set(added) & set(subject_set["subject_ids"])) or sorted(
            {s for s in added if added.count(s) > 1})
        if taken:
            return _errors(f"Validation failed: subject {taken[0]} has already been taken "
                           "in this set", 422)
        subject_set["subject_ids"] += added
        return Reply.json({"subject_sets": [self._public("subject_sets", subject_set)]})

    # -- media ----------------------------------------------------------------------------
    def media_file(self, request: Request) -> Reply:
        with self.lock:
            if request.method == "GET":
                content = self.media.get(request.path)
                return Reply.file(content) if content is not None else Reply.text(
                    "BlobNotFound", status=404)
            known = {url.split("?")[0].split("/", 3)[3]: (kind, url) for row in
                     self.subjects.values() for kind, url in row["upload_urls"]}
            kind, url = known.get(request.path.lstrip("/"), (None, None))
            signature = parse_qs(url.split("?", 1)[1]).get("sig") if url else None
            if kind is None or request.query.get("sig") != signature:
                return Reply.text("AuthenticationFailed", status=403)
            if request.headers.get("x-ms-blob-type") != "BlockBlob" or \
                    request.headers.get("content-type") != kind:
                return Reply.text("InvalidHeaderValue", status=400)
            self.media[request.path] = request.body
        return Reply(status=201, body=b"")
