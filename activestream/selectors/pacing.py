"""The spending plan behind :class:`~activestream.selectors.AdaptiveBudget`.

The plan holds the number of picks in **every** run of ``window`` consecutive
items (a sliding window, so the tumbling windows 0..999, 1000..1999, ... are
held too) inside the band ``[lower, upper]`` around ``target``. Before the
first ``window`` items, the missing past counts as picks at the target rate,
so the first window follows the straight line ``target * position / window``.

The state is the pick flags of the last ``window`` items. For item ``i``, let
``B`` be the picks among the ``window - 1`` items before it (plus the virtual
ones); the window ending at ``i`` then holds ``B + pick``. So:

* ``B < lower``: the item must be picked (preferences yield);
* ``B + 1 > upper``: nothing is picked, not even an audit (the hard cap);
* otherwise the rate aims the window back at ``target`` over the next
  ``horizon`` items, counting the old picks that will leave the window.

The invariant ``lower <= B + pick <= upper`` then holds for every item: a
window gains at most the new pick and loses at most the one that leaves.
The plan walks a batch in stream order, so batch boundaries never change a
decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EPS = 1e-9


@dataclass(frozen=True)
class Verdict:
    """Per-item outcome of :meth:`Pacing.decide`; lists of length ``batch``."""

    selected: list[bool]
    probability: list[float]   # P(selected | state before the item)
    audit: list[bool]          # selected as a uniform audit item


@dataclass(frozen=True)
class Pacing:
    """Picks per sliding window: the uncertainty-pick rate for one item, and the hard limits."""

    window: int
    target: float   # fraction * window: picks per window
    lower: int      # every window holds lower <= picks <= upper
    upper: int      # also the hard cap: audits are refused above it
    audit: float    # q: per-item audit probability
    horizon: int    # items over which a deficit or surplus is made good

    @classmethod
    def make(cls, fraction: float, window: int, audit_share: float, tolerance: float,
             cap: int | None = None) -> "Pacing":
        target = fraction * window
        lower = math.ceil(target * (1 - tolerance) - EPS)
        upper = math.floor(target * (1 + tolerance) + EPS)
        if lower > upper:  # no whole number within tolerance: aim for the nearest ones
            lower, upper = math.floor(target), math.ceil(target)
        if cap is not None and cap < upper:
            upper = int(cap)
            if cap < target:
                # Below the target, pacing against the cap would catch up on every item
                # whatever its score: aim under the cap instead, so there is still room
                # to choose by score and to take audits.
                target = upper / (1 + tolerance)
                lower = math.ceil(target * (1 - tolerance) - EPS)
            lower = min(lower, upper)
        return cls(window, target, lower, upper, audit_share * target / window, max(1, window // 10))

    def rate(self, base: float, leaving: float) -> tuple[float, bool, bool]:
        """``(r, must, full)`` for an item whose window already holds ``base`` picks.

        ``leaving``: old picks that drop out of the window over the next
        ``horizon - 1`` items. ``r``: share of items to pick for their score.
        ``must``: without this pick the window falls below ``lower``, so
        preferences (quotas, diversity) yield. ``full``: the window is at the
        cap, nothing may be picked.
        """
        if base + 1 > self.upper + EPS:
            return 0.0, False, True
        if base < self.lower - EPS:
            return 1.0, True, False
        if base < (self.lower + self.target) / 2 - EPS:  # near the floor: catch up now
            return 1.0, False, False
        slack = 1.0 if self.upper - self.lower >= 4 else 0.0  # room for unrefusable audits
        q = self.audit
        if base + 1 > self.upper - slack + EPS or q >= 1.0:
            return 0.0, False, False
        h = self.horizon
        r = (self.target - base + leaving - q * h) / ((1.0 - q) * h)
        return min(1.0, max(0.0, r)), False, False

    def decide(self, seen: int, recent: np.ndarray, recent_classes: np.ndarray,
               lo: np.ndarray, hi: np.ndarray, audit: np.ndarray, coin: np.ndarray, *,
               eligible: np.ndarray, classes: np.ndarray | None, limits) -> Verdict:
        """Walk the batch in order, starting after ``seen`` items.

        ``recent``/``recent_classes``: pick flags, and the predicted class of
        each uncertainty pick (-1 otherwise), of the last ``min(seen, window)``
        items. ``lo``/``hi``: randomised-rank intervals; ``audit``: the audit
        coin came up; ``coin``: the rank coin; ``eligible``: may be picked for
        its score; ``classes``/``limits``: per-class quotas (``limits(c)`` is the
        most uncertainty picks class ``c`` may hold in a window). All ``[batch]``.
        """
        q = self.audit
        tape = _Tape(self, seen, recent, recent_classes)
        selected, probability, audited = [], [], []
        cls = classes.tolist() if classes is not None else [-1] * len(lo)
        for lo_i, hi_i, a_i, c_i, e_i, y_i in zip(lo.tolist(), hi.tolist(), audit.tolist(),
                                                  coin.tolist(), eligible.tolist(), cls):
            base, leaving = tape.base(), tape.leaving(self.horizon)
            r, must, full = self.rate(base, leaving)
            if full:                                # the cap: nothing more, not even audits
                pick, take_audit, p_total = False, False, 0.0
            else:
                under_quota = y_i < 0 or tape.class_count(y_i) < limits(y_i)
                p = 0.0
                if must or (e_i and under_quota):
                    p = min(1.0, max(0.0, (hi_i - 1.0 + r) / (hi_i - lo_i)))
                take_audit = a_i
                pick = a_i or c_i < p
                p_total = q + (1.0 - q) * p
            uncertain_class = y_i if (pick and not take_audit and classes is not None) else -1
            tape.push(pick, uncertain_class)
            selected.append(pick)
            probability.append(p_total)
            audited.append(take_audit)
        return Verdict(selected, probability, audited)

    def next_rate(self, seen: int, recent: np.ndarray) -> float:
        """The rate ``r`` the next item would get (for the threshold gauge)."""
        tape = _Tape(self, seen, recent, np.full(len(recent), -1))
        r, _, _ = self.rate(tape.base(), tape.leaving(self.horizon))
        return r


class _Tape:
    """Pick flags of the items so far (the last ``window`` before the batch, then the batch)."""

    def __init__(self, pacing: Pacing, seen: int, recent: np.ndarray, recent_classes: np.ndarray):
        self.window = pacing.window
        self.virtual = pacing.target / pacing.window    # a pick's share per item before item 0
        self.i = seen                                   # absolute index of the next item
        self.start = seen - len(recent)                 # absolute index of flags[0]
        self.flags = [int(f) for f in recent.tolist()]
        self.classes = [int(c) for c in recent_classes.tolist()]
        self.cum = [0]
        for f in self.flags:
            self.cum.append(self.cum[-1] + f)
        self.counts: dict[int, int] = {}
        for c in self.classes[max(0, len(self.classes) - (self.window - 1)):]:
            if c >= 0:
                self.counts[c] = self.counts.get(c, 0) + 1

    def _real(self, a: int, b: int) -> int:
        """Real picks among absolute items ``[a, b)`` (clipped to what is known)."""
        a, b = max(a, self.start, 0), max(b, self.start, 0)
        return self.cum[b - self.start] - self.cum[a - self.start] if b > a else 0

    def base(self) -> float:
        """Picks among the ``window - 1`` items before the next one, virtual ones included."""
        i, w = self.i, self.window
        return self._real(i - w + 1, i) + self.virtual * max(0, w - 1 - i)

    def leaving(self, horizon: int) -> float:
        """Picks leaving the window while the next ``horizon - 1`` items after this one come in."""
        i, w = self.i, self.window
        a, b = i + 1 - w, i + horizon - w                # absolute items that drop out
        virtual = max(0, min(b, 0) - a) if a < 0 else 0
        return self._real(a, b) + self.virtual * virtual

    def class_count(self, c: int) -> int:
        return self.counts.get(c, 0)

    def push(self, pick: bool, uncertain_class: int) -> None:
        out = self.i - self.window + 1                 # leaves the window of the item after this
        if out >= self.start and out >= 0:
            gone = self.classes[out - self.start]
            if gone >= 0:
                self.counts[gone] -= 1
        self.flags.append(int(pick))
        self.classes.append(uncertain_class)
        self.cum.append(self.cum[-1] + int(pick))
        if uncertain_class >= 0:
            self.counts[uncertain_class] = self.counts.get(uncertain_class, 0) + 1
        self.i += 1
