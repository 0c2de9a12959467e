"""``simulate``: the whole loop in one process, seeded and deterministic, with no broker.

Per batch of ``batch`` stream images, in order: the serving model predicts; the policy
selects and commits (for ours: the streaming selector's core selector and budget
manager); the labeler answers, ``label_delay`` images later (``--label-lag``); when the learner policy
says a round is due (the same :class:`~activestream.learners.incremental.LearnerPolicy`
the learner worker runs), the serving model is fine-tuned on every label so far and the
result serves if it passes the held-out check. Truth reaches the learner only through
the labeler; the test sets only measure.

Human labels and pseudo-labels are kept apart: a pseudo-label records the version that
made it, and a human label of the same item wins.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from activestream.drift import make_monitor
from activestream.errors import ConfigError
from activestream.learners.classifier import Classifier
from activestream.learners.incremental import LearnerPolicy, split_holdout
from activestream.learners.training import TrainConfig, fit
from activestream.simulation.config import SimConfig
from activestream.simulation.labelers import make_labeler
from activestream.simulation.policy import SelectionPolicy, make_policy
from activestream.simulation.scenarios import Scenario, build_scenario
from activestream.simulation.seed import spec_for
from activestream.simulation.tally import Tally


def learner_policy(c: SimConfig) -> LearnerPolicy:
    return LearnerPolicy(c.retrain_every, c.holdout, c.tolerance,
                         TrainConfig(epochs=c.epochs, min_steps=c.min_steps, max_steps=c.max_steps,
                                     learning_rate=c.learning_rate, seed=c.seed, cosine=c.cosine),
                         early_every=c.drift_early)


def watch(monitor, tally: Tally, policy, probs: np.ndarray, embeddings, version: int, start: int, now: int) -> bool:
    """Feed the drift monitor a batch and the audit labels that arrived; record and act on
    detections (a budget boost). Whether anything was detected."""
    if monitor is None:
        return False
    monitor.observe(version, probs, start, embeddings)
    events = list(monitor.events_)
    monitor.observe_audit(version, tally.audit_errors(version), now)
    events += monitor.events_
    tally.drift(events)
    if events and hasattr(policy, "drift_detected"):
        policy.drift_detected()
    return bool(events)


def train_seed(scenario: Scenario, c: SimConfig, labels: np.ndarray) -> Classifier:
    """Version 1, trained as the streaming seed is: same held-out split, fresh weights."""
    ids = [f"seed-{i}" for i in range(len(labels))]
    train, _ = split_holdout(ids, c.holdout)
    fresh = Classifier.fresh(spec_for(scenario.dataset, c.arch), c.device, seed=c.seed)
    config = TrainConfig(epochs=c.seed_epochs, learning_rate=1e-3, seed=c.seed, cosine=c.cosine)
    model = fit(fresh, scenario.seed_x[train], labels[train], config)
    model.version = 1
    return model


def _outputs(model: Classifier, x: np.ndarray, policy, labeler, pseudo, c: SimConfig, embed: bool = False):
    probs = model.predict_proba(x)
    votes = labeler.needs_votes or getattr(pseudo, "needs_votes", False)
    samples = model.sample_proba(x, c.mc_samples, seed=c.seed) if policy.needs_samples or votes else None
    embeddings = model.embed(x) if policy.needs_embeddings or embed else None
    return probs, samples, embeddings


def simulate(c: SimConfig, *, policy: SelectionPolicy | None = None, scenario: Scenario | None = None,
             progress=None) -> dict:
    """Run one simulation; return its JSON-ready record (see :mod:`activestream.simulation.report`)."""
    torch.manual_seed(c.seed)
    scenario = scenario or build_scenario(c.scenario, dataset=c.dataset, data_dir=c.data_dir, images=c.images,
                                          seed_size=c.seed_size, seed=c.seed, test_size=c.test_size)
    classes = len(scenario.dataset.classes)
    policy = policy or make_policy(c.strategy, budget=c.budget, window=c.window, audit_share=c.audit_share,
                                   seed=c.seed, drift_factor=c.drift_factor, drift_images=c.drift_images)
    monitor = make_monitor(c.drift_detectors, run_length=c.drift_run_length, seed=c.seed)
    watch_embeddings = monitor is not None and "embedding" in monitor.signals
    labeler = make_labeler(c.labeler, classes=classes, delay=c.label_delay, seed=c.seed)
    pseudo = make_labeler(c.pseudo, classes=classes, seed=c.seed) if c.pseudo else None
    if pseudo is not None and pseudo.kind != "pseudo":
        raise ConfigError(f"pseudo labeler {c.pseudo!r} gives human labels; use self, confident:P or committee")
    seed_labels = scenario.seed_y if labeler.kind == "pseudo" else labeler.answer(
        scenario.seed_y, np.full((len(scenario.seed_y), classes), 1.0 / classes), None).labels
    rounds = learner_policy(c)
    serving = train_seed(scenario, c, seed_labels)
    tally = Tally(scenario, c, seed_labels)
    tally.checkpoint(serving, 0)
    counts_pseudo = labeler.kind == "pseudo"
    trained_on, last_round, early = tally.label_count(counts_pseudo), 0, False
    for start in range(0, len(scenario.y), c.batch):
        stop = min(start + c.batch, len(scenario.y))
        x, keys = scenario.x[start:stop], list(scenario.ids[start:stop])
        if start and scenario.phase[stop - 1] != scenario.phase[start - 1]:
            tally.checkpoint(serving, start, phase=int(scenario.phase[stop - 1]))  # what the shift costs, at once
        probs, samples, embeddings = _outputs(serving, x, policy, labeler, pseudo, c, embed=watch_embeddings)
        view = samples if policy.needs_samples else probs
        selection = policy.select(view, embeddings, keys)
        policy.commit(view, embeddings, keys, selection)
        tally.served(start, probs, serving.version, selection)
        picked = np.flatnonzero(selection.selected)
        if picked.size:
            votes = samples[picked].argmax(axis=1) if labeler.needs_votes else None
            answers = labeler.answer(scenario.y[start + picked], probs[picked], votes)
            tally.request(start + picked, answers, labeler, serving.version, probs[picked].max(axis=1), stop)
        passed = np.flatnonzero(~selection.selected)
        if pseudo is not None and passed.size:
            votes = samples[passed].argmax(axis=1) if pseudo.needs_votes else None
            answers = pseudo.answer(np.zeros(passed.size, dtype=np.int64), probs[passed], votes)  # no truth
            tally.request(start + passed, answers, pseudo, serving.version, probs[passed].max(axis=1), stop)
        tally.deliver(stop)
        early |= watch(monitor, tally, policy, probs, embeddings, serving.version, start, stop - 1) and c.drift_early > 0
        # an early round does not wait out the round gap: the learner drops what it waits for
        if ((stop - last_round >= c.round_gap or early)
                and rounds.due(tally.label_count(counts_pseudo), trained_on, drift=early)):
            ids, images, labels, trusted = tally.training_set()
            result = rounds.run(serving, ids, images, labels, trusted=trusted)
            trained_on, last_round, early = tally.label_count(counts_pseudo), stop, False
            if result.promote:
                result.model.version = serving.version + 1
                serving = result.model
                if hasattr(policy, "model_changed"):
                    policy.model_changed()
            tally.round(result.metrics, result.promote)
            tally.checkpoint(serving, stop)
        if progress is not None:
            progress(stop - start)
    if tally.checkpoints[-1]["images"] != len(scenario.y):
        tally.checkpoint(serving, len(scenario.y))
    summary = tally.summary()
    if not hasattr(policy, "budget"):  # label-everything and label-nothing have no budget to keep
        summary["window_target"] = summary["window_worst"] = math.nan
    return {"config": c.to_dict(), "policy": getattr(policy, "name", type(policy).__name__),
            "labeler_kind": labeler.kind, **summary}


def labels_to_reach(curve: list[tuple[float, float]], target: float) -> float:
    """Labels at which a learning curve (labels, accuracy) first reaches ``target``, interpolated.

    ``nan`` if it never does.

    >>> round(labels_to_reach([(0, 0.5), (100, 0.7), (200, 0.9)], 0.8), 6)
    150.0
    >>> math.isnan(labels_to_reach([(0, 0.5)], 0.8))
    True
    """
    previous = None
    for labels, acc in curve:
        if acc >= target - 1e-12:
            if previous is None or previous[1] >= acc:
                return float(labels)
            l0, a0 = previous
            return float(l0 + (labels - l0) * (target - a0) / (acc - a0))
        previous = (labels, acc)
    return math.nan
