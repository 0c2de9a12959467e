"""Simulated production traffic: a real dataset as a stream of encoded images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from activestream.learners.preprocess import encode_png
from activestream.simulation.datasets import Dataset


def sample_id(dataset: Dataset, split: str, index: int) -> str:
    return f"{dataset.name}-{split}-{index}"


@dataclass(frozen=True)
class StreamItem:
    """One image to send: its encoded bytes (PNG in the demo; any PNG, JPEG or WebP) or,
    instead, a ``uri`` the predictor fetches; ``truth`` only where it is known (simulation)."""

    id: str
    png: bytes | None
    truth: int | None
    uri: str | None = None


def split_seed(dataset: Dataset, seed_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training split: ``seed_size`` for the seed model, the rest for the stream."""
    order = np.random.default_rng(seed).permutation(len(dataset.train_y))
    return order[:seed_size], order[seed_size:]


def stream_items(dataset: Dataset, indices: np.ndarray, count: int) -> Iterator[StreamItem]:
    """``count`` images from ``indices`` in order, cycling if the split is shorter."""
    for n in range(count):
        i = int(indices[n % len(indices)])
        suffix = "" if n < len(indices) else f"-r{n // len(indices)}"
        yield StreamItem(sample_id(dataset, "train", i) + suffix, encode_png(dataset.train_x[i]), int(dataset.train_y[i]))
