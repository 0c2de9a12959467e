"""Models, preprocessing, training and the incremental round, on real images."""

from __future__ import annotations

import io
import struct
import zlib

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from PIL import Image

from activestream.errors import InvalidInput
from activestream.learners.classifier import Classifier, state_arrays
from activestream.learners.incremental import retrain, split_holdout
from activestream.learners.models import ModelSpec, build_model
from activestream.learners.preprocess import decode_image, encode_png
from activestream.learners.training import TrainConfig, fit
from activestream.simulation.seed import spec_for


def test_decode_converts_mode_and_size_and_refuses_garbage():
    spec = ModelSpec("small_cnn", ("a", "b"), 1, 8, 8)
    assert decode_image(encode_png(np.full((8, 8, 3), 90, np.uint8)), spec).shape == (8, 8)
    assert decode_image(encode_png(np.full((9, 8), 90, np.uint8)), spec).tolist() == [[90] * 8] * 8
    with pytest.raises(InvalidInput) as e:
        decode_image(b"\x89PNG\r\n\x1a\nbroken", spec)
    assert e.value.kind == "corrupt_image"


def _saved(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


GREY = ModelSpec("small_cnn", ("a", "b"), 1, 12, 10)
RGB = ModelSpec("small_cnn", ("a", "b"), 3, 12, 10)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.uint8, (12, 10, 3)))
def test_decode_reads_every_kind_of_png_and_jpeg_as_pillow_does(pixels):
    colour = Image.fromarray(pixels)
    grey = colour.convert("L")
    for data, spec, pil in [
        (_saved(grey), GREY, grey), (_saved(grey, optimize=True), GREY, grey),
        (_saved(grey.convert("1")), GREY, grey.convert("1").convert("L")),  # 1 bit a pixel
        (_saved(colour), RGB, colour),
        (_saved(colour.convert("P")), RGB, colour.convert("P").convert("RGB")),  # palette
        (_saved(grey.quantize(16)), RGB, grey.quantize(16).convert("RGB")),  # 4-bit palette
        (_saved(grey, "JPEG"), GREY, Image.open(io.BytesIO(_saved(grey, "JPEG")))),
        (_saved(colour, "JPEG"), RGB, Image.open(io.BytesIO(_saved(colour, "JPEG")))),
    ]:
        want = np.asarray(pil.convert(spec.mode))
        got = decode_image(data, spec)
        assert got.dtype == np.uint8 and got.shape == want.shape
        # JPEG decoders may round an IDCT differently by one level
        assert np.abs(got.astype(int) - want).max() <= (1 if data.startswith(b"\xff\xd8") else 0)


def _png(width: int, height: int, depth: int, colour: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_decode_checks_a_png_header_before_decoding_it():
    grey = Image.fromarray(np.arange(120, dtype=np.uint8).reshape(12, 10))
    for data, kind, text in [
        # 900 MB of pixels in a 1 MB file: refused from the header, never inflated
        (_png(30000, 30000, 8, 0, zlib.compress(bytes(30001 * 30000))), "too_many_pixels", "30000x30000"),
        (_png(10, 12, 8, 5, b""), "corrupt_image", "colour type 5"),
        (_saved(grey)[:50], "corrupt_image", "PNG"),  # cut inside the pixel data
        (b"\x89PNG\r\n\x1a\n", "corrupt_image", "no header"),
        (_saved(grey, "JPEG")[:40], "corrupt_image", "JPEG"),
    ]:
        with pytest.raises(InvalidInput, match=text) as e:
            decode_image(data, GREY)
        assert e.value.kind == kind


def test_decode_converts_every_png_mode_to_the_models():
    grey = Image.fromarray(np.arange(120, dtype=np.uint8).reshape(12, 10))
    for image in [grey.convert("LA"), grey.convert("P"), Image.fromarray(np.full((12, 10), 200 * 257, np.uint16))]:
        for spec in (GREY, RGB):
            want = np.asarray((image if image.mode != "I;16" else Image.new("L", (10, 12), 200)).convert(spec.mode))
            assert np.array_equal(decode_image(_saved(image), spec), want), (image.mode, spec.mode)


def test_weights_round_trip_through_arrays(digits):
    clf = Classifier.fresh(spec_for(digits))
    copy = Classifier.from_arrays(clf.spec, state_arrays(clf.model), 1)
    x = digits.test_x[:32]
    np.testing.assert_allclose(clf.predict_proba(x), copy.predict_proba(x), atol=1e-6)


def test_forward_in_chunks_gives_what_one_pass_gives(digits):
    whole = Classifier.fresh(spec_for(digits))
    chunked = Classifier.from_arrays(whole.spec, state_arrays(whole.model), 1, chunk=16)
    x = digits.test_x[:50]  # three chunks and a remainder
    np.testing.assert_allclose(chunked.predict_proba(x), whole.predict_proba(x), atol=1e-6)
    probs, features = chunked.predict_with_embeddings(x)
    np.testing.assert_allclose(probs, whole.predict_proba(x), atol=1e-6)
    np.testing.assert_allclose(features, whole.embed(x), atol=1e-5)
    assert chunked.predict_proba(x[:0]).shape == (0, whole.spec.num_classes)


def test_fit_learns_digits_and_leaves_the_input_untouched(digits):
    clf = Classifier.fresh(spec_for(digits))
    before = state_arrays(clf.model)
    trained = fit(clf, digits.train_x, digits.train_y, TrainConfig(epochs=8))
    assert trained.accuracy(digits.test_x, digits.test_y) > 0.85
    after = state_arrays(clf.model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_retrain_improves_on_more_labels_and_reports_holdout(digits):
    seed = fit(Classifier.fresh(spec_for(digits)), digits.train_x[:60], digits.train_y[:60], TrainConfig(epochs=5))
    ids = [f"d{i}" for i in range(len(digits.train_y))]
    result = retrain(seed, ids, digits.train_x, digits.train_y, config=TrainConfig(epochs=5),
                     eval_sets={"test": (digits.test_x, digits.test_y)})
    assert result.metrics["test_accuracy"] > seed.accuracy(digits.test_x, digits.test_y)
    assert result.promote and result.metrics["holdout_accuracy"] >= result.metrics["parent_holdout_accuracy"]
    train, held = split_holdout(ids, 0.2)
    assert result.metrics["holdout_size"] == held.sum() and 0.1 < held.mean() < 0.3


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_backbones_take_grey_images(arch):
    model = build_model(ModelSpec(arch, tuple("abc"), 1, 32, 32))
    assert model(__import__("torch").zeros(2, 1, 32, 32)).shape == (2, 3)
