"""SIGKILL the predictor mid-stream and start it again: no image is left unpredicted."""

from __future__ import annotations

import asyncio
import signal

import pytest

from activestream.simulation.traffic import stream_items
from activestream.streams.demo import stream_images
from tests.conftest import Harness, make_settings, run_async

pytestmark = pytest.mark.kafka


def test_predictor_killed_mid_stream_loses_nothing(tmp_path, digits):
    settings = make_settings(tmp_path, dataset="digits", retrain_every=10_000)
    run_async(_crash(settings, digits), timeout=300)


async def _crash(settings, digits) -> None:
    async with Harness(settings, digits, workers=("predictor", "selector", "ingest")) as h:
        produced, source = await _stream_and_kill(h, digits, 6000, "predictor")
        killed_at = len(h.observer.seen.predicted)
        assert not source.done() and killed_at < 6000, "the kill must land mid-stream"
        await asyncio.sleep(1.0)
        h.cluster.start_worker("predictor")
        await source
        await h.wait_for(lambda: set(produced) <= h.observer.seen.predicted.keys(), 180, "every image predicted")
        assert len(produced) == 6000
        print(f"\nkilled after {killed_at} predictions; {h.observer.seen.predictions} predictions for 6000 images")


async def _stream_and_kill(h: Harness, digits, count: int, victim: str) -> tuple[list[str], asyncio.Future]:
    """Stream ``count`` images at 1,000/s and SIGKILL ``victim`` once predictions flow; the
    second half of the stream waits for the kill, however slow the machine.
    Returns the ids produced so far (the list keeps growing) and the source's future."""
    produced, killed = [], asyncio.Event()

    async def hold() -> bool:
        return len(produced) >= count // 2 and not killed.is_set()

    items = stream_items(digits, h.stream_idx, count)
    source = asyncio.ensure_future(stream_images(h.producer, h.settings.topic_images, items, 1000, {}, produced,
                                                 hold=hold, max_hold=240))
    await h.wait_for(lambda: len(h.observer.seen.predicted) >= 500, 90, "first predictions")
    await asyncio.to_thread(h.cluster.kill_worker, victim, signal.SIGKILL)
    killed.set()
    return produced, source


def test_one_of_two_predictors_killed_the_other_takes_over(tmp_path, digits):
    settings = make_settings(tmp_path, dataset="digits", retrain_every=10_000, predictors=2)
    run_async(_two_predictors(settings, digits), timeout=300)


async def _two_predictors(settings, digits) -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from activestream.streams.stage import make_consumer

    async with Harness(settings, digits, workers=("predictor",)) as h:
        s = h.settings
        assert set(h.cluster.procs_) == {"predictor", "predictor.2"}
        produced, source = await _stream_and_kill(h, digits, 4000, "predictor.2")
        await source
        await h.wait_for(lambda: set(produced) <= h.observer.seen.predicted.keys(), 180, "every image predicted")
        assert h.cluster.alive() == {"predictor": True, "predictor.2": False}

        # Predictions are co-partitioned with their images: the partition the id hashes to.
        consumer = make_consumer(s, s.bootstrap, None, s.topic_predictions)
        await consumer.start()
        try:
            every = sorted(consumer.partitions_for_topic(s.topic_predictions))
            assert len(every) == s.partitions
            partition_of, found = DefaultPartitioner(), set()
            while len(found) < len(produced):
                for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                    for r in records:
                        assert tp.partition == partition_of(r.key, every, every), r.key
                        found.add(r.key.decode())
        finally:
            await consumer.stop()
