"""Audit labels read as they arrive: each read is bounded and returns only what is new, a
read not taken comes back, and a label made visible late within the overlap is not lost."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

from activestream.storage.store import Label, Sample, SampleStore
from activestream.streams.accuracy import LiveLabelFree
from activestream.streams.audits import PROBS, AuditFeed
from tests.test_store import counting_reads

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def audit_store(tmp_path, n: int) -> SampleStore:
    """``n`` audit picks of version 1, each with the probabilities served for it."""
    store = SampleStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_schema()
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3) * 0.5, size=n)
    store.add_samples(Sample(f"a{i:05d}", model_version=1, predicted=int(p.argmax()), reason="audit",
                             selection_prob=0.05, meta={PROBS: p.round(6).tolist()}) for i, p in enumerate(probs))
    return store


def label(store: SampleStore, ids: range, minutes: float = 0.0, labeler: str = "ann") -> None:
    """Label ``ids`` (each with class 0), one second apart from ``minutes`` after T0."""
    store.add_labels(Label(f"a{i:05d}", 0, labeler, created=T0 + timedelta(minutes=minutes, seconds=k))
                     for k, i in enumerate(ids))


def test_each_poll_returns_what_arrived_since_the_last_one_taken(tmp_path):
    store = audit_store(tmp_path, 100)
    label(store, range(0, 40))
    feed = AuditFeed(limit=1000, overlap=30.0)
    first = feed.poll(store)
    assert [a.outcome.sample_id for a in first] == [f"a{i:05d}" for i in range(40)]  # oldest first
    assert feed.poll(store) == first  # nothing taken yet: the same again
    feed.commit(first)
    assert feed.poll(store) == []
    label(store, range(40, 50), minutes=10)
    # committed late with an earlier time than the newest taken, within the overlap
    store.add_labels([Label("a00090", 0, "ann", created=T0 + timedelta(seconds=39 - 20))])
    label(store, range(5, 6), minutes=11, labeler="bob")  # a second labeler: its sample comes back
    again = feed.poll(store)
    assert sorted(a.outcome.sample_id for a in again) == ["a00005", *(f"a{i:05d}" for i in range(40, 50)), "a00090"]
    assert all(a.probs is not None and len(a.probs) == 3 for a in again)


def test_the_label_free_estimates_read_a_bounded_slice_however_many_audits_the_store_holds(tmp_path):
    store = audit_store(tmp_path, 3000)
    label(store, range(0, 3000))
    live = LiveLabelFree(window=100, calibration=200)
    live.observe([1] * 50, np.full((50, 3), 1 / 3))
    reads = counting_reads(store)
    live.refresh(store, force=True)
    assert live.audits_ == 200 and max(reads) <= 200  # the newest 200 of 3,000
    reads.clear()
    label(store, range(0, 50), minutes=120, labeler="bob")  # 50 new answers, two hours on
    live.refresh(store, force=True)
    # the label rows read: the 50 new answers and the 31 of the last 30 s before them (the
    # overlap); then those samples' labels (two each for the 50) and their served probabilities
    assert live.audits_ == 200 and reads[0] == 50 + 31 and max(reads) <= 2 * 81
    assert live.calibrated()
