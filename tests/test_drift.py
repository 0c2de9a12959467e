"""Drift detection (river's detectors behind :class:`DriftMonitor`) and its reactions: the
budget boost (requests with reason ``drift``, spend back on target afterwards) and the
learner's early round."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from activestream.drift import DriftMonitor, make_monitor, parse_detectors
from activestream.drift.detectors import KINDS, false_alarm_rate, make_detector, threshold_for
from activestream.errors import ConfigError, InvalidInput
from activestream.learners.incremental import LearnerPolicy
from activestream.selectors import AdaptiveBudget
from activestream.selectors.boost import DriftBoost
from activestream.simulation.policy import make_policy

# statistical properties: derandomized, so a run never fails by chance
STATS = settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def confident(rng, n: int, classes: int = 5, sharpness: float = 8.0) -> np.ndarray:
    """Predictions ``[n, classes]``: mostly sure of a uniformly drawn class."""
    alpha = np.ones(classes)
    probs = rng.dirichlet(alpha, size=n)
    top = rng.integers(0, classes, n)
    probs[np.arange(n), top] += sharpness
    return probs / probs.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------ detectors


@pytest.mark.parametrize("kind", KINDS)
def test_threshold_is_stricter_for_longer_run_lengths(kind):
    short, long = threshold_for(kind, 1e3), threshold_for(kind, 1e6)
    assert (short < long) if kind == "page_hinkley" else (short > long)


@pytest.mark.parametrize("kind", ["adwin", "page_hinkley"])
def test_calibrated_rate_is_near_its_target(kind):
    # one false alarm per 500 updates was asked for; measured within a factor of three
    rate = false_alarm_rate(kind, threshold_for(kind, 500), updates=1000, runs=6, seed=3)
    assert 1 / 1500 <= rate <= 3 / 500


@pytest.mark.parametrize("kind", KINDS)
def test_a_step_is_detected(kind):
    detector = make_detector(kind, threshold_for(kind, 1e6))
    rng = np.random.default_rng(1)
    fired = []
    for i, x in enumerate(np.concatenate([rng.standard_normal(80), rng.standard_normal(40) + 4]).tolist()):
        detector.update(x)
        if detector.drift_detected:
            fired.append(i)
    assert fired and 80 <= fired[0] < 100


def test_unknown_detectors_are_refused_with_the_choices():
    with pytest.raises(ConfigError, match="adwin, page_hinkley, kswin"):
        parse_detectors("adwin,cusum")
    assert make_monitor("none", run_length=1e5) is None


# ------------------------------------------------------------------ the monitor


@given(seed=st.integers(0, 2**16), classes=st.integers(2, 12), sharpness=st.floats(0.5, 20))
@STATS
def test_a_stationary_stream_at_the_calibrated_threshold_does_not_alarm(seed, classes, sharpness):
    rng = np.random.default_rng(seed)
    monitor = DriftMonitor(run_length=1e7, seed=seed)
    for start in range(0, 3000, 250):
        monitor.observe(1, confident(rng, 250, classes, sharpness), start)
        assert monitor.events_ == ()


@given(seed=st.integers(0, 2**16), at=st.integers(400, 1500), batch=st.sampled_from([1, 37, 250]))
@STATS
def test_a_step_in_confidence_is_detected_within_500_images(seed, at, batch):
    rng = np.random.default_rng(seed)
    stream = np.concatenate([confident(rng, at, 5, 8.0), confident(rng, 2000 - at, 5, 0.5)])
    monitor = DriftMonitor(run_length=1e7, seed=seed)
    fired = []
    for start in range(0, len(stream), batch):
        monitor.observe(1, stream[start:start + batch], start)
        fired += [e.position for e in monitor.events_]
    assert fired and at <= min(fired) < at + 500


def test_a_shift_inside_a_young_versions_reference_is_still_detected():
    rng = np.random.default_rng(5)
    monitor = DriftMonitor(run_length=1e7, reference=300)
    monitor.observe(3, confident(rng, 150, 5, 8.0), 1000)    # v3 starts serving at 1000, shift at 1150
    events = []
    for start in range(1150, 2000, 50):
        monitor.observe(3, confident(rng, 50, 5, 0.5), start)
        events += monitor.events_
    assert events and min(e.position for e in events) < 1650


def test_each_version_starts_afresh_and_events_name_it():
    rng = np.random.default_rng(2)
    monitor = DriftMonitor(run_length=1e7)
    monitor.observe(1, confident(rng, 1000, 5, 8.0), 0)
    monitor.observe(2, confident(rng, 200, 5, 0.5), 1000)    # a new version, much less sure: a new reference
    assert monitor.version_ == 2 and monitor.events_ == ()
    monitor.observe(2, confident(rng, 800, 5, 0.5), 1200)
    assert monitor.events_ == ()
    monitor.observe(2, confident(rng, 600, 5, 8.0), 2000)
    assert {e.version for e in monitor.events_} == {2}
    e = monitor.events_[0]
    assert e.detector in KINDS and e.threshold == monitor.thresholds[e.detector] and np.isfinite(e.statistic)


def test_a_shift_in_the_class_mix_alone_is_detected():
    rng = np.random.default_rng(4)
    monitor = DriftMonitor(run_length=1e7, signals=("class_mix",))
    monitor.observe(1, confident(rng, 1000, 5, 8.0), 0)
    skewed = confident(rng, 1000, 5, 8.0)
    skewed = np.where(np.arange(1000)[:, None] % 3 == 0, skewed[:, ::-1], np.sort(skewed, axis=1)[:, ::-1])
    monitor.observe(1, skewed, 1000)     # the same confidences, but class 0 two times in three
    assert {e.signal for e in monitor.events_} == {"class_mix"}


def test_audit_errors_alarm_when_the_error_rate_jumps():
    rng = np.random.default_rng(6)
    monitor = DriftMonitor(("adwin", "page_hinkley", "kswin"), run_length=1e6)
    monitor.observe(1, confident(rng, 300, 5), 0)
    monitor.observe_audit(1, (rng.random(100) < 0.1).astype(float), 300)
    assert monitor.events_ == ()
    monitor.observe_audit(1, (rng.random(100) < 0.7).astype(float), 400)
    assert {(e.signal, e.detector) for e in monitor.events_} <= {("audit_error", "adwin"),
                                                                 ("audit_error", "page_hinkley")}
    assert monitor.events_
    monitor.observe_audit(2, np.ones(50), 500)           # labels of another version are not this one's errors
    assert monitor.events_ == ()


# ------------------------------------------------------------------ the budget rise


def run_boost(budget, n: int, start: int, rng) -> list[str]:
    reasons = []
    for s in range(start, start + n, 100):
        scores = rng.random(100)
        decision = budget.query(scores, [f"i{k}" for k in range(s, s + 100)])
        assert ((decision.probability > 0) | ~decision.selected).all()
        budget.update(scores, decision)
        reasons += decision.reason
    return reasons


@given(factor=st.floats(1.5, 4.0), images=st.integers(1, 30).map(lambda k: 100 * k), seed=st.integers(0, 99))
@settings(max_examples=10, deadline=None, derandomize=True)
def test_a_boost_spends_factor_times_the_budget_with_reason_drift_then_returns_to_target(factor, images, seed):
    rng = np.random.default_rng(seed)
    budget = DriftBoost(AdaptiveBudget(0.05, window=1000, seed=seed), factor=factor, images=images)
    run_boost(budget, 2000, 0, rng)
    budget.trigger()
    boosted = run_boost(budget, images, 2000, rng)
    assert budget.remaining_ == 0
    spent = sum(r != "" for r in boosted)
    assert abs(spent - factor * 0.05 * images) <= 0.3 * factor * 0.05 * images + 8
    assert set(boosted) <= {"", "audit", "uncertain", "drift"}
    if (factor - 1) * 0.05 * images >= 10:
        assert boosted.count("drift") > 0
    after = run_boost(budget, 3000, 2000 + images, rng)
    assert "drift" not in after
    for w in range(3):     # every window after the boost holds the budget's target again
        assert 45 <= sum(r != "" for r in after[1000 * w:1000 * (w + 1)]) <= 55


def test_boost_probabilities_are_exact_selection_chances():
    rng = np.random.default_rng(0)
    base = AdaptiveBudget(0.1, window=500, seed=1)
    budget = DriftBoost(AdaptiveBudget(0.1, window=500, seed=1), factor=3.0, images=10_000)
    warm = rng.random(1000)
    for b in (base, budget):
        b.update(warm, b.query(warm, [f"w{i}" for i in range(1000)]))
    budget.trigger()
    scores = rng.random(400)
    keys = [f"k{i}" for i in range(400)]
    plain, boosted = base.query(scores, keys), budget.query(scores, keys)
    assert (boosted.selected >= plain.selected).all()
    assert (boosted.probability >= plain.probability - 1e-12).all()
    drift = np.array([r == "drift" for r in boosted.reason])
    assert (boosted.probability[drift] > 0).all() and not plain.selected[drift].any()


def test_no_boost_without_a_trigger_and_bad_settings_say_how_to_fix():
    budget = DriftBoost(AdaptiveBudget(0.1, window=100), factor=2.0, images=100)
    assert "drift" not in run_boost(budget, 300, 0, np.random.default_rng(0))
    with pytest.raises(InvalidInput, match="ACTIVESTREAM_DRIFT_BUDGET_FACTOR"):
        DriftBoost(AdaptiveBudget(0.1), factor=0.5)


def test_the_simulators_policy_raises_its_budget_on_a_detection():
    policy = make_policy("margin", budget=0.1, window=100, drift_factor=3.0, drift_images=200)
    probs = np.random.default_rng(0).dirichlet([1, 1, 1], size=200)
    keys = [f"p{i}" for i in range(200)]
    policy.commit(probs, None, keys, policy.select(probs, None, keys))
    policy.drift_detected()
    keys = [f"q{i}" for i in range(200)]
    selection = policy.select(probs, None, keys)
    assert "drift" in selection.reason


# ------------------------------------------------------------------ the learner's early round


def test_an_early_round_needs_fewer_labels_and_only_after_a_detection():
    policy = LearnerPolicy(retrain_every=150, early_every=30)
    assert not policy.due(labeled=240, trained_on=200)
    assert policy.due(labeled=240, trained_on=200, drift=True)
    assert not policy.due(labeled=220, trained_on=200, drift=True)
    assert not LearnerPolicy(retrain_every=150).due(labeled=240, trained_on=200, drift=True)
