"""Streams of the user's own images: a folder or an S3 prefix into ``images``.

``activestream source WHERE`` (:mod:`activestream.streams.source_cli`) sends them beside
a running loop; ``activestream run --images-from WHERE`` sends them instead of the demo
dataset. Each image gets an id from
its path (:func:`~activestream.storage.listing.image_id`) and is sent once a pass.

- By value the image's bytes ride in the message. A file the source cannot read, or one
  over ``ACTIVESTREAM_MAX_IMAGE_BYTES``, is skipped and counted: there are no bytes to send,
  or none the predictor would take.
- By reference the message carries the image's ``file://`` or ``s3://`` URI and the
  predictor fetches it; one it cannot fetch is dead-lettered with the fetch's reason
  (``image_not_found``, ``fetch_failed``, ``too_large`` ...). The predictors and selectors
  must be allowed to fetch it: a folder under their ``ACTIVESTREAM_FETCH_ROOTS``, a prefix
  in their ``ACTIVESTREAM_FETCH_BUCKETS``.
- Either way a file named like an image that does not decode as one is sent, and the
  predictor dead-letters it as ``corrupt_image``: the predictor is the one judge of what an
  image is. Files with other suffixes are skipped and counted (``not_image``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable, Literal, Sequence

from activestream.config import Settings
from activestream.errors import ConfigError, InvalidInput
from activestream.simulation.traffic import StreamItem
from activestream.storage.fetch import FetchPolicy
from activestream.storage.listing import Found, Listing, image_id, list_images, read_image
from activestream.streams.demo import stream_images

__all__ = ["Opened", "Source", "answers_for", "check_reference", "describe", "open_source", "stream_source",
           "with_fetch_root"]

log = logging.getLogger(__name__)
READ_AHEAD = 16  # images read at once by value (threads): S3 round trips overlap


@dataclass(frozen=True)
class Source:
    """What to stream and how: a folder or ``s3://bucket/prefix``, by value or by reference,
    ``repeat`` passes (0: until stopped), ids starting with ``prefix`` (default: the
    folder's or the prefix's last name)."""

    where: str
    by: Literal["value", "reference"] = "value"
    prefix: str | None = None
    repeat: int = 1

    @property
    def remote(self) -> bool:
        return self.where.startswith("s3://")

    @property
    def id_prefix(self) -> str:
        if self.prefix is not None:
            return self.prefix
        path = self.where.rstrip("/") if self.remote else os.path.abspath(self.where)
        return path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Opened:
    """A listed source, the known answer of each image's folder (None: people label), and
    the S3 client that lists and reads it."""

    source: Source
    listing: Listing
    answers: dict[str, int] | None
    s3_client: object = None


def answers_for(listing: Listing, classes: Sequence[str] | None) -> dict[str, int] | None:
    """The model's class index of each sub-folder, when the listing is in ImageFolder layout and
    every sub-folder names one of ``classes``; None otherwise.

    >>> listing = Listing("p", (Found("file:///p/dog/1.jpg", "dog/1.jpg"), Found("file:///p/cat/2.jpg", "cat/2.jpg")))
    >>> answers_for(listing, ["cat", "dog", "bird"]), answers_for(listing, ["cat", "bird"])
    ({'cat': 0, 'dog': 1}, None)
    """
    if listing.classes is None or not classes:
        return None
    unknown = set(listing.classes) - set(classes)
    if unknown:
        log.warning("sub-folders %s of %s are not classes of the model (%s): only people label these images",
                    ", ".join(sorted(unknown)), listing.root, ", ".join(classes))
        return None
    return {name: list(classes).index(name) for name in listing.classes}


def check_reference(source: Source, settings: Settings) -> None:
    """Refuse a source sent by reference that the predictors may not fetch: a folder outside
    ``ACTIVESTREAM_FETCH_ROOTS``, a prefix outside ``ACTIVESTREAM_FETCH_BUCKETS``."""
    if source.by != "reference":
        return
    if source.remote:
        from activestream.storage.s3 import split_url

        policy = FetchPolicy.parse(buckets=settings.fetch_buckets)
        bucket, prefix = split_url(source.where)
        probe = (prefix if not prefix or prefix.endswith("/") else prefix + "/") + "x.jpg"
        if not policy.bucket_allowed(bucket, probe):
            raise ConfigError(f"--by reference sends s3:// URIs, which predictors fetch only from "
                              f"ACTIVESTREAM_FETCH_BUCKETS (now {settings.fetch_buckets or 'empty'}); add {bucket} (or "
                              f"{bucket}/{prefix}) to it for every predictor and selector, or send the images --by value")
        return
    roots = [os.path.realpath(r) for r in FetchPolicy.parse(roots=settings.fetch_roots).roots]
    folder = os.path.realpath(source.where)
    if not any(os.path.commonpath([folder, root]) == root for root in roots):
        raise ConfigError(f"--by reference sends file:// URIs, which predictors read only under "
                          f"ACTIVESTREAM_FETCH_ROOTS (now {settings.fetch_roots or 'empty'}); add {folder} to it for "
                          "every predictor and selector, or send the images --by value")


def with_fetch_root(settings: Settings, source: Source) -> Settings:
    """``settings`` whose fetch roots (or buckets) include a source sent by reference (``run``
    starts the workers, so it opens the source to them)."""
    if source.by != "reference":
        return settings
    if source.remote:
        bucket, prefix = source.where.removeprefix("s3://").partition("/")[::2]
        allowed = f"{bucket}/{prefix.rstrip('/')}/" if prefix.strip("/") else bucket
        field, value = "fetch_buckets", allowed
    else:
        field, value = "fetch_roots", os.path.realpath(source.where)
    listed = [v for v in getattr(settings, field).split(",") if v.strip()]
    return settings.model_copy(update={field: ",".join(listed + [value])})


def open_source(source: Source, classes: Sequence[str] | None = None) -> Opened:
    """List the source (blocking: S3 calls); ConfigError if it holds no image."""
    client = None
    if source.remote:
        from activestream.storage.s3 import make_client

        client = make_client(pool=READ_AHEAD)
    listing = list_images(source.where, client)
    if not listing.images:
        raise ConfigError(f"no images under {source.where}: activestream streams .jpg, .jpeg, .png and .webp "
                          f"files ({listing.not_images} other file(s) found)")
    return Opened(source, listing, answers_for(listing, classes), client)


async def _read(found: Found, max_bytes: int, client, skipped: Counter) -> bytes | None:
    try:
        return await asyncio.to_thread(read_image, found, max_bytes, client)
    except InvalidInput as e:
        log.warning("skipping %s: %s", found.uri, e)
        skipped[e.kind] += 1
        return None


async def source_items(opened: Opened, max_bytes: int, skipped: Counter) -> AsyncIterator[StreamItem]:
    """The stream items of every pass over the source; skipped files counted in ``skipped``."""
    source, images = opened.source, opened.listing.images
    passes = itertools.count() if source.repeat == 0 else range(source.repeat)
    for rep in passes:
        for start in range(0, len(images), READ_AHEAD):
            chunk = images[start:start + READ_AHEAD]
            if source.by == "value":
                data = await asyncio.gather(*(_read(f, max_bytes, opened.s3_client, skipped) for f in chunk))
            else:
                data = [None] * len(chunk)
            for found, raw in zip(chunk, data):
                if source.by == "value" and raw is None:
                    continue
                truth = opened.answers.get(found.folder) if opened.answers else None
                yield StreamItem(image_id(source.id_prefix, found.key, rep), raw, truth,
                                 None if source.by == "value" else found.uri)


async def stream_source(producer, settings: Settings, opened: Opened, rate: float, truth: dict[str, int] | None = None,
                        produced: list[str] | None = None,
                        hold: Callable[[], Awaitable[bool]] | None = None) -> tuple[int, Counter]:
    """Send every image of ``opened`` to ``images``; the count sent and the files skipped, by reason."""
    skipped = Counter({"not_image": opened.listing.not_images} if opened.listing.not_images else {})
    items = source_items(opened, settings.max_image_bytes, skipped)
    sent = await stream_images(producer, settings.topic_images, items, rate, {} if truth is None else truth,
                               produced, hold, source=opened.source.where)
    return sent, skipped


def describe(skipped: Counter) -> str:
    """``skipped 2 (not_image 1, unreadable 1)`` or ``nothing skipped``."""
    if not skipped:
        return "nothing skipped"
    return f"skipped {sum(skipped.values())} ({', '.join(f'{k} {n}' for k, n in sorted(skipped.items()))})"
