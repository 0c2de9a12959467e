"""A simulation's settings checked before anything runs: a value it cannot run is one
:class:`~activestream.errors.ConfigError` that names its flag, as ``run``'s settings are.

>>> check(SimConfig(budget=2.0))
Traceback (most recent call last):
...
activestream.errors.ConfigError: invalid setting --budget: must be at most 1 (got 2.0)
>>> check(SimConfig(strategy="smallest"))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
activestream.errors.ConfigError: invalid setting --strategy: unknown strategy 'smallest'; use one of: ..., all or none
"""

from __future__ import annotations

from activestream.errors import ActivestreamError, ConfigError
from activestream.selectors import SELECTORS
from activestream.simulation.config import SimConfig, broken, flag_of
from activestream.simulation.datasets import check_dataset
from activestream.simulation.labelers import make_labeler
from activestream.simulation.policy import make_policy
from activestream.simulation.scenarios import SCENARIOS


def check(config: SimConfig, arm: str | None = None) -> None:
    """Each value of ``config`` is one it can run, or a ConfigError naming its flag (``arm``,
    e.g. ``--arms``, for the strategy and labelers when they came from there); before any
    model is built, so a typo fails in a second, not after the seed model."""
    for field, value in config.to_dict().items():
        problem = broken(field, value)
        if problem:
            raise ConfigError(f"invalid setting {flag_of(field)}: {problem} (got {value!r})")
    if config.scenario not in SCENARIOS:
        raise ConfigError(f"invalid setting --scenario: unknown scenario {config.scenario!r}; use one of "
                          f"{', '.join(SCENARIOS)}")
    strategy = config.strategy.split("/")[0]
    if strategy not in (*SELECTORS, "all", "none"):
        raise ConfigError(f"invalid setting {arm or '--strategy'}: unknown strategy {strategy!r}; use one of: "
                          f"{', '.join(SELECTORS)}, all or none")
    _named(arm or "--strategy", make_policy, config.strategy, budget=config.budget, window=config.window)
    _named(arm or "--labeler", make_labeler, config.labeler, classes=2)
    if config.pseudo and _named(arm or "--pseudo", make_labeler, config.pseudo, classes=2).kind != "pseudo":
        raise ConfigError(f"invalid setting {arm or '--pseudo'}: {config.pseudo!r} gives human labels; "
                          "use self, confident:MIN_P or committee")
    from activestream.drift import parse_detectors

    _named("--drift-detectors", parse_detectors, config.drift_detectors)
    for name in ("mnist", "usps") if config.scenario == "mnist-usps" else (config.dataset,):
        check_dataset(name, config.data_dir)  # names --dataset or --data-dir itself
    _check_model(config.arch, config.device)


def _named(flag: str, build, *args, **kwargs):
    """``build(*args, **kwargs)``, its complaint made one that names ``flag``."""
    try:
        return build(*args, **kwargs)
    except (ActivestreamError, ValueError) as e:
        raise ConfigError(f"invalid setting {flag}: {e}") from e


def _check_model(arch: str, device: str) -> None:
    import torch
    import torchvision

    if arch not in ("lenet", "small_cnn") and arch not in torchvision.models.list_models(module=torchvision.models):
        raise ConfigError(f"invalid setting --arch: unknown architecture {arch!r}; use lenet, small_cnn or a "
                          "torchvision classifier name such as resnet18")
    try:
        wanted = torch.device("cpu" if device == "auto" else device)
    except RuntimeError as e:
        raise ConfigError(f"invalid setting --device: {device!r} is not a device; use auto, cpu or cuda") from e
    if wanted.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"invalid setting --device: {device!r}, but torch sees no CUDA device here; use auto or cpu")


def at_least(flag: str, value: int, least: int) -> None:
    """A count flag of the command itself (``--seeds``, ``--jobs`` ...) at least ``least``."""
    if value < least:
        raise ConfigError(f"invalid setting {flag}: must be at least {least} (got {value})")
