"""``activestream label export | import | studio-connect``: moving work to and from Label Studio.

Secrets (a Label Studio API token, our Label Studio account's token) come from the
environment or a file, never from a flag: a command line is visible to every user
of the machine (``ps``) and stays in shell histories.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from activestream.errors import ConfigError

STUDIO_TOKEN = ("--token-file", "ACTIVESTREAM_LABEL_STUDIO_TOKEN", "a Label Studio API token")
BACKEND_TOKEN = ("--password-file", "ACTIVESTREAM_LABEL_STUDIO_PASSWORD",
                 "the activestream token of the Label Studio account (ACTIVESTREAM_LABEL_STUDIO_USER)")


class _SecretOnCommandLine(argparse.Action):
    """The old secret flags: refused, saying where the secret goes instead."""

    def __call__(self, parser, namespace, values, option_string=None):
        flag, env, what = self.default
        parser.error(f"{option_string} would show {what} to every user of this machine; "
                     f"put it in {env} or in a file named by {flag}")


def _secret_flags(p: argparse.ArgumentParser, old: str, secret: tuple[str, str, str]) -> None:
    flag, env, what = secret
    p.add_argument(flag, help=f"file holding {what} (or set {env})")
    p.add_argument(old, action=_SecretOnCommandLine, default=secret, help=argparse.SUPPRESS)


def read_secret(args: argparse.Namespace, secret: tuple[str, str, str]) -> str | None:
    """The secret from its file flag, else its environment variable; ``None`` if neither is given."""
    flag, env, what = secret
    path = getattr(args, flag.lstrip("-").replace("-", "_"))
    if not path:
        return os.environ.get(env) or None
    try:
        value = Path(path).read_text().strip()
    except OSError as e:
        raise ConfigError(f"cannot read {what} from {path} ({e}); check {flag}") from e
    if not value:
        raise ConfigError(f"{path} is empty; {flag} names a file holding {what}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the Label Studio subcommands to the ``label`` command's subparsers."""
    from activestream.labeling.cli import COMMON

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        for flag, (kind, text) in COMMON.items():
            p.add_argument(flag, type=kind, help=text)
        return p

    export = common(sub.add_parser("export", help="write the waiting queue as Label Studio tasks (JSON), "
                                                  "with the model's guesses"))
    export.add_argument("-o", "--out", default="-", help="tasks file to write (default: stdout)")
    export.add_argument("--limit", type=int, default=1000, help="at most this many items, in queue order")
    export.add_argument("--config-out", help="also write the Label Studio labeling config (XML) here")
    export.set_defaults(handler=export_cmd)

    imp = common(sub.add_parser("import", help="record the labels in a Label Studio JSON export"))
    imp.add_argument("--bootstrap", help="Kafka bootstrap servers of the running loop, for the labels topic "
                                         "(ACTIVESTREAM_BOOTSTRAP); unset: the store only")
    imp.add_argument("file", help="the JSON export (a list of tasks with annotations)")
    imp.add_argument("--label-studio-url", help="Label Studio's URL, to resolve users the export names only by id")
    _secret_flags(imp, "--token", STUDIO_TOKEN)
    imp.set_defaults(handler=import_cmd)

    connect = sub.add_parser("studio-connect", help="connect a Label Studio project to this service's ML backend")
    connect.add_argument("--label-studio-url", required=True, help="e.g. http://127.0.0.1:8080")
    _secret_flags(connect, "--token", STUDIO_TOKEN)
    connect.add_argument("--project", type=int, required=True, help="Label Studio project id")
    connect.add_argument("--backend-url", required=True,
                         help="this service's ML backend as Label Studio reaches it, e.g. http://host:8000/ml-backend")
    connect.add_argument("--user", help="the activestream labeler the backend calls come as "
                                        "(default: ACTIVESTREAM_LABEL_STUDIO_USER, itself studio by default)")
    _secret_flags(connect, "--password", BACKEND_TOKEN)
    connect.set_defaults(handler=connect_cmd)


def _service(args: argparse.Namespace, producer=None):
    from activestream.labeling.cli import settings_from
    from activestream.labeling.service import LabelingService, MemorySink
    from activestream.preflight import check_store

    settings = settings_from(args)
    check_store(settings.store)
    return LabelingService.open(settings, producer or MemorySink())


def _labels_sink(args: argparse.Namespace):
    """The ``labels`` producer: Kafka when a bootstrap is given, else none (the store only)."""
    from activestream.labeling.cli import settings_from
    from activestream.labeling.service import KafkaSink

    settings = settings_from(args)
    if not settings.bootstrap:
        print("activestream: no --bootstrap (ACTIVESTREAM_BOOTSTRAP): labels go to the store only, "
              "not to the labels topic", file=sys.stderr)
        return None
    from activestream.preflight import check_broker

    check_broker(settings.bootstrap, settings.broker_wait)
    return KafkaSink(settings.bootstrap, settings.topic_labels)


def export_cmd(args: argparse.Namespace) -> int:
    from activestream.labeling.studio_io import export_tasks
    from activestream.labeling.studio_tasks import label_config

    service = _service(args)
    try:
        tasks = export_tasks(service, args.limit)
        text = json.dumps(tasks)
        if args.out == "-":
            print(text)
        else:
            Path(args.out).write_text(text)
        if args.config_out:
            Path(args.config_out).write_text(label_config(service.classes) + "\n")
    finally:
        service.close()
    print(f"exported {len(tasks)} task(s)", file=sys.stderr)
    return 0


def import_cmd(args: argparse.Namespace) -> int:
    from activestream.labeling.studio_client import StudioClient
    from activestream.labeling.studio_io import import_labels

    token = read_secret(args, STUDIO_TOKEN)
    if args.label_studio_url and not token:
        raise ConfigError("--label-studio-url needs a Label Studio API token: set ACTIVESTREAM_LABEL_STUDIO_TOKEN "
                          "or give --token-file")
    if args.token_file and not args.label_studio_url:
        raise ConfigError("--token-file is for resolving users: give --label-studio-url too")
    users = StudioClient(args.label_studio_url, token).user_email if args.label_studio_url else None
    try:
        export = json.loads(Path(args.file).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the Label Studio export {args.file}: {e}") from e
    sink = _labels_sink(args)
    service = _service(args, sink)
    try:
        report = import_labels(service, export, users)
    finally:
        service.close()
        if sink is not None:
            sink.close()
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(report.skipped.items())) or "none"
    print(f"recorded {len(report.labels)} label(s); passed over: {skipped}", file=sys.stderr)
    return 0


def connect_cmd(args: argparse.Namespace) -> int:
    from activestream.config import Settings
    from activestream.labeling.studio_client import StudioClient

    token, password = read_secret(args, STUDIO_TOKEN), read_secret(args, BACKEND_TOKEN)
    if not token or not password:
        missing = [f"{env} (or {flag})" for (flag, env, _), value in ((STUDIO_TOKEN, token), (BACKEND_TOKEN, password))
                   if not value]
        raise ConfigError(f"studio-connect needs {' and '.join(missing)}")
    user = args.user or Settings().label_studio_user
    backend = StudioClient(args.label_studio_url, token).connect_backend(args.project, args.backend_url, user, password)
    print(f"Label Studio project {args.project} uses ML backend {backend} at {args.backend_url}", file=sys.stderr)
    return 0
