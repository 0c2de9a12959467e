"""Images as cameras and image tools write them, for the tests: every size, mode and
container the predictor must take (grey, RGB, RGBA, palette, 16-bit, CMYK JPEG, a JPEG
turned by its EXIF orientation, WebP)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

SIZES = [(17, 23), (224, 224), (640, 480), (1024, 768)]  # (width, height)
ORIENTED = 6  # EXIF: the stored pixels must be turned 90 degrees clockwise to stand upright


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth colour gradients, a disc off centre and mild noise: what a camera sees, and
    lopsided, so a turn or a shifted crop shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    disc = ((x - 0.3) ** 2 + (y - 0.35) ** 2 < 0.04) * 90
    rgb = np.stack([200 * x + disc, 180 * y + 40, 255 - 150 * x * y + disc / 2], -1) + rng.normal(0, 4, (height, width, 3))
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


def enlarged(pixels: np.ndarray, width: int, height: int) -> Image.Image:
    """A small image (``uint8 [h, w]`` grey or ``[h, w, 3]``) scaled up to ``width`` x ``height``
    in RGB, a grey one tinted: a dataset image dressed as a camera frame of any size."""
    image = Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR)
    return ImageOps.colorize(image, black="#101840", white="#fff0a0") if image.mode == "L" else image.convert("RGB")


def saved(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def oriented_jpeg(image: Image.Image) -> bytes:
    """``image`` stored turned a quarter anticlockwise, with the EXIF orientation that turns it back."""
    exif = Image.Exif()
    exif[0x0112] = ORIENTED
    return saved(image.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=92, exif=exif.tobytes())


#: Name -> how an RGB image is written in that mode and container.
ENCODINGS = {
    "grey PNG": lambda im: saved(im.convert("L"), "PNG"),
    "RGB PNG": lambda im: saved(im, "PNG"),
    "RGBA PNG": lambda im: saved(im.convert("RGBA"), "PNG"),
    "grey+alpha PNG": lambda im: saved(im.convert("LA"), "PNG"),
    "palette PNG": lambda im: saved(im.convert("P"), "PNG"),
    "16-bit PNG": lambda im: saved(Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257), "PNG"),
    "grey JPEG": lambda im: saved(im.convert("L"), "JPEG", quality=92),
    "RGB JPEG": lambda im: saved(im, "JPEG", quality=92),
    "progressive JPEG": lambda im: saved(im, "JPEG", quality=92, progressive=True),
    "CMYK JPEG": lambda im: saved(im.convert("CMYK"), "JPEG", quality=92),
    "EXIF-turned JPEG": oriented_jpeg,
    "lossy WebP": lambda im: saved(im, "WEBP", quality=90),
    "lossless RGBA WebP": lambda im: saved(im.convert("RGBA"), "WEBP", lossless=True),
}


def suffix(data: bytes) -> str:
    """The file name extension of encoded image bytes.

    >>> suffix(saved(Image.new("L", (2, 2)), "PNG")), suffix(saved(Image.new("L", (2, 2)), "JPEG"))
    ('.png', '.jpg')
    """
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    return ".webp" if data[8:12] == b"WEBP" else ".bin"
