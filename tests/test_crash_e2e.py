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
        s, produced, killed = h.settings, [], asyncio.Event()

        async def hold() -> bool:  # half the stream waits for the kill, however slow the machine
            return len(produced) >= 3000 and not killed.is_set()

        items = stream_items(digits, h.stream_idx, 6000)
        source = asyncio.ensure_future(stream_images(h.producer, s.topic_images, items, 1000, {}, produced,
                                                     hold=hold, max_hold=240))
        await h.wait_for(lambda: len(h.observer.seen.predicted) >= 500, 90, "first predictions")
        await asyncio.to_thread(h.cluster.kill_worker, "predictor", signal.SIGKILL)
        killed.set()
        killed_at = len(h.observer.seen.predicted)
        assert not source.done() and killed_at < 6000, "the kill must land mid-stream"
        await asyncio.sleep(1.0)
        h.cluster.start_worker("predictor")
        await source
        await h.wait_for(lambda: set(produced) <= h.observer.seen.predicted.keys(), 180, "every image predicted")
        assert len(produced) == 6000
        print(f"\nkilled after {killed_at} predictions; {h.observer.seen.predictions} predictions for 6000 images")
