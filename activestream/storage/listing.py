"""The user's own images: list a folder or an S3 prefix, name each image, read its bytes.

A folder is walked recursively, in sorted order; an S3 prefix is listed as a folder
(``s3://bucket/photos`` holds the keys under ``photos/``). Images are the files ending in
``.jpg``, ``.jpeg``, ``.png`` or ``.webp`` (what the predictor decodes); other files are
counted and left out, and hidden ones (a name starting with ``.``, folders included)
are ignored. When no image lies directly at the root and at least two sub-folders hold
images, the listing is in torchvision's ``ImageFolder`` layout: the first sub-folder of
each image names its class, as ``activestream seed`` reads it.

>>> import pathlib, tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     for rel in ("cat/1.jpg", "dog/2.png", "dog/notes.txt", ".cache/3.jpg"):
...         p = pathlib.Path(d, rel); p.parent.mkdir(exist_ok=True); _ = p.write_bytes(b"x")
...     found = list_images(d)
...     [f.key for f in found.images], found.classes, found.not_images
(['cat/1.jpg', 'dog/2.png'], ('cat', 'dog'), 1)
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from activestream.errors import ConfigError, InvalidInput
from activestream.storage.fetch import file_path, read_s3

__all__ = ["IMAGE_SUFFIXES", "Found", "Listing", "image_id", "list_images", "read_image"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_KEEP = 100  # characters of an id before its hash; the message format allows 128


@dataclass(frozen=True)
class Found:
    """One image: where it is (``file:///...`` or ``s3://...``) and its path under the root."""

    uri: str
    key: str  # "/"-separated, relative to the listed root

    @property
    def folder(self) -> str | None:
        """The sub-folder of the root it lies in; None for an image at the root."""
        head, sep, _ = self.key.partition("/")
        return head if sep else None


@dataclass(frozen=True)
class Listing:
    """The images under a root, in sorted order, and how many other files were left out."""

    root: str
    images: tuple[Found, ...]
    not_images: int = 0

    @property
    def classes(self) -> tuple[str, ...] | None:
        """Class names (sorted sub-folder names) in ``ImageFolder`` layout; None otherwise."""
        folders = {f.folder for f in self.images}
        if None in folders or len(folders) < 2:
            return None
        return tuple(sorted(folders))


def image_id(prefix: str, key: str, repeat: int = 0) -> str:
    """A message id for the image at ``key``: readable, and distinct for distinct keys.

    Characters an id may not hold become ``_`` and folders ``:``; an id so altered, or
    too long, ends in a hash of the key. Pass ``repeat`` of a later pass over the same images.

    >>> image_id("photos", "cat/0001.jpg"), image_id("photos", "cat/0001.jpg", 2)
    ('photos:cat:0001.jpg', 'photos:cat:0001.jpg-r2')
    >>> image_id("photos", "my cat/é.jpg")
    'photos:my_cat:_.jpg-h673a47c736'
    """
    slug = ":".join(_UNSAFE.sub("_", part) for part in key.split("/"))
    text = f"{_UNSAFE.sub('_', prefix)}:{slug}" if prefix else slug
    if slug.replace(":", "/") != key or len(text) > _KEEP:
        text = f"{text[:_KEEP]}-h{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    return f"{text}-r{repeat}" if repeat else text


def list_images(where: str, s3_client=None) -> Listing:
    """The images in a folder or under ``s3://bucket/prefix`` (see the module's docstring)."""
    if where.startswith("s3://"):
        return _list_s3(where, s3_client)
    if "://" in where:
        raise ConfigError(f"{where!r}: images are streamed from a folder or s3://bucket/prefix")
    return _list_folder(where)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _list_folder(folder: str) -> Listing:
    root = os.path.abspath(folder)
    if not os.path.isdir(root):
        raise ConfigError(f"{folder} is not a folder; give the folder that holds your images")
    images, others = [], 0
    # Symlinked folders are not followed (a link back up would loop); symlinked files are listed.
    for parent, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            if not _is_image(name):
                others += 1
                continue
            path = os.path.join(parent, name)
            images.append(Found(Path(path).as_uri(), os.path.relpath(path, root).replace(os.sep, "/")))
    return Listing(root, tuple(images), others)


def _list_s3(url: str, client) -> Listing:
    from activestream.storage.s3 import make_client, s3_error, split_url

    bucket, prefix = split_url(url)
    prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    client = client or make_client()
    images, others = [], 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(prefix):]
                if not key or key.endswith("/") or any(p.startswith(".") for p in key.split("/")):
                    continue
                if not _is_image(key):
                    others += 1
                    continue
                images.append(Found(f"s3://{bucket}/{obj['Key']}", key))
    except Exception as e:
        raise s3_error(e, url) from e
    return Listing(url, tuple(sorted(images, key=lambda f: f.key)), others)


def read_image(found: Found, max_bytes: int, s3_client=None) -> bytes:
    """The bytes of ``found``; ``InvalidInput`` (``unreadable`` or ``too_large``) if they
    cannot be sent. ``s3_client`` (boto3) is needed for ``s3://``; raises
    ``StorageUnavailable`` if its endpoint is away."""
    if found.uri.startswith("s3://"):
        try:
            return read_s3(s3_client, found.uri, max_bytes)
        except InvalidInput as e:
            raise e if e.kind == "too_large" else InvalidInput("unreadable", str(e)) from e
    path = file_path(found.uri)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise InvalidInput("unreadable", f"{path}: {e.strerror}") from e
    if len(data) > max_bytes:
        raise InvalidInput("too_large", f"{path} holds over {max_bytes} bytes (ACTIVESTREAM_MAX_IMAGE_BYTES)")
    return data
