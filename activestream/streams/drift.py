"""The selector's drift watch: the core's :class:`~activestream.drift.DriftMonitor` on the
predictions it scores (their confidences, classes and, when they carry them, embeddings)
and on the audit labels that arrive for them (see :mod:`activestream.streams.audits`), a
``drift`` message and metrics for each detection, and the reactions the settings ask for
(a budget boost here; the learner trains early on reading the message, see
:class:`activestream.streams.learner.DriftHandler`).

A restarted selector keeps its boost (it is stored with the budget) but starts its
monitor afresh: the reference windows are rebuilt from the traffic that follows, and
the audit reference from the newest audit labels in the store.
"""

from __future__ import annotations

import copy
import logging
import time

import numpy as np

from activestream.config import Settings
from activestream.drift import KINDS, SIGNALS, DriftEvent, make_monitor
from activestream.selectors import AdaptiveBudget
from activestream.selectors.boost import DriftBoost
from activestream.streams import metrics
from activestream.streams.audits import Audit
from activestream.streams.messages import DriftV1
from activestream.streams.stage import Output

log = logging.getLogger(__name__)


def boosted(settings: Settings, budget: AdaptiveBudget) -> AdaptiveBudget | DriftBoost:
    """``budget``, wrapped to rise after a detection unless the settings switch that off."""
    if settings.drift_budget_factor > 1 and settings.drift_budget_images > 0 and settings.drift_detectors != "none":
        return DriftBoost(budget, factor=settings.drift_budget_factor, images=settings.drift_budget_images)
    return budget


class DriftWatch:
    """One selector process's monitor; ``observe`` is replayable: it works on a copy that
    :meth:`commit` keeps once the batch's decisions are stored."""

    def __init__(self, settings: Settings, instance_key: str):
        self.settings = settings
        self.key = instance_key
        self.monitor = make_monitor(settings.drift_detectors, run_length=settings.drift_run_length,
                                    seed=settings.seed)
        self._next = None
        self._pending: tuple[DriftEvent, ...] = ()
        if self.monitor is not None:
            # Every series exists at 0 from the start: a counter born at 1 on its first
            # detection shows no increase() in Prometheus, and the drift alert would never fire.
            for signal in SIGNALS:
                for kind in KINDS:
                    metrics.DRIFT_DETECTIONS.labels(kind, signal)

    def observe(self, items: list, probs: np.ndarray, position: int,
                audits: list[Audit] = ()) -> tuple[DriftEvent, ...]:
        """Detections in this batch of (record, PredictionV1) ``items``, the first at stream
        ``position``, and in the audit labels that arrived with it (state kept by :meth:`commit`).

        Only the newest version's predictions are watched: a straggler from an older
        version must not restart the newer version's detectors. Audits count for the
        version they judge, when it is the one watched.
        """
        if self.monitor is None:
            return ()
        versions = np.array([m.version for _, m in items])
        newest = int(versions.max())
        monitor = copy.deepcopy(self.monitor)
        events: tuple[DriftEvent, ...] = ()
        if newest >= monitor.version_:
            mine = versions == newest
            monitor.observe(newest, probs[mine], position, _embeddings([m for (_, m), k in zip(items, mine) if k]))
            events = monitor.events_
        errors = [a.wrong for a in audits if a.outcome.model_version == monitor.version_]
        if errors:
            monitor.observe_audit(monitor.version_, np.array(errors, dtype=np.float64), position + len(items) - 1)
            events += monitor.events_
        self._next = monitor
        return events

    def messages(self, events: tuple[DriftEvent, ...]) -> list[Output]:
        name = self.settings.model_name
        return [Output(self.settings.topic_drift, name.encode(), DriftV1(
            model=name, version=e.version, detector=e.detector, signal=e.signal, position=e.position,
            statistic=_finite(e.statistic), threshold=e.threshold, selector=self.key).encode()) for e in events]

    def commit(self, events: tuple[DriftEvent, ...]) -> None:
        """The batch is stored: keep the monitor's new state; count what it detected."""
        if self._next is not None:
            self.monitor, self._next = self._next, None
        self._pending += events

    def published(self, budget) -> None:
        """The batch's outputs are on the broker: export its detections and the budget's multiplier."""
        for e in self._pending:
            metrics.DRIFT_DETECTIONS.labels(e.detector, e.signal).inc()
            metrics.DRIFT_LAST_DETECTION.set(time.time())
            log.warning("drift: %s on %s of v%d at image %d (statistic %.4g, threshold %.4g)", e.detector, e.signal,
                        e.version, e.position, e.statistic, e.threshold)
        self._pending = ()
        boosting = isinstance(budget, DriftBoost) and budget.remaining_ > 0
        metrics.DRIFT_BUDGET_MULTIPLIER.set(budget.factor if boosting else 1.0)


def _embeddings(msgs: list) -> np.ndarray | None:
    """The predictions' embeddings ``[n, dim]``; None unless every one carries one, all as wide."""
    if not msgs or any(not m.embedding for m in msgs) or len({len(m.embedding) for m in msgs}) != 1:
        return None
    return np.array([m.embedding for m in msgs], dtype=np.float64)


def _finite(x: float) -> float:
    return float(x) if np.isfinite(x) else 0.0
