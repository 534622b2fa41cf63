"""MAST's public S3 bucket (``stpubdata``): unsigned reads, with errors mapped to ours.

:class:`S3Bucket` fetches files within the same per-host limits, retries and
atomic, validated writes as every HTTP request (:mod:`skyretriever.net`); a
file the bucket does not have raises :class:`CloudFileMissing`, so the
download falls back to MAST HTTPS. Whole light-curve files are plain HTTPS
GETs of the public objects (:meth:`S3Bucket.read`, into memory); files written
to disk, byte ranges of FFI cubes and listings go through unsigned boto3.

Examples
--------
>>> from skyretriever.net import HttpClient
>>> bucket = S3Bucket("stpubdata", None, "us-east-1", HttpClient())
>>> bucket.host_url
'https://s3.us-east-1.amazonaws.com'
>>> bucket.download("tess/public/tid/s0001/0000/0000/2515/5310/"
...                 "tess2018206045859-s0001-0000000025155310-0120-s_lc.fits",
...                 Path("lc.fits"))                                    # doctest: +SKIP
PosixPath('lc.fits')
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from skyretriever.fitsfile import validate_fits, validate_fits_bytes
from skyretriever.net import (
    TRANSIENT_STATUS,
    HttpClient,
    HttpError,
    NetworkError,
    TransientError,
)
from skyretriever.observatories.runtime import RuntimeState

__all__ = ["CloudFileMissing", "S3Bucket"]


#: The boto3 session of this process, and the lock that makes clients from it one at a
#: time (boto3 sessions are not thread-safe).
_SESSION: dict[str, Any] = {}
_SESSION_LOCK = threading.Lock()
#: Bytes per read of a file's body.
_READ_BYTES = 4 << 20


def _forget_session() -> None:
    # A forked child makes its own session, under a lock no thread of its parent holds.
    global _SESSION_LOCK
    _SESSION.clear()
    _SESSION_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_session)


class CloudFileMissing(NetworkError):
    """The file is not in the S3 bucket (the download falls back to MAST HTTPS)."""


class S3Bucket(RuntimeState):
    """Unsigned reads from a public bucket (``stpubdata``) through boto3, politely and atomically.

    Requests count against the :class:`HttpClient`'s per-host limit and go
    through its retry loop (boto3's own retries are off) and its atomic,
    validated file writes.

    Parameters
    ----------
    bucket
        Bucket name.
    endpoint_url
        S3 endpoint (``None``: AWS); path-style addressing is used for other endpoints.
    region
        The bucket's region.
    http
        The client whose policy, limits and retry loop apply.
    """

    def __init__(self, bucket: str, endpoint_url: str | None, region: str,
                 http: HttpClient) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.http = http
        self._init_runtime()

    _RUNTIME = ("_client", "_lock")

    def _init_runtime(self) -> None:
        self._client = None
        self._lock = threading.Lock()

    @property
    def host_url(self) -> str:
        return self.endpoint_url or f"https://s3.{self.region}.amazonaws.com"

    @property
    def client(self):
        """The boto3 S3 client (made once, under a lock: making clients is not thread-safe)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import boto3
                    import botocore
                    from botocore.config import Config

                    policy = self.http.policy
                    config = Config(
                        signature_version=botocore.UNSIGNED,
                        s3={"addressing_style": "path" if self.endpoint_url else "auto"},
                        retries={"total_max_attempts": 1, "mode": "standard"},
                        connect_timeout=policy.connect_timeout, read_timeout=policy.timeout,
                        max_pool_connections=policy.max_connections_per_host,
                        user_agent_extra=policy.user_agent,
                    )
                    with _SESSION_LOCK:
                        # One boto3 session per process: a new one reads botocore's service
                        # descriptions again (about 0.1 s of CPU for every run or bucket).
                        if "session" not in _SESSION:
                            _SESSION["session"] = boto3.session.Session()
                        self._client = _SESSION["session"].client(
                            "s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            config=config,
                        )
        return self._client

    def _fault(self, error: Exception, key: str) -> Exception:
        """Our error for a boto3 one: transient, missing, or final."""
        from botocore import exceptions

        where = f"s3://{self.bucket}/{key} at {self.host_url}"
        if isinstance(error, exceptions.ClientError):
            metadata = error.response.get("ResponseMetadata", {})
            status = int(metadata.get("HTTPStatusCode") or 0)
            code = str(error.response.get("Error", {}).get("Code", ""))
            if status in TRANSIENT_STATUS or code in ("SlowDown", "ServiceUnavailable",
                                                      "InternalError", "RequestTimeout"):
                headers = {k.lower(): v for k, v in (metadata.get("HTTPHeaders") or {}).items()}
                retry_after = headers.get("retry-after")
                return TransientError(
                    f"{where}: HTTP {status} {code}",
                    retry_after=float(retry_after) if retry_after and retry_after.isdigit()
                    else None, status=status)
            if status == 404 or code in ("NoSuchKey", "NoSuchBucket", "404"):
                return CloudFileMissing(f"{where}: {code or status} (not in the bucket)")
            return NetworkError(f"{where}: HTTP {status} {code}: {error}")
        if isinstance(error, (exceptions.HTTPClientError, exceptions.ConnectionError,
                              exceptions.IncompleteReadError)):
            return TransientError(f"{where}: {type(error).__name__}: {error}")
        return NetworkError(f"{where}: {type(error).__name__}: {error}")

    def download(self, key: str, destination: Path,
                 validator: Callable[[Path], None] | None = validate_fits) -> Path:
        """Fetch ``key`` to ``destination`` through boto3 (atomically, validated, with retries).

        Raises
        ------
        CloudFileMissing
            If the bucket does not have the key.
        skyretriever.net.RetriesExhausted, skyretriever.net.NetworkError
            If the bucket cannot be read.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        def write(handle: IO[bytes]) -> int | None:
            handle.seek(0)
            handle.truncate()
            with self.http.limiter.slot(self.host_url):
                try:
                    answer = self.client.get_object(Bucket=self.bucket, Key=key)
                    body = answer["Body"]
                    try:
                        # Large reads: a light curve (2-6 MB) in one or two, each a few
                        # megabytes of memory at most.
                        for chunk in body.iter_chunks(_READ_BYTES):
                            handle.write(chunk)
                    finally:
                        body.close()
                except (BotoCoreError, ClientError) as error:
                    raise self._fault(error, key) from error
            return int(answer.get("ContentLength") or 0) or None

        return self.http.download_with(destination, write, what=f"s3://{self.bucket}/{key}",
                                       validator=validator)

    def read(self, key: str, validator: Callable[[memoryview], None] | None = validate_fits_bytes
             ) -> bytes:
        """A whole object, into memory (validated, with retries; a cut body is resumed with
        ``Range``).

        The bucket is public, so this is a plain HTTPS GET of :meth:`object_url` through
        the :class:`HttpClient` (boto3 added about 4 ms of CPU per 2 MB file, and does not
        resume); ranges and listings go through boto3.

        Raises
        ------
        CloudFileMissing
            If the bucket does not have the key (HTTP 404, or 403 where listing is denied).
        skyretriever.net.RetriesExhausted, skyretriever.net.NetworkError
            If the bucket cannot be read.
        """
        url = self.object_url(key)
        try:
            return self.http.download_bytes(url, validator=validator, allowed_hosts=(url,))
        except HttpError as error:
            if error.status in (403, 404):
                raise CloudFileMissing(f"s3://{self.bucket}/{key} at {self.host_url}: HTTP "
                                       f"{error.status} (not in the bucket)") from error
            raise

    def object_url(self, key: str) -> str:
        """The HTTPS URL of a key: path style at an endpoint of its own, virtual-hosted at AWS.

        >>> S3Bucket("stpubdata", None, "us-east-1", HttpClient()).object_url("tess/a b.fits")
        'https://stpubdata.s3.us-east-1.amazonaws.com/tess/a%20b.fits'
        >>> S3Bucket("b", "http://127.0.0.1:9000/", "us-east-1", HttpClient()).object_url("k")
        'http://127.0.0.1:9000/b/k'
        """
        if self.endpoint_url:
            return f"{self.endpoint_url.rstrip('/')}/{quote(self.bucket)}/{quote(key)}"
        return f"https://{self.bucket}.s3.{self.region}.amazonaws.com/{quote(key)}"

    def read_range(self, key: str, first: int, last: int) -> bytes:
        """Bytes ``first`` to ``last`` (inclusive) of ``key``, with retries; the answer is checked.

        A range past the end of the object gives the bytes up to its end (as S3
        does). An answer that is not that range (another ``Content-Range``, a
        short body, a whole file) counts as a failed attempt and is asked again.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        def attempt() -> bytes:
            with self.http.limiter.slot(self.host_url):
                try:
                    answer = self.client.get_object(Bucket=self.bucket, Key=key,
                                                    Range=f"bytes={first}-{last}")
                    body = answer["Body"]
                    try:
                        data = body.read()
                    finally:
                        body.close()
                except (BotoCoreError, ClientError) as error:
                    raise self._fault(error, key) from error
            answer_range = str(answer.get("ContentRange") or "")
            sent = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", answer_range)
            end = int(sent[2]) if sent else -1
            whole = sent is not None and int(sent[1]) == first and (
                end == last or end == int(sent[3]) - 1 < last)
            if not whole or len(data) != end - first + 1:
                raise TransientError(f"s3://{self.bucket}/{key}: asked for bytes {first}-{last}, "
                                     f"got {answer_range or 'no Content-Range'} and "
                                     f"{len(data)} bytes")
            return data

        return self.http.call_with_retries(attempt, f"s3://{self.bucket}/{key} [{first}-{last}]")

    def list_keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` (ListObjectsV2, every page)."""
        from botocore.exceptions import BotoCoreError, ClientError

        def attempt() -> list[str]:
            keys: list[str] = []
            token = None
            with self.http.limiter.slot(self.host_url):
                try:
                    while True:
                        extra = {"ContinuationToken": token} if token else {}
                        answer = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix,
                                                             **extra)
                        keys += [item["Key"] for item in answer.get("Contents", [])]
                        token = answer.get("NextContinuationToken")
                        if not answer.get("IsTruncated") or not token:
                            return keys
                except (BotoCoreError, ClientError) as error:
                    raise self._fault(error, prefix) from error

        return self.http.call_with_retries(attempt, f"list s3://{self.bucket}/{prefix}")
