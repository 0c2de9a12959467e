"""The labeling service: requests in, leased items out to people, labels to the store and ``labels``.

:class:`LabelingService` is what the HTTP API, the page and the Label Studio bridge
call. It is synchronous (SQL and a thread-safe Kafka producer), so FastAPI runs its
calls in worker threads and the event loop stays free for the requests consumer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from activestream.config import Settings, blobs_from, registry_from
from activestream.errors import InvalidInput, NotFound
from activestream.labeling import metrics, quality
from activestream.labeling.access import standing
from activestream.storage.blobs import BlobStore
from activestream.storage.decisions import in_force
from activestream.storage.queue import LabelQueue, LeaseConflict, QueueItem, token_hash
from activestream.storage.registry import ModelRegistry
from activestream.storage.store import Label, Sample, SampleStore
from activestream.streams.messages import LabelRequestV1, LabelV1

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: Added to a request's priority by its reason: drift and disagreement items say more
#: about where the model is wrong than a plain uncertain one.
REASON_BOOST = {"drift": 1.0, "disagreement": 0.5}
CLASSES_TTL = 5.0
#: Seconds a token's labeler is remembered: a replaced or revoked token stops working within this.
TOKEN_TTL = 10.0


class LabelSink(Protocol):
    def send(self, label: LabelV1) -> None:
        """Deliver one label to the ``labels`` topic (raise if the broker does not take it)."""


class MemorySink:
    """Keeps labels in a list: the sink for tests and tools without a broker."""

    def __init__(self):
        self.sent: list[LabelV1] = []

    def send(self, label: LabelV1) -> None:
        self.sent.append(label)


class KafkaSink:
    """kafka-python's thread-safe producer: each label is acknowledged by every in-sync
    replica before the call returns (a person's answer is the costliest message we have)."""

    def __init__(self, bootstrap: str, topic: str, timeout: float = 5.0):
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout = timeout
        self.producer_ = self._connect()

    def _connect(self):
        from kafka import KafkaProducer

        # max_block_ms: with the broker gone, send() would wait 60 s for metadata, and the
        # labeler's answer with it (the outbox keeps the label; see labeling/outbox.py).
        return KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0, retries=3,
                             max_block_ms=int(self.timeout * 1000))

    def send(self, label: LabelV1) -> None:
        if self.producer_ is None:
            self.producer_ = self._connect()
        try:
            self.producer_.send(self.topic, label.encode(), key=label.id.encode()).get(self.timeout)
        except Exception:
            # A client that lost its broker can stay broken for good (a restarted broker does
            # not know its producer id): the next label starts a new one.
            producer, self.producer_ = self.producer_, None
            producer.close(0)
            raise

    def close(self) -> None:
        if self.producer_ is not None:
            self.producer_.close(self.timeout)


def check_name(name: str) -> str:
    """A labeler name: 1-64 of ``A-Z a-z 0-9 . _ -``.

    >>> check_name("ann.lee")
    'ann.lee'
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidInput("bad_labeler", f"labeler name {name!r} is invalid: use 1-64 of A-Z a-z 0-9 . _ -")
    return name


def second_labeler(item_id: str, share: float) -> bool:
    """Whether an item goes to a second labeler: a stable draw from its id, so redelivery agrees.

    >>> second_labeler("x", 0.0), second_labeler("x", 1.0)
    (False, True)
    """
    draw = int.from_bytes(hashlib.sha256(b"second:" + item_id.encode()).digest()[:8], "big") / 2**64
    return draw < share


def blob_key(uri: str) -> str:
    """The blob key of a ``blob:<key>`` URI; other schemes cannot be served here."""
    if not uri.startswith("blob:"):
        raise InvalidInput("unsupported_uri", f"image uri {uri!r} is not blob:<key>; store the image in the blob store")
    return uri[len("blob:"):]


class LabelingService:
    """Settings, store, blobs, registry, queue and the ``labels`` producer, behind one set of verbs."""

    def __init__(self, settings: Settings, store: SampleStore, blobs: BlobStore, registry: ModelRegistry,
                 queue: LabelQueue, producer: LabelSink, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.registry = registry
        self.queue = queue
        self.producer = producer
        self.clock = clock
        self._classes: tuple[float, list[str]] | None = None
        self._tokens: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, settings: Settings, producer: LabelSink, clock: Callable[[], float] = time.time) -> "LabelingService":
        """The service over the store, blobs and registry under ``settings.home``; creates missing tables."""
        store = SampleStore(settings.store)
        store.create_schema()
        queue = LabelQueue(store, settings.label_lease_seconds, settings.label_gold_share,
                           settings.label_audit_every, seed=settings.seed)
        queue.create_schema()
        return cls(settings, store, blobs_from(settings), registry_from(settings), queue, producer, clock)

    def labeler_for(self, token: str) -> str | None:
        """The labeler whose token this is, or None; remembered for ``TOKEN_TTL`` seconds."""
        key, now = token_hash(token), self.clock()
        hit = self._tokens.get(key)
        if hit is not None and now - hit[0] < TOKEN_TTL:
            return hit[1]
        name = self.queue.labeler_for(token)
        if name is not None:  # only known tokens: a flood of bad ones cannot grow the dict
            self._tokens[key] = (now, name)
        return name

    # -- model metadata -----------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        """Class names of the model version in force; cached for a few seconds."""
        now = time.monotonic()
        with self._lock:
            if self._classes is not None and now - self._classes[0] < CLASSES_TTL:
                return self._classes[1]
        version = in_force(self.registry, self.settings.model_name)
        if version is None:
            raise NotFound(f"model {self.settings.model_name!r} has no promoted version yet; "
                           "register a seed version before labeling")
        names = [str(c) for c in version.spec["classes"]]
        with self._lock:
            self._classes = (now, names)
        return names

    def check_class(self, label: int) -> int:
        classes = self.classes
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(classes):
            raise InvalidInput("unknown_class", f"label {label!r} is not a class index of the model "
                                                f"(0..{len(classes) - 1}: {', '.join(classes)})")
        return label

    # -- arrivals -----------------------------------------------------------------------------
    def enqueue(self, requests: Iterable[LabelRequestV1]) -> int:
        """Persist requests (sample row in the store, item in the queue); returns how many were new.

        Raises ``InvalidInput`` naming the first request whose image is not in the blob store.
        """
        samples, items = [], []
        for r in requests:
            key = blob_key(r.uri)
            if not self.blobs.exists(key):
                raise InvalidInput("missing_image", f"request {r.id!r}: no blob {key!r} in the blob store")
            samples.append(Sample(id=r.id, blob_key=key, model_version=r.version, score=r.score, reason=r.reason,
                                  predicted=r.top[0][0] if r.top else None, selection_prob=r.probability))
            items.append(QueueItem(
                id=r.id, uri=r.uri, reason=r.reason, score=r.score, probability=r.probability, model=r.model,
                version=r.version, top=list(r.top), priority=r.priority + REASON_BOOST.get(r.reason, 0.0),
                lane="audit" if r.reason == "audit" else "normal",
                wanted=2 if second_labeler(r.id, self.settings.label_second_share) else 1))
        self.store.add_samples(samples)
        return self.queue.add(items, now=self.clock())

    # -- what the Label Studio bridge and the API share ----------------------------------------
    def item(self, item_id: str) -> QueueItem:
        """The persisted request; ``NotFound`` if unknown."""
        return self.queue.get(item_id)

    def pending(self, limit: int) -> list[QueueItem]:
        """Unlabeled items in queue order (gold items excluded)."""
        return self.queue.pending(limit, now=self.clock())

    def image_png(self, item_id: str) -> bytes:
        """The item's image as PNG bytes (converted if it was stored in another format: upright
        by its EXIF orientation, CMYK as RGB, the first frame of an animation)."""
        data = self.blobs.get(blob_key(self.item(item_id).uri))
        if data.startswith(PNG_SIGNATURE):
            return data
        from PIL import Image, ImageOps

        out = io.BytesIO()
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im)
            (im.convert("RGB") if im.mode == "CMYK" else im).save(out, format="PNG")
        return out.getvalue()

    def record_label(self, item_id: str, label: int, labeler: str, kind: str = "human",
                     resend: bool = True) -> bool:
        """Record a class from a labeler: queue, store and ``labels``; idempotent by item and labeler.

        Returns whether the answer was new or changed. ``resend=False`` leaves a repeat
        of the same answer alone (a bulk import run twice); by default a repeat is
        written and sent again, see below.

        Raises ``InvalidInput`` for a class the model does not have, ``NotFound`` for an
        unknown item, ``LeaseConflict`` when someone else holds it or it has its labels.

        Answers on gold items only measure the labeler: they stay in the queue's
        answers and are not training labels.
        """
        self.check_class(label)
        check_name(labeler)
        now = self.clock()
        answer = self.queue.answer(item_id, labeler, label, now=now)
        if answer.changed:
            metrics.labeled(answer.lane, None if answer.gold else answer.queued, now)
        if answer.gold or not (answer.changed or resend):
            return answer.changed
        # A repeat is written and sent again: if the store or the broker failed the first
        # time, the retry delivers it; both sinks are idempotent by item and labeler.
        self.store.add_labels([Label(item_id, label, labeler, kind)])
        self.producer.send(LabelV1(id=item_id, label=label, labeler=labeler, kind=kind, ts=self.clock()))
        return answer.changed

    # -- the labelers' verbs ------------------------------------------------------------------
    def next_item(self, labeler: str) -> QueueItem | None:
        return self.queue.lease(labeler, now=self.clock())

    def submit(self, item_id: str, label: int, labeler: str) -> bool:
        """A labeler's answer from the page or API: only for the item leased to them.

        The same answer again is taken without a lease (a retry after a lost response);
        a different one needs the item back through :meth:`undo`. Raises ``LeaseConflict``
        otherwise, and what :meth:`record_label` raises.
        """
        self.check_class(label)
        held = standing(self.queue, item_id, labeler, self.clock())
        if not (held.leased or (held.outcome == "labeled" and held.label == label)):
            raise LeaseConflict(f"item {item_id!r} is not leased to {labeler!r}: take items with POST /api/next, "
                                "and reopen your last answer with POST /api/undo to correct it")
        return self.record_label(item_id, label, labeler)

    def may_see(self, item_id: str, labeler: str) -> bool:
        """Whether the item is leased to the labeler or was answered by them (``NotFound`` if unknown)."""
        held = standing(self.queue, item_id, labeler, self.clock())
        return held.leased or held.outcome is not None

    def skip(self, item_id: str, labeler: str, unsure: bool = False) -> None:
        self.queue.skip(item_id, labeler, now=self.clock(), unsure=unsure)
        metrics.ANSWERS_TOTAL.labels("unsure" if unsure else "skipped").inc()

    def undo(self, labeler: str) -> QueueItem:
        return self.queue.undo(labeler, now=self.clock())

    def stats(self, labeler: str) -> dict:
        """Queue depth, the labeler's own counts and pace, everyone's quality figures, and
        whether answers reach the broker (when the sink can tell)."""
        now = self.clock()
        report = quality.quality_report(self.queue.answers(), now)
        empty = {"labeled": 0, "skipped": 0, "unsure": 0, "pace_per_min": 0.0,
                 **quality.labeler_quality([])}
        found = {"queue": self.queue.depth(now), "me": {"labeler": labeler, **report["labelers"].get(labeler, empty)},
                 **report}
        if hasattr(self.producer, "state"):
            found["broker"] = dataclasses.asdict(self.producer.state())
        return found

    def close(self) -> None:
        self.queue.close()
        self.store.close()
