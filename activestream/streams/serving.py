"""The serving model of a predictor, and how it is hot-swapped.

The registry is the truth about which version serves: the newest version whose
status is ``promoted`` (rolling back marks newer versions ``retired`` and announces
the older one). An announcement on ``model.versions`` is a trigger to look again.
That makes announcements idempotent and order-free: a predictor replaying the topic
from the start, or receiving one twice, ends on the same version. A swap replaces
one reference between two batches, so each batch is predicted by exactly one
version and nothing is lost or predicted twice.
"""

from __future__ import annotations

import asyncio
import logging

from activestream.errors import ActivestreamError
from activestream.learners.classifier import Classifier
from activestream.learners.models import ModelSpec
from activestream.storage.registry import ModelRegistry
from activestream.streams import metrics

log = logging.getLogger(__name__)


def load_classifier(registry: ModelRegistry, name: str, version: int, device: str = "cpu", chunk: int = 0) -> Classifier:
    arrays, meta = registry.load(name, version)  # sha256-checked before anything is deserialised
    return Classifier.from_arrays(ModelSpec.from_dict(meta.spec), arrays, meta.version, device, chunk)


class ServingModel:
    """Holds the classifier in force; ``current`` is read once per batch."""

    def __init__(self, registry: ModelRegistry, name: str, device: str = "cpu", chunk: int = 0):
        self.registry = registry
        self.name = name
        self.device = device
        self.chunk = chunk
        self.current: Classifier | None = None
        self.ready = asyncio.Event()
        self._lock = asyncio.Lock()

    async def refresh(self, announced: int | None = None) -> None:
        """Serve the registry's newest promoted version if it is not served yet."""
        async with self._lock:
            meta = await asyncio.to_thread(self.registry.latest, self.name, "promoted")
            if meta is None or (self.current is not None and self.current.version == meta.version):
                return
            if announced is not None and announced != meta.version:
                log.info("announcement of v%s: the registry's promoted version is v%d", announced, meta.version)
            try:
                clf = await asyncio.to_thread(load_classifier, self.registry, self.name, meta.version,
                                              self.device, self.chunk)
            except ActivestreamError as e:
                # A bad artifact must not take serving down: keep the version in force.
                log.error("cannot serve %s v%d, keeping the current version: %s", self.name, meta.version, e)
                return
            previous, self.current = self.current, clf
            metrics.SERVING_VERSION.labels(self.name).set(clf.version)
            log.info("serving %s v%d (was %s)", self.name, clf.version, previous and f"v{previous.version}")
            self.ready.set()
