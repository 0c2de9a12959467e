"""The requests consumer (dead letters, redelivery) and gold items from a trusted labeler's labels."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import torch
from aiokafka.structs import ConsumerRecord

from activestream.cli import parser
from activestream.labeling.consumer import RequestsHandler
from activestream.learners.training import TrainConfig
from activestream.simulation.datasets import load_dataset
from activestream.simulation.seed import bootstrap_seed
from activestream.streams.messages import DeadLetterV1
from conftest import make_settings
from label_helpers import make_requests, make_service

torch.set_num_threads(1)


def record(offset: int, value: bytes) -> ConsumerRecord:
    return ConsumerRecord("labeling.requests", 0, offset, 0, 0, b"k", value, None, 1, len(value), [])


def test_requests_are_queued_once_and_bad_ones_dead_lettered(tmp_path):
    service = make_service(make_settings(tmp_path))
    good = make_requests(service, 3)
    no_blob = good[0].model_copy(update={"id": "ghost", "uri": "blob:ghost"})
    elsewhere = good[0].model_copy(update={"id": "far", "uri": "https://example.org/far.png"})
    bad_class = good[1].model_copy(update={"id": "odd", "top": [(42, 0.9)]})
    raw = [g.encode() for g in good] + [good[0].encode(), b"{not json", b'{"v": 2, "id": "x"}',
                                        no_blob.encode(), elsewhere.encode(), bad_class.encode()]
    handler = RequestsHandler(service)
    outputs = asyncio.run(handler.handle([record(i, value) for i, value in enumerate(raw)]))
    kinds = {DeadLetterV1.model_validate_json(o.value).offset: DeadLetterV1.model_validate_json(o.value).error_kind
             for o in outputs}
    assert kinds == {4: "bad_json", 5: "bad_version", 6: "missing_image", 7: "unsupported_uri", 8: "unknown_class"}
    assert {o.topic for o in outputs} == {service.settings.topic_deadletter}
    assert sorted(i.id for i in service.pending(10)) == sorted(g.id for g in good)
    sample = service.store.get_sample(good[2].id)
    assert (sample.blob_key, sample.reason, sample.selection_prob) == (good[2].id, "uncertain", 0.05)
    asyncio.run(handler.handle([record(9, good[2].encode())]))       # redelivery changes nothing
    assert len(service.pending(10)) == 3
    service.close()


@pytest.fixture
def seeded(tmp_path, monkeypatch):
    """A store with 60 seed labels (digits) and the seed model trained on them, as a fresh deployment has."""
    settings = make_settings(tmp_path, label_gold_share=1.0)
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    service = make_service(settings)
    ds = load_dataset("digits")
    seed = bootstrap_seed(ds, np.arange(60), store=service.store, blobs=service.blobs, registry=service.registry,
                          name=settings.model_name, config=TrainConfig(epochs=1))
    yield service, ds, seed
    service.close()


def test_gold_items_come_from_a_trusted_labelers_labels(seeded, capsys):
    service, ds, seed = seeded
    args = parser().parse_args(["label", "gold", "--from-labeler", "seed", "--count", "12"])
    assert args.handler(args) == 0
    assert "added 12 gold items" in capsys.readouterr().out
    assert service.pending(100) == [] and service.queue.depth(0)["waiting"] == 0   # gold is not queue work
    args.handler(args)                                                 # again: 12 more, none twice
    from sqlalchemy import select

    from activestream.storage.queue import ITEMS
    with service.queue.engine.connect() as conn:
        rows = conn.execute(select(ITEMS.c.id, ITEMS.c.gold, ITEMS.c.top, ITEMS.c.version)).all()
    assert len(rows) == len({r.id for r in rows}) == 24
    for item_id, answer, top, version in rows:
        assert [lab.label for lab in service.store.labels_for(item_id)] == [answer]
        assert version == seed.version and len(top) == 3
        assert top[0][1] >= top[1][1] >= top[2][1] and 0.0 < sum(p for _, p in top) <= 1.0 + 1e-6


def test_gold_answers_measure_the_labeler(seeded):
    from activestream.labeling.gold import add_gold

    service, _, _ = seeded
    add_gold(service, "seed", 5)
    truths = {}
    for _ in range(5):
        item = service.next_item("ann")
        assert item.lane == "gold"
        truths[item.id] = (item.gold, item.top[0][0])
        service.record_label(item.id, item.top[0][0], "ann")           # ann always takes the model's guess
    me = service.stats("ann")["me"]
    right = sum(gold == guess for gold, guess in truths.values())
    assert me["gold_answered"] == 5 and me["gold_accuracy"] == pytest.approx(right / 5)
    assert me["guess_wrong"] == 5 - right
    assert me["rubber_stamp_rate"] == (1.0 if right < 5 else None)
    assert service.producer.sent == []                                 # gold answers are not training labels
    stats = json.dumps(service.stats("ann"))
    assert not any(item_id in stats for item_id in truths)              # no gold item named in the stats
