"""``activestream simulate`` and ``activestream compare``.

Every flag's help shows its default, taken from :class:`~activestream.simulation.config.SimConfig`,
and, where ``run``'s default for the same setting differs, run's and why. Every value is
checked before a model is built: a bad one is one line naming its flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from activestream.config import default_data_dir
from activestream.errors import ConfigError
from activestream.flags import with_default
from activestream.selectors import SELECTORS
from activestream.simulation.checks import at_least, check
from activestream.simulation.config import DEFAULTS, WHY_NOT_RUNS, SimConfig, differs_from_run, field_of, run_default
from activestream.simulation.datasets import DATASETS
from activestream.simulation.scenarios import SCENARIOS


def _yes_no(text: str) -> bool:
    """``--cosine``: true or false, nothing else.

    >>> _yes_no("Yes"), _yes_no("0")
    (True, False)
    """
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


_FLAGS = {  # flag -> (type, help); the default shown is SimConfig's
    "--scenario": (str, ", ".join(SCENARIOS)),
    "--dataset": (str, f"{', '.join(DATASETS)} or auto (mnist-usps picks its own)"),
    "--data-dir": (str, "folder holding the datasets (default: ACTIVESTREAM_DATA_DIR or ../shared/data beside the "
                        "checkout)"),
    "--images": (int, "stream length"),
    "--seed-size": (int, "human labels the seed model is trained on"),
    "--budget": (float, "share of the stream sent to labelers"),
    "--window": (int, "budget window, images"),
    "--audit-share": (float, "share of the budget spent on uniformly random audit items"),
    "--labeler": (str, "oracle, noisy:RATE, self, confident:MIN_P or committee[:SHARE]"),
    "--pseudo": (str, "pseudo labeler for the items not sent to people: confident:MIN_P, self or committee"),
    "--label-lag": (int, "stream images between a request and its label (a count of images, not run's "
                         "--label-delay seconds)"),
    "--retrain-every": (int, "new labels per learner round"),
    "--round-gap": (int, "at most one learner round per this many images"),
    "--epochs": (int, "fine-tuning epochs per round"),
    "--min-steps": (int, "at least this many optimiser steps per round"),
    "--max-steps": (int, "at most this many optimiser steps per round"),
    "--learning-rate": (float, "fine-tuning learning rate"),
    "--cosine": (_yes_no, "true: the rate decays to 0 over each round"),
    "--holdout": (float, "share of human labels held out for promotion decisions"),
    "--batch": (int, "images per simulated micro-batch"),
    "--test-size": (int, "test images per evaluation (0: all)"),
    "--estimate-window": (int, "images behind each accuracy estimate"),
    "--arch": (str, "lenet, small_cnn or a torchvision classifier name"),
    "--device": (str, "auto (CUDA when present), cpu or cuda"),
    "--drift-detectors": (str, "river detectors on confidence, class mix, embeddings and audit errors, "
                               "comma-separated, or none"),
    "--drift-run-length": (float, "images between false alarms the detectors' thresholds aim at"),
    "--drift-factor": (float, "budget multiplier after a detection (1: no boost)"),
    "--drift-images": (int, "images a budget boost lasts"),
    "--drift-early": (int, "new labels that make an early learner round after a detection (0: none)"),
}
RENAMED = {"--label-delay": "--label-lag"}  # old name -> new: still taken, hidden from --help, with a warning


def sim_help(flag: str, text: str) -> str:
    """A flag's help with SimConfig's default, and run's with the reason where it differs.

    >>> sim_help("--window", "budget window, images")
    'budget window, images (default: 1000)'
    """
    field = field_of(flag)
    if differs_from_run(field):
        text = f"{text} (default: {DEFAULTS[field]}; run's is {run_default(field)}: {WHY_NOT_RUNS[field]})"
    return with_default(text, DEFAULTS[field])


def _common(p: argparse.ArgumentParser) -> None:
    for flag, (kind, text) in _FLAGS.items():
        p.add_argument(flag, type=kind, help=sim_help(flag, text))
    for old, new in RENAMED.items():
        p.add_argument(old, dest=_dest(old), type=_FLAGS[new][0], help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=with_default("torch CPU threads (0: torch's own)", 0))
    p.add_argument("--out", default=None, help="output folder (default: a new folder under var/sim)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (default: a progress bar on the terminal)")


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the simulation subcommands; each parser sets ``handler`` (args -> exit code)."""
    p = sub.add_parser("simulate", help="replay the whole loop in one process over a real dataset (no broker)",
                       description="Replay the whole loop in one process over a real dataset, no broker. Where a "
                                   "default differs from run's, the help says run's and why.")
    _common(p)
    p.add_argument("--strategy", help=with_default(
        f"{', '.join(SELECTORS)}, all or none; options after a slash: margin/quota:0.2, margin/cap:120, "
        "margin/diverse:0.05", DEFAULTS["strategy"]))
    p.add_argument("--seed", type=int, help=with_default("random seed of the run", DEFAULTS["seed"]))
    p.set_defaults(handler=run_simulate)
    c = sub.add_parser("compare", help="several strategies over several seeds: label efficiency, accuracy, AUC",
                       description="Several strategies over several seeds, each run as simulate runs it.")
    _common(c)
    for flag, default, kind, text in (
            ("--arms", "random,all,margin", str, "comma-separated STRATEGY[@LABELER][+PSEUDO_LABELER]; random and all "
                                                 "are always added"),
            ("--seeds", 3, int, "seeds 0..N-1"),
            ("--target", None, float, "accuracy to reach (default: random's final, per seed)"),
            ("--baseline", "random", str, "arm whose labels the others are divided by"),
            ("--jobs", 1, int, "runs in parallel processes")):
        c.add_argument(flag, type=kind, default=default, help=with_default(text, default))
    c.set_defaults(handler=run_compare)


def config_from(args: argparse.Namespace, **extra) -> SimConfig:
    """The SimConfig the flags ask for, every value checked (see :func:`check`)."""
    values = {field_of(f): getattr(args, _dest(f)) for f in _FLAGS}
    for old, new in RENAMED.items():
        given = getattr(args, _dest(old), None)
        if given is None:
            continue
        if values[field_of(new)] is not None:
            raise ConfigError(f"{old} is the old name of {new}; give {new} only")
        print(f"activestream: {old} is now {new}; the old name still works for a while", file=sys.stderr)
        values[field_of(new)] = given
    values.update(extra)
    if values.get("data_dir") is None:
        import os

        values["data_dir"] = os.environ.get("ACTIVESTREAM_DATA_DIR") or default_data_dir()
    config = SimConfig(**{k: v for k, v in values.items() if v is not None})
    check(config)
    return config


def _out(args, kind: str) -> Path:
    return Path(args.out or Path("var") / "sim" / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}")


def _threads(n: int) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _progress(enabled: bool, total: int, what: str):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn(what), BarColumn(), TextColumn("{task.completed}/{task.total} images"),
                   TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled, transient=False)
    task = bar.add_task(what, total=total)
    return bar, (lambda n: bar.advance(task, n))


def run_simulate(args: argparse.Namespace) -> int:
    at_least("--threads", args.threads, 0)
    config = config_from(args, **{k: v for k, v in (("strategy", args.strategy), ("seed", args.seed)) if v is not None})
    from activestream.simulation.engine import simulate
    from activestream.simulation.report import write_run

    _threads(args.threads)
    bar, advance = _progress(args.progress, config.images, f"simulate {config.scenario}/{config.strategy}")
    started = time.perf_counter()
    with bar:
        record = simulate(config, progress=advance)
    paths = write_run(record, _out(args, "simulate"))
    print(f"final test accuracy {record['final_accuracy']:.4f} with {record['labels']} labels "
          f"in {time.perf_counter() - started:.0f} s")
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def arms_of(text: str) -> list[str]:
    """Arms in order, random and all added if missing.

    >>> arms_of("margin,all@self")
    ['random', 'all', 'margin', 'all@self']
    """
    arms = [a.strip() for a in text.split(",") if a.strip()]
    return [a for a in ("random", "all") if a not in arms] + arms


def arm_config(base: SimConfig, arm: str, seed: int) -> SimConfig:
    arm, _, pseudo = arm.partition("+")
    strategy, _, labeler = arm.partition("@")
    return dataclasses.replace(base, strategy=strategy, labeler=labeler or base.labeler, pseudo=pseudo or base.pseudo,
                               seed=seed)


def _one(job: tuple[SimConfig, int]) -> dict:
    from activestream.simulation.engine import simulate

    config, threads = job
    _threads(threads)
    return simulate(config)


def run_compare(args: argparse.Namespace) -> int:
    for flag, least in (("--threads", 0), ("--seeds", 1), ("--jobs", 1)):
        at_least(flag, getattr(args, flag.lstrip("-")), least)
    if args.target is not None and not 0 < args.target <= 1:
        raise ConfigError(f"invalid setting --target: an accuracy is greater than 0 and at most 1 (got {args.target})")
    base = config_from(args)
    arms = arms_of(args.arms)
    for arm in arms:  # a typo fails now, not after the other arms ran
        check(arm_config(base, arm, 0), arm="--arms")
    if args.baseline not in arms:
        raise ConfigError(f"invalid setting --baseline: {args.baseline!r} is not one of the arms ({', '.join(arms)})")
    from activestream.simulation.engine import simulate
    from activestream.simulation.report import compare_summary, compare_table, plot, write_json

    _threads(args.threads)
    jobs = [(arm, arm_config(base, arm, seed)) for seed in range(args.seeds) for arm in arms]
    out = _out(args, "compare")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    records: dict[str, list[dict]] = {arm: [] for arm in arms}
    bar, advance = _progress(args.progress, len(jobs) * base.images, f"compare {len(arms)} arms x {args.seeds} seeds")
    started = time.perf_counter()
    with bar:
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs) as pool:
                results = pool.map(_one, [(c, args.threads or 1) for _, c in jobs])
                for (arm, c), record in zip(jobs, results):
                    records[arm].append(_keep(out, arm, record))
                    advance(c.images)
        else:
            for arm, c in jobs:
                records[arm].append(_keep(out, arm, simulate(c, progress=advance)))
    summary = compare_summary(records, baseline=args.baseline, target=args.target)
    write_json(out / "compare.json", {"config": base.to_dict(), "arms": arms, "seeds": args.seeds,
                                      "target": args.target, "baseline": args.baseline, "summary": summary})
    table = compare_table(summary)
    (out / "compare.md").write_text(table)
    plot(records, out / "compare.png", f"{base.scenario} {base.dataset}: {args.seeds} seeds")
    print(table)
    print(f"{len(jobs)} runs in {time.perf_counter() - started:.0f} s; outputs in {out}")
    return 0


def _keep(out: Path, arm: str, record: dict) -> dict:
    from activestream.simulation.report import write_json

    print(f"{arm} seed {record['config']['seed']}: final test accuracy {record['final_accuracy']:.4f}, "
          f"{record['labels']} labels, {record['pseudo_labels']} pseudo-labels", flush=True)
    write_json(out / "runs" / f"{arm.replace('@', '_').replace(':', '-').replace('/', '~')}-seed{record['config']['seed']}.json", record)
    return record
