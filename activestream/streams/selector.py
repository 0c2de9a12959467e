"""Selector: ``predictions`` -> uncertainty score -> budget -> ``labeling.requests``.

The score comes from a core selector and the decision from a core budget manager,
the same objects the simulator runs. The budget's ``query`` is pure and its
``update`` runs only after the batch's requests are on the broker, so a batch
redelivered after a rebalance is decided the same way.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter, OrderedDict
from typing import Sequence

import numpy as np
from aiokafka.structs import ConsumerRecord

from activestream.config import Settings
from activestream.errors import InvalidInput
from activestream.selectors import AdaptiveBudget, DiversityFilter, make_selector, validate_probs
from activestream.storage.blobs import BlobStore
from activestream.storage.store import Sample, SampleStore
from activestream.streams import metrics
from activestream.streams.messages import LabelRequestV1, PredictionV1, parse
from activestream.streams.stage import DeadLetters, Output

TOP_K = 3


class RecentIds:
    """A bounded set of recently seen ids: redelivered predictions are not scored twice."""

    def __init__(self, size: int = 200_000):
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._ids

    def add(self, key: str) -> None:
        self._ids[key] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)


class SelectorHandler:
    pipelined = False  # the budget's update must land before the next query
    def __init__(self, settings: Settings, store: SampleStore, blobs: BlobStore):
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.scorer = make_selector(settings.strategy)
        self.budget = AdaptiveBudget(settings.budget, window=settings.budget_window,
                                     audit_share=settings.audit_share, seed=settings.seed,
                                     cap=settings.budget_cap or None, quotas=settings.class_quota or None)
        self.dead = DeadLetters(settings.topic_deadletter, "selector")
        self.recent = RecentIds()
        self.diversity = (DiversityFilter(settings.diversity_radius, memory=settings.diversity_memory)
                          if settings.diversity_radius > 0 else None)
        self._space = None  # (model, version) whose embeddings the diversity filter remembers
        self._pending = None

    async def handle(self, records: Sequence[ConsumerRecord]) -> list[Output]:
        outputs, fresh = [], {}
        for record in records:
            try:
                msg = parse(PredictionV1, record.value)
            except InvalidInput as e:
                outputs.append(self.dead.output(record, e))
                continue
            if msg.id not in self.recent and msg.id not in fresh:
                fresh[msg.id] = (record, msg)
        if not fresh:
            return outputs
        items = list(fresh.values())
        try:
            probs = validate_probs(np.array([m.probs for _, m in items], dtype=np.float64))
        except (InvalidInput, ValueError):  # one bad or ragged row spoils the matrix: row by row
            items, dead = self._valid_rows(items)
            outputs.extend(self.dead.output(r, err) for r, err in dead)
            if not items:
                return outputs
            probs = np.array([m.probs for _, m in items], dtype=np.float64)
        scores = self.scorer.score(probs)
        classes = probs.argmax(axis=1) if self.budget.quotas is not None else None
        space, embedded, eligible = self._eligible(items, scores)
        decision = self.budget.query(scores, [m.id for _, m in items], classes=classes, eligible=eligible)
        chosen = [(items[i][1], i) for i in np.flatnonzero(decision.selected)]
        if chosen:
            await asyncio.to_thread(self._persist, chosen, scores, decision)
            outputs.extend(self._requests(chosen, scores, decision))
        self._pending = (items, scores, decision, space, embedded)
        return outputs

    def _eligible(self, items: list, scores: np.ndarray):
        """The diversity filter's verdict (pure): near-duplicates of recent picks are not eligible.

        Only the newest model version's embeddings are compared (each version embeds
        differently); items without one, or from another version, stay eligible.
        Returns the version compared in, the rows compared, and the mask (None: all eligible).
        """
        if self.diversity is None:
            return None, None, None
        spaces = [(m.model, m.version) for _, m in items if m.embedding]
        if not spaces:
            return None, None, None
        space = max(spaces, key=lambda mv: mv[1])
        if self._space is not None and space[1] < self._space[1]:
            space = self._space  # a straggler from an older version: do not forget the newer one
        rows = [i for i, (_, m) in enumerate(items) if m.embedding and (m.model, m.version) == space]
        if not rows:
            return None, None, None
        width = Counter(len(items[i][1].embedding) for i in rows).most_common(1)[0][0]
        rows = [i for i in rows if len(items[i][1].embedding) == width]
        embedded = np.array([items[i][1].embedding for i in rows], dtype=np.float64)
        checker = self.diversity if space == self._space else DiversityFilter(self.diversity.radius,
                                                                              memory=self.diversity.memory)
        try:
            ok = checker.query(embedded, scores[rows])
        except InvalidInput:  # ragged or non-finite features: judge the batch without them
            return None, None, None
        eligible = np.ones(len(items), dtype=bool)
        eligible[rows] = ok
        return space, (np.array(rows), embedded), eligible

    def committed(self) -> None:
        if self._pending is None:
            return
        items, scores, decision, space, embedded = self._pending
        self._pending = None
        self.budget.update(scores, decision)
        if embedded is not None:
            if space != self._space:
                self.diversity.clear()
                self._space = space
            rows, features = embedded
            self.diversity.update(features, decision.selected[rows])
        for _, msg in items:
            self.recent.add(msg.id)
        metrics.SCORED.inc(len(items))
        metrics.THRESHOLD.set(decision.threshold)
        for reason in decision.reason:
            if reason:
                metrics.SELECTED.labels(reason).inc()

    def _valid_rows(self, items: list) -> tuple[list, list]:
        """Rows that are valid alone and as wide as most of the batch; the rest with their errors."""
        good, dead = [], []
        for record, msg in items:
            try:
                validate_probs(np.array([msg.probs], dtype=np.float64))
                good.append((record, msg))
            except (InvalidInput, ValueError) as e:
                dead.append((record, e if isinstance(e, InvalidInput) else InvalidInput("bad_probs", str(e))))
        if good:
            width = Counter(len(m.probs) for _, m in good).most_common(1)[0][0]
            dead += [(r, InvalidInput("bad_probs", f"{len(m.probs)} class probabilities, the batch's "
                                                   f"predictions have {width}"))
                     for r, m in good if len(m.probs) != width]
            good = [(r, m) for r, m in good if len(m.probs) == width]
        return good, dead

    def _persist(self, chosen: list, scores: np.ndarray, decision) -> None:
        samples = []
        for msg, i in chosen:
            key = None
            if msg.image is not None:
                key = self.blobs.put(msg.id, base64.b64decode(msg.image))
            samples.append(Sample(
                id=msg.id, blob_key=key, source=msg.uri or "", model_version=msg.version, predicted=msg.label,
                score=float(scores[i]), reason=decision.reason[i], selection_prob=float(decision.probability[i]),
            ))
        self.store.add_samples(samples)

    def _requests(self, chosen: list, scores: np.ndarray, decision) -> list[Output]:
        now, outputs = time.time(), []
        for msg, i in chosen:
            top = np.argsort(msg.probs)[::-1][:TOP_K]
            request = LabelRequestV1(
                id=msg.id, uri=f"blob:{msg.id}" if msg.image is not None else msg.uri,
                reason=decision.reason[i], score=float(scores[i]), probability=float(decision.probability[i]),
                model=msg.model, version=msg.version, top=[(int(c), float(msg.probs[c])) for c in top],
                priority=float(decision.priority[i]), ts=now,
            )
            outputs.append(Output(self.settings.topic_requests, msg.id.encode(), request.encode()))
        return outputs
