"""The serving versions' accuracy on live traffic, estimated honestly from the labels they got.

Labels of audit items (a uniform random sample) give an unbiased estimate with a 95%
interval; inverse-propensity weighting uses every label; the naive mean over every
label is shown beside them because it is what a careless dashboard would report, and
it is biased low (the selector picks the model's weak spots).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from activestream.learners import estimates as est
from activestream.learners.estimates import Estimate
from activestream.storage.store import Outcome

AUDIT = "audit"


def estimates(outcomes: list[Outcome]) -> dict[str, Estimate]:
    """``audit``, ``ipw`` and ``naive`` accuracy of the predictions behind ``outcomes``.

    >>> rows = [Outcome("a", 1, 0, "audit", 0.01, 0), Outcome("b", 1, 1, "uncertain", 0.5, 2)]
    >>> {k: round(e.value, 3) for k, e in estimates(rows).items()}
    {'audit': 1.0, 'ipw': 0.98, 'naive': 0.5}
    """
    return est.estimates(np.array([o.predicted == o.label for o in outcomes], dtype=bool),
                         np.array([o.reason == AUDIT for o in outcomes], dtype=bool),
                         np.array([o.selection_prob for o in outcomes], dtype=np.float64))


def by_version(outcomes: list[Outcome]) -> dict[int, dict[str, Estimate]]:
    """:func:`estimates` for each model version that made the predictions."""
    groups: dict[int, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[o.model_version].append(o)
    return {version: estimates(rows) for version, rows in sorted(groups.items())}
