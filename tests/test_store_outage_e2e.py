"""PostgreSQL unreachable for 10 s mid-stream (connections refused, open ones cut): the
workers retry, report not ready meanwhile, and nothing is lost."""

from __future__ import annotations

import asyncio
import time

import pytest

from activestream.simulation.traffic import stream_items
from activestream.streams.demo import stream_images
from tests.conftest import Harness, make_settings, pg_database, run_async
from tests.tcp_proxy import Proxy

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

SELECTED = ("uncertain", "audit")


def test_a_store_outage_mid_stream_loses_nothing(tmp_path, digits):
    url, drop = pg_database()
    proxy = Proxy("127.0.0.1", 5432)
    proxy.up()
    try:
        settings = make_settings(tmp_path, dataset="digits", retrain_every=40, budget=0.1, epochs=1,
                                 store_url=url.replace(":5432/", f":{proxy.port}/"))
        run_async(_outage(settings, digits, proxy), timeout=480)
    finally:
        proxy.close()
        drop()


async def _outage(settings, digits, proxy: Proxy) -> None:
    from activestream.streams.demo import SimulatedLabeler
    from activestream.streams.stage import BatchStage, make_consumer

    async with Harness(settings, digits) as h:
        s = h.settings
        truth, produced = {}, []
        labeler = SimulatedLabeler(truth, s.topic_labels, s.topic_deadletter, 0.0)
        consumer = make_consumer(s, s.bootstrap, s.group("sim-labeler"), s.topic_requests)
        await consumer.start()
        labeling = asyncio.ensure_future(BatchStage("sim-labeler", consumer, h.producer, labeler).run(h.stop))
        items = stream_items(digits, h.stream_idx, 3000)
        source = asyncio.ensure_future(stream_images(h.producer, s.topic_images, items, 300, truth, produced))
        await h.wait_for(lambda: len(h.observer.seen.requested) >= 20, 120, "first selections")
        await asyncio.to_thread(proxy.down)
        outage_at = len(h.observer.seen.predicted)
        await asyncio.sleep(10)
        await asyncio.to_thread(proxy.up)
        await source
        await h.wait_for(lambda: set(produced) <= h.observer.seen.predicted.keys(), 180, "every image predicted")
        stored = {}

        partitions = [(s.topic_predictions, p) for p in range(s.partitions)]

        def settled() -> bool:
            decided = sum(h.res.store.positions(s.group("selector"), partitions).values())
            if decided < h.observer.seen.predictions:
                return False  # the selector has not caught up yet
            stored.clear()
            stored.update((i, x) for i, x in h.res.store.samples_by_id(produced).items() if x.reason in SELECTED)
            labeled = [i for i in stored if h.res.store.labels_for(i)]
            return set(stored) == set(h.observer.seen.requested) and len(labeled) == len(stored)

        await h.wait_for(settled, 180, "every selection requested and its label stored")
        assert all(p.poll() is None for p in h.cluster.procs_.values()), "a worker died of the outage"
        print(f"\noutage after {outage_at} of 3000 predictions; {len(stored)} selections, all requested and labeled")
        labeling.cancel()
        await asyncio.gather(labeling, return_exceptions=True)
        await consumer.stop()
