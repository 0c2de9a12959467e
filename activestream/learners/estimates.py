"""Honest accuracy estimates for the serving model from the labels it gets.

Every label comes with the probability with which its item was selected. Three
estimates of the same quantity, the serving model's accuracy on the traffic:

* :func:`audit_accuracy`: only the audit labels (a uniform random sample of the
  traffic), with a Wilson 95% interval. Unbiased, and wide when audits are few.
* :func:`ipw_accuracy`: every label, each weighted by ``1 / probability``
  (Hajek's ratio form of Horvitz-Thompson): unbiased up to O(1/n), uses all labels.
* :func:`naive_accuracy`: the plain mean over queried labels. Biased low when the
  selector picks the model's weak spots; shown beside the others so the gap is visible.

Inputs are ``correct`` bool ``[n]`` (served prediction == label) and, for IPW,
``probability`` float ``[n]`` in ``(0, 1]``.

>>> correct = np.array([True] * 8 + [False] * 2)
>>> e = audit_accuracy(correct)
>>> round(e.value, 2), e.low < 0.8 < e.high
(0.8, True)
>>> ipw_accuracy(np.array([True, False]), np.array([0.5, 1.0])).value   # 2 / (2 + 1)
0.6666666666666666
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    n: int

    def covers(self, truth: float) -> bool:
        return self.low <= truth <= self.high

    def to_dict(self) -> dict:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


NONE = Estimate(math.nan, 0.0, 1.0, 0)


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion; ``(0, 1)`` when ``n == 0``.

    >>> [round(v, 3) for v in wilson(5, 10)]
    [0.237, 0.763]
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # rounding can put a bound a hair past p at k = 0 or k = n
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def audit_accuracy(correct: np.ndarray) -> Estimate:
    """Accuracy on audit labels with a Wilson 95% interval."""
    c = np.asarray(correct, dtype=bool)
    if c.size == 0:
        return NONE
    low, high = wilson(float(c.sum()), c.size)
    return Estimate(float(c.mean()), low, high, int(c.size))


def ipw_accuracy(correct: np.ndarray, probability: np.ndarray) -> Estimate:
    """Inverse-propensity-weighted accuracy over all labels, with a normal-approximation interval.

    The interval uses the linearised variance of the ratio estimator; it is
    approximate (selection probabilities are conditional on the past).
    """
    c = np.asarray(correct, dtype=np.float64)
    p = np.asarray(probability, dtype=np.float64)
    if c.shape != p.shape:
        raise ValueError(f"correct {c.shape} and probability {p.shape} must match")
    if c.size == 0:
        return NONE
    if not np.all((p > 0) & (p <= 1)):
        raise ValueError("selection probabilities must lie in (0, 1] for selected items")
    w = 1.0 / p
    value = float((w * c).sum() / w.sum())
    half = Z95 * math.sqrt(float((w * w * (c - value) ** 2).sum())) / float(w.sum())
    return Estimate(value, max(0.0, value - half), min(1.0, value + half), int(c.size))


def naive_accuracy(correct: np.ndarray) -> Estimate:
    """The plain mean over queried labels (biased when the model chose them)."""
    c = np.asarray(correct, dtype=bool)
    if c.size == 0:
        return NONE
    low, high = wilson(float(c.sum()), c.size)
    return Estimate(float(c.mean()), low, high, int(c.size))


def estimates(correct: np.ndarray, audit: np.ndarray, probability: np.ndarray) -> dict[str, Estimate]:
    """The three estimates side by side, from one row per label.

    ``correct``: bool ``[n]``, the served prediction matched the label; ``audit``:
    bool ``[n]``, the item was a uniform audit pick; ``probability``: float ``[n]``,
    the probability with which it was selected. ``naive`` is the mean over every
    label, as a dashboard that ignores how items were chosen would report it.

    >>> e = estimates(np.array([True, False]), np.array([True, False]), np.array([0.01, 0.5]))
    >>> {k: round(v.value, 3) for k, v in e.items()}
    {'audit': 1.0, 'ipw': 0.98, 'naive': 0.5}
    """
    correct, audit = np.asarray(correct, dtype=bool), np.asarray(audit, dtype=bool)
    return {"audit": audit_accuracy(correct[audit]),
            "ipw": ipw_accuracy(correct, np.asarray(probability, dtype=np.float64)),
            "naive": naive_accuracy(correct)}
