"""``activestream simulate`` and ``activestream compare``."""

from __future__ import annotations

import argparse
import dataclasses
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from typing import TYPE_CHECKING

from activestream.config import default_data_dir

if TYPE_CHECKING:  # the engine imports torch: loaded when a simulation runs, not for --help
    from activestream.simulation.engine import SimConfig

_FLAGS = {  # flag -> (SimConfig field, type, help)
    "--scenario": (str, "iid, class-incremental, rotate, contrast or mnist-usps"),
    "--dataset": (str, "fashion-mnist, mnist, usps or digits (mnist-usps picks its own)"),
    "--data-dir": (str, "folder holding the datasets (default: ACTIVESTREAM_DATA_DIR or the shared data folder)"),
    "--images": (int, "stream length"),
    "--seed-size": (int, "human labels the seed model is trained on"),
    "--budget": (float, "share of the stream sent to labelers"),
    "--window": (int, "budget window, images"),
    "--audit-share": (float, "share of the budget spent on uniformly random audit items"),
    "--labeler": (str, "oracle, noisy:RATE, self, confident:MIN_P or committee[:SHARE]"),
    "--pseudo": (str, "pseudo labeler for the items not sent to people: confident:MIN_P, self or committee"),
    "--label-delay": (int, "stream images between a request and its label"),
    "--retrain-every": (int, "new labels per learner round"),
    "--round-gap": (int, "at most one learner round per this many images"),
    "--epochs": (int, "fine-tuning epochs per round"),
    "--min-steps": (int, "at least this many optimiser steps per round"),
    "--max-steps": (int, "at most this many optimiser steps per round"),
    "--learning-rate": (float, "fine-tuning learning rate"),
    "--cosine": (lambda v: v.lower() in ("1", "true", "yes"), "true: the rate decays to 0 over each round"),
    "--holdout": (float, "share of human labels held out for promotion decisions"),
    "--batch": (int, "images per simulated micro-batch"),
    "--test-size": (int, "test images per evaluation (0: all)"),
    "--estimate-window": (int, "images behind each accuracy estimate"),
    "--arch": (str, "lenet (default), small_cnn or a torchvision classifier name"),
    "--device": (str, "auto (CUDA when present), cpu or cuda"),
    "--drift-detectors": (str, "river detectors on confidence, class mix, embeddings and audit errors: "
                               "adwin,page_hinkley,kswin (default) or none"),
    "--drift-run-length": (float, "images between false alarms the detectors' thresholds aim at (500000)"),
    "--drift-factor": (float, "budget multiplier after a detection (default 1: no boost)"),
    "--drift-images": (int, "images a budget boost lasts (2000)"),
    "--drift-early": (int, "new labels that make an early learner round after a detection (default 0: none)"),
}


def _common(p: argparse.ArgumentParser) -> None:
    for flag, (kind, text) in _FLAGS.items():
        p.add_argument(flag, type=kind, help=text)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default=None, help="output folder (default: a new folder under var/sim)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the simulation subcommands; each parser sets ``handler`` (args -> exit code)."""
    p = sub.add_parser("simulate", help="replay the whole loop in one process over a real dataset (no broker)")
    _common(p)
    p.add_argument("--strategy", help="margin, entropy, least_confidence, bald, random, all or none; options "
                   "after a slash: margin/quota:0.2, margin/cap:120, margin/diverse:0.05")
    p.add_argument("--seed", type=int, help="random seed of the run")
    p.set_defaults(handler=run_simulate)
    c = sub.add_parser("compare", help="several strategies over several seeds: label efficiency, accuracy, AUC")
    _common(c)
    c.add_argument("--arms", default="random,all,margin",
                   help="comma-separated STRATEGY[@LABELER][+PSEUDO_LABELER]; random and all are always added")
    c.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    c.add_argument("--target", type=float, default=None, help="accuracy to reach (default: random's final, per seed)")
    c.add_argument("--baseline", default="random", help="arm whose labels the others are divided by")
    c.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    c.set_defaults(handler=run_compare)


def config_from(args: argparse.Namespace, **extra) -> SimConfig:
    values = {f.lstrip("-").replace("-", "_"): getattr(args, f.lstrip("-").replace("-", "_")) for f in _FLAGS}
    values.update(extra)
    from activestream.simulation.engine import SimConfig

    if values.get("data_dir") is None:
        import os

        values["data_dir"] = os.environ.get("ACTIVESTREAM_DATA_DIR") or default_data_dir()
    config = SimConfig(**{k: v for k, v in values.items() if v is not None})
    from activestream.simulation.datasets import check_dataset

    # Before any model is built: a wrong name or folder fails in a second, not after the seed.
    for name in ("mnist", "usps") if config.scenario == "mnist-usps" else (config.dataset,):
        check_dataset(name, config.data_dir)
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
    from activestream.simulation.engine import simulate
    from activestream.simulation.report import write_run

    _threads(args.threads)
    config = config_from(args, **{k: v for k, v in (("strategy", args.strategy), ("seed", args.seed)) if v is not None})
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
    from activestream.simulation.engine import simulate
    from activestream.simulation.report import compare_summary, compare_table, plot, write_json

    _threads(args.threads)
    base = config_from(args)
    arms = arms_of(args.arms)
    from activestream.simulation.policy import make_policy

    for arm in arms:  # a typo fails now, not after the other arms ran
        make_policy(arm_config(base, arm, 0).strategy, budget=base.budget, window=base.window)
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
