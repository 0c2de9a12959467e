"""Image bytes in, normalised tensors out: the input contract of a model, met once.

Any PNG, JPEG or WebP is taken, of any size and mode, up to a pixel count read from its
header: it is decoded in the model's mode (grey or RGB; alpha is dropped, a palette or
CMYK converted, a JPEG's EXIF orientation applied) and brought to the model's size by the
version's resize policy (:data:`~activestream.learners.models.RESIZE_POLICIES`).
"""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Sequence

import numpy as np
import pyspng
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode  # also loads the extension that registers torch.ops.image

from activestream.errors import InvalidInput
from activestream.learners.headers import Header, corrupt, pixel_chunks, read_header
from activestream.learners.models import ModelSpec
from activestream.learners.resize import fit, needed_size

#: Largest image accepted, in pixels (``ACTIVESTREAM_MAX_PIXELS``): a 24-megapixel camera
#: frame fits, and its decoded RGBA takes 100 MB.
MAX_PIXELS = 25_000_000
# The op under torchvision.io.decode_image: that wrapper's usage logging and deprecation
# warning cost a fifth of the whole decode of a small image, on every image.
DECODE = torch.ops.image.decode_image
#: A JPEG at least this many times the size the model needs, both ways, is decoded at a DCT
#: scale (1/2, 1/4 or 1/8): below it, libjpeg's scaling cannot skip anything.
DCT_MIN_REDUCTION = 2
# PIL's weights for L = 0.299 R + 0.587 G + 0.114 B, scaled by 2^16 (what convert("L") does)
LUMA = torch.tensor([19595, 38470, 7471], dtype=torch.int32).view(3, 1, 1)


def decode_image(data: bytes, spec: ModelSpec, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode one image to the model's input: ``uint8 [height, width]`` (grey) or ``[height, width, 3]``.

    Raises :class:`InvalidInput` (kind ``corrupt_image`` or ``too_many_pixels``), and
    nothing else, whatever the bytes. See :func:`decode_batch`.

    >>> spec = ModelSpec("small_cnn", ("a", "b"), 1, 2, 2)
    >>> decode_image(encode_png(np.array([[0, 255], [7, 9]], dtype=np.uint8)), spec).tolist()
    [[0, 255], [7, 9]]
    >>> decode_image(encode_png(np.full((8, 4, 3), 200, np.uint8)), spec).tolist()
    [[200, 200], [200, 200]]
    """
    images, failures = decode_batch([data], spec, max_pixels)
    if failures:
        raise failures[0]
    return images[0]


def decode_batch(blobs: Sequence[bytes], spec: ModelSpec,
                 max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, dict[int, InvalidInput]]:
    """Decode and resize a batch: ``uint8 [n, height, width(, 3)]`` of the images that decoded,
    in order, and the error of each that did not, by its index in ``blobs``.

    Sizes are read from the header (a PNG's IHDR, a JPEG's frame header, a WebP's first
    chunk) before anything is decoded, so a small file that claims a huge image costs
    nothing; a PNG reaches libspng without the chunks that do not hold pixels, so a
    compressed text or colour profile is never inflated (``benchmarks/poison.py``). Images
    of one size are resized together, in one call (``benchmarks/decode.py``).
    """
    native, failures = [], {}
    for i, data in enumerate(blobs):
        try:
            native.append(decode_native(data, spec, max_pixels))
        except InvalidInput as e:
            failures[i] = e
    grey, size = spec.channels == 1, (spec.height, spec.width)
    out = np.empty((len(native), *size) + (() if grey else (3,)), np.uint8)
    groups = defaultdict(list)
    for slot, image in enumerate(native):
        if tuple(image.shape[1:]) == size:
            out[slot] = (image[0] if grey else image.permute(1, 2, 0)).numpy()
        else:
            groups[tuple(image.shape)].append(slot)
    for slots in groups.values():
        # Stacked in [n, h, w, c] memory (what every decoder writes), so no copy transposes
        # it; torch's uint8 resize works in that layout too.
        images = torch.stack([native[s].permute(1, 2, 0) for s in slots]).permute(0, 3, 1, 2)
        fitted = fit(images, spec)  # [n, c, height, width]
        out[slots] = (fitted[:, 0] if grey else fitted.permute(0, 2, 3, 1)).numpy()
    return out, failures


def decode_native(data: bytes, spec: ModelSpec, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """``uint8 [channels, h, w]`` (a view of ``[h, w, channels]`` memory) in the model's mode,
    upright, at the size stored (or a DCT-scaled one no smaller than the model needs)."""
    header = read_header(data)
    pixels = header.width * header.height
    if pixels == 0:
        raise corrupt(header.fmt, f"size {header.width}x{header.height}")
    if pixels > max_pixels:
        raise InvalidInput("too_many_pixels", f"{header.fmt} image is {header.width}x{header.height} = {pixels} pixels, "
                                              f"over ACTIVESTREAM_MAX_PIXELS={max_pixels}; downscale it before "
                                              f"sending or raise the limit")
    if header.fmt == "PNG":
        image = _png(data, header, spec)
    elif header.fmt == "JPEG":
        image = _jpeg(data, header, spec)
    else:
        image = _webp(data, header, spec)
    return _luma(image) if spec.channels == 1 and len(image) == 3 else image


def _png(data: bytes, header: Header, spec: ModelSpec) -> torch.Tensor:
    # One chunk a row (some streaming encoders) or one per 8 KiB (libpng), plus room for
    # ancillary ones: enough for any encoder, and it bounds the walk by the accepted size.
    data = pixel_chunks(data, 64 + 2 * header.height)
    colour, depth = header.detail
    grey = spec.channels == 1 and colour == 0 and depth <= 8  # libspng's grey output takes nothing else
    try:
        array = pyspng.load(data, "L" if grey else "RGB")
    except RuntimeError as e:
        raise corrupt("PNG", str(e)) from e
    if array.dtype != np.uint8 or array.shape[:2] != (header.height, header.width):
        raise corrupt("PNG", f"decoded as {array.shape} {array.dtype}, its header says {header.width}x{header.height}")
    image = torch.from_numpy(array)
    return image[None] if grey else image.permute(2, 0, 1)


def _jpeg(data: bytes, header: Header, spec: ModelSpec) -> torch.Tensor:
    if header.detail[0] != 8:
        raise corrupt("JPEG", f"{header.detail[0]}-bit samples; re-encode it with 8")
    need = needed_size(header.width, header.height, spec)
    if header.width >= DCT_MIN_REDUCTION * need[0] and header.height >= DCT_MIN_REDUCTION * need[1]:
        return _jpeg_scaled(data, header, spec, need)
    mode = ImageReadMode.GRAY if spec.channels == 1 and header.channels in (1, 3) else ImageReadMode.RGB
    try:  # a writable copy: torch warns about every read-only buffer, which costs more than the copy
        image = DECODE(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode.value, True)
    except (RuntimeError, ValueError) as e:
        raise corrupt("JPEG", str(e)) from e
    if sorted(image.shape[1:]) != sorted((header.height, header.width)):
        raise corrupt("JPEG", f"decoded as {tuple(image.shape[:0:-1])}, its frame header says "
                              f"{header.width}x{header.height}")
    return image


def _jpeg_scaled(data: bytes, header: Header, spec: ModelSpec, need: tuple[int, int]) -> torch.Tensor:
    """A large JPEG decoded by libjpeg at 1/2, 1/4 or 1/8 of its size (its DCT scaling, which
    skips most of the work), no smaller than ``need``: Pillow exposes it as ``draft``."""
    mode = "L" if spec.channels == 1 else "RGB"
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as im:
            if im.size != (header.width, header.height):
                raise corrupt("JPEG", f"Pillow reads {im.size}, the frame header says {header.width}x{header.height}")
            im.draft(mode, need)
            array = np.array(ImageOps.exif_transpose(im).convert(mode))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise corrupt("JPEG", str(e)) from e
    image = torch.from_numpy(array)
    return image[None] if array.ndim == 2 else image.permute(2, 0, 1)


def _webp(data: bytes, header: Header, spec: ModelSpec) -> torch.Tensor:
    if header.detail and header.detail[0] & 0x02:  # animated: torchvision's op refuses it
        try:
            with Image.open(io.BytesIO(data), formats=("WEBP",)) as im:
                array = np.array(im.convert("RGB"))  # the first frame
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
            raise corrupt("WebP", str(e)) from e
        return torch.from_numpy(array).permute(2, 0, 1)
    try:
        image = DECODE(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB.value, False)
    except (RuntimeError, ValueError) as e:
        raise corrupt("WebP", str(e)) from e
    if tuple(image.shape[1:]) != (header.height, header.width):
        raise corrupt("WebP", f"decoded as {tuple(image.shape[:0:-1])}, its header says {header.width}x{header.height}")
    return image


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    """``uint8 [3, h, w]`` to ``[1, h, w]``, rounded as PIL's ``convert("L")`` does."""
    return ((rgb.to(torch.int32) * LUMA).sum(0, keepdim=True) + 0x8000).bitwise_right_shift_(16).to(torch.uint8)


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
