"""river's drift detectors, with thresholds set for a target false-alarm rate.

Every stream a detector watches here is standardised against its version's reference
window (see :mod:`activestream.drift.monitor`): while nothing changes it has mean about
0 and standard deviation about 1, whatever the signal or the model. So one calibration
serves every signal and every version: for each detector kind, the rate of false alarms
per update on a standard normal stream was measured at several thresholds, where
alarms are frequent enough to count, and fitted as

    log(alarms per update) = intercept + slope * g(threshold)

(``g`` is ``log`` for ADWIN's delta and KSWIN's alpha, the identity for Page-Hinkley's
lambda). :func:`threshold_for` inverts the fit for a target expected run length
(updates between false alarms); :func:`false_alarm_rate` measures it again
(``python benchmarks/drift_calibration.py`` refits and measures the fitted thresholds).

>>> delta = threshold_for("adwin", 10_000)
>>> round(delta, 3)
0.081
>>> detector = make_detector("adwin", delta)
>>> for x in [0.0] * 50 + [5.0] * 20:
...     detector.update(x)
...     if detector.drift_detected:
...         break
>>> detector.drift_detected
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from activestream.errors import ConfigError

KINDS = ("adwin", "page_hinkley", "kswin")

# Fixed shapes of the detectors (the threshold is the only calibrated parameter). ADWIN
# checks for a cut at every update (river's default, every 32, would add up to 32 blocks of
# delay); Page-Hinkley ignores drifts under a quarter of a standard deviation (the
# reference's mean is only estimated); KSWIN compares its last 15 updates with 40 before,
# so it needs 40 updates of a version before its first test.
ADWIN_SHAPE = {"clock": 1, "grace_period": 5, "min_window_length": 5}
PH_SHAPE = {"min_instances": 5, "delta": 0.25, "alpha": 1.0}
KSWIN_SHAPE = {"window_size": 40, "stat_size": 15}


@dataclass(frozen=True)
class Fit:
    """``log(alarms per update) = intercept + slope * g(threshold)``."""

    intercept: float
    slope: float
    log_threshold: bool  # g = log (else identity)


# Fitted by ``python benchmarks/drift_calibration.py --fit`` (10 standard normal streams of
# 2,000 updates per threshold). Checked at a run length of 2,000 updates on 20 fresh
# streams: ADWIN 2,105, Page-Hinkley 4,000, KSWIN 4,444 (both on the safe side).
CALIBRATION: dict[str, Fit] = {
    "adwin": Fit(-5.9190, 1.3103, True),
    "page_hinkley": Fit(-1.9480, -0.47335, False),
    "kswin": Fit(-2.5448, 0.72284, True),
}


def _check(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown drift detector {kind!r}; choose from {', '.join(KINDS)}")


def threshold_for(kind: str, run_length: float, fit: Fit | None = None) -> float:
    """The threshold that gives ``kind`` about one false alarm per ``run_length`` updates."""
    _check(kind)
    if not run_length > 1:
        raise ConfigError(f"a run length must be above 1 update, got {run_length!r}")
    f = fit or CALIBRATION[kind]
    g = (-math.log(run_length) - f.intercept) / f.slope
    return math.exp(g) if f.log_threshold else g


def make_detector(kind: str, threshold: float, seed: int = 0):
    """A fresh river detector of ``kind`` with its calibrated ``threshold``."""
    # Imported here: river loads scikit-learn (seconds), and every command's settings
    # check reads this module's names; only a monitor needs the detectors.
    from river import drift

    _check(kind)
    if kind == "adwin":
        return drift.ADWIN(delta=threshold, **ADWIN_SHAPE)
    if kind == "page_hinkley":
        return drift.PageHinkley(threshold=threshold, mode="both", **PH_SHAPE)
    return drift.KSWIN(alpha=threshold, seed=seed, **KSWIN_SHAPE)


def statistic(kind: str, detector, before: float) -> float:
    """What crossed the threshold at a detection: ADWIN, how far its mean estimate moved
    (``before`` is the estimate before the update); Page-Hinkley, its cumulative
    deviation; KSWIN, the test's p-value."""
    if kind == "adwin":
        return abs(before - detector.estimation)
    if kind == "page_hinkley":
        # river keeps the two one-sided sums private; reading them is the only way to report them
        up = detector._sum_increase - detector._min_increase
        down = detector._max_decrease - detector._sum_decrease
        return float(max(up, down))
    return float(detector.p_value)


def estimate(kind: str, detector) -> float:
    """The state :func:`statistic` compares against (ADWIN's mean estimate), else 0."""
    return float(detector.estimation) if kind == "adwin" else 0.0


def false_alarm_rate(kind: str, threshold: float, *, updates: int = 2000, runs: int = 20, seed: int = 0) -> float:
    """Alarms per update on ``runs`` standard normal streams of ``updates`` each (no drift)."""
    rng = np.random.default_rng(seed)
    alarms = 0
    for run in range(runs):
        detector = make_detector(kind, threshold, seed=seed + run)
        for x in rng.standard_normal(updates).tolist():
            detector.update(x)
            alarms += detector.drift_detected
    return alarms / (updates * runs)


def fit_calibration(kind: str, thresholds: list[float], **measure) -> Fit:
    """Measure :func:`false_alarm_rate` at each threshold and fit the log-linear model."""
    log_t = kind != "page_hinkley"
    xs, ys = [], []
    for t in thresholds:
        rate = false_alarm_rate(kind, t, **measure)
        if rate > 0:
            xs.append(math.log(t) if log_t else t)
            ys.append(math.log(rate))
    if len(xs) < 2:
        raise ConfigError(f"too few thresholds of {kind} raised alarms to fit; use looser ones")
    slope, intercept = np.polyfit(xs, ys, 1)
    return Fit(float(intercept), float(slope), log_t)
