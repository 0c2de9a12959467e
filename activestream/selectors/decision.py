"""What a budget manager returns, the protocol it follows, and the boundary checks.

A budget manager sees float ``scores`` ``[batch]`` (higher = more worth a
label) and one stable string key per item (e.g. ``"topic/partition/offset"``),
never the model. Two verbs:

* ``query(scores, keys, *, classes=None, eligible=None) -> Decision`` is pure:
  no state changes, and the same state and inputs always give the same
  decision, because all randomness is a keyed hash of ``(seed, key)``. A
  batch that Kafka redelivers after a rebalance is decided the same way.
* ``update(scores, decision) -> None`` commits a decision: counters, score
  history and threshold move on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from activestream.errors import InvalidInput
from activestream.selectors.base import validate_scores

REASONS = ("audit", "uncertain", "drift", "")


@dataclass(frozen=True, eq=False)
class Decision:
    """What a budget manager chose for one batch; arrays are ``[batch]``.

    ``selected`` (bool): send the item to a labeler. ``probability``
    (float64): the probability that the item is selected given the state
    at decision time; in ``(0, 1]`` for selected items, usable as an
    inverse-propensity weight. ``reason``: ``"audit"``, ``"uncertain"`` or
    ``""`` (not selected). ``threshold``: the score threshold in force for
    the batch's first item.

    ``priority`` (float64 in ``[0, 1]``): the order in which the labeling
    queue should serve the selected items, highest first; 0 for items not
    selected. For :class:`~activestream.selectors.AdaptiveBudget` it is the
    item's rank among the recent scores (1 = the most uncertain seen
    lately); audit items get a uniform draw from the top ``fraction`` of
    that scale, the band uncertainty picks occupy, so they are spread
    evenly through the queue instead of sinking to its bottom, where a
    backlog would starve them and bias the accuracy estimates. Left out, it
    is 1 for every selected item (first come, first served).

    ``classes`` (int ``[batch]`` or None): the predicted classes passed to
    ``query``, kept so that ``update`` can count per-class quotas.
    """

    selected: np.ndarray
    probability: np.ndarray
    reason: tuple[str, ...]
    threshold: float
    priority: np.ndarray | None = None
    classes: np.ndarray | None = None

    def __post_init__(self):
        if self.priority is None:
            priority = np.asarray(self.selected, dtype=np.float64).copy()
            object.__setattr__(self, "priority", frozen(priority))

    def __eq__(self, other) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return (np.array_equal(self.selected, other.selected)
                and np.array_equal(self.probability, other.probability)
                and np.array_equal(self.priority, other.priority)
                and self.reason == other.reason
                and _same_optional(self.classes, other.classes)
                and (self.threshold == other.threshold
                     or (math.isnan(self.threshold) and math.isnan(other.threshold))))

    __hash__ = None  # holds arrays


def _same_optional(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return np.array_equal(a, b)


class BudgetManager(Protocol):
    """``query`` (pure) then ``update`` (commit) for every batch, in order.

    ``classes`` (int ``[batch]``, predicted classes) feeds per-class quotas;
    ``eligible`` (bool ``[batch]``, e.g. from a diversity filter) marks the
    items that may be picked for their score. Both are optional.
    """

    seen_: int
    spent_: int
    threshold_: float

    def query(self, scores: np.ndarray, keys: Sequence[str], *, classes=None,
              eligible=None) -> Decision: ...

    def update(self, scores: np.ndarray, decision: Decision) -> None: ...


def frozen(a: np.ndarray) -> np.ndarray:
    """Make ``a`` read-only: a decision is a record, not a buffer."""
    a.flags.writeable = False
    return a


def check_batch(scores, keys: Sequence[str]) -> np.ndarray:
    """Validate ``scores`` ``[batch]`` and that there is one key per score."""
    s = validate_scores(scores)
    if len(keys) != len(s):
        raise InvalidInput("bad_keys", f"got {len(keys)} keys for {len(s)} scores; "
                           "pass exactly one key per item, in the same order")
    for key in keys:
        if not isinstance(key, str):
            raise InvalidInput("bad_keys", f"keys must be strings, got {type(key).__name__}; "
                               "use a stable id such as f'{topic}/{partition}/{offset}'")
    return s


def check_classes(classes, n: int) -> np.ndarray | None:
    """Predicted classes: None, or ints ``[n]`` >= 0; returned as read-only int64."""
    if classes is None:
        return None
    arr = np.asarray(classes)
    if arr.shape != (n,) or arr.dtype.kind not in "iu":
        raise InvalidInput("bad_classes", f"classes must be integer class indices shaped "
                           f"[{n}] (one per score), got {arr.dtype} {arr.shape}; pass "
                           "probs.argmax(axis=1)")
    if n and arr.min() < 0:
        raise InvalidInput("bad_classes", f"classes must be >= 0, got {arr.min()}; pass "
                           "class indices, not labels")
    return frozen(arr.astype(np.int64))


def check_eligible(eligible, n: int) -> np.ndarray:
    """An eligibility mask: None (all eligible) or bool ``[n]``."""
    if eligible is None:
        return np.ones(n, dtype=bool)
    arr = np.asarray(eligible)
    if arr.shape != (n,) or arr.dtype != bool:
        raise InvalidInput("bad_eligible", f"eligible must be a bool mask shaped [{n}], got "
                           f"{arr.dtype} {arr.shape}; pass e.g. DiversityFilter.query(...)")
    return arr


def check_decision(s: np.ndarray, decision: Decision) -> np.ndarray:
    """The decision's ``selected`` mask, checked against the scores it was made for."""
    selected = np.asarray(decision.selected)
    if selected.shape != s.shape or selected.dtype != bool:
        raise InvalidInput("bad_decision", f"decision.selected must be bool {s.shape} to match "
                           f"the scores, got {selected.dtype} {selected.shape}; pass the "
                           "Decision that query returned for these same scores")
    return selected
