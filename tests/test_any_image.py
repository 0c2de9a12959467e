"""Any image: PNG, JPEG and WebP of any size and mode, brought to the model's input by the
version's resize policy, checked against torchvision's transforms on Pillow's decoding."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
from aiokafka.structs import ConsumerRecord
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from activestream.errors import InvalidInput
from activestream.learners import preprocess
from activestream.learners.classifier import Classifier
from activestream.learners.models import RESIZE_POLICIES, ModelSpec
from activestream.learners.preprocess import decode_batch, decode_image, encode_png
from activestream.streams.messages import PredictionV1
from activestream.streams.predictor import PredictorHandler
from tests.conftest import make_settings
from tests.image_makers import ENCODINGS, SIZES, oriented_jpeg, photo, saved

LOSSLESS = {"grey PNG", "RGB PNG", "RGBA PNG", "grey+alpha PNG", "palette PNG", "16-bit PNG", "lossless RGBA WebP"}


def pillow_image(data: bytes, spec: ModelSpec) -> torch.Tensor:
    """The reference decoding: Pillow, upright, in the model's mode, ``uint8 [c, h, w]``."""
    with Image.open(io.BytesIO(data)) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode == "I;16":
            im = Image.fromarray((np.asarray(im) >> 8).astype(np.uint8))
        array = np.array(im.convert(spec.mode))
    x = torch.from_numpy(array)
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1)


def reference(x: torch.Tensor, spec: ModelSpec) -> np.ndarray:
    """torchvision's transforms for each policy, ``uint8 [h, w(, c)]`` like ``decode_image``."""
    h, w = x.shape[-2:]
    size = (spec.height, spec.width)
    if (h, w) != size:
        if spec.resize == "stretch":
            x = T.Resize(size, antialias=True)(x)
        elif spec.resize == "center_crop":
            assert spec.height == spec.width, "the reference crop is torchvision's: shorter side, then centre"
            x = T.CenterCrop(size)(T.Resize(spec.height, antialias=True)(x))
        else:
            scale = min(spec.height / h, spec.width / w)
            nh, nw = min(spec.height, max(1, round(h * scale))), min(spec.width, max(1, round(w * scale)))
            left, top = (spec.width - nw) // 2, (spec.height - nh) // 2
            fill = [round(255 * m) for m in spec.mean] * (x.shape[0] // len(spec.mean))
            x = T.Pad([left, top, spec.width - nw - left, spec.height - nh - top], fill=fill)(
                T.Resize((nh, nw), antialias=True)(x))
    array = x.permute(1, 2, 0).numpy()
    return array[..., 0] if spec.channels == 1 else array


def spec_of(channels: int, side: int, resize: str = "center_crop") -> ModelSpec:
    return ModelSpec("small_cnn", ("a", "b"), channels, side, side, (0.5,) * channels, (0.5,) * channels, resize)


@pytest.mark.parametrize("width, height", SIZES)
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_every_size_and_mode_decodes_to_the_models_input(encoding, width, height):
    data = ENCODINGS[encoding](photo(width, height))
    for spec in (spec_of(3, 224), spec_of(1, 32)):
        got = decode_image(data, spec)
        want = reference(pillow_image(data, spec), spec)
        assert got.shape == want.shape and got.dtype == np.uint8
        diff = np.abs(got.astype(int) - want)
        if encoding in LOSSLESS:
            assert diff.max() <= 1, (encoding, spec.channels)
        else:
            # JPEG decoders round their IDCT and colour conversion differently; a large JPEG is
            # decoded at a DCT-scaled size, a smoothing a little unlike the resize's
            assert diff.mean() <= 2.0 and np.percentile(diff, 99) <= 12, (encoding, spec.channels, diff.mean())


def test_the_exif_orientation_is_applied():
    upright = photo(40, 20)  # wide
    spec = ModelSpec("small_cnn", ("a", "b"), 3, 20, 40, resize="stretch")
    got = decode_image(oriented_jpeg(upright), spec)  # stored tall: no resize needed once turned
    assert np.abs(got.astype(int) - np.asarray(upright)).mean() < 8  # JPEG noise on a small image
    turned = np.asarray(upright.transpose(Image.Transpose.ROTATE_90).resize((40, 20)))
    assert np.abs(got.astype(int) - turned).mean() > 20


def test_an_animated_webp_gives_its_first_frame():
    first, second = photo(30, 20), photo(30, 20).transpose(Image.Transpose.ROTATE_180)
    data = saved(first, "WEBP", save_all=True, append_images=[second], duration=100, lossless=True)
    got = decode_image(data, ModelSpec("small_cnn", ("a", "b"), 3, 20, 30))
    assert np.abs(got.astype(int) - np.asarray(first)).max() <= 1


@pytest.mark.parametrize("resize", RESIZE_POLICIES)
@pytest.mark.parametrize("width, height", [(17, 23), (640, 480), (31, 200)])
def test_each_resize_policy_matches_torchvision(resize, width, height):
    data = saved(photo(width, height), "PNG")
    for spec in (spec_of(3, 64, resize), spec_of(1, 28, resize)):
        want = reference(pillow_image(data, spec), spec)
        assert np.abs(decode_image(data, spec).astype(int) - want).max() <= 1


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 80), st.integers(1, 80), st.integers(1, 40), st.integers(1, 40), st.sampled_from(RESIZE_POLICIES),
       st.integers(0, 255), st.sampled_from([1, 3]))
def test_any_size_comes_out_at_the_models_size_and_a_flat_image_stays_flat(w, h, side_w, side_h, resize, level, channels):
    spec = ModelSpec("small_cnn", ("a", "b"), channels, side_h, side_w, (0.25,) * channels, (0.5,) * channels, resize)
    image = Image.new("L", (w, h), level).convert("RGB" if channels == 3 else "L")
    got = decode_image(saved(image, "PNG"), spec)
    assert got.shape == (side_h, side_w) + ((3,) if channels == 3 else ())
    if resize != "letterbox" or (w, h) == (side_w, side_h):
        assert np.all(got == level)
    else:  # the image inside, the mean colour (0.25 -> 64) around it
        assert set(np.unique(got)) <= {level, 64}
        assert np.any(got == level)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 50), st.integers(1, 50), st.sampled_from(RESIZE_POLICIES))
def test_an_image_of_the_models_size_passes_through_every_policy_unchanged(w, h, resize):
    pixels = np.random.default_rng(w * 100 + h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    spec = ModelSpec("small_cnn", ("a", "b"), 3, h, w, resize=resize)
    assert np.array_equal(decode_image(encode_png(pixels), spec), pixels)


@pytest.fixture
def no_decoder(monkeypatch):
    def refuse(*args, **kwargs):
        pytest.fail("a decoder ran on an image its header should have refused")
    monkeypatch.setattr(preprocess, "DECODE", refuse)
    monkeypatch.setattr(preprocess.pyspng, "load", refuse)
    monkeypatch.setattr(preprocess.Image, "open", refuse)


def _claiming(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a PNG, baseline JPEG or VP8X WebP) with another size in its header."""
    if data.startswith(b"\x89PNG"):
        return data[:16] + width.to_bytes(4, "big") + height.to_bytes(4, "big") + data[24:]
    if data.startswith(b"RIFF"):
        return data[:24] + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little") + data[30:]
    at = data.index(b"\xff\xc0") + 5
    return data[:at] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[at + 4:]


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(no_decoder):
    small = photo(12, 10)
    exif = Image.Exif()
    exif[0x0112] = 1
    sources = [saved(small, "PNG"), saved(small, "JPEG"), saved(small, "WEBP", exif=exif.tobytes())]  # VP8X
    assert sources[2][12:16] == b"VP8X"
    for data in sources:
        for width, height, limit in [(30000, 30000, 25_000_000), (65500, 65500, 25_000_000), (1000, 1001, 1_000_000),
                                     (16_000_000, 16_000_000, 25_000_000)]:
            if data.startswith(b"\xff") and max(width, height) > 65535:
                continue  # a JPEG's size has 16 bits
            with pytest.raises(InvalidInput, match=f"{width}x{height}") as e:
                decode_image(_claiming(data, width, height), spec_of(3, 32), limit)
            assert e.value.kind == "too_many_pixels" and "ACTIVESTREAM_MAX_PIXELS" in str(e.value)


def test_undecodable_input_is_corrupt_and_nothing_else_fails():
    good = saved(photo(50, 40), "JPEG")
    blobs = [b"GIF89a....", good[:300], good, b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0", saved(photo(8, 8), "PNG")[:60], good]
    images, failures = decode_batch(blobs, spec_of(3, 32))
    assert sorted(failures) == [0, 1, 3, 4] and {e.kind for e in failures.values()} == {"corrupt_image"}
    assert images.shape == (2, 32, 32, 3) and np.array_equal(images[0], images[1])


def test_the_predictor_handler_predicts_a_batch_of_mixed_images(tmp_path):
    spec = ModelSpec("small_cnn", tuple("abc"), 3, 32, 32, (0.5,) * 3, (0.25,) * 3)
    clf = Classifier.fresh(spec)
    clf.version = 1

    class Serving:
        name, current = "m", clf

    blobs = [ENCODINGS[name](photo(w, h, seed=i)) for i, (name, (w, h)) in
             enumerate((name, size) for name in sorted(ENCODINGS) for size in SIZES[:3])]
    bad = [b"not an image", _claiming(saved(photo(12, 10), "PNG"), 6000, 6000)]
    values = [json.dumps({"v": 1, "id": f"i{i}", "ts": 0.0, "image": base64.b64encode(b).decode()}).encode()
              for i, b in enumerate(blobs + bad)]
    records = [ConsumerRecord("images", 0, i, 0, 0, f"i{i}".encode(), v, None, len(v), 0, []) for i, v in enumerate(values)]
    handler = PredictorHandler(make_settings(tmp_path, max_pixels=20_000_000), Serving())
    outputs = handler._handle(records, clf)
    dead = [json.loads(o.value) for o in outputs if o.topic == handler.settings.topic_deadletter]
    assert sorted(d["error_kind"] for d in dead) == ["corrupt_image", "too_many_pixels"]
    predictions = {m.id: m for m in (PredictionV1.model_validate_json(o.value) for o in outputs
                                     if o.topic == handler.settings.topic_predictions)}
    assert len(predictions) == len(blobs)
    want = clf.predict_proba(np.stack([decode_image(b, spec) for b in blobs]))
    got = np.array([predictions[f"i{i}"].probs for i in range(len(blobs))])
    np.testing.assert_allclose(got, want, atol=2e-5)
