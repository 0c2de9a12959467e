"""What a simulation depends on (:class:`SimConfig`), its limits, and where its defaults
part from ``run``'s and why.

Kept apart from the engine so that ``--help`` and a bad flag are answered without
importing torch.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass

from annotated_types import Ge, Gt, Le, Lt

from activestream.config import Settings


@dataclass(frozen=True)
class SimConfig:
    """Everything a run depends on; the JSON record repeats it."""

    scenario: str = "iid"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    images: int = 20000
    seed_size: int = 200
    strategy: str = "margin"
    budget: float = 0.1
    window: int = 1000
    audit_share: float = 0.1
    labeler: str = "oracle"
    pseudo: str | None = None     # a second, pseudo labeler for the items the policy passes over
    label_delay: int = 0          # stream images between a request and its label (flag --label-lag)
    retrain_every: int = 100      # new labels per learner round
    round_gap: int = 1000         # at most one round per this many images (the learner takes time)
    epochs: int = 4
    min_steps: int = 150
    max_steps: int | None = 300
    learning_rate: float = 1e-3
    cosine: bool = True           # learning rate decays to 0 over each round
    holdout: float = 0.2
    tolerance: float = 0.01
    seed_epochs: int = 10
    batch: int = 250
    test_size: int = 0            # 0: the whole test split
    estimate_window: int = 4000   # images behind each accuracy estimate
    mc_samples: int = 10
    arch: str = "lenet"
    device: str = "auto"
    seed: int = 0
    drift_detectors: str = "adwin,page_hinkley,kswin"  # "none": no drift detection
    drift_run_length: float = 500_000.0  # images between false alarms the thresholds aim at
    drift_factor: float = 1.0     # budget multiplier after a detection (1: no boost)
    drift_images: int = 2000      # images a boost lasts
    drift_early: int = 0          # new labels that make an early learner round after a detection (0: none)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


DEFAULTS = {f.name: f.default for f in dataclasses.fields(SimConfig)}
_FLAGS = {"label_delay": "--label-lag"}  # fields whose flag is not their name (run's --label-delay is seconds)


def flag_of(field: str) -> str:
    """The flag of ``simulate`` and ``compare`` that sets a field.

    >>> flag_of("audit_share"), flag_of("label_delay")
    ('--audit-share', '--label-lag')
    """
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


def field_of(flag: str) -> str:
    """The field a flag sets.

    >>> field_of("--seed-size"), field_of("--label-lag")
    ('seed_size', 'label_delay')
    """
    return next((field for field, name in _FLAGS.items() if name == flag), flag.lstrip("-").replace("-", "_"))


# SimConfig field -> the Settings field of the same concept in `run`. Not here: label_delay
# (images in the simulator, seconds in run) and batch (run's batch_size is the largest
# micro-batch a consumer takes, not a fixed one).
RUN_SETTING = {
    "dataset": "dataset", "images": "images", "seed_size": "seed_size", "strategy": "strategy", "budget": "budget",
    "window": "budget_window", "audit_share": "audit_share", "retrain_every": "retrain_every", "epochs": "epochs",
    "learning_rate": "learning_rate", "holdout": "holdout", "tolerance": "promote_tolerance", "arch": "arch",
    "device": "device", "seed": "seed", "drift_detectors": "drift_detectors",
    "drift_run_length": "drift_run_length", "drift_factor": "drift_budget_factor",
    "drift_images": "drift_budget_images", "drift_early": "drift_early_labels",
}

# Why the simulator's default is not run's, for every shared setting where they differ
# (a test keeps this complete and free of stale entries).
WHY_NOT_RUNS = {
    "dataset": "the measured results are on Fashion-MNIST; run's auto takes Fashion-MNIST when the data folder has "
               "it and the bundled digits otherwise, so the demo starts anywhere",
    "seed_size": "a small seed leaves the most to learn from the stream, where strategies differ (the "
                 "label-efficiency benchmark's setting); the demo starts from more so that its first version "
                 "already serves well",
    "budget": "it buys enough labels in one default-length stream for learner rounds to tell strategies apart; "
              "run asks people for fewer",
    "retrain_every": "more rounds keep the scoring model fresher, which helps uncertainty sampling; in run each round "
                     "takes the learner's core while traffic flows",
    "learning_rate": "the simulator's rounds decay the rate to 0 (--cosine) within a capped number of steps "
                     "(--max-steps); run's learner does neither, and higher rates undid the seed on biased label sets",
    "arch": "LeNet learns from a few hundred labels much faster than the globally pooled small_cnn; run's demo and "
            "serving benchmarks are measured with small_cnn",
    "drift_factor": "the simulator records drift detections without reacting by default, so a detection moves no "
                    "other figure; run reacts",
    "drift_early": "the simulator records drift detections without reacting by default, so a detection moves no "
                   "other figure; run reacts",
}


def run_default(field: str):
    """``run``'s default for the setting a simulator field shares with it; None when none is shared.

    >>> run_default("window"), run_default("batch")
    (1000, None)
    """
    name = RUN_SETTING.get(field)
    return None if name is None else Settings.model_fields[name].default


def differs_from_run(field: str) -> bool:
    """Whether the simulator's default for ``field`` is not run's.

    >>> differs_from_run("arch"), differs_from_run("window"), differs_from_run("label_delay")
    (True, False, False)
    """
    return field in RUN_SETTING and DEFAULTS[field] != run_default(field)


def _bounds(name: str) -> tuple:
    """The limits pydantic holds for a Settings field."""
    return tuple(m for m in Settings.model_fields[name].metadata if isinstance(m, (Gt, Ge, Lt, Le)))


_OURS = {  # limits where run's setting has none, or there is no such setting
    "images": (Ge(1),), "seed_size": (Ge(1),), "window": (Ge(1),), "label_delay": (Ge(0),),
    "retrain_every": (Ge(1),), "round_gap": (Ge(0),), "epochs": (Ge(1),), "min_steps": (Ge(0),),
    "max_steps": (Ge(1),), "learning_rate": (Gt(0),), "batch": (Ge(1),), "test_size": (Ge(0),),
    "estimate_window": (Ge(1),),
}
# Limits of each field: run's own where the setting is shared (annotated_types' bounds, as
# pydantic keeps them), then ours.
LIMITS = {field: (_bounds(RUN_SETTING[field]) if field in RUN_SETTING else ()) + _OURS.get(field, ())
          for field in DEFAULTS}

_WORDS = (("gt", operator.gt, "greater than"), ("ge", operator.ge, "at least"), ("lt", operator.lt, "less than"),
          ("le", operator.le, "at most"))


def broken(field: str, value) -> str | None:
    """What is wrong with ``value`` for ``field``; None when nothing is.

    >>> broken("budget", 2.0), broken("budget", 0.0), broken("window", 0), broken("budget", 0.1)
    ('must be at most 1', 'must be greater than 0', 'must be at least 1', None)
    """
    if value is None:  # max_steps None: no cap
        return None
    for limit in LIMITS.get(field, ()):
        for name, holds, words in _WORDS:
            bound = getattr(limit, name, None)
            if bound is not None and not holds(value, bound):
                return f"must be {words} {bound}"
    return None


def defaults_table() -> str:
    """Markdown: each simulator default that is not run's, run's, and why (docs/simulation.md holds it)."""
    rows = ["| flag | simulate's default | run's default | why |", "| --- | --- | --- | --- |"]
    rows += [f"| `{flag_of(f)}` | {DEFAULTS[f]} | {run_default(f)} | {WHY_NOT_RUNS[f]} |"
             for f in DEFAULTS if differs_from_run(f)]
    return "\n".join(rows) + "\n"
