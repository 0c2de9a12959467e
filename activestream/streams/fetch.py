"""The Kafka edge of images by reference: the workers' fetcher, the predictor's prefetch,
and ``kafka:topic/partition/offset`` references.

A prediction carries its image inline when small, else a reference anyone with the
same settings can resolve: the image's own ``file://``, ``s3://`` or ``http(s)://`` URI,
or, for an inline image over ``ACTIVESTREAM_INLINE_IMAGE_MAX``, ``kafka:`` and where the
image message lies. The selector resolves each pick's reference through the same
:class:`~activestream.storage.fetch.Fetcher` and copies the bytes into the (shared)
blob store, so ``label serve``, the Label Studio export and the learner only ever read blobs.
"""

from __future__ import annotations

import asyncio
import re
from typing import Sequence

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition

from activestream.config import Settings
from activestream.errors import InvalidInput
from activestream.storage.fetch import FetchPolicy, Fetcher
from activestream.streams.messages import ImageV1, parse

__all__ = ["KafkaImages", "fetcher_from", "kafka_ref", "prefetch", "fetched_bytes"]

_REF = re.compile(r"kafka:([A-Za-z0-9._-]{1,249})/(\d{1,6})/(\d{1,19})")
Key = tuple[str, int, int]


def kafka_ref(record: ConsumerRecord) -> str:
    """The reference to an image message: ``kafka:topic/partition/offset``."""
    return f"kafka:{record.topic}/{record.partition}/{record.offset}"


def fetcher_from(settings: Settings, bootstrap: str | None = None) -> Fetcher:
    """The fetcher the settings allow; with ``bootstrap`` it also resolves ``kafka:`` references."""
    policy = FetchPolicy.parse(settings.fetch_roots, settings.fetch_hosts, settings.fetch_buckets,
                               timeout=settings.fetch_timeout,
                               max_bytes=settings.max_image_bytes, concurrency=settings.fetch_concurrency)
    extra = {"kafka": KafkaImages(bootstrap, settings.topic_images)} if bootstrap else None
    return Fetcher(policy, extra=extra)


async def prefetch(fetcher: Fetcher, records: Sequence[ConsumerRecord],
                   max_value: int) -> dict[Key, bytes | InvalidInput]:
    """Fetch, concurrently, the image of every record sent by ``uri``; keyed by where the record lies.

    Only records that mention ``"uri"`` are parsed here (on the event loop, while the
    fetches themselves run in the fetcher's pool or as async I/O); the rest are left to
    the predictor's thread, and so are values over ``max_value`` bytes (dead-lettered there as
    too large). Raises what ``Fetcher.fetch_many`` raises for the infrastructure.
    """
    wanted: dict[Key, str] = {}
    for r in records:
        if r.value is None or len(r.value) > max_value or b'"uri"' not in r.value:
            continue
        try:
            msg = parse(ImageV1, r.value)
        except InvalidInput:
            continue  # dead-lettered with its reason when the thread parses it
        if msg.uri is not None:
            wanted[(r.topic, r.partition, r.offset)] = msg.uri
    if not wanted:
        return {}
    return dict(zip(wanted, await fetcher.fetch_many(list(wanted.values()))))


def fetched_bytes(fetched: dict[Key, bytes | InvalidInput], record: ConsumerRecord, msg: ImageV1) -> bytes:
    """The prefetched bytes of a ``uri`` image; the fetch's ``InvalidInput`` if it failed."""
    got = fetched.get((record.topic, record.partition, record.offset))
    if got is None:
        raise InvalidInput("unsupported_uri", f"{msg.uri}: not fetched; write the key \"uri\" without escapes")
    if isinstance(got, InvalidInput):
        raise got
    return got


class KafkaImages:
    """Resolves ``kafka:topic/partition/offset`` to the image bytes of that ``images`` message.

    One consumer without a group, made on first use, reads one record at a time (picks
    are a few per batch); only ``topic`` (the images topic) may be read.
    """

    def __init__(self, bootstrap: str, topic: str):
        self.bootstrap = bootstrap
        self.topic = topic
        self._consumer: AIOKafkaConsumer | None = None
        self._lock: asyncio.Lock | None = None

    async def __call__(self, uri: str) -> bytes:
        match = _REF.fullmatch(uri)
        if match is None or match.group(1) != self.topic:
            raise InvalidInput("unsupported_uri", f"{uri!r} is not kafka:{self.topic}/<partition>/<offset>")
        tp, offset = TopicPartition(self.topic, int(match.group(2))), int(match.group(3))
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            consumer = await self._start()
            consumer.assign([tp])
            consumer.seek(tp, offset)
            record = await consumer.getone(tp)
        if record.offset != offset:
            raise InvalidInput("image_not_found", f"{uri}: the broker no longer holds that record (retention)")
        msg = parse(ImageV1, record.value)
        if msg.image is None:
            raise InvalidInput("image_not_found", f"{uri} names an image sent by reference ({msg.uri})")
        return msg.image_bytes()

    async def _start(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                        auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20)
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
