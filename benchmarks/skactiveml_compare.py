"""Our stream selection against scikit-activeml's, on the same stream, model and budget.

    python benchmarks/skactiveml_compare.py [--images 4000] [--budget 0.05] [--seeds 0,1]

Every arm runs through the simulator's selection-policy seam
(:func:`activestream.simulation.engine.simulate` with ``policy=``): the same
Fashion-MNIST stream, the same seed model, the same labeler and learner
rounds; only the policy that decides which images get a label differs.

* ours: a core selector (margin, entropy) with ``AdaptiveBudget`` (10% of the
  budget on uniform audit items), exactly what the streaming selector runs;
* theirs: scikit-activeml's ``VariableUncertainty`` and ``Split`` (Zliobaite et
  al.), and ``FixedUncertainty``, each with its default budget manager at the
  same budget, fed the serving model's probabilities one item at a time, as
  their documentation does.

Printed per arm (mean over seeds): final test accuracy, and the labels spent
in each tumbling window of ``--window`` images (min / max / mean against the
target, worst relative deviation), plus the worst sliding window.
scikit-activeml is a benchmark-only dependency (``pip install -e .[bench]``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from activestream.config import default_data_dir  # noqa: E402
from activestream.simulation.engine import SimConfig, simulate  # noqa: E402
from activestream.simulation.policy import Selection, make_policy  # noqa: E402
from activestream.simulation.scenarios import build_scenario  # noqa: E402

try:
    from skactiveml.base import SkactivemlClassifier
    from skactiveml.stream import FixedUncertainty, Split, VariableUncertainty
except ImportError as e:  # a benchmark-only dependency
    raise SystemExit(f"scikit-activeml is missing ({e}); install the bench extra: "
                     "pip install -c constraints.txt -e '.[bench]'") from e

THEIRS = {"VariableUncertainty": VariableUncertainty, "Split": Split,
          "FixedUncertainty": FixedUncertainty}


class GivenProbabilities(SkactivemlClassifier):
    """A scikit-activeml classifier whose 'features' are the serving model's probabilities.

    The candidates passed to the strategy are ``probs`` ``[batch, classes]``;
    ``predict_proba`` hands them back, so their strategies judge exactly the
    model that ours judges.
    """

    def fit(self, X, y, sample_weight=None):
        self.classes_ = np.asarray(self.classes)
        return self

    def predict_proba(self, X):
        return np.asarray(X, dtype=np.float64)

    def predict(self, X):
        return self.classes_[np.asarray(X).argmax(axis=1)]


class SkactivemlPolicy:
    """A scikit-activeml stream query strategy behind the simulator's two verbs.

    ``select`` is pure: it decides the batch item by item (``query`` then
    ``update`` for each, their documented usage) on a copy of the strategy,
    and ``commit`` adopts that copy. Their strategies report no selection
    probability, so a selected item's is given as 1.
    """

    needs_samples = False
    needs_embeddings = False

    def __init__(self, name: str, budget: float, classes: int, seed: int):
        self.name = name
        self.strategy = THEIRS[name](budget=budget, random_state=seed)
        self.clf = GivenProbabilities(classes=np.arange(classes)).fit(None, None)
        self._pending = None

    def select(self, probs, embeddings, keys) -> Selection:
        strategy = copy.deepcopy(self.strategy)
        selected = np.zeros(len(keys), dtype=bool)
        for i in range(len(keys)):
            item = probs[i:i + 1]
            queried = strategy.query(item, clf=self.clf)
            strategy.update(item, queried)
            selected[i] = len(queried) > 0
        self._pending = (tuple(keys), strategy)
        reason = tuple("uncertain" if s else "" for s in selected.tolist())
        return Selection(selected, selected.astype(np.float64), reason)

    def commit(self, probs, embeddings, keys, selection: Selection) -> None:
        if self._pending is None or self._pending[0] != tuple(keys):
            self.select(probs, embeddings, keys)  # decided elsewhere: decide again
        self.strategy = self._pending[1]
        self._pending = None


class Recorder:
    """Wraps a policy and keeps every item's selection, for sliding-window spend."""

    def __init__(self, policy):
        self.policy = policy
        self.name = policy.name
        self.needs_samples = policy.needs_samples
        self.needs_embeddings = policy.needs_embeddings
        self.budget = getattr(policy, "budget", None)  # the engine reports windows for budgets
        self.selected: list[np.ndarray] = []

    def select(self, probs, embeddings, keys):
        return self.policy.select(probs, embeddings, keys)

    def commit(self, probs, embeddings, keys, selection) -> None:
        self.policy.commit(probs, embeddings, keys, selection)
        self.selected.append(np.asarray(selection.selected, dtype=bool))


def sliding_worst(selected: np.ndarray, window: int, target: float) -> float:
    """Largest relative deviation from ``target`` over every run of ``window`` consecutive items."""
    if len(selected) < window:
        return math.nan
    sums = np.convolve(selected.astype(np.int64), np.ones(window, dtype=np.int64), "valid")
    return float(np.abs(sums - target).max() / target)


def run_arm(arm: str, config: SimConfig, scenario) -> dict:
    classes = len(scenario.dataset.classes)
    if arm in THEIRS:
        policy = SkactivemlPolicy(arm, config.budget, classes, config.seed)
    else:
        policy = make_policy(arm, budget=config.budget, window=config.window,
                             audit_share=config.audit_share, seed=config.seed)
    recorder = Recorder(policy)
    started = time.perf_counter()
    record = simulate(config, policy=recorder, scenario=scenario)
    spent = np.concatenate(recorder.selected)
    windows = np.array(record["window_requests"])
    target = config.budget * config.window
    return {"arm": arm, "seed": config.seed, "final_accuracy": record["final_accuracy"],
            "labels": int(spent.sum()), "windows": windows.tolist(), "target": target,
            "worst": float(np.abs(windows - target).max() / target),
            "sliding_worst": sliding_worst(spent, config.window, target),
            "seconds": time.perf_counter() - started}


def summarise(rows: list[dict]) -> list[str]:
    lines = ["| arm | final accuracy | labels | window spend min / max / mean (target) "
             "| worst window | worst sliding window |",
             "| --- | ---: | ---: | --- | ---: | ---: |"]
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        acc = np.array([r["final_accuracy"] for r in mine])
        spend = np.concatenate([r["windows"] for r in mine])
        acc_text = f"{acc.mean():.4f}" + (f" ± {acc.std(ddof=1):.4f}" if len(acc) > 1 else "")
        lines.append(
            f"| {arm} | {acc_text} | {np.mean([r['labels'] for r in mine]):.0f} | "
            f"{spend.min()} / {spend.max()} / {spend.mean():.1f} ({mine[0]['target']:g}) | "
            f"{max(r['worst'] for r in mine):.1%} | {max(r['sliding_worst'] for r in mine):.1%} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=4000)
    p.add_argument("--budget", type=float, default=0.05)
    p.add_argument("--window", type=int, default=1000)
    p.add_argument("--seed-size", type=int, default=200)
    p.add_argument("--scenario", default="iid")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seeds", default="0", help="comma-separated run seeds")
    p.add_argument("--ours", default="margin,entropy")
    p.add_argument("--theirs", default="VariableUncertainty,Split")
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--retrain-every", type=int, default=50)
    p.add_argument("--round-gap", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    arms = [a for a in (args.ours + "," + args.theirs).split(",") if a]
    base = SimConfig(scenario=args.scenario, dataset=args.dataset,
                     data_dir=args.data_dir or default_data_dir(), images=args.images,
                     seed_size=args.seed_size, budget=args.budget, window=args.window,
                     test_size=args.test_size, retrain_every=args.retrain_every,
                     round_gap=args.round_gap, device=args.device)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        scenario = build_scenario(base.scenario, dataset=base.dataset, data_dir=base.data_dir,
                                  images=base.images, seed_size=base.seed_size, seed=seed,
                                  test_size=base.test_size)
        for arm in arms:
            row = run_arm(arm, dataclasses.replace(base, seed=seed, strategy=arm), scenario)
            rows.append(row)
            print(f"{arm} seed {seed}: final accuracy {row['final_accuracy']:.4f}, "
                  f"windows {row['windows']} (target {row['target']:g}), "
                  f"{row['seconds']:.0f} s", flush=True)
    print()
    print("\n".join(summarise(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
