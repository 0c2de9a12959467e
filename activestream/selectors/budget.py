"""Budget managers: decide which scored items go to human labelers.

Kept apart from scoring: a budget manager sees float ``scores`` ``[batch]``
(higher = more worth a label) and one stable string key per item (e.g.
``"topic/partition/offset"``), never the model. Two verbs:

* ``query(scores, keys) -> Decision`` is pure: no state changes, and the
  same state, scores and keys always give the same decision, because all
  randomness is a keyed hash of ``(seed, key)``. A batch that Kafka
  redelivers after a rebalance is decided the same way again.
* ``update(scores, decision) -> None`` commits a decision: counters, score
  history and threshold move on.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from activestream.errors import InvalidInput
from activestream.selectors.base import validate_scores

_EPS = 1e-9
_CHUNK = 128  # rank matrices are at most _CHUNK x _CHUNK


@dataclass(frozen=True, eq=False)
class Decision:
    """What a budget manager chose for one batch; arrays are ``[batch]``.

    ``selected`` (bool): send the item to a labeler. ``probability``
    (float64): the probability that the item is selected given the state
    at decision time; in ``(0, 1]`` for selected items, usable as an
    inverse-propensity weight. ``reason``: ``"audit"``, ``"uncertain"`` or
    ``""`` (not selected). ``threshold``: the score threshold in force for
    the batch's first item.
    """

    selected: np.ndarray
    probability: np.ndarray
    reason: tuple[str, ...]
    threshold: float

    def __eq__(self, other) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return (np.array_equal(self.selected, other.selected)
                and np.array_equal(self.probability, other.probability)
                and self.reason == other.reason
                and (self.threshold == other.threshold
                     or (math.isnan(self.threshold) and math.isnan(other.threshold))))

    __hash__ = None  # holds arrays


class BudgetManager(Protocol):
    """``query`` (pure) then ``update`` (commit) for every batch, in order."""

    seen_: int
    spent_: int
    threshold_: float

    def query(self, scores: np.ndarray, keys: Sequence[str]) -> Decision: ...

    def update(self, scores: np.ndarray, decision: Decision) -> None: ...


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


def _check_batch(scores, keys: Sequence[str]) -> np.ndarray:
    s = validate_scores(scores)
    if len(keys) != len(s):
        raise InvalidInput("bad_keys", f"got {len(keys)} keys for {len(s)} scores; "
                           "pass exactly one key per item, in the same order")
    return s


def _check_decision(s: np.ndarray, decision: Decision) -> np.ndarray:
    selected = np.asarray(decision.selected)
    if selected.shape != s.shape or selected.dtype != bool:
        raise InvalidInput("bad_decision", f"decision.selected must be bool {s.shape} to match "
                           f"the scores, got {selected.dtype} {selected.shape}; pass the "
                           "Decision that query returned for these same scores")
    return selected


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


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


@dataclass(frozen=True)
class _Pacing:
    """Per-window spending plan: the uncertainty-pick rate for one item."""

    window: int
    target: float   # fraction * window: picks per window
    lower: int      # every window ends with lower <= picks <= upper
    upper: int
    audit: float    # q: per-item audit probability
    horizon: int    # items over which a deficit or surplus is made good

    @classmethod
    def make(cls, fraction: float, window: int, audit_share: float, tolerance: float):
        target = fraction * window
        lower = math.ceil(target * (1 - tolerance) - _EPS)
        upper = math.floor(target * (1 + tolerance) + _EPS)
        if lower > upper:  # no whole number within tolerance: aim for the nearest ones
            lower, upper = math.floor(target), math.ceil(target)
        return cls(window, target, lower, upper, audit_share * fraction, max(1, window // 10))

    def rate(self, k: int, spent: int) -> float:
        """Rate for the item at window position ``k`` after ``spent`` picks in the window.

        1.0 forces a pick, 0.0 refuses one (audit picks are never refused).
        """
        w, t, q = self.window, self.target, self.audit
        plan = t * (k + 1) / w                      # straight-line schedule after this item
        left = w - k - 1                            # items after this one
        floor = max(self.lower - left, plan - max(t - self.lower, 1.0))
        if spent < floor - _EPS:                    # below the corridor: catch up now
            return 1.0
        reserve = min(left, q * left + 3.0 * math.sqrt(q * left))  # for unrefusable audits
        if spent + 1 > min(self.upper - reserve, plan + max(self.upper - t, 1.0)) + _EPS:
            return 0.0
        if q >= 1.0:
            return 0.0
        h = min(self.horizon, w - k)
        r = (t * (k + h) / w - spent - q * h) / ((1.0 - q) * h)
        return min(1.0, max(0.0, r))

    def decide(self, k: int, spent: int, lo, hi, audit, coin):
        """Walk the batch in order; return per-item (selected, p_uncertain) lists."""
        selected, p_unc = [], []
        for lo_i, hi_i, a_i, c_i in zip(lo.tolist(), hi.tolist(), audit.tolist(), coin.tolist()):
            r = self.rate(k, spent)
            p = min(1.0, max(0.0, (hi_i - 1.0 + r) / (hi_i - lo_i)))
            pick = a_i or c_i < p
            selected.append(pick)
            p_unc.append(p)
            spent += pick
            k += 1
            if k == self.window:
                k, spent = 0, 0
        return selected, p_unc


class AdaptiveBudget:
    """Spend ``fraction`` of traffic on labels in every window, on the best items.

    Every tumbling window of ``window`` consecutive items (items 0..window-1,
    then the next ``window``, ...) ends with ``fraction * window`` picks
    within ``tolerance`` (10%), from a cold start and whatever the scores
    do: constant, drifting, collapsing, in batches of any size.

    How an item is decided, in stream order (batch boundaries do not matter):

    1. **Audit**: with probability ``q = audit_share * fraction`` (a keyed coin,
       independent of the score) the item is an audit pick. Audits are never
       refused, so they are a uniform random sample of the traffic for
       unbiased accuracy estimates; they count towards the spend.
    2. **Rate**: the uncertainty-pick rate ``r`` comes from a pacing plan: the
       picks should follow the straight line ``fraction * position`` through
       the window; ``r`` makes good the current deficit or surplus over the
       next ``window // 10`` items (net of expected audits). A corridor of
       ``+-max(tolerance * fraction * window, 1)`` picks around the line is
       enforced: ``r = 1`` below it, ``r = 0`` above it (the top also keeps
       room for the audits still to come), and it narrows to the tolerance
       band at the window's end, so every window ends inside the band.
    3. **Rank**: the item's randomised rank among the previous ``history``
       scores is uniform on ``[lo, hi]`` (see :func:`score_ranks`; ties, and
       an empty history, give wide intervals). It is an uncertainty pick if
       that rank is in the top ``r``: ``P_u = clip((hi - (1 - r)) / (hi - lo), 0, 1)``.

    ``Decision.probability`` is ``q + (1 - q) * P_u`` for every item (the
    audit and rank coins are independent keyed hashes): the exact selection
    probability given the state before the item (window position, picks so
    far in the window, score history), so it is 1 for forced picks and
    ``q`` for refused ones. Because it conditions on the past only,
    ``sum(x / probability over selected) / n`` is an unbiased
    (Horvitz-Thompson) estimate of the mean of ``x`` over all items.
    A window can leave the band only if its audits alone exceed the band's
    top, which needs a large ``audit_share`` or a tiny ``fraction * window``.

    >>> budget = AdaptiveBudget(0.1, window=500, seed=7)
    >>> rng = np.random.default_rng(0)
    >>> for batch in range(4):                      # four windows of 500 items
    ...     scores = rng.random(500)
    ...     decision = budget.query(scores, [f"img-{batch}-{i}" for i in range(500)])
    ...     assert 45 <= decision.selected.sum() <= 55
    ...     budget.update(scores, decision)         # returns None
    >>> budget.seen_, 180 <= budget.spent_ <= 220
    (2000, True)
    >>> picked = scores[[r == "uncertain" for r in decision.reason]]
    >>> bool(picked.mean() > 0.85)                  # the top 10% averages 0.95
    True
    """

    def __init__(self, fraction: float, *, window: int = 1000, audit_share: float = 0.1,
                 history: int = 2000, seed: int = 0, tolerance: float = 0.1):
        _require(0 < fraction <= 1, f"fraction must be in (0, 1], got {fraction!r}")
        _require(_is_int(window) and window >= 1, f"window must be an int >= 1, "
                 f"got {window!r}")
        _require(0 <= audit_share <= 1, f"audit_share must be in [0, 1], got {audit_share!r}")
        _require(_is_int(history) and history >= 1, f"history must be an int >= 1, "
                 f"got {history!r}")
        _require(_is_int(seed), f"seed must be an int, got {seed!r}")
        _require(0 <= tolerance < 1, f"tolerance must be in [0, 1), got {tolerance!r}")
        _require(fraction * window >= 1 - _EPS, f"a window of {window} items at fraction "
                 f"{fraction} expects under one label, so no window can be held to its "
                 f"share; use window >= {math.ceil(1 / fraction - _EPS)}")
        self.fraction = fraction
        self.window = window
        self.audit_share = audit_share
        self.history = history
        self.seed = seed
        self.tolerance = tolerance
        self._pacing = _Pacing.make(fraction, window, audit_share, tolerance)
        self.seen_ = 0
        self.spent_ = 0
        self.window_spent_ = 0
        self.history_ = _frozen(np.zeros(0))
        self.threshold_ = self._threshold()

    def __repr__(self) -> str:
        return (f"AdaptiveBudget({self.fraction!r}, window={self.window!r}, "
                f"audit_share={self.audit_share!r}, history={self.history!r}, "
                f"seed={self.seed!r}, tolerance={self.tolerance!r})")

    def _threshold(self) -> float:
        rate = self._pacing.rate(self.seen_ % self.window, self.window_spent_)
        return rank_threshold(self.history_, rate)

    def query(self, scores: np.ndarray, keys: Sequence[str]) -> Decision:
        """Decide a batch (pure). ``scores``: float ``[batch]``; ``keys``: one str per item."""
        s = _check_batch(scores, keys)
        coins = keyed_uniforms(keys, self.seed)
        q = self._pacing.audit
        audit = coins[:, 0] < q
        lo, hi = score_ranks(self.history_, s, self.history)
        picks, p_unc = self._pacing.decide(self.seen_ % self.window, self.window_spent_,
                                           lo, hi, audit, coins[:, 1])
        selected = np.array(picks, dtype=bool)
        probability = q + (1.0 - q) * np.array(p_unc, dtype=np.float64)
        reason = tuple("audit" if a else "uncertain" if p else ""
                       for a, p in zip(audit.tolist(), picks))
        return Decision(_frozen(selected), _frozen(probability), reason, self.threshold_)

    def update(self, scores: np.ndarray, decision: Decision) -> None:
        """Commit ``decision`` (from ``query`` on these scores): counters, history, threshold."""
        s = validate_scores(scores)
        selected = _check_decision(s, decision)
        k = self.seen_ % self.window
        if k + len(s) < self.window:
            self.window_spent_ += int(selected.sum())
        else:  # the batch crosses a boundary: count only the last, unfinished window
            start = len(s) - (k + len(s)) % self.window
            self.window_spent_ = int(selected[start:].sum())
        self.seen_ += len(s)
        self.spent_ += int(selected.sum())
        self.history_ = _frozen(np.concatenate([self.history_, s])[-self.history:])
        self.threshold_ = self._threshold()


class FixedThreshold:
    """Pick every item scoring ``>= threshold``: the naive baseline.

    It caps nothing and adapts to nothing: once the model grows confident and
    scores fall below the threshold, it stops asking for labels.

    >>> budget = FixedThreshold(0.5)
    >>> budget.query(np.array([0.2, 0.7]), ["a", "b"]).selected.tolist()
    [False, True]
    """

    def __init__(self, threshold: float):
        _require(math.isfinite(threshold), f"threshold must be finite, got {threshold!r}")
        self.threshold = threshold
        self.seen_ = 0
        self.spent_ = 0
        self.threshold_ = float(threshold)

    def __repr__(self) -> str:
        return f"FixedThreshold({self.threshold!r})"

    def query(self, scores: np.ndarray, keys: Sequence[str]) -> Decision:
        """Decide a batch (pure); ``probability`` is 1 for picks, 0 otherwise."""
        selected = _check_batch(scores, keys) >= self.threshold
        reason = tuple("uncertain" if p else "" for p in selected.tolist())
        return Decision(_frozen(selected), _frozen(selected.astype(np.float64)), reason,
                        self.threshold_)

    def update(self, scores: np.ndarray, decision: Decision) -> None:
        """Commit ``decision``: advance ``seen_`` and ``spent_``."""
        selected = _check_decision(validate_scores(scores), decision)
        self.seen_ += len(selected)
        self.spent_ += int(selected.sum())


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidInput("bad_config", message + "; fix the budget settings")
