"""The selection-policy seam: which streamed items get a label, and with what probability.

A policy sees one batch of model outputs at a time, in stream order, and answers with
two verbs, like the budget managers it wraps (``STYLE.md``, rule 2):

* ``select(probs, embeddings, keys) -> Selection`` is pure: nothing changes, and the
  same state and inputs always give the same answer.
* ``commit(probs, embeddings, keys, selection) -> None`` commits that answer (counters,
  score history, thresholds move on). The simulator calls it once per batch, right
  after ``select``, with the very same arguments.

Shapes:

* ``probs``: float ``[batch, classes]``, the serving model's class probabilities; a
  policy whose ``needs_samples`` is True gets ``[batch, classes, samples]`` instead
  (MC-dropout passes), as the committee selectors take.
* ``embeddings``: float ``[batch, dim]`` penultimate-layer features when the policy's
  ``needs_embeddings`` is True, else ``None``.
* ``keys``: one stable string id per item.
* ``Selection.selected``: bool ``[batch]``; ``Selection.probability``: float64
  ``[batch]``, the probability that the item was selected given the policy's state
  before it (in ``(0, 1]`` for selected items: the inverse-propensity weight of its
  label); ``Selection.reason``: one string per item, ``""`` when not selected.

Any strategy that fits these two verbs, a foreign library's included, runs in
``activestream simulate`` and ``compare`` next to ours: pass an instance to
:func:`activestream.simulation.engine.simulate`. Ours is :class:`BudgetPolicy`, the
same selector and budget manager objects that the streaming selector worker runs.

>>> from activestream.selectors import AdaptiveBudget, make_selector
>>> policy = BudgetPolicy(make_selector("margin"), AdaptiveBudget(0.5, window=4))
>>> probs = np.array([[0.9, 0.1], [0.5, 0.5], [0.6, 0.4], [0.99, 0.01]])
>>> keys = ["a", "b", "c", "d"]
>>> s = policy.select(probs, None, keys)
>>> int(s.selected.sum()), s.probability.shape
(2, (4,))
>>> policy.commit(probs, None, keys, s)
>>> policy.budget.seen_
4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from activestream.errors import ConfigError
from activestream.selectors import AdaptiveBudget, BudgetManager, DiversityFilter, Selector, make_selector
from activestream.selectors.boost import DriftBoost


@dataclass(frozen=True)
class Selection:
    """What a policy chose for one batch; every array is ``[batch]``."""

    selected: np.ndarray
    probability: np.ndarray
    reason: tuple[str, ...]


@runtime_checkable
class SelectionPolicy(Protocol):
    """Pure ``select`` then ``commit`` for every batch, in stream order."""

    name: str
    needs_samples: bool
    needs_embeddings: bool

    def select(self, probs: np.ndarray, embeddings: np.ndarray | None, keys: Sequence[str]) -> Selection: ...

    def commit(self, probs: np.ndarray, embeddings: np.ndarray | None, keys: Sequence[str],
               selection: Selection) -> None: ...


class BudgetPolicy:
    """A core selector scores, a core budget manager decides: the streaming selector's pair.

    ``diversity``, when given, marks near-duplicates of recent picks (in the model's
    embedding space) as ineligible for the budget's uncertainty picks; call
    :meth:`model_changed` when the serving model changes, since each version embeds
    differently.
    """

    def __init__(self, selector: Selector, budget: BudgetManager, name: str | None = None, *,
                 diversity: DiversityFilter | None = None):
        self.selector = selector
        self.budget = budget
        self.diversity = diversity
        self.name = name or selector.name
        self.needs_samples = bool(getattr(selector, "needs_samples", False))
        self.needs_embeddings = diversity is not None
        self._last = None  # select's inputs and answer, so commit need not decide again

    def _decide(self, probs, embeddings, keys):
        scores = self.selector.score(probs)
        classes = None
        if getattr(self.budget, "quotas", None) is not None:
            mean = probs.mean(axis=2) if probs.ndim == 3 else probs
            classes = mean.argmax(axis=1)
        eligible = self.diversity.query(embeddings, scores) if self.diversity is not None else None
        return scores, self.budget.query(scores, list(keys), classes=classes, eligible=eligible)

    def select(self, probs, embeddings, keys) -> Selection:
        scores, decision = self._decide(probs, embeddings, keys)
        self._last = (probs, embeddings, scores, decision)
        return Selection(decision.selected, decision.probability, decision.reason)

    def commit(self, probs, embeddings, keys, selection: Selection) -> None:
        last = self._last
        if last is not None and last[0] is probs and last[1] is embeddings:
            scores, decision = last[2], last[3]
        else:  # scoring and query are pure: asking again gives the decision select saw
            scores, decision = self._decide(probs, embeddings, keys)
        self._last = None
        self.budget.update(scores, decision)
        if self.diversity is not None:
            self.diversity.update(embeddings, decision)

    def drift_detected(self) -> None:
        """A drift detector fired: a boosted budget (:class:`DriftBoost`) raises its spend."""
        if isinstance(self.budget, DriftBoost):
            self.budget.trigger()

    def model_changed(self) -> None:
        """A new model version serves: forget embeddings of the old one."""
        if self.diversity is not None:
            self.diversity.clear()


class LabelEverything:
    """Every item gets a label (probability 1): the upper bound, and the self-training arm."""

    name = "all"
    needs_samples = False
    needs_embeddings = False

    def select(self, probs, embeddings, keys) -> Selection:
        n = len(keys)
        return Selection(np.ones(n, dtype=bool), np.ones(n), ("all",) * n)

    def commit(self, probs, embeddings, keys, selection: Selection) -> None:
        """Nothing to remember."""


class LabelNothing:
    """No item gets a label: the seed model as it is."""

    name = "none"
    needs_samples = False
    needs_embeddings = False

    def select(self, probs, embeddings, keys) -> Selection:
        n = len(keys)
        return Selection(np.zeros(n, dtype=bool), np.zeros(n), ("",) * n)

    def commit(self, probs, embeddings, keys, selection: Selection) -> None:
        """Nothing to remember."""


def make_policy(strategy: str, *, budget: float, window: int = 1000, audit_share: float = 0.1,
                seed: int = 0, drift_factor: float = 1.0, drift_images: int = 0) -> SelectionPolicy:
    """Our policy for ``NAME[/OPTION...]``: ``all``, ``none`` or any selector name (random included).

    Options shape the budget as the streaming selector's settings do: ``quota:SHARE``
    (largest share of a window's target one predicted class may take), ``cap:N``
    (hard cap per window), ``diverse:RADIUS`` (skip near-duplicates of recent picks,
    cosine distance in the embedding space). With ``drift_factor > 1`` and
    ``drift_images > 0`` the budget is a :class:`DriftBoost`: after a drift detection
    it spends ``drift_factor`` times as much for ``drift_images`` images.

    >>> make_policy("margin/quota:0.2/diverse:0.05", budget=0.1).needs_embeddings
    True
    >>> make_policy("margin/colour:red", budget=0.1)
    Traceback (most recent call last):
    ...
    activestream.errors.ConfigError: unknown option 'colour:red' in strategy 'margin/colour:red'; use quota:SHARE, cap:N or diverse:RADIUS
    """
    name, *options = strategy.split("/")
    if name in ("all", "none"):
        if options:
            raise ConfigError(f"strategy {name!r} takes no options, got {strategy!r}")
        return LabelEverything() if name == "all" else LabelNothing()
    extra: dict = {}
    diversity = None
    for option in options:
        key, _, value = option.partition(":")
        try:
            if key == "quota":
                extra["quotas"] = float(value)
            elif key == "cap":
                extra["cap"] = int(value)
            elif key == "diverse":
                diversity = DiversityFilter(float(value))
            else:
                raise ConfigError(f"unknown option {option!r} in strategy {strategy!r}; "
                                  "use quota:SHARE, cap:N or diverse:RADIUS")
        except ValueError:
            raise ConfigError(f"option {option!r} in strategy {strategy!r} needs a number") from None
    kwargs = {"seed": seed} if name == "random" else {}
    manager = AdaptiveBudget(budget, window=window, audit_share=audit_share, seed=seed, **extra)
    if drift_factor > 1 and drift_images > 0:
        manager = DriftBoost(manager, factor=drift_factor, images=drift_images)
    return BudgetPolicy(make_selector(name, **kwargs), manager, strategy, diversity=diversity)
