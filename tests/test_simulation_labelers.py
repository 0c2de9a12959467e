"""Simulated labelers: one interface, the behaviour each promises."""

from __future__ import annotations

import numpy as np
import pytest

from activestream.errors import ConfigError
from activestream.simulation.labelers import Committee, Noisy, Oracle, SelfLabeler, make_labeler

RNG = np.random.default_rng(0)
TRUTH = RNG.integers(0, 10, 20_000)
PROBS = RNG.dirichlet(np.ones(10), 20_000)


def test_oracle_is_the_truth():
    a = Oracle().answer(TRUTH, PROBS, None)
    assert (a.labels == TRUTH).all() and a.given.all()


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3])
def test_noisy_errs_at_its_rate(rate):
    a = Noisy(rate, 10).answer(TRUTH, PROBS, None)
    observed = (a.labels != TRUTH).mean()
    assert abs(observed - rate) <= 3 * np.sqrt(rate * (1 - rate) / len(TRUTH)) + 1e-12
    assert ((0 <= a.labels) & (a.labels < 10)).all()


def test_noisy_confusion_says_where_errors_go():
    confusion = np.full((10, 10), 0.0)
    confusion[np.arange(10), (np.arange(10) + 1) % 10] = 1.0   # every error is "the next class"
    a = Noisy(0.5, 10, tuple(map(tuple, confusion))).answer(TRUTH, PROBS, None)
    wrong = a.labels != TRUTH
    assert (a.labels[wrong] == (TRUTH[wrong] + 1) % 10).all()


def test_noisy_replays_the_same_answers():
    assert (Noisy(0.2, 10, seed=4).answer(TRUTH, PROBS, None).labels
            == Noisy(0.2, 10, seed=4).answer(TRUTH, PROBS, None).labels).all()


def test_self_is_the_models_prediction_and_ignores_the_truth():
    a = SelfLabeler().answer(TRUTH, PROBS, None)
    b = SelfLabeler().answer(np.zeros_like(TRUTH), PROBS, None)
    assert (a.labels == PROBS.argmax(1)).all() and a.given.all()
    assert (a.labels == b.labels).all()
    assert SelfLabeler().kind == "pseudo"


def test_confident_self_abstains_below_its_threshold():
    a = make_labeler("confident:0.5", classes=10).answer(TRUTH, PROBS, None)
    assert (a.given == (PROBS.max(1) >= 0.5)).all()


def test_committee_answers_only_where_it_agrees():
    votes = RNG.integers(0, 3, (5000, 5))
    a = Committee().answer(TRUTH[:5000], PROBS[:5000], votes)
    unanimous = (votes == votes[:, :1]).all(axis=1)
    assert (a.given == unanimous).all()
    assert (a.labels[a.given] == votes[a.given, 0]).all()
    majority = Committee(0.6).answer(TRUTH[:5000], PROBS[:5000], votes)
    assert majority.given.sum() > a.given.sum()


def test_bad_labeler_spec_says_what_to_use():
    with pytest.raises(ConfigError, match="oracle, noisy"):
        make_labeler("psychic", classes=10)
