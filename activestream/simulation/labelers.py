"""Simulated labelers, one interface: ``answer(truth, probs, votes) -> Answers``.

Inputs, for one batch of requested items: ``truth`` int ``[batch]`` (the dataset's
class, which only human-like labelers read), ``probs`` float ``[batch, classes]`` (the
serving model's output when the item was requested) and ``votes`` int
``[batch, members]`` (each committee member's class) or ``None``. Output: labels
int ``[batch]`` and ``given`` bool ``[batch]`` (a labeler may abstain). ``kind`` says
where the labels go: ``"human"`` labels (oracle, noisy) or ``"pseudo"`` labels (self,
committee), which the simulator keeps apart, each with the model version that made it.
``delay`` is how many stream items pass between a request and its answer.

>>> truth, probs = np.array([0, 1]), np.array([[0.2, 0.8], [0.1, 0.9]])
>>> Oracle().answer(truth, probs, None).labels.tolist()
[0, 1]
>>> SelfLabeler().answer(truth, probs, None).labels.tolist()
[1, 1]
>>> make_labeler("noisy:0.2", classes=10).error_rate
0.2
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from activestream.errors import ConfigError


@dataclass(frozen=True)
class Answers:
    labels: np.ndarray  # int64 [batch]
    given: np.ndarray   # bool [batch]


def _all(labels: np.ndarray) -> Answers:
    labels = np.asarray(labels, dtype=np.int64)
    return Answers(labels, np.ones(len(labels), dtype=bool))


@dataclass(frozen=True)
class Oracle:
    """The truth, always."""

    delay: int = 0
    kind = "human"
    needs_votes = False

    def answer(self, truth, probs, votes) -> Answers:
        return _all(truth)


@dataclass(frozen=True)
class Noisy:
    """A person who errs: with probability ``error_rate`` the label is wrong.

    A wrong label is drawn from ``confusion[truth]`` (rows: true class, columns: the
    class given; the diagonal is ignored) or uniformly from the other classes. Draws
    are seeded per call count, so a run replays exactly.
    """

    error_rate: float
    classes: int
    confusion: tuple[tuple[float, ...], ...] | None = None
    seed: int = 0
    delay: int = 0
    kind = "human"
    needs_votes = False

    def __post_init__(self):
        if not 0 <= self.error_rate <= 1:
            raise ConfigError(f"noisy labeler error rate must be in [0, 1], got {self.error_rate}")

    def answer(self, truth, probs, votes) -> Answers:
        truth = np.asarray(truth, dtype=np.int64)
        digest = hashlib.blake2b(truth.tobytes() + np.asarray(probs).tobytes(), digest_size=8).digest()
        rng = np.random.default_rng([self.seed, int.from_bytes(digest, "little")])
        wrong = rng.random(len(truth)) < self.error_rate
        weights = np.ones((self.classes, self.classes)) if self.confusion is None else np.array(self.confusion, float)
        np.fill_diagonal(weights, 0.0)
        weights /= weights.sum(axis=1, keepdims=True)
        labels = truth.copy()
        for i in np.flatnonzero(wrong):
            labels[i] = rng.choice(self.classes, p=weights[truth[i]])
        return _all(labels)


@dataclass(frozen=True)
class SelfLabeler:
    """The serving model's own prediction becomes the label (pseudo-labeling).

    With ``min_confidence`` it abstains below that top-class probability: "only its
    confident predictions". It never reads the truth.
    """

    min_confidence: float = 0.0
    delay: int = 0
    kind = "pseudo"
    needs_votes = False

    def answer(self, truth, probs, votes) -> Answers:
        p = np.asarray(probs)
        return Answers(p.argmax(axis=1).astype(np.int64), p.max(axis=1) >= self.min_confidence)


@dataclass(frozen=True)
class Committee:
    """An ensemble's majority vote, given only where at least ``agreement`` of members agree.

    ``agreement=1.0`` (the default) means unanimity. It never reads the truth.

    >>> votes = np.array([[2, 2, 2], [1, 0, 1]])
    >>> a = Committee().answer(np.zeros(2), np.zeros((2, 3)), votes)
    >>> a.labels.tolist(), a.given.tolist()
    ([2, 1], [True, False])
    """

    agreement: float = 1.0
    delay: int = 0
    kind = "pseudo"
    needs_votes = True

    def answer(self, truth, probs, votes) -> Answers:
        v = np.asarray(votes, dtype=np.int64)
        classes = max(int(v.max(initial=0)) + 1, np.asarray(probs).shape[-1])
        counts = np.stack([(v == c).sum(axis=1) for c in range(classes)], axis=1)  # [batch, classes]
        share = counts.max(axis=1) / v.shape[1]
        return Answers(counts.argmax(axis=1).astype(np.int64), share >= self.agreement - 1e-9)


def make_labeler(spec: str, *, classes: int, delay: int = 0, seed: int = 0):
    """A labeler from ``oracle``, ``noisy:RATE``, ``self``, ``confident:MIN_P`` or ``committee[:SHARE]``."""
    name, _, arg = spec.partition(":")
    try:
        if name == "oracle":
            return Oracle(delay)
        if name == "noisy":
            return Noisy(float(arg or 0.1), classes, None, seed, delay)
        if name == "self":
            return SelfLabeler(0.0, delay)
        if name == "confident":
            return SelfLabeler(float(arg or 0.95), delay)
        if name == "committee":
            return Committee(float(arg or 1.0), delay)
    except ValueError as e:
        raise ConfigError(f"bad labeler {spec!r}: {e}") from e
    raise ConfigError(f"unknown labeler {spec!r}; use oracle, noisy:RATE, self, confident:MIN_P or committee[:SHARE]")
