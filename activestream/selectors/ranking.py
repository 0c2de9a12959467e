"""Where a score stands among recent scores, and keyed randomness.

Both are pure functions of their inputs, which is what lets a budget
manager's ``query`` be replayed: a batch redelivered after a Kafka rebalance
gets the same ranks and the same coins, so the same decision.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import numpy as np

from activestream.errors import InvalidInput

_CHUNK = 128  # rank matrices are at most _CHUNK x _CHUNK


def keyed_uniforms(keys: Sequence[str], seed: int) -> np.ndarray:
    """Two independent uniforms in ``[0, 1)`` per key: float64 ``[batch, 2]``.

    A pure function of ``(seed, key)`` (blake2b), so replays agree.

    >>> keyed_uniforms(["a", "b"], seed=0).shape
    (2, 2)
    >>> bool((keyed_uniforms(["a"], 1) == keyed_uniforms(["a"], 1)).all())
    True
    """
    salt = hashlib.blake2b(repr(int(seed)).encode(), digest_size=32).digest()
    base = hashlib.blake2b(key=salt, digest_size=16)
    digests = []
    for key in keys:
        if not isinstance(key, str):
            raise InvalidInput("bad_keys", f"keys must be strings, got {type(key).__name__}; "
                               "use a stable id such as f'{topic}/{partition}/{offset}'")
        h = base.copy()
        h.update(key.encode())
        digests.append(h.digest())
    words = np.frombuffer(b"".join(digests), dtype="<u8").reshape(-1, 2)
    return (words >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _rank_chunk(past: np.ndarray, s: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Randomised-rank interval of ``s[i]`` among the last ``size`` of past + s[:i]."""
    n, m0 = len(s), len(past)
    order = np.sort(past)
    lt = np.searchsorted(order, s, "left")
    le = np.searchsorted(order, s, "right")
    i = np.arange(n)
    evicted = np.maximum(0, m0 + i - size)          # oldest `past` values out of view
    front = past[: min(m0, int(evicted.max(initial=0)))]
    if front.size:
        gone = np.arange(front.size)[None, :] < evicted[:, None]
        lt -= np.count_nonzero((front[None, :] < s[:, None]) & gone, axis=1)
        le -= np.count_nonzero((front[None, :] <= s[:, None]) & gone, axis=1)
    seen = (i[None, :] < i[:, None]) & (i[None, :] >= (i - size)[:, None])
    lt += np.count_nonzero((s[None, :] < s[:, None]) & seen, axis=1)
    le += np.count_nonzero((s[None, :] <= s[:, None]) & seen, axis=1)
    m = np.minimum(size, m0 + i) + 1.0
    return lt / m, (le + 1) / m


def score_ranks(history: np.ndarray, scores: np.ndarray, size: int):
    """``(lo, hi)``: where each score falls among the ``size`` scores before it.

    Item ``i`` is compared with the last ``size`` values of
    ``history + scores[:i]``, exactly as if the batch arrived one item at a
    time. Among those ``m`` values and itself the item occupies the slots
    ``lo = #less / (m+1)`` to ``hi = (#less_or_equal + 1) / (m+1)``; ties
    share the interval, so a uniform point inside it is an exact
    randomised rank.

    >>> lo, hi = score_ranks(np.array([1.0, 2.0, 3.0]), np.array([2.5, 2.5]), size=3)
    >>> lo.tolist(), hi.tolist()
    ([0.5, 0.25], [0.75, 0.75])
    """
    los, his = [], []
    for start in range(0, len(scores), _CHUNK):
        past = np.concatenate([history, scores[max(0, start - size):start]])[-size:]
        lo, hi = _rank_chunk(past, scores[start:start + _CHUNK], size)
        los.append(lo)
        his.append(hi)
    if not los:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(los), np.concatenate(his)


def rank_threshold(history: np.ndarray, rate: float) -> float:
    """The score above which roughly ``rate`` of ``history`` lies.

    ``-inf`` when everything is eligible (``rate >= 1`` or no history yet:
    every item then ties and is picked at random), ``inf`` when nothing is.

    >>> rank_threshold(np.arange(101.0), 0.1), rank_threshold(np.zeros(0), 0.1)
    (90.0, -inf)
    """
    if rate >= 1.0 or history.size == 0:
        return -math.inf
    if rate <= 0.0:
        return math.inf
    return float(np.quantile(history, 1.0 - rate))
