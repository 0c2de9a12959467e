"""What each selector computes, beyond the shared contract.

The contract every selector passes (shapes, purity, order independence,
rejection of bad input) is in ``test_selection_contract.py``; here: values,
the BALD and vote-entropy properties, the random baseline, the registry.
"""

from __future__ import annotations

import subprocess
import sys

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activestream.errors import InvalidInput
from activestream.selectors import (
    BALD,
    SELECTORS,
    ConsensusEntropy,
    Entropy,
    LeastConfidence,
    Margin,
    RandomScore,
    VoteEntropy,
    make_selector,
    validate_probs,
)

ALL = [make_selector(name) for name in SELECTORS]
UNCERTAINTY = [LeastConfidence(), Margin(), Entropy(), ConsensusEntropy()]


def spread(x: np.ndarray, selector) -> np.ndarray:
    """Normalise a non-negative array into valid input for ``selector``."""
    x = x + 1e-6
    return x / x.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=6),
                  elements=st.floats(0, 1)),
       st.integers(1, 5))
def test_bald_and_vote_entropy_are_zero_when_all_samples_agree(raw, samples):
    probs = np.repeat(spread(raw, None)[:, :, None], samples, axis=2)
    np.testing.assert_allclose(BALD().score(probs), 0.0, atol=1e-9)
    np.testing.assert_array_equal(VoteEntropy().score(probs), 0.0)


@settings(max_examples=40, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not 0 <= v <= 1))
def test_validate_probs_rejects_any_out_of_range_value(value):
    probs = np.array([[0.5, 0.5], [0.5, 0.5]])
    probs[1, 0] = value
    with pytest.raises(InvalidInput) as err:
        validate_probs(probs)
    assert err.value.kind == "bad_probs"


# ---------------------------------------------------------------- sanity


@pytest.mark.parametrize("classes", [2, 3, 10])
@pytest.mark.parametrize("selector", UNCERTAINTY, ids=lambda s: s.name)
def test_uniform_row_scores_higher_than_one_hot(selector, classes):
    rows = np.stack([np.full(classes, 1 / classes), np.eye(classes)[0]])
    probs = np.repeat(rows[:, :, None], 3, axis=2) if selector.needs_samples else rows
    uniform, one_hot = selector.score(probs)
    assert uniform > one_hot
    assert one_hot == 0.0


def test_bald_is_high_when_confident_samples_disagree():
    disagree = np.stack([np.eye(3)[0], np.eye(3)[1], np.eye(3)[2]], axis=-1)[None]
    agree_flat = np.full((1, 3, 3), 1 / 3)
    assert BALD().score(disagree)[0] == pytest.approx(1.0)
    assert BALD().score(agree_flat)[0] == pytest.approx(0.0, abs=1e-12)
    assert VoteEntropy().score(disagree)[0] == pytest.approx(1.0)


def test_margin_and_least_confidence_values():
    probs = np.array([[0.7, 0.2, 0.1]])
    assert Margin().score(probs)[0] == pytest.approx(0.5)
    assert LeastConfidence().score(probs)[0] == pytest.approx(0.3)


def test_random_score_is_uniform_and_seeded():
    probs = np.full((20_000, 2), 0.5)
    a, b = RandomScore(seed=0).score(probs), RandomScore(seed=1).score(probs)
    assert abs(a.mean() - 0.5) < 0.02 and abs(np.median(a) - 0.5) < 0.02
    assert not np.array_equal(a, b)
    assert len(np.unique(a)) == len(a)  # identical rows still get distinct draws


@pytest.mark.parametrize("selector", [s for s in ALL if s.needs_samples], ids=lambda s: s.name)
def test_committee_selectors_explain_missing_samples_axis(selector):
    with pytest.raises(InvalidInput, match="samples"):
        selector.score(np.full((2, 3), 1 / 3))


def test_make_selector_rejects_unknown_names_and_arguments():
    with pytest.raises(InvalidInput) as err:
        make_selector("coreset")
    assert err.value.kind == "bad_config"
    assert all(name in str(err.value) for name in SELECTORS)
    with pytest.raises(InvalidInput, match="takes no arguments") as err:
        make_selector("entropy", seed=1)
    assert err.value.kind == "bad_config"
    assert make_selector("random", seed=5) == RandomScore(seed=5)
    with pytest.raises(InvalidInput, match="seed must be an int") as err:
        make_selector("random", seed="five")
    assert err.value.kind == "bad_config"


def test_importing_selectors_pulls_in_no_edge_dependency():
    code = ("import sys, activestream.selectors\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "{'faust', 'kafka', 'aiokafka', 'prometheus_client', 'torch'} "
            "or m.startswith('activestream.streams')]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
