"""Score streams and a driver shared by the budget tests.

``run`` feeds a stream through ``query`` + ``update`` in batches, exactly as
the streaming selector and the simulator do; the adversarial streams are the
shapes that break naive budgets (a fixed threshold, a quantile filter that
needs a warm-up, a pacer that only caps).
"""

from __future__ import annotations

import numpy as np

from activestream.selectors import AdaptiveBudget, Decision

N_ITEMS, WINDOW = 20_000, 1000


def keys_for(start: int, n: int) -> list[str]:
    return [f"topic/0/{i}" for i in range(start, start + n)]


def batch_sizes(rng, total: int, largest: int = 1000):
    """``(start, size)`` pairs with log-uniform sizes from 1 to ``largest`` items."""
    done = 0
    while done < total:
        n = max(1, min(total - done, int(np.exp(rng.uniform(0, np.log(largest + 1))))))
        yield done, n
        done += n


def run(budget, scores: np.ndarray, sizes, classes=None, eligible=None) -> list[Decision]:
    """Feed a stream through query + update; return the decisions in order."""
    decisions = []
    for start, n in sizes:
        batch = scores[start:start + n]
        extra = {}
        if classes is not None:
            extra["classes"] = classes[start:start + n]
        if eligible is not None:
            extra["eligible"] = eligible[start:start + n]
        decision = budget.query(batch, keys_for(start, n), **extra)
        assert budget.update(batch, decision) is None
        decisions.append(decision)
    return decisions


def joined(decisions, field: str) -> np.ndarray:
    if not decisions:
        return np.zeros(0)
    return np.concatenate([np.asarray(getattr(d, field)) for d in decisions])


def reasons(decisions) -> np.ndarray:
    return np.array(sum((d.reason for d in decisions), ()), dtype=object)


def window_spend(decisions, window: int) -> np.ndarray:
    selected = joined(decisions, "selected")
    full = len(selected) // window * window
    return selected[:full].reshape(-1, window).sum(axis=1)


def sliding_spend(decisions, window: int) -> np.ndarray:
    """Picks in every run of ``window`` consecutive items (not only the tumbling windows)."""
    selected = joined(decisions, "selected").astype(np.int64)
    if len(selected) < window:
        return np.zeros(0, dtype=np.int64)
    return np.convolve(selected, np.ones(window, dtype=np.int64), "valid")


def state(budget) -> tuple:
    """Everything a budget manager has learned, comparable with ``==``."""
    extra = ()
    if isinstance(budget, AdaptiveBudget):
        extra = (budget.recent_.tobytes(), budget.recent_classes_.tobytes(),
                 budget.history_.tobytes(),
                 tuple((c, h.tobytes()) for c, h in sorted(budget.class_history_.items())))
    return (budget.seen_, budget.spent_, budget.threshold_, *extra)


def adversarial_streams(n: int = N_ITEMS, window: int = WINDOW) -> dict[str, np.ndarray]:
    """Score shapes that break naive budgets; every one starts cold."""
    rng = np.random.default_rng(11)
    t = np.linspace(0, 1, n)
    return {
        "constant": np.full(n, 0.42),                 # cold start: every score equal
        "cold_then_model": np.where(t < 0.1, 0.0, rng.random(n)),  # no model, then one
        "increasing": t,
        "decreasing": 1 - t,
        "bimodal": np.where(rng.random(n) < 0.3, 0.95, 0.05),
        "level_jump": np.where(t < 0.37, 0.1, 0.9) + 0.01 * rng.random(n),
        "sudden_drop": np.where(t < 0.5, 0.9, 0.01) * rng.random(n),
        "iid_uniform": rng.random(n),
        "collapsing": rng.random(n) * np.exp(-10 * t),
        "sawtooth_in_window": (np.arange(n) % window) / window,
    }
