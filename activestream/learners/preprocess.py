"""Image bytes in, normalised tensors out: the input contract of a model, checked once."""

from __future__ import annotations

import io
import struct

import numpy as np
import pyspng
import torch
from PIL import Image
from torchvision.io import ImageReadMode  # also loads the extension that registers torch.ops.image

from activestream.errors import InvalidInput
from activestream.learners.models import ModelSpec

PNG = b"\x89PNG\r\n\x1a\n"
JPEG = b"\xff\xd8\xff"
# PNG colour type -> channels once decoded (a palette expands to RGB)
PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
# The op under torchvision.io.decode_image: that wrapper's usage logging and deprecation
# warning cost a fifth of the whole decode of a small image, on every image.
DECODE_JPEG = torch.ops.image.decode_image


def decode_image(data: bytes, spec: ModelSpec) -> np.ndarray:
    """Decode an encoded PNG or JPEG into ``uint8 [height, width]`` (grey) or ``[height, width, 3]``.

    Raises :class:`InvalidInput` with kind ``corrupt_image``, ``bad_mode`` or ``bad_size``.
    A PNG's size and mode are checked from its header before anything is decoded, so a
    small file that claims a huge image costs nothing. PNGs go through libspng, which
    decodes a 28x28 image in 0.6 of the time of torchvision's op (the predictor decodes
    every image; ``benchmarks/decode.py``); JPEGs through torchvision's libjpeg.

    >>> spec = ModelSpec("small_cnn", ("a", "b"), 1, 2, 2)
    >>> decode_image(encode_png(np.array([[0, 255], [7, 9]], dtype=np.uint8)), spec).tolist()
    [[0, 255], [7, 9]]
    """
    if data.startswith(PNG):
        return _decode_png(data, spec)
    if data.startswith(JPEG):
        image = _decode_jpeg(data)
        _check(image.shape, str(image.dtype), spec)
        return image
    raise InvalidInput("corrupt_image", "not a PNG or JPEG image (unknown signature)")


def _decode_png(data: bytes, spec: ModelSpec) -> np.ndarray:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise InvalidInput("corrupt_image", "not a decodable PNG image: no header chunk")
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    if colour not in PNG_CHANNELS:
        raise InvalidInput("corrupt_image", f"not a decodable PNG image: colour type {colour}")
    channels = PNG_CHANNELS[colour]
    _check((height, width, channels), "uint8" if depth <= 8 else f"uint{depth}", spec)
    try:  # in the layout just checked: nothing left to check after decoding
        return pyspng.load(data, "L" if channels == 1 else "RGB")
    except RuntimeError as e:
        raise InvalidInput("corrupt_image", f"not a decodable PNG image: {e}") from e


def _decode_jpeg(data: bytes) -> np.ndarray:
    try:
        # a writable copy: torch warns about every read-only buffer, which costs more than the copy
        image = DECODE_JPEG(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.UNCHANGED.value, False)
    except (RuntimeError, ValueError) as e:
        raise InvalidInput("corrupt_image", f"not a decodable JPEG image: {e}") from e
    array = image.numpy()  # [channels, height, width]
    return array[0] if len(array) == 1 else array.transpose(1, 2, 0)


def _check(shape: tuple[int, ...], dtype: str, spec: ModelSpec) -> None:
    """``shape``: ``(height, width)`` or ``(height, width, channels)``."""
    channels = shape[2] if len(shape) == 3 else 1
    if channels != spec.channels or dtype != "uint8":
        raise InvalidInput("bad_mode", f"image has {channels} channel(s) of {dtype}, "
                                       f"the model takes {spec.channels} of uint8 ({spec.mode})")
    if shape[:2] != (spec.height, spec.width):
        raise InvalidInput("bad_size", f"image is {shape[1]}x{shape[0]}, the model takes {spec.width}x{spec.height}")


def encode_png(array: np.ndarray) -> bytes:
    """Encode ``uint8 [h, w]`` or ``[h, w, 3]`` as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def to_tensor(images: np.ndarray, spec: ModelSpec) -> torch.Tensor:
    """``uint8 [batch, h, w]`` or ``[batch, h, w, c]`` to normalised ``float32 [batch, c, h, w]``."""
    x = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x.float().div_(255.0) - mean) / std
