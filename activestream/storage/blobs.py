"""Local blob store: immutable-ish bytes under validated keys, written atomically.

A blob lives at ``<root>/<xx>/<key>`` where ``xx`` is the first two hex digits of
``sha1(key)``, so no folder ever holds more than about 1/256 of all blobs.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from activestream.errors import InvalidInput, NotFound

__all__ = ["BlobStore", "atomic_write", "validate_key"]

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

    def __init__(self, root: str | os.PathLike):
        self.root = root

    def path(self, key: str) -> Path:
        """Where the blob for ``key`` lives (whether or not it exists)."""
        validate_key(key)
        shard = hashlib.sha1(key.encode("ascii")).hexdigest()[:2]
        return Path(self.root) / shard / key

    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` atomically and return ``key``."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidInput(
                "bad_blob", f"blob {key!r} must be bytes, got {type(data).__name__}; encode it first"
            )
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, bytes(data))
        return key

    def get(self, key: str) -> bytes:
        """The bytes stored under ``key``; ``NotFound`` if there are none."""
        path = self.path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError as e:
            raise NotFound(
                f"no blob with key {key!r} (looked for {path}); check the key, "
                f"or that this BlobStore's root {str(self.root)!r} is the one it was put into"
            ) from e

    def exists(self, key: str) -> bool:
        """Whether a blob is stored under ``key``."""
        return self.path(key).is_file()
