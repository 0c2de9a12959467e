"""The selector worker's handler on records, without a broker: settings reach the budget."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter

import numpy as np
from aiokafka.structs import ConsumerRecord

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
