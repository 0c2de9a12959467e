"""Budget managers: one contract suite for all, then AdaptiveBudget's guarantees.

The central property: every tumbling window of ``window`` items spends
within +-10% of ``fraction * window``, from a cold start, whatever the scores
do and however the stream is cut into batches.
"""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activestream.errors import InvalidInput
from activestream.selectors import AdaptiveBudget, Decision, FixedThreshold

N_ITEMS, WINDOW = 20_000, 1000


def keys_for(start: int, n: int) -> list[str]:
    return [f"topic/0/{i}" for i in range(start, start + n)]


def batch_sizes(rng, total: int, largest: int = 1000):
    """Log-uniform batch sizes from 1 to ``largest`` items."""
    done = 0
    while done < total:
        n = min(total - done, int(np.exp(rng.uniform(0, np.log(largest + 1)))))
        yield done, max(n, 1)
        done += max(n, 1)


def run(budget, scores: np.ndarray, sizes) -> list[Decision]:
    """Feed a stream through query + update; return the decisions in order."""
    decisions = []
    for start, n in sizes:
        batch = scores[start:start + n]
        decision = budget.query(batch, keys_for(start, n))
        assert budget.update(batch, decision) is None
        decisions.append(decision)
    return decisions


def joined(decisions, field: str) -> np.ndarray:
    return np.concatenate([getattr(d, field) for d in decisions]) if decisions else np.zeros(0)


def window_spend(decisions, window: int) -> np.ndarray:
    selected = joined(decisions, "selected")
    full = len(selected) // window * window
    return selected[:full].reshape(-1, window).sum(axis=1)


def state(budget) -> tuple:
    extra = (budget.window_spent_, budget.history_.tobytes()) \
        if isinstance(budget, AdaptiveBudget) else ()
    return (budget.seen_, budget.spent_, budget.threshold_, *extra)


FACTORIES = {
    "adaptive": lambda: AdaptiveBudget(0.1, window=100, seed=3),
    "fixed": lambda: FixedThreshold(0.6),
}


# ---------------------------------------------------------------- contract suite


@pytest.fixture(params=sorted(FACTORIES))
def budget(request):
    budget = FACTORIES[request.param]()
    rng = np.random.default_rng(0)
    run(budget, rng.random(250), batch_sizes(rng, 250, 50))  # some state to protect
    return budget


def test_query_is_pure(budget):
    scores = np.random.default_rng(1).random(300)
    before = state(budget)
    first = budget.query(scores, keys_for(250, 300))
    assert state(budget) == before
    assert budget.query(scores, keys_for(250, 300)) == first


def test_decision_shapes_and_consistency(budget):
    scores = np.random.default_rng(2).random(300)
    d = budget.query(scores, keys_for(250, 300))
    assert d.selected.dtype == bool and d.selected.shape == (300,)
    assert d.probability.dtype == np.float64 and d.probability.shape == (300,)
    assert len(d.reason) == 300 and isinstance(d.threshold, float)
    assert ((d.probability >= 0) & (d.probability <= 1)).all()
    assert (d.probability[d.selected] > 0).all()
    assert [bool(r) for r in d.reason] == d.selected.tolist()
    assert set(d.reason) <= {"audit", "uncertain", ""}
    with pytest.raises(ValueError):
        d.selected[0] = not d.selected[0]  # a decision is a record, not a buffer


def test_update_commits_counters(budget):
    scores = np.random.default_rng(3).random(40)
    seen, spent = budget.seen_, budget.spent_
    d = budget.query(scores, keys_for(250, 40))
    assert budget.update(scores, d) is None
    assert budget.seen_ == seen + 40 and budget.spent_ == spent + d.selected.sum()


def test_empty_batch(budget):
    d = budget.query(np.zeros(0), [])
    assert d.selected.shape == (0,) and d.reason == ()
    before = state(budget)
    budget.update(np.zeros(0), d)
    assert state(budget)[:2] == before[:2]


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_replay_gives_the_same_decisions(name):
    """A redelivered stream, even cut into different batches, is decided the same way."""
    scores = np.random.default_rng(4).random(900)
    rng = np.random.default_rng(5)
    a = run(FACTORIES[name](), scores, batch_sizes(rng, 900, 400))
    b = run(FACTORIES[name](), scores, batch_sizes(rng, 900, 30))
    for field in ("selected", "probability"):
        np.testing.assert_array_equal(joined(a, field), joined(b, field))
    assert sum((d.reason for d in a), ()) == sum((d.reason for d in b), ())


@pytest.mark.parametrize("bad", [[0.1, np.nan], [np.inf, 0.2], [[0.1, 0.2]], ["a", "b"]])
def test_rejects_bad_scores(budget, bad):
    with pytest.raises(InvalidInput) as err:
        budget.query(np.array(bad), ["a", "b"])
    assert err.value.kind == "bad_scores"


def test_rejects_bad_keys_and_mismatched_decisions(budget):
    with pytest.raises(InvalidInput) as err:
        budget.query(np.zeros(3), ["a", "b"])
    assert err.value.kind == "bad_keys"
    d = budget.query(np.zeros(2), ["a", "b"])
    with pytest.raises(InvalidInput) as err:
        budget.update(np.zeros(3), d)
    assert err.value.kind == "bad_decision"


def test_numpy_integer_settings_behave_like_ints():
    scores = np.random.default_rng(9).random(300)
    a = run(AdaptiveBudget(0.1, window=np.int64(100), seed=np.int64(3)), scores, [(0, 300)])
    b = run(AdaptiveBudget(0.1, window=100, seed=3), scores, [(0, 300)])
    assert a == b


def test_adaptive_rejects_keys_that_are_not_strings():
    with pytest.raises(InvalidInput) as err:
        AdaptiveBudget(0.1).query(np.zeros(2), [1, 2])
    assert err.value.kind == "bad_keys"


@pytest.mark.parametrize("kwargs", [dict(fraction=0), dict(fraction=1.5),
                                    dict(fraction=float("nan")), dict(window=0),
                                    dict(audit_share=-0.1), dict(history=0),
                                    dict(fraction=0.0005)])
def test_adaptive_rejects_bad_settings(kwargs):
    settings_ = {"fraction": 0.1, **kwargs}
    with pytest.raises(InvalidInput) as err:
        AdaptiveBudget(settings_.pop("fraction"), **settings_)
    assert err.value.kind == "bad_config" and "fix" in str(err.value)


def test_constructor_arguments_are_stored_under_their_names():
    b = AdaptiveBudget(0.2, window=500, audit_share=0.3, history=700, seed=9)
    assert (b.fraction, b.window, b.audit_share, b.history, b.seed) == (0.2, 500, 0.3, 700, 9)
    assert (b.seen_, b.spent_) == (0, 0)
    assert "AdaptiveBudget(0.2" in repr(b) and FixedThreshold(0.5).threshold == 0.5


# ---------------------------------------------------------------- window adherence


def adversarial_streams() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    t = np.linspace(0, 1, N_ITEMS)
    return {
        "constant": np.full(N_ITEMS, 0.42),
        "increasing": t,
        "decreasing": 1 - t,
        "bimodal": np.where(rng.random(N_ITEMS) < 0.3, 0.95, 0.05),
        "level_jump": np.where(t < 0.37, 0.1, 0.9) + 0.01 * rng.random(N_ITEMS),
        "iid_uniform": rng.random(N_ITEMS),
        "collapsing": rng.random(N_ITEMS) * np.exp(-10 * t),
        "sawtooth_in_window": (np.arange(N_ITEMS) % WINDOW) / WINDOW,
    }


STREAMS = adversarial_streams()


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.2])
@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_every_window_spends_within_ten_percent(stream, fraction):
    rng = np.random.default_rng([sorted(STREAMS).index(stream), int(fraction * 100)])
    budget = AdaptiveBudget(fraction, window=WINDOW, seed=int(rng.integers(1000)))
    spend = window_spend(run(budget, STREAMS[stream], batch_sizes(rng, N_ITEMS)), WINDOW)
    target = fraction * WINDOW
    deviation = np.abs(spend - target) / target
    print(f"{stream} fraction={fraction}: worst window deviation {deviation.max():.1%}")
    assert len(spend) == N_ITEMS // WINDOW
    assert deviation.max() <= 0.1, spend


SEGMENTS = st.lists(st.tuples(st.sampled_from(["constant", "up", "down", "noise", "spikes"]),
                              st.floats(-1e6, 1e6), st.integers(1, 400)), min_size=1, max_size=8)


def build_stream(segments, length: int) -> np.ndarray:
    parts, rng = [], np.random.default_rng(len(segments))
    for kind, level, n in segments:
        ramp = np.linspace(0, 1, n)
        parts.append(level + {"constant": 0 * ramp, "up": ramp, "down": -ramp,
                              "noise": rng.random(n),
                              "spikes": (rng.random(n) < 0.05) * 1e3}[kind])
    return np.resize(np.concatenate(parts), length)


@settings(max_examples=40, deadline=None)
@given(segments=SEGMENTS, fraction=st.sampled_from([0.05, 0.1, 0.3]),
       largest=st.integers(1, 600), seed=st.integers(0, 2**16))
def test_window_property_holds_for_arbitrary_streams(segments, fraction, largest, seed):
    window = 200
    scores = build_stream(segments, 5 * window)
    budget = AdaptiveBudget(fraction, window=window, seed=seed)
    decisions = run(budget, scores, batch_sizes(np.random.default_rng(seed), len(scores),
                                                largest))
    target = fraction * window
    spend = window_spend(decisions, window)
    assert (np.abs(spend - target) <= 0.1 * target + 1e-9).all(), spend
    assert (joined(decisions, "probability")[joined(decisions, "selected")] > 0).all()


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 50),
                  elements=st.floats(allow_nan=True, allow_infinity=True)))
def test_any_non_finite_score_is_rejected(scores):
    budget = AdaptiveBudget(0.1)
    keys = keys_for(0, len(scores))
    if np.isfinite(scores).all():
        budget.update(scores, budget.query(scores, keys))
        assert budget.seen_ == len(scores)
    else:
        with pytest.raises(InvalidInput, match="NaN or inf"):
            budget.query(scores, keys)


# ---------------------------------------------------------------- what gets picked


def hidden_attribute_stream(n: int):
    """Scores that reveal a hidden attribute: picking by score biases its mean."""
    rng = np.random.default_rng(21)
    hidden = rng.normal(size=n)
    scores = 1 / (1 + np.exp(-(2 * hidden + rng.normal(size=n))))
    return hidden, scores


def test_audit_picks_are_a_uniform_sample():
    hidden, scores = hidden_attribute_stream(60_000)
    budget = AdaptiveBudget(0.1, audit_share=0.2, seed=1)
    decisions = run(budget, scores, batch_sizes(np.random.default_rng(2), len(scores)))
    reason = np.array(sum((d.reason for d in decisions), ()))
    audit, uncertain = hidden[reason == "audit"], hidden[reason == "uncertain"]
    assert abs(len(audit) - 0.02 * len(scores)) < 5 * np.sqrt(0.02 * len(scores))
    assert abs(audit.mean() - hidden.mean()) < 5 / np.sqrt(len(audit))  # ~0.15
    assert uncertain.mean() > hidden.mean() + 1.0  # the check would see a bias


def test_probabilities_are_exact_inverse_propensity_weights():
    """Horvitz-Thompson with the reported probabilities recovers the population mean."""
    hidden, scores = hidden_attribute_stream(50_000)
    decisions = run(AdaptiveBudget(0.1, seed=4), scores,
                    batch_sizes(np.random.default_rng(3), len(scores)))
    selected, probability = joined(decisions, "selected"), joined(decisions, "probability")
    estimate = (hidden[selected] / probability[selected]).sum() / len(hidden)
    naive = hidden[selected].mean()
    assert abs(estimate - hidden.mean()) < 0.2
    assert abs(naive - hidden.mean()) > 0.5


def test_probability_matches_the_selection_frequency_on_ties():
    budget = AdaptiveBudget(0.1, window=1000, seed=8)
    flat = np.full(500, 0.5)
    budget.update(flat, budget.query(flat, keys_for(0, 500)))
    picks, probs = [], []
    for i in range(4000):  # one item at a time, same state, fresh keys
        d = budget.query(np.array([0.5]), [f"probe-{i}"])
        picks.append(d.selected[0])
        probs.append(d.probability[0])
    assert len(set(probs)) == 1 and 0 < probs[0] < 1
    sd = np.sqrt(probs[0] * (1 - probs[0]) / len(picks))
    assert abs(np.mean(picks) - probs[0]) < 5 * sd


def test_adaptive_prefers_high_scores():
    _, scores = hidden_attribute_stream(20_000)
    decisions = run(AdaptiveBudget(0.1, seed=5), scores,
                    batch_sizes(np.random.default_rng(6), len(scores)))
    reason = np.array(sum((d.reason for d in decisions), ()))
    assert np.mean(scores[reason == "uncertain"] >= np.quantile(scores, 0.85)) > 0.9


def test_fixed_threshold_underspends_when_scores_collapse():
    """The weakness AdaptiveBudget fixes: a fixed bar stops asking once the model is sure."""
    scores = STREAMS["collapsing"]
    sizes = list(batch_sizes(np.random.default_rng(7), N_ITEMS))
    fixed = window_spend(run(FixedThreshold(0.5), scores, sizes), WINDOW)
    adaptive = window_spend(run(AdaptiveBudget(0.1), scores, sizes), WINDOW)
    assert fixed[0] > 100 and (fixed[-10:] == 0).all()
    assert (np.abs(adaptive - 100) <= 10).all()


def test_cold_start_asks_for_labels_from_the_first_window():
    budget = AdaptiveBudget(0.1)
    assert budget.threshold_ == -np.inf  # no history yet: every item is eligible
    scores = np.full(100, 0.01)
    d = budget.query(scores, keys_for(0, 100))
    assert 5 <= d.selected.sum() <= 15
