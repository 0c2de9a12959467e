"""Message formats: round trips and the reasons malformed messages are refused with."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, strategies as st

from activestream.errors import InvalidInput
from activestream.streams.messages import (
    DeadLetterV1, DriftV1, ImageV1, LabelRequestV1, LabelV1, ModelVersionV1, PredictionV1, dead_letter, parse,
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


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400"]


@pytest.mark.parametrize("number", NON_FINITE)
def test_non_finite_numbers_are_refused_on_every_topic(number):
    image = f'{{"v": 1, "id": "a", "image": "AA==", "ts": {number}}}'
    meta = f'{{"v": 1, "id": "a", "image": "AA==", "meta": {{"exposure": [1, {{"x": {number}}}]}}}}'
    label = f'{{"v": 1, "id": "a", "label": 1, "labeler": "ann", "ts": {number}}}'
    prediction = (f'{{"v": 1, "id": "a", "model": "m", "version": 1, "label": 0, "confidence": {number}, '
                  f'"probs": [1.0], "scores": {{}}, "image": "AA==", "ts": 0, "predicted_at": 0}}')
    for model, raw in ((ImageV1, image), (ImageV1, meta), (LabelV1, label), (PredictionV1, prediction)):
        with pytest.raises(InvalidInput) as e:
            parse(model, raw.encode())
        assert e.value.kind == "not_finite", raw


@pytest.mark.parametrize("version", ["true", "1.0", '"1"'])
def test_the_format_version_must_be_the_integer_1(version):
    with pytest.raises(InvalidInput) as e:
        parse(LabelV1, f'{{"v": {version}, "id": "a", "label": 1, "labeler": "ann"}}'.encode())
    assert e.value.kind == "bad_version"


@pytest.mark.parametrize("label", ['"3"', "true", "3.0", "2147483648"])
def test_a_label_must_be_a_json_integer_in_range(label):
    with pytest.raises(InvalidInput) as e:
        parse(LabelV1, f'{{"v": 1, "id": "a", "label": {label}, "labeler": "ann"}}'.encode())
    assert e.value.kind == "bad_envelope"


@pytest.mark.parametrize("labeler", ["ann\u0000", "a\nb", "\u007f"])
def test_a_labeler_with_control_characters_is_refused(labeler):
    with pytest.raises(InvalidInput):
        parse(LabelV1, json.dumps({"v": 1, "id": "a", "label": 1, "labeler": labeler}).encode())


def test_no_text_field_takes_a_nul_character():
    raw = {"v": 1, "id": "a", "model": "m\u0000", "version": 1, "label": 0, "confidence": 1.0, "probs": [1.0],
           "scores": {}, "image": "AA==", "ts": 0, "predicted_at": 0}
    with pytest.raises(InvalidInput):
        parse(PredictionV1, json.dumps(raw).encode())


def test_a_prediction_with_bad_base64_is_refused_when_parsed():
    raw = {"v": 1, "id": "a", "model": "m", "version": 1, "label": 0, "confidence": 1.0, "probs": [1.0],
           "scores": {}, "image": "!!!not*base64", "ts": 0, "predicted_at": 0}
    with pytest.raises(InvalidInput) as e:
        parse(PredictionV1, json.dumps(raw).encode())
    assert e.value.kind == "bad_base64"


DRIFT = {"v": 1, "model": "classifier", "version": 3, "detector": "adwin", "signal": "confidence",
         "position": 12000, "statistic": 2.5, "threshold": 0.01}


def test_a_drift_message_round_trips_and_is_parsed_strictly():
    msg = parse(DriftV1, json.dumps(DRIFT).encode())
    assert parse(DriftV1, msg.encode()) == msg
    for field, value in [("detector", "cusum"), ("signal", "weather"), ("version", 0), ("position", -1),
                         ("version", "3"), ("position", 1.0), ("v", 2), ("statistic", "2.5")]:
        with pytest.raises(InvalidInput):
            parse(DriftV1, json.dumps({**DRIFT, field: value}).encode())
    with pytest.raises(InvalidInput, match="not_finite|finite"):
        parse(DriftV1, json.dumps(DRIFT).replace("2.5", "NaN").encode())
    for field in ("detector", "signal", "version", "position", "statistic", "threshold", "model"):
        with pytest.raises(InvalidInput):
            parse(DriftV1, json.dumps({k: v for k, v in DRIFT.items() if k != field}).encode())
