"""Accuracy estimates: audit interval coverage, IPW against selection bias, naive for contrast."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from activestream.learners.estimates import audit_accuracy, ipw_accuracy, naive_accuracy, wilson


@given(st.integers(0, 500), st.integers(1, 500))
def test_wilson_is_a_proper_interval_around_the_rate(k, n):
    k = min(k, n)
    low, high = wilson(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_audit_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = [audit_accuracy(rng.random(80) < 0.85).covers(0.85) for _ in range(2000)]
    assert 0.93 <= np.mean(hits) <= 0.975


def test_empty_audit_says_nothing():
    e = audit_accuracy(np.zeros(0, dtype=bool))
    assert e.n == 0 and (e.low, e.high) == (0.0, 1.0)


def test_ipw_corrects_what_naive_gets_wrong_when_the_model_picks_its_weak_spots():
    rng = np.random.default_rng(1)
    correct = rng.random(200_000) < 0.8
    p = np.where(correct, 0.02, 0.3)            # wrong predictions are 15x likelier to be asked about
    chosen = rng.random(len(p)) < p
    naive = naive_accuracy(correct[chosen]).value
    ipw = ipw_accuracy(correct[chosen], p[chosen])
    assert naive < 0.3                          # the queried labels look terrible
    assert abs(ipw.value - 0.8) < 0.02 and ipw.covers(0.8)


@settings(max_examples=50)
@given(st.lists(st.booleans(), min_size=1, max_size=60), st.floats(0.01, 1.0))
def test_ipw_with_equal_probabilities_is_the_plain_mean(correct, p):
    c = np.array(correct)
    assert np.isclose(ipw_accuracy(c, np.full(len(c), p)).value, c.mean())


def test_ipw_rejects_impossible_probabilities():
    import pytest

    with pytest.raises(ValueError):
        ipw_accuracy(np.array([True]), np.array([0.0]))
