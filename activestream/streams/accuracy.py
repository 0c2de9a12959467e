"""The serving versions' accuracy on live traffic, estimated honestly from the labels they got.

Labels of audit items (a uniform random sample) give an unbiased estimate with a 95%
interval; inverse-propensity weighting uses every label; the naive mean over every
label is shown beside them because it is what a careless dashboard would report, and
it is biased low (the selector picks the model's weak spots).

:class:`LiveLabelFree` adds the label-free estimates (CBPE and ATC, see
:mod:`activestream.learners.label_free`): the served confidences of the traffic in a
bounded window per version, calibrated on the newest audit labels to arrive (read a
bounded slice at a time, see :mod:`activestream.streams.audits`), whose served
probabilities the selector keeps in the sample's ``meta["probs"]``.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict

import numpy as np

from activestream.learners import estimates as est
from activestream.learners.estimates import Estimate
from activestream.learners.label_free import LabelFree
from activestream.storage.registry import ModelVersion
from activestream.storage.store import Outcome, SampleStore
from activestream.streams.audits import AUDIT, PROBS, Audit, AuditFeed

__all__ = ["AUDIT", "PROBS", "LiveLabelFree", "by_version", "estimates", "newest", "slots"]


def estimates(outcomes: list[Outcome]) -> dict[str, Estimate]:
    """``audit``, ``ipw`` and ``naive`` accuracy of the predictions behind ``outcomes``.

    >>> rows = [Outcome("a", 1, 0, "audit", 0.01, 0), Outcome("b", 1, 1, "uncertain", 0.5, 2)]
    >>> {k: round(e.value, 3) for k, e in estimates(rows).items()}
    {'audit': 1.0, 'ipw': 0.98, 'naive': 0.5}
    """
    return est.estimates(np.array([o.predicted == o.label for o in outcomes], dtype=bool),
                         np.array([o.reason == AUDIT for o in outcomes], dtype=bool),
                         np.array([o.selection_prob for o in outcomes], dtype=np.float64))


def slots(versions: list[ModelVersion]) -> dict[str, int]:
    """The versions the live-accuracy metrics name: ``serving`` (the version in force, the
    promoted one promoted last) and ``previous`` (the promoted one before it, which a
    rollback would serve).

    >>> from types import SimpleNamespace as V
    >>> slots([V(version=1, status="promoted", promotion=1), V(version=2, status="rejected", promotion=0),
    ...        V(version=3, status="promoted", promotion=2)])
    {'serving': 3, 'previous': 1}
    """
    promoted = sorted((v for v in versions if v.status == "promoted"), key=lambda v: (v.promotion, v.version))
    return dict(zip(("serving", "previous"), (v.version for v in reversed(promoted[-2:]))))


def by_version(outcomes: list[Outcome]) -> dict[int, dict[str, Estimate]]:
    """:func:`estimates` for each model version that made the predictions."""
    groups: dict[int, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[o.model_version].append(o)
    return {version: estimates(rows) for version, rows in sorted(groups.items())}


class LiveLabelFree:
    """Label-free accuracy of the newest ``versions`` model versions on the traffic one process sees.

    ``observe`` takes served predictions (cheap: rows into bounded windows); ``refresh``
    reads the audit labels that arrived since its last read (at most ``calibration``) at
    most every ``every`` seconds, recalibrates on the newest ``calibration`` of them, and
    returns the estimates per version. Memory: ``versions * (window + calibration)``
    probability rows. ``poll`` and ``take`` split ``refresh`` for a caller that also
    feeds the arrived audits to its drift monitor and must be able to poll again.

    >>> live = LiveLabelFree(window=100)
    >>> live.observe([3, 3], np.array([[0.9, 0.1], [0.6, 0.4]]))
    >>> {v: round(e["cbpe"].value, 2) for v, e in live.estimates().items()}   # no audits yet: raw confidence
    {3: 0.75}
    """

    def __init__(self, window: int = 4000, calibration: int = 1000, versions: int = 2, every: float = 10.0):
        self.window, self.calibration, self.versions, self.every = window, calibration, versions, every
        self._by_version: OrderedDict[int, LabelFree] = OrderedDict()
        self._refreshed = -float("inf")
        self._feed = AuditFeed(limit=calibration)
        self._audits: OrderedDict[str, Audit] = OrderedDict()  # sample id -> its newest audit label, by arrival
        self.audits_ = 0

    def observe(self, versions, probs: np.ndarray) -> None:
        """Served predictions: the version that made each, and its probabilities ``[n, classes]``."""
        versions = np.asarray(versions, dtype=np.int64)
        distinct = set(versions.tolist())  # the observer calls this per message: no numpy sort for one row
        for v in sorted(distinct):
            if v not in self._by_version:
                if self._by_version and v < min(self._by_version) and len(self._by_version) >= self.versions:
                    continue  # a straggler from a version already dropped
                self._by_version[v] = LabelFree(self.window, self.calibration)
                self._by_version = OrderedDict(sorted(self._by_version.items())[-self.versions:])
                self._recalibrate(self._by_version.get(v))
            if v in self._by_version:
                rows = np.asarray(probs)
                self._by_version[v].observe(rows if len(distinct) == 1 else rows[versions == v])

    def refresh(self, store: SampleStore, force: bool = False) -> dict[int, dict[str, Estimate]] | None:
        """Recalibrate on the audit labels that arrived and return :meth:`estimates`; None
        when the last refresh was under ``every`` seconds ago."""
        arrived = self.poll(store, force)
        return None if arrived is None else self.take(arrived)

    def poll(self, store: SampleStore, force: bool = False) -> list[Audit] | None:
        """The audit labels that arrived since the last :meth:`take` (a bounded read); None
        when the last poll was under ``every`` seconds ago. Changes nothing else."""
        if not force and time.monotonic() - self._refreshed < self.every:
            return None
        self._refreshed = time.monotonic()
        return self._feed.poll(store)

    def take(self, arrived: list[Audit]) -> dict[int, dict[str, Estimate]]:
        """Keep ``arrived`` (from :meth:`poll`), recalibrate, and return :meth:`estimates`."""
        self._feed.commit(arrived)
        for a in arrived:
            if a.probs:
                self._audits.pop(a.outcome.sample_id, None)  # a second labeler's answer: the newest counts
                self._audits[a.outcome.sample_id] = a
        while len(self._audits) > self.calibration:
            self._audits.popitem(last=False)
        self.audits_ = len(self._audits)
        for lf in self._by_version.values():
            self._recalibrate(lf)
        return self.estimates()

    def _recalibrate(self, lf: LabelFree | None) -> None:
        if lf is not None and self._audits:
            lf.recalibrate(*_arrays(list(self._audits.values())))

    def estimates(self) -> dict[int, dict[str, Estimate]]:
        return {v: lf.estimate() for v, lf in self._by_version.items()}

    def calibrated(self) -> bool:
        return any(lf.calibrated for lf in self._by_version.values())


def _arrays(audits: list[Audit]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The served probabilities ``[m, classes]``, labels ``[m]`` and serving versions ``[m]``
    of ``audits`` of the commonest width (a label outside it is dropped)."""
    width = max({len(a.probs) for a in audits}, key=lambda w: sum(len(a.probs) == w for a in audits))
    kept = [a for a in audits if len(a.probs) == width and 0 <= a.outcome.label < width]
    return (np.array([a.probs for a in kept], dtype=np.float64).reshape(len(kept), width),
            np.array([a.outcome.label for a in kept], dtype=np.int64),
            np.array([a.outcome.model_version for a in kept], dtype=np.int64))


def newest(estimates: dict[int, dict[str, Estimate]]) -> dict[str, int]:
    """Slots by the versions a process sees in its traffic: the newest ``serving``, the one
    before it ``previous`` (the selector's label-free estimates, which have no registry).

    >>> newest({3: {}, 5: {}})
    {'serving': 5, 'previous': 3}
    """
    return dict(zip(("serving", "previous"), sorted(estimates, reverse=True)))
