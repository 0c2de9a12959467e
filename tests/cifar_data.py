"""CIFAR-10 photos for the tests: real JPEGs read from the shared data folder, never copied
into the repository. A test that needs them skips, saying where they were looked for, when
the folder is absent."""

from __future__ import annotations

import os
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from activestream.config import default_data_dir

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def cifar_archive() -> Path:
    data = default_data_dir() or os.environ.get("ACTIVESTREAM_DATA_DIR")
    archive = Path(data or "../shared/data") / "cifar10" / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"CIFAR-10 JPEGs not found at {archive}: put the shared data folder at ../shared/data "
                    "beside the checkout or set ACTIVESTREAM_DATA_DIR")
    return archive


def cifar_jpegs(per_class: dict[str, int]) -> dict[str, list[tuple[str, str, bytes]]]:
    """The first ``per_class[split]`` JPEGs of each class of each split (``train``, ``test``),
    as ``(class name, file name, bytes)``, in one pass over the archive."""
    taken = {split: Counter() for split in per_class}
    found: dict[str, list] = {split: [] for split in per_class}
    with tarfile.open(cifar_archive(), "r|gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] not in per_class:
                continue
            split, name = parts[0], parts[1]
            if taken[split][name] >= per_class[split]:
                continue
            found[split].append((name, Path(parts[2]).name, tar.extractfile(member).read()))
            taken[split][name] += 1
            if all(len(taken[s]) == len(CIFAR_CLASSES) and min(taken[s].values()) >= n for s, n in per_class.items()):
                break
    return found
