"""Audit labels as they arrive, read from the store a bounded slice at a time.

Audit items are a uniform random sample of the traffic; their labels arrive long after
the predictions they judge. The selector learns them here, for two uses: its label-free
estimates calibrate on them (with the probabilities it served, which it kept in each
audit sample's ``meta["probs"]``) and its drift monitor watches their errors.

Each read asks the store for the newest labels only (:meth:`SampleStore.recent_outcomes`,
at most ``limit``), given since the newest one already taken, less an ``overlap``: a
label's time is set by the process that writes it, before its transaction commits, so
one may become visible after a later one was read. Labels read twice within the overlap
are recognised and taken once; a sample labelled again (a second labeler, a correction)
comes back with its new majority label. When more than ``limit`` arrive between two reads, the
oldest of them are never seen: the read stays bounded whatever the traffic.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from activestream.storage.store import Outcome, SampleStore

AUDIT = "audit"
PROBS = "probs"  # the key of the served probabilities in an audit sample's meta


@dataclass(frozen=True)
class Audit:
    """One arrived audit label: the prediction it judges, and the probabilities served with it."""

    outcome: Outcome
    probs: tuple[float, ...] | None

    @property
    def wrong(self) -> bool:
        return self.outcome.predicted != self.outcome.label


class AuditFeed:
    """``poll`` reads what arrived since the last ``commit`` (nothing changes until then, so
    a batch that fails to store can poll again); ``commit`` takes it.

    >>> from activestream.storage.store import Label, Sample
    >>> store = SampleStore("sqlite://")
    >>> store.create_schema()
    >>> _ = store.add_samples([Sample(f"s{i}", model_version=1, predicted=0, reason="audit", selection_prob=0.05,
    ...                                meta={"probs": [0.8, 0.2]}) for i in range(3)])
    >>> _ = store.add_labels([Label("s0", 0, "ann"), Label("s1", 1, "ann")])
    >>> feed = AuditFeed(limit=100)
    >>> first = feed.poll(store)
    >>> [(a.outcome.sample_id, a.wrong, a.probs) for a in first]
    [('s0', False, (0.8, 0.2)), ('s1', True, (0.8, 0.2))]
    >>> feed.commit(first)
    >>> _ = store.add_labels([Label("s2", 1, "ann")])
    >>> [a.outcome.sample_id for a in feed.poll(store)]   # only what is new
    ['s2']
    """

    def __init__(self, limit: int = 1000, overlap: float = 30.0):
        self.limit = limit
        self.overlap = overlap
        self.since_: datetime | None = None        # the newest label time taken
        self._taken: OrderedDict[tuple[str, datetime], None] = OrderedDict()  # within the overlap

    def poll(self, store: SampleStore) -> list[Audit]:
        """Audit labels not taken yet, oldest first (at most ``limit``)."""
        since = None if self.since_ is None else self.since_ - timedelta(seconds=self.overlap)
        rows = [o for o in reversed(store.recent_outcomes(self.limit, (AUDIT,), since))
                if (o.sample_id, o.labelled) not in self._taken]
        samples = store.samples_by_id(o.sample_id for o in rows)
        return [Audit(o, _probs(samples[o.sample_id].meta) if o.sample_id in samples else None) for o in rows]

    def commit(self, audits: list[Audit]) -> None:
        """Take ``audits`` (from :meth:`poll`): they are not returned again."""
        for a in audits:
            self._taken[(a.outcome.sample_id, a.outcome.labelled)] = None
            if self.since_ is None or a.outcome.labelled > self.since_:
                self.since_ = a.outcome.labelled
        if self.since_ is not None:  # forget what the next read cannot return again
            horizon = self.since_ - timedelta(seconds=self.overlap)
            while self._taken and (next(iter(self._taken))[1] < horizon or len(self._taken) > 10 * self.limit):
                self._taken.popitem(last=False)


def _probs(meta: dict) -> tuple[float, ...] | None:
    probs = meta.get(PROBS)
    return tuple(float(p) for p in probs) if probs else None
