"""Drift detection: river's detectors on a serving version's signals (core: no Kafka, no metrics).

The streaming selector and the simulator run the same :class:`DriftMonitor`; what a
detection does (a budget boost, an early learner round, a ``drift`` message) is up to them.
"""

from __future__ import annotations

from activestream.drift.detectors import KINDS, threshold_for
from activestream.drift.monitor import SIGNALS, DriftEvent, DriftMonitor
from activestream.errors import ConfigError


def parse_detectors(spec: str) -> tuple[str, ...]:
    """``"adwin,kswin"`` -> ``("adwin", "kswin")``; ``""`` or ``"none"``: no detection.

    >>> parse_detectors("adwin, page_hinkley"), parse_detectors("none")
    (('adwin', 'page_hinkley'), ())
    """
    kinds = tuple(k.strip() for k in spec.split(",") if k.strip() and k.strip() != "none")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ConfigError(f"unknown drift detector(s) {', '.join(unknown)}; use a comma-separated list of "
                          f"{', '.join(KINDS)}, or none")
    return kinds


def make_monitor(spec: str, *, run_length: float, seed: int = 0, **options) -> DriftMonitor | None:
    """A monitor with the detectors named in ``spec``, or None when it names none."""
    kinds = parse_detectors(spec)
    return DriftMonitor(kinds, run_length=run_length, seed=seed, **options) if kinds else None


__all__ = ["KINDS", "SIGNALS", "DriftEvent", "DriftMonitor", "make_monitor", "parse_detectors", "threshold_for"]
