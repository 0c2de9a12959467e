"""Command line: ``activestream run`` (the main job) and ``activestream worker NAME``.

Flags override the ``ACTIVESTREAM_*`` environment variables; both are read here,
once, into one :class:`~activestream.config.Settings`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from pydantic import ValidationError

from activestream.config import Settings
from activestream.errors import ActivestreamError

RUN_FLAGS = {
    "--bootstrap": (str, "Kafka bootstrap servers; default: start the embedded broker"),
    "--home": (str, "folder for store, blobs, models and logs (default: a new folder under var/runs)"),
    "--store-url": (str, "SQLAlchemy URL of the store (default: SQLite under --home)"),
    "--dataset": (str, "fashion-mnist, mnist, usps, digits or auto"),
    "--data-dir": (str, "folder holding the datasets"),
    "--images": (int, "images the simulated source streams"),
    "--rate": (float, "images per second from the simulated source (0: unthrottled)"),
    "--budget": (float, "share of traffic sent to labelers"),
    "--strategy": (str, "uncertainty score: least_confidence, margin, entropy, random"),
    "--retrain-every": (int, "fine-tune after this many new labels"),
    "--seed-size": (int, "labeled images for the seed model"),
    "--label-delay": (float, "seconds the simulated labeler takes per batch"),
    "--metrics-port": (int, "first Prometheus port (predictor, selector, ingest, learner follow)"),
    "--device": (str, "auto, cpu or cuda"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="activestream", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole loop (simulated traffic and labeler unless --no-simulate)")
    for flag, (kind, text) in RUN_FLAGS.items():
        run.add_argument(flag, type=kind, help=text)
    run.add_argument("--no-simulate", dest="simulate", action="store_false", default=None,
                     help="production use: no simulated traffic or labeler; runs until Ctrl-C")
    worker = sub.add_parser("worker", help="run one streaming worker (started by `run`)")
    worker.add_argument("name", choices=("predictor", "selector", "ingest", "learner"))
    worker.add_argument("--instance", type=int, default=1, help="which of several processes of this worker (metrics port)")
    for register in _extensions():
        register(sub)
    return p


def _extensions():
    """Subcommands that live beside their package; each sets ``handler`` (args -> exit code)."""
    from activestream.labeling.cli import register as label
    from activestream.simulation.cli import register as simulate

    return (label, simulate)


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_"), None)
                 for flag in RUN_FLAGS}
    overrides["simulate"] = getattr(args, "simulate", None)
    if args.command == "run" and not overrides["home"] and "ACTIVESTREAM_HOME" not in os.environ:
        overrides["home"] = os.path.join("var", "runs", time.strftime("%Y%m%d-%H%M%S"))
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if getattr(args, "handler", None) is not None:
        try:
            sys.exit(args.handler(args))
        except ActivestreamError as e:
            sys.exit(f"activestream: {e}")
    try:
        settings = settings_from(args)
    except ValidationError as e:
        sys.exit(f"activestream: invalid setting:\n{e}")
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "worker":
            from activestream.streams.worker import run_worker

            run_worker(args.name, settings, args.instance)
        else:
            from activestream.run import main as run_main

            sys.exit(run_main(settings))
    except ActivestreamError as e:
        sys.exit(f"activestream: {e}")
