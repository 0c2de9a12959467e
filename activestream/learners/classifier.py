"""A network, its spec and its version: the unit the predictor serves and the learner trains."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from activestream.errors import IntegrityError
from activestream.learners.models import ModelSpec, build_model
from activestream.learners.preprocess import to_tensor


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def state_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's weights as numpy arrays (what the registry stores)."""
    return {k: v.detach().cpu().contiguous().numpy().copy() for k, v in model.state_dict().items()}


def _mismatch(spec: ModelSpec, expected: dict[str, tuple], got: dict[str, tuple]) -> str | None:
    """What keeps weights of shapes ``got`` out of ``spec``'s network (shapes ``expected``); None if nothing."""
    heads = [k for k, shape in expected.items() if k.endswith("weight") and shape[:1] == (spec.num_classes,)]
    head = heads[-1] if heads else None
    if head in got and got[head][:1] != expected[head][:1]:
        return f"the spec names {spec.num_classes} classes but the weights' output layer {head} has {got[head][0]}"
    missing, extra = [k for k in expected if k not in got], [k for k in got if k not in expected]
    if missing or extra:
        parts = [f"{len(missing)} of its tensors are missing ({', '.join(missing[:3])})"] if missing else []
        parts += [f"{len(extra)} tensors are not its own ({', '.join(extra[:3])})"] if extra else []
        return f"the weights are not a {spec.arch} network: {' and '.join(parts)}"
    wrong = [f"{k} is {list(got[k])}, not {list(shape)}" for k, shape in expected.items() if got[k] != shape]
    return f"tensor shapes differ from a {spec.arch} network's: {'; '.join(wrong[:3])}" if wrong else None


def _shape(array) -> tuple:
    # Scalars (BatchNorm's counters) come back from safetensors as [1]; torch loads them as [].
    return tuple(array.shape) or (1,)


def _load_weights(model: nn.Module, spec: ModelSpec, arrays: dict[str, np.ndarray]) -> None:
    expected = {k: _shape(v) for k, v in model.state_dict().items()}
    problem = _mismatch(spec, expected, {k: _shape(np.asarray(v)) for k, v in arrays.items()})
    fix = "re-register the weights with the spec they were trained with"
    if problem:
        raise IntegrityError(f"model weights do not fit their spec ({spec.arch}, {spec.num_classes} classes): "
                             f"{problem}; {fix}")
    try:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})
    except (RuntimeError, TypeError, ValueError) as e:
        raise IntegrityError(f"model weights do not fit their spec ({spec.arch}): {e}; {fix}") from e


@dataclass
class Classifier:
    """A network ready to predict.

    >>> spec = ModelSpec("small_cnn", ("a", "b", "c"), 1, 8, 8)
    >>> clf = Classifier.fresh(spec)
    >>> clf.predict_proba(np.zeros((4, 8, 8), dtype=np.uint8)).shape
    (4, 3)
    """

    model: nn.Module
    spec: ModelSpec
    version: int | None = None
    device: torch.device = torch.device("cpu")
    #: Images per forward pass on a CPU; 0: one pass per call. The small CNN's first
    #: activations take 100 KB an image: a chunk of 64 (6 MB) stays in the CPU's cache,
    #: where a batch of 256 (26 MB, twice that for two predictor processes) goes out to memory.
    chunk: int = 0

    @classmethod
    def fresh(cls, spec: ModelSpec, device: str = "cpu", seed: int = 0) -> "Classifier":
        torch.manual_seed(seed)
        return cls(build_model(spec), spec, None, resolve_device(device)).to_device()

    @classmethod
    def from_arrays(cls, spec: ModelSpec, arrays: dict[str, np.ndarray], version: int | None, device: str = "cpu",
                    chunk: int = 0) -> "Classifier":
        """``IntegrityError``, saying what differs, if the arrays are not weights of ``spec``'s network."""
        model = build_model(spec)
        _load_weights(model, spec, arrays)
        return cls(model, spec, version, resolve_device(device), chunk).to_device()

    def to_device(self) -> "Classifier":
        self.model.to(self.device)
        if self.device.type == "cpu":
            # Measured 2-3x faster convolutions on small CPUs for mobilenet-like nets.
            self.model.to(memory_format=torch.channels_last)
        self.model.eval()
        return self

    @torch.inference_mode()
    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """``uint8 [batch, h, w(, c)]`` to class probabilities ``float32 [batch, classes]``."""
        if len(images) == 0:
            return np.zeros((0, self.spec.num_classes), dtype=np.float32)
        return torch.softmax(self._run(self.model, self._input(images)).float(), dim=1).cpu().numpy()

    @torch.inference_mode()
    def embed(self, images: np.ndarray) -> np.ndarray:
        """Penultimate-layer features ``float32 [batch, dim]`` (for diversity filters)."""
        features, _ = self._split()
        return self._run(features, self._input(images)).float().cpu().numpy() if len(images) else np.zeros((0, 0), np.float32)

    @torch.inference_mode()
    def predict_with_embeddings(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities ``[batch, classes]`` and penultimate features ``[batch, dim]`` from one pass.

        The features are None for an architecture without a features/head split.
        """
        if len(images) == 0 or getattr(self.model, "features", None) is None or getattr(self.model, "head", None) is None:
            return self.predict_proba(images), None
        features, head = self._split()
        z = self._run(features, self._input(images))
        return torch.softmax(head(z).float(), dim=1).cpu().numpy(), z.float().cpu().numpy()

    @torch.inference_mode()
    def sample_proba(self, images: np.ndarray, samples: int = 10, seed: int = 0) -> np.ndarray:
        """MC-dropout: ``samples`` passes of the head with dropout on, ``float32 [batch, classes, samples]``.

        The features are computed once; only the dropout head is sampled, so this
        costs little more than one forward pass.
        """
        features, head = self._split()
        z = features(self._input(images))
        head.train()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            passes = [torch.softmax(head(z).float(), dim=1) for _ in range(samples)]
        finally:
            head.eval()
            torch.random.set_rng_state(generator_state)
        return torch.stack(passes, dim=2).cpu().numpy()

    def _split(self) -> tuple[nn.Module, nn.Module]:
        features, head = getattr(self.model, "features", None), getattr(self.model, "head", None)
        if features is None or head is None:
            raise ValueError(f"{self.spec.arch} has no features/head split: embeddings and MC-dropout "
                             "samples need the small_cnn architecture")
        return features, head

    def _run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.chunk <= 0 or self.device.type != "cpu" or len(x) <= self.chunk:
            return module(x)
        return torch.cat([module(part) for part in x.split(self.chunk)])

    def _input(self, images: np.ndarray) -> torch.Tensor:
        self.model.eval()
        x = to_tensor(images, self.spec).to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cpu" else x

    def predict_batches(self, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
        parts = [self.predict_proba(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        return np.concatenate(parts) if parts else self.predict_proba(images)

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        if len(labels) == 0:
            return float("nan")
        return float((self.predict_batches(images).argmax(1) == labels).mean())
