"""Which streamed items are worth a human label, and how many to ask for.

Two separate kinds of object (see ``STYLE.md``):

* **Selectors** score items: ``score(probs) -> scores``, with ``probs``
  ``[batch, classes]`` (or ``[batch, classes, samples]`` for the committee
  selectors, whose ``needs_samples`` is True) and float64 ``scores``
  ``[batch]`` in ``[0, 1]``; higher always means more worth a label.
* **Budget managers** turn scores into decisions under a labeling budget:
  ``query(scores, keys, *, classes=None, eligible=None) -> Decision`` (pure)
  and ``update(scores, decision)`` (commit); built by name with
  :func:`make_budget`.
* The **diversity filter** turns ``[batch, dim]`` embeddings into an
  ``eligible`` mask for the budget, with the same ``query``/``update`` verbs.

This package imports only the standard library and numpy.

>>> selector = make_selector("entropy")
>>> scores = selector.score(np.array([[0.5, 0.5], [0.99, 0.01]]))
>>> scores.round(3).tolist()
[1.0, 0.081]
>>> budget = AdaptiveBudget(0.1, window=1000)
>>> decision = budget.query(scores, ["img-1", "img-2"])   # pure: nothing changes
>>> decision.selected.shape, decision.probability.dtype, len(decision.reason)
((2,), dtype('float64'), 2)
>>> budget.update(scores, decision)                       # commit
>>> budget.seen_
2
"""

from __future__ import annotations

import dataclasses

import numpy as np

from activestream.errors import InvalidInput
from activestream.selectors.base import (
    Selector,
    normalised_entropy,
    validate_probs,
    validate_samples,
    validate_scores,
)
from activestream.selectors.budget import AdaptiveBudget, FixedThreshold
from activestream.selectors.committee import BALD, ConsensusEntropy, VoteEntropy
from activestream.selectors.decision import BudgetManager, Decision
from activestream.selectors.diversity import DiversityFilter, validate_embeddings
from activestream.selectors.ranking import keyed_uniforms, rank_threshold, score_ranks
from activestream.selectors.uncertainty import Entropy, LeastConfidence, Margin, RandomScore

_REGISTRY = {
    cls.name: cls
    for cls in (LeastConfidence, Margin, Entropy, RandomScore, BALD, VoteEntropy,
                ConsensusEntropy)
}

SELECTORS: tuple[str, ...] = tuple(_REGISTRY)
"""Names accepted by :func:`make_selector`."""

ONE_PASS_SELECTORS: tuple[str, ...] = tuple(name for name, cls in _REGISTRY.items() if not cls.needs_samples)
"""Selectors that score one probability vector per image: the ones the streaming selector
worker runs (the others need several model passes per image, which only the simulator makes).

>>> ONE_PASS_SELECTORS
('least_confidence', 'margin', 'entropy', 'random')
"""


def make_selector(name: str, **kwargs) -> Selector:
    """Build a selector by name, e.g. from a config value.

    >>> make_selector("random", seed=3)
    RandomScore(seed=3)
    >>> make_selector("bald").needs_samples
    True
    >>> make_selector("smallest_margin")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    activestream.errors.InvalidInput: unknown selector 'smallest_margin'; use one of: ...
    """
    cls = _REGISTRY.get(name)
    if cls is None:
        raise InvalidInput("bad_config", f"unknown selector {name!r}; use one of: "
                           + ", ".join(SELECTORS))
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise InvalidInput("bad_config", f"bad arguments for selector {name!r}: {e}; "
                           f"{cls.__name__} takes {_params(cls)}") from e


_BUDGETS = {"adaptive": AdaptiveBudget, "fixed": FixedThreshold}

BUDGETS: tuple[str, ...] = tuple(_BUDGETS)
"""Names accepted by :func:`make_budget`: ``adaptive`` holds a share of traffic per
window; ``fixed`` is the naive fixed-threshold baseline."""


def make_budget(name: str, *args, **kwargs) -> BudgetManager:
    """Build a budget manager by name, e.g. from a config value.

    >>> make_budget("adaptive", 0.05, window=1000, cap=60)
    AdaptiveBudget(0.05, window=1000, audit_share=0.1, history=2000, seed=0, tolerance=0.1, cap=60)
    >>> make_budget("fixed", 0.5)
    FixedThreshold(0.5)
    """
    cls = _BUDGETS.get(name)
    if cls is None:
        raise InvalidInput("bad_config", f"unknown budget manager {name!r}; use one of: "
                           + ", ".join(BUDGETS))
    try:
        return cls(*args, **kwargs)
    except TypeError as e:
        raise InvalidInput("bad_config", f"bad arguments for budget manager {name!r}: {e}") from e


def _params(cls) -> str:
    names = [f.name for f in dataclasses.fields(cls)]
    return "keyword arguments " + ", ".join(names) if names else "no arguments"


__all__ = [
    "BUDGETS",
    "ONE_PASS_SELECTORS",
    "SELECTORS",
    "AdaptiveBudget",
    "BALD",
    "BudgetManager",
    "ConsensusEntropy",
    "Decision",
    "DiversityFilter",
    "Entropy",
    "FixedThreshold",
    "LeastConfidence",
    "Margin",
    "RandomScore",
    "Selector",
    "VoteEntropy",
    "keyed_uniforms",
    "make_budget",
    "make_selector",
    "normalised_entropy",
    "rank_threshold",
    "score_ranks",
    "validate_embeddings",
    "validate_probs",
    "validate_samples",
    "validate_scores",
]
