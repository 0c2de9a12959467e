"""A batch stage: consume a topic in batches, handle, produce, then commit.

Data topics run at thousands of messages per second, where faust's per-event path
(about 210 us of CPU each) would cost more than the model itself. A stage fetches
whole batches with aiokafka, hands a batch to its handler, produces every output,
waits until the broker has them, and only then commits the offsets: at-least-once,
with every sink idempotent by image id. Bad records are the handler's business (it
returns dead-letter outputs). An exception that escapes the handler is retried: with
backoff for as long as it lasts when it is transient (the store or the network is
away), a few times otherwise. A batch that keeps failing is then handled one record at
a time, so the record that fails (a bug, or a value the database refuses) is
dead-lettered with its traceback and the rest go through.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass
from typing import Protocol, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord, TopicPartition
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from activestream.config import Settings
from activestream.errors import InvalidInput
from activestream.streams import metrics
from activestream.streams.health import HEALTH
from activestream.streams.messages import dead_letter

log = logging.getLogger(__name__)

TRIES = 3  # handling attempts before a failing batch is split, or a failing record dead-lettered
BACKOFF_MAX = 10.0


def transient(error: BaseException) -> bool:
    """Whether an error says the infrastructure is away (retry as long as it lasts) rather
    than that this input cannot be handled (retry a few times, then dead-letter it)."""
    if isinstance(error, DBAPIError):
        return isinstance(error, (OperationalError, InterfaceError)) or error.connection_invalidated
    return isinstance(error, (ConnectionError, TimeoutError, asyncio.TimeoutError, KafkaError))


def backoff(attempt: int) -> float:
    """Seconds before retry ``attempt`` (from 1): 0.5, 1, 2 ... up to 10.

    >>> [backoff(a) for a in (1, 2, 3, 10)]
    [0.5, 1.0, 2.0, 10.0]
    """
    return min(BACKOFF_MAX, 0.5 * 2 ** (attempt - 1))


@dataclass(frozen=True)
class Output:
    """One record to produce; ``partition`` None: the partition the key hashes to."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None


class Handler(Protocol):
    #: True when batches are independent (no state carried from one to the next): the
    #: stage then starts on batch k+1 while batch k is still being handled, produced and committed.
    pipelined: bool
    #: where a record goes that fails every time it is handled
    dead: "DeadLetters"

    async def handle(self, records: Sequence[ConsumerRecord]) -> list[Output]:
        """Turn a batch into outputs; bad records become dead-letter outputs. What escapes
        is retried (a batch may be handled again, whole or record by record)."""

    def committed(self) -> None:
        """Called once the batch's outputs are on the broker and its offsets committed."""


def make_consumer(settings: Settings, bootstrap: str, group: str | None, *topics: str, **kw) -> AIOKafkaConsumer:
    session_ms = int(settings.broker_session_timeout * 1000)
    return AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest",  # Tansu answers 'latest' wrongly; committed offsets carry restarts
        session_timeout_ms=session_ms, heartbeat_interval_ms=max(100, session_ms // 4),
        rebalance_timeout_ms=max(session_ms, 5000), max_partition_fetch_bytes=8 << 20,
        fetch_max_wait_ms=settings.batch_wait_ms, **kw,
    )


class Assignment(ConsumerRebalanceListener):
    """Logs and exposes which partitions of ``topics`` a stage's consumer holds: a scaled
    worker's share of the work is its share of the partitions, and one that holds none
    (more processes than partitions) idles."""

    def __init__(self, worker: str, topics: Sequence[str]):
        self.worker = worker
        self.topics = tuple(topics)

    async def on_partitions_revoked(self, revoked) -> None:
        pass  # the next assignment says what is held

    async def on_partitions_assigned(self, assigned) -> None:
        held = {topic: sorted(tp.partition for tp in assigned if tp.topic == topic) for topic in self.topics}
        for topic, partitions in held.items():
            metrics.ASSIGNED.labels(self.worker, topic).set(len(partitions))
        log.info("%s holds %s", self.worker, "; ".join(f"{topic} {partitions or 'none'}"
                                                      for topic, partitions in held.items()))


def make_producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks=1,
                            max_batch_size=1 << 20, max_request_size=16 << 20)


async def send_batches(producer: AIOKafkaProducer, topic: str, partition: int,
                       records: Sequence[tuple[bytes | None, bytes]]) -> list[asyncio.Future]:
    """Send ``(key, value)`` records to one partition in as few record batches as fit;
    return the futures of their delivery.

    Building batches costs a few microseconds a message where ``producer.send`` costs
    about twenty: that matters at thousands of messages a second.
    """
    futures, batch = [], producer.create_batch()
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:  # full
            batch.close()
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)  # a batch always takes its first record
    batch.close()
    futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


class DeadLetters:
    """Builds dead-letter outputs and counts them."""

    def __init__(self, topic: str, worker: str):
        self.topic = topic
        self.worker = worker

    def output(self, record: ConsumerRecord, error: InvalidInput) -> Output:
        metrics.DEAD.labels(self.worker, error.kind).inc()
        log.warning("dead-letter %s[%d]@%d: %s: %s", record.topic, record.partition, record.offset, error.kind, error)
        value = dead_letter(record.topic, record.partition, record.offset, record.key, record.value, error, self.worker)
        return Output(self.topic, record.key, value)


class BatchStage:
    """Runs one handler over one or more topics in a consumer group."""

    def __init__(self, worker: str, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, handler: Handler,
                 max_records: int = 256, wait_ms: int = 20, tries: int = TRIES):
        self.worker = worker
        self.consumer = consumer
        self.producer = producer
        self.handler = handler
        self.max_records = max_records
        self.wait_ms = wait_ms
        self.tries = tries
        self.partitioner = DefaultPartitioner()

    async def run(self, stop: asyncio.Event) -> None:
        # A pipelined handler gets the next batch while the previous one's outputs are
        # still being produced and its offsets committed: its thread then never waits
        # for the broker. Outputs are still produced and offsets committed strictly in
        # fetch order.
        depth = 2 if getattr(self.handler, "pipelined", False) else 1
        handling: deque[tuple[dict, asyncio.Future, float]] = deque()
        finishing: asyncio.Future | None = None
        try:
            while not stop.is_set():
                batches = await self.consumer.getmany(timeout_ms=self.wait_ms, max_records=self.max_records)
                if batches:
                    records = [r for part in batches.values() for r in part]
                    handling.append((batches, asyncio.ensure_future(self._handle(records, stop)),
                                     time.perf_counter()))
                while handling and (len(handling) >= depth or not batches or handling[0][1].done()):
                    fetched, task, started = handling.popleft()
                    outputs = await task
                    if finishing is not None:
                        await finishing  # commits stay in order
                        finishing = None
                    if outputs is None:  # a record in it fails every time: find it, let the rest through
                        await self._one_by_one(fetched, stop)
                        continue
                    finishing = asyncio.ensure_future(self._finish(fetched, outputs, started))
                    if depth == 1:
                        await finishing
        finally:
            for _, task, _ in handling:
                task.cancel()
            if finishing is not None and not finishing.done():
                await asyncio.shield(finishing)

    async def _handle(self, records: list[ConsumerRecord], stop: asyncio.Event) -> list[Output] | None:
        """The handler's outputs for ``records``; None when they failed ``tries`` times
        (a single record's failure then comes back as its dead-letter output)."""
        attempt = 0
        while True:
            try:
                outputs = await self.handler.handle(records)
                HEALTH.fine(self.worker)
                return outputs
            except Exception as e:  # noqa: BLE001 - whatever escapes, the worker must go on
                attempt += 1
                passing = transient(e)
                if passing:  # not ready while what it needs is away: an orchestrator routes around it
                    HEALTH.trouble(self.worker, f"{type(e).__name__}: {str(e)[:200]}")
                metrics.HANDLER_ERRORS.labels(self.worker, "transient" if passing else "error").inc()
                if not passing and attempt >= self.tries:
                    if len(records) > 1:
                        log.error("%s: a batch of %d failed %d times (%s); handling its records one by one",
                                  self.worker, len(records), attempt, e)
                        return None
                    return [self._dead(records[0], e)]
                log.warning("%s: handling %d record(s) failed (attempt %d, %s): %s; retrying in %.1f s",
                            self.worker, len(records), attempt, "transient" if passing else "error",
                            e, backoff(attempt), exc_info=not passing)
            await sleep_unless(stop, backoff(attempt))
            if stop.is_set():
                raise asyncio.CancelledError("stopping while a batch is being retried; it will be redelivered")

    def _dead(self, record: ConsumerRecord, error: Exception) -> Output:
        trace = "".join(traceback.format_exception(error, limit=-4))
        log.error("%s: dead-lettering %s[%d]@%d after %d failures:\n%s", self.worker, record.topic,
                  record.partition, record.offset, self.tries, trace)
        failure = InvalidInput("handler_error", f"{type(error).__name__}: {error}\n{trace[-600:]}")
        return self.handler.dead.output(record, failure)

    async def _one_by_one(self, batches: dict[TopicPartition, list[ConsumerRecord]], stop: asyncio.Event) -> None:
        for tp, part in batches.items():
            for record in part:
                started = time.perf_counter()
                outputs = await self._handle([record], stop)
                await self._finish({tp: [record]}, outputs, started)

    async def _finish(self, batches: dict[TopicPartition, list[ConsumerRecord]], outputs: list[Output],
                      started: float) -> None:
        records = sum(len(part) for part in batches.values())
        await self._produce(outputs)
        offsets = {tp: part[-1].offset + 1 for tp, part in batches.items()}
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as e:
            # A rebalance took the partitions away: the new owner redelivers the batch,
            # and every sink is idempotent by id.
            log.warning("commit after rebalance failed, batch will be redelivered: %s", e)
            return
        self.handler.committed()
        self._count(batches, records, time.perf_counter() - started)

    async def _produce(self, outputs: list[Output]) -> None:
        futures = []
        for (topic, partition), group in (await self._by_partition(outputs)).items():
            futures.extend(await send_batches(self.producer, topic, partition, [(o.key, o.value) for o in group]))
        if futures:
            await asyncio.gather(*futures)
        for topic, n in Counter(o.topic for o in outputs).items():
            metrics.PRODUCED.labels(self.worker, topic).inc(n)

    async def _by_partition(self, outputs: list[Output]) -> dict[tuple[str, int], list[Output]]:
        """Group outputs by partition: the one an output names if the topic has it, else the
        one ``producer.send`` would pick (murmur2 of the key, pure Python in aiokafka and
        about as costly per record as decoding an image)."""
        groups: dict[tuple[str, int], list[Output]] = {}
        partitions: dict[str, list[int]] = {}
        for o in outputs:
            if o.topic not in partitions:
                partitions[o.topic] = sorted(await self.producer.partitions_for(o.topic))
            every = partitions[o.topic]
            if o.partition is not None and o.partition < len(every):
                partition = o.partition
            else:
                partition = every[0] if len(every) == 1 else self.partitioner(o.key, every, every)
            groups.setdefault((o.topic, partition), []).append(o)
        return groups

    def _count(self, batches: dict, n: int, seconds: float) -> None:
        metrics.BATCH_SECONDS.labels(self.worker).observe(seconds)
        metrics.BATCH_SIZE.labels(self.worker).observe(n)
        for tp, part in batches.items():
            metrics.CONSUMED.labels(self.worker, tp.topic).inc(len(part))
            high = self.consumer.highwater(tp)
            if high is not None:
                metrics.LAG.labels(self.worker, tp.topic, str(tp.partition)).set(max(0, high - part[-1].offset - 1))


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
