"""Drift detection and reaction in simulation: delay, false alarms, recovery.

For each shifted scenario (``rotate``, ``contrast``, ``mnist-usps``; the shift is at half
the stream) and seed, two arms run the same stream: ``fixed`` (detection on, no reaction)
and ``acting`` (a detection raises the budget by ``--factor`` for ``--boost`` images and
asks for an early learner round after ``--early`` labels). Until the first detection the
two arms are the same run, so the detection delay is one figure per seed. ``iid`` runs
measure false alarms. Per run:

* delay: images from the shift to the first detection (target: at most 500);
* recovery: images from the shift until a checkpoint's test accuracy has won back half
  of what the shift cost (the drop is measured at the shift, on the shifted test set,
  against the last checkpoint before it).

    nice python benchmarks/drift.py --out var/bench/drift
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

SHIFTED = ("rotate", "contrast", "mnist-usps")


def run(job: tuple[str, str, dict]) -> tuple[str, str, dict]:
    import torch

    from activestream.simulation.engine import SimConfig, simulate

    torch.set_num_threads(1)
    scenario, arm, values = job
    started = time.perf_counter()
    record = simulate(SimConfig(**values))
    record["seconds"] = time.perf_counter() - started
    return scenario, arm, record


def recovery(record: dict, shift: int) -> float:
    """Images after ``shift`` until half the accuracy the shift cost is won back (nan: never)."""
    cps = record["checkpoints"]
    at = [i for i, c in enumerate(cps) if c["images"] == shift]
    if not at or at[-1] == 0:
        return math.nan
    k = at[-1]
    before, after = cps[k - 1]["test_accuracy"], cps[k]["test_accuracy"]
    goal = after + (before - after) / 2
    for c in cps[k + 1:]:
        if c["test_accuracy"] >= goal:
            return float(c["images"] - shift)
    return math.nan


def summary(scenario: str, arm: str, record: dict) -> dict:
    images = record["config"]["images"]
    events = record["drift_events"]
    row = {"scenario": scenario, "arm": arm, "seed": record["config"]["seed"], "events": len(events),
           "final_accuracy": record["final_accuracy"], "labels": record["labels"], "seconds": record["seconds"],
           "first": events[0] if events else None}
    if scenario in SHIFTED:
        shift = images // 2
        after = [e for e in events if e["position"] >= shift]
        row.update(false_alarms=len(events) - len(after),
                   delay=(after[0]["position"] - shift) if after else math.nan,
                   recovery=recovery(record, shift))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("var/bench/drift"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--images", type=int, default=3000, help="shifted scenarios' stream length (shift at half)")
    ap.add_argument("--iid-images", type=int, default=20000)
    ap.add_argument("--factor", type=float, default=3.0)
    ap.add_argument("--boost", type=int, default=1000)
    ap.add_argument("--early", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated scenarios (default: all)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = os.environ.get("ACTIVESTREAM_DATA_DIR")
    common = dict(seed_size=200, budget=0.1, retrain_every=100, round_gap=500, max_steps=100, test_size=500,
                  data_dir=data_dir)
    acting = dict(drift_factor=args.factor, drift_images=args.boost, drift_early=args.early)
    jobs = []
    for seed in range(args.seeds):
        for scenario in SHIFTED:
            dataset = "mnist" if scenario == "mnist-usps" else "fashion-mnist"
            base = dict(common, scenario=scenario, dataset=dataset, images=args.images, seed=seed)
            jobs.append((scenario, "acting", {**base, **acting}))
            jobs.append((scenario, "fixed", base))
        jobs.append(("iid", "fixed", dict(common, scenario="iid", images=args.iid_images, seed=seed,
                                          retrain_every=400, round_gap=2000)))
    if args.only:
        jobs = [j for j in jobs if j[0] in args.only.split(",")]
    # false alarms first, then detection (both arms agree until the first detection), then recovery
    jobs.sort(key=lambda j: (j[0] != "iid", j[1] == "fixed", j[2]["seed"]))
    rows = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for done in as_completed([pool.submit(run, j) for j in jobs]):
            scenario, arm, record = done.result()
            name = f"{scenario}-{arm}-seed{record['config']['seed']}"
            (args.out / f"{name}.json").write_text(json.dumps(record, default=float) + "\n")
            rows.append(summary(scenario, arm, record))
            print(json.dumps(rows[-1], default=float), flush=True)
            (args.out / "summary.json").write_text(json.dumps(rows, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
