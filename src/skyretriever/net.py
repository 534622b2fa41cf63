"""The one HTTP layer of skyretriever: timeouts, retries with backoff, per-host limits, safe downloads.

Every request to an archive goes through an :class:`HttpClient`:

- a bounded number of requests in flight per host (``scheme://host:port``),
  shared by every thread that uses the client, so a run is parallel but polite;
- a connect and a read timeout on every request;
- retries with exponential backoff and jitter on HTTP 5xx, 408 and 429,
  connection resets, timeouts and bodies cut short, honouring ``Retry-After``,
  with a hard bound on the number of attempts;
- redirects followed by hand, without credentials when they lead to another host,
  and not at all when they leave the hosts a request allows (``allowed_hosts``:
  the configured archive hosts), so nothing is fetched from anywhere else;
- downloads written to a temporary file beside the destination, resumed with
  ``Range`` after a cut, checked (length, and a validator such as
  :func:`skyretriever.fitsfile.validate_fits`) and only then renamed into
  place: a bad file is fetched again and never kept.

Other transports (the S3 client of :mod:`skyretriever.observatories.s3`)
reuse the same pieces: :meth:`HttpClient.call_with_retries` for the retry
loop, :attr:`HttpClient.limiter` for the per-host bound, and
:meth:`HttpClient.download_with` for the temporary file, checks and rename.

Examples
--------
>>> from skyretriever.net import HttpClient, NetworkPolicy
>>> client = HttpClient(NetworkPolicy(max_connections_per_host=4, max_attempts=3))
>>> rows = client.request_json("GET", "https://mast.stsci.edu/api/v0.1/path_lookup/",
...                            params={"uri": ["mast:TESS/product/x_lc.fits"]})  # doctest: +SKIP
>>> from skyretriever.fitsfile import validate_fits
>>> client.download("https://example.org/file.fits", "file.fits",
...                 validator=validate_fits)                                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import email.utils
import io
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlencode, urljoin, urlsplit

import urllib3

from skyretriever import storage
from skyretriever._version import __version__
from skyretriever.parameters import Parameters, parameter

__all__ = [
    "BadAnswer",
    "ForbiddenHost",
    "HostLimiter",
    "HttpClient",
    "HttpError",
    "NetworkError",
    "NetworkParameters",
    "NetworkPolicy",
    "Response",
    "RetriesExhausted",
    "TransientError",
    "host_of",
    "join_url",
    "shared_client",
    "validate_archive_url",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Status codes worth asking again: the server is busy, overloaded or briefly down.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
#: Headers never sent to a host other than the one they were meant for.
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie")
_CHUNK_BYTES = 64 * 1024
_ERROR_BODY_BYTES = 4096


class NetworkError(RuntimeError):
    """A request or download failed; the message says what, where and why."""


class TransientError(NetworkError):
    """A failure that may go away if asked again (busy server, reset, timeout, cut body).

    Parameters
    ----------
    message
        What failed.
    retry_after
        Seconds the server asked us to wait (``Retry-After``), if it said.
    status
        The HTTP status, when there was one.
    """

    def __init__(self, message: str, retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class HttpError(NetworkError):
    """The server answered with an error status that asking again will not change (e.g. 404)."""

    def __init__(self, message: str, status: int, url: str, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.url = url
        #: The start of the error body (services such as TAP put their reason past the
        #: short snippet quoted in the message).
        self.body = body


class BadAnswer(NetworkError):
    """An archive answered something its protocol does not allow (missing columns, wrong types).

    Asking again will not help; the message names the archive, the request and the problem.
    """


class ForbiddenHost(NetworkError):
    """A request, or a redirect, leads to a host that is not one of the configured archives."""


class RetriesExhausted(NetworkError):
    """Every allowed attempt failed with a transient error; ``last_error`` is the final one."""

    def __init__(self, message: str, last_error: TransientError) -> None:
        super().__init__(message)
        self.last_error = last_error


@dataclass(frozen=True)
class NetworkPolicy:
    """How an :class:`HttpClient` talks to archives. Frozen, so clients can be shared by policy.

    Examples
    --------
    >>> policy = NetworkPolicy(backoff=1.0, backoff_max=8.0)
    >>> 0.5 <= policy.retry_delay(1) <= 1.0 and 4.0 <= policy.retry_delay(5) <= 8.0
    True
    >>> policy.retry_delay(1, retry_after=3.0)
    3.0
    """

    #: Seconds to wait for the server to accept a connection.
    connect_timeout: float = 10.0
    #: Seconds to wait for each read from the socket (not the whole transfer).
    timeout: float = 60.0
    #: Attempts per request, the first one included (1 means no retries).
    max_attempts: int = 6
    #: The first retry waits between half this and this (seconds); each later one doubles it.
    backoff: float = 1.0
    #: No wait between attempts is longer than this (seconds), unless ``Retry-After`` says so.
    backoff_max: float = 60.0
    #: A ``Retry-After`` longer than this (seconds) fails the request at once rather than wait.
    max_retry_after: float = 300.0
    #: Requests in flight at once to one host, across every thread using the client.
    max_connections_per_host: int = 8
    #: Redirects followed per request.
    max_redirects: int = 5
    user_agent: str = "skyretriever"

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "timeout", "backoff_max", "max_retry_after"):
            if not getattr(self, name) > 0:
                raise ValueError(f"NetworkPolicy.{name} must be positive, not {getattr(self, name)!r}")
        if self.backoff < 0:
            raise ValueError(f"NetworkPolicy.backoff must be >= 0, not {self.backoff!r}")
        for name in ("max_attempts", "max_connections_per_host"):
            if getattr(self, name) < 1:
                raise ValueError(f"NetworkPolicy.{name} must be at least 1, not {getattr(self, name)!r}")

    def retry_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        Exponential backoff with "equal jitter" (between half and all of the
        backoff), so threads that failed together do not retry together, and
        never less than the server's ``Retry-After``.
        """
        backoff = min(self.backoff_max, self.backoff * 2 ** (attempt - 1))
        delay = backoff / 2 + random.uniform(0, backoff / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay


def host_of(url: str) -> str:
    """``scheme://host:port`` of a URL: the unit of the per-host connection limit.

    Examples
    --------
    >>> host_of("https://mast.stsci.edu/api/v0/invoke")
    'https://mast.stsci.edu:443'
    """
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        raise NetworkError(f"not an absolute http(s) URL: {url!r}")
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    return f"{parts.scheme}://{parts.hostname.lower()}:{port}"


def validate_archive_url(value: str, what: str = "the URL") -> str:
    """``value`` if it is an absolute http(s) URL without credentials; else ``ValueError``.

    Archive URLs are parameters: they are written to ``config.yaml`` and shown in
    errors and logs, so a user name or password in them would leak.

    Examples
    --------
    >>> validate_archive_url("https://mast.stsci.edu")
    'https://mast.stsci.edu'
    >>> validate_archive_url("https://me:pw@mast.stsci.edu", "mast_url")
    Traceback (most recent call last):
    ...
    ValueError: mast_url must not hold credentials (they would be written to config files and logs)
    """
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"{what} must be an http(s) URL, not {value!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{what} must not hold credentials (they would be written to config "
                         "files and logs)")
    return value


def _allowed_set(allowed_hosts: Iterable[str] | None) -> frozenset[str] | None:
    if allowed_hosts is None:
        return None
    if isinstance(allowed_hosts, str):
        allowed_hosts = [allowed_hosts]
    return frozenset(host_of(host) for host in allowed_hosts)


class HostLimiter:
    """At most ``limit`` holders of a slot per host at once, across threads.

    Examples
    --------
    >>> limiter = HostLimiter(2)
    >>> with limiter.slot("https://mast.stsci.edu/api/v0/invoke"):
    ...     pass
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a host limit must be at least 1")
        self.limit = limit
        self._semaphores: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def slot(self, url: str) -> Iterator[None]:
        """Hold one of the slots of the URL's host for the duration of the ``with`` block."""
        host = host_of(url)
        with self._lock:
            semaphore = self._semaphores.get(host)
            if semaphore is None:
                semaphore = self._semaphores[host] = threading.BoundedSemaphore(self.limit)
        with semaphore:
            yield


@dataclass(frozen=True)
class Response:
    """A complete HTTP response: status, headers (lower-case names) and the whole body."""

    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises
        ------
        TransientError
            If the body is not JSON (archives answer maintenance pages in HTML
            with status 200; asking again later is the cure).
        """
        try:
            return json.loads(self.body)
        except ValueError:
            snippet = " ".join(self.text[:200].split())
            raise TransientError(
                f"{self.url} answered something that is not JSON (status {self.status}): "
                f"{snippet!r}"
            ) from None


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _without_credentials(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"


class _Partial:
    """What a cut-short download left behind, for resuming with ``Range``."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.etag: str | None = None
        self.accepts_ranges = False


class HttpClient:
    """Thread-safe HTTP client with timeouts, bounded retries, per-host limits and safe downloads.

    One client is meant to be shared by every thread of a process that talks
    to the same archives (see :func:`shared_client`): the per-host limit holds
    across all of them. The connection pool is made on first use and is not
    pickled, so objects holding a client can be sent to worker processes.

    Parameters
    ----------
    policy
        Timeouts, retries and limits; default :class:`NetworkPolicy()`.

    Examples
    --------
    >>> client = HttpClient(NetworkPolicy(max_attempts=2, timeout=5))
    >>> client.policy.max_attempts
    2
    """

    def __init__(self, policy: NetworkPolicy | None = None) -> None:
        self.policy = policy or NetworkPolicy()
        self.limiter = HostLimiter(self.policy.max_connections_per_host)
        self._pool: urllib3.PoolManager | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"policy": self.policy}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["policy"])

    def __repr__(self) -> str:
        return f"HttpClient({self.policy!r})"

    @property
    def pool(self) -> urllib3.PoolManager:
        """The urllib3 connection pool (made on first use; thread-safe)."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = urllib3.PoolManager(
                        num_pools=64,
                        maxsize=self.policy.max_connections_per_host,
                        retries=False,
                        headers={"User-Agent": self.policy.user_agent},
                    )
        return self._pool

    def close(self) -> None:
        """Close every pooled connection (a new pool is made if the client is used again)."""
        with self._lock:
            if self._pool is not None:
                self._pool.clear()
                self._pool = None

    # -- the retry loop ------------------------------------------------------------------
    def call_with_retries(self, operation: Callable[[], T], what: str) -> T:
        """Run ``operation`` until it succeeds, retrying on :class:`TransientError`.

        At most ``policy.max_attempts`` attempts, with the waits of
        :meth:`NetworkPolicy.retry_delay`. Any other exception ends it at once.

        Raises
        ------
        RetriesExhausted
            When every attempt failed; the message names ``what`` and the last error.
        NetworkError
            When the server asks to wait longer than ``policy.max_retry_after``.
        """
        policy = self.policy
        for attempt in range(1, policy.max_attempts + 1):
            try:
                return operation()
            except TransientError as error:
                if attempt == policy.max_attempts:
                    raise RetriesExhausted(
                        f"{what}: failed {attempt} time(s), giving up; last error: {error}", error
                    ) from error
                if error.retry_after is not None and error.retry_after > policy.max_retry_after:
                    raise NetworkError(
                        f"{what}: the server asks to wait {error.retry_after:.0f} s before asking "
                        f"again (more than max_retry_after={policy.max_retry_after:.0f} s); "
                        f"last error: {error}"
                    ) from error
                delay = policy.retry_delay(attempt, error.retry_after)
                log.debug("%s: attempt %d failed (%s); retrying in %.2f s",
                          what, attempt, error, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- one attempt -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _open(self, method: str, url: str, body: bytes | None, headers: dict[str, str],
              allowed: frozenset[str] | None = None) -> Iterator[urllib3.BaseHTTPResponse]:
        """One request (redirects followed), holding the host's slot while the body is read.

        With ``allowed``, a request (or redirect) to any other host raises
        :class:`ForbiddenHost` before anything is sent there.
        """
        asked = url
        for hop in range(self.policy.max_redirects + 1):
            if allowed is not None and host_of(url) not in allowed:
                how = f"was redirected to {url}" if hop else "is not"
                raise ForbiddenHost(
                    f"{method} {asked}: {how} on one of the configured archive hosts "
                    f"({', '.join(sorted(allowed))}); refused")
            with self.limiter.slot(url):
                try:
                    response = self.pool.urlopen(
                        method, url, body=body, headers=headers, redirect=False, retries=False,
                        preload_content=False, decode_content=False,
                        timeout=urllib3.Timeout(connect=self.policy.connect_timeout,
                                                read=self.policy.timeout),
                    )
                except (urllib3.exceptions.TimeoutError, urllib3.exceptions.ProtocolError,
                        urllib3.exceptions.NewConnectionError, urllib3.exceptions.ProxyError,
                        ConnectionError) as error:
                    raise TransientError(f"{method} {url}: {_describe(error)}") from error
                except urllib3.exceptions.HTTPError as error:
                    raise NetworkError(f"{method} {url}: {_describe(error)}") from error
                try:
                    if response.status not in REDIRECT_STATUS:
                        yield response
                        return
                    location = response.headers.get("location")
                    if not location:
                        raise HttpError(f"{method} {url}: redirect {response.status} without a "
                                        "Location header", response.status, url)
                finally:
                    # Unread bytes would poison the connection for its next user.
                    response.drain_conn()
                    response.release_conn()
            target = urljoin(url, location)
            if host_of(target) != host_of(url):
                # Credentials meant for one host are never sent to another.
                headers = _without_credentials(headers)
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, body = "GET", None
                headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            url = target
        raise HttpError(f"{method} {url}: more than {self.policy.max_redirects} redirects",
                        response.status, url)

    @staticmethod
    def _check_status(method: str, url: str, response: urllib3.BaseHTTPResponse) -> None:
        status = response.status
        if status < 400:
            return
        try:
            body = response.read(_ERROR_BODY_BYTES).decode("utf-8", "replace")
        except Exception:  # the error body is only a hint
            body = ""
        snippet = " ".join(body[:300].split())
        detail = f" ({snippet!r})" if snippet else ""
        if status in TRANSIENT_STATUS:
            raise TransientError(f"{method} {url}: HTTP {status}{detail}",
                                 retry_after=_retry_after_seconds(response.headers.get("retry-after")),
                                 status=status)
        raise HttpError(f"{method} {url}: HTTP {status}{detail}", status, url, body)

    @staticmethod
    def _read_body(method: str, url: str, response: urllib3.BaseHTTPResponse,
                   sink: Callable[[bytes], None]) -> int:
        """Stream the body into ``sink``; a body shorter than ``Content-Length`` is transient."""
        received = 0
        try:
            while True:
                chunk = response.read(_CHUNK_BYTES)
                if not chunk:
                    break
                sink(chunk)
                received += len(chunk)
        except (urllib3.exceptions.TimeoutError, urllib3.exceptions.ProtocolError,
                ConnectionError) as error:
            raise TransientError(f"{method} {url}: body cut after {received} bytes "
                                 f"({_describe(error)})") from error
        expected = response.headers.get("content-length")
        if expected is not None and expected.isdigit() and int(expected) != received:
            raise TransientError(f"{method} {url}: received {received} of the {expected} bytes "
                                 "announced in Content-Length")
        return received

    def _headers(self, headers: Mapping[str, str] | None, content_type: str | None = None
                 ) -> dict[str, str]:
        result = {"Accept-Encoding": "identity"}
        if content_type:
            result["Content-Type"] = content_type
        result.update(headers or {})
        return result

    # -- public requests ---------------------------------------------------------------------
    def request(self, method: str, url: str, *, params: Mapping[str, Any] | None = None,
                data: Mapping[str, Any] | bytes | None = None,
                headers: Mapping[str, str] | None = None,
                accept: Callable[[Response], T] | None = None, what: str | None = None,
                allowed_hosts: Iterable[str] | None = None):
        """Send a request, with retries, and return the complete response (or ``accept(response)``).

        Parameters
        ----------
        method, url
            ``"GET"``, ``"POST"``, ``"HEAD"``...; an absolute http(s) URL.
        params
            Query parameters; a list value repeats the name (``uri=a&uri=b``).
        data
            A form (sent URL-encoded) or raw bytes.
        headers
            Extra headers.
        accept
            Called on the response inside the retry loop; it may raise
            :class:`TransientError` to ask again (e.g. an archive still working).
        what
            Names the request in errors (default: method and URL).
        allowed_hosts
            URLs (or ``scheme://host:port``) of the only hosts the request may go
            to, redirects included; ``None`` allows any (credentials are still
            dropped on the way to another host).

        Raises
        ------
        HttpError
            On a status that asking again will not change (4xx other than 408, 429).
        RetriesExhausted
            When every attempt failed with a transient error.
        ForbiddenHost
            When the request or a redirect leads outside ``allowed_hosts``.

        Examples
        --------
        >>> client = HttpClient()
        >>> response = client.request("POST", "https://mast.stsci.edu/api/v0/invoke",
        ...                           data={"request": "{...}"})                # doctest: +SKIP
        """
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params, doseq=True)}"
        content_type = None
        body: bytes | None
        if isinstance(data, Mapping):
            body = urlencode(data, doseq=True).encode("ascii")
            content_type = "application/x-www-form-urlencoded"
        else:
            body = data
        all_headers = self._headers(headers, content_type)
        what = what or f"{method} {url}"
        allowed = _allowed_set(allowed_hosts)

        def attempt():
            with self._open(method, url, body, all_headers, allowed) as raw:
                self._check_status(method, url, raw)
                chunks: list[bytes] = []
                if method != "HEAD":
                    self._read_body(method, url, raw, chunks.append)
                response = Response(url=url, status=raw.status,
                                    headers={k.lower(): v for k, v in raw.headers.items()},
                                    body=b"".join(chunks))
            return accept(response) if accept is not None else response

        return self.call_with_retries(attempt, what)

    def request_json(self, method: str, url: str, **kwargs: Any) -> Any:
        """:meth:`request`, returning the body parsed as JSON (a non-JSON body is retried)."""
        return self.request(method, url, accept=Response.json, **kwargs)

    # -- downloads -------------------------------------------------------------------------
    def download(self, url: str, destination: str | os.PathLike, *,
                 validator: Callable[[Path], None] | None = None,
                 expected_size: int | None = None,
                 headers: Mapping[str, str] | None = None,
                 allowed_hosts: Iterable[str] | None = None) -> Path:
        """Download ``url`` to ``destination`` atomically; returns the destination.

        The body goes to a temporary file beside the destination. A body cut
        short is resumed with ``Range`` (when the server accepts ranges and the
        file has not changed, by ``ETag``) on the next attempt; the complete
        file must match ``Content-Length`` and ``expected_size`` (if given) and
        pass ``validator`` (which raises ``ValueError``, e.g.
        :func:`skyretriever.fitsfile.validate_fits`), else it is deleted and fetched again. Only then
        is it renamed into place, so the destination is never a bad file.

        Raises
        ------
        HttpError, RetriesExhausted, ForbiddenHost
            As :meth:`request` (``allowed_hosts`` too); the temporary file is removed.

        Examples
        --------
        >>> HttpClient().download("https://mast.stsci.edu/api/v0.1/Download/file?uri=...",
        ...                       "x_lc.fits", validator=validate_fits)      # doctest: +SKIP
        PosixPath('x_lc.fits')
        """
        return self.download_with(destination, self._resumable_get(url, headers, allowed_hosts),
                                  what=f"download {url}", validator=validator,
                                  expected_size=expected_size)

    def download_bytes(self, url: str, *,
                       validator: Callable[[memoryview], None] | None = None,
                       expected_size: int | None = None,
                       headers: Mapping[str, str] | None = None,
                       allowed_hosts: Iterable[str] | None = None) -> bytes:
        """:meth:`download` into memory: the whole body, checked the same way.

        For files the caller reads at once and keeps elsewhere (a light curve
        stored as raw data): no temporary file is written, read back and
        deleted. A body cut short is resumed with ``Range`` as :meth:`download`
        resumes one; ``validator`` gets the body as a ``memoryview`` (e.g.
        :func:`skyretriever.fitsfile.validate_fits_bytes`).

        Examples
        --------
        >>> HttpClient().download_bytes("https://mast.stsci.edu/api/v0.1/Download/file?uri=...",
        ...                             validator=validate_fits_bytes)   # doctest: +SKIP
        b'SIMPLE  =                    T ...'
        """
        write = self._resumable_get(url, headers, allowed_hosts)
        what = f"download {url}"
        body = io.BytesIO()

        def attempt() -> bytes:
            body.seek(0, io.SEEK_END)       # a cut body is resumed from where it stopped
            total = write(body)
            size = body.seek(0, io.SEEK_END)
            try:
                with body.getbuffer() as view:
                    _check_body(size, expected_size if expected_size is not None else total,
                                validator, view)
            except ValueError as error:
                body.seek(0)
                body.truncate()
                raise TransientError(
                    f"{what}: the downloaded file is not valid: {error}") from None
            return body.getvalue()          # the buffer itself, not a copy

        return self.call_with_retries(attempt, what)

    def _resumable_get(self, url: str, headers: Mapping[str, str] | None,
                       allowed_hosts: Iterable[str] | None
                       ) -> Callable[[IO[bytes]], int | None]:
        """The ``write`` of :meth:`download` and :meth:`download_bytes`: a GET of ``url`` into
        the handle (a file or memory), asking with ``Range`` for the rest of a body an
        earlier attempt cut short."""
        partial = _Partial()
        base_headers = self._headers(headers)
        allowed = _allowed_set(allowed_hosts)

        def write(handle: IO[bytes]) -> int | None:
            offset = handle.tell()
            request_headers = dict(base_headers)
            if offset and partial.accepts_ranges and partial.total:
                request_headers["Range"] = f"bytes={offset}-"
                if partial.etag:
                    request_headers["If-Range"] = partial.etag
            with self._open("GET", url, None, request_headers, allowed) as raw:
                self._check_status("GET", url, raw)
                if raw.status == 206:
                    first, total = _content_range(raw.headers.get("content-range"))
                    if first != offset or total != partial.total:
                        # Not the rest of the file we started: start again from the beginning.
                        handle.seek(0)
                        handle.truncate()
                        raise TransientError(
                            f"GET {url}: asked for bytes from {offset} of {partial.total}, got "
                            f"Content-Range {raw.headers.get('content-range')!r}"
                        )
                else:
                    handle.seek(0)
                    handle.truncate()
                    length = raw.headers.get("content-length")
                    partial.total = int(length) if length and length.isdigit() else None
                    partial.etag = raw.headers.get("etag")
                    partial.accepts_ranges = raw.headers.get("accept-ranges", "") == "bytes"
                self._read_body("GET", url, raw, handle.write)
            return partial.total

        return write

    def download_with(self, destination: str | os.PathLike,
                      write: Callable[[IO[bytes]], int | None], *, what: str,
                      validator: Callable[[Path], None] | None = None,
                      expected_size: int | None = None) -> Path:
        """Write a file atomically with retries, whatever the transport.

        ``write(handle)`` is called on each attempt with the temporary file
        (positioned at its end, so a transport that can resume may do so) and
        returns the expected total size if it knows it; it raises
        :class:`TransientError` on failures worth retrying. The file is then
        checked for size and by ``validator``; a file that fails is deleted
        and the attempt counts as failed.
        """
        destination = Path(destination)
        with storage.atomic_write(destination, beside=True) as temporary:

            def attempt() -> None:
                with open(temporary, "ab") as handle:
                    total = write(handle)
                    size = handle.tell()
                try:
                    _check_body(size, expected_size if expected_size is not None else total,
                                validator, temporary)
                except ValueError as error:
                    temporary.unlink(missing_ok=True)
                    raise TransientError(
                        f"{what}: the downloaded file is not valid: {error}") from None

            self.call_with_retries(attempt, what)
        return destination


def _check_body(size: int, expected: int | None, validator: Callable[[Any], None] | None,
                content: Any) -> None:
    """Raise ``ValueError`` unless a downloaded body has the size expected and passes ``validator``."""
    if expected is not None and size != expected:
        raise ValueError(f"has {size} bytes, expected {expected}")
    if validator is not None:
        validator(content)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """First byte and total size of ``Content-Range: bytes 100-199/200`` (``None`` if unknown)."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[len("bytes "):].partition("/")
    first = span.split("-", 1)[0]
    return (int(first) if first.isdigit() else None), (int(total) if total.isdigit() else None)


# -- shared clients ------------------------------------------------------------------------
_SHARED: dict[NetworkPolicy, HttpClient] = {}
_SHARED_LOCK = threading.Lock()


def shared_client(policy: NetworkPolicy | None = None) -> HttpClient:
    """The process-wide client for a policy, so every user of that policy shares its host limits.

    Observatories that talk to the same archive with the same policy (TESS,
    K2 and Kepler all use MAST) get the same client, and so together stay
    within ``max_connections_per_host``.

    Examples
    --------
    >>> shared_client(NetworkPolicy(max_attempts=2)) is shared_client(NetworkPolicy(max_attempts=2))
    True
    """
    policy = policy or NetworkPolicy()
    with _SHARED_LOCK:
        client = _SHARED.get(policy)
        if client is None:
            client = _SHARED[policy] = HttpClient(policy)
        return client


def _forget_shared_clients() -> None:
    # A forked child must not use sockets (or locks) it inherited from its parent.
    global _SHARED_LOCK
    _SHARED.clear()
    _SHARED_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_shared_clients)


def join_url(base: str, *parts: str) -> str:
    """``base`` and path pieces joined by single slashes.

    Examples
    --------
    >>> join_url("https://mast.stsci.edu/", "/api/v0/invoke")
    'https://mast.stsci.edu/api/v0/invoke'
    """
    pieces: Sequence[str] = [base.rstrip("/"), *(part.strip("/") for part in parts)]
    url = "/".join(pieces)
    return url + "/" if parts and parts[-1].endswith("/") else url


class NetworkParameters(Parameters):
    """Parameters of a client of an archive: timeouts, retries, politeness (none change results).

    Mixed into the parameters of the observatories and catalogs that talk to
    archives; :meth:`network_policy` makes the :class:`NetworkPolicy` of their client.

    Examples
    --------
    >>> NetworkParameters(max_attempts=2).network_policy().max_attempts
    2
    """

    max_connections_per_host: int = parameter(
        4, "Requests in flight at once to one host, across all sources.", critical=False, ge=1
    )
    timeout: float = parameter(
        60.0, "Seconds to wait for each read from an archive before the attempt counts as failed.",
        critical=False, gt=0,
    )
    max_attempts: int = parameter(
        6, "Attempts per request on transient errors (503, 429, resets, timeouts, cut bodies).",
        critical=False, ge=1,
    )
    backoff: float = parameter(
        1.0, "Seconds of the first wait between attempts (doubled each time, with jitter).",
        critical=False, ge=0,
    )

    def network_policy(self) -> NetworkPolicy:
        """The client policy these parameters describe."""
        return NetworkPolicy(
            connect_timeout=min(10.0, self.timeout), timeout=self.timeout,
            max_attempts=self.max_attempts, backoff=self.backoff,
            backoff_max=max(60.0, self.backoff),
            max_connections_per_host=self.max_connections_per_host,
            user_agent=f"skyretriever/{__version__}",
        )
