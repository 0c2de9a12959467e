"""Prometheus metrics of ``activestream label serve`` (docs/metrics.md lists them all).

Answers and their latency are counted as they happen; the queue's state (depth by
lane, oldest waiting item, live leases, answers per labeler) is read from the
database when Prometheus scrapes, so it is right whichever process changed it.

Labelers are people: a label per labeler would grow with the team and put every name
in the metrics. Only the ``TOP_LABELERS`` busiest of the last ``WINDOW`` seconds are
named; everyone else is summed under ``labeler="other"``, and
``activestream_label_labelers_active`` counts them all.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import and_, func, not_, select

from activestream.storage.queue import ANSWERS, ITEMS, LabelQueue

TOP_LABELERS = 10
WINDOW = 3600.0  # seconds of answers behind the per-labeler figures
LANES = ("normal", "audit")  # gold items are never done: they are not a queue to drain

ANSWERS_TOTAL = Counter("activestream_label_answers_total", "Answers from labelers, corrections included (outcome: "
                        "labeled, skipped, unsure)", ["outcome"])
ANSWER_LATENCY = Histogram(
    "activestream_label_answer_latency_seconds", "From a request's arrival in the queue to a labeler's answer to it "
    "(gold items excluded)", ["lane"], buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400))


def labeled(lane: str, queued: float | None, now: float) -> None:
    """Count one label; ``queued`` is when its item arrived (None for gold items, which wait for ever)."""
    ANSWERS_TOTAL.labels("labeled").inc()
    if queued is not None:
        ANSWER_LATENCY.labels(lane).observe(max(0.0, now - queued))


class QueueCollector(Collector):
    """The queue's state at scrape time, in a few aggregate queries."""

    def __init__(self, queue: LabelQueue, clock: Callable[[], float] = time.time):
        self.queue = queue
        self.clock = clock

    def collect(self):
        now = self.clock()
        waiting = GaugeMetricFamily("activestream_label_queue_items", "Items waiting for a labeler (no live lease)",
                                    labels=["lane"])
        oldest = GaugeMetricFamily("activestream_label_queue_oldest_age_seconds",
                                   "Age of the oldest item waiting for a labeler; 0 when none waits", labels=["lane"])
        for lane, (count, first) in self._lanes(now).items():
            waiting.add_metric([lane], count)
            oldest.add_metric([lane], max(0.0, now - first) if count else 0.0)
        leases = GaugeMetricFamily("activestream_label_leases", "Live leases: items handed to a labeler and not "
                                   "answered yet", value=self._leases(now))
        busy = self._busiest(now)
        per = GaugeMetricFamily("activestream_label_labeler_answers", f"Answers in the last {WINDOW:.0f} s by the "
                                f"{TOP_LABELERS} busiest labelers; the rest as labeler=\"other\"", labels=["labeler"])
        for name, n in busy[:TOP_LABELERS]:
            per.add_metric([name], n)
        per.add_metric(["other"], sum(n for _, n in busy[TOP_LABELERS:]))
        active = GaugeMetricFamily("activestream_label_labelers_active",
                                   f"Labelers with an answer in the last {WINDOW:.0f} s", value=len(busy))
        return [waiting, oldest, leases, per, active]

    def _lanes(self, now: float) -> dict[str, tuple[int, float]]:
        live = and_(ITEMS.c.holder.is_not(None), ITEMS.c.until > now)
        query = (select(ITEMS.c.lane, func.count(), func.min(ITEMS.c.created))
                 .where(ITEMS.c.lane.in_(LANES), ITEMS.c.labeled < ITEMS.c.wanted, not_(live))
                 .group_by(ITEMS.c.lane))
        with self.queue.engine.connect() as conn:
            found = {lane: (count, first) for lane, count, first in conn.execute(query)}
        return {lane: found.get(lane, (0, now)) for lane in LANES}

    def _leases(self, now: float) -> int:
        query = select(func.count()).select_from(ITEMS).where(ITEMS.c.holder.is_not(None), ITEMS.c.until > now)
        with self.queue.engine.connect() as conn:
            return conn.scalar(query)

    def _busiest(self, now: float) -> list[tuple[str, int]]:
        n = func.count().label("n")
        query = (select(ANSWERS.c.labeler, n).where(ANSWERS.c.created > now - WINDOW)
                 .group_by(ANSWERS.c.labeler).order_by(n.desc(), ANSWERS.c.labeler))
        with self.queue.engine.connect() as conn:
            return [(name, count) for name, count in conn.execute(query)]

