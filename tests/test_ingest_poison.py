"""A label no database would store is refused at the door: the valid labels of its batch
are stored, on SQLite and on PostgreSQL (which refuses U+0000 in text)."""

from __future__ import annotations

import asyncio
import json

from aiokafka.structs import ConsumerRecord

from activestream.storage.registry import ModelRegistry
from activestream.storage.store import SampleStore
from activestream.streams.ingest import IngestHandler
from activestream.streams.messages import DeadLetterV1, parse
from tests.conftest import make_settings


def record(offset: int, body: dict) -> ConsumerRecord:
    return ConsumerRecord("labels", 0, offset, 0, 0, None, json.dumps(body).encode(), None, 0, 0, [])


def test_a_labeler_with_a_nul_character_is_dead_lettered_and_the_batch_is_stored(tmp_path, store_url):
    settings = make_settings(tmp_path, store_url=store_url)
    store = SampleStore(store_url)
    store.create_schema()
    handler = IngestHandler(settings, store, ModelRegistry(tmp_path / "models"))
    batch = [record(i, {"v": 1, "id": f"img-{i}", "label": 1, "labeler": "ann"}) for i in range(5)]
    batch.insert(2, record(99, {"v": 1, "id": "img-poison", "label": 1, "labeler": "ann\u0000"}))
    outputs = asyncio.run(handler.handle(batch))
    letters = [parse(DeadLetterV1, o.value) for o in outputs]
    assert [(d.offset, d.error_kind) for d in letters] == [(99, "bad_envelope")]
    assert all(store.labels_for(f"img-{i}") for i in range(5))
    assert not store.labels_for("img-poison")
