"""Which streamed items are worth a human label, and how many to ask for.

Two separate kinds of object (see ``STYLE.md``):

* **Selectors** score items: ``score(probs) -> scores``, with ``probs``
  ``[batch, classes]`` (or ``[batch, classes, samples]`` for the committee
  selectors, whose ``needs_samples`` is True) and float64 ``scores``
  ``[batch]`` in ``[0, 1]``; higher always means more worth a label.
* **Budget managers** turn scores into decisions under a labeling budget:
  ``query(scores, keys) -> Decision`` (pure) and ``update(scores, decision)``.

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
from activestream.selectors.budget import (
    AdaptiveBudget,
    BudgetManager,
    Decision,
    FixedThreshold,
    keyed_uniforms,
)
from activestream.selectors.committee import BALD, ConsensusEntropy, VoteEntropy
from activestream.selectors.uncertainty import Entropy, LeastConfidence, Margin, RandomScore

_REGISTRY = {
    cls.name: cls
    for cls in (LeastConfidence, Margin, Entropy, RandomScore, BALD, VoteEntropy,
                ConsensusEntropy)
}

SELECTORS: tuple[str, ...] = tuple(_REGISTRY)
"""Names accepted by :func:`make_selector`."""


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


def _params(cls) -> str:
    names = [f.name for f in dataclasses.fields(cls)]
    return "keyword arguments " + ", ".join(names) if names else "no arguments"


__all__ = [
    "SELECTORS",
    "AdaptiveBudget",
    "BALD",
    "BudgetManager",
    "ConsensusEntropy",
    "Decision",
    "Entropy",
    "FixedThreshold",
    "LeastConfidence",
    "Margin",
    "RandomScore",
    "Selector",
    "VoteEntropy",
    "keyed_uniforms",
    "make_selector",
    "normalised_entropy",
    "validate_probs",
    "validate_samples",
    "validate_scores",
]
