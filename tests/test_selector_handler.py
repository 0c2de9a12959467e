"""The selector worker's handler on records, without a broker: settings reach the budget."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter

import numpy as np
import pytest
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from activestream.storage.blobs import BlobStore
from activestream.storage.store import SampleStore
from activestream.streams.messages import LabelRequestV1, PredictionV1
from activestream.streams.selector import SelectorHandler
from tests.conftest import make_settings


def records(n: int, start: int, rng: np.random.Generator) -> list[ConsumerRecord]:
    """Predictions where class 0 is both the most common and the least certain."""
    out = []
    for i in range(start, start + n):
        label = 0 if rng.random() < 0.6 else int(rng.integers(1, 10))
        top = rng.uniform(0.3, 0.5) if label == 0 else rng.uniform(0.6, 0.99)
        probs = np.full(10, (1 - top) / 9)
        probs[label] = top
        msg = PredictionV1(id=f"img-{i}", model="m", version=1, label=label, confidence=float(top),
                           probs=probs.tolist(), scores={}, image=base64.b64encode(b"png").decode(),
                           ts=0.0, predicted_at=0.0)
        out.append(ConsumerRecord("predictions", 0, i, 0, 0, None, msg.encode(), None, 0, 0, []))
    return out


def picked_classes(tmp_path, **overrides) -> Counter:
    settings = make_settings(tmp_path, budget=0.1, audit_share=0.0, **overrides)
    store = SampleStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_schema()
    handler = SelectorHandler(settings, store, BlobStore(tmp_path / "blobs"))
    rng, picked = np.random.default_rng(0), Counter()
    for batch in range(12):
        for out in asyncio.run(handler.handle(records(250, batch * 250, rng))):
            request = LabelRequestV1.model_validate_json(out.value)
            picked[request.top[0][0]] += 1
        handler.committed()
    return picked


def test_class_quota_setting_spreads_picks_across_predicted_classes(tmp_path):
    free = picked_classes(tmp_path / "free")
    capped = picked_classes(tmp_path / "capped", class_quota=0.3)
    print(f"\nclass 0 share of picks: no quota {free[0] / sum(free.values()):.2f}, "
          f"quota 0.3 {capped[0] / sum(capped.values()):.2f}")
    assert free[0] / sum(free.values()) > 0.9                         # class 0 is where the doubt is
    assert capped[0] / sum(capped.values()) <= 0.35                   # at most its share, plus the first window's slack
    assert abs(sum(capped.values()) - sum(free.values())) <= 0.1 * sum(free.values())  # the budget is still spent


def test_budget_cap_setting_bounds_every_window(tmp_path):
    picked = picked_classes(tmp_path, budget_cap=80)
    assert sum(picked.values()) <= 80 * 3


def prediction(i: int, probs: list[float]) -> ConsumerRecord:
    msg = PredictionV1(id=f"p-{i}", model="m", version=1, label=0, confidence=0.5, probs=probs,
                       scores={}, uri=f"s3://bucket/{i}.png", ts=0.0, predicted_at=0.0)
    return ConsumerRecord("predictions", 0, i, 0, 0, None, msg.encode(), None, 0, 0, [])


def test_bad_probability_rows_are_dead_lettered_and_the_rest_decided(tmp_path):
    store = SampleStore("sqlite://")
    store.create_schema()
    handler = SelectorHandler(make_settings(tmp_path, budget=1.0), store, BlobStore(tmp_path / "blobs"))
    negative = [-0.1, 0.6, 0.5]
    # every row bad: nothing to decide, nothing raised
    out = asyncio.run(handler.handle([prediction(i, negative) for i in range(3)]))
    assert [o.topic for o in out] == ["deadletter"] * 3
    handler.committed()
    # ragged rows: the odd widths go to deadletter, the batch's width is decided
    rows = [[0.2, 0.3, 0.5]] * 4 + [[0.5, 0.5], [0.1, 0.1, 0.1, 0.7], negative]
    out = asyncio.run(handler.handle([prediction(10 + i, p) for i, p in enumerate(rows)]))
    handler.committed()
    dead = [json.loads(o.value) for o in out if o.topic == "deadletter"]
    assert sorted(d["offset"] for d in dead) == [14, 15, 16]
    assert all(d["error_kind"] == "bad_probs" for d in dead)
    assert sorted(o.key for o in out if o.topic == "labeling.requests") == [b"p-10", b"p-11", b"p-12", b"p-13"]


def test_the_worker_refuses_strategies_that_need_several_passes(tmp_path):
    with pytest.raises(ValidationError, match="several model passes"):
        make_settings(tmp_path, strategy="bald")
    with pytest.raises(ValidationError, match="unknown selector"):
        make_settings(tmp_path, strategy="smallest_margin")
