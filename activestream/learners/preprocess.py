"""Image bytes in, normalised tensors out: the input contract of a model, checked once."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode  # also loads the extension that registers torch.ops.image

from activestream.errors import InvalidInput
from activestream.learners.models import ModelSpec

MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
# The op under torchvision.io.decode_image: that wrapper's usage logging and deprecation
# warning cost a fifth of the whole decode of a 28x28 image, on every image.
DECODE = torch.ops.image.decode_image


def decode_image(data: bytes, spec: ModelSpec) -> np.ndarray:
    """Decode an encoded PNG or JPEG into ``uint8 [height, width]`` (grey) or ``[height, width, 3]``.

    Raises :class:`InvalidInput` with kind ``corrupt_image``, ``bad_mode`` or ``bad_size``.
    torchvision's libpng/libjpeg decoder costs about half of PIL's per small image,
    which matters on the predictor's hot path.

    >>> spec = ModelSpec("small_cnn", ("a", "b"), 1, 2, 2)
    >>> decode_image(encode_png(np.array([[0, 255], [7, 9]], dtype=np.uint8)), spec).tolist()
    [[0, 255], [7, 9]]
    """
    if not data.startswith(MAGIC):
        raise InvalidInput("corrupt_image", "not a PNG or JPEG image (unknown signature)")
    try:
        # a writable copy: torch warns about every read-only buffer, which costs more than the copy
        image = DECODE(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.UNCHANGED.value, False)
    except (RuntimeError, ValueError) as e:
        raise InvalidInput("corrupt_image", f"not a decodable PNG or JPEG image: {e}") from e
    channels, height, width = image.shape
    if channels != spec.channels or image.dtype != torch.uint8:
        raise InvalidInput("bad_mode", f"image has {channels} channel(s) of {image.dtype}, "
                                       f"the model takes {spec.channels} of uint8 ({spec.mode})")
    if (height, width) != (spec.height, spec.width):
        raise InvalidInput("bad_size", f"image is {width}x{height}, the model takes {spec.width}x{spec.height}")
    return image[0].numpy() if channels == 1 else image.permute(1, 2, 0).numpy()


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
