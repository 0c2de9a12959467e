"""Where stored files live: a local folder (the default) or an S3-compatible bucket.

The blob store and the model registry keep their files through one small interface,
:class:`Objects`, addressed by ``/``-separated keys relative to a root. Two real
implementations: :class:`LocalObjects` (files under a folder, written atomically) and
:class:`~activestream.storage.s3.S3Objects` (objects under a bucket prefix, for storage
that many machines share). :func:`open_objects` picks one from a path or URL.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     objs = open_objects(d)
...     objs.put("a/b/x.bin", b"1")
...     objs.claim("a/c"), objs.claim("a/c")  # the second claim finds it taken
...     objs.get("a/b/x.bin"), sorted(objs.children("a")), objs.exists("a/b/y.bin"), list(objs.tags("a"))
(True, False)
(b'1', ['b', 'c'], False, ['b/x.bin'])
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

from activestream.errors import ConfigError, NotFound

__all__ = ["LocalObjects", "Objects", "atomic_write", "open_objects"]


@runtime_checkable
class Objects(Protocol):
    """Bytes under ``/``-separated keys. Writes are atomic: a reader sees the old bytes or
    all of the new ones. Keys are checked by the caller (see ``validate_key``)."""

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; ``NotFound`` if there are none."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing what was there."""

    def exists(self, key: str) -> bool:
        """Whether something is stored under ``key``."""

    def children(self, prefix: str) -> list[str]:
        """Names of the immediate children (files and folders) under ``prefix``; [] if none."""

    def tags(self, prefix: str) -> dict[str, str]:
        """Every object under ``prefix`` (keys relative to it, at any depth) with a tag that
        changes whenever its bytes do; {} if none."""

    def claim(self, prefix: str) -> bool:
        """Atomically take ``prefix`` for the caller: True once, False to everyone after."""

    def uri(self, key: str) -> str:
        """A URI naming ``key`` for people and other machines (``file://`` or ``s3://``)."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old file or the whole new one.

    The bytes go to a temporary file in the same folder, are flushed to disk, and
    the temporary file is renamed over ``path`` with ``os.replace``.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class LocalObjects:
    """Files under ``root``; folders are created on first write, never in ``__init__``."""

    def __init__(self, root: str | os.PathLike):
        self.root = root

    def path(self, key: str) -> Path:
        return Path(self.root) / key

    def get(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
            raise NotFound(f"nothing stored at {path}; check the key, or that {str(self.root)!r} "
                           "is the folder it was stored in") from e

    def put(self, key: str, data: bytes) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, bytes(data))

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def children(self, prefix: str) -> list[str]:
        folder = self.path(prefix)
        return [p.name for p in folder.iterdir()] if folder.is_dir() else []

    def tags(self, prefix: str) -> dict[str, str]:
        folder, found = self.path(prefix), {}
        for parent, _, files in os.walk(folder):
            for name in files:
                try:
                    info = os.stat(os.path.join(parent, name))
                except FileNotFoundError:
                    continue  # replaced or removed while listed
                rel = os.path.relpath(os.path.join(parent, name), folder).replace(os.sep, "/")
                found[rel] = f"{info.st_mtime_ns}:{info.st_size}:{info.st_ino}"
        return found

    def claim(self, prefix: str) -> bool:
        path = self.path(prefix)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()  # atomic: exactly one caller creates it
            return True
        except FileExistsError:
            return False

    def uri(self, key: str) -> str:
        return self.path(key).resolve().as_uri()


def open_objects(where: "str | os.PathLike | Objects", client=None) -> "Objects":
    """The objects at ``where``: an :class:`Objects` as it is, ``s3://bucket[/prefix]`` in a
    bucket (endpoint and credentials as boto3 reads them: ``AWS_ENDPOINT_URL``,
    ``AWS_ACCESS_KEY_ID`` ...), ``file:///path`` or a plain path in a local folder."""
    if isinstance(where, Objects) and not isinstance(where, (str, os.PathLike)):
        return where
    text = os.fspath(where)
    if text.startswith("s3://"):
        from activestream.storage.s3 import S3Objects

        return S3Objects.from_url(text, client=client)
    if text.startswith("file://"):
        return LocalObjects(text[len("file://"):])
    if "://" in text:
        raise ConfigError(f"storage location {text!r} is neither a folder nor s3://bucket/prefix; "
                          "use one of those (ACTIVESTREAM_STORAGE_URL)")
    return LocalObjects(text)
