"""``activestream models list|show|promote|rollback|retire|import`` and ``activestream seed``.

A decision is written to the registry first (the truth predictors read), then announced
on ``model.versions`` when a broker is configured; predictors that miss the announcement
still serve the version in force after their next announcement or restart.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys

from activestream.config import Settings, blobs_from, registry_from
from activestream.errors import ConfigError
from activestream.flags import store_url

COMMON = {  # flag -> (Settings field, help)
    "--home": ("home", "folder of the store, blobs and models (ACTIVESTREAM_HOME)"),
    "--store-url": ("store_url", "SQLAlchemy URL of the store, no password (ACTIVESTREAM_STORE_URL)"),
    "--storage-url": ("storage_url", "where blobs and models live when not under --home, e.g. s3://bucket/prefix "
                                     "(ACTIVESTREAM_STORAGE_URL)"),
    "--bootstrap": ("bootstrap", "Kafka bootstrap servers to announce on (ACTIVESTREAM_BOOTSTRAP); "
                                 "unset: the registry changes, nothing is announced"),
    "--model": ("model_name", "model name (ACTIVESTREAM_MODEL_NAME)"),
    "--broker-wait": ("broker_wait", "seconds to wait for the --bootstrap broker to answer before giving up "
                                     "(ACTIVESTREAM_BROKER_WAIT)"),
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``models`` and ``seed``; each parser sets ``handler`` (args -> exit code)."""
    from activestream.versions.spec_flags import add_spec_flags

    models = sub.add_parser("models", help="list, inspect, import, promote, roll back and retire model versions")
    ops = models.add_subparsers(dest="models_command", required=True)
    listing = _with_common(ops.add_parser("list", help="every version, its status and which one is in force"))
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    listing.set_defaults(handler=run_list)
    show = _with_common(ops.add_parser("show", help="one version's metadata, spec and decision history"))
    show.add_argument("version", type=int)
    show.set_defaults(handler=run_show)
    promote = _decided(ops.add_parser("promote", help="put a version in force and announce it"))
    promote.add_argument("version", type=int)
    promote.add_argument("--force", action="store_true", help="promote a rejected or retired version anyway")
    promote.set_defaults(handler=run_promote)
    rollback = _decided(ops.add_parser("rollback", help="retire the version in force (and any promoted after "
                                                        "--to) and announce the one before it"))
    rollback.add_argument("--to", type=int, help="the promoted version to return to (default: the one before)")
    rollback.set_defaults(handler=run_rollback)
    retire = _decided(ops.add_parser("retire", help="withdraw a version for good; if in force, the one before "
                                                    "it serves again"))
    retire.add_argument("version", type=int)
    retire.set_defaults(handler=run_retire)
    imp = _decided(ops.add_parser("import", help="register your own trained model (safetensors or a PyTorch "
                                                 "state-dict file)"), reason_required=False)
    imp.add_argument("--weights", required=True, help="a .safetensors file, or a file saved with "
                                                      "torch.save(model.state_dict(), path)")
    add_spec_flags(imp)
    imp.add_argument("--promote", action="store_true", help="put it in force at once (the first version always is)")
    imp.set_defaults(handler=run_import)

    seed = _decided(sub.add_parser("seed", help="train a first version from a folder of labeled images "
                                                "(one sub-folder per class)"), reason_required=False)
    seed.add_argument("folder", help="ROOT with ROOT/<class name>/<image> files, as torchvision's ImageFolder reads")
    add_spec_flags(seed, classes=False)
    seed.add_argument("--backbone", help="weights to start from: a safetensors or state-dict file of the same "
                                         "architecture (its head may have other classes), or a torchvision "
                                         "weights name such as DEFAULT where the internet is reachable")
    seed.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    seed.add_argument("--max-steps", type=int, help="at most this many optimiser steps (default: no cap)")
    seed.add_argument("--promote", action="store_true", help="put it in force at once (the first version always is)")
    seed.set_defaults(handler=run_seed)


def _with_common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    for flag, (_, text) in COMMON.items():
        p.add_argument(flag, help=text, type=store_url if flag == "--store-url" else str)
    return p


def _decided(p: argparse.ArgumentParser, reason_required: bool = True) -> argparse.ArgumentParser:
    _with_common(p)
    p.add_argument("--by", default=None, help="who decides (default: your login name)")
    p.add_argument("--reason", required=reason_required, help="why, kept in the version's history")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {field: getattr(args, flag.lstrip("-").replace("-", "_"))
                 for flag, (field, _) in COMMON.items()
                 if getattr(args, flag.lstrip("-").replace("-", "_"), None) is not None}
    return Settings(**overrides)


def _checked(args: argparse.Namespace, store: bool = False) -> Settings:
    """The settings, once the broker to announce on (and the store, where used) answer:
    a decision or a training run must not end in a failed announcement."""
    from activestream.preflight import check_broker, check_store

    settings = settings_from(args)
    if store:
        check_store(settings.store)
    if settings.bootstrap:
        check_broker(settings.bootstrap, settings.broker_wait)
    return settings


def _who(args: argparse.Namespace) -> str:
    by = args.by or getpass.getuser()
    if not by.strip():
        raise ConfigError("--by must name who decides")
    return by.strip()


def run_list(args: argparse.Namespace) -> int:
    from activestream.storage.decisions import in_force

    settings = settings_from(args)
    registry = registry_from(settings)
    versions = registry.versions(settings.model_name)
    current = in_force(registry, settings.model_name)
    for mv in versions:
        serving = current is not None and mv.version == current.version
        if args.json:
            print(json.dumps({**mv.to_dict(), "in_force": serving}))
        else:
            print(_row(mv, serving))
    if not versions:
        print(f"model {settings.model_name!r} has no versions in {registry.root}", file=sys.stderr)
    return 0


def _row(mv, serving: bool) -> str:
    acc = mv.metrics.get("holdout_accuracy")
    last = mv.history[-1] if mv.history else {}
    decided = f"{last.get('by', '?')}: {last.get('reason', '')}" if last else "no history"
    return "\t".join([("*" if serving else " ") + f" v{mv.version}", mv.status, f"parent={mv.parent or '-'}",
                      f"train={mv.train_size}", f"holdout_acc={acc:.4f}" if acc is not None else "holdout_acc=-",
                      mv.spec.get("arch", "?"), mv.created[:19], decided])


def run_show(args: argparse.Namespace) -> int:
    from activestream.storage.decisions import get_version, in_force

    settings = settings_from(args)
    registry = registry_from(settings)
    mv = get_version(registry, settings.model_name, args.version)
    current = in_force(registry, settings.model_name)
    print(json.dumps({**mv.to_dict(), "in_force": current is not None and current.version == mv.version},
                     indent=2))
    return 0


def run_promote(args: argparse.Namespace) -> int:
    from activestream.storage.decisions import promote

    return _decide(args, "promote", lambda reg, name: promote(reg, name, args.version, by=_who(args),
                                                              reason=args.reason, force=args.force))


def run_rollback(args: argparse.Namespace) -> int:
    from activestream.storage.decisions import rollback

    return _decide(args, "rollback", lambda reg, name: rollback(reg, name, by=_who(args), reason=args.reason,
                                                                to=args.to))


def run_retire(args: argparse.Namespace) -> int:
    from activestream.storage.decisions import retire

    return _decide(args, "retire", lambda reg, name: retire(reg, name, args.version, by=_who(args),
                                                            reason=args.reason))


def _decide(args: argparse.Namespace, decision: str, act) -> int:
    from activestream.storage.decisions import in_force

    settings = _checked(args)
    registry = registry_from(settings)
    changed = act(registry, settings.model_name)
    print(f"{decision}: {settings.model_name} v{changed.version} is {changed.status}")
    _announce(settings, in_force(registry, settings.model_name), decision, _who(args), args.reason)
    return 0


def _announce(settings: Settings, current, decision: str, by: str, reason: str) -> None:
    """Announce the version in force so every predictor serves it within seconds."""
    if current is None:
        return
    print(f"in force: {current.name} v{current.version}")
    if not settings.bootstrap:
        # Before a loop runs (a first seed) this is the normal case: say so, lest it read as a fault.
        print("no broker given (--bootstrap or ACTIVESTREAM_BOOTSTRAP): nothing announced; a loop started from now "
              "on serves it, a running one after its next announcement or restart", file=sys.stderr)
        return
    from activestream.streams.announce import announce
    from activestream.streams.stage import make_producer
    from activestream.streams.topics import ensure_topics

    async def send() -> None:
        producer = make_producer(settings.bootstrap)
        await producer.start()
        try:
            await announce(producer, settings.topic_versions, current, decision, by, reason)
        finally:
            await producer.stop()

    ensure_topics(settings, settings.bootstrap)
    asyncio.run(send())
    print(f"announced v{current.version} on {settings.topic_versions} at {settings.bootstrap}")


def run_import(args: argparse.Namespace) -> int:
    from activestream.versions.create import Decision, import_version
    from activestream.versions.spec_flags import spec_from

    settings = _checked(args)
    registry = registry_from(settings)
    decision = Decision(_who(args), args.reason or "", args.promote)
    mv = import_version(registry, settings.model_name, spec_from(args), args.weights, decision)
    return _registered(settings, mv, "import")


def run_seed(args: argparse.Namespace) -> int:
    from activestream.learners.training import TrainConfig
    from activestream.storage.store import SampleStore
    from activestream.versions.create import Decision, Folder, seed_version
    from activestream.versions.spec_flags import spec_from

    settings = _checked(args, store=True)
    spec = spec_from(args, classes=Folder.read(args.folder).classes)
    store = SampleStore(settings.store)
    store.create_schema()
    mv = seed_version(args.folder, spec, registry=registry_from(settings), name=settings.model_name, store=store,
                      blobs=blobs_from(settings), decision=Decision(_who(args), args.reason or "",
                                                                                        args.promote),
                      backbone=args.backbone, holdout=settings.holdout,
                      config=TrainConfig(epochs=args.epochs, seed=settings.seed, max_steps=args.max_steps), device=settings.device,
                      max_pixels=settings.max_pixels)
    return _registered(settings, mv, "seed")


def _registered(settings: Settings, mv, how: str) -> int:
    classes = ", ".join(mv.spec["classes"])
    print(f"{how}: registered {mv.name} v{mv.version} ({mv.spec['arch']}, classes {classes}) as {mv.status}")
    if mv.status == "promoted":
        first = mv.history[0]
        _announce(settings, mv, "promote", first["by"], first["reason"])
    else:
        print(f"put it in force with: activestream models promote {mv.version} --reason ...", file=sys.stderr)
    return 0
