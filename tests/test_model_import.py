"""A model trained elsewhere: a torchvision mobilenet_v3_small, trained a few steps here and
saved as a state-dict file and as safetensors, is imported both ways, served and fine-tuned."""

from __future__ import annotations

import base64
import dataclasses
import json
import re

import numpy as np
import pytest
import torch
import torchvision
from aiokafka.structs import ConsumerRecord
from prometheus_client import REGISTRY
from safetensors.torch import save_file

from activestream.cli import main
from activestream.config import registry_from
from activestream.learners.models import ModelSpec
from activestream.learners.preprocess import encode_png
from activestream.learners.training import TrainConfig
from activestream.storage.decisions import in_force
from activestream.storage.store import Label, Sample
from activestream.streams.learner import Learner
from activestream.streams.predictor import PredictorHandler
from activestream.streams.serving import ServingModel
from activestream.streams.worker import Resources
from tests.conftest import make_settings, run_async

CLASSES = ("red", "green", "blue")
SIZE = 32
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # what `models import` assumes for 3 channels


def coloured(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``uint8 [n, 32, 32, 3]`` noisy images whose dominant channel is the class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.integers(0, 120, (n, SIZE, SIZE, 3))
    images[np.arange(n), :, :, labels] += 120
    return images.astype(np.uint8), labels


def preprocess(images: np.ndarray) -> torch.Tensor:
    """The input contract written out by hand, apart from the code under test."""
    x = images.astype(np.float32) / 255.0
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The user's model: trained for a few steps, saved both ways."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=len(CLASSES))
    images, labels = coloured(16)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(preprocess(images)), torch.from_numpy(labels)).backward()
        optimiser.step()
    model.eval()
    folder = tmp_path_factory.mktemp("user")
    torch.save(model.state_dict(), folder / "model.pt")
    save_file(model.state_dict(), folder / "model.safetensors")
    return model, folder


def import_args(settings, weights, *extra: str) -> list[str]:
    return ["models", "import", "--home", str(settings.home_path), "--arch", "mobilenet_v3_small",
            "--weights", str(weights), "--classes", ",".join(CLASSES), "--size", str(SIZE), "--by", "ann", *extra]


def cli(capsys, args: list[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(args)
    return done.value.code, capsys.readouterr().err


def predict(settings, serving: ServingModel, images: np.ndarray) -> list[dict]:
    """What the predictor publishes for ``images`` (inline PNGs), through its own handler."""
    values = [json.dumps({"v": 1, "id": f"img-{i}", "image": base64.b64encode(encode_png(im)).decode()}).encode()
              for i, im in enumerate(images)]
    records = [ConsumerRecord("images", 0, i, 0, 0, b"k", v, None, 0, len(v), []) for i, v in enumerate(values)]
    outputs = PredictorHandler(settings, serving)._handle(records, serving.current)
    assert [o.topic for o in outputs] == [settings.topic_predictions] * len(images)
    return [json.loads(o.value) for o in outputs]


def test_imported_both_ways_served_to_1e5_and_fine_tuned(tmp_path, trained, capsys, monkeypatch):
    model, folder = trained
    monkeypatch.delenv("ACTIVESTREAM_BOOTSTRAP", raising=False)
    settings = make_settings(tmp_path, retrain_every=20, epochs=1)
    assert cli(capsys, import_args(settings, folder / "model.pt", "--reason", "trained offline"))[0] == 0
    assert cli(capsys, import_args(settings, folder / "model.safetensors"))[0] == 0
    res = Resources(settings).open()
    first, second = res.registry.versions(settings.model_name)
    assert (first.status, second.status) == ("promoted", "candidate")  # the first version serves at once
    assert first.sha256 == second.sha256  # the same weights, whichever file they came from
    assert first.spec["classes"] == list(CLASSES) and first.history[0]["reason"] == "trained offline"

    serving = ServingModel(res.registry, settings.model_name)
    run_async(serving.refresh())
    images, labels = coloured(16, seed=1)
    served = predict(settings, serving, images)
    with torch.no_grad():
        direct = torch.softmax(model(preprocess(images)), dim=1).numpy()
    np.testing.assert_allclose(np.array([p["probs"] for p in served]), direct, atol=1e-5, rtol=0)
    assert [p["class_name"] for p in served] == [CLASSES[i] for i in direct.argmax(1)]
    assert {p["version"] for p in served} == {1}
    for label, name in enumerate(CLASSES):  # the metric names each class too
        count = REGISTRY.get_sample_value("activestream_predicted_class_total", {"label": str(label), "class_name": name})
        assert (count or 0) >= sum(p["class_name"] == name for p in served)

    fine_tuned = _fine_tune(settings, res, images, labels)
    assert fine_tuned.parent == 1 and fine_tuned.sha256 != first.sha256
    assert ModelSpec.from_dict(fine_tuned.spec) == ModelSpec.from_dict(first.spec)
    assert fine_tuned.history[0]["by"] == "learner"


def _fine_tune(settings, res, images: np.ndarray, labels: np.ndarray):
    """Label the served images and run one learner round on the imported version."""
    images, labels = np.concatenate([images, coloured(24, seed=2)[0]]), np.concatenate([labels, coloured(24, 2)[1]])
    ids = [f"img-{i}" for i in range(len(images))]
    for sid, image in zip(ids, images):
        res.blobs.put(sid, encode_png(image))
    res.store.add_samples(Sample(id=sid, blob_key=sid, source="cam", reason="uncertain") for sid in ids)
    res.store.add_labels(Label(sample_id=sid, label=int(y), labeler="ann", kind="human") for sid, y in zip(ids, labels))
    learner = Learner(settings, res.store, res.blobs, res.registry)
    # A few steps: this checks that an imported version goes through a round, not how well it learns.
    learner.policy = dataclasses.replace(learner.policy, train=TrainConfig(epochs=1, min_steps=4))
    assert learner.due()
    meta = learner.train_round()
    assert meta is not None and meta.version == 3
    return meta


def test_a_head_that_does_not_match_the_classes_is_refused(tmp_path, trained, capsys):
    _, folder = trained
    settings = make_settings(tmp_path)
    args = import_args(settings, folder / "model.safetensors")
    args[args.index("--classes") + 1] = "red,green,blue,grey"
    code, err = cli(capsys, args)
    assert code == 2
    assert re.search(r"4 classes .*output layer classifier\.3\.weight has 3.*Give as many class names", err), err
    assert registry_from(settings).versions(settings.model_name) == []


def test_a_pickled_model_is_never_unpickled(tmp_path, trained, capsys):
    model, folder = trained
    torch.save(model, folder / "whole.pt")  # a whole module: loading it would run pickled code
    settings = make_settings(tmp_path)
    code, err = cli(capsys, import_args(settings, folder / "whole.pt"))
    assert code == 2 and "weights_only=True" in err and "state_dict()" in err
    assert in_force(registry_from(settings), settings.model_name) is None


def test_nested_checkpoints_and_wrapped_keys_are_read(tmp_path, trained, capsys):
    model, folder = trained
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # saved from nn.DataParallel
    torch.save({"state_dict": state, "epoch": 5}, folder / "checkpoint.pth")
    settings = make_settings(tmp_path)
    assert cli(capsys, import_args(settings, folder / "checkpoint.pth"))[0] == 0
    assert registry_from(settings).get(settings.model_name, 1).spec["arch"] == "mobilenet_v3_small"
