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
                       scores={}, image=base64.b64encode(b"png").decode(), ts=0.0, predicted_at=0.0)
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


def test_a_batch_with_nothing_new_to_decide_still_moves_the_stored_positions(tmp_path):
    """``run`` waits for the stored positions to reach every partition's end: a batch made
    only of repeated ids (a restarted predictor sends some twice) or of bad records must
    move them too, or a stream ending in one would never count as decided."""
    store = SampleStore("sqlite://")
    store.create_schema()
    handler = SelectorHandler(make_settings(tmp_path, budget=1.0), store, BlobStore(tmp_path / "blobs"))
    where = [("predictions", 0)]
    asyncio.run(handler.handle([prediction(i, [0.2, 0.8]) for i in range(3)]))
    handler.committed()
    assert store.positions(handler.group, where) == {("predictions", 0): 3}
    repeats = [ConsumerRecord("predictions", 0, 3 + i, 0, 0, None, r.value, None, 0, 0, [])
               for i, r in enumerate(prediction(i, [0.2, 0.8]) for i in range(3))]
    assert asyncio.run(handler.handle(repeats)) == []  # seen: not requested again
    handler.committed()
    assert store.positions(handler.group, where) == {("predictions", 0): 6}
    out = asyncio.run(handler.handle([prediction(6, [-1.0, 2.0])]))
    assert [o.topic for o in out] == ["deadletter"]
    assert store.positions(handler.group, where) == {("predictions", 0): 7}


def test_a_pick_whose_id_cannot_name_a_blob_is_dead_lettered_and_the_batch_goes_on(tmp_path):
    store = SampleStore("sqlite://")
    store.create_schema()
    handler = SelectorHandler(make_settings(tmp_path, budget=1.0), store, BlobStore(tmp_path / "blobs"))
    batch = [prediction(i, [0.2, 0.3, 0.5]) for i in range(4)]
    odd = PredictionV1.model_validate_json(batch[1].value).model_copy(update={"id": ".."})  # a valid id
    batch[1] = ConsumerRecord("predictions", 0, 1, 0, 0, None, odd.encode(), None, 0, 0, [])
    out = asyncio.run(handler.handle(batch))
    handler.committed()
    dead = [json.loads(o.value) for o in out if o.topic == "deadletter"]
    assert [(d["offset"], d["error_kind"]) for d in dead] == [(1, "bad_key")]
    assert sorted(o.key for o in out if o.topic == "labeling.requests") == [b"p-0", b"p-2", b"p-3"]
    assert ".." not in store.samples_by_id([".."])


def test_the_worker_refuses_strategies_that_need_several_passes(tmp_path):
    with pytest.raises(ValidationError, match="several model passes"):
        make_settings(tmp_path, strategy="bald")
    with pytest.raises(ValidationError, match="unknown selector"):
        make_settings(tmp_path, strategy="smallest_margin")


def burst(n: int, start: int, version: int, scene: list[float] | None) -> list[ConsumerRecord]:
    """Equally uncertain predictions; ``scene`` is every item's embedding (one scene filmed n times)."""
    out = []
    for i in range(start, start + n):
        msg = PredictionV1(id=f"img-{i}", model="m", version=version, label=0, confidence=0.5,
                           probs=[0.5, 0.5], scores={}, image=base64.b64encode(b"png").decode(),
                           ts=0.0, predicted_at=0.0, embedding=scene)
        out.append(ConsumerRecord("predictions", 0, i, 0, 0, None, msg.encode(), None, 0, 0, []))
    return out


def picks_per_batch(handler, batches) -> list[int]:
    counts = []
    for batch in batches:
        counts.append(len(asyncio.run(handler.handle(batch))))
        handler.committed()
    return counts


def test_diversity_setting_passes_over_repeats_of_a_picked_scene_and_forgets_old_versions(tmp_path):
    def handler_with(name, **overrides):
        settings = make_settings(tmp_path, budget=0.1, audit_share=0.0, budget_window=1000, **overrides)
        store = SampleStore(f"sqlite:///{tmp_path / f'{name}.db'}")
        store.create_schema()
        return SelectorHandler(settings, store, BlobStore(tmp_path / "blobs"))

    scene = [1.0, 0.0, 0.0]
    batches = [burst(50, 0, 1, scene), burst(50, 50, 1, scene)]
    plain = picks_per_batch(handler_with("plain"), batches)
    diverse_handler = handler_with("diverse", diversity_radius=0.05)
    diverse = picks_per_batch(diverse_handler, batches)
    # repeats of a picked scene are not picked for their score (only when the window would miss its band)
    assert sum(diverse) < sum(plain) and diverse[1] < plain[1]
    assert diverse_handler._space == ("m", 1) and len(diverse_handler.diversity.memory_) == sum(diverse)
    newer = picks_per_batch(diverse_handler, [burst(50, 100, 2, scene)])
    # version 2 embeds differently: the filter now remembers only version 2's picks
    assert diverse_handler._space == ("m", 2) and len(diverse_handler.diversity.memory_) == newer[0]


def test_predictions_without_embeddings_are_all_eligible_under_the_diversity_setting(tmp_path):
    settings = make_settings(tmp_path, budget=0.1, audit_share=0.0, diversity_radius=0.05)
    store = SampleStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_schema()
    with_filter = SelectorHandler(settings, store, BlobStore(tmp_path / "blobs"))
    without = SelectorHandler(make_settings(tmp_path, budget=0.1, audit_share=0.0), store, BlobStore(tmp_path / "b2"))
    batches = [burst(100, i * 100, 1, None) for i in range(3)]
    assert picks_per_batch(with_filter, batches) == picks_per_batch(without, batches)


def test_the_predictor_sends_embeddings_only_when_the_diversity_filter_is_on(tmp_path):
    from activestream.learners.classifier import Classifier
    from activestream.learners.models import ModelSpec
    from activestream.streams.predictor import PredictorHandler

    spec = ModelSpec(arch="small_cnn", classes=tuple("abc"), channels=1, height=28, width=28)
    clf = Classifier.fresh(spec, "cpu")
    clf.version = 1
    images = (np.random.default_rng(0).random((4, 28, 28)) * 255).astype(np.uint8)
    probs, features = clf.predict_with_embeddings(images)
    assert np.allclose(probs, clf.predict_proba(images), atol=1e-6)
    assert np.allclose(features, clf.embed(images), atol=1e-6)

    class Serving:
        name, current = "m", clf

    good = [(ConsumerRecord("images", 0, i, 0, 0, None, b"", None, 0, 0, []),
             type("Msg", (), {"id": f"i{i}", "image": "aGk=", "uri": None, "ts": 0.0})()) for i in range(4)]
    for radius, expect in ((0.0, False), (0.05, True)):
        handler = PredictorHandler(make_settings(tmp_path, diversity_radius=radius), Serving())
        embeddings = features if radius else None
        out = handler._predictions(good, probs, clf, embeddings)
        sent = [PredictionV1.model_validate_json(o.value) for o in out]
        assert all((m.embedding is not None) == expect for m in sent)
        if expect:
            assert np.allclose(np.array([m.embedding for m in sent]), features, atol=1e-3)
