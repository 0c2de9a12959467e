"""The hot swap keeps serving the version in force whatever a new version does wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from activestream.errors import IntegrityError
from activestream.learners.classifier import Classifier, state_arrays
from activestream.learners.models import ModelSpec
from activestream.storage.registry import ModelRegistry
from activestream.streams.serving import ServingModel, load_classifier
from tests.conftest import run_async

DIGITS = ModelSpec("small_cnn", tuple("0123456789"), 1, 8, 8)
NINE = ModelSpec("small_cnn", tuple("012345678"), 1, 8, 8)
LENET = ModelSpec("lenet", tuple("0123456789"), 1, 8, 8)
KEY = b"k" * 32


def register(reg: ModelRegistry, spec: ModelSpec = DIGITS, status: str = "promoted", weights_of: ModelSpec = DIGITS,
             seed: int = 0) -> int:
    """Register fresh weights of ``weights_of``'s network, described as ``spec``."""
    arrays = state_arrays(Classifier.fresh(weights_of, seed=seed).model)
    return reg.register("clf", arrays, spec=spec.to_dict(), parent=None, train_size=0, metrics={}, status=status).version


def failures(kind: str) -> float:
    return REGISTRY.get_sample_value("activestream_model_load_failures_total", {"model": "clf", "kind": kind}) or 0.0


@pytest.fixture
def reg(tmp_path):
    return ModelRegistry(tmp_path / "models", key=KEY)


@pytest.fixture
def serving(reg):
    """A serving model on v1, a good promoted version."""
    register(reg)
    model = ServingModel(reg, "clf")
    run_async(model.refresh())
    assert model.current.version == 1 and model.ready.is_set()
    return model


def meta_file(reg: ModelRegistry, version: int) -> Path:
    return Path(reg.root) / "clf" / f"{version:06d}" / "metadata.json"


def refresh_keeps_v1(serving: ServingModel, kind: str = "integrity") -> None:
    before = failures(kind)
    run_async(serving.refresh(announced=2))  # must not raise
    assert serving.current.version == 1
    assert serving.current.predict_proba(np.zeros((2, 8, 8), np.uint8)).shape == (2, 10)
    assert failures(kind) == before + 1


@pytest.mark.parametrize("spec, words", [(NINE, "9 classes.*has 10"), (LENET, "not a lenet network")])
def test_weights_that_do_not_fit_their_spec_are_refused_clearly(reg, spec, words):
    register(reg, spec=spec)
    with pytest.raises(IntegrityError, match=f"clf v1.*{words}.*re-register"):
        load_classifier(reg, "clf", 1)


@pytest.mark.parametrize("spec", [NINE, LENET], ids=["nine_classes", "other_architecture"])
def test_keeps_serving_when_the_new_version_does_not_fit_its_spec(serving, reg, spec):
    register(reg, spec=spec)
    refresh_keeps_v1(serving)


def test_keeps_serving_when_the_new_versions_metadata_is_corrupt(serving, reg):
    register(reg)
    meta_file(reg, 2).write_text("{not json")
    run_async(serving.refresh(announced=2))
    assert serving.current.version == 1


def test_a_rejected_version_promoted_by_editing_its_file_is_not_served(serving, reg):
    register(reg, status="rejected")
    data = json.loads(meta_file(reg, 2).read_text())
    meta_file(reg, 2).write_text(json.dumps({**data, "status": "promoted"}))
    run_async(serving.refresh(announced=2))
    assert serving.current.version == 1


def test_keeps_serving_when_the_registry_cannot_be_read(serving, monkeypatch):
    def unreadable(*args, **kw):
        raise PermissionError("models folder not readable")

    monkeypatch.setattr(serving.registry, "versions", unreadable)
    refresh_keeps_v1(serving, kind="registry")


def test_keeps_serving_whatever_exception_loading_raises(serving, reg, monkeypatch):
    register(reg)

    def broken(*args, **kw):
        raise MemoryError("out of memory while loading")

    monkeypatch.setattr(reg, "load", broken)
    refresh_keeps_v1(serving, kind="error")


def test_a_failed_version_is_not_retried_until_its_metadata_changes(serving, reg, monkeypatch):
    register(reg, spec=NINE)
    loads = []
    real_load = reg.load
    monkeypatch.setattr(reg, "load", lambda *a: loads.append(a[1]) or real_load(*a))
    for _ in range(3):
        run_async(serving.refresh(announced=2))
    assert loads == [2] and serving.current.version == 1
    # Someone fixes the spec by hand and vouches for the file: the next announcement serves it.
    data = json.loads(meta_file(reg, 2).read_text())
    meta_file(reg, 2).write_text(json.dumps({**data, "spec": DIGITS.to_dict()}))
    reg.reseal("clf", 2)
    run_async(serving.refresh(announced=2))
    assert loads == [2, 2] and serving.current.version == 2


def test_a_good_version_after_a_bad_one_is_served(serving, reg):
    register(reg, spec=NINE)
    run_async(serving.refresh(announced=2))
    register(reg, seed=3)
    run_async(serving.refresh(announced=3))
    assert serving.current.version == 3


def test_nothing_served_yet_stays_unready_after_a_bad_first_version(reg):
    register(reg, spec=NINE)
    model = ServingModel(reg, "clf")
    run_async(model.refresh())
    assert model.current is None and not model.ready.is_set()
