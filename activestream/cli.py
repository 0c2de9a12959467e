"""Command line: ``activestream run`` (the main job) and ``activestream worker NAME``.

Flags override the ``ACTIVESTREAM_*`` environment variables; both are read here,
once, into one :class:`~activestream.config.Settings`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import typing

from activestream.config import Settings
from activestream.failures import Parser, failing
from activestream.flags import store_url, with_default
from activestream.logs import configure
from activestream.simulation.datasets import DATASETS

# Plain text: argparse prints it as it is (no markup, no backticks).
ABOUT = ("Streaming active learning for image classifiers: a model serves a stream of images, asks people to label "
         "the ones worth a label, and learns from their answers.")
START = ("Start with: activestream run (the demo loop). activestream COMMAND --help lists a command's flags with "
         "their defaults.")

RUN_FLAGS = {  # flag -> (type, help; None: the setting's own description); each shows its setting's default
    "--bootstrap": (str, "Kafka bootstrap servers (default: start the embedded broker)"),
    "--home": (str, "folder for store, blobs, models and logs (default: a new folder under var/runs)"),
    "--store-url": (store_url, "SQLAlchemy URL of the store, no password (default: SQLite under --home)"),
    "--dataset": (str, f"{', '.join(DATASETS)} or auto (fashion-mnist when --data-dir has it, else digits)"),
    "--images-from": (str, "your own images instead of the demo dataset: a folder or s3://bucket/prefix"),
    "--images-by": (str, "how --images-from images travel: value (bytes in each message) or reference (URIs)"),
    "--data-dir": (str, "folder holding the datasets (default: ../shared/data beside the checkout, when it "
                        "exists)"),
    "--images": (int, "images the simulated source streams"),
    "--rate": (float, "images per second from the simulated source (0: unthrottled)"),
    "--budget": (float, "share of traffic sent to labelers"),
    "--strategy": (str, None),
    "--retrain-every": (int, "fine-tune after this many new labels"),
    "--seed-size": (int, "labeled images for the seed model"),
    "--label-delay": (float, None),
    "--metrics-port": (int, "first Prometheus port (predictor, selector, ingest, learner follow; 0: none)"),
    "--broker-wait": (float, "seconds to wait for the --bootstrap broker to answer before giving up"),
    "--device": (str, "auto, cpu or cuda"),
}


def setting_of(flag: str) -> str:
    """The :class:`Settings` field a flag sets.

    >>> setting_of("--label-delay")
    'label_delay'
    """
    return flag.lstrip("-").replace("-", "_")


def run_help(flag: str, text: str | None = None) -> str:
    """Help for the flag of a setting, its default taken from :class:`Settings`.

    >>> run_help("--budget", "share of traffic sent to labelers")
    'share of traffic sent to labelers (default: 0.05)'
    """
    field = Settings.model_fields[setting_of(flag)]
    return with_default(text or field.description, field.default)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="activestream", description=ABOUT, epilog=START)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also after a subcommand)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the whole loop (simulated traffic and labeler unless --no-simulate)",
                         description="Run the whole loop on this machine. Each flag overrides its ACTIVESTREAM_<NAME> "
                                     "variable; a default applies when neither is set.")
    for flag, (kind, text) in RUN_FLAGS.items():
        run.add_argument(flag, type=kind, help=run_help(flag, text))
    run.add_argument("--no-simulate", dest="simulate", action="store_false", default=None,
                     help="production use: no simulated traffic or labeler; runs until Ctrl-C "
                          f"(default: {_switch('simulate')})")
    run.add_argument("--label", dest="label_serve", action="store_true", default=None,
                     help="also run activestream label serve (the labelers' page, on ACTIVESTREAM_LABEL_PORT) "
                          f"(default: {_switch('label_serve')})")
    labelers = Settings.model_fields["labelers"]
    run.add_argument("--labelers", choices=typing.get_args(labelers.annotation),
                     help=with_default("who answers the demo's labeling requests: people starts the labeling page "
                                       "and prints its URL and a token; both keeps the simulated labeler too",
                                       labelers.default))
    worker = sub.add_parser("worker", help="run one streaming worker (started by run)")
    worker.add_argument("name", choices=("predictor", "selector", "ingest", "learner"))
    worker.add_argument("--instance", type=int, default=1,
                        help="which of several processes of this worker (metrics port) (default: %(default)s)")
    worker.add_argument("--owner", type=int, help="PID of the process that started this worker: stop when it is "
                                                  "gone (default: none)")
    for register in _extensions():
        register(sub)
    return p


def _switch(name: str) -> str:
    """A switch flag's default, as the variable it overrides.

    >>> _switch("simulate")
    'ACTIVESTREAM_SIMULATE=true'
    """
    return f"ACTIVESTREAM_{name.upper()}={str(Settings.model_fields[name].default).lower()}"


def _extensions():
    """Subcommands that live beside their package; each sets ``handler`` (args -> exit code)."""
    from activestream.labeling.cli import register as label
    from activestream.simulation.cli import register as simulate
    from activestream.streams.source_cli import register as source
    from activestream.versions.cli import register as versions

    return (label, simulate, source, versions)


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {setting_of(flag): getattr(args, setting_of(flag), None) for flag in RUN_FLAGS}
    overrides["simulate"] = getattr(args, "simulate", None)
    overrides["label_serve"] = getattr(args, "label_serve", None)
    overrides["labelers"] = getattr(args, "labelers", None)
    if args.command == "run" and not overrides["home"] and "ACTIVESTREAM_HOME" not in os.environ:
        overrides["home"] = os.path.join("var", "runs", time.strftime("%Y%m%d-%H%M%S"))
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # taken anywhere on the line: `run --debug` is how people type it
    args = parser().parse_args([a for a in argv if a != "--debug"])
    # A supervised process (a worker, label serve under `run`) keeps its traceback for its log.
    supervised = args.command == "worker" or getattr(args, "owner", None) is not None
    with failing(argv, debug, catch_all=not supervised):
        if getattr(args, "handler", None) is not None:
            sys.exit(args.handler(args))
        settings = settings_from(args)
        if args.command == "run":
            from activestream.preflight import check_run

            check_run(settings)
        _start(args, settings)


def _start(args: argparse.Namespace, settings: Settings) -> None:
    configure(settings.log_level)
    if args.command == "worker":
        from activestream.streams.worker import run_worker

        run_worker(args.name, settings, args.instance, args.owner)
    else:
        from activestream.run import main as run_main

        sys.exit(run_main(settings))
