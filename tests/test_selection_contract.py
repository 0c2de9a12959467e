"""The contract every selection component passes, parametrised from the registries.

river-style ``check_estimator``: every selector in ``SELECTORS``, every budget
manager in ``BUDGETS`` (in each of its configurations) and the diversity
filter go through the same checks, plus hypothesis properties:

* selectors: finite float64 scores, one per item, in ``[0, 1]``, permuted
  with the batch; NaN, inf, wrong shape or dtype rejected with a clear error;
* budget managers: ``query`` pure, ``update`` commits, well-formed decisions
  (probability, reason, queue priority), bad inputs rejected, a redelivered
  batch decided the same way, and spend within +-10% of the target in every
  window (every run of ``window`` consecutive items, not only the tumbling
  windows) on adversarial streams, from a cold start.
"""

from __future__ import annotations

from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budget_streams import (
    adversarial_streams,
    batch_sizes,
    joined,
    keys_for,
    run,
    sliding_spend,
    state,
    window_spend,
)
from activestream.errors import InvalidInput
from activestream.selectors import (
    BUDGETS,
    SELECTORS,
    DiversityFilter,
    RandomScore,
    Selector,
    make_budget,
    make_selector,
)

ALL = [make_selector(name) for name in SELECTORS]


def make_input(selector, rng, batch=16, classes=5, samples=4) -> np.ndarray:
    """Random valid input for ``selector``: Dirichlet rows, with a one-hot first row."""
    shape = (batch, samples) if selector.needs_samples else (batch,)
    p = rng.dirichlet(np.full(classes, 0.5), size=shape)           # [..., classes]
    if batch:
        p[0] = np.eye(classes)[0]
    return np.moveaxis(p, -1, 1) if selector.needs_samples else p


def spread(x: np.ndarray) -> np.ndarray:
    """Normalise a non-negative array into distributions over axis 1."""
    x = x + 1e-6
    return x / x.sum(axis=1, keepdims=True)


# ================================================================ selectors


@pytest.mark.parametrize("selector", ALL, ids=SELECTORS)
class TestSelectorContract:
    def test_follows_protocol(self, selector):
        assert isinstance(selector, Selector)
        assert selector.name in SELECTORS
        assert make_selector(selector.name) == selector

    def test_scores_are_float64_finite_in_unit_interval(self, selector):
        scores = selector.score(make_input(selector, np.random.default_rng(0)))
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
            pytest.skip("random scores carry no information, so they need not follow items")
        probs = make_input(selector, np.random.default_rng(2))
        perm = np.random.default_rng(3).permutation(len(probs))
        np.testing.assert_allclose(selector.score(probs[perm]), selector.score(probs)[perm])

    def test_accepts_float16_and_float32(self, selector):
        probs = make_input(selector, np.random.default_rng(4))
        for dtype in (np.float16, np.float32):
            assert selector.score(probs.astype(dtype)).dtype == np.float64

    @pytest.mark.parametrize("breakage", ["nan", "inf", "int", "bool", "object", "sum",
                                          "negative", "one_class", "too_few_axes",
                                          "too_many_axes", "string"])
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
            "string": lambda p: p.astype(str),
        }[breakage](probs)
        with pytest.raises(InvalidInput) as err:
            selector.score(bad)
        assert err.value.kind == "bad_probs"
        assert len(str(err.value)) > 20  # says what is wrong and how to fix it


@st.composite
def prob_inputs(draw, selector):
    batch = draw(st.integers(0, 12))
    classes = draw(st.integers(2, 6))
    shape = (batch, classes, draw(st.integers(1, 5))) if selector.needs_samples \
        else (batch, classes)
    raw = draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1)))
    return spread(raw)


@pytest.mark.parametrize("selector", ALL, ids=SELECTORS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_scores_valid_and_order_independent_for_any_probabilities(selector, data):
    probs = data.draw(prob_inputs(selector))
    scores = selector.score(probs)
    assert scores.shape == (probs.shape[0],) and scores.dtype == np.float64
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    if not isinstance(selector, RandomScore):
        perm = list(data.draw(st.permutations(range(probs.shape[0]))))
        np.testing.assert_allclose(selector.score(probs[perm]), scores[perm], atol=1e-12)


# ================================================================ budget managers

# Every registered budget manager, in each configuration it is deployed with. Those
# with a ``fraction`` promise a share of traffic per window; "fixed" is the naive
# baseline that promises none (the spend tests below show what that costs).
CONFIGS = {
    "adaptive": lambda: make_budget("adaptive", 0.1, window=100, seed=3),
    "adaptive_no_audit": lambda: make_budget("adaptive", 0.1, window=100, audit_share=0.0),
    "adaptive_all_audit": lambda: make_budget("adaptive", 0.1, window=100, audit_share=1.0),
    "adaptive_cap": lambda: make_budget("adaptive", 0.1, window=100, cap=10, seed=1),
    "adaptive_quotas": lambda: make_budget("adaptive", 0.1, window=100, quotas=0.3, seed=2),
    "adaptive_class_quotas": lambda: make_budget("adaptive", 0.1, window=100,
                                                 quotas={0: 0.2, 1: 0.5}),
    "fixed": lambda: make_budget("fixed", 0.6),
}
TARGETED = sorted(name for name in CONFIGS if name.startswith("adaptive"))


def extras(n: int, start: int = 0) -> dict:
    """Predicted classes and an eligibility mask for items ``start..start+n``."""
    idx = np.arange(start, start + n)
    return {"classes": idx % 5, "eligible": (idx * 7919) % 10 != 0}


def drive(budget, scores, sizes, **kw) -> list:
    classes = np.arange(len(scores)) % 5
    return run(budget, scores, sizes, classes=classes, **kw)


def test_every_registered_budget_manager_is_in_the_contract():
    assert {name.split("_")[0] for name in CONFIGS} == set(BUDGETS)


@pytest.fixture(params=sorted(CONFIGS))
def budget(request):
    budget = CONFIGS[request.param]()
    rng = np.random.default_rng(0)
    drive(budget, rng.random(250), batch_sizes(rng, 250, 50))  # some state to protect
    return budget


def test_query_is_pure(budget):
    scores = np.random.default_rng(1).random(300)
    before = state(budget)
    first = budget.query(scores, keys_for(250, 300), **extras(300, 250))
    assert state(budget) == before
    assert budget.query(scores, keys_for(250, 300), **extras(300, 250)) == first


def test_decision_is_well_formed(budget):
    scores = np.random.default_rng(2).random(300)
    d = budget.query(scores, keys_for(250, 300), **extras(300, 250))
    assert d.selected.dtype == bool and d.selected.shape == (300,)
    assert d.probability.dtype == np.float64 and d.probability.shape == (300,)
    assert d.priority.dtype == np.float64 and d.priority.shape == (300,)
    assert len(d.reason) == 300 and isinstance(d.threshold, float)
    assert ((d.probability >= 0) & (d.probability <= 1)).all()
    assert (d.probability[d.selected] > 0).all()
    assert ((d.priority > 0) & (d.priority <= 1))[d.selected].all()
    assert (d.priority[~d.selected] == 0).all()
    assert [bool(r) for r in d.reason] == d.selected.tolist()
    assert set(d.reason) <= {"audit", "uncertain", ""}
    with pytest.raises(ValueError):
        d.selected[0] = not d.selected[0]  # a decision is a record, not a buffer


def test_update_commits_counters(budget):
    scores = np.random.default_rng(3).random(40)
    seen, spent = budget.seen_, budget.spent_
    d = budget.query(scores, keys_for(250, 40), **extras(40, 250))
    assert budget.update(scores, d) is None
    assert budget.seen_ == seen + 40 and budget.spent_ == spent + d.selected.sum()


def test_empty_batch(budget):
    d = budget.query(np.zeros(0), [], **extras(0))
    assert d.selected.shape == (0,) and d.reason == ()
    before = state(budget)
    budget.update(np.zeros(0), d)
    assert state(budget)[:2] == before[:2]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_stream_cut_into_other_batches_is_decided_the_same_way(name):
    scores = np.random.default_rng(4).random(900)
    rng = np.random.default_rng(5)
    a = drive(CONFIGS[name](), scores, batch_sizes(rng, 900, 400))
    b = drive(CONFIGS[name](), scores, batch_sizes(rng, 900, 30))
    for field in ("selected", "probability", "priority"):
        np.testing.assert_array_equal(joined(a, field), joined(b, field))
    assert sum((d.reason for d in a), ()) == sum((d.reason for d in b), ())


@pytest.mark.parametrize("bad", [[0.1, np.nan], [np.inf, 0.2], [[0.1, 0.2]], ["a", "b"],
                                 [1 + 1j, 0]])
def test_rejects_bad_scores(budget, bad):
    with pytest.raises(InvalidInput) as err:
        budget.query(np.array(bad), ["a", "b"], **extras(2))
    assert err.value.kind == "bad_scores"


@pytest.mark.parametrize("field, value, kind", [
    ("keys", ["a", "b"], "bad_keys"),
    ("keys", [1, 2, 3], "bad_keys"),
    ("classes", np.array([0.0, 1.0, 2.0]), "bad_classes"),
    ("classes", np.array([0, 1]), "bad_classes"),
    ("classes", np.array([0, -1, 2]), "bad_classes"),
    ("eligible", np.array([1, 0, 1]), "bad_eligible"),
    ("eligible", np.array([True, False]), "bad_eligible"),
])
def test_rejects_bad_keys_classes_and_masks(budget, field, value, kind):
    args = {"keys": ["a", "b", "c"], **extras(3)}
    args[field] = value
    with pytest.raises(InvalidInput) as err:
        budget.query(np.zeros(3), args.pop("keys"), **args)
    assert err.value.kind == kind


def test_rejects_a_decision_for_other_scores(budget):
    d = budget.query(np.zeros(2), ["a", "b"], **extras(2))
    with pytest.raises(InvalidInput) as err:
        budget.update(np.zeros(3), d)
    assert err.value.kind == "bad_decision"


# ---------------------------------------------------------------- redelivery


@pytest.mark.parametrize("name", sorted(CONFIGS))
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_a_redelivered_batch_is_decided_the_same_way(name, data):
    """At-least-once: a batch queried, lost before its commit, then redelivered.

    Any number of uncommitted queries (produce failed, the consumer was
    rebalanced away and back) leave the manager exactly as one query would,
    and the redelivered batch gets the same decision, so the same items are
    sent to labelers with the same probabilities.
    """
    n = data.draw(st.integers(1, 600), label="items")
    scores = np.asarray(data.draw(hnp.arrays(np.float64, n, elements=st.sampled_from(
        [0.0, 0.1, 0.5, 0.9, 1.0]) | st.floats(0, 1)), label="scores"))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, n - 1), max_size=6), label="cuts")
                      if n > 1 else []))
    bounds = list(zip([0, *cuts], [*cuts, n]))
    redelivered = set(data.draw(st.lists(st.integers(0, len(bounds) - 1), max_size=3)))
    once, twice = CONFIGS[name](), CONFIGS[name]()
    for i, (a, b) in enumerate(bounds):
        batch, keys, kw = scores[a:b], keys_for(a, b - a), extras(b - a, a)
        first = once.query(batch, keys, **kw)
        once.update(batch, first)
        if i in redelivered:
            lost = twice.query(batch, keys, **kw)          # its outputs never got acked
            assert lost == first
        again = twice.query(batch, keys, **kw)
        assert again == first
        twice.update(batch, again)
        assert state(twice) == state(once)


# ---------------------------------------------------------------- spend


STREAMS = adversarial_streams(8000)  # eight windows of 1,000 per stream and configuration


@pytest.mark.parametrize("name", TARGETED)
@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_every_window_of_1000_spends_within_ten_percent(name, stream):
    """Cold start included: the first window counts like every other one."""
    rng = np.random.default_rng([sorted(STREAMS).index(stream), TARGETED.index(name)])
    fraction = float(rng.choice([0.02, 0.05, 0.1, 0.2]))
    kwargs = {"adaptive_cap": dict(cap=round(1.05 * fraction * 1000)),
              "adaptive_no_audit": dict(audit_share=0.0),
              "adaptive_all_audit": dict(audit_share=1.0),
              "adaptive_quotas": dict(quotas=0.3),
              "adaptive_class_quotas": dict(quotas={0: 0.2, 1: 0.5})}.get(name, {})
    budget = make_budget("adaptive", fraction, window=1000, seed=int(rng.integers(1000)),
                         **kwargs)
    n = len(STREAMS[stream])
    # Skewed predicted classes (class 0 is 60% of traffic) and a filter that rules
    # out a tenth of the items: preferences must not break the band.
    classes = np.where(rng.random(n) < 0.6, 0, rng.integers(1, 5, n))
    eligible = rng.random(n) > 0.1
    decisions = run(budget, STREAMS[stream], batch_sizes(rng, n), classes=classes,
                    eligible=eligible)
    spend = window_spend(decisions, 1000)
    sliding = sliding_spend(decisions, 1000)    # every run of 1,000 images, not just 0..999, ...
    target = fraction * 1000
    print(f"{name} {stream} fraction={fraction}: spend per window min {sliding.min()} "
          f"max {sliding.max()} target {target:g}")
    assert len(spend) == n // 1000 and len(sliding) == n - 999
    assert (np.abs(sliding - target) <= 0.1 * target + 1e-9).all(), spend
    if "cap" in kwargs:
        assert sliding.max() <= kwargs["cap"]


SEGMENTS = st.lists(st.tuples(st.sampled_from(["constant", "up", "down", "noise", "spikes",
                                               "bimodal", "jump"]),
                              st.floats(-1e6, 1e6), st.integers(1, 400)), min_size=1, max_size=8)


def build_stream(segments, length: int) -> np.ndarray:
    parts, rng = [], np.random.default_rng(len(segments))
    for kind, level, n in segments:
        ramp = np.linspace(0, 1, n)
        parts.append(level + {"constant": 0 * ramp, "up": ramp, "down": -ramp,
                              "noise": rng.random(n),
                              "spikes": (rng.random(n) < 0.05) * 1e3,
                              "bimodal": np.where(rng.random(n) < 0.5, 0.0, 1.0),
                              "jump": np.where(ramp < 0.5, 0.0, 1e4)}[kind])
    return np.resize(np.concatenate(parts), length)


@pytest.mark.parametrize("name", TARGETED)
@settings(max_examples=15, deadline=None)
@given(segments=SEGMENTS, fraction=st.sampled_from([0.05, 0.1, 0.3]),
       largest=st.integers(1, 600), seed=st.integers(0, 2**16),
       ineligible=st.sampled_from([0.0, 0.5, 0.99]))
def test_window_band_holds_for_arbitrary_streams(name, segments, fraction, largest, seed,
                                                 ineligible):
    window = 200
    scores = build_stream(segments, 5 * window)
    kwargs = {"adaptive_cap": dict(cap=round(1.05 * fraction * window)),
              "adaptive_no_audit": dict(audit_share=0.0),
              "adaptive_quotas": dict(quotas=0.3),
              "adaptive_class_quotas": dict(quotas={0: 0.2, 1: 0.5})}.get(name, {})
    if name == "adaptive_all_audit":
        kwargs = dict(audit_share=1.0)
    budget = make_budget("adaptive", fraction, window=window, seed=seed, **kwargs)
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 3, len(scores))
    eligible = rng.random(len(scores)) >= ineligible
    decisions = run(budget, scores, batch_sizes(rng, len(scores), largest), classes=classes,
                    eligible=eligible)
    target = fraction * window
    spend = sliding_spend(decisions, window)
    assert (np.abs(spend - target) <= 0.1 * target + 1e-9).all(), spend
    assert (joined(decisions, "probability")[joined(decisions, "selected")] > 0).all()


@pytest.mark.parametrize("name", sorted(CONFIGS))
@settings(max_examples=30, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 50),
                  elements=st.floats(allow_nan=True, allow_infinity=True)))
def test_any_non_finite_score_is_rejected(name, scores):
    budget = CONFIGS[name]()
    keys, kw = keys_for(0, len(scores)), extras(len(scores))
    if np.isfinite(scores).all():
        budget.update(scores, budget.query(scores, keys, **kw))
        assert budget.seen_ == len(scores)
    else:
        with pytest.raises(InvalidInput, match="NaN or inf"):
            budget.query(scores, keys, **kw)


# ================================================================ diversity filter


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_diversity_filter_query_is_pure_and_order_independent(data):
    n, dim = data.draw(st.integers(0, 30)), data.draw(st.integers(1, 6))
    emb = data.draw(hnp.arrays(np.float64, (n, dim), elements=st.floats(-1, 1)))
    scores = data.draw(hnp.arrays(np.float64, n, elements=st.floats(0, 1, width=16),
                                  unique=True))
    f = DiversityFilter(radius=data.draw(st.floats(0, 0.5)), memory=50)
    f.update(np.ones((2, dim)) * [[1], [-1]], np.array([True, True]))
    before = f.memory_.copy()
    eligible = f.query(emb, scores)
    assert eligible.dtype == bool and eligible.shape == (n,)
    np.testing.assert_array_equal(f.memory_, before)
    perm = list(data.draw(st.permutations(range(n))))
    np.testing.assert_array_equal(f.query(emb[perm], scores[perm]), eligible[perm])


@pytest.mark.parametrize("emb, kind", [
    (np.array([[np.nan, 1.0]]), "bad_embeddings"),
    (np.array([[np.inf, 1.0]]), "bad_embeddings"),
    (np.array([1.0, 2.0]), "bad_embeddings"),
    (np.array([[1, 2]]), "bad_embeddings"),
    (np.zeros((1, 0)), "bad_embeddings"),
])
def test_diversity_filter_rejects_bad_embeddings(emb, kind):
    with pytest.raises(InvalidInput) as err:
        DiversityFilter().query(emb, np.zeros(len(emb)))
    assert err.value.kind == kind


def test_scikit_activeml_stays_a_benchmark_only_dependency():
    root = Path(__file__).resolve().parents[1]
    name = "skactive" + "ml"  # spelled apart so that this file does not match itself
    hits = [str(path.relative_to(root)) for folder in ("activestream", "tests")
            for path in (root / folder).rglob("*.py")
            if f"import {name}" in path.read_text() or f"from {name}" in path.read_text()]
    assert hits == []
