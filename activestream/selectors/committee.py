"""Disagreement selectors over several predictions per item.

Input ``[batch, classes, samples]``: ``samples`` MC-dropout passes (or
committee members) per item, each ``[:, :, s]`` a distribution over classes.
Output float64 ``[batch]`` in ``[0, 1]``, higher = more worth a label, the
same ``score`` verb as the single-model selectors. Entropies are divided by
``log(classes)`` so that scores are comparable across label sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from activestream.selectors.base import normalised_entropy, validate_samples


@dataclass(frozen=True)
class BALD:
    """Mutual information between prediction and model: ``H(mean p) - mean H(p)``.

    High when the passes are each confident but disagree (epistemic
    uncertainty); 0 when every pass gives the same distribution, however
    flat. Divided by ``log(classes)``.

    >>> agree = np.stack([np.array([[0.5, 0.5]])] * 4, axis=-1)
    >>> disagree = np.stack([np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])], axis=-1)
    >>> BALD().score(agree).tolist(), BALD().score(disagree).tolist()
    ([0.0], [1.0])
    """

    name: ClassVar[str] = "bald"
    needs_samples: ClassVar[bool] = True

    def score(self, probs: np.ndarray) -> np.ndarray:
        p = validate_samples(probs)
        total = normalised_entropy(p.mean(axis=2), axis=1)
        expected = normalised_entropy(p, axis=1).mean(axis=1)
        return np.clip(total - expected, 0.0, 1.0) + 0.0


@dataclass(frozen=True)
class VoteEntropy:
    """Entropy of the members' hard votes (argmax per sample), / ``log(classes)``.

    Ties inside one member's distribution go to the lowest class index.

    >>> votes = np.stack([np.array([[0.9, 0.1]]), np.array([[0.2, 0.8]])], axis=-1)
    >>> VoteEntropy().score(votes).tolist()
    [1.0]
    """

    name: ClassVar[str] = "vote_entropy"
    needs_samples: ClassVar[bool] = True

    def score(self, probs: np.ndarray) -> np.ndarray:
        p = validate_samples(probs)
        votes = p.argmax(axis=1)                                     # [batch, samples]
        classes = np.arange(p.shape[1])[None, :, None]               # [1, classes, 1]
        share = (votes[:, None, :] == classes).mean(axis=2)          # [batch, classes]
        return normalised_entropy(share, axis=1)


@dataclass(frozen=True)
class ConsensusEntropy:
    """Entropy of the mean distribution over samples, / ``log(classes)``.

    >>> p = np.stack([np.array([[0.9, 0.1]]), np.array([[0.1, 0.9]])], axis=-1)
    >>> ConsensusEntropy().score(p).round(6).tolist()
    [1.0]
    """

    name: ClassVar[str] = "consensus_entropy"
    needs_samples: ClassVar[bool] = True

    def score(self, probs: np.ndarray) -> np.ndarray:
        return normalised_entropy(validate_samples(probs).mean(axis=2), axis=1)
