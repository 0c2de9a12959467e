"""Blob store: immutable-ish bytes under validated keys, written atomically.

A blob lives at ``<root>/<xx>/<key>`` where ``xx`` is the first two hex digits of
``sha1(key)``, so no folder ever holds more than about 1/256 of all blobs. The root is
a local folder (the default) or an S3-compatible bucket (``s3://bucket/prefix``) that
many machines share; see :mod:`activestream.storage.objects`.
"""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from activestream.errors import InvalidInput, NotFound
from activestream.storage.objects import LocalObjects, Objects, atomic_write, open_objects

__all__ = ["BlobStore", "atomic_write", "validate_key"]

PUT_THREADS = 16  # puts in flight at once in put_many
_KEY = re.compile(r"[A-Za-z0-9._:-]{1,200}")


def validate_key(key: object, what: str = "blob key") -> str:
    """Return ``key`` if it is a safe file name, else raise ``InvalidInput("bad_key")``.

    A key is 1 to 200 characters from ``A-Z a-z 0-9 . _ : -`` and is not ``.`` or
    ``..``, so it can never escape its folder.

    >>> validate_key("img-000042.png")
    'img-000042.png'
    >>> validate_key("../etc/passwd")
    Traceback (most recent call last):
    ...
    activestream.errors.InvalidInput: blob key '../etc/passwd' is invalid: use 1 to 200 characters from A-Z a-z 0-9 . _ : - (and not '.' or '..')
    """
    if not isinstance(key, str) or not _KEY.fullmatch(key) or key in (".", ".."):
        raise InvalidInput(
            "bad_key",
            f"{what} {key!r} is invalid: use 1 to 200 characters from "
            "A-Z a-z 0-9 . _ : - (and not '.' or '..')",
        )
    return key


class BlobStore:
    """Bytes stored as files under ``root``, addressed by a validated key.

    ``put`` is atomic and idempotent (putting the same bytes again changes nothing);
    folders are created on first write, never in ``__init__``.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     blobs = BlobStore(d)
    ...     blobs.put("sample-1.png", b"\\x89PNG")
    ...     blobs.exists("sample-1.png"), blobs.get("sample-1.png")
    'sample-1.png'
    (True, b'\\x89PNG')
    """

    def __init__(self, root: "str | os.PathLike | Objects"):
        self.root = root
        self.objects = open_objects(root)
        self._pool: ThreadPoolExecutor | None = None  # for put_many, made on first use

    @staticmethod
    def _name(key: str) -> str:
        validate_key(key)
        return f"{hashlib.sha1(key.encode('ascii')).hexdigest()[:2]}/{key}"

    def path(self, key: str) -> Path:
        """Where the blob for ``key`` lives in a local folder (whether or not it exists)."""
        if not isinstance(self.objects, LocalObjects):
            raise TypeError(f"blobs in {self.objects.uri('')} are not local files; use get/put")
        return self.objects.path(self._name(key))

    def uri(self, key: str) -> str:
        """A URI naming the blob (``file://`` or ``s3://``)."""
        return self.objects.uri(self._name(key))

    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` atomically and return ``key``."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidInput(
                "bad_blob", f"blob {key!r} must be bytes, got {type(data).__name__}; encode it first"
            )
        self.objects.put(self._name(key), bytes(data))
        return key

    def put_many(self, items: list[tuple[str, bytes]]) -> list[InvalidInput | None]:
        """Put every ``(key, data)``, several at once; per item, ``None`` or the ``InvalidInput``
        that refused it. Any other failure (disk, network) is raised, as by ``put``.

        Each put waits on the disk's flush or on the network, not on the CPU, so a batch of
        picks written one after the other spends most of its time waiting in turn.
        """
        if len(items) < 2:
            return [self._put_or_refusal(key, data) for key, data in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PUT_THREADS, thread_name_prefix="blob-put")
        return list(self._pool.map(lambda item: self._put_or_refusal(*item), items))

    def _put_or_refusal(self, key: str, data: bytes) -> InvalidInput | None:
        try:
            self.put(key, data)
        except InvalidInput as e:
            return e
        return None

    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``; ``NotFound`` if there are none, ``IntegrityError``
        if they no longer match their sha256 (shared storage)."""
        try:
            return self.objects.get(self._name(key))
        except NotFound as e:
            raise NotFound(
                f"no blob with key {key!r} ({e}); check the key, "
                f"or that this BlobStore's root {str(self.root)!r} is the one it was put into"
            ) from (e.__cause__ or e)

    def exists(self, key: str) -> bool:
        """Whether a blob is stored under ``key``."""
        return self.objects.exists(self._name(key))
