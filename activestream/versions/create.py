"""New versions from the user's files: an imported model, or a seed trained from a folder.

Both go through the same decoder and preprocessing as serving (``decode_image``,
``Classifier``), so a version is trained and checked on exactly what predictors feed it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from activestream.errors import ConfigError, InvalidInput
from activestream.learners.classifier import Classifier, state_arrays
from activestream.learners.incremental import split_holdout
from activestream.learners.models import ModelSpec, pretrained_state
from activestream.learners.preprocess import MAX_PIXELS, decode_image
from activestream.learners.training import TrainConfig, fit
from activestream.learners.weights import import_classifier, load_backbone
from activestream.storage.blobs import BlobStore
from activestream.storage.decisions import in_force
from activestream.storage.registry import ModelRegistry, ModelVersion
from activestream.storage.store import Label, Sample, SampleStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """Who registers a version and why, and whether it goes into force at once."""

    by: str
    reason: str
    promote: bool = False


def first_status(registry: ModelRegistry, name: str, decision: Decision) -> str:
    """``promoted`` when asked, or when nothing is in force yet (the first version of a
    model serves at once); otherwise ``candidate``, to be promoted by a person."""
    return "promoted" if decision.promote or in_force(registry, name) is None else "candidate"


def import_version(registry: ModelRegistry, name: str, spec: ModelSpec, weights: str | Path,
                   decision: Decision) -> ModelVersion:
    """Register the user's weights for ``spec`` after checking they build its network."""
    clf = import_classifier(spec, weights)
    return registry.register(name, state_arrays(clf.model), spec=spec.to_dict(), parent=None, train_size=0,
                             metrics={}, status=first_status(registry, name, decision), by=decision.by,
                             reason=decision.reason or f"imported from {Path(weights).name}")


@dataclass(frozen=True)
class Folder:
    """Labeled images read as torchvision's ``ImageFolder`` reads them: one sub-folder per
    class, classes in sorted order."""

    classes: tuple[str, ...]
    paths: list[str]
    labels: np.ndarray  # int64 [n]

    @classmethod
    def read(cls, root: str | Path) -> "Folder":
        from torchvision.datasets import ImageFolder

        try:
            found = ImageFolder(str(root), loader=str)  # only the layout: files are read by the caller
        except (FileNotFoundError, OSError) as e:
            raise ConfigError(f"cannot read labeled images from {root}: {e}; lay them out as "
                              "ROOT/<class name>/<image>.jpg, one sub-folder per class") from e
        if len(found.classes) < 2:
            raise ConfigError(f"{root} has {len(found.classes)} class folder(s); a classifier needs at least 2")
        return cls(tuple(found.classes), [p for p, _ in found.samples],
                   np.asarray([y for _, y in found.samples], dtype=np.int64))


def sample_id(data: bytes) -> str:
    """Content-addressed: seeding the same folder twice stores each image once."""
    return f"seed-{hashlib.sha256(data).hexdigest()[:32]}"


def decode_folder(folder: Folder, spec: ModelSpec,
                  max_pixels: int = MAX_PIXELS) -> tuple[list[str], list[bytes], np.ndarray, np.ndarray, int]:
    """Ids, bytes, decoded images and labels of the images that decode for ``spec``, and
    how many did not (skipped with a warning, as the learner skips them)."""
    ids, blobs, images, labels, skipped = [], [], [], [], 0
    for path, label in zip(folder.paths, folder.labels):
        data = Path(path).read_bytes()
        try:
            images.append(decode_image(data, spec, max_pixels))
        except InvalidInput as e:
            log.warning("skipping %s: %s", path, e)
            skipped += 1
            continue
        ids.append(sample_id(data))
        blobs.append(data)
        labels.append(int(label))
    if not ids:
        raise ConfigError(f"none of the {len(folder.paths)} images decode for the model's input "
                          f"({spec.width}x{spec.height}, {spec.channels} channel(s)); see the warnings above")
    return ids, blobs, np.stack(images), np.asarray(labels, dtype=np.int64), skipped


def starting_point(spec: ModelSpec, backbone: str | None, device: str) -> Classifier:
    """A fresh network for ``spec``, with a backbone's weights when given."""
    clf = Classifier.fresh(spec, device)
    if backbone:
        copied, fresh = load_backbone(clf.model, pretrained_state(spec.arch, backbone), backbone)
        log.info("backbone %s: %d tensors copied, %d left fresh (%s)", backbone, copied, len(fresh),
                 ", ".join(fresh[:4]))
        clf.to_device()
    return clf


def seed_version(root: str | Path, spec: ModelSpec, *, registry: ModelRegistry, name: str, store: SampleStore,
                 blobs: BlobStore, decision: Decision, backbone: str | None = None, holdout: float = 0.2,
                 config: TrainConfig = TrainConfig(epochs=10), device: str = "cpu",
                 max_pixels: int = MAX_PIXELS) -> ModelVersion:
    """Train a first version on the labeled folder ``root`` and register it.

    The images and their labels are stored (kind ``seed``), so later fine-tuning rounds
    train on them too and the same stable held-out share judges every version.
    """
    if backbone is None and spec.arch not in ("small_cnn", "lenet"):
        log.info("no --backbone: %s starts from random weights", spec.arch)
    ids, data, images, labels, skipped = decode_folder(Folder.read(root), spec, max_pixels)
    for sid, raw in zip(ids, data):
        blobs.put(sid, raw)
    store.add_samples(Sample(id=sid, blob_key=sid, source="seed", reason="seed") for sid in ids)
    store.add_labels(Label(sample_id=sid, label=int(y), labeler="seed", kind="seed") for sid, y in zip(ids, labels))
    train, held = split_holdout(ids, holdout)
    model = fit(starting_point(spec, backbone, device), images[train], labels[train], config)
    metrics = {"train_size": float(train.sum()), "holdout_size": float(held.sum()), 
               # not "skipped_samples": those are stored; these files never reached the store
               "unreadable_files": float(skipped)}
    if held.any():
        metrics["holdout_accuracy"] = model.accuracy(images[held], labels[held])
    return registry.register(name, state_arrays(model.model), spec=spec.to_dict(), parent=None, train_size=len(ids),
                             metrics=metrics, status=first_status(registry, name, decision), by=decision.by,
                             reason=decision.reason or f"seeded from {len(ids)} labeled images in {Path(root).name}")

