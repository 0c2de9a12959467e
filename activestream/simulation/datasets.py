"""Real image datasets for simulations, demos and tests, read from local files only.

Fashion-MNIST and MNIST come as the canonical gzip'd IDX files, USPS as an ``.npz``;
scikit-learn's bundled 8x8 digits need no data folder at all, so a demo works offline
anywhere.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from activestream.errors import ConfigError

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DIGIT_CLASSES = tuple(str(i) for i in range(10))
DATASETS = ("fashion-mnist", "mnist", "usps", "digits")
_FIX_DIR = "point --data-dir (ACTIVESTREAM_DATA_DIR) at the folder holding the datasets"


@dataclass(frozen=True)
class Dataset:
    """Images as ``uint8 [n, h, w]`` (grey) or ``[n, h, w, 3]``, labels as ``int64 [n]``."""

    name: str
    classes: tuple[str, ...]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    @property
    def channels(self) -> int:
        return 1 if self.train_x.ndim == 3 else self.train_x.shape[3]

    @property
    def shape(self) -> tuple[int, int]:
        return self.train_x.shape[1], self.train_x.shape[2]


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzip'd) IDX file of unsigned bytes into an array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ConfigError(f"{path} is not an IDX file of unsigned bytes")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _idx_dataset(name: str, folder: Path, classes: tuple[str, ...]) -> Dataset:
    def part(prefix: str, kind: str) -> np.ndarray:
        stem = f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.exists():
                return read_idx(candidate)
        raise ConfigError(f"{name}: {folder / stem}.gz not found; {_FIX_DIR}")

    return Dataset(
        name, classes,
        part("train", "images"), part("train", "labels").astype(np.int64),
        part("t10k", "images"), part("t10k", "labels").astype(np.int64),
    )


def _usps(folder: Path) -> Dataset:
    path = folder / "usps.npz"
    if not path.exists():
        raise ConfigError(f"usps: {path} not found; {_FIX_DIR}")
    with np.load(path) as z:
        def to_u8(x: np.ndarray) -> np.ndarray:
            return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)

        return Dataset("usps", DIGIT_CLASSES, to_u8(z["x_train"]), z["y_train"].astype(np.int64),
                       to_u8(z["x_test"]), z["y_test"].astype(np.int64))


def _digits(seed: int = 0) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(images))
    split = int(len(order) * 0.75)
    train, test = order[:split], order[split:]
    return Dataset("digits", DIGIT_CLASSES, images[train], bunch.target[train].astype(np.int64),
                   images[test], bunch.target[test].astype(np.int64))


def resolve_name(name: str, data_dir: str | None) -> str:
    """``auto`` means Fashion-MNIST when a data folder is set, the bundled digits when none is.

    A data folder that is set but lacks Fashion-MNIST is an error, not a quiet switch to
    digits: whoever names a folder expects its data to be used.
    """
    if name != "auto":
        return name
    if not data_dir:
        return "digits"
    if not (Path(data_dir) / "fashion-mnist").is_dir():
        raise ConfigError("--dataset auto reads Fashion-MNIST from the data folder (--data-dir, "
                          f"ACTIVESTREAM_DATA_DIR), but {Path(data_dir) / 'fashion-mnist'} is missing; put it there, point --data-dir "
                          "elsewhere, or choose --dataset (digits needs no folder)")
    return "fashion-mnist"


def check_dataset(name: str, data_dir: str | None) -> str:
    """The dataset ``name`` resolves to, once its files are known to be there (nothing is read).

    >>> check_dataset("auto", None)
    'digits'
    """
    if name != "digits" and data_dir and not Path(data_dir).is_dir():  # digits need no folder
        raise ConfigError(f"--data-dir {data_dir} is not a folder; {_FIX_DIR}")
    resolved = resolve_name(name, data_dir)
    if resolved == "digits":
        return resolved
    if resolved not in DATASETS:
        raise ConfigError(f"unknown --dataset {name!r}; choose one of {', '.join(DATASETS)} or auto")
    if not data_dir:
        raise ConfigError(f"--dataset {resolved} needs a data folder: give --data-dir (ACTIVESTREAM_DATA_DIR), "
                          "or use the bundled --dataset digits")
    for path in _files(resolved, Path(data_dir)):
        if not (path.is_file() or path.with_name(f"{path.name}.gz").is_file()):
            raise ConfigError(f"{resolved}: {path.name} not found in {path.parent}; {_FIX_DIR}")
    return resolved


def _files(name: str, data_dir: Path) -> list[Path]:
    """The files dataset ``name`` is read from (each may also be gzip'd, ending in .gz)."""
    if name == "usps":
        return [data_dir / "usps" / "usps.npz"]
    return [data_dir / name / f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
            for split in ("train", "t10k") for kind in ("images", "labels")]


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
    """Load a dataset by name.

    >>> ds = load_dataset("digits")
    >>> ds.train_x.shape[1:], ds.train_x.dtype, len(ds.classes)
    ((8, 8), dtype('uint8'), 10)
    """
    name = check_dataset(name, data_dir)
    if name == "digits":
        return _digits()
    folder = Path(data_dir) / ("usps" if name == "usps" else name)
    if name == "usps":
        return _usps(folder)
    classes = FASHION_CLASSES if name == "fashion-mnist" else DIGIT_CLASSES
    return _idx_dataset(name, folder, classes)
