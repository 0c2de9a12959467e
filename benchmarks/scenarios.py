"""Budget adherence and estimate coverage in every drift scenario, from a cold start.

Runs ``activestream simulate`` once per scenario (margin selector, 10% budget, 20,000
images by default; 14,000 for mnist-usps, whose second half must fit in USPS's 7,291
training images) and prints, per scenario, the requests in the emptiest and fullest
1,000-image window against the target of 100, the worst relative deviation, how often
the audit interval covered the true accuracy, and the final test accuracy. Usage::

    python benchmarks/scenarios.py --out var/bench/scenarios [simulate flags...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from activestream.simulation.scenarios import SCENARIOS

DEFAULTS = ["--images", "20000", "--seed-size", "200", "--budget", "0.1", "--strategy", "margin",
            "--holdout", "0", "--retrain-every", "200", "--round-gap", "2000", "--threads", "1", "--no-progress"]
CASES = {name: [] for name in SCENARIOS} | {
    "mnist-usps": ["--images", "14000"],
    "iid, noisy labeler 10%, label delay 500": ["--labeler", "noisy:0.1", "--label-lag", "500"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="var/bench/scenarios")
    p.add_argument("--only", default="", help="comma-separated scenario names to run (default: every case)")
    known, extra = p.parse_known_args(argv)
    from activestream.cli import parser

    rows = []
    only = {name for name in known.only.split(",") if name}
    for case, flags in CASES.items():
        scenario = case.split(",")[0]
        if only and case not in only:
            continue
        out = Path(known.out) / (scenario if "," not in case else "iid-noisy-delayed")
        args = parser().parse_args(["simulate", "--scenario", scenario, *DEFAULTS, *flags, *extra, "--out", str(out)])
        started = time.perf_counter()
        args.handler(args)
        r = json.loads((out / "run.json").read_text())
        w = r["window_requests"]
        rows.append(f"| {case} | {min(w)}-{max(w)} | {r['window_target']:.0f} | {r['window_worst']:.3f} "
                    f"| {r['audit_coverage']:.2f} | {r['final_accuracy']:.4f} | {time.perf_counter() - started:.0f} |")
        print(rows[-1], flush=True)
    print("| scenario | requests per 1,000 images (min-max) | target | worst deviation | audit CI coverage "
          "| final test accuracy | seconds |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
