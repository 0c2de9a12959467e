"""The predictor and the selector on images by reference, without a broker: fetched bytes
pass the same checks as inline ones, failures are dead-lettered with their reasons, and
every pick (a large inline one, one by reference) lands in the blob store."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
from aiokafka.structs import ConsumerRecord

from activestream.learners.classifier import Classifier, state_arrays
from activestream.learners.models import ModelSpec
from activestream.learners.preprocess import encode_png
from activestream.storage.blobs import BlobStore
from activestream.storage.registry import ModelRegistry
from activestream.storage.store import SampleStore
from activestream.streams.messages import DeadLetterV1, ImageV1, LabelRequestV1, PredictionV1, parse
from activestream.streams.predictor import PredictorHandler
from activestream.streams.selector import SelectorHandler
from activestream.streams.serving import ServingModel
from tests.conftest import make_settings

SPEC = ModelSpec("small_cnn", tuple("0123456789"), 1, 8, 8)
PNG = encode_png(np.arange(64, dtype=np.uint8).reshape(8, 8))


def records(topic: str, values: list[bytes]) -> list[ConsumerRecord]:
    return [ConsumerRecord(topic, 0, i, 0, 0, b"k", v, None, 0, len(v), []) for i, v in enumerate(values)]


def predictor(settings, tmp_path) -> PredictorHandler:
    registry = ModelRegistry(tmp_path / "models")
    registry.register(settings.model_name, state_arrays(Classifier.fresh(SPEC).model), spec=SPEC.to_dict(),
                      parent=None, train_size=0, metrics={}, status="promoted")
    serving = ServingModel(registry, settings.model_name)
    asyncio.run(serving.refresh())
    return PredictorHandler(settings, serving)


def test_fetched_images_pass_the_same_checks_and_failures_say_why(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "good.png").write_bytes(PNG)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (root / "rgb.png").write_bytes(encode_png(np.zeros((8, 8, 3), np.uint8)))
    (root / "big.png").write_bytes(PNG + b"\x00" * 5000)
    settings = make_settings(tmp_path, fetch_roots=str(root), max_image_bytes=4096)
    uris = {"good": f"file://{root}/good.png", "corrupt": f"file://{root}/corrupt.png",
            "big": f"file://{root}/big.png", "gone": f"file://{root}/none.png", "out": "file:///etc/hostname",
            "ftp": "ftp://example.com/a.png"}
    values = [ImageV1(v=1, id=k, uri=u).encode() for k, u in uris.items()]
    outputs = asyncio.run(predictor(settings, tmp_path).handle(records("images", values)))
    predicted = [parse(PredictionV1, o.value) for o in outputs if o.topic == settings.topic_predictions]
    assert [(p.id, p.uri, p.image) for p in predicted] == [("good", uris["good"], None)]
    kinds = {list(uris)[parse(DeadLetterV1, o.value).offset]: parse(DeadLetterV1, o.value).error_kind
             for o in outputs if o.topic == "deadletter"}
    assert kinds["big"] == "too_large" and kinds["gone"] == "image_not_found"
    assert kinds["out"] == "outside_roots" and kinds["ftp"] == "unsupported_uri"
    assert kinds["corrupt"] not in ("unsupported_uri", "fetch_failed")  # fetched, then refused by the decoder


def test_every_pick_lands_in_the_blob_store_and_an_unfetchable_one_is_not_chosen(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "a.png").write_bytes(PNG)
    settings = make_settings(tmp_path, fetch_roots=str(root), budget=1.0, audit_share=0.0)
    store = SampleStore(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_schema()
    blobs = BlobStore(tmp_path / "blobs")
    handler = SelectorHandler(settings, store, blobs)

    async def kafka_image(uri: str) -> bytes:  # stands in for the broker: kafka:images/0/7 holds a large PNG
        assert uri == "kafka:images/0/7"
        return PNG + b"large"

    handler.fetcher.extra["kafka"] = kafka_image
    common = dict(model="m", version=1, label=0, confidence=0.5, probs=[0.5, 0.5], scores={}, ts=0.0,
                  predicted_at=0.0)
    values = [PredictionV1(id="inline", image=base64.b64encode(PNG).decode(), **common).encode(),
              PredictionV1(id="large", uri="kafka:images/0/7", **common).encode(),
              PredictionV1(id="file", uri=f"file://{root}/a.png", **common).encode(),
              PredictionV1(id="gone", uri=f"file://{root}/gone.png", **common).encode()]
    outputs = asyncio.run(handler.handle(records("predictions", values)))
    handler.committed()
    requests = [LabelRequestV1.model_validate_json(o.value) for o in outputs if o.topic == settings.topic_requests]
    assert {r.id: r.uri for r in requests} == {i: f"blob:{i}" for i in ("inline", "large", "file")}
    assert blobs.get("inline") == PNG and blobs.get("large") == PNG + b"large" and blobs.get("file") == PNG
    dead = [json.loads(o.value) for o in outputs if o.topic == "deadletter"]
    assert [(d["offset"], d["error_kind"]) for d in dead] == [(3, "image_not_found")]
    assert store.samples_by_id(["gone"]) == {}  # not chosen: no budget spent on it
    assert handler.budget.spent_ == 3
