"""Every pick's image into the blob store, before the pick counts.

Whatever its size and however it arrived (inline, over the inline limit as a ``kafka:``
reference, or by its own ``file://``, ``s3://``, ``http(s)://`` URI), a chosen image's
bytes are copied into the blob store (shared by every machine when it is a bucket)
under the image id. ``label serve``, the Label Studio export and the learner then read
blobs only, and a labeling request always names ``blob:<id>``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from activestream.errors import InvalidInput
from activestream.selectors import Decision
from activestream.storage.blobs import BlobStore

__all__ = ["store_images", "without"]


def store_images(blobs: BlobStore, fetch_many: Callable[[list[str]], list], items: list, decision: Decision,
                 stored: dict) -> tuple[Decision, list]:
    """Put the bytes of every newly chosen item (``items`` are ``(record, PredictionV1)``) into
    ``blobs``; return the decision without the picks whose image cannot be had, and those
    picks as ``(record, InvalidInput)``. Items in ``stored`` were stored before and are left be."""
    todo = [int(i) for i in np.flatnonzero(decision.selected) if items[i][1].id not in stored]
    refs = [i for i in todo if items[i][1].image is None]
    fetched = dict(zip(refs, fetch_many([items[i][1].uri for i in refs]))) if refs else {}
    unusable, failed, puts = [], [], []
    for i in todo:
        data = fetched[i] if i in fetched else items[i][1].image_bytes()
        if isinstance(data, InvalidInput):
            unusable.append((items[i][0], data))
            failed.append(i)
        else:
            puts.append((i, data))
    # a refusal: an id the blob store cannot name ("." and ".." are valid ids)
    refusals = blobs.put_many([(items[i][1].id, data) for i, data in puts])
    for (i, _), refused in zip(puts, refusals):
        if refused is not None:
            unusable.append((items[i][0], refused))
            failed.append(i)
    return without(decision, sorted(failed)), unusable


def without(decision: Decision, rows: list[int]) -> Decision:
    """``decision`` with ``rows`` not selected (reason ``""``, priority 0).

    >>> d = Decision(np.array([True, True]), np.array([0.5, 0.5]), ("uncertain", "audit"), 0.1)
    >>> without(d, [1]).selected.tolist(), without(d, [1]).reason
    ([True, False], ('uncertain', ''))
    """
    if not rows:
        return decision
    selected = decision.selected.copy()
    selected[rows] = False
    reason = tuple("" if i in rows else r for i, r in enumerate(decision.reason))
    priority = None
    if decision.priority is not None:
        priority = decision.priority.copy()
        priority[rows] = 0.0
    return replace(decision, selected=selected, reason=reason, priority=priority)
