"""Which partitions a stage holds is logged and exposed: a scaled worker's share of the
work is its share of the partitions."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import REGISTRY

from activestream.streams.stage import Assignment, make_consumer
from activestream.streams.topics import ensure_topics
from tests.conftest import make_settings, run_async


def held(worker: str, topic: str) -> float | None:
    return REGISTRY.get_sample_value("activestream_assigned_partitions", {"worker": worker, "topic": topic})


@pytest.mark.kafka
def test_two_consumers_of_a_group_each_hold_half_the_partitions_and_say_so(tmp_path, broker, caplog):
    settings = make_settings(tmp_path, bootstrap=broker.start(), partitions=4, broker_session_timeout=2)
    ensure_topics(settings, settings.bootstrap)
    topic, group = settings.topic_images, settings.group("predictor")

    def settled(consumers, listeners) -> bool:
        return (all(len(c.assignment()) == 2 for c in consumers)
                and [held(listener.worker, topic) for listener in listeners] == [2, 2])

    async def main() -> list[list[int]]:
        listeners = [Assignment(f"assign-{k}", [topic]) for k in (1, 2)]
        consumers = [make_consumer(settings, settings.bootstrap, group) for _ in listeners]
        for consumer, listener in zip(consumers, listeners):
            consumer.subscribe([topic], listener=listener)
            await consumer.start()
        try:
            # both poll until the group has settled on a split of all four partitions (however
            # long the joins take on a busy machine: only run_async's timeout bounds it)
            while not settled(consumers, listeners):
                await asyncio.gather(*(c.getmany(timeout_ms=50) for c in consumers))
            return [sorted(tp.partition for tp in c.assignment()) for c in consumers]
        finally:
            for consumer in consumers:
                await consumer.stop()

    with caplog.at_level(logging.INFO, logger="activestream.streams.stage"):
        split = run_async(main(), timeout=300)
    assert sorted(split[0] + split[1]) == [0, 1, 2, 3] and len(split[0]) == 2
    assert [held(f"assign-{k}", topic) for k in (1, 2)] == [2, 2]
    for k, partitions in zip((1, 2), split):
        assert f"assign-{k} holds {topic} {partitions}" in caplog.text


def test_an_empty_assignment_sets_the_gauge_to_zero_and_says_none(caplog):
    listener = Assignment("assign-empty", ["images"])
    with caplog.at_level(logging.INFO, logger="activestream.streams.stage"):
        asyncio.run(listener.on_partitions_assigned(set()))
    assert held("assign-empty", "images") == 0
    assert "assign-empty holds images none" in caplog.text
