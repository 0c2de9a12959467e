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
from activestream.learners.preprocess import decode_image
from activestream.selectors import make_selector
from activestream.streams import metrics
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

    def __init__(self, settings: Settings, serving: ServingModel):
        self.settings = settings
        self.serving = serving
        self.dead = DeadLetters(settings.topic_deadletter, "predictor")
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="predict")
        self.scorers = {name: make_selector(name) for name in SCORES}
        # base64 inflates by 4/3; anything much larger cannot hold an image under the limit
        self.max_raw = settings.max_image_bytes * 4 // 3 + 4096

    async def handle(self, records: Sequence[ConsumerRecord]) -> list[Output]:
        clf = self.serving.current  # one version for the whole batch
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._handle, records, clf)

    def committed(self) -> None:
        pass

    def _handle(self, records: Sequence[ConsumerRecord], clf: Classifier) -> list[Output]:
        outputs, good, arrays = [], [], []
        for record in records:
            try:
                msg, array = self._decode(record, clf)
            except InvalidInput as e:
                outputs.append(self.dead.output(record, e))
                continue
            good.append((record, msg))
            arrays.append(array)
        if good:
            if self.settings.diversity_radius > 0:
                probs, embeddings = clf.predict_with_embeddings(np.stack(arrays))
            else:
                probs, embeddings = clf.predict_proba(np.stack(arrays)), None
            outputs.extend(self._predictions(good, probs, clf, embeddings))
        return outputs

    def _decode(self, record: ConsumerRecord, clf: Classifier) -> tuple[ImageV1, np.ndarray]:
        if record.value is not None and len(record.value) > self.max_raw:
            raise InvalidInput("too_large", f"message of {len(record.value)} bytes exceeds the image size limit")
        msg = parse(ImageV1, record.value)
        if msg.image is None:
            raise InvalidInput("unsupported_uri", f"images by URI ({msg.uri}) are not fetched by this predictor")
        data = msg.image_bytes()
        if len(data) > self.settings.max_image_bytes:
            raise InvalidInput(
                "too_large", f"image of {len(data)} bytes exceeds ACTIVESTREAM_MAX_IMAGE_BYTES={self.settings.max_image_bytes}"
            )
        return msg, decode_image(data, clf.spec)

    def _predictions(self, good: list, probs: np.ndarray, clf: Classifier,
                     embeddings: np.ndarray | None = None) -> list[Output]:
        scores = {name: scorer.score(probs) for name, scorer in self.scorers.items()}
        labels = probs.argmax(1)
        confidence = probs.max(1)
        now = time.time()
        topic, model, version = self.settings.topic_predictions, self.serving.name, clf.version
        rounded = np.round(probs, 5).tolist()
        columns = {name: np.round(s, 5).tolist() for name, s in scores.items()}
        features = np.round(embeddings, 4).tolist() if embeddings is not None else None
        outputs = []
        for i, (record, msg) in enumerate(good):
            inline = msg.image if len(msg.image) <= self.settings.inline_image_max else None
            value = {
                "v": 1, "id": msg.id, "model": model, "version": version, "label": int(labels[i]),
                "confidence": round(float(confidence[i]), 5), "probs": rounded[i],
                "scores": {name: col[i] for name, col in columns.items()},
                "ts": msg.ts, "predicted_at": now,
            }
            value["image" if inline else "uri"] = inline or f"kafka:{record.topic}/{record.partition}/{record.offset}"
            if features is not None:
                value["embedding"] = features[i]
            # Co-partitioned with the image: the partition its key hashed to when produced
            # with the default partitioner, without hashing every key again.
            outputs.append(Output(topic, record.key, to_json(value), record.partition))
        metrics.PREDICTIONS.labels(str(version)).inc(len(good))
        for label, n in Counter(labels.tolist()).items():
            metrics.CLASS_PREDICTED.labels(str(label)).inc(n)
        return outputs
