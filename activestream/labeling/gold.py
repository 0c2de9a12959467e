"""Gold items: samples whose answer is known, mixed into the queue to measure labelers.

Known answers come from labels already in the store given by a trusted labeler
(``activestream label gold --from-labeler NAME``): the seed set's labels (labeler
``seed``) in a fresh deployment, an expert's labels later. Each gold item carries
the serving model's top guesses, computed when it is added, so the rubber-stamp
rate can be measured. The answer stays in the queue's ``gold`` column and is never
sent to the page or the API.
"""

from __future__ import annotations

import random

import numpy as np
from sqlalchemy import func, select

from activestream.errors import NotFound
from activestream.labeling.service import LabelingService
from activestream.storage.decisions import in_force
from activestream.storage.queue import ITEMS, QueueItem
from activestream.storage.store import LABELS, SAMPLES

TOP_K = 3


def gold_candidates(service: LabelingService, labeler: str) -> list[tuple[str, str, int]]:
    """``(sample_id, blob_key, label)`` labeled by ``labeler``, with an image, not yet in the queue."""
    queued = select(ITEMS.c.id).where(ITEMS.c.id == LABELS.c.sample_id).exists()
    query = (select(LABELS.c.sample_id, SAMPLES.c.blob_key, LABELS.c.label)
             .join(SAMPLES, SAMPLES.c.id == LABELS.c.sample_id)
             .where(LABELS.c.labeler == labeler, SAMPLES.c.blob_key.is_not(None), ~queued)
             .order_by(LABELS.c.sample_id))
    with service.store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query)]


def labels_given(service: LabelingService, labeler: str) -> int:
    """How many labels ``labeler`` has in the store."""
    query = select(func.count()).select_from(LABELS).where(LABELS.c.labeler == labeler)
    with service.store.engine.connect() as conn:
        return conn.execute(query).scalar_one()


def model_guesses(service: LabelingService, blob_keys: list[str]) -> tuple[int, list[list[tuple[int, float]]]]:
    """The serving version and its top guesses ``[(class, p)] * TOP_K`` for each image."""
    from activestream.learners.preprocess import decode_image
    from activestream.streams.serving import load_classifier

    meta = in_force(service.registry, service.settings.model_name)
    if meta is None:
        raise NotFound(f"model {service.settings.model_name!r} has no promoted version: gold items need its guesses")
    clf = load_classifier(service.registry, service.settings.model_name, meta.version)
    images = np.stack([decode_image(service.blobs.get(k), clf.spec, service.settings.max_pixels) for k in blob_keys])  # [n, h, w(, c)]
    probs = clf.predict_batches(images)  # [n, classes]
    top = np.argsort(-probs, axis=1)[:, :TOP_K]
    return meta.version, [[(int(c), float(p[c])) for c in row] for row, p in zip(top, probs)]


def add_gold(service: LabelingService, from_labeler: str, count: int, seed: int = 0) -> int:
    """Put up to ``count`` of ``from_labeler``'s labeled samples into the gold lane; returns how many."""
    candidates = gold_candidates(service, from_labeler)
    chosen = random.Random(seed).sample(candidates, min(count, len(candidates)))
    if not chosen:
        return 0
    version, guesses = model_guesses(service, [key for _, key, _ in chosen])
    items = [QueueItem(id=sid, uri=f"blob:{key}", reason="gold", score=0.0, probability=1.0,
                       model=service.settings.model_name, version=version, top=top, priority=0.0,
                       lane="gold", gold=label)
             for (sid, key, label), top in zip(chosen, guesses)]
    return service.queue.add(items, now=service.clock())
