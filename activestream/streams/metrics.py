"""Prometheus metrics of the streaming workers (the core knows nothing of these)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

CONSUMED = Counter("activestream_messages_consumed_total", "Messages consumed", ["worker", "topic"])
PRODUCED = Counter("activestream_messages_produced_total", "Messages produced", ["worker", "topic"])
DEAD = Counter("activestream_deadletter_total", "Messages sent to the dead-letter topic", ["worker", "kind"])
BATCH_SECONDS = Histogram(
    "activestream_batch_seconds", "Time to handle one consumed batch", ["worker"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram("activestream_batch_size", "Records per consumed batch", ["worker"],
                       buckets=(1, 4, 16, 64, 128, 256, 512, 1024))
LAG = Gauge("activestream_consumer_lag", "High watermark minus position", ["worker", "topic", "partition"])
PREDICTIONS = Counter("activestream_predictions_total", "Predictions made", ["version"])
CLASS_PREDICTED = Counter("activestream_predicted_class_total", "Predictions per class", ["label"])
SERVING_VERSION = Gauge("activestream_serving_version", "Model version a predictor serves", ["model"])
SELECTED = Counter("activestream_selected_total", "Items sent to labeling", ["reason"])
SCORED = Counter("activestream_scored_total", "Items scored by the selector")
THRESHOLD = Gauge("activestream_selection_threshold", "Current selection score threshold")
LABELS = Counter("activestream_labels_total", "Labels persisted", ["kind"])
VERSIONS = Counter("activestream_versions_total", "Model versions trained", ["status"])
LIVE_ACCURACY = Gauge("activestream_live_accuracy", "A version's accuracy on live traffic estimated from human labels "
                      "(method: audit, ipw or naive; bound: value, low or high of the 95% interval)",
                      ["version", "method", "bound"])
ACCURACY = Gauge("activestream_model_accuracy", "Accuracy of a version on an evaluation set", ["model", "version", "set"])
TRAIN_SECONDS = Histogram("activestream_train_seconds", "Time to fine-tune a version",
                          buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600))


def serve_metrics(port: int) -> None:
    """Expose ``/metrics`` on 127.0.0.1:port (0 disables)."""
    if port:
        start_http_server(port, addr="127.0.0.1")
