"""Which version is in force, and the decisions that change it: promote, roll back, retire.

The version in force is the one predictors serve, the learner fine-tunes and labelers
label for. It is derived from the registry's sealed metadata alone: of the versions
whose status is ``promoted``, the one promoted last (by its promotion number, then by
version). So a predictor that replays ``model.versions`` or restarts ends on the same
version, and there is no second record to keep in step with the registry.

Every decision records who made it and why in the version's history. Decisions are
plain registry writes; announcing them on ``model.versions`` is the caller's job.

>>> import tempfile, numpy as np
>>> with tempfile.TemporaryDirectory() as d:
...     reg = ModelRegistry(d)
...     for _ in range(3):
...         _ = reg.register("clf", {"w": np.ones(1, np.float32)}, spec={}, parent=None, train_size=0,
...                          metrics={}, status="promoted")
...     before = in_force(reg, "clf").version
...     after = rollback(reg, "clf", by="ann", reason="v3 confuses cats and dogs").version
...     before, after, reg.get("clf", 3).status, reg.get("clf", 3).history[-1]["by"]
(3, 2, 'retired', 'ann')
"""

from __future__ import annotations

from activestream.errors import ConfigError, NotFound
from activestream.storage.registry import ModelRegistry, ModelVersion

__all__ = ["in_force", "promote", "rollback", "retire", "get_version"]

#: Statuses a version leaves only when someone insists (``force``): a person or the
#: learner decided it should not serve.
WITHDRAWN = ("rejected", "retired")


def in_force(registry: ModelRegistry, name: str) -> ModelVersion | None:
    """The version to serve: the promoted version promoted last; None if none is promoted."""
    promoted = [mv for mv in registry.versions(name) if mv.status == "promoted"]
    return max(promoted, key=lambda mv: (mv.promotion, mv.version), default=None)


def get_version(registry: ModelRegistry, name: str, version: int) -> ModelVersion:
    """One version, or a ``ConfigError`` naming the versions there are (a mistyped number
    is the operator's to fix, not a crash)."""
    try:
        return registry.get(name, version)
    except NotFound as e:
        known = ", ".join(str(mv.version) for mv in registry.versions(name)) or "none"
        raise ConfigError(f"model {name!r} has no version {version} (versions: {known}); "
                          "`activestream models list` shows them") from e


def promote(registry: ModelRegistry, name: str, version: int, *, by: str, reason: str,
            force: bool = False) -> ModelVersion:
    """Put ``version`` in force. A rejected or retired one only with ``force``: someone
    decided it should not serve, and undoing that must be deliberate."""
    mv = get_version(registry, name, version)
    current = in_force(registry, name)
    if current is not None and current.version == version:
        return mv
    if mv.status in WITHDRAWN and not force:
        raise ConfigError(f"{name} v{version} is {mv.status} ({_last_reason(mv)}); promote it anyway with --force")
    return registry.set_status(name, version, "promoted", by=by, reason=reason)


def rollback(registry: ModelRegistry, name: str, *, by: str, reason: str, to: int | None = None) -> ModelVersion:
    """Withdraw the version in force and every version promoted after ``to`` (marked
    ``retired``), so the one promoted before them serves again; the version now in force.

    Without ``to``, the version promoted before the one in force.
    """
    current = in_force(registry, name)
    if current is None:
        raise ConfigError(f"model {name!r} has no version in force to roll back from")
    target = _target(registry, name, current, to)
    for mv in registry.versions(name):
        if mv.status == "promoted" and (mv.promotion, mv.version) > (target.promotion, target.version):
            registry.set_status(name, mv.version, "retired", by=by, reason=f"rolled back to v{target.version}: {reason}")
    return in_force(registry, name)


def _target(registry: ModelRegistry, name: str, current: ModelVersion, to: int | None) -> ModelVersion:
    if to is None:
        older = [mv for mv in registry.versions(name) if mv.status == "promoted" and mv.version != current.version]
        if not older:
            raise ConfigError(f"{name} v{current.version} is the only promoted version: there is nothing to roll "
                              "back to; promote an older one with `activestream models promote VERSION`")
        return max(older, key=lambda mv: (mv.promotion, mv.version))
    target = get_version(registry, name, to)
    if target.version == current.version:
        raise ConfigError(f"{name} v{to} is already in force")
    if target.status != "promoted":
        raise ConfigError(f"{name} v{to} is {target.status}, so it was never served or was withdrawn: a rollback "
                          f"returns to a promoted version; use `activestream models promote {to}` (with --force "
                          "for a rejected or retired one)")
    return target


def retire(registry: ModelRegistry, name: str, version: int, *, by: str, reason: str) -> ModelVersion:
    """Withdraw ``version`` (it is never served again unless promoted with force); if it was
    in force, the version promoted before it serves again.

    The only promoted version cannot be retired: predictors would have nothing to swap
    to and would keep serving it.
    """
    mv = get_version(registry, name, version)
    if mv.status == "retired":
        return mv
    current = in_force(registry, name)
    alone = current is not None and current.version == version and not any(
        v.status == "promoted" and v.version != version for v in registry.versions(name))
    if alone:
        raise ConfigError(f"{name} v{version} is the only promoted version: retiring it would leave nothing to "
                          "serve; promote another version first (`activestream models promote VERSION`)")
    return registry.set_status(name, version, "retired", by=by, reason=reason)


def _last_reason(mv: ModelVersion) -> str:
    if not mv.history:
        return "no reason on record"
    last = mv.history[-1]
    return f"by {last.get('by')}: {last.get('reason') or 'no reason given'}"
