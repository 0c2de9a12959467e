"""Decoding bombs: small files that claim huge images or carry chunks that inflate to
hundreds of megabytes are refused or defused before the decoder sees them."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from activestream.errors import InvalidInput
from activestream.learners import preprocess
from activestream.learners.models import ModelSpec
from activestream.learners.preprocess import decode_image

GREY = ModelSpec("small_cnn", ("a", "b"), 1, 12, 10)
RGB = ModelSpec("small_cnn", ("a", "b"), 3, 12, 10)
PIXELS = (np.arange(120, dtype=np.uint8).reshape(12, 10) * 2)  # [height 12, width 10]


def _saved(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _with_size(jpeg: bytes, height: int, width: int) -> bytes:
    """``jpeg`` with the size in its frame header (SOF0 or SOF2) replaced."""
    at = max(jpeg.find(b"\xff\xc0"), jpeg.find(b"\xff\xc2")) + 5  # past marker, length and precision
    return jpeg[:at] + struct.pack(">HH", height, width) + jpeg[at + 4:]


@pytest.fixture
def no_jpeg_decoder(monkeypatch):
    def refuse(*args, **kwargs):
        pytest.fail("the JPEG decoder ran on an image its header should have refused")
    monkeypatch.setattr(preprocess, "DECODE", refuse)
    monkeypatch.setattr(preprocess.Image, "open", refuse)  # the DCT-scaled path for large JPEGs


@pytest.mark.parametrize("mode, spec, height, width, limit", [
    ("L", GREY, 30000, 30000, preprocess.MAX_PIXELS), ("RGB", RGB, 65500, 65500, preprocess.MAX_PIXELS),
    ("RGB", RGB, 12, 65500, 100_000)])
@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_claiming_too_many_pixels_is_refused_from_its_header(no_jpeg_decoder, mode, spec, height, width, limit,
                                                                    progressive):
    bomb = _with_size(_saved(Image.fromarray(PIXELS).convert(mode), "JPEG", progressive=progressive), height, width)
    assert len(bomb) < 1000
    with pytest.raises(InvalidInput, match=f"{width}x{height}") as e:
        decode_image(bomb, spec, limit)
    assert e.value.kind == "too_many_pixels"


def test_a_jpeg_claiming_no_pixels_is_corrupt(no_jpeg_decoder):
    with pytest.raises(InvalidInput, match="10x0") as e:
        decode_image(_with_size(_saved(Image.fromarray(PIXELS), "JPEG"), 0, 10), GREY)
    assert e.value.kind == "corrupt_image"


def test_a_jpeg_of_another_mode_is_converted_to_the_models():
    for image, spec in [(Image.fromarray(np.stack([PIXELS, PIXELS[::-1], 255 - PIXELS], -1)).convert("CMYK"), RGB),
                        (Image.fromarray(PIXELS), RGB),
                        (Image.fromarray(np.stack([PIXELS, PIXELS[::-1], 255 - PIXELS], -1)), GREY)]:
        data = _saved(image, "JPEG", quality=95)
        want = np.asarray(Image.open(io.BytesIO(data)).convert(spec.mode), dtype=int)
        assert np.abs(decode_image(data, spec) - want).mean() < 2


def test_the_jpeg_header_walk_finds_the_frame_past_segments_and_fill_bytes():
    image = Image.fromarray(PIXELS)
    plain = _saved(image, "JPEG", quality=90)
    want = decode_image(plain, GREY)
    # a comment holding what looks like a huge frame header: skipped by its length, as libjpeg does
    fake_sof = b"\xff\xc0\x00\x0b\x08\x75\x30\x75\x30\x01\x01\x11\x00"
    com = b"\xff\xfe" + struct.pack(">H", len(fake_sof) + 2) + fake_sof
    sof = plain.index(b"\xff\xc0")
    for data in [plain[:2] + com + plain[2:],
                 plain[:sof] + b"\xff" * 5 + plain[sof:],  # fill bytes before a marker
                 _saved(image, "JPEG", quality=90, exif=b"Exif\0\0" + b"\xff\xc0" * 100, icc_profile=b"\xff" * 300)]:
        assert np.array_equal(decode_image(data, GREY), want)


def test_a_jpeg_without_a_reachable_frame_header_is_corrupt(no_jpeg_decoder):
    plain = _saved(Image.fromarray(PIXELS), "JPEG")
    sof = plain.index(b"\xff\xc0")
    many_comments = plain[:2] + b"\xff\xfe\x00\x02" * 100 + plain[2:]
    for data, text in [(plain[:sof + 6], "cut short"), (b"\xff\xd8\xff", "cut short"),
                       (b"\xff\xd8\xff" + bytes(100), "no frame header"),
                       (plain[:2] + b"\xff\xda\x00\x08" + plain[2:], "0xDA"),
                       (plain[:2] + b"\xff\xe0\x00\x01" + plain[2:], "bad length"),
                       (many_comments, "re-encode")]:
        with pytest.raises(InvalidInput, match=text) as e:
            decode_image(data, GREY)
        assert e.value.kind == "corrupt_image"


@pytest.fixture(scope="module")
def inflates_to_100mb() -> bytes:
    """A zlib stream of 100 MB of zeros (about 100 KB): over libspng's 64 MB cap per chunk."""
    packer, block = zlib.compressobj(9), bytes(1 << 20)
    return b"".join([*(packer.compress(block) for _ in range(100)), packer.flush()])


def _insert_after(png: bytes, kind: bytes, chunk: bytes) -> bytes:
    at = png.index(kind) - 4
    length = struct.unpack_from(">I", png, at)[0]
    return png[:at + 12 + length] + chunk + png[at + 12 + length:]


@pytest.mark.parametrize("bomb, after", [
    (lambda z: _chunk(b"zTXt", b"Comment\0\0" + z), b"IHDR"),
    (lambda z: _chunk(b"zTXt", b"Comment\0\0" + z), b"IDAT"),
    (lambda z: _chunk(b"iCCP", b"profile\0\0" + z), b"IHDR"),
    (lambda z: _chunk(b"iTXt", b"Comment\0\1\0\0\0" + z), b"IDAT"),
], ids=["zTXt", "zTXt-after-IDAT", "iCCP", "iTXt"])
def test_a_png_chunk_bomb_is_never_inflated(monkeypatch, inflates_to_100mb, bomb, after):
    clean = preprocess.encode_png(PIXELS)
    handed = []
    load = preprocess.pyspng.load
    monkeypatch.setattr(preprocess.pyspng, "load", lambda data, fmt: handed.append(data) or load(data, fmt))
    assert np.array_equal(decode_image(_insert_after(clean, after, bomb(inflates_to_100mb)), GREY), PIXELS)
    assert handed == [clean]  # the very chunks of the clean file, CRCs included


def test_a_png_keeps_the_chunks_its_pixels_need():
    rgba = np.dstack([np.stack([PIXELS] * 3, -1), np.full((12, 10), 128, np.uint8)])
    image = Image.fromarray(rgba, "RGBA").convert("P")  # a palette with transparency (PLTE, tRNS)
    extra = _chunk(b"tEXt", b"Title\0bomb") + _chunk(b"pHYs", bytes(9)) + _chunk(b"gAMA", struct.pack(">I", 45455))
    plain = _saved(image, "PNG")
    for data in [plain, _insert_after(plain, b"IHDR", extra), _insert_after(plain, b"IDAT", extra)]:
        assert np.array_equal(decode_image(data, RGB), np.asarray(image.convert("RGB")))


def test_a_png_with_a_garbled_chunk_list_is_corrupt():
    clean = preprocess.encode_png(PIXELS)
    iend = clean.index(b"IEND") - 4
    for data, text in [
        (clean[:iend], "cut short"),  # no IEND
        (_insert_after(clean, b"IHDR", struct.pack(">I", 1 << 30) + b"tEXt" + bytes(8)), "runs past the end"),
        (_insert_after(clean, b"IHDR", _chunk(b"tE1t", b"")), "garbled"),
        (_insert_after(clean, b"IHDR", _chunk(b"ABCD", b"")), "unknown critical chunk"),
        (_insert_after(clean, b"IHDR", _chunk(b"tEXt", b"a\0b") * 200), "re-encode"),
        (clean[:8] + b"\0\0\0\x0eIHDR" + clean[16:], "no header chunk"),
    ]:
        with pytest.raises(InvalidInput, match=text) as e:
            decode_image(data, GREY)
        assert e.value.kind == "corrupt_image"


def _seeds() -> list[tuple[bytes, ModelSpec]]:
    grey, colour = Image.fromarray(PIXELS), Image.fromarray(np.stack([PIXELS, PIXELS[::-1], 255 - PIXELS], -1))
    text = _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(bytes(5000)))
    return [(_saved(grey, "PNG"), GREY), (_saved(colour, "PNG"), RGB), (_saved(colour.convert("P"), "PNG"), RGB),
            (_insert_after(_saved(grey, "PNG"), b"IHDR", text), GREY),
            (_saved(grey, "JPEG"), GREY), (_saved(colour, "JPEG", progressive=True), RGB),
            (_saved(grey, "JPEG", exif=b"Exif\0\0" + bytes(40), icc_profile=bytes(200)), GREY)]


SEEDS = _seeds()


@st.composite
def _mutated(draw) -> tuple[bytes, ModelSpec]:
    data, spec = draw(st.sampled_from(SEEDS))
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["set", "insert", "delete", "cut", "marker"]))
        if how == "set" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif how == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif how == "cut":
            del data[at:]
        elif how == "marker":  # the bytes the header walks read: markers, lengths, chunk types
            data[at:at] = draw(st.sampled_from([b"\xff", b"\xff\xc0", b"\xff\xd9", b"\xff\x00", b"\xff\xff\xff",
                                                b"IEND", b"IDAT", b"\xff\xff\xff\xff", b"\0\0\0\0"]))
    return bytes(data), spec


@settings(max_examples=300, deadline=None)
@given(_mutated())
def test_mutated_images_decode_or_raise_invalid_input(case):
    data, spec = case
    try:
        image = decode_image(data, spec)
    except InvalidInput as e:
        assert e.kind in ("corrupt_image", "too_many_pixels") and str(e)
    else:
        assert image.dtype == np.uint8
        assert image.shape == ((spec.height, spec.width) if spec.channels == 1 else (spec.height, spec.width, 3))
