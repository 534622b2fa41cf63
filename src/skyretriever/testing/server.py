"""A local threaded HTTP server with fault knobs, on which simulated archives are mounted.

An :class:`ArchiveServer` listens on the loopback interface (HTTP/1.1 with
keep-alive, one thread per connection) and routes each request to a
:class:`Service`: a set of routes (method, path or path prefix, handler). A
handler gets a :class:`Request` and returns a :class:`Reply`. The server adds
what real archives do on a bad day, from its :class:`Faults`:

- ``latency``: seconds added to every request;
- ``unavailable_rate`` / ``throttle_rate``: HTTP 503 / 429 with ``Retry-After``;
- ``reset_rate``: the connection is reset without an answer;
- ``timeout_rate``: the request stalls for ``stall`` seconds (set it longer than the
  client's timeout): a file stops half-way, other answers before their first byte.
  The stall ends early when the client gives up and closes the connection, so no
  server thread waits longer than ``stall``; a patient client gets the answer late;
- ``truncate_rate``: a file's body stops half-way under a full ``Content-Length``;
- ``html_rate``: an HTML error page answered with status 200 in place of a file;
- ``executing_rate``: services that have a "still working" answer give it
  (MAST answers ``{"status": "EXECUTING"}``).

At most one fault hits a request: a reset first, then a timeout, then 503
or 429, then (on files) an HTML page or a cut body.

Whether a fault hits is decided from a hash of the seed, the request (without
cache breakers) and how many times that request was seen before, so the same
run meets the same faults whatever the order of its threads, and a retried
request gets a fresh draw. ``paths`` limits the faults to some path prefixes;
``faults_per_request`` lets only the first tries of each request fail (so
``Faults(unavailable_rate=1, faults_per_request=2)`` answers every request
with 503 twice, then normally).

The statistics count, for every server (one host), the requests in flight: a
request is in flight from when it has been read until the last byte of its
answer (or its reset) is handed to the network, or until its client closes the
connection, whichever is first; ``max_in_flight`` is the most at one moment,
what a client's per-host connection limit bounds.

Every server also answers ``GET /_sim/stats`` (counts; ``?log=1`` adds the requests),
``POST /_sim/stats/reset`` and ``POST /_sim/faults`` (a JSON object of fault
knobs), without latency or faults, so a server in another process can be
inspected and steered. Resetting the statistics does not restart the fault
draws: a request asked again later gets a fresh draw, as on a real bad day.

Adding an archive (e.g. IRSA for ZTF, or a TAP service) means writing a
:class:`Service` subclass and mounting it::

    class IrsaService(Service):
        name = "irsa"

        def __init__(self, sky):
            self.sky = sky
            self.routes = [Route(("GET",), "/cgi-bin/ZTF/nph_light_curves", self.light_curves)]

        def light_curves(self, request):
            return Reply.text(make_csv(request.query), content_type="text/csv")

    with ArchiveServer([IrsaService(sky)], faults=Faults(latency=0.1)) as server:
        print(server.url)

Examples
--------
>>> class Hello(Service):
...     name = "hello"
...     def __init__(self):
...         self.routes = [Route(("GET",), "/hello", lambda request: Reply.json({"hi": 1}))]
>>> with ArchiveServer([Hello()]) as server:
...     import urllib.request
...     urllib.request.urlopen(server.url + "/hello").read()
b'{"hi": 1}'
"""

from __future__ import annotations

import email.utils
import hashlib
import http.server
import json
import select
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FAILURE_FAULTS", "ArchiveServer", "Faults", "Reply", "Request", "RequestRecord",
           "RetryAudit", "Route", "Service", "audit_retries"]

FAULT_KINDS = ("unavailable", "throttle", "reset", "timeout", "truncate", "html", "executing")
#: The longest stall a timeout fault may ask for (seconds): server threads always end.
MAX_STALL = 60.0
ADMIN_PREFIX = "/_sim/"
_LAST_MODIFIED = email.utils.formatdate(1_546_300_800, usegmt=True)
_HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>503 Service Temporarily Unavailable</title></head>\n"
    b"<body><h1>Service Temporarily Unavailable</h1><p>The server is temporarily unable to "
    b"service your request due to maintenance downtime or capacity problems. Please try again "
    b"later.</p></body></html>\n"
)


@dataclass(frozen=True)
class Faults:
    """What goes wrong on a simulated archive, and how often (rates from 0 to 1).

    Examples
    --------
    >>> Faults(unavailable_rate=0.3, retry_after=0).unavailable_rate
    0.3
    >>> Faults.from_dict({"latency": 0.15}).latency
    0.15
    >>> Faults(timeout_rate=0.1, stall=2.0).stall
    2.0
    """

    latency: float = 0.0
    unavailable_rate: float = 0.0
    throttle_rate: float = 0.0
    retry_after: int | None = 1
    reset_rate: float = 0.0
    timeout_rate: float = 0.0
    #: Seconds a request hit by the timeout fault stalls (at most ``MAX_STALL``).
    stall: float = 2.0
    truncate_rate: float = 0.0
    html_rate: float = 0.0
    executing_rate: float = 0.0
    seed: int = 0
    paths: tuple[str, ...] = ()
    faults_per_request: int | None = None

    def __post_init__(self) -> None:
        for kind in FAULT_KINDS:
            rate = getattr(self, f"{kind}_rate")
            if not 0 <= rate <= 1:
                raise ValueError(f"Faults.{kind}_rate must be between 0 and 1, not {rate!r}")
        if self.latency < 0:
            raise ValueError("Faults.latency must be >= 0")
        if not 0 < self.stall <= MAX_STALL:
            raise ValueError(f"Faults.stall must be between 0 (excluded) and {MAX_STALL:g} "
                             f"seconds, not {self.stall!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Faults:
        """Faults from plain values (as sent to ``POST /_sim/faults``); unknown keys are errors."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown fault knob(s) {unknown}; known: {sorted(known)}")
        values = dict(values)
        if "paths" in values:
            values["paths"] = tuple(values["paths"] or ())
        return cls(**values)

    def applies_to(self, path: str) -> bool:
        return not self.paths or any(path.startswith(prefix) for prefix in self.paths)

    def hits(self, kind: str, key: str, occurrence: int) -> bool:
        """Whether fault ``kind`` hits the ``occurrence``-th time request ``key`` is seen."""
        rate = getattr(self, f"{kind}_rate")
        if rate <= 0 or (self.faults_per_request is not None
                         and occurrence >= self.faults_per_request):
            return False
        if rate >= 1:
            return True
        digest = hashlib.sha256(f"{self.seed}|{kind}|{key}|{occurrence}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < rate


@dataclass
class Request:
    """One request as a service sees it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    key: str = ""
    occurrence: int = 0
    faults: Faults = field(default_factory=Faults)

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default

    def form(self) -> dict[str, list[str]]:
        """The body parsed as an URL-encoded form."""
        return parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)

    def fault(self, kind: str) -> bool:
        """Whether this request meets fault ``kind`` (for service-specific faults like EXECUTING)."""
        return self.faults.applies_to(self.path) and self.faults.hits(kind, self.key,
                                                                     self.occurrence)


@dataclass
class Reply:
    """What a handler answers.

    ``is_file`` replies get ``Range`` support and the file faults; ``fault``
    names a service-specific fault the handler chose to give (for the statistics).
    """

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    is_file: bool = False
    fault: str | None = None

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Reply:
        return cls(status=status, body=json.dumps(value).encode("utf-8"))

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain") -> Reply:
        return cls(status=status, body=text.encode("utf-8"), content_type=content_type)

    @classmethod
    def file(cls, content: bytes, content_type: str = "application/octet-stream",
             headers: dict[str, str] | None = None) -> Reply:
        etag = '"' + hashlib.md5(content, usedforsecurity=False).hexdigest() + '"'
        return cls(status=200, body=content, content_type=content_type, is_file=True,
                   headers={"ETag": etag, "Last-Modified": _LAST_MODIFIED, **(headers or {})})


@dataclass(frozen=True)
class Route:
    """``methods`` on ``path`` (or every path under it when ``prefix``) go to ``handler``."""

    methods: tuple[str, ...]
    path: str
    handler: Callable[[Request], Reply]
    prefix: bool = False

    def matches(self, path: str) -> bool:
        return path.startswith(self.path) if self.prefix else path == self.path


class Service:
    """A simulated archive: a name and routes. Subclasses set ``routes`` in ``__init__``."""

    name = "service"

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def request_key(self, request: Request) -> str:
        """What makes two requests "the same" for fault draws (override to drop cache breakers)."""
        query = "&".join(f"{k}={v}" for k in sorted(request.query) for v in request.query[k])
        body = hashlib.sha256(request.body).hexdigest()[:16] if request.body else ""
        return f"{request.method} {request.path}?{query} {body}"

    def fault_reply(self, kind: str, retry_after: int | None) -> Reply:
        """The answer for an HTTP-level fault (503 or 429) in this archive's style."""
        status = 503 if kind == "unavailable" else 429
        message = "Service Unavailable" if status == 503 else "Too Many Requests"
        reply = Reply.text(f"{status} {message}\n", status=status)
        if retry_after is not None:
            reply.headers["Retry-After"] = str(retry_after)
        return reply


#: Faults that make an answer a failure (the client must ask again); ``executing`` is an answer.
FAILURE_FAULTS = frozenset({"unavailable", "throttle", "reset", "timeout", "truncate", "html"})


@dataclass(frozen=True)
class RequestRecord:
    """One handled request, for the statistics."""

    start: float
    method: str
    path: str
    query: str
    status: int | None
    fault: str | None
    service: str
    headers: dict[str, str]
    key: str = ""
    #: The ``Retry-After`` (seconds) the answer carried, if any.
    retry_after: float | None = None


def _client_gone(connection: socket.socket) -> bool:
    """Whether the client closed (or reset) the connection; never blocks."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        if not readable:
            return False
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):  # reset, or already closed
        return True


class _Flight:
    """One request in flight; :meth:`end` is idempotent."""

    __slots__ = ("connection", "stats")

    def __init__(self, stats: _Statistics, connection: socket.socket | None) -> None:
        self.stats = stats
        self.connection = connection

    def end(self) -> None:
        self.stats.end(self)


class _Statistics:
    """Counts of handled requests, the peak concurrency, and a log of the latest requests."""

    #: The log keeps this many records (the counts cover every request).
    LOG_LENGTH = 100_000

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.flights: set[_Flight] = set()
        # How often each request was seen, for the fault draws: kept by reset(), so a
        # request asked again after the statistics were reset still gets a fresh draw.
        self.occurrences: Counter = Counter()
        self.reset()

    @property
    def in_flight(self) -> int:
        return len(self.flights)

    def reset(self) -> None:
        with self.lock:
            self.records: deque[RequestRecord] = deque(maxlen=self.LOG_LENGTH)
            self.counts: dict[str, Counter] = {"path": Counter(), "status": Counter(),
                                               "fault": Counter()}
            self.total = 0
            self.max_in_flight = self.in_flight

    def _reap(self) -> None:
        # A request whose client has gone (it gave up waiting) is no longer in flight,
        # though its thread may still be stalling or writing into the closed socket.
        for flight in [f for f in self.flights if f.connection is not None
                       and _client_gone(f.connection)]:
            self.flights.discard(flight)
        self.lock.notify_all()

    def begin(self, key: str, connection: socket.socket | None = None) -> tuple[int, _Flight]:
        with self.lock:
            self._reap()
            flight = _Flight(self, connection)
            self.flights.add(flight)
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            occurrence = self.occurrences[key]
            self.occurrences[key] += 1
            return occurrence, flight

    def add(self, record: RequestRecord) -> None:
        with self.lock:
            self.records.append(record)
            self.total += 1
            self.counts["path"][record.path] += 1
            self.counts["status"][str(record.status)] += 1
            if record.fault:
                self.counts["fault"][record.fault] += 1

    def end(self, flight: _Flight) -> None:
        with self.lock:
            self.flights.discard(flight)
            self.lock.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: self.in_flight == 0, timeout)

    def summary(self, log: bool = True) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.total,
                "max_in_flight": self.max_in_flight,
                "by_path": dict(self.counts["path"]),
                "by_status": dict(self.counts["status"]),
                "faults": dict(self.counts["fault"]),
                "log": [asdict(r) for r in self.records] if log else [],
            }


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ThreadingServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are counted in the statistics; printing them would flood test output

    def setup(self) -> None:
        super().setup()
        # An answer goes out in pieces (headers, body, its last byte): with Nagle's algorithm
        # each small piece waits for the client's delayed ACK, 40 ms a request on Linux.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.archive._connections.add(self.connection)

    def do_GET(self) -> None:
        self.server.archive._handle(self)

    do_POST = do_HEAD = do_PUT = do_DELETE = do_GET

    def finish(self) -> None:
        self.server.archive._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass  # the connection was reset on purpose

    def reset_connection(self) -> None:
        """Drop the connection with a TCP reset (what a crashing front end does)."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        self.close_connection = True


class _ThreadingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    archive: ArchiveServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # resets and clients going away are part of the simulation


class ArchiveServer:
    """A threaded HTTP server on the loopback interface serving one or more :class:`Service`.

    Parameters
    ----------
    services
        The archives it serves; the first route that matches a path wins.
    faults
        The fault knobs (changeable any time through :attr:`faults`).
    host, port
        Where to listen; port 0 picks a free one.
    name
        Names the server in messages.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, services: Iterable[Service], faults: Faults | None = None,
                 host: str = "127.0.0.1", port: int = 0, name: str = "archive") -> None:
        self.services = list(services)
        self.faults = faults or Faults()
        self.name = name
        self._stats = _Statistics()
        self._address = (host, port)
        self._server: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> ArchiveServer:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _ThreadingServer(self._address, _Handler)
        self._server.archive = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={
            "poll_interval": 0.05}, name=f"{self.name}-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # stalled requests end now
        self._server.shutdown()
        self._server.server_close()
        # Kept-alive connections would hold their handler threads (and clients' pools) forever.
        for connection in list(self._connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> ArchiveServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (the server must be started)."""
        if self._server is None:
            raise RuntimeError(f"the {self.name} server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- statistics --------------------------------------------------------------------------
    @property
    def records(self) -> list[RequestRecord]:
        """Every request handled since the last :meth:`reset_stats` (admin requests excluded)."""
        with self._stats.lock:
            return list(self._stats.records)

    @property
    def max_in_flight(self) -> int:
        """The most requests this server was handling at one moment."""
        return self._stats.max_in_flight

    def count(self, path: str | None = None, method: str | None = None,
              contains: str | None = None) -> int:
        """How many requests went to paths starting with ``path`` (by ``method``, whose path,
        query or body summary contains ``contains``)."""
        total = 0
        for record in self.records:
            if path is not None and not record.path.startswith(path):
                continue
            if method is not None and record.method != method:
                continue
            if contains is not None and contains not in f"{record.path}?{record.query}":
                continue
            total += 1
        return total

    def reset_stats(self) -> None:
        self._stats.reset()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no request is being handled (e.g. after a client gave up on a slow one)."""
        return self._stats.wait_idle(timeout)

    def summary(self, log: bool = True) -> dict[str, Any]:
        """Counts by path, status and fault, the peak concurrency and (with ``log``) the
        latest requests."""
        return self._stats.summary(log)

    # -- handling ----------------------------------------------------------------------------
    def _route(self, method: str, path: str) -> tuple[Service | None, Route | None, bool]:
        path_known = False
        for service in self.services:
            for route in service.routes:
                if route.matches(path):
                    path_known = True
                    if method in route.methods or (method == "HEAD" and "GET" in route.methods):
                        return service, route, True
        return None, None, path_known

    def _handle(self, handler: _Handler) -> None:
        parts = urlsplit(handler.path)
        path = unquote(parts.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        request = Request(method=handler.command, path=path,
                          query=parse_qs(parts.query, keep_blank_values=True),
                          headers={k.lower(): v for k, v in handler.headers.items()}, body=body)
        if path.startswith(ADMIN_PREFIX):
            self._write(handler, request, *self._prepare(request, self._admin(request)))
            return
        faults = self.faults
        service, route, path_known = self._route(request.method, path)
        request.key = (service or Service()).request_key(request)
        request.faults = faults
        request.occurrence, flight = self._stats.begin(request.key, handler.connection)
        start = time.time()

        def record(status: int | None, fault: str | None,
                   answer_headers: Mapping[str, str] | None = None) -> None:
            # Recorded before the answer is written, so a client that has its answer
            # always finds its request in the statistics.
            retry_after = (answer_headers or {}).get("Retry-After")
            self._stats.add(RequestRecord(
                start=start, method=request.method, path=path, query=parts.query,
                status=status, fault=fault, service=service.name if service else "",
                headers=dict(request.headers), key=request.key,
                retry_after=float(retry_after) if retry_after is not None else None,
            ))

        try:
            if faults.latency:
                time.sleep(faults.latency)
            applies = faults.applies_to(path)
            if applies and faults.hits("reset", request.key, request.occurrence):
                record(None, "reset")
                flight.end()
                handler.reset_connection()
                return
            stall = applies and faults.hits("timeout", request.key, request.occurrence)
            fault = "timeout" if stall else None
            for kind in ("unavailable", "throttle"):
                if applies and not stall and faults.hits(kind, request.key, request.occurrence):
                    fault = kind
                    reply = (service or Service()).fault_reply(kind, faults.retry_after)
                    break
            else:
                if route is None:
                    reply = Reply.text(f"no route for {request.method} {path}\n",
                                       status=405 if path_known else 404)
                else:
                    reply = route.handler(request)
                if reply.is_file and applies and not stall and request.method != "HEAD":
                    if faults.hits("html", request.key, request.occurrence):
                        fault = "html"
                        reply = Reply(status=200, body=_HTML_ERROR_PAGE, content_type="text/html")
                    elif faults.hits("truncate", request.key, request.occurrence):
                        fault = "truncate"
                fault = fault or reply.fault
            status, headers, content = self._prepare(request, reply)
            record(status, fault, headers)
            self._write(handler, request, status, headers, content, flight,
                        truncate=fault == "truncate",
                        stall=faults.stall if stall else 0.0, file=reply.is_file)
        finally:
            flight.end()

    @staticmethod
    def _prepare(request: Request, reply: Reply) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body to send (a file reply's ``Range`` applied)."""
        body, status = reply.body, reply.status
        headers = {"Content-Type": reply.content_type, **reply.headers}
        if reply.is_file:
            headers["Accept-Ranges"] = "bytes"
            status, body, extra = _apply_range(request, reply)
            headers.update(extra)
        headers["Content-Length"] = str(len(body))
        return status, headers, body

    def _wait_out(self, handler: _Handler, seconds: float) -> bool:
        """Stall up to ``seconds``; ``False`` (at once) if the client closes the connection."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            try:
                readable, _, _ = select.select([handler.connection], [], [], min(remaining, 0.1))
            except (OSError, ValueError):
                return False
            if readable:
                if _client_gone(handler.connection):
                    return False
                self._stopping.wait(min(remaining, 0.05))  # bytes from the client: not a close
        return False

    def _write(self, handler: _Handler, request: Request, status: int, headers: dict[str, str],
               body: bytes, flight: _Flight | None = None, truncate: bool = False,
               stall: float = 0.0, file: bool = False) -> None:
        """Send an answer; the request stops being in flight just before its last bytes go."""
        end = flight.end if flight is not None else (lambda: None)
        whole = request.method == "HEAD" or not body
        if stall and (whole or not file):
            # An answer that does not start in time: the client's read times out.
            if not self._wait_out(handler, stall):
                end()
                handler.close_connection = True
                return
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        if whole:
            end()
            handler.end_headers()
            return
        handler.end_headers()
        if truncate:
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            end()
            handler.reset_connection()
            return
        if stall:
            # A file that stops half-way, long enough for the client's read to time out.
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            if not self._wait_out(handler, stall):
                end()
                handler.close_connection = True
                return
            body = body[len(body) // 2 :]
        handler.wfile.write(body[:-1])
        end()
        handler.wfile.write(body[-1:])

    def _admin(self, request: Request) -> Reply:
        if request.path == "/_sim/stats" and request.method == "GET":
            return Reply.json(self.summary(log=request.arg("log", "0") == "1"))
        if request.path == "/_sim/stats/reset" and request.method == "POST":
            self.reset_stats()
            return Reply.json({"reset": True})
        if request.path == "/_sim/faults":
            if request.method == "POST":
                try:
                    self.faults = Faults.from_dict(json.loads(request.body or b"{}"))
                except (ValueError, TypeError) as error:
                    return Reply.json({"error": str(error)}, status=400)
            return Reply.json(asdict(self.faults))
        return Reply.text(f"unknown admin request {request.method} {request.path}\n", status=404)


@dataclass
class RetryAudit:
    """How a client retried on one server: counts, and every breach of the politeness rules."""

    requests: int
    #: Distinct requests (by :meth:`Service.request_key`).
    keys: int
    #: Answers that were failures (:data:`FAILURE_FAULTS`, 5xx, 429).
    failures: int
    #: The most failed answers in a row to one request.
    longest_streak: int
    #: The most times one request was asked.
    most_per_key: int
    violations: list[str] = field(default_factory=list)


def _failed(record: RequestRecord) -> bool:
    return record.fault in FAILURE_FAULTS or (
        record.status is not None and (record.status >= 500 or record.status == 429))


def audit_retries(records: Iterable[RequestRecord], *, max_attempts: int, backoff: float,
                  backoff_max: float = 60.0, tolerance: float = 0.01) -> RetryAudit:
    """Check from a server's request log that a client retried within bounds and politely.

    For every request (records with the same key): no more than
    ``max_attempts`` failed answers in a row; no more than ``max_attempts``
    tries per asking, where each ``EXECUTING`` answer is a new asking; and
    after the ``n``-th failure of a row, the next try no sooner than the least
    backoff (``backoff / 2 * 2**(n-1)``, at most ``backoff_max / 2``) or the
    answer's ``Retry-After``. Each breach is one line of ``violations``.

    Examples
    --------
    >>> rows = [RequestRecord(0.0, "GET", "/f", "", 503, "unavailable", "s", {}, "k", 1.0),
    ...         RequestRecord(0.4, "GET", "/f", "", 200, None, "s", {}, "k")]
    >>> audit = audit_retries(rows, max_attempts=3, backoff=0.1)
    >>> audit.failures, audit.violations
    (1, ['k: asked again 0.400 s after failure 1 (unavailable), sooner than 1.000 s'])
    """
    by_key: dict[str, list[RequestRecord]] = {}
    total = 0
    for record in sorted(records, key=lambda r: r.start):
        by_key.setdefault(record.key, []).append(record)
        total += 1
    failures = longest = most = 0
    violations: list[str] = []
    for key, asked in by_key.items():
        most = max(most, len(asked))
        askings = 1 + sum(1 for r in asked if r.fault == "executing")
        if len(asked) > max_attempts * askings:
            violations.append(f"{key}: asked {len(asked)} times, more than max_attempts "
                              f"({max_attempts}) x {askings} asking(s)")
        streak = 0
        for this, after in zip(asked, [*asked[1:], None]):
            if not _failed(this):
                streak = 0
                continue
            failures += 1
            streak += 1
            longest = max(longest, streak)
            if streak > max_attempts:
                violations.append(f"{key}: {streak} failed answers in a row (max_attempts "
                                  f"{max_attempts})")
            if after is None or streak >= max_attempts:
                continue  # the client gave up: what comes next is a new asking
            wanted = min(backoff_max, backoff * 2 ** (streak - 1)) / 2
            if this.retry_after is not None:
                wanted = max(wanted, this.retry_after)
            gap = after.start - this.start
            if gap < wanted - tolerance:
                violations.append(f"{key}: asked again {gap:.3f} s after failure {streak} "
                                  f"({this.fault or this.status}), sooner than {wanted:.3f} s")
    return RetryAudit(total, len(by_key), failures, longest, most, violations)


def _apply_range(request: Request, reply: Reply) -> tuple[int, bytes, dict[str, str]]:
    """Serve ``Range: bytes=a-b`` (with ``If-Range``) on a file reply."""
    body = reply.body
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if not wanted or (if_range and if_range != reply.headers.get("ETag")):
        return reply.status, body, {}
    try:
        unit, _, span = wanted.partition("=")
        first_text, _, last_text = span.partition("-")
        if unit.strip() != "bytes" or "," in span:
            raise ValueError(wanted)
        if first_text:
            first = int(first_text)
            last = int(last_text) if last_text else len(body) - 1
        else:
            first, last = max(0, len(body) - int(last_text)), len(body) - 1
    except ValueError:
        return reply.status, body, {}
    if first >= len(body) or first > last:
        return 416, b"", {"Content-Range": f"bytes */{len(body)}"}
    last = min(last, len(body) - 1)
    return 206, body[first : last + 1], {"Content-Range": f"bytes {first}-{last}/{len(body)}"}
