"""Label-free accuracy: temperature scaling, CBPE and ATC on synthetic streams whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import softmax

from activestream.learners.label_free import LabelFree, atc, atc_threshold, cbpe, fit_temperature, neg_entropy, scale


def stream(n: int, temperature: float, seed: int, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Served probabilities ``softmax(z)`` whose labels are drawn from ``softmax(z / temperature)``:
    over-confident by ``temperature`` (calibrated when it is 1)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, classes)) * 4 + np.eye(classes)[rng.integers(classes, size=n)] * 4
    truth = softmax(z / temperature, axis=1)
    labels = (truth.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return softmax(z, axis=1), labels


@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.8, 3.0])
def test_calibration_recovers_a_known_temperature(temperature):
    probs, labels = stream(6000, temperature, seed=1)
    assert fit_temperature(probs, labels) == pytest.approx(temperature, rel=0.1)


def test_cbpe_and_atc_are_unbiased_on_a_calibrated_stream():
    errors = {"cbpe": [], "atc": []}
    for seed in range(20):
        probs, labels = stream(3000, 1.0, seed=seed)
        lf = LabelFree(window=2000, calibration=1000)
        lf.learn(probs[:1000], labels[:1000])
        lf.observe(probs[1000:])
        truth = float((probs[1000:].argmax(axis=1) == labels[1000:]).mean())
        for method, e in lf.estimate().items():
            errors[method].append(e.value - truth)
    for method, err in errors.items():
        # bias well inside one standard error of a 2,000-image window (about 0.01)
        assert abs(np.mean(err)) < 0.006, method
        assert np.std(err) < 0.03, method


def test_calibration_corrects_an_over_confident_model():
    probs, labels = stream(6000, 2.5, seed=3)
    truth = float((probs[3000:].argmax(axis=1) == labels[3000:]).mean())
    lf = LabelFree(window=3000, calibration=500)
    lf.observe(probs[3000:])
    raw = lf.estimate()["cbpe"].value
    lf.learn(probs[:500], labels[:500])
    assert raw > truth + 0.05  # the raw average confidence overstates the accuracy
    for e in lf.estimate().values():
        assert abs(e.value - truth) < 0.03 and e.covers(truth)


def test_without_audits_it_reports_the_raw_confidence_then_switches_once_it_has_enough():
    probs, labels = stream(2000, 2.0, seed=4)
    lf = LabelFree(window=1000, min_labels=50)
    lf.observe(probs[:1000])
    before = lf.estimate()
    assert not lf.calibrated and lf.temperature_ == 1.0
    assert before["cbpe"].value == pytest.approx(probs[:1000].max(axis=1).mean())
    assert before["atc"].n == 0  # ATC needs labelled audits to set its threshold
    lf.learn(probs[1000:1049], labels[1000:1049])
    assert not lf.calibrated and lf.estimate()["cbpe"].value == before["cbpe"].value
    lf.learn(probs[1049:1050], labels[1049:1050])
    assert lf.calibrated and lf.temperature_ > 1.2
    after = lf.estimate()
    assert after["cbpe"].value < before["cbpe"].value and after["atc"].n == 1000


def test_an_empty_window_estimates_nothing():
    lf = LabelFree()
    assert all(e.n == 0 for e in lf.estimate().values())
    assert cbpe(np.array([])).n == 0 and atc(np.array([]), 0.0, 5, 0.9).n == 0


def test_memory_is_bounded_by_the_windows():
    probs, labels = stream(3000, 1.0, seed=5)
    lf = LabelFree(window=100, calibration=40, min_labels=10)
    lf.observe(probs)
    lf.learn(probs, labels)
    assert len(lf._traffic) == 100 and len(lf._audits) == 40
    assert lf.estimate()["cbpe"].n == 100


def test_scaling_keeps_every_prediction():
    probs, _ = stream(500, 1.0, seed=6)
    for t in (0.3, 1.0, 4.0):
        assert (scale(probs, t).argmax(axis=1) == probs.argmax(axis=1)).all()
    assert np.allclose(scale(probs, 1.0), probs)


probs_rows = st.integers(2, 6).flatmap(lambda k: st.lists(
    st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=k, max_size=k).filter(lambda r: sum(r) > 1e-3),
    min_size=1, max_size=60))


@settings(max_examples=60, deadline=None)
@given(rows=probs_rows, data=st.data())
def test_estimates_lie_in_0_1_their_intervals_hold_them_and_order_does_not_matter(rows, data):
    probs = np.array(rows, dtype=np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    labels = np.array(data.draw(st.lists(st.integers(0, probs.shape[1] - 1), min_size=len(probs),
                                         max_size=len(probs))))
    order = np.array(data.draw(st.permutations(range(len(probs)))))
    results = []
    for idx in (np.arange(len(probs)), order):
        lf = LabelFree(window=100, calibration=100, min_labels=1)
        lf.observe(probs[idx])
        lf.learn(probs[idx], labels[idx])
        results.append(lf.estimate())
    for found in results:
        for e in found.values():
            assert 0.0 <= e.low <= e.value <= e.high <= 1.0
    for method in ("cbpe", "atc"):
        a, b = results[0][method], results[1][method]
        assert a.value == pytest.approx(b.value, abs=1e-6) and a.n == b.n


def test_atc_threshold_splits_the_audits_at_their_accuracy():
    rng = np.random.default_rng(7)
    probs, labels = stream(2000, 1.0, seed=8)
    scores = neg_entropy(probs)
    correct = probs.argmax(axis=1) == labels
    t = atc_threshold(scores, correct)
    assert (scores > t).mean() == pytest.approx(correct.mean(), abs=2 / len(scores))
    assert rng is not None


def test_older_versions_audits_count_less_and_the_newest_version_is_judged_on_its_own_calibration():
    old_p, old_y = stream(400, 3.0, seed=9)    # a young, over-confident version
    new_p, new_y = stream(1400, 1.0, seed=10)  # its fine-tuned, calibrated successor
    truth = float((new_p[400:].argmax(axis=1) == new_y[400:]).mean())
    found = {}
    for decay in (1.0, 0.5):
        lf = LabelFree(window=1000, calibration=1000, decay=decay)
        lf.learn(old_p, old_y, np.full(400, 1))
        lf.learn(new_p[:400], new_y[:400], np.full(400, 8))
        lf.observe(new_p[400:])
        found[decay] = lf.estimate()["cbpe"].value
    assert found[1.0] < truth - 0.03             # pooled audits make the new version look worse
    assert abs(found[0.5] - truth) < 0.02         # 1/128 of the weight per old audit: near its own


def test_the_prior_holds_the_temperature_near_one_on_few_audits():
    probs, labels = stream(40, 1.0, seed=11)
    free = fit_temperature(probs, labels)
    held = fit_temperature(probs, labels, prior=1000.0)
    assert abs(np.log(held)) < abs(np.log(free)) and abs(np.log(held)) < 0.05
