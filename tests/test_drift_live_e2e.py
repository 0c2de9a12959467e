"""The live selector's drift monitor through the broker: predictions in, ``drift`` out, as the
observer (the terminal display's source) reads it. One shift shows only in the
predictions' embeddings, the other only in the audit labels that come back through label
ingest; the class mix and the confidences never change."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from activestream.storage.store import SampleStore
from activestream.streams.cluster import LocalCluster
from activestream.streams.messages import LabelV1, PredictionV1
from activestream.streams.observer import Observer
from activestream.streams.stage import make_producer
from tests.conftest import make_settings, run_async

pytestmark = pytest.mark.kafka

ROUND = 250  # predictions sent at a time
# one partition keeps the stream's order; a long run length makes a false alarm on the
# unchanged signals (about one per 5 million images) practically impossible here
SETTINGS = dict(partitions=1, budget=0.2, audit_share=0.5, drift_run_length=5_000_000.0)


def prediction(i: int, rng, embedding_shift: float | None = None) -> bytes:
    """A confident prediction of a random class, the same before and after either shift."""
    probs = rng.dirichlet(np.ones(10))
    probs[rng.integers(0, 10)] += 4.0
    probs /= probs.sum()
    embedding = None if embedding_shift is None else rng.normal(embedding_shift, 1.0, 16).round(4).tolist()
    return PredictionV1(id=f"img-{i}", model="m", version=1, label=int(probs.argmax()), confidence=float(probs.max()),
                        probs=probs.tolist(), scores={}, image=base64.b64encode(b"png").decode(), ts=0.0,
                        predicted_at=0.0, embedding=embedding).encode()


class Live:
    """A broker with the named workers, a producer, and an observer of every output topic."""

    def __init__(self, settings, workers: tuple[str, ...]):
        self.cluster = LocalCluster(settings, workers)

    async def __aenter__(self) -> "Live":
        self.settings = await asyncio.to_thread(self.cluster.start)
        self.store = SampleStore(self.settings.store)
        await asyncio.to_thread(self.store.create_schema)  # the workers may not have made it yet
        self.producer = make_producer(self.settings.bootstrap)
        await self.producer.start()
        self.stop = asyncio.Event()
        self.observer = Observer(self.settings, self.settings.bootstrap)
        self.observing = asyncio.ensure_future(self.observer.run(self.stop))
        self.sent = 0
        return self

    async def __aexit__(self, *exc) -> None:
        self.stop.set()
        await asyncio.gather(self.observing, return_exceptions=True)
        await self.producer.stop()
        await asyncio.to_thread(self.cluster.stop)

    async def send_round(self, rng, embedding_shift: float | None = None) -> range:
        """Send ``ROUND`` predictions and wait until the selector has decided them."""
        ids = range(self.sent, self.sent + ROUND)
        for i in ids:
            await self.producer.send(self.settings.topic_predictions, prediction(i, rng, embedding_shift),
                                     key=f"img-{i}".encode(), partition=0)
        await self.producer.flush()
        self.sent += ROUND
        part = (self.settings.topic_predictions, 0)
        group = self.settings.group("selector")
        await self.wait_for(lambda: self.store.positions(group, {part}).get(part, 0) >= self.sent,
                            f"the selector to decide {self.sent} predictions")
        return ids

    async def wait_for(self, predicate, what: str, timeout: float = 180.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await asyncio.to_thread(predicate):
            if self.observing.done():
                self.observing.result()
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            await asyncio.sleep(0.2)

    def detections(self) -> tuple[int, dict | None]:
        return self.observer.seen.drift, self.observer.seen.drift_latest


def test_a_live_selector_detects_a_shift_seen_only_in_the_embeddings(tmp_path):
    settings = make_settings(tmp_path, **SETTINGS)
    rng = np.random.default_rng(0)

    async def scenario():
        async with Live(settings, ("selector",)) as live:
            for _ in range(6):
                await live.send_round(rng, embedding_shift=0.0)
            assert live.detections() == (0, None)
            for _ in range(8):  # about 250 shifted images suffice; sent until the observer reads one
                await live.send_round(rng, embedding_shift=0.5)
                if live.detections()[0]:
                    break
            await live.wait_for(lambda: live.detections()[0] > 0, "a drift detection on the drift topic", 60)
            return live.detections()

    _, latest = run_async(scenario(), timeout=600)
    assert latest["signal"] == "embedding" and latest["version"] == 1 and latest["position"] >= 6 * ROUND


def test_a_live_selector_detects_a_shift_seen_only_in_the_audit_labels(tmp_path):
    settings = make_settings(tmp_path, **SETTINGS)
    rng = np.random.default_rng(1)

    async def label_audits(live: Live, ids: range, wrong: float) -> int:
        """Answer the round's audit picks through the labels topic, ``wrong`` of them against
        the model; returns how many."""
        picks = await asyncio.to_thread(live.store.samples_by_id, (f"img-{i}" for i in ids))
        audits = [s for s in picks.values() if s.reason == "audit"]
        for s in audits:
            label = (s.predicted + 1) % 10 if rng.random() < wrong else s.predicted
            await live.producer.send(live.settings.topic_labels, LabelV1(id=s.id, label=label, labeler="ann").encode(),
                                     key=s.id.encode())
        await live.producer.flush()
        return len(audits)

    async def scenario():
        async with Live(settings, ("selector", "ingest")) as live:
            calm = 0
            for _ in range(6):
                calm += await label_audits(live, await live.send_round(rng), wrong=0.1)
            await live.wait_for(lambda: len(live.store.outcomes()) >= calm, "the calm audit labels stored")
            assert live.detections() == (0, None)
            # The selector reads the labels that arrived every few seconds, with a batch to decide.
            for _ in range(40):
                await label_audits(live, await live.send_round(rng), wrong=0.6)
                if live.detections()[0]:
                    break
                await asyncio.sleep(1.0)
            await live.wait_for(lambda: live.detections()[0] > 0, "a drift detection on the drift topic", 60)
            return live.detections()

    _, latest = run_async(scenario(), timeout=600)
    assert latest["signal"] == "audit_error" and latest["version"] == 1 and latest["position"] >= 6 * ROUND
