"""Label-free accuracy: the serving model's accuracy on traffic from its confidences alone.

Labels arrive late and few; the model's confidences arrive with every prediction. A
calibrated model's average confidence is its expected accuracy, so once a few audit
labels (the uniform random sample of the traffic) have fixed the calibration, every
new prediction moves the estimate, long before its label could. Two estimates:

* **CBPE** (confidence-based performance estimation, as NannyML names it): the mean
  calibrated top-class probability over the traffic window.
* **ATC** (Average Threshold Confidence, Garg et al., ICLR 2022): the threshold on a
  confidence score (negative entropy, the paper's best) above which as many audit items
  lie as the audits' accuracy says are right; the estimate is the share of traffic above it.

Calibration is temperature scaling (one scalar ``T``, ``softmax(log p / T)``; Guo et
al., 2017): it keeps the class ranking, so predictions do not change, and one parameter
fits on tens of labels, where a per-bin or isotonic map would need hundreds. Two choices
keep it on the version being served, whose calibration is what matters: an audit counts
half as much for each version between the one that served it and the newest (a young
model is over-confident, a fine-tuned one much less: audits of version 1 would make
version 10 look worse than it is), and a weak prior holds ``T`` near 1 (the model's own
confidence) until the audits say otherwise.

Before ``min_labels`` audit labels there is no calibration: CBPE is the raw average
confidence (``calibrated`` is False, the interval only covers sampling) and ATC is
:data:`~activestream.learners.estimates.NONE`. Both are known to drift off under a
covariate shift, where confidence stops tracking accuracy, until new audits recalibrate.

Shapes: ``probs`` float ``[n, classes]`` (rows sum to 1), ``labels`` int ``[n]``.

>>> rng = np.random.default_rng(0)
>>> probs = rng.dirichlet(np.ones(3) * 0.3, size=2000)
>>> labels = np.array([rng.choice(3, p=p) for p in probs])   # calibrated by construction
>>> lf = LabelFree(window=1000, min_labels=30)
>>> lf.observe(probs[:1000])
>>> lf.estimate()["cbpe"].n, lf.calibrated
(1000, False)
>>> lf.learn(probs[1000:], labels[1000:])
>>> lf.calibrated, round(lf.temperature_, 1)
(True, 1.0)
>>> truth = (probs[:1000].argmax(1) == labels[:1000]).mean()
>>> all(abs(e.value - truth) < 0.05 for e in lf.estimate().values())
True
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from activestream.learners.estimates import NONE, Z95, Estimate

TINY = 1e-12  # log(0) guard: served probabilities may round to exactly 0
MIN_LABELS = 30  # audits before calibrating: one scalar's fit settles within a few percent by then
DECAY = 0.5      # an audit's weight per version between the one that served it and the newest
PRIOR = 10.0     # Gaussian prior on log T at 0 (sd 0.22), in units of one audit's log-likelihood


def _logits(probs: np.ndarray) -> np.ndarray:
    """Log-probabilities: logits up to a per-row constant, which a softmax ignores."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), TINY, 1.0))


def fit_temperature(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None, prior: float = 0.0,
                    bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature that minimises the (``weights``-weighted) negative log-likelihood of
    ``labels`` plus ``prior * (log T) ** 2``.

    >>> rng = np.random.default_rng(1)
    >>> z = rng.normal(size=(4000, 5)) * 3
    >>> y = np.array([rng.choice(5, p=p) for p in softmax(z / 2.0, axis=1)])
    >>> round(fit_temperature(softmax(z, axis=1), y), 1)   # over-confident by 2
    2.0
    """
    z, y = _logits(probs), np.asarray(labels, dtype=np.int64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)

    def nll(log_t: float) -> float:
        return float(-(w * log_softmax(z / math.exp(log_t), axis=1)[np.arange(len(y)), y]).sum()
                     + prior * log_t * log_t)

    # the optimisation runs in log T: T > 0 and the likelihood is smoother in it
    res = minimize_scalar(nll, bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-4})
    return float(math.exp(res.x))


def scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``: the calibrated probabilities (same argmax).

    >>> scale(np.array([[0.8, 0.2]]), 1.0).round(3).tolist()
    [[0.8, 0.2]]
    """
    return softmax(_logits(probs) / temperature, axis=1)


def neg_entropy(probs: np.ndarray) -> np.ndarray:
    """ATC's confidence score: ``sum p log p`` per row (0 for a one-hot row, higher = surer)."""
    p = np.asarray(probs, dtype=np.float64)
    return (p * _logits(p)).sum(axis=1)


def effective_size(weights: np.ndarray) -> float:
    """Kish's effective sample size of weighted observations: ``n`` when the weights are equal.

    >>> effective_size(np.ones(4)), effective_size(np.array([1.0, 0.0]))
    (4.0, 1.0)
    """
    w = np.asarray(weights, dtype=np.float64)
    return float(w.sum() ** 2 / (w * w).sum()) if w.size else 0.0


def cbpe(confidence: np.ndarray, audit_confidence: np.ndarray | None = None,
         audit_weights: np.ndarray | None = None) -> Estimate:
    """Mean calibrated confidence with a 95% interval.

    The interval adds two variances: the traffic's own (each prediction right with its
    confidence ``c``: ``c (1 - c) / n``) and the calibration's, how far the audits'
    accuracy may stray from their mean confidence by chance (``c (1 - c) / m`` over the
    ``m`` audits, their effective number when weighted; none when uncalibrated, which makes
    that interval too narrow).

    >>> e = cbpe(np.full(100, 0.8), np.full(50, 0.8))
    >>> round(e.value, 3), round(e.high - e.value, 3)
    (0.8, 0.136)
    """
    c = np.asarray(confidence, dtype=np.float64)
    if c.size == 0:
        return NONE
    value = float(c.mean())
    var = float((c * (1 - c)).mean()) / c.size
    if audit_confidence is not None and len(audit_confidence):
        a = np.asarray(audit_confidence, dtype=np.float64)
        w = np.ones(a.size) if audit_weights is None else np.asarray(audit_weights, dtype=np.float64)
        var += float(np.average(a * (1 - a), weights=w)) / effective_size(w)
    return _interval(value, var, c.size)


def atc_threshold(scores: np.ndarray, correct: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The score above which the (weighted) share of audit items equals their (weighted) accuracy.

    >>> atc_threshold(np.arange(10.0), np.array([True] * 7 + [False] * 3))
    2.7
    >>> atc_threshold(np.arange(4.0), np.array([True, False, True, True]), np.array([1.0, 1.0, 1.0, 5.0]))
    0.0

    (the weighted accuracy is 7/8, and 7/8 of the weight lies above 0.0)
    """
    s = np.asarray(scores, dtype=np.float64)
    if weights is None:
        return float(np.quantile(s, 1.0 - float(np.mean(correct))))
    w = np.asarray(weights, dtype=np.float64)
    accuracy = float(np.average(correct, weights=w))
    order = np.argsort(s, kind="stable")
    below = np.cumsum(w[order]) / w.sum()  # weighted share at or below each sorted score
    return float(s[order][min(int(np.searchsorted(below, 1.0 - accuracy - 1e-12)), s.size - 1)])


def atc(scores: np.ndarray, threshold: float, audits: float, audit_accuracy: float) -> Estimate:
    """The share of traffic scoring above ``threshold``, with a 95% interval.

    Sampling variance of the traffic's share plus twice that of the audits' accuracy: the
    threshold inherits the error of the audits' accuracy (one for one) and, independently,
    that of the audits' scores as a sample of the traffic's (as large again). ``audits``:
    their number, or effective number when weighted.

    >>> atc(np.arange(10.0), 2.7, 10, 0.7).value
    0.7
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0 or audits <= 0:
        return NONE
    value = float((s > threshold).mean())
    var = value * (1 - value) / s.size + 2 * audit_accuracy * (1 - audit_accuracy) / audits
    return _interval(value, var, s.size)


def _interval(value: float, var: float, n: int) -> Estimate:
    half = Z95 * math.sqrt(max(var, 0.0))
    return Estimate(value, max(0.0, value - half), min(1.0, value + half), int(n))


class LabelFree:
    """Traffic confidences in a bounded window, calibration from the latest audit labels.

    ``window``: the newest predictions the estimate covers; ``calibration``: the newest
    audit labels the temperature and the ATC threshold are fit on; ``min_labels``: audits
    needed before calibrating (fewer: the raw average confidence); ``decay``: an audit's
    weight per version between the one that served it and the newest; ``prior``: the
    weight of the prior holding ``T`` near 1. Memory is bounded by
    ``(window + calibration) * classes`` floats, whatever the stream's length.

    Verbs: :meth:`observe` (served predictions), :meth:`learn` (audit labels for served
    predictions), :meth:`estimate` (pure).
    """

    def __init__(self, window: int = 4000, calibration: int = 1000, min_labels: int = MIN_LABELS,
                 decay: float = DECAY, prior: float = PRIOR):
        self.window = window
        self.calibration = calibration
        self.min_labels = min_labels
        self.decay = decay
        self.prior = prior
        self._traffic: deque[np.ndarray] = deque(maxlen=window)
        self._audits: deque[tuple[np.ndarray, int, int]] = deque(maxlen=calibration)
        self.temperature_ = 1.0
        self.threshold_ = math.nan
        self.calibrated = False

    def observe(self, probs: np.ndarray) -> None:
        """Add served predictions ``[n, classes]`` to the traffic window (oldest fall out)."""
        self._traffic.extend(np.asarray(probs, dtype=np.float64))

    def learn(self, probs: np.ndarray, labels: np.ndarray, versions: np.ndarray | None = None) -> None:
        """Add audit labels with the probabilities served for them and the versions that served
        them (default: all the same), and refit the calibration."""
        labels = np.asarray(labels, dtype=np.int64)
        versions = np.zeros(labels.size, dtype=np.int64) if versions is None else np.asarray(versions, dtype=np.int64)
        self._audits.extend(zip(np.asarray(probs, dtype=np.float64), labels.tolist(), versions.tolist()))
        self._fit()

    def recalibrate(self, probs: np.ndarray, labels: np.ndarray, versions: np.ndarray | None = None) -> None:
        """Replace the audit labels (a worker that rereads them from the store) and refit."""
        self._audits.clear()
        self.learn(probs, labels, versions)

    def _fit(self) -> None:
        self.calibrated = len(self._audits) >= self.min_labels
        if not self.calibrated:
            self.temperature_, self.threshold_ = 1.0, math.nan
            return
        p, y, w = self._audit_arrays()
        self.temperature_ = fit_temperature(p, y, w, self.prior)
        q = scale(p, self.temperature_)
        self.threshold_ = atc_threshold(neg_entropy(q), q.argmax(axis=1) == y, w)

    def _audit_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities ``[m, classes]``, labels ``[m]`` and weights ``[m]`` of the audits."""
        versions = np.array([v for _, _, v in self._audits], dtype=np.float64)
        return (np.stack([p for p, _, _ in self._audits]), np.array([y for _, y, _ in self._audits], dtype=np.int64),
                self.decay ** (versions.max() - versions))

    def estimate(self) -> dict[str, Estimate]:
        """``{"cbpe": ..., "atc": ...}`` over the traffic window; ATC is empty until calibrated."""
        if not self._traffic:
            return {"cbpe": NONE, "atc": NONE}
        traffic = np.stack(self._traffic)
        if not self.calibrated:
            return {"cbpe": cbpe(traffic.max(axis=1)), "atc": NONE}
        p, y, w = self._audit_arrays()
        q, audit_q = scale(traffic, self.temperature_), scale(p, self.temperature_)
        accuracy = float(np.average(audit_q.argmax(axis=1) == y, weights=w))
        return {"cbpe": cbpe(q.max(axis=1), audit_q.max(axis=1), w),
                "atc": atc(neg_entropy(q), self.threshold_, effective_size(w), accuracy)}
