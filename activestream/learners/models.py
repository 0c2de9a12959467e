"""Model architectures and their JSON spec.

A :class:`ModelSpec` is everything needed to rebuild a network from stored weights:
it travels with every registered version as plain JSON, so nothing is unpickled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from activestream.errors import ConfigError

#: How an image of another size is brought to the model's: ``center_crop`` scales it until it
#: covers the input (its shorter side, for a square input) then cuts the centre out;
#: ``letterbox`` scales it until it fits inside and pads the rest with the mean colour (zero once
#: normalised); ``stretch`` scales each side to the input's, changing the aspect ratio. An image of
#: the input's exact size passes through all three unchanged.
RESIZE_POLICIES = ("center_crop", "letterbox", "stretch")


@dataclass(frozen=True)
class ModelSpec:
    """Architecture and input contract of a classifier.

    >>> spec = ModelSpec(arch="small_cnn", classes=("a", "b"), channels=1, height=28, width=28)
    >>> ModelSpec.from_dict(spec.to_dict()) == spec
    True
    >>> build_model(spec)(torch.zeros(3, 1, 28, 28)).shape
    torch.Size([3, 2])

    A version stored before the resize policy existed loads with the default:

    >>> ModelSpec.from_dict({k: v for k, v in spec.to_dict().items() if k != "resize"}).resize
    'center_crop'
    """

    arch: str
    classes: tuple[str, ...]
    channels: int
    height: int
    width: int
    mean: tuple[float, ...] = field(default=(0.5,))
    std: tuple[float, ...] = field(default=(0.5,))
    resize: str = "center_crop"  # one of RESIZE_POLICIES

    def __post_init__(self):
        if self.resize not in RESIZE_POLICIES:
            raise ConfigError(f"unknown resize policy {self.resize!r}: use one of {', '.join(RESIZE_POLICIES)}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def mode(self) -> str:
        """The PIL image mode inputs must have."""
        return "L" if self.channels == 1 else "RGB"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        d = dict(d)
        for key in ("classes", "mean", "std"):
            d[key] = tuple(d[key])
        return cls(**d)


class SmallCNN(nn.Module):
    """Three conv blocks and a linear head: fast on a CPU, fine for 8-64 px images."""

    def __init__(self, channels: int, num_classes: int, width: int = 32, dropout: float = 0.25):
        super().__init__()

        def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
            layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        self.features = nn.Sequential(
            *block(channels, width, True), *block(width, 2 * width, True), *block(2 * width, 4 * width, False),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class LeNet(nn.Module):
    """Two conv blocks, a dense hidden layer and a linear head: LeNet's shape.

    Learns from a few hundred labels much faster than a globally pooled CNN, and is
    cheap on a CPU: the simulations' model.
    """

    def __init__(self, channels: int, num_classes: int, height: int, width: int, base: int = 16,
                 hidden: int = 128, dropout: float = 0.25):
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                    nn.MaxPool2d(2)]

        flat = 2 * base * (height // 4) * (width // 4)
        self.features = nn.Sequential(*block(channels, base), *block(base, 2 * base), nn.Flatten(),
                                      nn.Linear(flat, hidden), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(spec: ModelSpec) -> nn.Module:
    """A fresh, randomly initialised network for ``spec`` (weights come from the registry)."""
    if spec.arch == "small_cnn":
        return SmallCNN(spec.channels, spec.num_classes)
    if spec.arch == "lenet":
        return LeNet(spec.channels, spec.num_classes, spec.height, spec.width)
    return _torchvision_model(spec)


def _torchvision_model(spec: ModelSpec) -> nn.Module:
    import torchvision

    try:
        model = torchvision.models.get_model(spec.arch, weights=None, num_classes=spec.num_classes)
    except ValueError as e:
        raise ConfigError(
            f"unknown architecture {spec.arch!r}: use 'small_cnn', 'lenet' or a torchvision classifier name "
            f"such as resnet18 or mobilenet_v3_small"
        ) from e
    if spec.channels != 3:
        _adapt_first_conv(model, spec.channels)
    return model


def _adapt_first_conv(model: nn.Module, channels: int) -> None:
    """Swap the first 3-channel convolution for one taking ``channels`` inputs."""
    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                setattr(module, name, nn.Conv2d(
                    channels, child.out_channels, child.kernel_size, child.stride,
                    child.padding, child.dilation, child.groups, child.bias is not None,
                ))
                return
    raise ConfigError("could not find a 3-channel input convolution to adapt to grey images")


def pretrained_state(arch: str, weights: str) -> dict[str, torch.Tensor]:
    """Pretrained weights for a backbone, from a local file or torchvision's hub.

    ``weights`` is a path to a safetensors or PyTorch state-dict file (read without
    unpickling anything but tensors), or a torchvision weights name (``"DEFAULT"``,
    ``"IMAGENET1K_V1"``) for machines that can reach the internet.
    """
    from pathlib import Path

    if Path(weights).suffix in (".safetensors", ".pt", ".pth", ".bin") or Path(weights).exists():
        from activestream.learners.weights import read_state

        return read_state(weights)
    import torchvision

    try:
        return torchvision.models.get_weight(f"{_weights_enum(arch)}.{weights}").get_state_dict(progress=False)
    except (ValueError, KeyError, AttributeError) as e:
        raise ConfigError(f"{weights!r} is neither a weights file nor a torchvision weights name of {arch} "
                          "(DEFAULT, IMAGENET1K_V1 ...)") from e


def _weights_enum(arch: str) -> str:
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    return enum.__name__
