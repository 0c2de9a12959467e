"""Predictor: ``images`` in micro-batches -> the serving version -> ``predictions``."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from aiokafka.structs import ConsumerRecord
from pydantic_core import to_json

from activestream.config import Settings
from activestream.errors import InvalidInput
from activestream.learners.classifier import Classifier
from activestream.learners.preprocess import decode_batch
from activestream.selectors import make_selector
from activestream.storage.fetch import Fetcher
from activestream.streams import metrics
from activestream.streams.fetch import fetched_bytes, fetcher_from, kafka_ref, prefetch
from activestream.streams.messages import ImageV1, parse
from activestream.streams.serving import ServingModel
from activestream.streams.stage import DeadLetters, Output

SCORES = ("least_confidence", "margin", "entropy")


class PredictorHandler:
    """Decodes, predicts and encodes a whole batch in a thread of its own.

    The thread keeps the event loop free for fetching, heartbeats and producing, and
    torch releases the GIL during the forward pass. Batches are independent, so the
    stage hands over the next one while this one's predictions are produced; they
    queue for the one thread, because two forward passes at once in one process
    (on top of one per predictor process) only evict each other's activations from
    the cache (the serving benchmark: 0.54 against 0.48 of the raw throughput).
    """

    pipelined = True

    def __init__(self, settings: Settings, serving: ServingModel, fetcher: Fetcher | None = None):
        self.settings = settings
        self.serving = serving
        self.fetcher = fetcher if fetcher is not None else fetcher_from(settings)
        self.dead = DeadLetters(settings.topic_deadletter, "predictor")
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="predict")
        self.scorers = {name: make_selector(name) for name in SCORES}
        # base64 inflates by 4/3; anything much larger cannot hold an image under the limit
        self.max_raw = settings.max_image_bytes * 4 // 3 + 4096

    async def handle(self, records: Sequence[ConsumerRecord]) -> list[Output]:
        clf = self.serving.current  # one version for the whole batch
        # Images by reference are fetched on the event loop (concurrently, bounded), never in
        # the predict thread: while they arrive, the last batch's forward pass goes on.
        fetched = await prefetch(self.fetcher, records, self.max_raw)
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._handle, records, clf, fetched)

    def committed(self) -> None:
        pass

    def _handle(self, records: Sequence[ConsumerRecord], clf: Classifier, fetched: dict | None = None) -> list[Output]:
        outputs, parsed, blobs = [], [], []
        for record in records:
            try:
                msg, data = self._parse(record, fetched or {})
            except InvalidInput as e:
                outputs.append(self.dead.output(record, e))
                continue
            parsed.append((record, msg))
            blobs.append(data)
        images, failures = decode_batch(blobs, clf.spec, self.settings.max_pixels)  # [n, h, w(, c)] at the model's size
        outputs.extend(self.dead.output(parsed[i][0], e) for i, e in failures.items())
        good = [item for i, item in enumerate(parsed) if i not in failures]
        if good:
            if self.settings.diversity_radius > 0:
                probs, embeddings = clf.predict_with_embeddings(images)
            else:
                probs, embeddings = clf.predict_proba(images), None
            outputs.extend(self._predictions(good, probs, clf, embeddings))
        return outputs

    def _parse(self, record: ConsumerRecord, fetched: dict) -> tuple[ImageV1, bytes]:
        if record.value is not None and len(record.value) > self.max_raw:
            raise InvalidInput("too_large", f"message of {len(record.value)} bytes exceeds the image size limit")
        msg = parse(ImageV1, record.value)
        data = msg.image_bytes() if msg.image is not None else fetched_bytes(fetched, record, msg)
        if len(data) > self.settings.max_image_bytes:
            raise InvalidInput(
                "too_large", f"image of {len(data)} bytes exceeds ACTIVESTREAM_MAX_IMAGE_BYTES={self.settings.max_image_bytes}"
            )
        return msg, data

    def _predictions(self, good: list, probs: np.ndarray, clf: Classifier,
                     embeddings: np.ndarray | None = None) -> list[Output]:
        scores = {name: scorer.score(probs) for name, scorer in self.scorers.items()}
        labels = probs.argmax(1)
        confidence = probs.max(1)
        now = time.time()
        topic, model, version = self.settings.topic_predictions, self.serving.name, clf.version
        rounded = np.round(probs, 5).tolist()
        names = clf.spec.classes
        columns = {name: np.round(s, 5).tolist() for name, s in scores.items()}
        features = np.round(embeddings, 4).tolist() if embeddings is not None else None
        outputs = []
        for i, (record, msg) in enumerate(good):
            value = {
                "v": 1, "id": msg.id, "model": model, "version": version, "label": int(labels[i]),
                "class_name": names[labels[i]],
                "confidence": round(float(confidence[i]), 5), "probs": rounded[i],
                "scores": {name: col[i] for name, col in columns.items()},
                "ts": msg.ts, "predicted_at": now,
            }
            value.update(self._image(record, msg))
            if features is not None:
                value["embedding"] = features[i]
            # Co-partitioned with the image: the partition its key hashed to when produced
            # with the default partitioner, without hashing every key again.
            outputs.append(Output(topic, record.key, to_json(value), record.partition))
        metrics.PREDICTIONS.labels(model).inc(len(good))
        for label, n in Counter(labels.tolist()).items():
            metrics.CLASS_PREDICTED.labels(str(label), names[label]).inc(n)
        return outputs

    def _image(self, record: ConsumerRecord, msg: ImageV1) -> dict:
        """The prediction's image: inline when small, else a reference the selector can
        resolve (the image's own URI, or where its message lies)."""
        if msg.uri is not None:
            return {"uri": msg.uri}
        if len(msg.image) <= self.settings.inline_image_max:
            return {"image": msg.image}
        return {"uri": kafka_ref(record)}
