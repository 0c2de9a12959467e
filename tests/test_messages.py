"""Message formats: round trips and the reasons malformed messages are refused with."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, strategies as st

from activestream.errors import InvalidInput
from activestream.streams.messages import (
    DeadLetterV1, ImageV1, LabelRequestV1, LabelV1, ModelVersionV1, PredictionV1, dead_letter, parse,
)


def test_image_round_trip():
    msg = ImageV1(v=1, id="img-1", image=base64.b64encode(b"png").decode(), truth=3)
    back = parse(ImageV1, msg.encode())
    assert back == msg and back.image_bytes() == b"png"


@pytest.mark.parametrize("raw, kind", [
    (None, "empty"),
    (b"", "empty"),
    (b"{nope", "bad_json"),
    (b"42", "bad_envelope"),
    (b'{"v": 2, "id": "a", "image": "AA=="}', "bad_version"),
    (b'{"v": 1, "image": "AA=="}', "bad_envelope"),
    (b'{"v": 1, "id": "has space", "image": "AA=="}', "bad_envelope"),
    (b'{"v": 1, "id": "a"}', "bad_envelope"),
    (b'{"v": 1, "id": "a", "image": "AA==", "uri": "s3://x"}', "bad_envelope"),
])
def test_malformed_images_are_refused_with_a_kind(raw, kind):
    with pytest.raises(InvalidInput) as e:
        parse(ImageV1, raw)
    assert e.value.kind == kind and str(e.value)


def test_bad_base64_is_caught_when_the_bytes_are_read():
    msg = parse(ImageV1, b'{"v": 1, "id": "a", "image": "!!!"}')
    with pytest.raises(InvalidInput) as e:
        msg.image_bytes()
    assert e.value.kind == "bad_base64"


def test_every_format_round_trips():
    samples = [
        PredictionV1(id="a", model="m", version=2, label=1, confidence=0.6, probs=[0.4, 0.6],
                     scores={"margin": 0.8}, image="AA==", ts=1.0, predicted_at=2.0),
        LabelRequestV1(id="a", uri="blob:a", reason="uncertain", score=0.9, probability=0.5, model="m",
                       version=2, top=[(1, 0.6), (0, 0.4)], priority=0.9, ts=1.0),
        LabelV1(id="a", label=1, labeler="ann"),
        ModelVersionV1(name="m", version=2, parent=1, uri="file:///m", sha256="0" * 64, status="promoted"),
    ]
    for msg in samples:
        assert parse(type(msg), msg.encode()) == msg


@given(st.binary(max_size=10_000))
def test_dead_letter_keeps_a_bounded_copy(raw):
    record = parse(DeadLetterV1, dead_letter("images", 0, 5, b"k", raw, InvalidInput("bad_json", "x"), "predictor"))
    kept = base64.b64decode(record.raw)
    assert kept == raw[:4096] and record.raw_size == len(raw)
    assert (record.topic, record.partition, record.offset, record.key) == ("images", 0, 5, "k")


def test_label_rejects_negative_class_and_empty_labeler():
    for body in ({"v": 1, "id": "a", "label": -1, "labeler": "x"}, {"v": 1, "id": "a", "label": 1, "labeler": ""}):
        with pytest.raises(InvalidInput):
            parse(LabelV1, json.dumps(body).encode())
