"""One contract suite that every selector passes, plus property and sanity tests.

Every selector in ``SELECTORS`` is checked the same way (river's
``check_estimator`` style); the committee selectors get
``[batch, classes, samples]`` inputs, the others ``[batch, classes]``.
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
    Selector,
    VoteEntropy,
    make_selector,
    validate_probs,
)

ALL = [make_selector(name) for name in SELECTORS]
UNCERTAINTY = [LeastConfidence(), Margin(), Entropy(), ConsensusEntropy()]


def make_input(selector, rng, batch=16, classes=5, samples=4) -> np.ndarray:
    """Random valid input for ``selector``: Dirichlet rows, with a few one-hot ones."""
    shape = (batch, samples) if selector.needs_samples else (batch,)
    p = rng.dirichlet(np.full(classes, 0.5), size=shape)           # [..., classes]
    if batch:
        p[0] = np.eye(classes)[0]
    return np.moveaxis(p, -1, 1) if selector.needs_samples else p


def spread(x: np.ndarray, selector) -> np.ndarray:
    """Normalise a non-negative array into valid input for ``selector``."""
    x = x + 1e-6
    return x / x.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- contract suite


@pytest.mark.parametrize("selector", ALL, ids=SELECTORS)
class TestContract:
    def test_follows_protocol(self, selector):
        assert isinstance(selector, Selector)
        assert selector.name in SELECTORS
        assert make_selector(selector.name) == selector

    def test_scores_are_float64_finite_in_unit_interval(self, selector):
        probs = make_input(selector, np.random.default_rng(0))
        scores = selector.score(probs)
        assert scores.dtype == np.float64 and scores.shape == (16,)
        assert np.isfinite(scores).all()
        assert ((scores >= 0) & (scores <= 1)).all()

    def test_empty_batch(self, selector):
        scores = selector.score(make_input(selector, np.random.default_rng(0), batch=0))
        assert scores.shape == (0,) and scores.dtype == np.float64

    def test_score_is_pure(self, selector):
        probs = make_input(selector, np.random.default_rng(1))
        before = probs.copy()
        np.testing.assert_array_equal(selector.score(probs), selector.score(probs))
        np.testing.assert_array_equal(probs, before)

    def test_permuting_the_batch_permutes_the_scores(self, selector):
        if isinstance(selector, RandomScore):
            pytest.skip("random scores ignore content by design")
        probs = make_input(selector, np.random.default_rng(2))
        perm = np.random.default_rng(3).permutation(len(probs))
        np.testing.assert_allclose(selector.score(probs[perm]), selector.score(probs)[perm])

    def test_accepts_float16_and_float32(self, selector):
        probs = make_input(selector, np.random.default_rng(4))
        for dtype in (np.float16, np.float32):
            assert selector.score(probs.astype(dtype)).dtype == np.float64

    @pytest.mark.parametrize("breakage", ["nan", "inf", "int", "bool", "object", "sum",
                                          "negative", "one_class", "too_few_axes",
                                          "too_many_axes"])
    def test_rejects_bad_probs(self, selector, breakage):
        probs = make_input(selector, np.random.default_rng(5))
        bad = {
            "nan": lambda p: np.where(np.arange(p.shape[0]).reshape(-1, *[1] * (p.ndim - 1))
                                      == 3, np.nan, p),
            "inf": lambda p: np.full_like(p, np.inf),
            "int": lambda p: (p > 0.5).astype(np.int64),
            "bool": lambda p: p > 0.5,
            "object": lambda p: p.astype(object),
            "sum": lambda p: p * 1.01,
            "negative": lambda p: p - p.mean(axis=1, keepdims=True),
            "one_class": lambda p: np.ones_like(p[:, :1]),
            "too_few_axes": lambda p: p[0],
            "too_many_axes": lambda p: p[None],
        }[breakage](probs)
        with pytest.raises(InvalidInput) as err:
            selector.score(bad)
        assert err.value.kind == "bad_probs"
        assert str(err.value)  # says what is wrong


# ---------------------------------------------------------------- properties


@st.composite
def prob_inputs(draw, selector):
    batch = draw(st.integers(0, 12))
    classes = draw(st.integers(2, 6))
    shape = (batch, classes, draw(st.integers(1, 5))) if selector.needs_samples \
        else (batch, classes)
    raw = draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1)))
    return spread(raw, selector)


@pytest.mark.parametrize("selector", ALL, ids=SELECTORS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_scores_valid_for_any_probabilities(selector, data):
    probs = data.draw(prob_inputs(selector))
    scores = selector.score(probs)
    assert scores.shape == (probs.shape[0],) and scores.dtype == np.float64
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    if not isinstance(selector, RandomScore):
        perm = data.draw(st.permutations(range(probs.shape[0])))
        np.testing.assert_allclose(selector.score(probs[list(perm)]), scores[list(perm)],
                                   atol=1e-12)


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
