"""Watch one serving version's signals with river's detectors; report each detection.

Signals, each standardised against the version's reference window (its first
``reference`` images) so that, while nothing changes, every detector sees a stream of
mean about 0 and standard deviation about 1 and one calibration serves them all:

* ``confidence``: the mean top-class probability of each block of ``block`` images,
  as a z-score against the reference images' mean and standard deviation;
* ``class_mix``: Pearson's chi-square of each block's predicted-class counts against
  the reference window's class shares (add-one smoothed), made about normal by the
  Wilson-Hilferty cube root;
* ``embedding`` (when the caller passes penultimate-layer features): each image's mean
  squared distance from the reference's mean embedding, per dimension in reference
  standard deviations (floored, and clipped at 5); a block's mean as a z-score against the reference images' own
  distances. A two-sample test reduced to one number per image, cheap enough for every
  image; a covariate shift (rotated, washed-out, other-source images) moves it most;
* ``audit_error``: 1 where an arrived audit label says the version was wrong, else 0,
  as a z-score against the error rate of the version's first ``audit_reference`` audit
  labels. Only labels that arrived are used: no ground truth.

Each version starts afresh: a new version resets every detector and its reference.
The reference blocks themselves are fed to the detectors once the reference is
complete, so a shift inside a young version's reference window is still a change in
the detectors' stream. Thresholds are set so that all detectors together raise about
one false alarm per ``run_length`` images (each (signal, detector) pair gets an equal
share; an audit label counts as a block).

>>> rng = np.random.default_rng(0)
>>> monitor = DriftMonitor(run_length=100_000, block=25, reference=300)
>>> calm = rng.dirichlet([8, 1, 1], size=2000)
>>> monitor.observe(1, calm, 0)
>>> monitor.events_
()
>>> shifted = rng.dirichlet([1, 1, 1], size=500)   # far less confident
>>> monitor.observe(1, shifted, 2000)
>>> sorted({e.signal for e in monitor.events_})   # less sure, and its guesses spread out
['class_mix', 'confidence']
>>> min(e.position for e in monitor.events_) < 2300
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from activestream.drift.detectors import KINDS, estimate, make_detector, statistic, threshold_for
from activestream.errors import ConfigError

SIGNALS = ("confidence", "class_mix", "embedding", "audit_error")
BLOCK_SIGNALS = ("confidence", "class_mix", "embedding")
BINARY_KINDS = ("adwin", "page_hinkley")  # KSWIN's KS test means nothing on a 0/1 stream (all ties)


@dataclass(frozen=True)
class DriftEvent:
    """One detection: which detector on which signal of which version, where, how strong."""

    detector: str
    signal: str
    version: int
    position: int        # stream position of the newest image seen when it fired
    statistic: float     # see activestream.drift.detectors.statistic
    threshold: float     # ADWIN delta, Page-Hinkley lambda, KSWIN alpha


class DriftMonitor:
    def __init__(self, detectors: tuple[str, ...] = KINDS, *, run_length: float = 500_000, block: int = 25,
                 reference: int = 300, audit_reference: int = 30, signals: tuple[str, ...] = SIGNALS,
                 seed: int = 0):
        unknown = set(signals) - set(SIGNALS)
        if unknown or not signals:
            raise ConfigError(f"drift signals must be among {', '.join(SIGNALS)}, got {signals!r}")
        if not detectors or set(detectors) - set(KINDS):
            raise ConfigError(f"drift detectors must be among {', '.join(KINDS)}, got {detectors!r}")
        if block < 2 or reference < block or audit_reference < 1:
            raise ConfigError(f"need block >= 2, reference >= block and audit_reference >= 1; got {block}, "
                              f"{reference}, {audit_reference}")
        self.detectors = tuple(detectors)
        self.run_length = run_length
        self.block = block
        self.reference = reference
        self.audit_reference = audit_reference
        self.signals = tuple(signals)
        self.seed = seed
        pairs = self._pairs()
        per_update = run_length * len(pairs) / block
        self.thresholds = {kind: threshold_for(kind, per_update) for kind in {k for _, k in pairs}}
        self.version_ = 0
        self.events_: tuple[DriftEvent, ...] = ()
        self._reset(0)

    def _pairs(self) -> list[tuple[str, str]]:
        return [(s, k) for s in self.signals for k in self.detectors
                if s in BLOCK_SIGNALS or k in BINARY_KINDS]

    def _reset(self, version: int) -> None:
        self.version_ = version
        self._river = {(s, k): make_detector(k, self.thresholds[k], self.seed) for s, k in self._pairs()}
        self._conf = np.zeros(0)                       # images not yet in a fed block
        self._cls = np.zeros(0, dtype=np.int64)
        self._ref = None                               # (mean, sd, class shares) once the reference is full
        self._ref_done = 0
        self._dist = np.zeros(0)                       # per image: distance from the reference embedding
        self._emb: list = []                           # reference embeddings, per batch (None: unknown)
        self._emb_n: list[int] = []
        self._emb_stats = None                         # (mean, sd per dimension, distance mean, distance sd)
        self._audit = np.zeros(0)                      # audit errors before the audit reference is full
        self._audit_ref = None                         # (error rate, sd)

    def observe(self, version: int, probs: np.ndarray, position: int, embeddings: np.ndarray | None = None) -> None:
        """Predictions ``probs`` ``[batch, classes]`` of ``version``, the first at stream ``position``;
        ``embeddings`` ``[batch, dim]``: their penultimate-layer features, if known."""
        if version != self.version_:
            self._reset(version)
        probs = np.asarray(probs, dtype=np.float64)
        self._conf = np.concatenate([self._conf, probs.max(axis=1)])
        self._cls = np.concatenate([self._cls, probs.argmax(axis=1)])
        self._add_embeddings(embeddings, len(probs))
        now = position + len(probs) - 1
        if self._ref is None:
            if len(self._conf) < self.reference:
                self.events_ = ()
                return
            self._ref = _reference(self._conf, self._cls, probs.shape[1])
            self._ref_done = now - (len(self._conf) - self.reference)  # where the reference filled
            self._dist = self._embedding_reference()
        self.events_ = tuple(self._blocks(now))

    def _blocks(self, now: int) -> list[DriftEvent]:
        events = []
        while len(self._conf) >= self.block:
            b = self.block
            conf, cls, dist = self._conf[:b], self._cls[:b], self._dist[:b]
            self._conf, self._cls, self._dist = self._conf[b:], self._cls[b:], self._dist[b:]
            # a reference block is only seen once the reference is full
            at = max(now - len(self._conf), self._ref_done)
            values = {"confidence": self._z_confidence(conf), "class_mix": self._z_mix(cls),
                      "embedding": self._z_embedding(dist)}
            for signal in BLOCK_SIGNALS:
                if signal in self.signals and values[signal] is not None:
                    events += self._feed(signal, values[signal], at)
        return events

    def _add_embeddings(self, embeddings, n: int) -> None:
        """Buffer embeddings (reference) or their distances from it (after); NaN where unknown."""
        if "embedding" not in self.signals:
            self._dist = np.concatenate([self._dist, np.full(n, np.nan)])
            return
        e = None if embeddings is None else np.asarray(embeddings, dtype=np.float64)
        if self._ref is None:
            self._emb.append(e if e is not None and e.shape[0] == n else None)
            self._emb_n.append(n)
            return
        self._dist = np.concatenate([self._dist, self._distances(e, n)])

    def _embedding_reference(self) -> np.ndarray:
        """Per-dimension mean and sd of the reference embeddings, and the reference's own distances."""
        widths = {e.shape[1] for e in self._emb if e is not None}
        rows = [e for e in self._emb if e is not None]
        if len(widths) != 1 or sum(len(e) for e in rows) < self.reference:
            return np.full(sum(self._emb_n), np.nan)  # not every reference image came with an embedding
        ref = np.concatenate(rows)
        # A feature the reference never moved (a dead ReLU unit) would turn the slightest
        # later wiggle into an enormous distance: every scale is floored at a tenth of the
        # average one.
        sd = ref.std(axis=0)
        self._emb_stats = (ref.mean(axis=0), np.maximum(sd, 0.1 * sd.mean() + 1e-6), 0.0, 1.0)
        d = self._distances(ref, len(ref))
        self._emb_stats = self._emb_stats[:2] + (float(d.mean()), max(float(d.std()), 1e-6))
        self._emb, self._emb_n = [], []
        return d

    def _distances(self, e, n: int) -> np.ndarray:
        """Each image's mean squared standardised distance from the reference's mean embedding."""
        if e is None or self._emb_stats is None or e.shape != (n, len(self._emb_stats[0])):
            return np.full(n, np.nan)
        mean, sd = self._emb_stats[:2]
        # clipped at 5 standard deviations: a heavy tail would make block means far from normal
        return np.minimum(((e - mean) / sd) ** 2, 25.0).mean(axis=1)

    def _z_embedding(self, dist: np.ndarray) -> float | None:
        if self._emb_stats is None or np.isnan(dist).any():
            return None
        _, _, mean, sd = self._emb_stats
        return float((dist.mean() - mean) / (sd / np.sqrt(len(dist))))

    def observe_audit(self, version: int, errors: np.ndarray, position: int) -> None:
        """Arrived audit labels of predictions by ``version``: 1 where it was wrong; ``position``: now."""
        events: list[DriftEvent] = []
        if version == self.version_ and "audit_error" in self.signals:
            self._audit = np.concatenate([self._audit, np.asarray(errors, dtype=np.float64)])
            if self._audit_ref is None and len(self._audit) >= self.audit_reference:
                rate = (self._audit.sum() + 1) / (len(self._audit) + 2)
                self._audit_ref = (rate, float(np.sqrt(rate * (1 - rate))))
            if self._audit_ref is not None:
                rate, sd = self._audit_ref
                for e in self._audit.tolist():
                    events += self._feed("audit_error", (e - rate) / sd, position)
                self._audit = np.zeros(0)
        self.events_ = tuple(events)

    def _z_confidence(self, conf: np.ndarray) -> float:
        mean, sd, _ = self._ref
        return float((conf.mean() - mean) / (sd / np.sqrt(len(conf))))

    def _z_mix(self, cls: np.ndarray) -> float:
        shares = self._ref[2]
        expected = shares * len(cls)
        observed = np.bincount(cls, minlength=len(shares))[:len(shares)]
        chi2 = float(((observed - expected) ** 2 / expected).sum())
        df = len(shares) - 1
        return ((chi2 / df) ** (1 / 3) - (1 - 2 / (9 * df))) / np.sqrt(2 / (9 * df))

    def _feed(self, signal: str, value: float, now: int) -> list[DriftEvent]:
        out = []
        for (s, kind), detector in self._river.items():
            if s != signal:
                continue
            before = estimate(kind, detector)
            detector.update(value)
            if detector.drift_detected:
                out.append(DriftEvent(kind, signal, self.version_, now, statistic(kind, detector, before),
                                      self.thresholds[kind]))
        return out


def _reference(conf: np.ndarray, cls: np.ndarray, classes: int) -> tuple[float, float, np.ndarray]:
    """Mean and standard deviation of top-class probabilities, and add-one smoothed class shares."""
    counts = np.bincount(cls, minlength=classes)[:classes] + 1.0
    return float(conf.mean()), max(float(conf.std()), 1e-3), counts / counts.sum()
