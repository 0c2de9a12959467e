"""Image bytes in, normalised tensors out: the input contract of a model, checked once."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from activestream.errors import InvalidInput
from activestream.learners.models import ModelSpec

FORMATS = ("PNG", "JPEG")


def decode_image(data: bytes, spec: ModelSpec) -> np.ndarray:
    """Decode an encoded PNG or JPEG into ``uint8 [height, width]`` (grey) or ``[height, width, 3]``.

    Raises :class:`InvalidInput` with kind ``corrupt_image``, ``bad_mode`` or ``bad_size``.

    >>> spec = ModelSpec("small_cnn", ("a", "b"), 1, 2, 2)
    >>> decode_image(encode_png(np.array([[0, 255], [7, 9]], dtype=np.uint8)), spec).tolist()
    [[0, 255], [7, 9]]
    """
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            if img.mode != spec.mode:
                raise InvalidInput("bad_mode", f"image mode is {img.mode}, the model takes {spec.mode}")
            if img.size != (spec.width, spec.height):
                raise InvalidInput(
                    "bad_size", f"image is {img.size[0]}x{img.size[1]}, the model takes {spec.width}x{spec.height}"
                )
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InvalidInput("corrupt_image", f"not a decodable PNG or JPEG image: {e}") from e


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
