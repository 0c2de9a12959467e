"""The seed model: a first version trained on a small labeled set, before any traffic."""

from __future__ import annotations

import numpy as np

from activestream.learners.classifier import Classifier, state_arrays
from activestream.learners.incremental import split_holdout
from activestream.learners.models import ModelSpec
from activestream.learners.preprocess import encode_png
from activestream.learners.training import TrainConfig, fit
from activestream.simulation.datasets import Dataset
from activestream.simulation.traffic import sample_id
from activestream.storage.blobs import BlobStore
from activestream.storage.registry import ModelRegistry, ModelVersion
from activestream.storage.store import Label, Sample, SampleStore


def spec_for(dataset: Dataset, arch: str = "small_cnn") -> ModelSpec:
    height, width = dataset.shape
    channels = dataset.channels
    return ModelSpec(arch, dataset.classes, channels, height, width, (0.5,) * channels, (0.5,) * channels)


def bootstrap_seed(dataset: Dataset, indices: np.ndarray, *, store: SampleStore, blobs: BlobStore,
                   registry: ModelRegistry, name: str, arch: str = "small_cnn", holdout: float = 0.2,
                   config: TrainConfig = TrainConfig(epochs=10), device: str = "cpu") -> ModelVersion:
    """Store the seed images and labels, train version 1 on them and register it as promoted.

    The seed labels are human labels (kind ``seed``); the same held-out split as the
    learner's keeps part of them for promotion decisions.
    """
    ids = [sample_id(dataset, "train", int(i)) for i in indices]
    images, labels = dataset.train_x[indices], dataset.train_y[indices]
    for sid, image in zip(ids, images):
        blobs.put(sid, encode_png(image))
    store.add_samples(Sample(id=sid, blob_key=sid, source="seed", reason="seed") for sid in ids)
    store.add_labels(Label(sample_id=sid, label=int(y), labeler="seed", kind="seed") for sid, y in zip(ids, labels))
    train, _ = split_holdout(ids, holdout)
    model = fit(Classifier.fresh(spec_for(dataset, arch), device), images[train], labels[train], config)
    metrics = {"train_size": float(train.sum()), "test_accuracy": model.accuracy(dataset.test_x, dataset.test_y)}
    return registry.register(name, state_arrays(model.model), spec=model.spec.to_dict(), parent=None,
                             train_size=len(ids), metrics=metrics, status="promoted", by="seed",
                             reason=f"trained on {len(ids)} labeled images of the demo dataset")
