"""Budget managers: decide which scored items go to human labelers.

Kept apart from scoring (see :mod:`activestream.selectors.decision` for the
``query``/``update`` protocol and :class:`Decision`). ``query`` is pure;
``update`` commits.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from activestream.errors import InvalidInput
from activestream.selectors.base import validate_scores
from activestream.selectors.decision import (
    Decision,
    check_batch,
    check_classes,
    check_decision,
    check_eligible,
    frozen,
)
from activestream.selectors.pacing import EPS, Pacing
from activestream.selectors.ranking import keyed_uniforms, rank_threshold, score_ranks


class AdaptiveBudget:
    """Spend ``fraction`` of traffic on labels in every window, on the best items.

    Every run of ``window`` consecutive items (a sliding window, so also the
    tumbling windows 0..window-1, window..2*window-1, ...) holds
    ``fraction * window`` picks within ``tolerance`` (10%), from a cold start
    and whatever the scores do: constant, drifting, collapsing, in batches of
    any size. Before the first ``window`` items the missing past counts as
    picks at the target rate, so the first window is held too.

    How an item is decided, in stream order (batch boundaries do not matter;
    see :mod:`activestream.selectors.pacing` for the plan):

    1. **Cap**: when the window ending at this item already holds ``cap``
       picks (default and at most: the band's top,
       ``floor(1.1 * fraction * window)``), the item is not picked, not even
       as an audit (probability 0). A cap below ``fraction * window`` moves the
       target to ``cap / (1 + tolerance)``, so picks still follow the scores.
    2. **Audit**: with probability ``q = audit_share * target / window`` (a keyed coin,
       independent of the score) the item is an audit pick. Audits are never
       refused below the cap, so they are a uniform random sample of the
       traffic for unbiased accuracy estimates; they count towards the spend.
    3. **Rate**: the uncertainty-pick rate ``r`` aims the window back at its
       target over the next ``window // 10`` items, counting the old picks that
       will drop out of it and the audits to expect; ``r = 1`` when the window
       nears the band's bottom, ``r = 0`` one pick below the cap (room for
       audits).
    4. **Preferences**: an item that is not ``eligible`` (e.g. a near-duplicate
       of a recent pick, see :class:`DiversityFilter`), or whose predicted
       class (``classes``) already holds its quota of the window's uncertainty
       picks, is not picked for its score, unless the window would otherwise
       fall below its band: the band is the guarantee, preferences yield.
       ``quotas`` is a share of the window's target per predicted class (a
       float for every class, or ``{class: share}``; unlisted classes are
       unlimited), so one dominant class cannot take the whole budget; with
       quotas, ranks (step 5) are taken within the item's predicted class.
    5. **Rank**: the item's randomised rank among the previous ``history``
       scores is uniform on ``[lo, hi]`` (see :func:`score_ranks`; ties, and
       an empty history, give wide intervals). It is an uncertainty pick if
       that rank is in the top ``r``: ``P_u = clip((hi - (1 - r)) / (hi - lo), 0, 1)``.

    ``Decision.probability`` is ``q + (1 - q) * P_u`` for every item (the
    audit and rank coins are independent keyed hashes; 0 at the cap): the
    exact selection probability given the state before the item (the picks
    of the last window, the score history), so it is 1 for forced picks and
    ``q`` for refused ones. Because it conditions on the past only,
    ``sum(x / probability over selected) / n`` is an unbiased
    (Horvitz-Thompson) estimate of the mean of ``x`` over all items, as long
    as the cap refuses no audit item, which takes a large ``audit_share`` or
    a ``cap`` below the band. A ``cap`` below the band wins over the band.

    ``Decision.priority`` is the item's rank midpoint ``(lo + hi) / 2`` for
    uncertainty picks, ``1 - fraction * u`` (``u`` uniform) for audit picks.

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
    >>> order = np.argsort(-decision.priority)[:decision.selected.sum()]
    >>> bool(decision.selected[order].all())        # the queue serves picks only
    True
    """

    def __init__(self, fraction: float, *, window: int = 1000, audit_share: float = 0.1,
                 history: int = 2000, seed: int = 0, tolerance: float = 0.1,
                 cap: int | None = None, quotas: float | Mapping[int, float] | None = None):
        _require(0 < fraction <= 1, f"fraction must be in (0, 1], got {fraction!r}")
        _require(_is_int(window) and window >= 1, f"window must be an int >= 1, "
                 f"got {window!r}")
        _require(0 <= audit_share <= 1, f"audit_share must be in [0, 1], got {audit_share!r}")
        _require(_is_int(history) and history >= 1, f"history must be an int >= 1, "
                 f"got {history!r}")
        _require(_is_int(seed), f"seed must be an int, got {seed!r}")
        _require(0 <= tolerance < 1, f"tolerance must be in [0, 1), got {tolerance!r}")
        _require(fraction * window >= 1 - EPS, f"a window of {window} items at fraction "
                 f"{fraction} expects under one label, so no window can be held to its "
                 f"share; use window >= {math.ceil(1 / fraction - EPS)}")
        _require(cap is None or (_is_int(cap) and cap >= 1),
                 f"cap must be None or an int >= 1 (labels per window), got {cap!r}")
        self.fraction = fraction
        self.window = window
        self.audit_share = audit_share
        self.history = history
        self.seed = seed
        self.tolerance = tolerance
        self.cap = cap
        self.quotas = quotas
        self._limits = _quota_limits(quotas, fraction * window)
        self._pacing = Pacing.make(fraction, window, audit_share, tolerance, cap)
        self.seen_ = 0
        self.spent_ = 0
        self.recent_ = frozen(np.zeros(0, dtype=np.int8))          # picks, last `window` items
        self.recent_classes_ = frozen(np.zeros(0, dtype=np.int64))  # class of uncertain picks
        self.class_history_: dict[int, np.ndarray] = {}
        self.history_ = frozen(np.zeros(0))
        self.threshold_ = self._threshold()

    def __repr__(self) -> str:
        extra = "".join(f", {name}={getattr(self, name)!r}" for name in ("cap", "quotas")
                        if getattr(self, name) is not None)
        return (f"AdaptiveBudget({self.fraction!r}, window={self.window!r}, "
                f"audit_share={self.audit_share!r}, history={self.history!r}, "
                f"seed={self.seed!r}, tolerance={self.tolerance!r}{extra})")

    def _threshold(self) -> float:
        return rank_threshold(self.history_, self._pacing.next_rate(self.seen_, self.recent_))

    def query(self, scores: np.ndarray, keys: Sequence[str], *, classes=None,
              eligible=None) -> Decision:
        """Decide a batch (pure).

        ``scores``: float ``[batch]``; ``keys``: one str per item; ``classes``:
        predicted class per item, int ``[batch]`` (required with ``quotas``);
        ``eligible``: bool ``[batch]``, False for items not to be picked for
        their score (None: all eligible).
        """
        s = check_batch(scores, keys)
        classes = check_classes(classes, len(s))
        if self._limits is not None and classes is None:
            raise InvalidInput("bad_classes", "this budget has per-class quotas, so query needs "
                               "classes=probs.argmax(axis=1)")
        ok = check_eligible(eligible, len(s))
        coins = keyed_uniforms(keys, self.seed)
        q = self._pacing.audit
        lo, hi = self._ranks(s, classes)
        verdict = self._pacing.decide(
            self.seen_, self.recent_, self.recent_classes_, lo, hi, coins[:, 0] < q, coins[:, 1],
            eligible=ok, classes=classes if self._limits is not None else None,
            limits=self._limits)
        selected = np.array(verdict.selected, dtype=bool)
        audit = np.array(verdict.audit, dtype=bool) & selected
        reason = tuple("audit" if a else "uncertain" if p else ""
                       for a, p in zip(audit.tolist(), verdict.selected))
        audit_rank = 1.0 - self.fraction * coins[:, 0] / q if q > 0 else np.zeros(len(s))
        priority = np.where(audit, audit_rank, (lo + hi) / 2.0) * selected
        return Decision(frozen(selected), frozen(np.array(verdict.probability, dtype=np.float64)),
                        reason, self.threshold_, frozen(priority.astype(np.float64)), classes)

    def _ranks(self, s: np.ndarray, classes: np.ndarray | None):
        """Randomised-rank intervals ``(lo, hi)`` of the batch's scores, in stream order.

        With quotas an item is ranked among recent items of its own predicted
        class: once a dominant class has used its quota, the pacing has to find
        the rest of the window's picks in the other classes, and ranks against
        the whole traffic would put all of those at the bottom.
        """
        if self._limits is None:
            return score_ranks(self.history_, s, self.history)
        lo, hi = np.zeros(len(s)), np.zeros(len(s))
        for c in np.unique(classes).tolist():
            mine = classes == c
            past = self.class_history_.get(c, np.zeros(0))
            lo[mine], hi[mine] = score_ranks(past, s[mine], self.history)
        return lo, hi

    def update(self, scores: np.ndarray, decision: Decision) -> None:
        """Commit ``decision`` (from ``query`` on these scores): counters, history, threshold."""
        s = validate_scores(scores)
        selected = check_decision(s, decision)
        uncertain = np.array([r == "uncertain" for r in decision.reason], dtype=bool)
        if self._limits is not None:
            if decision.classes is None:
                raise InvalidInput("bad_decision", "this budget has per-class quotas; pass the "
                                   "Decision that query returned (it carries the classes)")
            picked_class = np.where(uncertain, decision.classes, -1)
            histories = dict(self.class_history_)
            for c in np.unique(decision.classes).tolist():
                mine = s[decision.classes == c]
                histories[c] = frozen(np.concatenate([histories.get(c, np.zeros(0)),
                                                      mine])[-self.history:])
            self.class_history_ = histories
        else:
            picked_class = np.full(len(s), -1, dtype=np.int64)
        self.recent_ = frozen(np.concatenate([self.recent_, selected.astype(np.int8)])
                              [-self.window:])
        self.recent_classes_ = frozen(np.concatenate([self.recent_classes_,
                                                      picked_class.astype(np.int64)])
                                      [-self.window:])
        self.seen_ += len(s)
        self.spent_ += int(selected.sum())
        self.history_ = frozen(np.concatenate([self.history_, s])[-self.history:])
        self.threshold_ = self._threshold()


class FixedThreshold:
    """Pick every item scoring ``>= threshold``: the naive baseline.

    It caps nothing and adapts to nothing: once the model grows confident and
    scores fall below the threshold, it stops asking for labels. It is here
    to show that weakness in tests and benchmarks, not to be deployed.

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

    def query(self, scores: np.ndarray, keys: Sequence[str], *, classes=None,
              eligible=None) -> Decision:
        """Decide a batch (pure); ``probability`` is 1 for picks, 0 otherwise."""
        s = check_batch(scores, keys)
        selected = (s >= self.threshold) & check_eligible(eligible, len(s))
        reason = tuple("uncertain" if p else "" for p in selected.tolist())
        return Decision(frozen(selected), frozen(selected.astype(np.float64)), reason,
                        self.threshold_, classes=check_classes(classes, len(s)))

    def update(self, scores: np.ndarray, decision: Decision) -> None:
        """Commit ``decision``: advance ``seen_`` and ``spent_``."""
        selected = check_decision(validate_scores(scores), decision)
        self.seen_ += len(selected)
        self.spent_ += int(selected.sum())


def _quota_limits(quotas, target: float):
    """``limits(c)``: most uncertainty picks class ``c`` may take per window (None: no quotas)."""
    if quotas is None:
        return None
    if isinstance(quotas, Mapping):
        shares = dict(quotas)
        for c, share in shares.items():
            _require(_is_int(c) and c >= 0, f"quota classes must be ints >= 0, got {c!r}")
            _require(0 < share <= 1, f"quota shares must be in (0, 1], got {share!r} for {c}")
        return lambda c: _limit(shares[c], target) if c in shares else math.inf
    _require(isinstance(quotas, (int, float)) and 0 < quotas <= 1,
             f"quotas must be a share in (0, 1], a {{class: share}} dict or None, got {quotas!r}")
    limit = _limit(float(quotas), target)
    return lambda c: limit


def _limit(share: float, target: float) -> int:
    return max(1, math.floor(share * target + EPS))


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidInput("bad_config", message + "; fix the budget settings")
