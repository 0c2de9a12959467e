"""Shared pieces of the labeling tests: a model version with classes, images, requests."""

from __future__ import annotations

import time

import numpy as np

from activestream.labeling.service import LabelingService, MemorySink
from activestream.learners.preprocess import encode_png
from activestream.storage.registry import ModelRegistry
from activestream.streams.messages import LabelRequestV1

CLASSES = [str(d) for d in range(10)]


class Clock:
    """A hand-moved clock: lease expiry without sleeping."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def register_model(registry: ModelRegistry, name: str = "classifier", classes=CLASSES):
    """A promoted version whose metadata names the classes (the weights do not matter here)."""
    spec = {"arch": "small_cnn", "classes": list(classes), "channels": 1, "height": 8, "width": 8}
    return registry.register(name, {"w": np.zeros(1, np.float32)}, spec=spec, parent=None, train_size=0,
                             metrics={}, status="promoted")


def digit_images(n: int, seed: int = 0) -> list[tuple[np.ndarray, int]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))[:n]
    return [((digits.images[i] * 16).clip(0, 255).astype(np.uint8), int(digits.target[i])) for i in order]


def make_requests(service: LabelingService, n: int, prefix: str = "img", audit_every: int = 0,
                  seed: int = 0) -> list[LabelRequestV1]:
    """``n`` requests whose images are in the service's blob store; every ``audit_every``-th is an audit item."""
    rng = np.random.default_rng(seed)
    out = []
    for i, (image, _truth) in enumerate(digit_images(n, seed)):
        item_id = f"{prefix}-{i:04d}"
        service.blobs.put(item_id, encode_png(image))
        probs = rng.dirichlet(np.ones(len(CLASSES)))
        top = [(int(c), float(probs[c])) for c in np.argsort(-probs)[:3]]
        audit = audit_every and i % audit_every == audit_every - 1
        score = float(1 - probs.max())
        out.append(LabelRequestV1(id=item_id, uri=f"blob:{item_id}", reason="audit" if audit else "uncertain",
                                  score=score, probability=0.05, model="classifier", version=1, top=top,
                                  priority=score, ts=time.time()))
    return out


def make_service(settings, clock=None, sink=None) -> LabelingService:
    service = LabelingService.open(settings, sink if sink is not None else MemorySink(), clock=clock or Clock())
    register_model(service.registry, settings.model_name)
    return service
