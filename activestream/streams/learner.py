"""Learner: every ``retrain_every`` new human labels, fine-tune, register, announce.

State lives in the store and the registry (each version records how many labels it
was trained on), so a restarted learner picks up where it was. Training runs in a
thread: the event loop keeps heartbeats and the producer alive meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from aiokafka import AIOKafkaProducer

from activestream.config import Settings
from activestream.errors import InvalidInput
from activestream.learners.incremental import LearnerPolicy
from activestream.learners.preprocess import decode_image
from activestream.learners.training import TrainConfig
from activestream.learners.classifier import state_arrays
from activestream.storage.blobs import BlobStore
from activestream.storage.registry import ModelRegistry, ModelVersion
from activestream.storage.store import SampleStore
from activestream.streams import metrics
from activestream.streams.messages import ModelVersionV1
from activestream.streams.serving import load_classifier

log = logging.getLogger(__name__)


def announcement(meta: ModelVersion) -> ModelVersionV1:
    return ModelVersionV1(name=meta.name, version=meta.version, parent=meta.parent, uri=meta.uri,
                          sha256=meta.sha256, metrics=meta.metrics, status=meta.status, train_size=meta.train_size)


async def announce(producer: AIOKafkaProducer, topic: str, meta: ModelVersion) -> None:
    """Publish a version for serving (rolling back is announcing an older one)."""
    await producer.send_and_wait(topic, announcement(meta).encode(), key=meta.name.encode())


class Learner:
    def __init__(self, settings: Settings, store: SampleStore, blobs: BlobStore, registry: ModelRegistry,
                 eval_sets: dict[str, tuple[np.ndarray, np.ndarray]] | None = None):
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.registry = registry
        self.eval_sets = eval_sets or {}
        self.policy = LearnerPolicy(settings.retrain_every, settings.holdout, settings.promote_tolerance,
                                    TrainConfig(epochs=settings.epochs, learning_rate=settings.learning_rate,
                                                seed=settings.seed))

    def due(self) -> bool:
        latest = self.registry.latest(self.settings.model_name, status=None)
        if latest is None:
            return False  # nothing to fine-tune yet: a seed version must be registered first
        return self.policy.due(self.store.count_labeled(), latest.train_size)

    def train_round(self) -> ModelVersion:
        s = self.settings
        serving_meta = self.registry.latest(s.model_name, status="promoted")
        serving = load_classifier(self.registry, s.model_name, serving_meta.version, s.device)
        ids, images, labels = self._labeled(serving.spec)
        started = time.perf_counter()
        result = self.policy.run(serving, ids, images, labels, eval_sets=self.eval_sets)
        metrics.TRAIN_SECONDS.observe(time.perf_counter() - started)
        meta = self.registry.register(
            s.model_name, state_arrays(result.model.model), spec=serving.spec.to_dict(), parent=serving_meta.version,
            train_size=len(ids), metrics=result.metrics, status="promoted" if result.promote else "rejected",
        )
        metrics.VERSIONS.labels(meta.status).inc()
        for key, value in meta.metrics.items():
            if key.endswith("accuracy"):
                metrics.ACCURACY.labels(s.model_name, str(meta.version), key.removesuffix("_accuracy")).set(value)
        log.info("trained %s v%d on %d labels: %s -> %s", s.model_name, meta.version, len(ids), meta.metrics, meta.status)
        return meta

    def _labeled(self, spec) -> tuple[list[str], np.ndarray, np.ndarray]:
        ids, images, labels = [], [], []
        for sample_id, blob_key, label in self.store.training_set():
            try:
                images.append(decode_image(self.blobs.get(blob_key), spec))
            except InvalidInput as e:
                log.warning("skipping labeled sample %s: %s", sample_id, e)
                continue
            ids.append(sample_id)
            labels.append(label)
        return ids, np.stack(images), np.asarray(labels, dtype=np.int64)

    async def run(self, producer: AIOKafkaProducer, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if await asyncio.to_thread(self.due):
                meta = await asyncio.to_thread(self.train_round)
                if meta.status == "promoted":
                    await announce(producer, self.settings.topic_versions, meta)
                continue
            try:
                await asyncio.wait_for(stop.wait(), self.settings.learner_poll)
            except asyncio.TimeoutError:
                pass
