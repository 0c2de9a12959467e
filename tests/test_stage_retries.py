"""What escapes a handler is retried, never fatal: a transient failure until it passes,
a record that fails every time dead-lettered with its traceback, the rest let through.

Runs a real batch stage on the embedded broker."""

from __future__ import annotations

import asyncio
import pytest
from aiokafka.structs import TopicPartition
from sqlalchemy.exc import OperationalError

from activestream.streams.messages import DeadLetterV1, parse
from activestream.streams.stage import BatchStage, DeadLetters, Output, make_consumer, make_producer, transient
from activestream.streams.topics import ensure_topics
from tests.conftest import make_settings, run_async

pytestmark = pytest.mark.kafka


class Flaky:
    """Echoes each record to ``out``; the store is away for the first ``outages`` calls,
    and the record whose value is ``b"bug"`` raises every time."""

    pipelined = False

    def __init__(self, outages: int, deadletter: str):
        self.outages = outages
        self.dead = DeadLetters(deadletter, "flaky")
        self.calls = 0
        self.committed_batches = 0

    async def handle(self, records):
        self.calls += 1
        if self.calls <= self.outages:
            raise OperationalError("INSERT ...", {}, ConnectionRefusedError("connection refused"))
        if any(r.value == b"bug" for r in records):
            raise ValueError("a bug that only this record triggers")
        return [Output("out", r.key, r.value) for r in records]

    def committed(self) -> None:
        self.committed_batches += 1


async def _consume_all(settings, topic: str, n: int) -> list:
    consumer = make_consumer(settings, settings.bootstrap, None, topic)
    await consumer.start()
    got = []
    try:
        while len(got) < n:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=200), 60)
            got += [r for part in batch.values() for r in part]
        return got
    finally:
        await consumer.stop()


async def _run(settings) -> tuple[Flaky, list, list]:
    ensure_topics(settings, settings.bootstrap)
    producer = make_producer(settings.bootstrap)
    await producer.start()
    values = [f"ok-{i}".encode() for i in range(30)]
    values.insert(17, b"bug")
    for i, v in enumerate(values):
        await producer.send_and_wait("in", v, key=str(i).encode(), partition=0)
    handler = Flaky(outages=4, deadletter=settings.topic_deadletter)  # more outages than TRIES: transient is not counted
    group = settings.group("flaky")
    consumer = make_consumer(settings, settings.bootstrap, group, "in")
    await consumer.start()
    stop = asyncio.Event()
    stage = BatchStage("flaky", consumer, producer, handler, max_records=10, wait_ms=50)
    task = asyncio.ensure_future(stage.run(stop))
    try:
        out = await _consume_all(settings, "out", 30)
        dead = await _consume_all(settings, settings.topic_deadletter, 1)
        # everything was consumed and committed, the poison record included
        while await consumer.committed(TopicPartition("in", 0)) != len(values):
            assert not task.done(), "the stage stopped"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await consumer.stop()
        await producer.stop()
    return handler, out, dead


def test_a_failing_record_is_dead_lettered_with_its_traceback_and_the_rest_go_through(tmp_path, broker):
    settings = make_settings(tmp_path, bootstrap=broker.bootstrap, topic_images="in", topic_predictions="out")
    handler, out, dead = run_async(_run(settings), timeout=300)
    assert sorted(r.value for r in out) == sorted(f"ok-{i}".encode() for i in range(30))
    letter = parse(DeadLetterV1, dead[0].value)
    assert (letter.topic, letter.offset, letter.error_kind, letter.worker) == ("in", 17, "handler_error", "flaky")
    assert "ValueError" in letter.error and "only this record" in letter.error and "Traceback" in letter.error
    assert len(dead) == 1


def test_transient_and_other_errors_are_told_apart():
    assert transient(OperationalError("SELECT 1", {}, ConnectionRefusedError()))
    assert transient(ConnectionResetError()) and transient(asyncio.TimeoutError())
    assert not transient(ValueError("bug")) and not transient(KeyError("x"))
