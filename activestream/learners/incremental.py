"""One round of incremental learning: fine-tune the serving model, compare, decide.

Pure with respect to I/O: the caller loads images and labels (from the store in the
streaming learner, from memory in the simulator) and registers the result, so both
run exactly this code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from activestream.learners.classifier import Classifier
from activestream.learners.training import TrainConfig, fit


def is_holdout(sample_id: str, share: float) -> bool:
    """Whether a labeled sample is held out for promotion decisions (stable per id).

    >>> is_holdout("img-1", 0.0), is_holdout("img-1", 1.0)
    (False, True)
    """
    digest = hashlib.blake2b(sample_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def split_holdout(ids: list[str], share: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (train, holdout) over ``ids``."""
    held = np.fromiter((is_holdout(i, share) for i in ids), dtype=bool, count=len(ids))
    return ~held, held


@dataclass(frozen=True)
class RoundResult:
    model: Classifier
    metrics: dict[str, float]
    promote: bool


def retrain(serving: Classifier, ids: list[str], images: np.ndarray, labels: np.ndarray, *,
            config: TrainConfig, holdout: float = 0.2, tolerance: float = 0.01,
            eval_sets: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
            trusted: np.ndarray | None = None) -> RoundResult:
    """Fine-tune ``serving`` on the labeled set and decide whether the result may serve.

    The candidate is promoted unless its accuracy on held-out human labels is more
    than ``tolerance`` below the serving version's on the same labels.
    ``eval_sets`` (name -> images, labels) are only measured, never trained on.
    ``trusted`` (bool ``[n]``, default all) marks human labels: only those may be held
    out, so pseudo-labels are trained on but never judge a version.
    """
    train, held = split_holdout(ids, holdout)
    if trusted is not None:
        held &= np.asarray(trusted, dtype=bool)
        train = ~held
    candidate = fit(serving, images[train], labels[train], config)
    metrics = {"train_size": float(train.sum()), "holdout_size": float(held.sum())}
    promote = True
    if held.any():
        new_acc = candidate.accuracy(images[held], labels[held])
        old_acc = serving.accuracy(images[held], labels[held])
        metrics.update(holdout_accuracy=new_acc, parent_holdout_accuracy=old_acc)
        promote = new_acc >= old_acc - tolerance
    for name, (x, y) in (eval_sets or {}).items():
        metrics[f"{name}_accuracy"] = candidate.accuracy(x, y)
    return RoundResult(candidate, metrics, promote)


@dataclass(frozen=True)
class LearnerPolicy:
    """When a round is due and how it trains: the learner worker's and the simulator's rules.

    >>> LearnerPolicy(retrain_every=100).due(labeled=350, trained_on=250)
    True

    After a drift detection a round is due sooner, once ``early_every`` new labels are in
    (0: no early rounds):

    >>> policy = LearnerPolicy(retrain_every=100, early_every=30)
    >>> policy.due(labeled=290, trained_on=250), policy.due(labeled=290, trained_on=250, drift=True)
    (False, True)
    """

    retrain_every: int = 150
    holdout: float = 0.2
    tolerance: float = 0.01
    train: TrainConfig = TrainConfig()
    early_every: int = 0

    def due(self, labeled: int, trained_on: int, drift: bool = False) -> bool:
        """Whether ``labeled`` labels now, against ``trained_on`` at the serving version, call for a round
        (``drift``: a detection since the last round asks for an early one)."""
        need = min(self.early_every, self.retrain_every) if drift and self.early_every > 0 else self.retrain_every
        return labeled - trained_on >= need

    def run(self, serving: Classifier, ids: list[str], images: np.ndarray, labels: np.ndarray,
            eval_sets: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
            trusted: np.ndarray | None = None) -> RoundResult:
        return retrain(serving, ids, images, labels, config=self.train, holdout=self.holdout,
                       tolerance=self.tolerance, eval_sets=eval_sets, trusted=trusted)
