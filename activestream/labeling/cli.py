"""``activestream label ...``: the labeling service and its tools."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from activestream.config import Settings
from activestream.flags import store_url
from activestream.logs import configure

COMMON = {
    "--home": (str, "folder of the store, blobs and models (ACTIVESTREAM_HOME)"),
    "--store-url": (store_url, "SQLAlchemy URL of the store, no password (ACTIVESTREAM_STORE_URL)"),
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``label`` subcommands; each parser sets ``handler`` (args -> exit code)."""
    label = sub.add_parser("label", help="the labeling service and its tools").add_subparsers(dest="label_command",
                                                                                              required=True)
    serve = label.add_parser("serve", help="serve the labeling page and API (on 127.0.0.1 by default), "
                                           "consuming labeling.requests")
    _common(serve)
    serve.add_argument("--host", type=str, help="address to bind (ACTIVESTREAM_LABEL_HOST, default 127.0.0.1); "
                                                "put a TLS proxy in front of anything but loopback")
    serve.add_argument("--port", type=int, help="port (ACTIVESTREAM_LABEL_PORT)")
    serve.add_argument("--bootstrap", type=str, help="Kafka bootstrap servers of the running loop (ACTIVESTREAM_BOOTSTRAP)")
    serve.add_argument("--broker-wait", type=float, help="seconds to wait for the broker to answer before giving up "
                                                         "(ACTIVESTREAM_BROKER_WAIT)")
    serve.add_argument("--owner", type=int, help="PID of the process that started this server: stop when it is gone")
    serve.set_defaults(handler=run_serve)

    token = label.add_parser("token", help="labeler tokens").add_subparsers(dest="token_command", required=True)
    create = token.add_parser("create", help="create a labeler (or replace their token) and print the token once")
    _common(create)
    create.add_argument("name", help="labeler name: 1-64 of A-Z a-z 0-9 . _ -")
    create.set_defaults(handler=run_token_create)
    listing = token.add_parser("list", help="labelers who hold a token, and when it was first created")
    _common(listing)
    listing.set_defaults(handler=run_token_list)
    revoke = token.add_parser("revoke", help="take a labeler's token away (their answers stay)")
    _common(revoke)
    revoke.add_argument("name", help="labeler name")
    revoke.set_defaults(handler=run_token_revoke)

    gold = label.add_parser("gold", help="add gold items (known answers) from a trusted labeler's labels")
    _common(gold)
    gold.add_argument("--from-labeler", required=True, help="whose stored labels are the known answers (e.g. seed)")
    gold.add_argument("--count", type=int, default=100, help="how many gold items to add (default: %(default)s)")
    gold.set_defaults(handler=run_gold)

    from activestream.labeling.studio_cli import register as label_studio

    label_studio(label)  # export, import, studio-connect


def _common(p: argparse.ArgumentParser) -> None:
    for flag, (kind, text) in COMMON.items():
        p.add_argument(flag, type=kind, help=text)


def settings_from(args: argparse.Namespace, **extra) -> Settings:
    names = {"home": "home", "store_url": "store_url", "host": "label_host", "port": "label_port",
             "bootstrap": "bootstrap", "broker_wait": "broker_wait"}
    overrides = {field: getattr(args, arg) for arg, field in names.items() if getattr(args, arg, None) is not None}
    return Settings(**overrides, **extra)


def _service(args: argparse.Namespace):
    from activestream.labeling.service import LabelingService, MemorySink
    from activestream.preflight import check_store

    settings = settings_from(args)
    check_store(settings.store)
    return LabelingService.open(settings, MemorySink())


def run_serve(args: argparse.Namespace) -> int:
    from activestream.labeling.server import serve
    from activestream.preflight import check_broker, check_store

    settings = settings_from(args)
    check_store(settings.store)
    if settings.bootstrap:  # unset: serve itself says it needs one
        check_broker(settings.bootstrap, settings.broker_wait)
    configure(settings.log_level)
    import uvloop

    # The page's many small requests spend much of their time in the event loop itself.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings, args.owner))
    return 0


def run_token_create(args: argparse.Namespace) -> int:
    from activestream.labeling.service import check_name
    from activestream.labeling.tokens import create

    name = check_name(args.name)
    settings = settings_from(args)
    if settings.store_url is None and not (settings.home_path / "store.db").exists():
        # A token made in a new store is of no use to a running loop whose home is elsewhere.
        print(f"note: {settings.home_path.resolve()} holds no store yet; making one there. To join a running "
              "loop, use the home `activestream run` printed (--home or ACTIVESTREAM_HOME)", file=sys.stderr)
    service = _service(args)
    try:
        token = create(service.queue, name)
    finally:
        service.close()
    print(token)
    print(f"token for labeler {name!r} (shown once; only its sha256 is stored)", file=sys.stderr)
    return 0


def run_token_list(args: argparse.Namespace) -> int:
    from activestream.labeling.tokens import holders

    service = _service(args)
    try:
        found = holders(service.queue)
    finally:
        service.close()
    for holder in found:
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(holder.created))
        print(f"{holder.name}\t{created}")
    print(f"{len(found)} labeler(s) hold a token", file=sys.stderr)
    return 0


def run_token_revoke(args: argparse.Namespace) -> int:
    from activestream.labeling.service import TOKEN_TTL
    from activestream.labeling.tokens import revoke

    service = _service(args)
    try:
        revoke(service.queue, args.name)
    finally:
        service.close()
    print(f"revoked the token of {args.name!r}; a running label serve refuses it within {TOKEN_TTL:.0f} s",
          file=sys.stderr)
    return 0


def run_gold(args: argparse.Namespace) -> int:
    from activestream.errors import ConfigError
    from activestream.labeling.gold import add_gold, labels_given
    from activestream.preflight import shown_url

    service = _service(args)
    try:
        if not labels_given(service, args.from_labeler):
            raise ConfigError(f"--from-labeler {args.from_labeler!r} has no labels in the store "
                              f"{shown_url(service.store.url)}; "
                              "name a labeler who has (the seed model's labels are 'seed')")
        added = add_gold(service, args.from_labeler, args.count, seed=service.settings.seed)
    finally:
        service.close()
    print(f"added {added} gold items from {args.from_labeler!r}'s labels"
          + ("" if added else " (each of their labeled images is queued already or has no stored image)"))
    return 0
