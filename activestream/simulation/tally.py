"""The simulator's bookkeeping: what was served, asked, answered and learned, and how good it was.

Only this module and the labelers read the stream's truth, and only to measure (the
learner sees labels through :meth:`Tally.training_set`, which holds labeler answers).
Human labels and pseudo-labels live in separate maps; each pseudo-label keeps the
version that made it and a human label of the same item wins.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from activestream.learners.estimates import estimates
from activestream.learners.label_free import LabelFree

ESTIMATORS = ("audit", "ipw", "cbpe", "atc")  # scored against the truth on traffic in the summary


class Tally:
    def __init__(self, scenario, config, seed_labels: np.ndarray):
        n = len(scenario.y)
        self.scenario = scenario
        self.config = config
        self.seed_labels = np.asarray(seed_labels, dtype=np.int64)
        self.served_pred = np.full(n, -1, dtype=np.int64)
        self.served_version = np.zeros(n, dtype=np.int64)
        self.selected = np.zeros(n, dtype=bool)
        self.probability = np.zeros(n)
        self.reason = np.full(n, "", dtype=object)
        self.human: dict[int, int] = {}                        # stream index -> label, in arrival order
        self.pseudo: dict[int, tuple[int, int, float]] = {}    # stream index -> (label, version, confidence)
        self.pending: list[tuple[int, np.ndarray, np.ndarray, str, int, np.ndarray]] = []
        self.checkpoints: list[dict] = []
        self.arrived: list[int] = []                           # stream indices of human labels the last deliver brought
        self.drift_events: list[dict] = []
        self.rounds: list[dict] = []
        self._models: dict[int, object] = {}
        self._accuracy: dict[tuple[int, int], float] = {}
        # label-free accuracy sees what the selector worker sees: served probabilities, and
        # audit answers as they arrive (with the probabilities served for them)
        self.label_free = LabelFree(window=config.estimate_window)
        self._audit_probs: dict[int, tuple[np.ndarray, int]] = {}  # index -> (served probabilities, version)

    # --- the loop's events -------------------------------------------------------------
    def served(self, start: int, probs: np.ndarray, version: int, selection) -> None:
        stop = start + len(probs)
        self.served_pred[start:stop] = probs.argmax(axis=1)
        self.served_version[start:stop] = version
        self.selected[start:stop] = selection.selected
        self.probability[start:stop] = selection.probability
        self.reason[start:stop] = list(selection.reason)
        self.label_free.observe(probs)
        for i in np.flatnonzero(np.asarray(selection.reason) == "audit").tolist():
            self._audit_probs[start + i] = (probs[i], version)

    def request(self, index: np.ndarray, answers, labeler, version: int, confidence: np.ndarray, now: int) -> None:
        given = answers.given
        self.pending.append((now + labeler.delay, index[given], answers.labels[given], labeler.kind, version,
                             confidence[given]))

    def deliver(self, now: int) -> None:
        keep, audits, self.arrived = [], [], []
        for item in self.pending:
            due, index, labels, kind, version, confidence = item
            if due > now:
                keep.append(item)
                continue
            for i, y, p in zip(index.tolist(), labels.tolist(), confidence.tolist()):
                if kind == "human":
                    self.human[i] = y
                    if i in self._audit_probs:
                        audits.append((*self._audit_probs.pop(i), y))
                    self.arrived.append(i)
                else:
                    self.pseudo[i] = (y, version, p)
        self.pending = keep
        if audits:
            self.label_free.learn(np.stack([p for p, _, _ in audits]), np.array([y for _, _, y in audits]),
                                  np.array([v for _, v, _ in audits]))

    def audit_errors(self, version: int) -> np.ndarray:
        """1 where an audit label that just arrived says ``version``'s served prediction was wrong,
        else 0: labeler answers only, never the stream's truth."""
        mine = [i for i in self.arrived if self.reason[i] == "audit" and self.served_version[i] == version]
        return np.array([self.served_pred[i] != self.human[i] for i in mine], dtype=np.float64)

    def drift(self, events) -> None:
        self.drift_events += [{**dataclasses.asdict(e), "labels": len(self.human)} for e in events]

    def label_count(self, pseudo: bool = False) -> int:
        """Labels that call for learner rounds: human ones (as the learner worker counts), or
        pseudo ones too when the run's only labeler is a pseudo labeler."""
        extra = sum(1 for i in self.pseudo if i not in self.human) if pseudo else 0
        return len(self.seed_labels) + len(self.human) + extra

    def training_set(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """``ids``, images ``uint8 [n, h, w]``, labels ``int [n]`` and ``human`` bool ``[n]``."""
        s = self.scenario
        human = list(self.human)
        pseudo = [i for i in self.pseudo if i not in self.human]
        ids = [f"seed-{i}" for i in range(len(self.seed_labels))] + [s.ids[i] for i in human + pseudo]
        stream = np.array(human + pseudo, dtype=np.int64)
        images = np.concatenate([s.seed_x, s.x[stream]]) if stream.size else s.seed_x
        labels = np.concatenate([self.seed_labels, [self.human[i] for i in human],
                                 [self.pseudo[i][0] for i in pseudo]]).astype(np.int64)
        trusted = np.arange(len(ids)) < len(self.seed_labels) + len(human)
        return ids, images, labels, trusted

    def round(self, metrics: dict, promoted: bool) -> None:
        self.rounds.append({"images": int(self.checkpoint_position()), "promoted": bool(promoted),
                            **{k: float(v) for k, v in metrics.items()}})

    def checkpoint_position(self) -> int:
        return int((self.served_pred >= 0).sum())

    # --- measuring ---------------------------------------------------------------------
    def _test_accuracy(self, model, version: int, phase: int) -> float:
        key = (version, phase)
        if key not in self._accuracy:
            x, y = self.scenario.tests[phase]
            self._accuracy[key] = model.accuracy(x, y)
        return self._accuracy[key]

    def checkpoint(self, model, position: int, phase: int | None = None) -> None:
        """Measure the serving model and the estimates over the last ``estimate_window`` images
        (on the test set of ``phase``; default: the phase of the last image served)."""
        phase = int(self.scenario.phase[max(0, position - 1)]) if phase is None else phase
        self._models[model.version] = model
        record = {"images": int(position), "labels": len(self.human),
                  "pseudo": sum(1 for i in self.pseudo if i not in self.human),
                  "version": int(model.version), "test_accuracy": self._test_accuracy(model, model.version, phase)}
        lo = max(0, position - self.config.estimate_window)
        if position > lo:
            record.update(self._estimates(lo, position))
        keep = set(self.served_version[lo:position].tolist()) | {model.version}
        self._models = {v: m for v, m in self._models.items() if v in keep}
        self.checkpoints.append(record)

    def _estimates(self, lo: int, hi: int) -> dict:
        idx = np.array([i for i in self.human if lo <= i < hi], dtype=np.int64)
        labels = np.array([self.human[i] for i in idx.tolist()], dtype=np.int64)
        correct = self.served_pred[idx] == labels
        audit = np.array([self.reason[i] == "audit" for i in idx.tolist()], dtype=bool)
        versions, phases = self.served_version[lo:hi], self.scenario.phase[lo:hi]
        pairs, counts = np.unique(np.stack([versions, phases], axis=1), axis=0, return_counts=True)
        truth_test = sum(n * self._test_accuracy(self._models[int(v)], int(v), int(p))
                         for (v, p), n in zip(pairs.tolist(), counts.tolist())) / (hi - lo)
        traffic = float((self.served_pred[lo:hi] == self.scenario.y[lo:hi]).mean())
        found = {k: e.to_dict() for k, e in estimates(correct, audit, self.probability[idx]).items()}
        # the label-free window is the last estimate_window images too: checkpoints fall on batch ends
        free = {k: e.to_dict() for k, e in self.label_free.estimate().items()}
        lf = self.label_free
        return {**found, **free, "calibrated": lf.calibrated, "temperature": lf.temperature_,
                "truth_test": float(truth_test), "truth_traffic": traffic}

    def windows(self) -> list[int]:
        """Requests per tumbling window of ``config.window`` images (full windows only)."""
        w = self.config.window
        full = len(self.selected) // w
        return [int(self.selected[k * w:(k + 1) * w].sum()) for k in range(full)]

    def summary(self) -> dict:
        y = self.scenario.y
        pseudo_idx = np.array(list(self.pseudo), dtype=np.int64)
        pseudo_ok = [self.pseudo[i][0] == y[i] for i in pseudo_idx.tolist()]
        human_idx = np.array(list(self.human), dtype=np.int64)
        human_ok = [self.human[i] == y[i] for i in human_idx.tolist()]
        covered = [c["audit"]["low"] <= c["truth_test"] <= c["audit"]["high"]
                   for c in self.checkpoints if c.get("audit") and c["audit"]["n"] > 0]
        windows = self.windows()
        target = self.config.budget * self.config.window
        return {
            "final_accuracy": self.checkpoints[-1]["test_accuracy"],
            "labels": len(self.human),
            "requests": int(self.selected.sum()),
            "pseudo_labels": len(self.pseudo),
            "pseudo_precision": float(np.mean(pseudo_ok)) if pseudo_ok else math.nan,
            "pseudo_versions": sorted({v for _, v, _ in self.pseudo.values()}),
            "human_label_accuracy": float(np.mean(human_ok)) if human_ok else math.nan,
            "audit_coverage": float(np.mean(covered)) if covered else math.nan,
            "window_requests": windows,
            "window_target": target,
            "window_worst": max((abs(r - target) / target for r in windows), default=math.nan) if target else math.nan,
            "estimate_error": estimate_errors(self.checkpoints, len(self.scenario.y) // 2),
            "checkpoints": self.checkpoints,
            "rounds": self.rounds,
            "drift_events": self.drift_events,
        }


def estimate_errors(checkpoints: list[dict], shift: int) -> dict:
    """Mean absolute error of each estimate against the truth on traffic, over the checkpoints
    up to ``shift`` images (``before``) and past it (``after``; the drift scenarios shift
    halfway), with the checkpoints counted; an estimate with no value at a checkpoint is skipped.

    >>> c = [{"images": 10, "truth_traffic": 0.8, "cbpe": {"value": 0.7, "n": 10}},
    ...      {"images": 30, "truth_traffic": 0.5, "cbpe": {"value": 0.6, "n": 30}, "audit": {"value": 0.5, "n": 0}}]
    >>> {k: round(v["cbpe"], 3) for k, v in estimate_errors(c, 20).items()}
    {'before': 0.1, 'after': 0.1}
    """
    out = {}
    for part, keep in (("before", lambda c: c["images"] <= shift), ("after", lambda c: c["images"] > shift)):
        rows = [c for c in checkpoints if "truth_traffic" in c and keep(c)]
        errors = {k: [abs(c[k]["value"] - c["truth_traffic"]) for c in rows if c.get(k) and c[k]["n"]]
                  for k in ESTIMATORS}
        out[part] = {k: float(np.mean(v)) if v else math.nan for k, v in errors.items()} | {"checkpoints": len(rows)}
    return out
