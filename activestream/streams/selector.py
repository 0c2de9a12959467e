"""Selector: ``predictions`` -> uncertainty score -> budget -> ``labeling.requests``.

The score comes from a core selector and the decision from a core budget manager,
the same objects the simulator runs. A batch's decisions land in the store in one
transaction: the chosen samples (with the embeddings the diversity filter remembers),
the budget's state after the batch, and how far into each partition the selector has
decided. After a restart
(even a SIGKILL) the selector restores that state, does not decide again what it had
decided, and requests again every stored sample of a redelivered batch: a request
stored is a request produced, and the budget windows keep their counts.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import Counter, OrderedDict
from typing import Sequence

import numpy as np
from aiokafka.structs import ConsumerRecord

from activestream.config import Settings
from activestream.errors import InvalidInput
from activestream.selectors import AdaptiveBudget, Decision, DiversityFilter, make_selector, validate_probs
from activestream.storage.blobs import BlobStore
from activestream.storage.checkpoints import Checkpoint
from activestream.storage.fetch import Fetcher
from activestream.storage.store import Sample, SampleStore
from activestream.selectors.boost import DriftBoost
from activestream.streams import metrics, picks, selection_state
from activestream.streams.accuracy import AUDIT, PROBS, LiveLabelFree, newest
from activestream.streams.fetch import fetcher_from
from activestream.streams.drift import DriftWatch, boosted
from activestream.streams.messages import LabelRequestV1, PredictionV1, parse
from activestream.streams.stage import DeadLetters, Output

TOP_K = 3
SELECTED_REASONS = ("uncertain", "audit", "drift")


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
    pipelined = False  # a batch's budget state must land before the next is decided

    def __init__(self, settings: Settings, store: SampleStore, blobs: BlobStore, instance: int = 1,
                 fetcher: Fetcher | None = None):
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.instance = instance
        # resolves each pick's image reference (kafka: ones too, given the broker) for the blob store
        self.fetcher = fetcher if fetcher is not None else fetcher_from(settings, settings.bootstrap)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.scorer = make_selector(settings.strategy)
        self.budget = boosted(settings, AdaptiveBudget(
            settings.budget, window=settings.budget_window, audit_share=settings.audit_share, seed=settings.seed,
            cap=settings.budget_cap or None, quotas=settings.class_quota or None))
        self.dead = DeadLetters(settings.topic_deadletter, "selector")
        self.recent = RecentIds()
        self.diversity = (DiversityFilter(settings.diversity_radius, memory=settings.diversity_memory)
                          if settings.diversity_radius > 0 else None)
        self._space = None  # (model, version) whose embeddings the diversity filter remembers
        self._pending = None
        self.label_free = LiveLabelFree()
        self.drift = DriftWatch(settings, self.key)

    @property
    def group(self) -> str:
        return self.settings.group("selector")

    @property
    def key(self) -> str:
        return f"{self.group}/{self.instance}"

    def restore(self) -> bool:
        """Take up the budget this instance last stored, and the diversity memory of the
        latest picks; False if there was nothing to take up."""
        saved = self.store.checkpoint(self.key)
        if saved is None or not selection_state.decode(saved[0], self.budget):
            return False
        space = saved[1].get("space")
        self._space = tuple(space) if space else None
        if self.diversity is not None and self._space is not None:
            recent = self.store.recent_samples(self.diversity.memory, SELECTED_REASONS)
            selection_state.rebuild(self.diversity, recent, self._space)
        return True

    async def handle(self, records: Sequence[ConsumerRecord]) -> list[Output]:
        self._loop = asyncio.get_running_loop()
        outputs, fresh = [], {}
        for record in records:
            try:
                msg = parse(PredictionV1, record.value)
            except InvalidInput as e:
                outputs.append(self.dead.output(record, e))
                continue
            if msg.id not in self.recent and msg.id not in fresh:
                fresh[msg.id] = (record, msg)
        items = list(fresh.values())
        if items:
            try:
                probs = validate_probs(np.array([m.probs for _, m in items], dtype=np.float64))
            except (InvalidInput, ValueError):  # one bad or ragged row spoils the matrix: row by row
                items, dead = self._valid_rows(items)
                outputs.extend(self.dead.output(r, err) for r, err in dead)
                probs = np.array([m.probs for _, m in items], dtype=np.float64)
        if not items:  # only repeats and bad records: nothing to decide, but the batch is done with
            await asyncio.to_thread(self._advance, _next_offsets(records))
            return outputs
        outputs.extend(await asyncio.to_thread(self._decide, items, probs, _next_offsets(records)))
        return outputs

    def _decide(self, items: list, probs: np.ndarray, positions: dict[tuple[str, int], int]) -> list[Output]:
        known = self.store.positions(self.group, {(r.topic, r.partition) for r, _ in items})
        stored = {k: s for k, s in self.store.samples_by_id(m.id for _, m in items).items()
                  if s.reason in SELECTED_REASONS and s.selection_prob}
        decided = np.array([r.offset < known.get((r.topic, r.partition), 0) for r, _ in items], dtype=bool)
        # Decided before a restart: what was chosen then is requested again (sinks are idempotent by id).
        outputs = [self._again(m, stored[m.id]) for (_, m), done in zip(items, decided) if done and m.id in stored]
        todo = [item for item, done in zip(items, decided) if not done]
        if not todo:
            self._advance(positions)
            return outputs
        # The audit labels that arrived, at most every few seconds (two bounded store reads):
        # the drift monitor watches their errors, the label-free estimates calibrate on them.
        arrived = self.label_free.poll(self.store)
        outputs.extend(self._choose(todo, probs[~decided], stored, positions, arrived or []))
        if arrived is not None:
            found = self.label_free.take(arrived)
            # Slots by the versions in this selector's traffic: the selector has no registry.
            metrics.export_live(self.settings.model_name, newest(found), found, ("cbpe", "atc"), count_labels=False)
            metrics.LABEL_FREE_AUDITS.set(self.label_free.audits_)
        return outputs

    def _choose(self, items: list, probs: np.ndarray, stored: dict[str, Sample],
                positions: dict[tuple[str, int], int], arrived: list) -> list[Output]:
        scores = self.scorer.score(probs)
        classes = probs.argmax(axis=1) if self.budget.quotas is not None else None
        space, embedded, eligible = self._eligible(items, scores)
        decision = _keep_stored(self.budget.query(scores, [m.id for _, m in items], classes=classes,
                                                  eligible=eligible), items, stored)
        # Every pick's bytes go to the blob store before it counts: one that cannot be had is
        # dead-lettered and not chosen, so no budget is spent on an image nobody could label.
        decision, unusable = picks.store_images(self.blobs, self._fetch_many, items, decision, stored)
        budget = copy.deepcopy(self.budget)
        budget.update(scores, decision)
        events = self.drift.observe(items, probs, self.budget.seen_, arrived)
        if events and isinstance(budget, DriftBoost):
            budget.trigger()  # before the state is stored: a restarted selector keeps boosting
        after = space if embedded is not None else self._space
        chosen = [(items[i][1], i) for i in np.flatnonzero(decision.selected)]
        start = self.budget.seen_  # the batch's place in this selector's stream, kept by every pick
        samples = [self._sample(msg, scores[i], decision, i, after, start + int(i))
                   for msg, i in chosen if msg.id not in stored]
        state = Checkpoint(self.key, selection_state.encode(budget), self.group, positions,
                           {"space": list(after) if after else None})
        self.store.add_samples(samples, state)
        self.budget = budget
        self.drift.commit(events)
        self._remember(decision, space, embedded)
        self._pending = (items, scores, decision)
        return [self.dead.output(record, e) for record, e in unusable] + [
            self._request(msg, decision.reason[i], float(scores[i]), float(decision.probability[i]),
                          float(decision.priority[i]), f"blob:{msg.id}") for msg, i in chosen
        ] + self.drift.messages(events)

    def _advance(self, positions: dict[tuple[str, int], int]) -> None:
        """Store that a batch with nothing new to decide was read: the stored positions say how
        far the selectors have decided, and ``run`` waits for them to reach the end."""
        self.store.add_samples([], Checkpoint(self.key, selection_state.encode(self.budget), self.group, positions,
                                              {"space": list(self._space) if self._space else None}))

    def _fetch_many(self, uris: list[str]) -> list:
        """Resolve references from the deciding thread on the event loop, which stays free meanwhile."""
        return asyncio.run_coroutine_threadsafe(self.fetcher.fetch_many(uris), self._loop).result()

    def _remember(self, decision: Decision, space, embedded) -> None:
        """Commit the batch's picks to the diversity memory (of ``space``'s embeddings)."""
        if embedded is None:
            return
        if space != self._space:
            self.diversity.clear()
            self._space = space
        rows, features = embedded
        self.diversity.update(features, decision.selected[rows])

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
        items, scores, decision = self._pending
        self._pending = None
        for _, msg in items:
            self.recent.add(msg.id)
        self.drift.published(self.budget)
        self.label_free.observe([m.version for _, m in items], np.array([m.probs for _, m in items]))
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

    def _sample(self, msg: PredictionV1, score: float, decision: Decision, i: int, space, position: int) -> Sample:
        remembered = self.diversity is not None and (msg.model, msg.version) == space
        # selector and position say which budget window the pick was spent in, across restarts
        meta = {"priority": float(decision.priority[i]), "selector": self.key, "position": position,
                **selection_state.pick_meta(msg.embedding if remembered else None, space)}
        if decision.reason[i] == AUDIT:  # the label-free estimates calibrate on audits' served probabilities
            meta[PROBS] = [round(float(p), 6) for p in msg.probs]
        return Sample(id=msg.id, blob_key=msg.id, source=msg.uri or "", model_version=msg.version, predicted=msg.label,
                      score=float(score), reason=decision.reason[i], selection_prob=float(decision.probability[i]),
                      meta=meta)

    def _again(self, msg: PredictionV1, sample: Sample) -> Output:
        uri = f"blob:{sample.blob_key}" if sample.blob_key else msg.uri  # stored before every pick had a blob
        return self._request(msg, sample.reason, sample.score or 0.0, sample.selection_prob,
                             sample.meta.get("priority", 1.0), uri)

    def _request(self, msg: PredictionV1, reason: str, score: float, probability: float, priority: float,
                 uri: str) -> Output:
        top = np.argsort(msg.probs)[::-1][:TOP_K]
        request = LabelRequestV1(
            id=msg.id, uri=uri, reason=reason, score=score,
            probability=probability, model=msg.model, version=msg.version,
            top=[(int(c), float(msg.probs[c])) for c in top], priority=priority, ts=time.time(),
        )
        return Output(self.settings.topic_requests, msg.id.encode(), request.encode())


def _next_offsets(records: Sequence[ConsumerRecord]) -> dict[tuple[str, int], int]:
    """Per partition, the offset after the batch's last record."""
    out: dict[tuple[str, int], int] = {}
    for r in records:
        out[(r.topic, r.partition)] = max(out.get((r.topic, r.partition), 0), r.offset + 1)
    return out


def _keep_stored(decision: Decision, items: list, stored: dict[str, Sample]) -> Decision:
    """``decision`` with every item already stored as chosen (a restart between storing and
    requesting it) chosen again, as it was: the budget counts it once, here."""
    again = [i for i, (_, m) in enumerate(items) if m.id in stored]
    if not again:
        return decision
    selected, probability = decision.selected.copy(), decision.probability.copy()
    priority, reason = decision.priority.copy(), list(decision.reason)
    for i in again:
        s = stored[items[i][1].id]
        selected[i], probability[i], reason[i] = True, s.selection_prob, s.reason
        priority[i] = s.meta.get("priority", 1.0)
    return Decision(selected, probability, tuple(reason), decision.threshold, priority, decision.classes)
