"""Label efficiency on Fashion-MNIST: the acceptance comparison, timed.

Runs ``activestream compare`` on an i.i.d. Fashion-MNIST stream of 20,000 images with
200 random seed labels and a 10% budget, over 3 seeds, and prints for every arm the
labels it needed to reach random sampling's final test accuracy as a share of random's
(paired per seed), the worst budget window, the audit interval's coverage, and the
wall time. Usage (from the repository root)::

    python benchmarks/label_efficiency.py --out var/bench/label-efficiency [--jobs 2] [compare flags...]

Extra flags are passed to ``activestream compare`` and override the defaults below.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULTS = ["--scenario", "iid", "--dataset", "fashion-mnist", "--images", "20000", "--seed-size", "200",
            "--budget", "0.1", "--seeds", "3", "--arms", "random,all,margin,bald",
            "--holdout", "0", "--retrain-every", "25", "--round-gap", "250", "--max-steps", "150",
            "--threads", "1"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="var/bench/label-efficiency")
    known, extra = p.parse_known_args(argv)
    from activestream.cli import parser

    args = parser().parse_args(["compare", *DEFAULTS, *extra, "--out", known.out, "--no-progress"])
    started = time.perf_counter()
    code = args.handler(args)
    wall = time.perf_counter() - started
    summary = json.loads((Path(known.out) / "compare.json").read_text())["summary"]
    print(f"wall time: {wall / 60:.1f} min for the whole comparison")
    best = None
    for arm, s in summary.items():
        ratio = s["ratio_to_baseline"]
        print(f"{arm:>28}: labels to random's final accuracy / random's = {ratio['mean']:.2f} ± {ratio['std']:.2f} "
              f"({s['labels_to_target']['n']}/{len(s['seeds'])} seeds reached); final accuracy "
              f"{s['final_accuracy']['mean']:.4f}; worst window {s['window_worst']['mean']:.3f} of target; "
              f"audit CI coverage {s['audit_coverage']['mean']:.2f}")
        if arm not in ("random", "all") and ratio["n"] == len(s["seeds"]):
            best = min(best or (arm, ratio["mean"]), (arm, ratio["mean"]), key=lambda t: t[1])
    if best:
        print(f"best strategy: {best[0]} at {best[1]:.2f} of random's labels (acceptance: <= 0.50)")
    return code


if __name__ == "__main__":
    sys.exit(main())
