"""Label-free accuracy against the audit estimate, before and after the shift, per scenario.

Runs ``activestream simulate`` per scenario and seed (the settings of
``benchmarks/scenarios.py``: margin selector, 10% budget of which 10% audits, 20,000
images, 14,000 for mnist-usps) and prints, per scenario, the mean absolute error against
the served predictions' true accuracy on the last 4,000 images at the checkpoints up to
the halfway point (``before``, where the drift scenarios shift) and past it (``after``),
for the audit, IPW, CBPE and ATC estimates, and the worst error after the shift of
CBPE, ATC and the audit estimate. Usage::

    python benchmarks/label_free.py --out var/bench/label-free [--seeds 0,1,2] [--only iid] [--reuse] [simulate flags...]

``--reuse`` reads a run's record from ``--out`` where one is there instead of running it
again (to tabulate seeds run in separate processes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

DEFAULTS = ["--images", "20000", "--seed-size", "200", "--budget", "0.1", "--strategy", "margin",
            "--holdout", "0", "--retrain-every", "200", "--round-gap", "2000", "--threads", "1", "--no-progress"]
CASES = {"iid": [], "rotate": [], "contrast": [], "mnist-usps": ["--images", "14000"]}
METHODS = ("audit", "ipw", "cbpe", "atc")


def run(scenario: str, seed: int, out: Path, extra: list[str], reuse: bool = False) -> dict:
    from activestream.cli import parser

    if reuse and (out / "run.json").exists():
        return json.loads((out / "run.json").read_text())

    args = parser().parse_args(["simulate", "--scenario", scenario, *DEFAULTS, *CASES[scenario], *extra,
                                "--seed", str(seed), "--out", str(out)])
    args.handler(args)
    return json.loads((out / "run.json").read_text())


def worst_after(record: dict, method: str) -> float:
    half = record["config"]["images"] // 2
    errors = [abs(c[method]["value"] - c["truth_traffic"]) for c in record["checkpoints"]
              if c["images"] > half and c.get(method) and c[method]["n"]]
    return max(errors, default=math.nan)


def row(scenario: str, records: list[dict], seconds: float) -> str:
    def mean(part: str, method: str) -> str:
        values = [r["estimate_error"][part][method] for r in records]
        return f"{np.nanmean(values) * 100:.1f}" if not all(math.isnan(v) for v in values) else "-"

    cells = [mean(part, m) for part in ("before", "after") for m in METHODS]
    worst = [max(worst_after(r, m) for r in records for m in methods) for methods in (("cbpe",), ("atc",), ("audit",))]
    return (f"| {scenario} | {len(records)} | " + " | ".join(cells) + " | " + " / ".join(f"{w * 100:.1f}" for w in worst)
            + (f" | {seconds:.0f} |" if seconds >= 1 else " | - |"))  # - : every record reused


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="var/bench/label-free")
    p.add_argument("--seeds", default="0")
    p.add_argument("--only", default="", help="comma-separated scenarios (default: every one)")
    p.add_argument("--reuse", action="store_true", help="read records already in --out instead of running them")
    known, extra = p.parse_known_args(argv)
    only = {s for s in known.only.split(",") if s} or set(CASES)
    rows = []
    for scenario in (s for s in CASES if s in only):
        started = time.perf_counter()
        records = [run(scenario, int(seed), Path(known.out) / f"{scenario}-{seed}", extra, known.reuse)
                   for seed in known.seeds.split(",")]
        rows.append(row(scenario, records, time.perf_counter() - started))
        print(rows[-1], flush=True)
    print("mean absolute error against the truth on traffic, in accuracy points, at the checkpoints")
    print("| scenario | seeds | before: audit | IPW | CBPE | ATC | after: audit | IPW | CBPE | ATC "
          "| worst after: CBPE / ATC / audit | seconds |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
          "| ---: | ---: | ---: |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
