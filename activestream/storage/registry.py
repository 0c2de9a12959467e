"""Model registry: versioned safetensors artifacts with JSON metadata, in a local folder
or an S3-compatible bucket (``s3://bucket/prefix``, see :mod:`activestream.storage.objects`).

Layout: ``<root>/<name>/<version:06d>/model.safetensors`` plus ``metadata.json``.
Nothing is ever unpickled: weights are safetensors, metadata is JSON, and the
weights' sha256 is checked before they are deserialized.

A version number is claimed atomically (``os.mkdir`` of its folder; in a bucket a
conditional put that fails if the object exists), so two processes registering at once,
on one machine or on several, never get the same number. A version without
``metadata.json`` is incomplete (a writer crashed or is still writing) and is ignored.

``metadata.json`` carries a seal: the sha256 of the canonical JSON of every field and,
when the registry has a ``key``, an HMAC-SHA256 of it. The digest catches a corrupt or
hand-edited file; only the signature stops someone who can write files but lacks the
key from turning a rejected version into a promoted one. A version whose metadata is
unreadable or fails its seal is skipped (with a warning) by ``versions`` and ``latest``,
so one bad file never stops the loop, and ``get``/``load`` refuse it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from activestream.errors import ConfigError, IntegrityError, InvalidInput, NotFound
from activestream.storage.blobs import validate_key
from activestream.storage.objects import Objects, open_objects

__all__ = ["ModelRegistry", "ModelVersion", "STATUSES"]

log = logging.getLogger(__name__)

#: ``retired``: withdrawn by an operator (``activestream models retire``) or by a rollback;
#: like ``rejected``, never served until someone promotes it again on purpose.
STATUSES = ("candidate", "promoted", "rejected", "retired")
WEIGHTS = "model.safetensors"
METADATA = "metadata.json"
SEAL = "seal"


def _check_status(status: object) -> str:
    if status not in STATUSES:
        raise InvalidInput("bad_status", f"model status {status!r} is unknown; use one of {', '.join(STATUSES)}")
    return status  # type: ignore[return-value]


@dataclass(frozen=True)
class ModelVersion:
    """Metadata of one registered model version (weights live at ``uri``).

    ``spec`` is an opaque JSON architecture description, passed through untouched.
    ``history`` records every status decision, oldest first: ``{"status", "by", "reason",
    "at"}``, and a ``promotion`` number (1 + the highest of the model's) on each promotion,
    which orders promotions across machines without trusting their clocks.

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
    history: tuple[dict, ...] = ()

    @property
    def promotion(self) -> int:
        """The number of this version's last promotion; 0 if it has none on record."""
        return max((int(d.get("promotion", 0)) for d in self.history), default=0)

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field (``history`` left out while empty, so metadata
        sealed before versions had a history keeps its seal)."""
        d = asdict(self)
        d["history"] = list(d["history"])
        if not self.history:
            del d["history"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelVersion":
        """Inverse of ``to_dict``; ``InvalidInput("bad_model_version")`` if fields are missing."""
        try:
            history = d.get("history", ())
            if not isinstance(history, (list, tuple)) or not all(isinstance(e, dict) for e in history):
                raise TypeError("'history' must be a list of objects")
            required = [k for k in cls.__dataclass_fields__ if k != "history"]
            return cls(**{k: d[k] for k in required}, history=tuple(history))
        except (KeyError, TypeError) as e:
            raise InvalidInput(
                "bad_model_version",
                f"model version metadata lacks field {e}; it needs {', '.join(cls.__dataclass_fields__)}",
            ) from e


def _canonical(mv: ModelVersion) -> bytes:
    return json.dumps(mv.to_dict(), sort_keys=True, separators=(",", ":")).encode()


def _signature(key: bytes | str, mv: ModelVersion) -> str:
    secret = key.encode() if isinstance(key, str) else key
    return hmac.new(secret, _canonical(mv), hashlib.sha256).hexdigest()


def _same(recorded: object, expected: str) -> bool:
    return hmac.compare_digest(str(recorded).encode(), expected.encode())


_FIX = ("restore it from a backup or delete the version folder; if you have read it and trust it, "
        "vouch for it with ModelRegistry(root, key).reseal(name, version)")


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

    ``key`` (bytes or str, optional) signs every ``metadata.json`` with HMAC-SHA256; a
    registry with a key refuses metadata that its key did not sign.

    >>> import tempfile, numpy as np
    >>> with tempfile.TemporaryDirectory() as d:
    ...     reg = ModelRegistry(d, key=b"secret")
    ...     v = reg.register("clf", {"w": np.ones((2, 3), np.float32)}, spec={"arch": "linear"},
    ...                      parent=None, train_size=10, metrics={"acc": 0.5})
    ...     tensors, meta = reg.load("clf", v.version)
    ...     v.version, v.status, tensors["w"].shape, meta == v
    ...     reg.set_status("clf", 1, "promoted").status
    ...     ModelRegistry(d, key=b"another").latest("clf") is None  # not signed with its key: refused
    (1, 'candidate', (2, 3), True)
    'promoted'
    True
    """

    def __init__(self, root: "str | os.PathLike | Objects", key: bytes | str | None = None):
        self.root = root
        self.key = key
        self.objects = open_objects(root)
        self.refused_: dict[str, str] = {}
        self.checked_: dict[str, tuple[str, ModelVersion]] = {}  # path -> (tag of its metadata, what it said)

    def _dir(self, name: str, version: int | None = None) -> str:
        """The key prefix of a model (or of one version): ``name`` or ``name/000042``."""
        path = validate_key(name, "model name")
        if version is None:
            return path
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InvalidInput("bad_version", f"model version must be an int >= 1, got {version!r}")
        return f"{path}/{version:06d}"

    def _claim(self, name: str) -> tuple[int, str]:
        """Take the next free version number; ``Objects.claim`` makes the claim atomic."""
        base = self._dir(name)
        taken = [int(p) for p in self.objects.children(base) if p.isascii() and p.isdigit()]
        version = max(taken, default=0) + 1
        while not self.objects.claim(f"{base}/{version:06d}"):
            version += 1
        return version, f"{base}/{version:06d}"

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
        by: str = "activestream",
        reason: str = "registered",
    ) -> ModelVersion:
        """Store ``tensors`` as the next version of ``name`` and return its metadata; ``by``
        and ``reason`` start its history (who decided its first status, and why)."""
        validate_key(name, "model name")
        _check_status(status)
        payload = _serialize(tensors)
        try:
            json.dumps(spec)
            metrics = {str(k): float(v) for k, v in metrics.items()}
        except (TypeError, ValueError) as e:
            raise InvalidInput("bad_model_metadata", f"spec must be JSON-serializable and metrics a dict of numbers ({e})") from e
        version, path = self._claim(name)
        self.objects.put(f"{path}/{WEIGHTS}", payload)
        mv = ModelVersion(
            name=name, version=version, parent=parent, created=datetime.now(timezone.utc).isoformat(),
            train_size=int(train_size), metrics=metrics, sha256=hashlib.sha256(payload).hexdigest(),
            spec=spec, status=status, uri=self.objects.uri(f"{path}/{WEIGHTS}"),
            history=(self._decision(name, status, by, reason),),
        )
        self._write_meta(path, mv)
        return mv

    def _decision(self, name: str, status: str, by: str, reason: str) -> dict:
        """One history entry; a promotion is numbered after every promotion of ``name`` on record."""
        entry = {"status": status, "by": str(by), "reason": str(reason), "at": datetime.now(timezone.utc).isoformat()}
        if status == "promoted":
            entry["promotion"] = 1 + max((mv.promotion for mv in self.versions(name)), default=0)
        return entry

    def _write_meta(self, path: str, mv: ModelVersion) -> None:
        seal = {"sha256": hashlib.sha256(_canonical(mv)).hexdigest()}
        if self.key:
            seal["hmac_sha256"] = _signature(self.key, mv)
        self.objects.put(f"{path}/{METADATA}", json.dumps({**mv.to_dict(), SEAL: seal}, indent=2, sort_keys=True).encode())

    def _parse_meta(self, path: str) -> tuple[ModelVersion, object]:
        """The metadata under ``path`` and its seal, unchecked; NotFound if there is none."""
        meta = f"{path}/{METADATA}"
        try:
            raw = json.loads(self.objects.get(meta))
            return ModelVersion.from_dict(raw), raw.get(SEAL)
        except (OSError, ValueError, InvalidInput, IntegrityError) as e:
            raise IntegrityError(f"model metadata {self.objects.uri(meta)} is unreadable or corrupt ({e}); {_FIX}") from e

    def _read_meta(self, path: str, name: str, version: int) -> tuple[ModelVersion, dict]:
        """Metadata and seal of one version after checking the seal; IntegrityError if it fails."""
        mv, seal = self._parse_meta(path)
        problem = self._seal_problem(mv, seal, name, version)
        if problem:
            raise IntegrityError(f"model metadata {self.objects.uri(f'{path}/{METADATA}')} {problem}; {_FIX}")
        return mv, seal

    def _seal_problem(self, mv: ModelVersion, seal: object, name: str, version: int) -> str | None:
        if not isinstance(seal, dict) or "sha256" not in seal:
            return "has no checksum (written by hand, or by activestream before metadata was sealed)"
        if not _same(seal["sha256"], hashlib.sha256(_canonical(mv)).hexdigest()):
            return "does not match its checksum: it was edited or is corrupt"
        if self.key and "hmac_sha256" not in seal:
            return "is not signed, and this registry has a key, so it only believes signed metadata"
        if self.key and not _same(seal["hmac_sha256"], _signature(self.key, mv)):
            return "is not signed with this registry's key (another key, or edited and re-checksummed)"
        if (mv.name, mv.version) != (name, version):
            return f"describes {mv.name} v{mv.version}, not {name} v{version} (it was copied)"
        return None

    def _checked(self, name: str, version: int) -> tuple[ModelVersion, dict]:
        try:
            return self._read_meta(self._dir(name, version), name, version)
        except NotFound as e:
            known = [v.version for v in self.versions(name)]
            raise NotFound(
                f"model {name!r} has no version {version} in {self.root} (complete versions: {known}); "
                "list them with ModelRegistry.versions(name)"
            ) from e

    def get(self, name: str, version: int) -> ModelVersion:
        """Metadata of one version; ``NotFound`` if it does not exist or is incomplete,
        ``IntegrityError`` if its metadata is unreadable or fails its seal."""
        return self._checked(name, version)[0]

    def _weights(self, path: str, mv: ModelVersion) -> bytes:
        weights = self.objects.uri(f"{path}/{WEIGHTS}")
        try:
            payload = self.objects.get(f"{path}/{WEIGHTS}")
        except NotFound as e:
            raise IntegrityError(f"model weights {weights} are missing although {METADATA} exists; re-register the model") from e
        actual = hashlib.sha256(payload).hexdigest()
        if actual != mv.sha256:
            raise IntegrityError(
                f"model weights {weights} are corrupt or were modified: expected sha256 {mv.sha256}, "
                f"got {actual}; re-register the model or restore the file"
            )
        return payload

    def load(self, name: str, version: int) -> tuple[dict[str, np.ndarray], ModelVersion]:
        """Weights and metadata of one version, after checking the metadata's seal and the weights' sha256."""
        mv = self.get(name, version)
        path = self._dir(name, version)
        payload = self._weights(path, mv)
        try:
            return st_load(payload), mv
        except SafetensorError as e:
            raise IntegrityError(f"model weights {self.objects.uri(f'{path}/{WEIGHTS}')} match their sha256 "
                                 f"but cannot be read ({e})") from e

    def versions(self, name: str) -> list[ModelVersion]:
        """Every complete version of ``name`` whose metadata passes its seal, sorted by version;
        ``[]`` if none. A version that fails is skipped with a warning, never raised."""
        base = self._dir(name)
        found = []
        # One listing with each file's version tag: metadata read and checked before, and
        # unchanged since, is not read again (workers list versions on every batch, and in
        # a bucket each read is a request).
        for key, tag in self.objects.tags(base).items():
            child, _, leaf = key.partition("/")
            if leaf == METADATA and child.isascii() and child.isdigit():
                mv = self._readable(f"{base}/{child}", name, int(child), tag)
                found += [mv] if mv is not None else []
        return sorted(found, key=lambda mv: mv.version)

    def _readable(self, path: str, name: str, version: int, tag: str) -> ModelVersion | None:
        known = self.checked_.get(path)
        if known is not None and known[0] == tag:
            return known[1]
        try:
            mv = self._read_meta(path, name, version)[0]
            self.checked_[path] = (tag, mv)
            return mv
        except NotFound:
            return None  # incomplete (no metadata yet), or deleted since it was listed
        except IntegrityError as e:
            self._warn_once(path, e)
            return None

    def _warn_once(self, path: str, error: IntegrityError) -> None:
        # Some workers list versions on every batch: warn once per problem of a version, not per call.
        if self.refused_.get(path) != str(error):
            self.refused_[path] = str(error)
            log.warning("ignoring a model version: %s", error)

    def latest(self, name: str, status: str | None = "promoted") -> ModelVersion | None:
        """Highest version with ``status`` (any status when ``None``) among those whose metadata
        passes its seal; ``None`` if there is none."""
        if status is not None:
            _check_status(status)
        matching = [mv for mv in self.versions(name) if status is None or mv.status == status]
        return matching[-1] if matching else None

    def set_status(self, name: str, version: int, status: str, *, by: str = "activestream",
                   reason: str = "") -> ModelVersion:
        """Change the status of one version (the only mutable field, with its history), record
        who decided it and why, reseal it and return the new metadata."""
        _check_status(status)
        mv, seal = self._checked(name, version)
        if not self.key and "hmac_sha256" in seal:
            raise ConfigError(
                f"model {name!r} v{version} is signed; a registry without the key would drop the signature "
                "and registries with the key would then refuse it: give this registry the key "
                "(ACTIVESTREAM_MODEL_KEY_FILE or ACTIVESTREAM_MODEL_KEY)"
            )
        updated = replace(mv, status=status, history=(*mv.history, self._decision(name, status, by, reason)))
        self._write_meta(self._dir(name, version), updated)
        return updated

    def reseal(self, name: str, version: int) -> ModelVersion:
        """Vouch for one version's metadata as it stands on disk, sealing it with this registry's key.

        For metadata written before sealing, after the key changed, or after a field was
        fixed by hand. Read the file before vouching for it: the seal only protects what
        was true when it was made. The weights' sha256 is still checked.
        """
        path = self._dir(name, version)
        try:
            mv, _ = self._parse_meta(path)
        except NotFound as e:
            raise NotFound(f"model {name!r} has no version {version} in {self.root}") from e
        if (mv.name, mv.version) != (name, version):
            raise IntegrityError(f"{self.objects.uri(f'{path}/{METADATA}')} describes {mv.name} v{mv.version}, not {name} v{version}; "
                                 "put it back in its own folder")
        _check_status(mv.status)
        self._weights(path, mv)
        self._write_meta(path, mv)
        return mv
