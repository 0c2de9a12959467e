"""Learner: every ``retrain_every`` new human labels, fine-tune, register, announce.

State lives in the store and the registry (each version records how many labels it
was trained on), so a restarted learner picks up where it was. Training runs in a
thread: the event loop keeps heartbeats and the producer alive meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Sequence

import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from activestream.config import Settings
from activestream.errors import IntegrityError, InvalidInput, NotFound
from activestream.learners.incremental import LearnerPolicy
from activestream.learners.preprocess import decode_image
from activestream.learners.training import TrainConfig
from activestream.learners.classifier import state_arrays
from activestream.pacing import Paced
from activestream.storage.blobs import BlobStore
from activestream.storage.decisions import in_force
from activestream.storage.registry import ModelRegistry, ModelVersion
from activestream.storage.store import SampleStore
from activestream.streams import metrics
from activestream.streams.announce import announce, announcement  # noqa: F401 - the learner's verbs too
from activestream.streams.messages import DriftV1, parse
from activestream.streams.serving import load_classifier
from activestream.streams.stage import DeadLetters, Output, backoff, sleep_unless, transient

log = logging.getLogger(__name__)


SKIPPED = "skipped_samples"  # labeled samples whose image would not decode, in a version's metrics


def _verdict(metrics: dict[str, float], parent: int) -> str:
    """Why a round's version was promoted or rejected, for its history."""
    new, old = metrics.get("holdout_accuracy"), metrics.get("parent_holdout_accuracy")
    if new is None or old is None:
        return f"fine-tuned from v{parent}; no held-out labels to compare on"
    return f"fine-tuned from v{parent}: held-out accuracy {new:.4f} against v{parent}'s {old:.4f}"


def considered(meta: ModelVersion) -> int:
    """Labeled samples a version's round looked at: trained on, or skipped as undecodable."""
    return meta.train_size + int(meta.metrics.get(SKIPPED, 0))


def export_versions(registry: ModelRegistry, name: str) -> None:
    """The newest and the serving version, and when the serving one was promoted: an
    alert on a model that stopped improving reads the age from here."""
    versions = registry.versions(name)
    if versions:
        metrics.LATEST_VERSION.labels(name).set(versions[-1].version)
    serving = in_force(registry, name)
    if serving is not None:
        metrics.PROMOTED_VERSION.labels(name).set(serving.version)
        metrics.PROMOTED_AT.labels(name).set(promoted_at(serving))


def promoted_at(meta: ModelVersion) -> float:
    """Unix time of a version's last promotion (its registration, when its history is older).

    >>> v = ModelVersion("m", 1, None, "2026-01-01T00:00:00+00:00", 0, {}, "", {}, "promoted", "", history=(
    ...     {"status": "promoted", "at": "2026-01-02T00:00:00+00:00", "promotion": 1},))
    >>> promoted_at(v) - promoted_at(ModelVersion(**{**v.__dict__, "history": ()}))
    86400.0
    """
    stamps = [d["at"] for d in meta.history if d.get("status") == "promoted" and d.get("at")]
    return datetime.fromisoformat(stamps[-1] if stamps else meta.created).timestamp()


class Learner:
    def __init__(self, settings: Settings, store: SampleStore, blobs: BlobStore, registry: ModelRegistry,
                 eval_sets: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                 eval_classes: tuple[str, ...] | None = None):
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.registry = registry
        self.eval_sets = eval_sets or {}
        self.eval_classes = eval_classes  # what the eval sets' labels name; None: any model's
        self.policy = LearnerPolicy(settings.retrain_every, settings.holdout, settings.promote_tolerance,
                                    TrainConfig(epochs=settings.epochs, learning_rate=settings.learning_rate,
                                                seed=settings.seed),
                                    early_every=settings.drift_early_labels)
        self._nothing_new_at: int | None = None  # labeled count at which a round found nothing usable
        # Counting the labels joins every label with its sample: paced, or a store of a
        # million labels keeps the learner busy counting between rounds.
        self._label_count = Paced(lambda: self.store.count_labeled(), every=0.0)
        self._announced = False
        self.drift_version_: int | None = None  # a drift was detected on this version: train early

    def drift_detected(self, version: int) -> None:
        """A drift message came: the next round is due after ``drift_early_labels`` new labels
        (one early round per serving version; a detection on an older version is stale)."""
        serving = in_force(self.registry, self.settings.model_name)
        if self.settings.drift_early_labels > 0 and (serving is None or version >= serving.version):
            self.drift_version_ = version

    def due(self) -> bool:
        latest = self.registry.latest(self.settings.model_name, status=None)
        if latest is None or in_force(self.registry, self.settings.model_name) is None:
            return False  # nothing to fine-tune yet: a version must be in force first
        labeled = self._label_count.get()
        if self._nothing_new_at is not None and labeled <= self._nothing_new_at:  # a paced count may lag
            return False
        serving = in_force(self.registry, self.settings.model_name)
        drift = self.drift_version_ is not None and self.drift_version_ >= serving.version
        return self.policy.due(labeled, considered(latest), drift=drift)

    def train_round(self) -> ModelVersion | None:
        """Fine-tune, register and return a new version; None when the labeled images
        that decode are no more than the latest version was trained on."""
        s = self.settings
        serving_meta = in_force(self.registry, s.model_name)
        latest = self.registry.latest(s.model_name, status=None)
        serving = load_classifier(self.registry, s.model_name, serving_meta.version, s.device)
        labeled = self.store.count_labeled()
        ids, images, labels, skipped = self._labeled(serving.spec)
        if len(ids) <= latest.train_size:
            # Nothing usable is new (the new labels' images do not decode): training
            # again would only register the same version, again and again.
            log.warning("%d labeled samples, %d of them undecodable: nothing new since v%d; waiting for more labels",
                        labeled, skipped, latest.version)
            self._nothing_new_at = labeled
            return None
        started = time.perf_counter()
        result = self.policy.run(serving, ids, images, labels, eval_sets=self._eval_sets_for(serving.spec))
        metrics.TRAIN_SECONDS.observe(time.perf_counter() - started)
        meta = self.registry.register(
            s.model_name, state_arrays(result.model.model), spec=serving.spec.to_dict(), parent=serving_meta.version,
            train_size=len(ids), metrics={**result.metrics, SKIPPED: float(skipped)},
            status="promoted" if result.promote else "rejected", by="learner",
            reason=_verdict(result.metrics, serving_meta.version),
        )
        metrics.VERSIONS.labels(meta.status).inc()
        for key, value in meta.metrics.items():
            if key.endswith("accuracy"):
                metrics.ACCURACY.labels(s.model_name, key.removesuffix("_accuracy")).set(value)
        export_versions(self.registry, s.model_name)
        log.info("trained %s v%d on %d labels: %s -> %s", s.model_name, meta.version, len(ids), meta.metrics, meta.status)
        return meta

    def _eval_sets_for(self, spec) -> dict:
        """The eval sets only for a model of their classes: the demo dataset's test split says
        nothing about a model of the user's own classes (a CIFAR model scored about 0.1 on it)."""
        if self.eval_classes is not None and tuple(spec.classes) != self.eval_classes:
            return {}
        return self.eval_sets

    def _labeled(self, spec) -> tuple[list[str], np.ndarray | None, np.ndarray, int]:
        """Ids, images and labels of the training set, and how many of its images did not decode."""
        ids, images, labels, skipped = [], [], [], 0
        for sample_id, blob_key, label in self.store.training_set():
            try:
                images.append(decode_image(self.blobs.get(blob_key), spec, self.settings.max_pixels))
            except (InvalidInput, NotFound, IntegrityError) as e:
                log.warning("skipping labeled sample %s: %s", sample_id, e)
                skipped += 1
                continue
            ids.append(sample_id)
            labels.append(label)
        return ids, np.stack(images) if images else None, np.asarray(labels, dtype=np.int64), skipped

    async def run(self, producer: AIOKafkaProducer, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            try:
                trained = await self._step(producer)
                failures = 0
            except Exception as e:  # noqa: BLE001 - the store away, a bad round: wait and try again
                failures += 1
                metrics.HANDLER_ERRORS.labels("learner", "transient" if transient(e) else "error").inc()
                log.error("learner round failed (%d in a row, retrying in %.0f s): %s", failures, backoff(failures), e,
                          exc_info=not transient(e))
                trained = False
                await sleep_unless(stop, backoff(failures))
            if not trained:
                await sleep_unless(stop, self.settings.learner_poll)

    async def _step(self, producer: AIOKafkaProducer) -> bool:
        """Announce what serves if not yet done, then train if a round is due; whether one ran."""
        if not self._announced:
            # A learner stopped between registering a promoted version and announcing it
            # would otherwise leave predictors on the old one: announcing is idempotent.
            serving = await asyncio.to_thread(in_force, self.registry, self.settings.model_name)
            await asyncio.to_thread(export_versions, self.registry, self.settings.model_name)
            if serving is not None:
                await announce(producer, self.settings.topic_versions, serving)
            self._announced = True
        if not await asyncio.to_thread(self.due):
            return False
        meta = await asyncio.to_thread(self.train_round)
        if meta is not None:
            self.drift_version_ = None  # the early round ran (a new version restarts detection)
        if meta is not None and meta.status == "promoted":
            await announce(producer, self.settings.topic_versions, meta)
        return True


class DriftHandler:
    """The learner's reader of the ``drift`` topic: a valid detection asks for an early round;
    a record that does not parse is dead-lettered like on every other topic."""

    pipelined = False

    def __init__(self, settings: Settings, learner: Learner):
        self.learner = learner
        self.dead = DeadLetters(settings.topic_deadletter, "learner")

    async def handle(self, records: Sequence[ConsumerRecord]) -> list[Output]:
        outputs, versions = [], []
        for record in records:
            try:
                versions.append(parse(DriftV1, record.value).version)
            except InvalidInput as e:
                outputs.append(self.dead.output(record, e))
        if versions:
            await asyncio.to_thread(self.learner.drift_detected, max(versions))
        return outputs

    def committed(self) -> None:
        pass
