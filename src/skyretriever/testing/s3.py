"""The simulated public S3 bucket ``stpubdata``, for unsigned boto3 with path-style addressing.

:class:`S3Service` answers ``HEAD`` and ``GET /<bucket>/<key>`` (with ``Range``,
``ETag``, ``Last-Modified``), ``GET /<bucket>?list-type=2&prefix=...``
(ListObjectsV2, one page) and S3's XML errors (``NoSuchKey``,
``NoSuchBucket``, ``SlowDown``), which is all boto3 uses to fetch public
files. Keys follow the bucket's layout (``tess/public/tid/s0015/0000/0003/
7542/2201/...``, ``k2/public/lightcurves/c3/...``, ``kepler/public/
lightcurves/0082/008264588/...``, ``mast/hlsp/tess-spoc/...``).

Examples
--------
>>> import boto3, botocore
>>> from botocore.config import Config
>>> client = boto3.client("s3", endpoint_url="http://127.0.0.1:9000", region_name="us-east-1",
...                       config=Config(signature_version=botocore.UNSIGNED,
...                                     s3={"addressing_style": "path"}))   # doctest: +SKIP
>>> client.get_object(Bucket="stpubdata", Key="tess/public/tid/...")       # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from xml.sax.saxutils import escape

from skyretriever.testing.server import Reply, Request, Route, Service
from skyretriever.testing.sky import SimulatedSky

__all__ = ["BUCKET", "S3Service"]

BUCKET = "stpubdata"
_XML = "application/xml"


def _error(status: int, code: str, message: str, resource: str = "") -> Reply:
    request_id = hashlib.sha256(resource.encode()).hexdigest()[:16].upper()
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>"
        f"<Resource>{escape(resource)}</Resource><RequestId>{request_id}</RequestId></Error>"
    )
    reply = Reply(status=status, body=body.encode(), content_type=_XML)
    reply.headers["x-amz-request-id"] = request_id
    return reply


class S3Service(Service):
    """The ``stpubdata`` bucket holding the cloud copies of a sky's files."""

    name = "s3"

    def __init__(self, sky: SimulatedSky, bucket: str = BUCKET) -> None:
        self.sky = sky
        self.bucket = bucket
        self.routes = [Route(("GET",), "/", self.handle, prefix=True)]

    def fault_reply(self, kind: str, retry_after: int | None) -> Reply:
        if kind == "unavailable":
            reply = _error(503, "SlowDown", "Please reduce your request rate.")
        else:
            reply = _error(429, "TooManyRequests", "Too many requests.")
        if retry_after is not None:
            reply.headers["Retry-After"] = str(retry_after)
        return reply

    def handle(self, request: Request) -> Reply:
        bucket, _, key = request.path.lstrip("/").partition("/")
        if bucket != self.bucket:
            return _error(404, "NoSuchBucket", "The specified bucket does not exist", bucket)
        if not key:
            if request.arg("list-type") == "2":
                return self._list(request)
            return _error(400, "InvalidRequest", "Only ListObjectsV2 is simulated", bucket)
        content = self.content(key)
        if content is None:
            return _error(404, "NoSuchKey", "The specified key does not exist.", key)
        return Reply.file(content, content_type="binary/octet-stream",
                          headers={"x-amz-request-id": hashlib.sha256(key.encode())
                                   .hexdigest()[:16].upper()})

    # -- what the bucket holds (subclasses serve other files) ---------------------------------
    def keys(self, prefix: str) -> list[str]:
        """The keys starting with ``prefix``, sorted."""
        return sorted(k for k in self.sky.cloud_keys if k.startswith(prefix))

    def size(self, key: str) -> int:
        return self.sky.file_size(self.sky.cloud_keys[key])

    def content(self, key: str) -> bytes | None:
        """The bytes of a key, ``None`` if there is no such key."""
        data_uri = self.sky.cloud_keys.get(key)
        return self.sky.file_bytes(data_uri) if data_uri else None

    def _list(self, request: Request) -> Reply:
        prefix = request.arg("prefix", "") or ""
        delimiter = request.arg("delimiter", "") or ""
        limit = int(request.arg("max-keys", "1000") or 1000)
        keys, folders = [], []
        for key in self.keys(prefix):
            rest = key[len(prefix):]
            if delimiter and delimiter in rest:
                folder = prefix + rest.split(delimiter, 1)[0] + delimiter
                if not folders or folders[-1] != folder:
                    folders.append(folder)
            else:
                keys.append(key)
        shown = keys[:limit]
        contents = "".join(
            f"<Contents><Key>{escape(key)}</Key><Size>{self.size(key)}"
            "</Size><StorageClass>STANDARD</StorageClass></Contents>"
            for key in shown
        )
        common = "".join(f"<CommonPrefixes><Prefix>{escape(folder)}</Prefix></CommonPrefixes>"
                         for folder in folders)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{self.bucket}</Name><Prefix>{escape(prefix)}</Prefix>"
            f"<KeyCount>{len(shown) + len(folders)}</KeyCount><MaxKeys>{limit}</MaxKeys>"
            f"<IsTruncated>{'true' if len(keys) > limit else 'false'}</IsTruncated>"
            f"{contents}{common}</ListBucketResult>"
        )
        return Reply(body=body.encode(), content_type=_XML)
