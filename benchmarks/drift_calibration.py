"""Calibrate the drift detectors' thresholds for a target false-alarm rate, and measure it.

For each detector kind, the false alarms per update on standard normal streams (what a
standardised signal looks like while nothing changes) are measured at several
thresholds and fitted log-linearly (see :mod:`activestream.drift.detectors`); the fitted
threshold for a run length short enough to measure is then checked by measuring again
on fresh streams. ``--fit`` prints the fits to paste into ``CALIBRATION``.

    nice python benchmarks/drift_calibration.py --out var/bench/drift-calibration
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from activestream.drift.detectors import KINDS, false_alarm_rate, fit_calibration, threshold_for

GRID = {
    "adwin": [0.8, 0.5, 0.2, 0.1, 0.05],
    "page_hinkley": [3.0, 5.0, 8.0, 11.0, 14.0],
    "kswin": [0.05, 0.02, 0.01, 0.004, 0.002],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("var/bench/drift-calibration"))
    ap.add_argument("--updates", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--check", type=float, default=2000.0, help="run length (updates) whose rate is measured")
    ap.add_argument("--fit", action="store_true", help="fit on the grid first (else use the shipped fit)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = {}
    for kind in KINDS:
        started = time.perf_counter()
        fit = fit_calibration(kind, GRID[kind], updates=args.updates, runs=args.runs) if args.fit else None
        threshold = threshold_for(kind, args.check, fit)
        rate = false_alarm_rate(kind, threshold, updates=args.updates, runs=2 * args.runs, seed=99)
        report[kind] = {"fit": fit.__dict__ if fit else None, "threshold": threshold, "target_run_length": args.check,
                        "measured_run_length": 1 / rate if rate else math.inf,
                        "alarms": round(rate * args.updates * 2 * args.runs), "seconds": time.perf_counter() - started}
        print(kind, json.dumps(report[kind]), flush=True)
    (args.out / "calibration.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
