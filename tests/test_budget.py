"""AdaptiveBudget's guarantees beyond the shared contract, and the baseline's weakness.

The contract every budget manager passes (purity, replay, rejection, spend in
every window on adversarial streams) is in ``test_selection_contract.py``;
here: settings, what gets picked (audits, inverse-propensity weights, high
scores), the hard cap, per-class quotas, eligibility and the queue priority.
"""

from __future__ import annotations

import numpy as np
import pytest

from budget_streams import (
    N_ITEMS,
    WINDOW,
    adversarial_streams,
    batch_sizes,
    joined,
    keys_for,
    reasons,
    run,
    sliding_spend,
    window_spend,
)
from activestream.errors import InvalidInput
from activestream.selectors import AdaptiveBudget, DiversityFilter, FixedThreshold

STREAMS = adversarial_streams()


# ---------------------------------------------------------------- settings


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
    adaptive = sliding_spend(run(AdaptiveBudget(0.1), scores, sizes), WINDOW)
    assert fixed[0] > 100 and (fixed[-10:] == 0).all()
    assert (np.abs(adaptive - 100) <= 10).all()  # every run of 1,000 images


def test_cold_start_asks_for_labels_from_the_first_window():
    budget = AdaptiveBudget(0.1)
    assert budget.threshold_ == -np.inf  # no history yet: every item is eligible
    scores = np.full(100, 0.01)
    d = budget.query(scores, keys_for(0, 100))
    assert 5 <= d.selected.sum() <= 15


# ---------------------------------------------------------------- hard cap


def test_the_cap_holds_every_window_even_against_audits():
    scores = STREAMS["iid_uniform"]
    sizes = list(batch_sizes(np.random.default_rng(12), N_ITEMS))
    capped = run(AdaptiveBudget(0.1, audit_share=1.0, cap=90, seed=2), scores, sizes)
    spend = sliding_spend(capped, WINDOW)
    # a cap inside the band: the budget aims at 90 / 1.1 and holds its own band under the cap
    assert spend.max() <= 90 and spend.min() >= 74, spend
    at_cap = joined(capped, "probability") == 0
    assert not joined(capped, "selected")[at_cap].any()
    # Without a cap the band's top is the limit: all-audit spend would be binomial.
    default = sliding_spend(run(AdaptiveBudget(0.1, audit_share=1.0, seed=2), scores, sizes),
                           WINDOW)
    assert default.max() <= 110 and default.min() >= 90, default


def test_a_cap_below_the_target_wins_and_picks_still_follow_scores():
    scores = STREAMS["iid_uniform"][:5000]
    decisions = run(AdaptiveBudget(0.1, cap=40, seed=3), scores, batch_sizes(np.random.default_rng(13), 5000))
    spend = sliding_spend(decisions, WINDOW)
    assert spend.max() <= 40 and spend.min() >= 33, spend
    selected, reason = joined(decisions, "selected"), reasons(decisions)
    uncertain = scores[selected & (reason == "uncertain")]
    audits = (reason == "audit").sum()
    assert uncertain.mean() > 0.85, uncertain.mean()          # the best items, not whatever comes first
    assert 0 < audits <= 0.25 * selected.sum(), audits         # about audit_share of the spend, not pushed out


@pytest.mark.parametrize("cap", [0, -1, 2.5, True])
def test_cap_must_be_a_positive_int(cap):
    with pytest.raises(InvalidInput, match="cap") as err:
        AdaptiveBudget(0.1, cap=cap)
    assert err.value.kind == "bad_config"


# ---------------------------------------------------------------- per-class quotas


def dominant_class_stream(n: int = 10_000):
    """Class 0 is 60% of traffic and always looks more uncertain than the rest."""
    rng = np.random.default_rng(14)
    classes = np.where(rng.random(n) < 0.6, 0, rng.integers(1, 5, n))
    scores = np.where(classes == 0, 0.5 + 0.5 * rng.random(n), 0.6 * rng.random(n))
    return scores, classes


def per_window_class_picks(decisions, classes, cls: int) -> np.ndarray:
    uncertain = reasons(decisions) == "uncertain"
    hits = (uncertain & (classes[:len(uncertain)] == cls)).astype(int)
    return hits[: len(hits) // WINDOW * WINDOW].reshape(-1, WINDOW).sum(axis=1)


def test_quotas_keep_one_predicted_class_from_taking_the_budget():
    scores, classes = dominant_class_stream()
    sizes = list(batch_sizes(np.random.default_rng(15), len(scores)))
    free = run(AdaptiveBudget(0.1, seed=3), scores, sizes, classes=classes)
    fair = run(AdaptiveBudget(0.1, seed=3, quotas=0.25), scores, sizes, classes=classes)
    assert per_window_class_picks(free, classes, 0).min() > 80     # class 0 takes ~all
    assert per_window_class_picks(fair, classes, 0).max() <= 25    # floor(0.25 * 100)
    others = [sum(per_window_class_picks(ds, classes, c) for c in range(1, 5))
              for ds in (free, fair)]
    assert others[0].max() < 20 and others[1].min() >= 50, others  # the rest go elsewhere
    assert (np.abs(sliding_spend(fair, WINDOW) - 100) <= 10).all()


def test_quotas_for_listed_classes_only():
    scores, classes = dominant_class_stream()
    decisions = run(AdaptiveBudget(0.1, quotas={0: 0.1}), scores,
                    batch_sizes(np.random.default_rng(16), len(scores)), classes=classes)
    assert per_window_class_picks(decisions, classes, 0).max() <= 10
    assert (np.abs(sliding_spend(decisions, WINDOW) - 100) <= 10).all()


def test_quotas_need_the_predicted_classes():
    budget = AdaptiveBudget(0.1, quotas=0.3)
    with pytest.raises(InvalidInput, match="argmax") as err:
        budget.query(np.zeros(3), keys_for(0, 3))
    assert err.value.kind == "bad_classes"
    d = budget.query(np.zeros(3), keys_for(0, 3), classes=np.array([0, 1, 2]))
    stripped = type(d)(d.selected, d.probability, d.reason, d.threshold)
    with pytest.raises(InvalidInput) as err:
        budget.update(np.zeros(3), stripped)
    assert err.value.kind == "bad_decision"


@pytest.mark.parametrize("quotas", [0, 1.5, {0: 0}, {-1: 0.5}, "balanced"])
def test_quotas_reject_bad_settings(quotas):
    with pytest.raises(InvalidInput) as err:
        AdaptiveBudget(0.1, quotas=quotas)
    assert err.value.kind == "bad_config"


# ---------------------------------------------------------------- eligibility


def test_ineligible_items_are_passed_over_unless_the_band_needs_them():
    scores = STREAMS["iid_uniform"]
    sizes = list(batch_sizes(np.random.default_rng(17), N_ITEMS))
    eligible = np.random.default_rng(18).random(N_ITEMS) < 0.5
    decisions = run(AdaptiveBudget(0.1, seed=4), scores, sizes, eligible=eligible)
    uncertain = reasons(decisions) == "uncertain"
    assert (uncertain & ~eligible).sum() <= 0.01 * uncertain.sum()
    assert (np.abs(sliding_spend(decisions, WINDOW) - 100) <= 10).all()
    # Nothing eligible at all: the band still holds, spent on forced picks.
    none = run(AdaptiveBudget(0.1, seed=4), scores, sizes, eligible=np.zeros(N_ITEMS, bool))
    assert (np.abs(sliding_spend(none, WINDOW) - 100) <= 10).all()


def near_duplicate_stream(n: int = 10_000, prototypes: int = 400, dim: int = 16):
    """Bursts of near-identical images: each item is a noisy copy of a prototype."""
    rng = np.random.default_rng(19)
    centres = rng.normal(size=(prototypes, dim))
    which = rng.integers(0, prototypes, n)
    embeddings = centres[which] + 0.01 * rng.normal(size=(n, dim))
    scores = rng.random(prototypes)[which] + 0.01 * rng.random(n)  # copies score alike
    return embeddings, scores, which


def test_diversity_filter_spreads_labels_over_distinct_images():
    embeddings, scores, which = near_duplicate_stream()
    sizes = list(batch_sizes(np.random.default_rng(20), len(scores), 256))
    plain = run(AdaptiveBudget(0.05, seed=5), scores, sizes)
    budget, diverse = AdaptiveBudget(0.05, seed=5), DiversityFilter(radius=0.01, memory=1000)
    decisions = []
    for start, n in sizes:
        e, s = embeddings[start:start + n], scores[start:start + n]
        d = budget.query(s, keys_for(start, n), eligible=diverse.query(e, s))
        budget.update(s, d)
        diverse.update(e, d)
        decisions.append(d)
    distinct = [len(np.unique(which[joined(ds, "selected")])) for ds in (plain, decisions)]
    picks = [int(joined(ds, "selected").sum()) for ds in (plain, decisions)]
    assert distinct[1] > 1.5 * distinct[0], (distinct, picks)
    assert (np.abs(sliding_spend(decisions, WINDOW) - 50) <= 5).all()


def test_diversity_filter_memory_is_bounded_and_clearable():
    f = DiversityFilter(radius=0.1, memory=3)
    f.update(np.eye(5), np.ones(5, dtype=bool))
    np.testing.assert_array_equal(f.memory_, np.eye(5)[2:])
    assert f.query(np.eye(5), np.zeros(5)).tolist() == [True, True, False, False, False]
    with pytest.raises(InvalidInput, match="clear") as err:
        f.query(np.ones((1, 4)), np.zeros(1))
    assert err.value.kind == "bad_embeddings"
    f.clear()
    assert f.query(np.ones((1, 4)), np.zeros(1)).tolist() == [True]
    with pytest.raises(InvalidInput):
        DiversityFilter(radius=3)


# ---------------------------------------------------------------- queue priority


def test_priority_follows_rank_and_interleaves_audits():
    _, scores = hidden_attribute_stream(20_000)
    decisions = run(AdaptiveBudget(0.1, audit_share=0.2, seed=6), scores,
                    batch_sizes(np.random.default_rng(21), len(scores)))
    why, priority = reasons(decisions), joined(decisions, "priority")
    unc, aud = why == "uncertain", why == "audit"
    order = np.argsort(np.argsort(scores[unc]))
    assert np.corrcoef(order, np.argsort(np.argsort(priority[unc])))[0, 1] > 0.9
    # Audits land all through the queue, not at its bottom: their mean position
    # among the selected items, sorted by priority, is near the middle.
    queue = np.argsort(-priority[unc | aud], kind="stable")
    position = np.empty(len(queue))
    position[queue] = np.linspace(0, 1, len(queue))
    assert abs(position[aud[unc | aud]].mean() - 0.5) < 0.1
