"""Model registry: versioned safetensors artifacts with JSON metadata on local disk.

Layout: ``<root>/<name>/<version:06d>/model.safetensors`` plus ``metadata.json``.
Nothing is ever unpickled: weights are safetensors, metadata is JSON, and the
weights' sha256 is checked before they are deserialized.

A version number is claimed with ``os.mkdir`` (atomic, fails if taken), so two
processes registering at once never get the same number. A version folder
without ``metadata.json`` is incomplete (a writer crashed or is still writing)
and is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from activestream.errors import IntegrityError, InvalidInput, NotFound
from activestream.storage.blobs import atomic_write, validate_key

__all__ = ["ModelRegistry", "ModelVersion", "STATUSES"]

STATUSES = ("candidate", "promoted", "rejected")
WEIGHTS = "model.safetensors"
METADATA = "metadata.json"


def _check_status(status: object) -> str:
    if status not in STATUSES:
        raise InvalidInput("bad_status", f"model status {status!r} is unknown; use one of {', '.join(STATUSES)}")
    return status  # type: ignore[return-value]


@dataclass(frozen=True)
class ModelVersion:
    """Metadata of one registered model version (weights live at ``uri``).

    ``spec`` is an opaque JSON architecture description, passed through untouched.

    >>> v = ModelVersion("clf", 2, 1, "2024-01-01T00:00:00+00:00", 500, {"acc": 0.9},
    ...                  "ab" * 32, {"arch": "small_cnn"}, "candidate", "file:///m/model.safetensors")
    >>> ModelVersion.from_dict(v.to_dict()) == v
    True
    """

    name: str
    version: int
    parent: int | None
    created: str
    train_size: int
    metrics: dict[str, float]
    sha256: str
    spec: dict
    status: str
    uri: str

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelVersion":
        """Inverse of ``to_dict``; ``InvalidInput("bad_model_version")`` if fields are missing."""
        try:
            return cls(**{k: d[k] for k in cls.__dataclass_fields__})
        except (KeyError, TypeError) as e:
            raise InvalidInput(
                "bad_model_version",
                f"model version metadata lacks field {e}; it needs {', '.join(cls.__dataclass_fields__)}",
            ) from e


def _serialize(tensors: dict[str, np.ndarray]) -> bytes:
    if not isinstance(tensors, dict) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in tensors.items()
    ):
        raise InvalidInput("bad_tensors", "tensors must be a dict of str -> numpy.ndarray; convert torch tensors with .cpu().numpy()")
    try:
        return st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
    except (SafetensorError, ValueError, TypeError) as e:
        raise InvalidInput("bad_tensors", f"safetensors cannot store these arrays ({e}); use numeric dtypes") from e


class ModelRegistry:
    """Versions of named models, stored as safetensors + JSON under ``root``.

    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as d:
    ...     reg = ModelRegistry(d)
    ...     v = reg.register("clf", {"w": np.ones((2, 3), np.float32)}, spec={"arch": "linear"},
    ...                      parent=None, train_size=10, metrics={"acc": 0.5})
    ...     tensors, meta = reg.load("clf", v.version)
    ...     v.version, v.status, tensors["w"].shape, meta == v
    (1, 'candidate', (2, 3), True)
    """

    def __init__(self, root: str | os.PathLike):
        self.root = root

    def _dir(self, name: str, version: int | None = None) -> Path:
        path = Path(self.root) / validate_key(name, "model name")
        if version is None:
            return path
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InvalidInput("bad_version", f"model version must be an int >= 1, got {version!r}")
        return path / f"{version:06d}"

    def _claim(self, name: str) -> tuple[int, Path]:
        """Create the next free version folder; ``os.mkdir`` makes the claim atomic."""
        base = self._dir(name)
        base.mkdir(parents=True, exist_ok=True)
        taken = [int(p.name) for p in base.iterdir() if p.name.isdigit()]
        version = max(taken, default=0) + 1
        while True:
            path = base / f"{version:06d}"
            try:
                path.mkdir()
                return version, path
            except FileExistsError:
                version += 1

    def register(
        self,
        name: str,
        tensors: dict[str, np.ndarray],
        *,
        spec: dict,
        parent: int | None,
        train_size: int,
        metrics: dict[str, float],
        status: str = "candidate",
    ) -> ModelVersion:
        """Store ``tensors`` as the next version of ``name`` and return its metadata."""
        validate_key(name, "model name")
        _check_status(status)
        payload = _serialize(tensors)
        try:
            json.dumps(spec)
            metrics = {str(k): float(v) for k, v in metrics.items()}
        except (TypeError, ValueError) as e:
            raise InvalidInput("bad_model_metadata", f"spec must be JSON-serializable and metrics a dict of numbers ({e})") from e
        version, path = self._claim(name)
        atomic_write(path / WEIGHTS, payload)
        mv = ModelVersion(
            name=name, version=version, parent=parent, created=datetime.now(timezone.utc).isoformat(),
            train_size=int(train_size), metrics=metrics, sha256=hashlib.sha256(payload).hexdigest(),
            spec=spec, status=status, uri=(path / WEIGHTS).resolve().as_uri(),
        )
        self._write_meta(path, mv)
        return mv

    def _write_meta(self, path: Path, mv: ModelVersion) -> None:
        atomic_write(path / METADATA, json.dumps(mv.to_dict(), indent=2, sort_keys=True).encode())

    def _read_meta(self, path: Path) -> ModelVersion:
        meta = path / METADATA
        try:
            return ModelVersion.from_dict(json.loads(meta.read_bytes()))
        except (ValueError, InvalidInput) as e:
            raise IntegrityError(f"model metadata {meta} is corrupt ({e}); restore it or delete the version folder") from e

    def get(self, name: str, version: int) -> ModelVersion:
        """Metadata of one version; ``NotFound`` if it does not exist or is incomplete."""
        path = self._dir(name, version)
        try:
            return self._read_meta(path)
        except FileNotFoundError as e:
            known = [v.version for v in self.versions(name)]
            raise NotFound(
                f"model {name!r} has no version {version} in {self.root} (complete versions: {known}); "
                "list them with ModelRegistry.versions(name)"
            ) from e

    def load(self, name: str, version: int) -> tuple[dict[str, np.ndarray], ModelVersion]:
        """Weights and metadata of one version, after checking the weights' sha256."""
        mv = self.get(name, version)
        weights = self._dir(name, version) / WEIGHTS
        try:
            payload = weights.read_bytes()
        except FileNotFoundError as e:
            raise IntegrityError(f"model weights {weights} are missing although {METADATA} exists; re-register the model") from e
        actual = hashlib.sha256(payload).hexdigest()
        if actual != mv.sha256:
            raise IntegrityError(
                f"model weights {weights} are corrupt or were modified: expected sha256 {mv.sha256}, "
                f"got {actual}; re-register the model or restore the file"
            )
        try:
            return st_load(payload), mv
        except SafetensorError as e:
            raise IntegrityError(f"model weights {weights} match their sha256 but cannot be read ({e})") from e

    def versions(self, name: str) -> list[ModelVersion]:
        """Every complete version of ``name``, sorted by version; ``[]`` if none."""
        base = self._dir(name)
        if not base.is_dir():
            return []
        found = []
        for path in base.iterdir():
            if path.name.isdigit() and (path / METADATA).is_file():
                found.append(self._read_meta(path))
        return sorted(found, key=lambda mv: mv.version)

    def latest(self, name: str, status: str | None = "promoted") -> ModelVersion | None:
        """Highest version with ``status`` (any status when ``None``); ``None`` if there is none."""
        if status is not None:
            _check_status(status)
        matching = [mv for mv in self.versions(name) if status is None or mv.status == status]
        return matching[-1] if matching else None

    def set_status(self, name: str, version: int, status: str) -> ModelVersion:
        """Change the status of one version (the only mutable field) and return the new metadata."""
        _check_status(status)
        mv = self.get(name, version)
        updated = replace(mv, status=status)
        self._write_meta(self._dir(name, version), updated)
        return updated
