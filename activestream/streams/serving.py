"""The serving model of a predictor, and how it is hot-swapped.

The registry is the truth about which version serves: the version in force, the
promoted version promoted last (``activestream models promote`` puts an older one in
force; rolling back marks the newer ones ``retired``; both announce). An announcement on ``model.versions`` is a trigger to look again.
That makes announcements idempotent and order-free: a predictor replaying the topic
from the start, or receiving one twice, ends on the same version. A swap replaces
one reference between two batches, so each batch is predicted by exactly one
version and nothing is lost or predicted twice.
"""

from __future__ import annotations

import asyncio
import logging

from activestream.errors import ActivestreamError, IntegrityError
from activestream.learners.classifier import Classifier
from activestream.learners.models import ModelSpec
from activestream.storage.decisions import in_force
from activestream.storage.registry import ModelRegistry, ModelVersion
from activestream.streams import metrics

log = logging.getLogger(__name__)


def load_classifier(registry: ModelRegistry, name: str, version: int, device: str = "cpu", chunk: int = 0) -> Classifier:
    """One version, ready to predict; ``IntegrityError`` if its metadata, weights and spec do not hold together."""
    arrays, meta = registry.load(name, version)  # sealed metadata, sha256-checked weights, before deserialising
    try:
        return Classifier.from_arrays(ModelSpec.from_dict(meta.spec), arrays, meta.version, device, chunk)
    except (IntegrityError, KeyError, TypeError, ValueError) as e:
        fix = "" if isinstance(e, IntegrityError) else "; re-register it with a spec from ModelSpec.to_dict()"
        raise IntegrityError(f"cannot build {name} v{version} from its spec and weights: {e}{fix}") from e


class ServingModel:
    """Holds the classifier in force; ``current`` is read once per batch.

    ``refresh`` never fails the predictor: whatever the registry or a new version does
    wrong (unreadable metadata, a broken seal, weights that do not fit the spec) is
    logged and counted, and the version in force keeps serving. A version that failed
    to load is not tried again until its metadata changes (or the predictor restarts),
    so a stream of announcements does not reload a bad artifact over and over.
    """

    def __init__(self, registry: ModelRegistry, name: str, device: str = "cpu", chunk: int = 0):
        self.registry = registry
        self.name = name
        self.device = device
        self.chunk = chunk
        self.current: Classifier | None = None
        self.ready = asyncio.Event()
        self._lock = asyncio.Lock()
        self.failed_: dict[int, ModelVersion] = {}

    async def refresh(self, announced: int | None = None) -> None:
        """Serve the version in force (:func:`~activestream.storage.decisions.in_force`) if it is not served yet."""
        async with self._lock:
            meta = await self._in_force()
            if meta is None or self._serving(meta.version) or self.failed_.get(meta.version) == meta:
                return
            if announced is not None and announced != meta.version:
                log.info("announcement of v%s: the version in force is v%d", announced, meta.version)
            clf = await self._load(meta)
            if clf is None:
                return
            previous, self.current = self.current, clf
            self.failed_.pop(meta.version, None)
            metrics.SERVING_VERSION.labels(self.name).set(clf.version)
            log.info("serving %s v%d (was %s)", self.name, clf.version, previous and f"v{previous.version}")
            self.ready.set()

    def _serving(self, version: int) -> bool:
        return self.current is not None and self.current.version == version

    async def _in_force(self) -> ModelVersion | None:
        try:
            return await asyncio.to_thread(in_force, self.registry, self.name)
        except Exception as e:  # an unreadable registry must not stop what is in memory from serving
            self._refused("registry", f"cannot read the registry of {self.name}", e)
            return None

    async def _load(self, meta: ModelVersion) -> Classifier | None:
        try:
            return await asyncio.to_thread(load_classifier, self.registry, self.name, meta.version,
                                           self.device, self.chunk)
        except Exception as e:  # whatever a new version does wrong, the version in force keeps serving
            self.failed_[meta.version] = meta
            kind = "integrity" if isinstance(e, IntegrityError) else "error"
            self._refused(kind, f"cannot serve {self.name} v{meta.version} (not retried until its metadata "
                                "changes)", e)
            return None

    def _refused(self, kind: str, what: str, error: Exception) -> None:
        metrics.MODEL_LOAD_FAILURES.labels(self.name, kind).inc()
        keeping = f"v{self.current.version}" if self.current is not None else "nothing yet"
        # Our own errors explain themselves; anything else needs its traceback.
        log.error("%s, keeping %s: %s", what, keeping, error, exc_info=not isinstance(error, ActivestreamError))
