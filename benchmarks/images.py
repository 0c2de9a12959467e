"""Real photographs for the benchmarks, at the sizes traffic brings: the two photos
scikit-learn ships (640x427 each), cropped and scaled with Pillow, JPEG-encoded at quality 90."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images


def photos() -> list[Image.Image]:
    return [Image.fromarray(image) for image in load_sample_images().images]


def jpegs(width: int, height: int, count: int, seed: int = 0, quality: int = 90) -> list[bytes]:
    """``count`` different ``width`` x ``height`` JPEGs: random windows of the photos, scaled."""
    rng = np.random.default_rng(seed)
    sources, out = photos(), []
    for i in range(count):
        photo = sources[i % len(sources)]
        scale = rng.uniform(0.6, 1.0)
        w, h = int(photo.width * scale), int(photo.height * scale)
        left, top = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
        window = photo.resize((width, height), Image.BILINEAR, box=(left, top, left + w, top + h))
        buf = io.BytesIO()
        window.save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out
