"""Prometheus metrics of the streaming workers (the core knows nothing of these).

Conventions (docs/metrics.md lists every metric): base units (seconds, messages,
ratios between 0 and 1), counters end in ``_total``, and every label takes a bounded set
of values. Model versions are never a label: a label per version would add series
for ever, so a version's number is a gauge's value and the estimates name a
version by its slot (``serving`` or ``previous``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: The bounded names of the versions whose live accuracy is exported: the one served now
#: and the one promoted before it (the version to roll back to).
SLOTS = ("serving", "previous")
BOUNDS = ("value", "low", "high")  # an estimate and its 95% interval

CONSUMED = Counter("activestream_messages_consumed_total", "Messages consumed", ["worker", "topic"])
PRODUCED = Counter("activestream_messages_produced_total", "Messages produced", ["worker", "topic"])
DEAD = Counter("activestream_deadletter_total", "Messages sent to the dead-letter topic", ["worker", "kind"])
BATCH_SECONDS = Histogram(
    "activestream_batch_duration_seconds", "Time to handle one consumed batch", ["worker"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram("activestream_batch_messages", "Messages per consumed batch", ["worker"],
                       buckets=(1, 4, 16, 64, 128, 256, 512, 1024))
HANDLER_ERRORS = Counter("activestream_handler_errors_total", "Exceptions that escaped a handler and were retried "
                         "(kind: transient, the store or broker was away; error, anything else)", ["worker", "kind"])
LAG = Gauge("activestream_consumer_lag_messages", "High watermark minus position, per partition this process consumes",
            ["worker", "topic", "partition"])
ASSIGNED = Gauge("activestream_assigned_partitions", "Partitions this process's consumer holds (a scaled worker with "
                 "none is idle: more processes than partitions, or a rebalance under way)", ["worker", "topic"])
PREDICTIONS = Counter("activestream_predictions_total", "Predictions made (the version: activestream_serving_version)",
                      ["model"])
CLASS_PREDICTED = Counter("activestream_predicted_class_total", "Predictions per class (label: its index, "
                          "class_name: its name in the serving version's spec)", ["label", "class_name"])
SERVING_VERSION = Gauge("activestream_serving_version", "Model version this predictor serves", ["model"])
MODEL_LOAD_FAILURES = Counter("activestream_model_load_failures_total", "Hot swaps a predictor refused, keeping the version "
                              "in force (kind: registry unreadable, integrity of metadata, weights or spec, other error)",
                              ["model", "kind"])
SELECTED = Counter("activestream_selected_total", "Items sent to labeling", ["reason"])
SCORED = Counter("activestream_scored_total", "Items scored by the selector")
THRESHOLD = Gauge("activestream_selection_threshold", "Current selection score threshold (a score: higher = more worth "
                  "a label)")
LABELS = Counter("activestream_labels_total", "Labels persisted", ["kind"])
VERSIONS = Counter("activestream_versions_total", "Model versions trained", ["status"])
LIVE_ACCURACY = Gauge("activestream_live_accuracy_ratio", "Accuracy on live traffic of the serving and the previously "
                      "promoted version, estimated from human labels (method: audit, ipw or naive; by ingest) or "
                      "label-free from the served confidences (cbpe or atc; by the selector); bound: value, low or "
                      "high of the 95% interval", ["model", "slot", "method", "bound"])
LABEL_FREE_AUDITS = Gauge("activestream_label_free_calibration_labels", "Audit labels the label-free estimates are "
                          "calibrated on (under 30: uncalibrated, cbpe is the raw average confidence and atc is absent)")
LIVE_LABELS = Gauge("activestream_live_accuracy_labels", "Human labels behind each live-accuracy estimate",
                    ["model", "slot", "method"])
SLOT_VERSION = Gauge("activestream_slot_version", "Which version each slot of the live-accuracy estimates names",
                     ["model", "slot"])
ACCURACY = Gauge("activestream_model_accuracy_ratio", "Accuracy of the newest trained version on each evaluation set "
                 "(holdout; parent_holdout, the serving version on the same labels; test, in simulation)",
                 ["model", "set"])
LATEST_VERSION = Gauge("activestream_model_latest_version", "Newest registered version (any status)", ["model"])
PROMOTED_VERSION = Gauge("activestream_model_promoted_version", "The version in force (the promoted one promoted last)",
                         ["model"])
PROMOTED_AT = Gauge("activestream_model_promoted_timestamp_seconds", "When the version in force was promoted "
                    "(Unix time)", ["model"])
TRAIN_SECONDS = Histogram("activestream_train_duration_seconds", "Time to fine-tune a version",
                          buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600))
DRIFT_DETECTIONS = Counter("activestream_drift_detections_total", "Drift detections (detector: adwin, page_hinkley or "
                           "kswin; signal: confidence, class_mix, embedding or audit_error)", ["detector", "signal"])
DRIFT_BUDGET_MULTIPLIER = Gauge("activestream_drift_budget_multiplier", "Factor the labeling budget is raised by "
                                "after a drift detection (1 when no boost is under way)")
DRIFT_LAST_DETECTION = Gauge("activestream_drift_last_detection_timestamp_seconds", "When the last drift was detected")


def export_live(model: str, slots: dict[str, int], found: dict, methods: tuple[str, ...],
                count_labels: bool = True) -> None:
    """Set the live-accuracy gauges of ``methods`` for each slot's version from ``found``
    (estimates by version, then method). A slot whose version has no estimate shows
    nothing rather than the figures of the version that held the slot before; the
    methods another process exports are left alone."""
    for slot in SLOTS:
        version = slots.get(slot)
        for method in methods:
            est = found.get(version, {}).get(method)
            if est is None or not est.n:
                forget(LIVE_LABELS, (model, slot, method))
                for bound in BOUNDS:
                    forget(LIVE_ACCURACY, (model, slot, method, bound))
                continue
            if count_labels:
                LIVE_LABELS.labels(model, slot, method).set(est.n)
            for bound in BOUNDS:
                LIVE_ACCURACY.labels(model, slot, method, bound).set(getattr(est, bound))


def forget(gauge, labels: tuple[str, ...]) -> None:
    """Remove one labelled series of ``gauge``, if it was ever set."""
    try:
        gauge.remove(*labels)
    except KeyError:  # never set
        pass
