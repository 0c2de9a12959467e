"""The selector's decisions survive a restart: a stored sample is always requested, and a
restored budget decides on exactly as one that never stopped (no broker needed)."""

from __future__ import annotations

import asyncio

import numpy as np

from activestream.storage.blobs import BlobStore
from activestream.storage.store import SampleStore
from activestream.streams.messages import LabelRequestV1
from activestream.streams.selector import SelectorHandler
from tests.conftest import make_settings
from tests.test_selector_handler import records


def handler_on(tmp_path, settings, url: str | None = None) -> SelectorHandler:
    store = SampleStore(url or f"sqlite:///{tmp_path / 'store.db'}")
    store.create_schema()
    handler = SelectorHandler(settings, store, BlobStore(tmp_path / "blobs"))
    handler.restore()
    return handler


def requested(outputs) -> set[str]:
    return {LabelRequestV1.model_validate_json(o.value).id for o in outputs if o.topic == "labeling.requests"}


def stored_ids(handler: SelectorHandler) -> set[str]:
    return set(handler.store.samples_by_id(f"img-{i}" for i in range(2000)))


def test_samples_stored_before_a_crash_are_requested_after_it(tmp_path, store_url):
    settings = make_settings(tmp_path, budget=0.1)
    batch = records(250, 0, np.random.default_rng(0))
    first = handler_on(tmp_path, settings, store_url)
    asyncio.run(first.handle(batch))  # stored, then killed before its requests were produced
    assert stored_ids(first)
    again = handler_on(tmp_path, settings, store_url)
    assert requested(asyncio.run(again.handle(batch))) == stored_ids(first)
    assert again.budget.seen_ == 250  # decided once, counted once


def test_a_redelivery_cut_differently_requests_every_stored_sample_and_decides_only_the_new_ones(tmp_path):
    settings = make_settings(tmp_path, budget=0.1)
    stream = records(400, 0, np.random.default_rng(1))
    first = handler_on(tmp_path, settings)
    asyncio.run(first.handle(stream[:250]))
    before = stored_ids(first)
    again = handler_on(tmp_path, settings)
    out = requested(asyncio.run(again.handle(stream[:320])))
    assert before <= out
    assert again.budget.seen_ == 320
    assert stored_ids(again) == out


def decide(batches, steady_home, restarted_home, settings):
    """Every batch through one handler that never stops, and through a new handler (a new
    process) per batch on the same store; both handlers at the end and their picks."""
    steady, steady_picks = handler_on(steady_home, settings), set()
    for batch in batches:
        steady_picks |= requested(asyncio.run(steady.handle(batch)))
        steady.committed()
    restarted_picks = set()
    for batch in batches:
        handler = handler_on(restarted_home, settings)
        restarted_picks |= requested(asyncio.run(handler.handle(batch)))
        handler.committed()
    return steady, steady_picks, handler, restarted_picks


def test_a_restored_budget_decides_as_one_that_never_stopped(tmp_path):
    settings = make_settings(tmp_path, budget=0.1, diversity_radius=0.0)
    rng = np.random.default_rng(2)
    batches = [records(200, k * 200, rng) for k in range(10)]
    steady, steady_picks, handler, restarted_picks = decide(batches, tmp_path / "steady", tmp_path / "restarted",
                                                            settings)
    assert restarted_picks == steady_picks
    assert handler.budget.seen_ == steady.budget.seen_ == 2000
    # each pick keeps its place in the selector's stream, so its budget window is known after restarts
    positions = {s.id: s.meta["position"] for s in handler.store.samples_by_id(restarted_picks).values()}
    assert positions == {s.id: s.meta["position"] for s in steady.store.samples_by_id(steady_picks).values()}
    assert all(position == int(i.removeprefix("img-")) for i, position in positions.items())  # img-k is k-th


def with_embeddings(batch, rng):
    """The same predictions, each carrying an embedding; a few scenes repeat (near-duplicates)."""
    from aiokafka.structs import ConsumerRecord

    from activestream.streams.messages import PredictionV1

    scenes = rng.normal(size=(40, 16))
    out = []
    for r in batch:
        msg = PredictionV1.model_validate_json(r.value)
        emb = (scenes[rng.integers(40)] + rng.normal(scale=0.01, size=16)).round(4).tolist()
        value = msg.model_copy(update={"embedding": emb}).encode()
        out.append(ConsumerRecord(r.topic, r.partition, r.offset, 0, 0, None, value, None, 0, 0, []))
    return out


def test_the_diversity_memory_is_rebuilt_after_a_restart(tmp_path):
    settings = make_settings(tmp_path, budget=0.1, diversity_radius=0.05)
    rng = np.random.default_rng(3)
    batches = [with_embeddings(records(200, k * 200, rng), rng) for k in range(6)]
    steady, steady_picks, handler, restarted_picks = decide(batches, tmp_path / "steady", tmp_path / "restarted",
                                                            settings)
    assert len(handler.diversity.memory_) == len(steady.diversity.memory_) > 0
    assert np.allclose(handler.diversity.memory_, steady.diversity.memory_)
    assert restarted_picks == steady_picks
