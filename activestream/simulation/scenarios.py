"""Drift scenarios: a seed set, a stream of images and the test set that matches each position.

A scenario is built once, up front, from real datasets; the stream is a plain array so
a run replays exactly. ``phase[i]`` names the distribution item ``i`` comes from, and
``tests[phase]`` is the test set the serving model is measured on while that phase
streams (the truth of the stream and of the tests is read only by labelers and the
evaluator).

* ``iid``: the training split in random order.
* ``class-incremental``: the seed holds the first half of the classes; the rest
  appear in ``stages`` steps along the stream, each stage streaming its known classes in
  equal numbers. Tests cover the classes seen so far.
* ``rotate`` / ``contrast``: covariate shift halfway: images turn by 90 degrees, or
  lose most of their contrast, from the middle of the stream on (tests too).
* ``mnist-usps``: MNIST, then USPS (scaled to MNIST's 20 px digit box) from halfway.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from activestream.errors import ConfigError
from activestream.simulation.datasets import Dataset, load_dataset

SCENARIOS = ("iid", "class-incremental", "rotate", "contrast", "mnist-usps")


@dataclass(frozen=True)
class Scenario:
    """``seed_x`` ``uint8 [s, h, w]``, ``seed_y`` ``int [s]``; ``x`` ``[n, h, w]``, ``y`` ``[n]``,
    ``phase`` ``int [n]``; ``tests``: one ``(images, labels)`` per phase."""

    name: str
    dataset: Dataset
    seed_x: np.ndarray
    seed_y: np.ndarray
    x: np.ndarray
    y: np.ndarray
    phase: np.ndarray
    tests: tuple[tuple[np.ndarray, np.ndarray], ...]
    ids: tuple[str, ...]


def _take(order: np.ndarray, count: int, what: str) -> np.ndarray:
    """The first ``count`` indices of ``order``: every stream image is a different image."""
    if count > len(order):
        raise ConfigError(f"the stream needs {count} images of {what} but there are only {len(order)}; "
                          "use fewer --images")
    return order[:count]


def _test(ds: Dataset, size: int, rng: np.random.Generator, keep=None) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(len(ds.test_y)) if keep is None else np.flatnonzero(keep(ds.test_y))
    if size and size < len(idx):
        idx = np.sort(rng.choice(idx, size, replace=False))
    return ds.test_x[idx], ds.test_y[idx]


def low_contrast(x: np.ndarray) -> np.ndarray:
    return (96 + x.astype(np.float32) * 0.3).astype(np.uint8)


def rotate(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(x, 1, axes=(1, 2)))


def usps_as_mnist(x: np.ndarray) -> np.ndarray:
    """16x16 USPS digits resized to 20x20 and centred in 28x28, like MNIST's."""
    out = np.zeros((len(x), 28, 28), dtype=np.uint8)
    for i, image in enumerate(x):
        out[i, 4:24, 4:24] = np.asarray(Image.fromarray(image).resize((20, 20), Image.BILINEAR))
    return out


def build_scenario(name: str, *, dataset: str = "fashion-mnist", data_dir: str | None = None, images: int = 20000,
                   seed_size: int = 200, seed: int = 0, test_size: int = 0, stages: int = 5) -> Scenario:
    """Build scenario ``name`` (see :data:`SCENARIOS`); ``test_size`` 0 keeps every test image."""
    if name not in SCENARIOS:
        raise ConfigError(f"unknown scenario {name!r}; use one of {', '.join(SCENARIOS)}")
    rng = np.random.default_rng(seed)
    ds = load_dataset("mnist" if name == "mnist-usps" else dataset, data_dir)
    order = rng.permutation(len(ds.train_y))
    if name == "class-incremental":
        return _class_incremental(ds, order, images, seed_size, rng, test_size, stages)
    seed_idx, stream_idx = order[:seed_size], _take(order[seed_size:], images, f"{ds.name}'s training split")
    x, y = ds.train_x[stream_idx], ds.train_y[stream_idx]
    phase = (np.arange(images) >= images // 2).astype(np.int64) if name != "iid" else np.zeros(images, np.int64)
    test = _test(ds, test_size, rng)
    tests = (test,)
    if name in ("rotate", "contrast"):
        shift = rotate if name == "rotate" else low_contrast
        half = images // 2
        x = np.concatenate([x[:half], shift(x[half:])])
        tests = (test, (shift(test[0]), test[1]))
    elif name == "mnist-usps":
        usps = load_dataset("usps", data_dir)
        half = images // 2
        u = _take(rng.permutation(len(usps.train_y)), images - half, "USPS (the second half)")
        x = np.concatenate([x[:half], usps_as_mnist(usps.train_x[u])])
        y = np.concatenate([y[:half], usps.train_y[u]])
        ut = _test(usps, test_size, rng)
        tests = (test, (usps_as_mnist(ut[0]), ut[1]))
    ids = tuple(f"{name}-{seed}-{i}" for i in range(images))
    return Scenario(name, ds, ds.train_x[seed_idx], ds.train_y[seed_idx], x, y, phase, tests, ids)


def _class_incremental(ds, order, images, seed_size, rng, test_size, stages) -> Scenario:
    classes = len(ds.classes)
    first = classes // 2
    # new classes arrive in `stages` steps; stage k streams classes 0 .. known(k) - 1
    known = [first + round((classes - first) * k / max(1, stages - 1)) for k in range(stages)]
    seed_pool = order[ds.train_y[order] < first]
    seed_idx = seed_pool[:seed_size]
    rest = order[~np.isin(order, seed_idx)]
    phase = np.minimum(np.arange(images) * stages // images, stages - 1)
    picks, used = [], np.zeros(len(rest), dtype=bool)
    for k in range(stages):
        # each stage streams images not streamed before, as many of every known class (like
        # its test set), in random order
        count = int((phase == k).sum())
        shares = np.full(known[k], count // known[k]) + (np.arange(known[k]) < count % known[k])
        stage = []
        for c, n in enumerate(shares.tolist()):
            free = np.flatnonzero(~used & (ds.train_y[rest] == c))
            take = _take(free, n, f"class {c} left for stage {k + 1}")
            used[take] = True
            stage.append(take)
        picks.append(rest[rng.permutation(np.concatenate(stage))])
    idx = np.concatenate(picks)
    tests = tuple(_test(ds, test_size, rng, keep=lambda y, n=n: y < n) for n in known)
    ids = tuple(f"class-incremental-{i}" for i in range(images))
    return Scenario("class-incremental", ds, ds.train_x[seed_idx], ds.train_y[seed_idx],
                    ds.train_x[idx], ds.train_y[idx], phase.astype(np.int64), tests, ids)
