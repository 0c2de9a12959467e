"""Poison at every edge: records generated from each topic's message schema, then broken
(wrong types, missing fields, NaN, wrong version, not JSON at all), go through every
handler of that topic. Nothing escapes, and everything that does not parse is dead-lettered."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, given, settings, strategies as st

from activestream.errors import InvalidInput
from activestream.labeling.consumer import RequestsHandler
from activestream.learners.classifier import Classifier, state_arrays
from activestream.learners.models import ModelSpec
from activestream.learners.preprocess import encode_png
from activestream.storage.blobs import BlobStore
from activestream.storage.registry import ModelRegistry
from activestream.storage.store import SampleStore
from activestream.streams.demo import SimulatedLabeler
from activestream.streams.ingest import IngestHandler
from activestream.streams.learner import DriftHandler, Learner
from activestream.streams.messages import (DeadLetterV1, DriftV1, ImageV1, LabelRequestV1, LabelV1, ModelVersionV1,
                                           PredictionV1, parse)
from activestream.streams.predictor import PredictorHandler
from activestream.streams.selector import SelectorHandler
from activestream.streams.serving import ServingModel
from activestream.streams.worker import _announced_version
from tests.conftest import make_settings
from tests.label_helpers import make_service
from tests.schema_strategies import JSON, from_schema

SPEC = ModelSpec("small_cnn", tuple("0123456789"), 1, 8, 8)
IMAGE = base64.b64encode(encode_png(np.arange(64, dtype=np.uint8).reshape(8, 8))).decode()
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def valid(model) -> st.SearchStrategy[dict]:
    """Messages the schema allows, made deliverable (ids that exist, images that decode)."""
    schema = model.model_json_schema()
    return from_schema(schema).map(lambda d: _deliverable(model, d)).filter(lambda d: _parses(model, d))


def _deliverable(model, d: dict) -> dict:
    d = {**d, "v": 1}
    if model in (ImageV1, PredictionV1):
        d.pop("uri", None)
        d["image"] = IMAGE
    if model is PredictionV1:
        d.update(probs=[0.1] * 10, label=0)
    return d


def _parses(model, d: dict) -> bool:
    try:
        parse(model, json.dumps(d).encode())
        return True
    except InvalidInput:
        return False


def broken(model) -> st.SearchStrategy[bytes]:
    """A valid message of ``model`` broken in one way, or not JSON at all."""
    def replace_field(d, draw):
        key = draw(st.sampled_from(sorted(d)))
        return json.dumps({**d, key: draw(JSON)}).encode()

    def drop_field(d, draw):
        key = draw(st.sampled_from(sorted(d)))
        return json.dumps({k: v for k, v in d.items() if k != key}).encode()

    def not_finite(d, draw):
        key = draw(st.sampled_from(sorted(d)))
        return json.dumps({**d, key: draw(st.sampled_from([float("nan"), float("inf")]))}).encode()

    def version(d, draw):
        return json.dumps({**d, "v": draw(st.sampled_from([True, 1.0, "1", 2, None]))}).encode()

    def bad_bytes(d, draw):
        return draw(st.binary(max_size=64) | st.just(json.dumps(d).encode()[:-3]))

    @st.composite
    def one(draw):
        d = draw(valid(model))
        how = draw(st.sampled_from([replace_field, drop_field, not_finite, version, bad_bytes]))
        return how(d, draw)

    return one()


def records(topic: str, values: list[bytes]) -> list[ConsumerRecord]:
    return [ConsumerRecord(topic, 0, i, 0, 0, b"k", v, None, 0, len(v), []) for i, v in enumerate(values)]


def check(handler, model, topic: str, values: list[bytes]) -> None:
    """Handled without an exception; every record that does not parse is dead-lettered."""
    outputs = asyncio.run(handler.handle(records(topic, values)))
    dead = {parse(DeadLetterV1, o.value).offset for o in outputs if o.topic == "deadletter"}
    unparsable = set()
    for i, v in enumerate(values):
        try:
            parse(model, v)
        except InvalidInput:
            unparsable.add(i)
    assert unparsable <= dead, f"not dead-lettered: {[values[i] for i in unparsable - dead]}"
    handler.committed()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("poison")
    settings_ = make_settings(tmp)
    store = SampleStore(settings_.store)
    store.create_schema()
    registry = ModelRegistry(tmp / "home" / "models")
    registry.register(settings_.model_name, state_arrays(Classifier.fresh(SPEC).model), spec=SPEC.to_dict(),
                      parent=None, train_size=0, metrics={}, status="promoted")
    serving = ServingModel(registry, settings_.model_name)
    asyncio.run(serving.refresh())
    return settings_, store, registry, serving


@given(st.lists(broken(ImageV1), min_size=1, max_size=6), st.lists(valid(ImageV1), max_size=3))
@EXAMPLES
def test_images_through_the_predictor(world, bad, good):
    settings_, _, _, serving = world
    check(PredictorHandler(settings_, serving), ImageV1, "images", bad + [json.dumps(g).encode() for g in good])


@given(st.lists(broken(PredictionV1), min_size=1, max_size=6), st.lists(valid(PredictionV1), max_size=3))
@EXAMPLES
def test_predictions_through_the_selector(world, tmp_path_factory, bad, good):
    settings_, store, _, _ = world
    handler = SelectorHandler(settings_, store, BlobStore(tmp_path_factory.mktemp("blobs")))
    check(handler, PredictionV1, "predictions", bad + [json.dumps(g).encode() for g in good])


@given(st.lists(broken(LabelV1), min_size=1, max_size=6), st.lists(valid(LabelV1), max_size=3))
@EXAMPLES
def test_labels_through_ingest(world, bad, good):
    settings_, store, registry, _ = world
    check(IngestHandler(settings_, store, registry), LabelV1, "labels", bad + [json.dumps(g).encode() for g in good])


@given(st.lists(broken(LabelRequestV1), min_size=1, max_size=6), st.lists(valid(LabelRequestV1), max_size=3))
@EXAMPLES
def test_requests_through_label_serve_and_the_simulated_labeler(world, tmp_path_factory, bad, good):
    settings_ = make_settings(tmp_path_factory.mktemp("labeling"))
    values = bad + [json.dumps(g).encode() for g in good]
    check(RequestsHandler(make_service(settings_)), LabelRequestV1, "labeling.requests", values)
    check(SimulatedLabeler({}, "labels", "deadletter"), LabelRequestV1, "labeling.requests", values)


@given(broken(ModelVersionV1))
@EXAMPLES
def test_model_versions_through_the_hot_swap(value):
    assert _announced_version(value) is None or isinstance(_announced_version(value), int)


@given(st.lists(broken(DriftV1), min_size=1, max_size=6), st.lists(valid(DriftV1), max_size=3))
@EXAMPLES
def test_drift_through_the_learner(world, tmp_path_factory, bad, good):
    settings_, store, registry, _ = world
    learner = Learner(settings_, store, BlobStore(tmp_path_factory.mktemp("blobs")), registry)
    check(DriftHandler(settings_, learner), DriftV1, "drift", bad + [json.dumps(g).encode() for g in good])
