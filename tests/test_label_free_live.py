"""The selector worker's label-free estimates: audits keep their served probabilities, and the
estimates calibrate on their labels from the store, raw confidence before any arrive."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest
from aiokafka.structs import ConsumerRecord
from scipy.special import softmax

from activestream.storage.blobs import BlobStore
from activestream.storage.store import Label, SampleStore
from activestream.streams import metrics
from activestream.streams.accuracy import PROBS, LiveLabelFree
from activestream.streams.messages import PredictionV1
from activestream.streams.selector import SelectorHandler
from tests.conftest import make_settings


def traffic(n: int, seed: int, version: int = 1, temperature: float = 2.0, prefix: str = "img"):
    """Predictions over-confident by ``temperature`` and the labels their images truly have."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 10)) * 4 + np.eye(10)[rng.integers(10, size=n)] * 4
    probs = softmax(z, axis=1)
    truth = (softmax(z / temperature, axis=1).cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    records = []
    for i, p in enumerate(probs):
        msg = PredictionV1(id=f"{prefix}-{version}-{i}", model="m", version=version, label=int(p.argmax()),
                           confidence=float(p.max()), probs=p.tolist(), scores={},
                           image=base64.b64encode(b"png").decode(), ts=0.0, predicted_at=0.0)
        records.append(ConsumerRecord("predictions", 0, i, 0, 0, None, msg.encode(), None, 0, 0, []))
    return records, probs, dict(zip((f"{prefix}-{version}-{i}" for i in range(n)), truth.tolist()))


def gauge(slot: str, method: str, model: str = "classifier") -> float:
    return metrics.LIVE_ACCURACY.labels(model, slot, method, "value")._value.get()


def test_selector_reports_raw_confidence_then_calibrates_on_audit_labels(tmp_path):
    store = SampleStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_schema()
    handler = SelectorHandler(make_settings(tmp_path, budget=0.4, audit_share=0.5), store,
                              BlobStore(tmp_path / "blobs"))
    records, probs, truth = traffic(1000, seed=0)
    for k in range(0, 1000, 250):
        asyncio.run(handler.handle(records[k:k + 250]))
        handler.committed()
    picks = store.samples_by_id(truth)
    audits = {k: s for k, s in picks.items() if s.reason == "audit"}
    assert len(audits) >= 100
    assert all(len(s.meta[PROBS]) == 10 for s in audits.values())
    assert not any(PROBS in s.meta for s in picks.values() if s.reason != "audit")

    raw = handler.label_free.refresh(store, force=True)[1]
    assert raw["cbpe"].value == pytest.approx(probs.max(axis=1).mean(), abs=1e-9) and raw["atc"].n == 0
    store.add_labels(Label(k, truth[k], "alice") for k in audits)
    found = handler.label_free.refresh(store, force=True)[1]
    served = np.array([truth[f"img-1-{i}"] for i in range(1000)])
    accuracy = float((probs.argmax(axis=1) == served).mean())
    assert raw["cbpe"].value > accuracy + 0.05  # over-confident until calibrated
    assert abs(found["cbpe"].value - accuracy) < 0.04
    for e in found.values():  # ATC's threshold rests on the scores of about 200 audits: wider
        assert e.covers(accuracy)

    handler.label_free.every = 0.0  # the worker exports on its next batch
    more, _, _ = traffic(10, seed=1, prefix="more")
    asyncio.run(handler.handle([ConsumerRecord("predictions", 0, 1000 + i, 0, 0, None, r.value, None, 0, 0, [])
                                for i, r in enumerate(more)]))
    assert gauge("serving", "cbpe") == pytest.approx(found["cbpe"].value, abs=0.01)
    assert metrics.LABEL_FREE_AUDITS._value.get() == len(audits)


def test_only_the_newest_versions_are_kept():
    live = LiveLabelFree(window=10, versions=2)
    row = np.array([[0.7, 0.3]])
    for v in (1, 2, 3, 1):
        live.observe([v], row)
    assert sorted(live.estimates()) == [2, 3]


def test_the_display_shows_the_newest_version_raw_before_audits_then_calibrated(tmp_path):
    from io import StringIO
    from types import SimpleNamespace

    from rich.console import Console

    from activestream.display import Display
    from activestream.storage.store import Sample
    from activestream.streams.observer import Observed

    store = SampleStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_schema()
    seen, res = Observed(), SimpleNamespace(store=store)
    _, probs, truth = traffic(300, seed=2)
    seen.label_free.observe([1] * 300, probs)
    now = [1.0]
    display = Display(Console(file=StringIO()), interval=0.0, clock=lambda: now[0])
    audit, free = display._audit(res, seen)
    assert audit == "-" and free.startswith("v1 ") and free.endswith(" raw")
    ids = list(truth)[:60]
    store.add_samples([Sample(k, model_version=1, predicted=int(probs[i].argmax()), reason="audit", selection_prob=0.1,
                              meta={PROBS: probs[i].tolist()}) for i, k in enumerate(ids)])
    store.add_labels(Label(k, truth[k], "alice") for k in ids)
    now[0] = 1000.0  # long past the pace of a read however long it took
    audit, free = display._audit(res, seen)
    assert audit.startswith("v1 ") and " atc " in free and not free.endswith(" raw")
