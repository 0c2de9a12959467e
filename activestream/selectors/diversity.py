"""A diversity filter: do not send near-duplicates of recent selections to labelers.

Near-duplicates (the same scene from a burst of frames, a re-uploaded image)
score alike, so an uncertainty selector would pick all of them and spend
several labels on what one label teaches. Distances are measured in the
model's embedding space, ``[batch, dim]`` float (e.g. the penultimate layer).

The filter follows the budget managers' two verbs: ``query`` is pure and
returns an eligibility mask for :meth:`AdaptiveBudget.query`, ``update``
remembers what was actually selected, in a bounded buffer.
"""

from __future__ import annotations

import math

import numpy as np

from activestream.errors import InvalidInput
from activestream.selectors.base import validate_scores
from activestream.selectors.decision import Decision, frozen


class DiversityFilter:
    """Marks items within ``radius`` (cosine distance) of a recent pick as ineligible.

    ``memory`` recent selections are kept (oldest dropped first). Within one
    batch the items are taken by descending score, and an item close to a
    higher-scored eligible item of the same batch is ineligible too, so a
    batch of near-duplicates offers only its best member. Cosine distance is
    ``1 - cos(angle)`` in ``[0, 2]``; an all-zero embedding has no direction
    and counts as orthogonal to everything. Embeddings of different model versions
    live in different spaces: call :meth:`clear` when the model changes.

    Ineligible items can still be audit picks, and the budget still picks
    them when its window would otherwise miss its band (see
    :class:`AdaptiveBudget`), so the filter shapes where labels go without
    changing how many are spent.

    >>> f = DiversityFilter(radius=0.05, memory=100)
    >>> e = np.array([[1.0, 0.0], [0.99, 0.01], [0.0, 1.0]])
    >>> f.query(e, np.array([0.9, 0.8, 0.7])).tolist()  # item 1 repeats item 0
    [True, False, True]
    >>> f.update(e, np.array([True, False, False]))      # item 0 was selected
    >>> f.query(e[1:], np.array([0.8, 0.7])).tolist()
    [False, True]
    >>> len(f.memory_)
    1
    """

    def __init__(self, radius: float = 0.02, *, memory: int = 1000):
        if not (isinstance(radius, (int, float)) and math.isfinite(radius) and 0 <= radius <= 2):
            raise InvalidInput("bad_config", f"radius must be a cosine distance in [0, 2], got "
                               f"{radius!r}; fix the diversity settings")
        if not (isinstance(memory, (int, np.integer)) and not isinstance(memory, bool)
                and memory >= 1):
            raise InvalidInput("bad_config", f"memory must be an int >= 1, got {memory!r}; "
                               "fix the diversity settings")
        self.radius = radius
        self.memory = memory
        self.memory_ = frozen(np.zeros((0, 0)))

    def __repr__(self) -> str:
        return f"DiversityFilter(radius={self.radius!r}, memory={self.memory!r})"

    def query(self, embeddings, scores) -> np.ndarray:
        """Eligibility (pure): bool ``[batch]``, False for near-duplicates.

        ``embeddings``: float ``[batch, dim]``; ``scores``: float ``[batch]``,
        higher = more worth a label (decides which of a batch's duplicates stays).
        """
        e = _unit(validate_embeddings(embeddings))
        s = validate_scores(scores)
        if len(s) != len(e):
            raise InvalidInput("bad_scores", f"got {len(s)} scores for {len(e)} embeddings; "
                               "pass one score per embedding row")
        limit = 1.0 - self.radius
        near_memory = np.zeros(len(e), dtype=bool)
        if self.memory_.size and len(e):
            self._check_dim(e)
            near_memory = (e @ self.memory_.T >= limit).any(axis=1)
        eligible = ~near_memory
        kept: list[int] = []
        for i in np.argsort(-s, kind="stable").tolist():
            if not eligible[i]:
                continue
            if kept and (e[kept] @ e[i] >= limit).any():
                eligible[i] = False
            else:
                kept.append(i)
        return eligible

    def update(self, embeddings, decision) -> None:
        """Remember the selected rows of ``embeddings``.

        ``decision``: the :class:`Decision` for this batch, or its bool
        ``selected`` mask ``[batch]``.
        """
        e = _unit(validate_embeddings(embeddings))
        selected = np.asarray(decision.selected if isinstance(decision, Decision) else decision)
        if selected.shape != (len(e),) or selected.dtype != bool:
            raise InvalidInput("bad_decision", f"selected must be bool [{len(e)}] to match the "
                               f"embeddings, got {selected.dtype} {selected.shape}")
        if not selected.any():
            return
        if self.memory_.size:
            self._check_dim(e)
            rows = np.concatenate([self.memory_, e[selected]])
        else:
            rows = e[selected]
        self.memory_ = frozen(rows[-self.memory:].copy())

    def clear(self) -> None:
        """Forget every remembered selection (e.g. after a model version change)."""
        self.memory_ = frozen(np.zeros((0, 0)))

    def _check_dim(self, e: np.ndarray) -> None:
        if e.shape[1] != self.memory_.shape[1]:
            raise InvalidInput("bad_embeddings", f"embeddings have {e.shape[1]} dims but the "
                               f"remembered ones {self.memory_.shape[1]}; a new model version "
                               "embeds differently: call clear() when the model changes")


def validate_embeddings(embeddings) -> np.ndarray:
    """Check finite float ``[batch, dim]`` embeddings; return float64.

    >>> validate_embeddings(np.zeros((3, 4), dtype=np.float32)).dtype
    dtype('float64')
    """
    try:
        arr = np.asarray(embeddings)
    except Exception as e:
        raise InvalidInput("bad_embeddings", f"could not read embeddings as an array ({e}); "
                           "pass a numpy array [batch, dim]") from e
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise InvalidInput("bad_embeddings", f"embeddings must be [batch, dim] with dim >= 1, "
                           f"got shape {arr.shape}; e.g. emb[None, :] for a single item")
    if arr.dtype.kind != "f":
        raise InvalidInput("bad_embeddings", f"embeddings must be floats, got dtype {arr.dtype}")
    out = arr.astype(np.float64)
    if not np.isfinite(out).all():
        raise InvalidInput("bad_embeddings", "embeddings contain NaN or inf; check the model "
                           "output and drop the item")
    return out


def _unit(e: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(e, axis=1, keepdims=True)
    return np.divide(e, norm, out=np.zeros_like(e), where=norm > 0)
