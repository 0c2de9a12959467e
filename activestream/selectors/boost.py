"""Raise the labeling budget for a while after a drift detection.

:class:`DriftBoost` wraps a budget manager (an :class:`AdaptiveBudget`) with the same
verbs. Once :meth:`DriftBoost.trigger` is called, for the next ``images`` items it also
picks, with reason ``"drift"``, the items that the wrapped budget passed over and
whose score ranks among the top ``factor * fraction`` of recent scores: about
``(factor - 1) * fraction`` more of the traffic, on the items the serving version is
least sure of. Drift picks are kept off the wrapped budget's books, so its windows keep
their target and, once the boost is over, the spend is back on target at once.

Each drift pick's ``probability`` stays the exact selection probability given the
state before the item: the wrapped budget's ``p`` and the boost's own keyed coin are
independent, so it is ``p + (1 - p) * p_drift``.

>>> from activestream.selectors import AdaptiveBudget
>>> budget = DriftBoost(AdaptiveBudget(0.1, window=500, seed=1), factor=3.0, images=1000)
>>> rng = np.random.default_rng(0)
>>> def run(n, start):
...     scores = rng.random(n)
...     decision = budget.query(scores, [f"i{start + i}" for i in range(n)])
...     budget.update(scores, decision)
...     return decision
>>> calm = run(1000, 0)
>>> "drift" in calm.reason
False
>>> budget.trigger()                      # a detection: 1,000 images at three times the budget
>>> boosted = run(1000, 1000)
>>> 250 <= int(boosted.selected.sum()) <= 350, boosted.reason.count("drift") > 150
(True, True)
>>> budget.remaining_, 45 <= int(run(500, 2000).selected.sum()) <= 55   # back on target
(0, True)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from activestream.errors import InvalidInput
from activestream.selectors.base import validate_scores
from activestream.selectors.decision import Decision, check_batch, check_decision, check_eligible, frozen
from activestream.selectors.ranking import keyed_uniforms, score_ranks

SALT = 0x6472696674  # "drift": the boost's coins are independent of the wrapped budget's


class DriftBoost:
    """``base`` plus drift picks for ``images`` items after each :meth:`trigger`.

    ``factor``: how many times the budget's ``fraction`` to spend while boosted (1: no
    boost); ``images``: how many items a trigger boosts (0: no boost).
    """

    def __init__(self, base, *, factor: float = 3.0, images: int = 2000):
        if not factor >= 1 or not isinstance(images, int) or images < 0:
            raise InvalidInput("bad_config", f"a drift boost needs factor >= 1 and images >= 0, got {factor!r} and "
                               f"{images!r}; fix ACTIVESTREAM_DRIFT_BUDGET_FACTOR or ACTIVESTREAM_DRIFT_BUDGET_IMAGES")
        self.base = base
        self.factor = factor
        self.images = images
        self.remaining_ = 0           # items the current boost still covers
        self.seen_boosted_ = 0        # items the current boost has covered
        self.drift_spent_boost_ = 0   # drift picks of the current boost
        self.drift_spent_ = 0         # drift picks so far

    def __repr__(self) -> str:
        return f"DriftBoost({self.base!r}, factor={self.factor!r}, images={self.images!r})"

    # the wrapped budget's view, for callers that read it
    quotas = property(lambda self: getattr(self.base, "quotas", None))
    seen_ = property(lambda self: self.base.seen_)
    spent_ = property(lambda self: self.base.spent_ + self.drift_spent_)
    threshold_ = property(lambda self: self.base.threshold_)

    def trigger(self) -> None:
        """A drift was detected: boost the next ``images`` items (a boost under way starts over)."""
        self.remaining_ = self.images
        self.seen_boosted_ = 0
        self.drift_spent_boost_ = 0

    def query(self, scores: np.ndarray, keys: Sequence[str], *, classes=None, eligible=None) -> Decision:
        """The wrapped budget's decision, plus drift picks while boosted (pure)."""
        decision = self.base.query(scores, keys, classes=classes, eligible=eligible)
        n = min(self.remaining_, len(keys))
        if n == 0 or self.factor <= 1:
            return decision
        s = check_batch(scores, keys)
        lo, hi = score_ranks(self.base.history_, s, self.base.history)
        cut = 1.0 - min(1.0, self.factor * self.base.fraction)
        chance = np.clip((hi - cut) / np.maximum(hi - lo, 1e-12), 0.0, 1.0)
        by_rank = lo + keyed_uniforms(keys, self.base.seed ^ SALT)[:, 0] * (hi - lo) >= cut
        extra = np.zeros(len(s), dtype=bool)
        ok = check_eligible(eligible, len(s)) & ~decision.selected
        # Paced: after a shift every score ranks high against the old history, and picking
        # by rank alone would take nearly everything. An item is a candidate only while the
        # boost's picks are behind (factor - 1) * fraction of the items it has covered.
        rate, seen, spent = (self.factor - 1) * self.base.fraction, self.seen_boosted_, self.drift_spent_boost_
        for i in range(len(s)):
            if i >= n or rate * (seen + 1) - spent <= 0:
                chance[i] = 0.0
            elif ok[i] and by_rank[i]:
                extra[i] = True
                spent += 1
            seen += i < n
        p = decision.probability
        probability = p + (1 - p) * np.where(ok | decision.selected, chance, 0.0)
        reason = tuple("drift" if e else r for e, r in zip(extra.tolist(), decision.reason))
        priority = np.where(extra, (lo + hi) / 2.0, decision.priority)
        return Decision(frozen(decision.selected | extra), frozen(probability), reason, decision.threshold,
                        frozen(priority.astype(np.float64)), decision.classes)

    def update(self, scores: np.ndarray, decision: Decision) -> None:
        """Commit: the wrapped budget books its own picks only; the boost counts down."""
        selected = check_decision(validate_scores(scores), decision)
        drift = np.array([r == "drift" for r in decision.reason], dtype=bool)
        own = Decision(frozen(selected & ~drift), decision.probability, tuple("" if d else r for d, r in zip(
            drift.tolist(), decision.reason)), decision.threshold, decision.priority, decision.classes)
        self.base.update(scores, own)
        covered = min(self.remaining_, len(selected))
        self.remaining_ -= covered
        self.seen_boosted_ += covered
        self.drift_spent_boost_ += int(drift.sum())
        self.drift_spent_ += int(drift.sum())
