"""Command-line flags that describe a model's input: each maps onto a :class:`ModelSpec` field."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from activestream.errors import ConfigError

if TYPE_CHECKING:  # torch: loaded when a spec is made, not when any command's parser is built
    from activestream.learners.models import ModelSpec

#: torchvision's classifiers were trained on ImageNet inputs normalised with these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def add_spec_flags(p: argparse.ArgumentParser, classes: bool = True) -> None:
    p.add_argument("--arch", required=True, help="small_cnn, lenet, or a torchvision classifier name "
                                                 "(resnet18, mobilenet_v3_small, efficientnet_b0 ...)")
    if classes:
        names = p.add_mutually_exclusive_group(required=True)
        names.add_argument("--classes", help="class names in the order of the model's outputs, comma-separated")
        names.add_argument("--classes-file", help="a text file with one class name a line, in output order")
    p.add_argument("--size", required=True, help="input size the model takes: N (square) or HEIGHTxWIDTH")
    p.add_argument("--channels", type=int, choices=(1, 3), default=3, help="1 (grey) or 3 (RGB); default 3")
    p.add_argument("--mean", help="per-channel mean of the normalisation, comma-separated "
                                  "(default: ImageNet's for 3 channels, 0.5 for 1)")
    p.add_argument("--std", help="per-channel standard deviation, comma-separated (default: as --mean)")
    p.add_argument("--resize", default="center_crop",  # ModelSpec refuses any other name
                   help="how an image of another size reaches the input size: center_crop (scale to cover, "
                        "cut the centre; the default), letterbox (scale to fit, pad) or stretch")


def spec_from(args: argparse.Namespace, classes: tuple[str, ...] | None = None) -> ModelSpec:
    """The :class:`ModelSpec` the flags describe; ``classes`` when they come from elsewhere (a folder)."""
    from activestream.learners.models import ModelSpec

    height, width = _size(args.size)
    channels = args.channels
    mean = _floats(args.mean, "--mean", channels) or (IMAGENET_MEAN if channels == 3 else (0.5,))
    std = _floats(args.std, "--std", channels) or (IMAGENET_STD if channels == 3 else (0.5,))
    if any(s <= 0 for s in std):
        raise ConfigError(f"--std {args.std}: every standard deviation must be positive")
    fields = dict(arch=args.arch, classes=classes or class_names(args), channels=channels, height=height,
                  width=width, mean=mean, std=std, resize=args.resize)
    try:
        spec = ModelSpec(**fields)
        ModelSpec.from_dict(spec.to_dict())  # what every reader of the registry will do
        return spec
    except (TypeError, ValueError) as e:
        raise ConfigError(f"the input spec is invalid: {e}") from e


def class_names(args: argparse.Namespace) -> tuple[str, ...]:
    if args.classes_file:
        try:
            text = Path(args.classes_file).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read --classes-file {args.classes_file}: {e}") from e
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
    else:
        names = tuple(n.strip() for n in args.classes.split(","))
    if len(names) < 2 or any(not n for n in names):
        raise ConfigError(f"give at least 2 non-empty class names (got {list(names)})")
    if len(set(names)) != len(names):
        raise ConfigError(f"class names repeat: {sorted(n for n in set(names) if names.count(n) > 1)}")
    return names


def _size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError as e:
        raise ConfigError(f"--size {text!r}: use N or HEIGHTxWIDTH, e.g. 224 or 480x640") from e
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise ConfigError(f"--size {text!r}: use N or HEIGHTxWIDTH with positive numbers, e.g. 224 or 480x640")
    return parts[0], parts[1]


def _floats(text: str | None, flag: str, channels: int) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as e:
        raise ConfigError(f"{flag} {text!r}: give {channels} comma-separated numbers") from e
    if len(values) != channels:
        raise ConfigError(f"{flag} {text!r}: give {channels} number(s), one per channel")
    return values
