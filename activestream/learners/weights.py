"""A user's weights file in, a checked classifier out: what ``activestream models import``
and ``activestream seed --backbone`` read.

Two formats: safetensors, and a PyTorch state-dict file (``torch.save(model.state_dict(),
path)``), read with ``torch.load(weights_only=True)``, which rebuilds tensors and plain
containers and refuses any other pickled object, so a file cannot run code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from activestream.errors import ConfigError, IntegrityError
from activestream.learners.classifier import Classifier
from activestream.learners.models import ModelSpec

#: Keys under which training scripts commonly nest the state dict in a checkpoint.
NESTED = ("state_dict", "model_state_dict", "model")
#: The prefix ``nn.DataParallel`` and ``DistributedDataParallel`` put on every key.
WRAPPED = "module."


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors or PyTorch state-dict file, as a state dict.

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     f = os.path.join(d, "w.pt")
    ...     torch.save({"model": {"module.fc.weight": torch.ones(2, 3)}, "epoch": 3}, f)
    ...     list(read_state(f))
    ['fc.weight']
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {path} does not exist")
    state = _safetensors(path) if path.suffix == ".safetensors" else _torch_file(path)
    if len(state) > 0 and all(k.startswith(WRAPPED) for k in state):
        state = {k.removeprefix(WRAPPED): v for k, v in state.items()}
    return state


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"{path} is not a readable safetensors file ({e})") from e


def _torch_file(path: Path) -> dict[str, torch.Tensor]:
    import pickle

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as e:
        raise ConfigError(
            f"{path} is not a PyTorch state-dict file that loads with weights_only=True ({e}); save the weights "
            "with torch.save(model.state_dict(), path) or as safetensors (a whole pickled model is refused: "
            "unpickling can run code)") from e
    if isinstance(loaded, dict):
        for key in NESTED:
            if _is_state(loaded.get(key)):
                return dict(loaded[key])
    if _is_state(loaded):
        return dict(loaded)
    raise ConfigError(f"{path} holds {type(loaded).__name__}, not a state dict (names to tensors, or one under "
                      f"{', '.join(repr(k) for k in NESTED)}); save it with torch.save(model.state_dict(), path)")


def _is_state(obj: object) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def import_classifier(spec: ModelSpec, path: str | Path) -> Classifier:
    """``spec``'s network with the weights in ``path``; ``ConfigError`` saying what does not fit
    (a head whose outputs differ from the class count, another architecture's tensors)."""
    state = read_state(path)
    try:
        return Classifier.from_arrays(spec, state_arrays_of(state), None)
    except IntegrityError as e:
        raise ConfigError(f"the weights in {path} do not fit {spec.arch} with {spec.num_classes} classes "
                          f"({', '.join(spec.classes)}): {e}. Give as many class names as the model has "
                          "outputs, and the architecture the weights were trained as") from e


def state_arrays_of(state: dict[str, torch.Tensor]) -> dict:
    """Tensors as numpy arrays (numpy has no bfloat16: those become float32, as the model loads them)."""
    return {k: (v.float() if v.dtype == torch.bfloat16 else v).detach().cpu().contiguous().numpy()
            for k, v in state.items()}


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> tuple[int, list[str]]:
    """Copy into ``model`` every tensor of ``state`` whose name and shape it shares (the
    backbone); the rest (a head for other classes) keeps its fresh weights. Returns how
    many tensors were copied and the names of the model's tensors left fresh."""
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not fitting:
        raise ConfigError(f"no tensor of {source} fits this architecture by name and shape: is it a backbone "
                          f"of the same architecture? (its first names: {', '.join(list(state)[:3])})")
    model.load_state_dict(fitting, strict=False)
    return len(fitting), [k for k in own if k not in fitting]

