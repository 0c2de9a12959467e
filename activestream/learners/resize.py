"""Bringing images of any size to a model's input size, by the version's resize policy.

Works on ``uint8 [n, channels, h, w]`` tensors, a group of images of one size at a time:
torch's antialiased bilinear resize of uint8 images (the kernel torchvision's ``Resize``
uses) runs 3-9 times faster than Pillow's on these sizes, and one call for a group costs
less than one an image (``benchmarks/decode.py``).
"""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as F

from activestream.learners.models import ModelSpec


def fit(images: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """``uint8 [n, c, h, w]`` to ``[n, c, spec.height, spec.width]`` by ``spec.resize``.

    >>> spec = ModelSpec("small_cnn", ("a", "b"), 1, 2, 2, resize="letterbox")
    >>> fit(torch.full((1, 1, 1, 2), 9, dtype=torch.uint8), spec)[0, 0].tolist()
    [[9, 9], [128, 128]]
    >>> fit(torch.arange(6, dtype=torch.uint8).view(1, 1, 2, 3), ModelSpec("small_cnn", ("a",), 1, 2, 2))[0, 0].tolist()
    [[0, 1], [3, 4]]
    """
    h, w = images.shape[-2:]
    size = [spec.height, spec.width]
    if [h, w] == size:
        return images
    if spec.resize == "stretch":
        return _resize(images, size)
    if spec.resize == "center_crop":
        return F.center_crop(_resize(images, list(_scaled(h, w, spec, max))), size)
    nh, nw = _scaled(h, w, spec, min)
    left, top = (spec.width - nw) // 2, (spec.height - nh) // 2
    # the mean colour: padding reads as zero once normalised
    fill = [round(255 * m) for m in spec.mean] * (images.shape[1] // len(spec.mean))
    return F.pad(_resize(images, [nh, nw]), [left, top, spec.width - nw - left, spec.height - nh - top], fill=fill)


def needed_size(width: int, height: int, spec: ModelSpec) -> tuple[int, int]:
    """``(width, height)`` an image of this size is resized to before any crop or pad, in its
    own orientation or turned a quarter (EXIF may turn it): a decoder may stop at this size."""
    if spec.resize == "stretch":
        side = max(spec.height, spec.width)
        return side, side
    pick = max if spec.resize == "center_crop" else min
    upright, turned = _scaled(height, width, spec, pick), _scaled(width, height, spec, pick)
    return max(upright[1], turned[0]), max(upright[0], turned[1])


def _scaled(h: int, w: int, spec: ModelSpec, pick) -> tuple[int, int]:
    """``(h, w)`` scaled by ``pick`` (max: to cover the input, min: to fit inside it), as
    torchvision's ``Resize(size)`` rounds (down) its shorter side's partner."""
    scale = pick(spec.height / h, spec.width / w)
    if pick is max:
        return max(spec.height, int(h * scale)), max(spec.width, int(w * scale))
    return min(spec.height, max(1, round(h * scale))), min(spec.width, max(1, round(w * scale)))


def _resize(images: torch.Tensor, size: list[int]) -> torch.Tensor:
    if list(images.shape[-2:]) == size:
        return images
    return F.resize(images, size, interpolation=F.InterpolationMode.BILINEAR, antialias=True)
