"""Live-accuracy estimates: audit and inverse-propensity weighting against the naive mean."""

from __future__ import annotations

import numpy as np

from activestream.storage.store import Outcome
from activestream.streams.accuracy import by_version, estimates


def biased_labels(n: int, accuracy: float, seed: int) -> tuple[list[Outcome], float]:
    """Traffic with a known accuracy where, like an uncertainty selector, wrong predictions are
    queried far more often than right ones; 10% of the budget goes to uniform audits."""
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < accuracy
    p_query = np.where(correct, 0.02, 0.30)
    p_audit = 0.01
    rows = []
    for i in range(n):
        predicted = 0 if correct[i] else 1
        if rng.random() < p_audit:
            rows.append(Outcome(f"s{i}", 1, predicted, "audit", p_audit, 0))
        elif rng.random() < p_query[i]:
            rows.append(Outcome(f"s{i}", 1, predicted, "uncertain", float(p_query[i]), 0))
    return rows, float(correct.mean())


def test_audit_and_ipw_find_the_true_accuracy_where_the_naive_mean_does_not():
    rows, truth = biased_labels(40_000, accuracy=0.85, seed=1)
    est = estimates(rows)
    assert est["audit"].covers(truth)
    # IPW over all labels: selection probabilities are known exactly here
    assert abs(est["ipw"].value - truth) < 0.03
    assert est["naive"].value < truth - 0.3  # the selector chose the model's mistakes


def test_estimates_are_grouped_by_the_version_that_predicted():
    rows = [Outcome("a", 1, 0, "audit", 0.1, 0), Outcome("b", 2, 0, "audit", 0.1, 1),
            Outcome("c", 2, 1, "uncertain", 0.5, 1)]
    grouped = by_version(rows)
    assert sorted(grouped) == [1, 2]
    assert grouped[1]["audit"].value == 1.0 and grouped[2]["audit"].value == 0.0
    assert grouped[2]["naive"].n == 2 and grouped[2]["ipw"].n == 2


def test_no_labels_no_estimate():
    est = estimates([])
    assert all(e.n == 0 for e in est.values())
