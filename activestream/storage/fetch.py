"""Images by reference: fetch the bytes a ``file://``, ``s3://`` or ``http(s)://`` URI names.

One :class:`Fetcher` serves the predictor (every image sent by ``uri``) and the selector
(the bytes of each pick, copied into the blob store). Each scheme is fenced in:

- ``file://`` only under the configured roots; the path is resolved (``..`` and every
  symlink) before it is compared, and the file actually opened is checked again, so
  neither traversal nor a symlink (or one swapped in meanwhile) escapes a root;
- ``s3://bucket/key`` on the S3-compatible store boto3 is configured for (``AWS_*``), only
  in allow-listed buckets (or bucket/prefix): the credentials may reach more than images,
  such as the bucket holding the blob store and the models;
- ``http(s)://`` only to allow-listed hosts, see :mod:`activestream.storage.fetch_http`.

Every fetch has a size cap and a time limit. Fetches run concurrently on the caller's
event loop, at most ``concurrency`` at once; blocking reads (files, boto3) run in a
thread pool of that size, so the loop (and a consumer's heartbeats) never waits on them.
A fetch that fails because of its image raises ``InvalidInput`` with one of
:data:`REASONS`, which workers dead-letter; ``StorageUnavailable`` (the S3 endpoint is
unreachable) is the infrastructure's failure, which workers retry.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import unquote, urlsplit

from activestream.errors import ConfigError, InvalidInput, NotFound

__all__ = ["FetchPolicy", "Fetcher", "REASONS", "read_under_roots"]

#: dead-letter reasons of a fetch that failed because of its image
REASONS = ("image_not_found", "outside_roots", "host_not_allowed", "bucket_not_allowed", "redirect_refused",
           "too_large", "fetch_timeout", "fetch_failed", "unsupported_uri")

Resolver = Callable[[str], Awaitable[bytes]]
_HOST = re.compile(r"([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?")


@dataclass(frozen=True)
class FetchPolicy:
    """What may be fetched: folders for ``file://``, buckets (or bucket/prefix) for ``s3://``,
    hosts for ``http(s)://``, and limits.

    >>> FetchPolicy.parse(roots="/data/a, /data/b", hosts="img.example.com", max_bytes=10).roots
    ('/data/a', '/data/b')
    """

    roots: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    buckets: tuple[str, ...] = ()
    timeout: float = 10.0
    max_bytes: int = 1 << 20
    concurrency: int = 16

    @classmethod
    def parse(cls, roots: str = "", hosts: str = "", buckets: str = "", **limits) -> "FetchPolicy":
        """From comma-separated settings (``ACTIVESTREAM_FETCH_ROOTS``, ``_HOSTS``, ``_BUCKETS``)."""
        split = lambda text: tuple(p.strip() for p in text.split(",") if p.strip())  # noqa: E731
        for root in split(roots):
            if not os.path.isabs(root):
                raise ConfigError(f"fetch root {root!r} is not an absolute path; fix ACTIVESTREAM_FETCH_ROOTS")
        for host in split(hosts):
            if not _HOST.fullmatch(host):
                raise ConfigError(f"fetch host {host!r} is not host or host:port (no scheme, no path); "
                                  "fix ACTIVESTREAM_FETCH_HOSTS")
        for bucket in split(buckets):
            if "://" in bucket or bucket.startswith("/"):
                raise ConfigError(f"fetch bucket {bucket!r} is not bucket or bucket/prefix (no s3://); "
                                  "fix ACTIVESTREAM_FETCH_BUCKETS")
        return cls(roots=split(roots), hosts=tuple(h.lower() for h in split(hosts)), buckets=split(buckets), **limits)

    def bucket_allowed(self, bucket: str, key: str) -> bool:
        """Whether ``s3://bucket/key`` lies in an allow-listed bucket or under a bucket/prefix.

        >>> FetchPolicy(buckets=("cams", "shared/images/")).bucket_allowed("shared", "images/a.jpg")
        True
        >>> FetchPolicy(buckets=("cams", "shared/images/")).bucket_allowed("shared", "models/1/weights")
        False
        """
        path = f"{bucket}/{key}"
        return any(bucket == b or (("/" in b) and path.startswith(b)) for b in self.buckets)


def _within(path: str, roots: tuple[str, ...]) -> bool:
    return any(os.path.commonpath([path, root]) == root for root in roots)


def file_path(uri: str) -> str:
    """The local path of a ``file://`` URI (``file:///abs/path`` or ``file://localhost/abs/path``).

    >>> file_path("file:///data/cam%207/1.png")
    '/data/cam 7/1.png'
    """
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise InvalidInput("unsupported_uri", f"{uri!r} is not file:///absolute/path (no host)")
    path = unquote(parts.path)
    if "\x00" in path:
        raise InvalidInput("unsupported_uri", f"{uri!r} holds a NUL byte")
    return path


def read_under_roots(uri: str, roots: tuple[str, ...], max_bytes: int) -> bytes:
    """The bytes of a ``file://`` URI, only if the file really lies under one of ``roots``.

    The path is resolved (``..``, symlinks) and compared with the resolved roots; the file
    is then opened without following a final symlink, and the path the kernel opened
    (``/proc/self/fd``) is checked again, so a symlink swapped in between is refused too.
    """
    path = file_path(uri)
    real_roots = tuple(os.path.realpath(r) for r in roots)
    if not real_roots:
        raise InvalidInput("outside_roots", f"{uri}: no folder is open to file:// URIs; list the image folders "
                                            "in ACTIVESTREAM_FETCH_ROOTS")
    real = os.path.realpath(path)
    if not _within(real, real_roots):
        raise InvalidInput("outside_roots", f"{uri} resolves to {real}, outside the fetch roots "
                                            f"({', '.join(roots)}); move it under one or add its folder to "
                                            "ACTIVESTREAM_FETCH_ROOTS")
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer, holding a fetch thread for good
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError as e:
        raise InvalidInput("image_not_found", f"{uri}: no such file") from e
    except OSError as e:  # a symlink swapped in (ELOOP), no permission ...
        raise InvalidInput("fetch_failed", f"{uri}: cannot open {real} ({e.strerror})") from e
    try:
        opened = _opened_path(fd)
        if opened is not None and not _within(opened, real_roots):
            raise InvalidInput("outside_roots", f"{uri}: the file opened ({opened}) is outside the fetch roots")
        return _read_regular(fd, uri, max_bytes)
    finally:
        os.close(fd)


def _read_regular(fd: int, uri: str, max_bytes: int) -> bytes:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInput("image_not_found", f"{uri} is not a regular file")
    if info.st_size > max_bytes:
        raise InvalidInput("too_large", f"{uri} holds {info.st_size} bytes, over the limit of {max_bytes} "
                                        "(ACTIVESTREAM_MAX_IMAGE_BYTES)")
    chunks, size = [], 0
    while size <= max_bytes:
        chunk = os.read(fd, max_bytes + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    raise InvalidInput("too_large", f"{uri} holds over {max_bytes} bytes (ACTIVESTREAM_MAX_IMAGE_BYTES)")


def _opened_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc (not Linux): the resolved path was checked before opening
        return None


def read_s3(client, uri: str, max_bytes: int) -> bytes:
    """The bytes of ``s3://bucket/key`` through a boto3 client, refused over ``max_bytes``."""
    from activestream.storage.s3 import s3_error, split_url

    bucket, key = split_url(uri)
    if not key:
        raise InvalidInput("unsupported_uri", f"{uri!r} names a bucket but no key; write s3://bucket/key")
    try:
        reply = client.get_object(Bucket=bucket, Key=key)
        body = reply["Body"]
        if reply.get("ContentLength", 0) > max_bytes:
            body.close()
            raise InvalidInput("too_large", f"{uri} holds {reply['ContentLength']} bytes, over the limit of "
                                            f"{max_bytes} (ACTIVESTREAM_MAX_IMAGE_BYTES)")
        data = body.read(max_bytes + 1)
    except InvalidInput:
        raise
    except Exception as e:
        error = s3_error(e, uri)
        if isinstance(error, NotFound):
            raise InvalidInput("image_not_found", f"{uri}: no such key in bucket {bucket!r}") from e
        if isinstance(error, ConfigError):
            raise InvalidInput("fetch_failed", str(error)) from e
        raise error from e
    if len(data) > max_bytes:
        raise InvalidInput("too_large", f"{uri} holds over {max_bytes} bytes (ACTIVESTREAM_MAX_IMAGE_BYTES)")
    return data


class Fetcher:
    """Fetches images by URI, concurrently and bounded (see the module's docstring).

    ``extra`` maps more schemes to async resolvers (the Kafka edge adds ``kafka:``).
    Clients are made on first use; ``close`` releases them.

    >>> import asyncio, pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = pathlib.Path(d, "a.png").write_bytes(b"png")
    ...     f = Fetcher(FetchPolicy(roots=(d,)))
    ...     ok, bad = asyncio.run(f.fetch_many([f"file://{d}/a.png", "file:///etc/passwd"]))
    ...     ok, bad.kind
    (b'png', 'outside_roots')
    """

    def __init__(self, policy: FetchPolicy, s3_client=None, extra: dict[str, Resolver] | None = None):
        self.policy = policy
        self.s3_client = s3_client
        self.extra = dict(extra or {})
        self._pool: ThreadPoolExecutor | None = None
        self._http = None
        self._limit: asyncio.Semaphore | None = None

    async def fetch_many(self, uris: list[str]) -> list[bytes | InvalidInput]:
        """Bytes, or the ``InvalidInput`` saying why not, for each URI in order; at most
        ``concurrency`` at once. Raises ``StorageUnavailable`` if the S3 endpoint is away."""
        results = await asyncio.gather(*(self._bounded(u) for u in uris), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, InvalidInput):
                raise r
        return results

    async def _bounded(self, uri: str) -> bytes:
        if self._limit is None:
            self._limit = asyncio.Semaphore(self.policy.concurrency)
        async with self._limit:
            return await self.fetch(uri)

    async def fetch(self, uri: str) -> bytes:
        """The bytes ``uri`` names, within the time limit; ``InvalidInput`` with the reason if not."""
        try:
            return await asyncio.wait_for(self._dispatch(uri), self.policy.timeout)
        except TimeoutError as e:  # asyncio.TimeoutError is TimeoutError from Python 3.11
            raise InvalidInput("fetch_timeout", f"{uri}: no answer within {self.policy.timeout:g} s "
                                                "(ACTIVESTREAM_FETCH_TIMEOUT)") from e

    def _dispatch(self, uri: str) -> Awaitable[bytes]:
        scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
        limit = self.policy.max_bytes
        if scheme == "file":
            return self._blocking(read_under_roots, uri, self.policy.roots, limit)
        if scheme == "s3":
            if self.s3_client is None:
                from activestream.storage.s3 import make_client

                self.s3_client = make_client(self.policy.timeout, pool=self.policy.concurrency)
            return self._blocking(self._read_s3, uri, limit)
        if scheme in ("http", "https"):
            return self._get_http(uri)
        if scheme in self.extra:
            return self.extra[scheme](uri)
        return _refuse(InvalidInput("unsupported_uri", f"{uri!r}: images are fetched from file://, s3:// or "
                                                       "http(s):// URIs only"))

    def _read_s3(self, uri: str, limit: int) -> bytes:
        from activestream.storage.s3 import split_url

        bucket, key = split_url(uri)
        if not self.policy.bucket_allowed(bucket, key):
            raise InvalidInput("bucket_not_allowed", f"{uri}: bucket {bucket!r} is not allow-listed; add it (or "
                                                     "bucket/prefix) to ACTIVESTREAM_FETCH_BUCKETS if images may "
                                                     "come from it")
        return read_s3(self.s3_client, uri, limit)

    async def _blocking(self, fn, *args) -> bytes:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.policy.concurrency, thread_name_prefix="fetch")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _get_http(self, uri: str) -> bytes:
        from activestream.storage.fetch_http import HttpFetcher

        if self._http is None:
            self._http = HttpFetcher(self.policy.hosts, self.policy.timeout, self.policy.max_bytes)
        return await self._http.get(uri)

    async def close(self) -> None:
        """Release the clients made so far (HTTP connections, the extra resolvers', the pool)."""
        if self._http is not None:
            await self._http.close()
        for resolver in self.extra.values():
            if hasattr(resolver, "close"):
                await resolver.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)


async def _refuse(error: Exception) -> bytes:
    raise error
