"""Single-model uncertainty selectors: ``[batch, classes]`` -> float64 ``[batch]``.

Every score lies in ``[0, 1]`` and higher means more worth a human label.
Each selector is a frozen dataclass: its constructor arguments are its whole
configuration, and ``score`` is a pure function of its input.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from activestream.errors import InvalidInput
from activestream.selectors.base import normalised_entropy, validate_probs


@dataclass(frozen=True)
class LeastConfidence:
    """``1 - max_c p[c]``: how little the model believes its own top guess.

    Lies in ``[0, 1 - 1/classes]``.

    >>> LeastConfidence().score(np.array([[0.9, 0.1], [0.5, 0.5]])).round(3).tolist()
    [0.1, 0.5]
    """

    name: ClassVar[str] = "least_confidence"
    needs_samples: ClassVar[bool] = False

    def score(self, probs: np.ndarray) -> np.ndarray:
        p = validate_probs(probs)
        return np.clip(1.0 - p.max(axis=1), 0.0, 1.0)


@dataclass(frozen=True)
class Margin:
    """``1 - (p_top1 - p_top2)``: a small gap between the two best classes.

    >>> Margin().score(np.array([[0.8, 0.1, 0.1], [0.45, 0.45, 0.1]])).round(3).tolist()
    [0.3, 1.0]
    """

    name: ClassVar[str] = "margin"
    needs_samples: ClassVar[bool] = False

    def score(self, probs: np.ndarray) -> np.ndarray:
        p = validate_probs(probs)
        top2 = np.partition(p, -2, axis=1)[:, -2:]
        return np.clip(1.0 - (top2[:, 1] - top2[:, 0]), 0.0, 1.0)


@dataclass(frozen=True)
class Entropy:
    """Shannon entropy of ``p`` divided by ``log(classes)``: 0 one-hot, 1 uniform.

    >>> Entropy().score(np.array([[1.0, 0.0, 0.0], [1/3, 1/3, 1/3]])).round(3).tolist()
    [0.0, 1.0]
    """

    name: ClassVar[str] = "entropy"
    needs_samples: ClassVar[bool] = False

    def score(self, probs: np.ndarray) -> np.ndarray:
        return normalised_entropy(validate_probs(probs), axis=1)


@dataclass(frozen=True)
class RandomScore:
    """Uniform scores in ``[0, 1)`` that carry no information: the baseline.

    ``score`` stays a pure query: the draws are seeded by ``seed`` and a
    hash of the validated batch, so the same batch always gets the same
    scores, while items within a batch (and different batches) get
    independent uniform draws. The values are unrelated to how uncertain
    the model is.

    >>> s = RandomScore(seed=0)
    >>> probs = np.full((3, 2), 0.5)
    >>> bool((s.score(probs) == s.score(probs)).all())
    True
    >>> bool(((0 <= s.score(probs)) & (s.score(probs) < 1)).all())
    True
    """

    seed: int = 0
    name: ClassVar[str] = "random"
    needs_samples: ClassVar[bool] = False

    def __post_init__(self):
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise InvalidInput("bad_config", f"RandomScore seed must be an int, got "
                               f"{self.seed!r}; pass e.g. seed=0")

    def score(self, probs: np.ndarray) -> np.ndarray:
        p = validate_probs(probs)
        salt = hashlib.blake2b(repr(int(self.seed)).encode(), digest_size=32).digest()
        h = hashlib.blake2b(repr(p.shape).encode(), digest_size=16, key=salt)
        h.update(p.tobytes())
        rng = np.random.default_rng(int.from_bytes(h.digest(), "little"))
        return rng.random(p.shape[0])
