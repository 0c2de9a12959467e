"""Drift at the Kafka edge, without a broker: the selector's monitor watches the predictions'
embeddings and the audit labels that arrive, publishes ``drift`` messages and raises its
budget (kept across a restart); the learner reads ``drift`` and trains early; the
observer keeps the newest detection for the terminal display."""

from __future__ import annotations

import asyncio
import base64
import json
from io import StringIO
from types import SimpleNamespace

import numpy as np
import pytest
from aiokafka.structs import ConsumerRecord
from rich.console import Console

from activestream.learners.classifier import Classifier, state_arrays
from activestream.learners.models import ModelSpec
from activestream.selectors.boost import DriftBoost
from activestream.storage.blobs import BlobStore
from activestream.storage.registry import ModelRegistry
from activestream.display import Display
from activestream.storage.store import Label, SampleStore
from activestream.streams.learner import DriftHandler, Learner
from activestream.streams.messages import DriftV1, LabelRequestV1, PredictionV1, parse
from activestream.streams.observer import Observer
from activestream.streams.selector import SelectorHandler
from tests.conftest import make_settings

SPEC = ModelSpec("small_cnn", tuple("0123456789"), 1, 8, 8)


def predictions(start: int, n: int, sharpness: float, rng,
                embedding_shift: float | None = None) -> list[ConsumerRecord]:
    """Predictions of random classes, ``sharpness`` confident; with 16-wide embeddings around
    ``embedding_shift`` when it is given."""
    out = []
    for i in range(start, start + n):
        probs = rng.dirichlet(np.ones(10))
        probs[rng.integers(0, 10)] += sharpness
        probs = probs / probs.sum()
        embedding = None if embedding_shift is None else rng.normal(embedding_shift, 1.0, 16).round(4).tolist()
        msg = PredictionV1(id=f"img-{i}", model="m", version=1, label=int(probs.argmax()),
                           confidence=float(probs.max()), probs=probs.tolist(), scores={},
                           image=base64.b64encode(b"png").decode(), ts=0.0, predicted_at=0.0, embedding=embedding)
        out.append(ConsumerRecord("predictions", 0, i, 0, 0, None, msg.encode(), None, 0, 0, []))
    return out


def selector(tmp_path, settings=None, **overrides):
    settings = settings or make_settings(tmp_path, **{"budget": 0.05, "drift_budget_factor": 3.0,
                                                      "drift_budget_images": 1000, **overrides})
    store = SampleStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_schema()
    return SelectorHandler(settings, store, BlobStore(tmp_path / "blobs"))


def feed(handler, start: int, n: int, sharpness: float, rng, embedding_shift: float | None = None) -> list:
    outputs = []
    for s in range(start, start + n, 250):
        outputs += asyncio.run(handler.handle(predictions(s, 250, sharpness, rng, embedding_shift)))
        handler.committed()
    return outputs


def detections(outputs) -> list[DriftV1]:
    return [parse(DriftV1, o.value) for o in outputs if o.topic == "drift"]


def test_the_selector_publishes_detections_raises_its_budget_and_keeps_the_boost_across_a_restart(tmp_path):
    handler, rng = selector(tmp_path), np.random.default_rng(0)
    calm = feed(handler, 0, 2000, 6.0, rng)
    assert not [o for o in calm if o.topic == "drift"]
    shifted = feed(handler, 2000, 500, 0.3, rng)
    drift = [parse(DriftV1, o.value) for o in shifted if o.topic == "drift"]
    assert drift and drift[0].version == 1 and drift[0].position >= 2000 and drift[0].selector == handler.key
    assert isinstance(handler.budget, DriftBoost) and handler.budget.remaining_ > 0
    again = selector(tmp_path, handler.settings)    # a restart: the boost is in the stored state
    assert again.restore() and again.budget.remaining_ == handler.budget.remaining_
    after = feed(again, 2500, 1000, 0.3, rng)
    reasons = [LabelRequestV1.model_validate_json(o.value).reason for o in after if o.topic == "labeling.requests"]
    assert reasons.count("drift") > 20 and 0.10 * 1000 <= len(reasons) <= 0.20 * 1000


def test_switched_off_the_selector_neither_boosts_nor_detects(tmp_path):
    quiet = selector(tmp_path / "a", drift_budget_factor=1.0)
    assert not isinstance(quiet.budget, DriftBoost)
    off = selector(tmp_path / "b", drift_detectors="none")
    rng = np.random.default_rng(0)
    outputs = feed(off, 0, 1000, 6.0, rng) + feed(off, 1000, 1000, 0.3, rng)
    assert not [o for o in outputs if o.topic == "drift"]


def test_the_selector_detects_a_shift_seen_only_in_the_embeddings(tmp_path):
    handler, rng = selector(tmp_path), np.random.default_rng(1)
    calm = feed(handler, 0, 1500, 6.0, rng, embedding_shift=0.0)
    assert not detections(calm)
    found = detections(feed(handler, 1500, 1000, 6.0, rng, embedding_shift=0.5))  # same classes, same confidence
    assert found and {d.signal for d in found} == {"embedding"}
    assert 1500 <= min(d.position for d in found) < 2500


def test_the_selector_detects_a_shift_seen_only_in_the_audit_labels_as_they_arrive(tmp_path):
    handler, rng = selector(tmp_path, budget=0.2, audit_share=0.5), np.random.default_rng(2)
    handler.label_free.every = 0.0  # read the labels that arrived with every batch
    found = []
    for k in range(16):
        found += [(k, d) for d in detections(feed(handler, 250 * k, 250, 6.0, rng))]
        picks = handler.store.samples_by_id(f"img-{i}" for i in range(250 * k, 250 * (k + 1)))
        wrong = 0.6 if k >= 8 else 0.1  # the model's answers stay as confident as ever
        handler.store.add_labels(Label(s.id, (s.predicted + 1) % 10 if rng.random() < wrong else s.predicted, "ann")
                                 for s in picks.values() if s.reason == "audit")
    assert found and {d.signal for _, d in found} == {"audit_error"}
    assert min(k for k, _ in found) > 8  # the shifted labels arrive with the round after theirs


def test_audit_labels_polled_for_a_batch_that_fails_to_store_are_read_again(tmp_path):
    handler, rng = selector(tmp_path, budget=0.2, audit_share=0.5), np.random.default_rng(3)
    handler.label_free.every = 0.0
    feed(handler, 0, 250, 6.0, rng)
    audits = [s for s in handler.store.samples_by_id(f"img-{i}" for i in range(250)).values() if s.reason == "audit"]
    handler.store.add_labels(Label(s.id, s.predicted, "ann") for s in audits)
    def outage(*args, **kwargs):
        raise OSError("the store is gone")

    store_samples, handler.store.add_samples = handler.store.add_samples, outage  # fails as the batch is stored
    with pytest.raises(OSError):
        asyncio.run(handler.handle(predictions(250, 250, 6.0, rng)))
    handler.store.add_samples = store_samples
    assert handler.label_free.audits_ == 0
    feed(handler, 250, 250, 6.0, rng)
    assert handler.label_free.audits_ == len(audits)


def test_the_observer_keeps_the_newest_detection_and_the_display_shows_it(tmp_path):
    settings = make_settings(tmp_path)
    observer = Observer(settings, "127.0.0.1:9")
    for ts, signal in ((5.0, "confidence"), (9.0, "embedding"), (7.0, "class_mix")):  # read out of order
        observer._handlers[settings.topic_drift](json.loads(DriftV1(
            model="m", version=2, detector="adwin", signal=signal, position=1500, statistic=1.0, threshold=0.01,
            ts=ts).encode()))
    seen = observer.seen
    assert seen.drift == 3 and seen.drift_latest["signal"] == "embedding"
    store = SampleStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_schema()
    out = StringIO()
    Display(Console(file=out, width=1000), interval=0.0).update(
        settings, SimpleNamespace(store=store), seen, SimpleNamespace(produced=[]))
    assert "drift adwin on embedding of v2 at image 1500, " in out.getvalue() and "(3 in all)" in out.getvalue()


class Labeled:
    """The one store query ``Learner.due`` makes, answered with a fixed count."""

    def __init__(self, n: int):
        self.n = n

    def count_labeled(self) -> int:
        return self.n


def drift_record(version: int) -> ConsumerRecord:
    value = DriftV1(model="classifier", version=version, detector="adwin", signal="confidence", position=5,
                    statistic=1.0, threshold=0.01).encode()
    return ConsumerRecord("drift", 0, 0, 0, 0, None, value, None, 0, 0, [])


def test_a_drift_message_makes_the_learner_train_early_once(tmp_path):
    settings = make_settings(tmp_path, retrain_every=150, drift_early_labels=30)
    registry = ModelRegistry(tmp_path / "models")
    arrays = state_arrays(Classifier.fresh(SPEC).model)
    for _ in range(2):
        registry.register(settings.model_name, arrays, spec=SPEC.to_dict(), parent=None, train_size=100,
                          metrics={}, status="promoted")
    learner = Learner(settings, Labeled(140), None, registry)
    handler = DriftHandler(settings, learner)
    assert not learner.due()                                       # 40 new labels: not yet
    asyncio.run(handler.handle([drift_record(1)]))                 # about v1, which no longer serves
    assert not learner.due()
    asyncio.run(handler.handle([drift_record(2)]))
    assert learner.due()
    learner.store = Labeled(120)                                   # 20 new labels: too few even early
    assert not learner.due()
    off = Learner(make_settings(tmp_path, retrain_every=150, drift_early_labels=0), Labeled(140), None, registry)
    asyncio.run(DriftHandler(off.settings, off).handle([drift_record(2)]))
    assert not off.due()
