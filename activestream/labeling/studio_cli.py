"""``activestream label export | import | studio-connect``: moving work to and from Label Studio."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from activestream.errors import ConfigError


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
    imp.add_argument("--token", help="a Label Studio API token for --label-studio-url")
    imp.set_defaults(handler=import_cmd)

    connect = sub.add_parser("studio-connect", help="connect a Label Studio project to this service's ML backend")
    connect.add_argument("--label-studio-url", required=True, help="e.g. http://127.0.0.1:8080")
    connect.add_argument("--token", required=True, help="a Label Studio API token of the project's owner")
    connect.add_argument("--project", type=int, required=True, help="Label Studio project id")
    connect.add_argument("--backend-url", required=True,
                         help="this service's ML backend as Label Studio reaches it, e.g. http://host:8000/ml-backend")
    connect.add_argument("--user", default="studio", help="the activestream labeler the backend calls come as (ACTIVESTREAM_LABEL_STUDIO_USER, default studio)")
    connect.add_argument("--password", required=True, help="that labeler's token (basic auth password)")
    connect.set_defaults(handler=connect_cmd)


def _service(args: argparse.Namespace, producer=None):
    from activestream.labeling.cli import settings_from
    from activestream.labeling.service import LabelingService, MemorySink

    return LabelingService.open(settings_from(args), producer or MemorySink())


def _labels_sink(args: argparse.Namespace):
    """The ``labels`` producer: Kafka when a bootstrap is given, else none (the store only)."""
    from activestream.labeling.cli import settings_from
    from activestream.labeling.service import KafkaSink

    settings = settings_from(args)
    if not settings.bootstrap:
        print("activestream: no --bootstrap (ACTIVESTREAM_BOOTSTRAP): labels go to the store only, "
              "not to the labels topic", file=sys.stderr)
        return None
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

    if bool(args.label_studio_url) != bool(args.token):
        raise ConfigError("give --label-studio-url and --token together")
    users = StudioClient(args.label_studio_url, args.token).user_email if args.label_studio_url else None
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
    from activestream.labeling.studio_client import StudioClient

    client = StudioClient(args.label_studio_url, args.token)
    backend = client.connect_backend(args.project, args.backend_url, args.user, args.password)
    print(f"Label Studio project {args.project} uses ML backend {backend} at {args.backend_url}", file=sys.stderr)
    return 0
