"""Supervised training and incremental fine-tuning on labeled images."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from activestream.learners.classifier import Classifier
from activestream.learners.preprocess import to_tensor


@dataclass(frozen=True)
class TrainConfig:
    """How to train: ``epochs`` full passes (more when that gives fewer than ``min_steps``
    optimiser steps, so small labeled sets are not under-trained), Adam at
    ``learning_rate``, light shift augmentation; never more than ``max_steps`` steps when set."""

    epochs: int = 4
    min_steps: int = 150
    learning_rate: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    augment: bool = True
    seed: int = 0
    max_steps: int | None = None  # a cap on optimiser steps per call, so big label sets train in bounded time
    cosine: bool = False  # decay the rate to 0 over the call: less jitter from one version to the next


def fit(clf: Classifier, images: np.ndarray, labels: np.ndarray, config: TrainConfig = TrainConfig()) -> Classifier:
    """Train a copy of ``clf`` on ``images`` (``uint8 [n, h, w(, c)]``) and ``labels`` (``int [n]``).

    The input classifier is left untouched, so the serving model never changes under a
    predictor; the result has ``version=None`` until it is registered.

    >>> from activestream.learners.models import ModelSpec
    >>> spec = ModelSpec("small_cnn", ("dark", "light"), 1, 8, 8)
    >>> x = np.concatenate([np.zeros((20, 8, 8)), np.full((20, 8, 8), 255)]).astype(np.uint8)
    >>> y = np.array([0] * 20 + [1] * 20)
    >>> trained = fit(Classifier.fresh(spec), x, y, TrainConfig(epochs=30, learning_rate=1e-2))
    >>> trained.accuracy(x, y)
    1.0
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = copy.deepcopy(clf.model).to(clf.device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    x_all = to_tensor(images, clf.spec)
    y_all = torch.as_tensor(labels, dtype=torch.long)
    loss_fn = nn.CrossEntropyLoss()
    steps_per_epoch = max(1, len(x_all) // config.batch_size)
    steps = 0
    epochs = max(config.epochs, -(-config.min_steps // steps_per_epoch))
    total = epochs * -(-len(x_all) // config.batch_size)
    total = min(total, config.max_steps) if config.max_steps is not None else total
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(1, total)) if config.cosine else None
    for _ in range(epochs):
        order = torch.randperm(len(x_all), generator=generator)
        for start in range(0, len(order), config.batch_size):
            if config.max_steps is not None and steps >= config.max_steps:
                break
            steps += 1
            idx = order[start:start + config.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm cannot train on a single item
            x = x_all[idx]
            if config.augment:
                x = random_shift(x, generator)
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model(x.to(clf.device)), y_all[idx].to(clf.device))
            loss.backward()
            optimiser.step()
            if schedule is not None:
                schedule.step()
    return Classifier(model.eval(), clf.spec, None, clf.device).to_device()


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Shift the whole batch by up to ``max_shift`` pixels (padding with the border value)."""
    dx, dy = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=generator))
    padded = nn.functional.pad(x, (max_shift,) * 4, mode="replicate")
    h, w = x.shape[-2:]
    return padded[..., max_shift + dy:max_shift + dy + h, max_shift + dx:max_shift + dx + w]
