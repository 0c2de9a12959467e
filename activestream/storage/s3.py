"""Objects in an S3-compatible bucket, through boto3.

Endpoint, credentials and region come from where boto3 reads them (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, profiles ...),
so any S3-compatible store works (AWS, MinIO, Ceph, moto). Every object is written with
its sha256 in its metadata and checked against it when read: bytes replaced behind
activestream's back are refused, whatever they hold.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from activestream.errors import ConfigError, IntegrityError, NotFound, StorageUnavailable

__all__ = ["S3Objects", "make_client", "split_url", "s3_error"]

CLAIM = ".claim"
_MISSING = {"NoSuchKey", "404", "NotFound"}
_REFUSED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket"}


def make_client(timeout: float = 10.0, pool: int = 32):
    """A thread-safe boto3 S3 client with bounded timeouts and retries (no network yet)."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=timeout, read_timeout=timeout, max_pool_connections=pool,
                    retries={"max_attempts": 3, "mode": "standard"})
    return boto3.session.Session().client("s3", config=config)


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``.

    >>> split_url("s3://images/cam7/0001.jpg")
    ('images', 'cam7/0001.jpg')
    """
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(f"{url!r} is not an S3 URL; write s3://bucket/key")
    return parts.netloc, parts.path.lstrip("/")


def s3_error(error: Exception, where: str) -> Exception:
    """An activestream error for a boto3 failure at ``where``: NotFound for a missing key,
    ConfigError for a bucket or credentials problem, StorageUnavailable when unreachable."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            return NotFound(f"no object at {where}; check the key")
        if code in _REFUSED:
            return ConfigError(f"S3 refused {where} ({code}): check that the bucket exists and that "
                               "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY may read and write it")
        if code.startswith("5") or code in {"SlowDown", "ServiceUnavailable", "InternalError"}:
            return StorageUnavailable(f"S3 failed on {where} ({code}); retrying")
        return ConfigError(f"S3 refused {where} ({code}: {error})")
    if isinstance(error, NoCredentialsError):
        return ConfigError(f"no S3 credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(error, BotoCoreError):
        return StorageUnavailable(f"S3 endpoint unreachable for {where} ({error}); check AWS_ENDPOINT_URL")
    return error


class S3Objects:
    """Objects under ``prefix`` in ``bucket``; ``client`` is a boto3 S3 client (one is made
    on first use when None: no network in ``__init__``)."""

    def __init__(self, bucket: str, prefix: str = "", client=None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client

    @classmethod
    def from_url(cls, url: str, client=None) -> "S3Objects":
        bucket, prefix = split_url(url)
        return cls(bucket, prefix, client)

    @property
    def client_(self):
        if self.client is None:
            self.client = make_client()
        return self.client

    def check(self) -> None:
        """Raise ConfigError unless the bucket exists and the credentials reach it (one request)."""
        try:
            self.client_.head_bucket(Bucket=self.bucket)
        except Exception as e:
            error = s3_error(e, f"s3://{self.bucket}")
            if isinstance(error, NotFound):
                error = ConfigError(f"bucket {self.bucket!r} does not exist at this endpoint; create it, or fix "
                                    "ACTIVESTREAM_STORAGE_URL or AWS_ENDPOINT_URL")
            raise error from e

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _call(self, method: str, key: str, **kwargs):
        try:
            return getattr(self.client_, method)(Bucket=self.bucket, Key=self._key(key), **kwargs)
        except Exception as e:
            raise s3_error(e, self.uri(key)) from e

    def get(self, key: str) -> bytes:
        reply = self._call("get_object", key)
        data = reply["Body"].read()
        recorded = reply.get("Metadata", {}).get("sha256")
        if recorded is None:
            raise IntegrityError(f"{self.uri(key)} has no sha256 in its metadata: it was not written by "
                                 "activestream; store it again through activestream")
        actual = hashlib.sha256(data).hexdigest()
        if not hmac.compare_digest(recorded.encode(), actual.encode()):
            raise IntegrityError(f"{self.uri(key)} does not match its sha256 ({recorded}, got {actual}): "
                                 "it was replaced or corrupted; store it again or restore it")
        return data

    def put(self, key: str, data: bytes) -> None:
        data = bytes(data)
        self._call("put_object", key, Body=data, Metadata={"sha256": hashlib.sha256(data).hexdigest()})

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", key)
            return True
        except NotFound:
            return False

    def children(self, prefix: str) -> list[str]:
        base = self._key(prefix).rstrip("/") + "/"
        names: list[str] = []
        pages = self.client_.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base, Delimiter="/")
        try:
            for page in pages:
                names += [p["Prefix"][len(base):].rstrip("/") for p in page.get("CommonPrefixes", [])]
                names += [o["Key"][len(base):] for o in page.get("Contents", [])]
        except Exception as e:
            raise s3_error(e, f"s3://{self.bucket}/{base}") from e
        return names

    def tags(self, prefix: str) -> dict[str, str]:
        base = self._key(prefix).rstrip("/") + "/"
        found: dict[str, str] = {}
        try:
            for page in self.client_.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                found.update({o["Key"][len(base):]: o["ETag"] for o in page.get("Contents", [])})
        except Exception as e:
            raise s3_error(e, f"s3://{self.bucket}/{base}") from e
        return found

    def claim(self, prefix: str) -> bool:
        from botocore.exceptions import ClientError

        key = f"{prefix.rstrip('/')}/{CLAIM}"
        try:  # a conditional put (If-None-Match: *) succeeds for exactly one writer
            self.client_.put_object(Bucket=self.bucket, Key=self._key(key), Body=b"", IfNoneMatch="*")
            return True
        except ClientError as e:
            if str(e.response.get("Error", {}).get("Code")) in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                return False
            raise s3_error(e, self.uri(key)) from e
        except Exception as e:
            raise s3_error(e, self.uri(key)) from e
