"""The HTTP layer against a real local server: retries, limits, redirects and safe downloads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from astropy.io import fits

from skyretriever.fitsfile import validate_fits, validate_fits_bytes
from skyretriever.net import (
    HttpClient,
    HttpError,
    NetworkError,
    NetworkPolicy,
    RetriesExhausted,
    host_of,
    shared_client,
)
from skyretriever.testing.server import ArchiveServer, Faults, Reply, Request, Route, Service

FAST = NetworkPolicy(max_attempts=4, backoff=0.0, timeout=5.0, connect_timeout=2.0)


def fits_bytes(rows: int = 500) -> bytes:
    """A small valid FITS file: a primary HDU and a binary table."""
    import io

    table = fits.BinTableHDU.from_columns([
        fits.Column(name="TIME", format="D", array=np.arange(rows, dtype=float)),
        fits.Column(name="FLUX", format="E", array=np.ones(rows, dtype=np.float32)),
    ])
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(buffer)
    return buffer.getvalue()


class Scripted(Service):
    """Answers each path with a list of replies in turn (the last one repeats)."""

    name = "scripted"

    def __init__(self, script: dict[str, list[Reply]]) -> None:
        self.script = {path: list(replies) for path, replies in script.items()}
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        self.routes = [Route(("GET", "POST"), path, self.answer) for path in script]

    def answer(self, request: Request) -> Reply:
        with self.lock:
            number = self.calls.get(request.path, 0)
            self.calls[request.path] = number + 1
        replies = self.script[request.path]
        return replies[min(number, len(replies) - 1)]


def unavailable(retry_after: str | None = "0", status: int = 503) -> Reply:
    reply = Reply.text("busy\n", status=status)
    if retry_after is not None:
        reply.headers["Retry-After"] = retry_after
    return reply


@pytest.fixture
def serve():
    servers = []

    def start(*services: Service, faults: Faults | None = None) -> ArchiveServer:
        server = ArchiveServer(services, faults).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_transient_statuses_are_retried_until_an_answer(serve):
    server = serve(Scripted({"/data": [unavailable(), unavailable(status=502),
                                       unavailable(status=429), Reply.json({"ok": 1})]}))
    assert HttpClient(FAST).request_json("GET", server.url + "/data") == {"ok": 1}
    assert [r.status for r in server.records] == [503, 502, 429, 200]


def test_retries_are_bounded_and_the_error_says_where(serve):
    server = serve(Scripted({"/down": [unavailable()]}))
    with pytest.raises(RetriesExhausted) as caught:
        HttpClient(FAST).request("GET", server.url + "/down", what="the test service")
    assert server.count("/down") == FAST.max_attempts
    message = str(caught.value)
    assert "the test service" in message and "4 time(s)" in message and "HTTP 503" in message
    assert caught.value.last_error.status == 503


def test_client_errors_are_not_retried(serve):
    server = serve(Scripted({"/missing": [Reply.text("no such thing", status=404)]}))
    with pytest.raises(HttpError) as caught:
        HttpClient(FAST).request("GET", server.url + "/missing")
    assert caught.value.status == 404 and "no such thing" in str(caught.value)
    assert server.count("/missing") == 1


def test_retry_after_is_honoured(serve):
    server = serve(Scripted({"/slow": [unavailable("1", status=429), Reply.json([])]}))
    HttpClient(FAST).request_json("GET", server.url + "/slow")
    first, second = server.records
    assert second.start - first.start >= 0.95


def test_retry_after_longer_than_allowed_fails_at_once(serve):
    server = serve(Scripted({"/later": [unavailable("3600")]}))
    with pytest.raises(NetworkError, match="asks to wait 3600 s"):
        HttpClient(FAST).request("GET", server.url + "/later")
    assert server.count("/later") == 1


def test_resets_are_retried(serve):
    server = serve(Scripted({"/x": [Reply.json({"ok": True})]}),
                   faults=Faults(reset_rate=1.0, faults_per_request=2))
    assert HttpClient(FAST).request_json("GET", server.url + "/x") == {"ok": True}
    assert [r.fault for r in server.records] == ["reset", "reset", None]


def test_timeouts_are_retried_then_reported(serve):
    server = serve(Scripted({"/hang": [Reply.json({})]}), faults=Faults(latency=1.0))
    policy = NetworkPolicy(max_attempts=2, backoff=0.0, timeout=0.2)
    with pytest.raises(RetriesExhausted, match="(?i)timed out"):
        HttpClient(policy).request("GET", server.url + "/hang")
    assert server.wait_idle()
    assert server.count("/hang") == 2


def test_a_body_that_is_not_json_is_asked_for_again(serve):
    maintenance = Reply.text("<html>down for maintenance</html>", content_type="text/html")
    server = serve(Scripted({"/api": [maintenance, Reply.json({"status": "COMPLETE"})]}))
    assert HttpClient(FAST).request_json("POST", server.url + "/api", data={"request": "{}"}) == {
        "status": "COMPLETE"}
    assert server.count("/api") == 2
    assert server.records[0].headers["content-type"] == "application/x-www-form-urlencoded"


def test_connections_per_host_are_bounded(serve):
    server = serve(Scripted({"/q": [Reply.json(1)]}), faults=Faults(latency=0.2))
    client = HttpClient(NetworkPolicy(max_connections_per_host=3, backoff=0.0))
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda _: client.request_json("GET", server.url + "/q"), range(12)))
    assert results == [1] * 12
    assert 2 <= server.max_in_flight <= 3


def test_each_host_has_its_own_limit(serve):
    first = serve(Scripted({"/q": [Reply.json(1)]}), faults=Faults(latency=0.3))
    second = serve(Scripted({"/q": [Reply.json(2)]}), faults=Faults(latency=0.3))
    client = HttpClient(NetworkPolicy(max_connections_per_host=2, backoff=0.0))
    urls = [first.url + "/q", second.url + "/q"] * 4
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda url: client.request("GET", url), urls))
    assert first.max_in_flight <= 2 and second.max_in_flight <= 2
    assert host_of(first.url) != host_of(second.url)


def test_redirects_to_another_host_drop_credentials(serve):
    landing = serve(Scripted({"/land": [Reply.json("landed")]}))
    redirect = Reply(status=302, headers={"Location": landing.url + "/land"})
    same_host = Reply(status=307, headers={"Location": "/there"})
    start = serve(Scripted({"/go": [redirect], "/here": [same_host], "/there": [Reply.json("x")]}))
    client = HttpClient(FAST)
    secret = {"Authorization": "Bearer secret", "Cookie": "session=1"}
    assert client.request_json("GET", start.url + "/go", headers=secret) == "landed"
    assert "authorization" not in landing.records[0].headers
    assert "cookie" not in landing.records[0].headers
    assert client.request_json("GET", start.url + "/here", headers=secret) == "x"
    there = [r for r in start.records if r.path == "/there"][0]
    assert there.headers["authorization"] == "Bearer secret"


def test_download_is_written_whole_then_renamed(serve, tmp_path):
    content = fits_bytes()
    server = serve(Scripted({"/f.fits": [Reply.file(content)]}))
    target = tmp_path / "sub" / "f.fits"
    assert HttpClient(FAST).download(server.url + "/f.fits", target,
                                     validator=validate_fits) == target
    assert target.read_bytes() == content
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.fits"]


def test_a_cut_download_resumes_with_range(serve, tmp_path):
    content = fits_bytes(25_000)  # 300 kB: several reads arrive before the cut
    server = serve(Scripted({"/f.fits": [Reply.file(content)]}),
                   faults=Faults(truncate_rate=1.0, faults_per_request=1))
    target = tmp_path / "f.fits"
    HttpClient(FAST).download(server.url + "/f.fits", target, validator=validate_fits)
    assert target.read_bytes() == content
    first, second = server.records
    assert first.fault == "truncate" and second.status == 206
    # Resumed after the bytes kept from the cut answer (at most the half that was sent).
    resumed_from = int(second.headers["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from <= len(content) // 2
    assert second.headers["if-range"].startswith('"')


def test_a_download_that_keeps_failing_leaves_no_file(serve, tmp_path):
    server = serve(Scripted({"/f.fits": [Reply.file(fits_bytes())]}),
                   faults=Faults(truncate_rate=1.0))
    target = tmp_path / "f.fits"
    with pytest.raises(RetriesExhausted, match="body cut"):
        HttpClient(FAST).download(server.url + "/f.fits", target, validator=validate_fits)
    assert list(tmp_path.iterdir()) == []


def test_an_html_page_served_as_fits_is_refused_and_fetched_again(serve, tmp_path):
    content = fits_bytes()
    server = serve(Scripted({"/f.fits": [Reply.file(content)]}),
                   faults=Faults(html_rate=1.0, faults_per_request=1))
    target = tmp_path / "f.fits"
    HttpClient(FAST).download(server.url + "/f.fits", target, validator=validate_fits)
    assert target.read_bytes() == content
    assert [r.fault for r in server.records] == ["html", None]


def test_an_html_page_every_time_is_never_kept(serve, tmp_path):
    server = serve(Scripted({"/f.fits": [Reply.file(fits_bytes())]}), faults=Faults(html_rate=1.0))
    with pytest.raises(RetriesExhausted, match="not valid.*does not start with SIMPLE"):
        HttpClient(FAST).download(server.url + "/f.fits", tmp_path / "f.fits",
                                  validator=validate_fits)
    assert list(tmp_path.iterdir()) == []


def test_expected_size_is_checked(serve, tmp_path):
    content = fits_bytes()
    server = serve(Scripted({"/f.fits": [Reply.file(content)]}))
    with pytest.raises(RetriesExhausted, match=f"has {len(content)} bytes, expected 10"):
        HttpClient(NetworkPolicy(max_attempts=1)).download(server.url + "/f.fits",
                                                           tmp_path / "f.fits", expected_size=10)
    assert list(tmp_path.iterdir()) == []


def test_a_download_into_memory_is_resumed_checked_and_never_half_returned(serve):
    content = fits_bytes(25_000)
    cut = serve(Scripted({"/f.fits": [Reply.file(content)]}),
                faults=Faults(truncate_rate=1.0, faults_per_request=1))
    assert HttpClient(FAST).download_bytes(cut.url + "/f.fits",
                                           validator=validate_fits_bytes) == content
    first, second = cut.records
    assert first.fault == "truncate" and second.status == 206
    assert 0 < int(second.headers["range"].removeprefix("bytes=").rstrip("-")) <= len(content) // 2
    # An HTML page in place of the file is refused and asked again.
    html = serve(Scripted({"/f.fits": [Reply.file(content)]}),
                 faults=Faults(html_rate=1.0, faults_per_request=1))
    assert HttpClient(FAST).download_bytes(html.url + "/f.fits",
                                           validator=validate_fits_bytes) == content
    assert [r.fault for r in html.records] == ["html", None]
    always = serve(Scripted({"/f.fits": [Reply.file(content)]}), faults=Faults(html_rate=1.0))
    with pytest.raises(RetriesExhausted, match="not valid.*does not start with SIMPLE"):
        HttpClient(FAST).download_bytes(always.url + "/f.fits", validator=validate_fits_bytes)
    whole = serve(Scripted({"/f.fits": [Reply.file(content)]}))
    with pytest.raises(RetriesExhausted, match=f"has {len(content)} bytes, expected 10"):
        HttpClient(NetworkPolicy(max_attempts=1)).download_bytes(whole.url + "/f.fits",
                                                                 expected_size=10)


def test_fits_in_memory_are_checked_like_files(tmp_path):
    content = fits_bytes()
    validate_fits_bytes(content)
    validate_fits_bytes(memoryview(content))
    with pytest.raises(ValueError, match="ends inside the header of HDU 1"):
        validate_fits_bytes(memoryview(content)[: 2880 + 100])
    with pytest.raises(ValueError, match="declares .* bytes of data"):
        validate_fits_bytes(content[:-2880])
    path = tmp_path / "cut.fits"
    path.write_bytes(content[:-2880])
    with pytest.raises(ValueError, match="declares .* bytes of data"):
        validate_fits(path)


def test_retry_delays_grow_with_jitter_and_respect_retry_after():
    policy = NetworkPolicy(backoff=2.0, backoff_max=10.0)
    delays = [policy.retry_delay(attempt) for attempt in (1, 2, 3, 4)]
    assert 1.0 <= delays[0] <= 2.0 and 2.0 <= delays[1] <= 4.0 and 5.0 <= delays[3] <= 10.0
    assert policy.retry_delay(1, retry_after=7.0) == 7.0
    with pytest.raises(ValueError, match="max_attempts"):
        NetworkPolicy(max_attempts=0)


def test_clients_are_shared_by_policy_and_pickle_without_sockets():
    import pickle

    policy = NetworkPolicy(max_attempts=3)
    client = shared_client(policy)
    assert shared_client(NetworkPolicy(max_attempts=3)) is client
    assert shared_client(NetworkPolicy(max_attempts=2)) is not client
    copy = pickle.loads(pickle.dumps(client))
    assert copy.policy == policy and copy._pool is None
