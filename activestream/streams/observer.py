"""Reads every output topic from the start and keeps counts: the run's live display,
its final summary, and the end-to-end tests' checks."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from activestream.config import Settings
from activestream.streams.accuracy import LiveLabelFree


@dataclass
class Observed:
    predicted: dict[str, int] = field(default_factory=dict)       # image id -> last version
    versions_served: Counter = field(default_factory=Counter)     # version -> predictions
    requested: dict[str, str] = field(default_factory=dict)       # image id -> reason
    labels: dict[str, int] = field(default_factory=dict)
    labelers: set[tuple[str, str]] = field(default_factory=set)  # (image id, labeler) of every label seen
    announced: list[dict] = field(default_factory=list)
    dead: Counter = field(default_factory=Counter)                 # error kind -> count
    dead_records: list[dict] = field(default_factory=list)
    predictions: int = 0
    prediction_ends: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> next offset
    request_messages: int = 0  # with redeliveries: at least len(requested)
    label_free: LiveLabelFree = field(default_factory=LiveLabelFree)  # served confidences, bounded
    drift: int = 0                     # detections on the drift topic
    drift_latest: dict | None = None   # the newest of them (a DriftV1)


class Observer:
    def __init__(self, settings: Settings, bootstrap: str):
        self.settings = settings
        self.bootstrap = bootstrap
        self.seen = Observed()
        s = settings
        self._handlers = {
            s.topic_predictions: self._prediction, s.topic_requests: self._request,
            s.topic_labels: self._label, s.topic_versions: self._version, s.topic_deadletter: self._dead,
            s.topic_drift: self._drift,
        }

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=100)
        await consumer.start()
        try:
            parts = [TopicPartition(t, p) for t in self._handlers
                     for p in (consumer.partitions_for_topic(t) or await self._partitions(consumer, t))]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            while not stop.is_set():
                for tp, records in (await consumer.getmany(timeout_ms=200, max_records=5000)).items():
                    handle = self._handlers[tp.topic]
                    if tp.topic == self.settings.topic_predictions and records:
                        self.seen.prediction_ends[(tp.topic, tp.partition)] = records[-1].offset + 1
                    for record in records:
                        try:
                            handle(json.loads(record.value))
                        except (ValueError, TypeError, KeyError, AttributeError):
                            pass  # malformed outputs are the deadletter's business, not the observer's
        finally:
            await consumer.stop()

    @staticmethod
    async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
        await consumer.topics()  # refreshes cluster metadata
        return consumer.partitions_for_topic(topic) or {0}

    def _prediction(self, m: dict) -> None:
        self.seen.predictions += 1
        self.seen.predicted[m["id"]] = m["version"]
        self.seen.versions_served[m["version"]] += 1
        self.seen.label_free.observe([m["version"]], np.array([m["probs"]], dtype=np.float64))

    def _request(self, m: dict) -> None:
        self.seen.request_messages += 1
        self.seen.requested[m["id"]] = m["reason"]

    def _label(self, m: dict) -> None:
        self.seen.labels[m["id"]] = m["label"]
        self.seen.labelers.add((m["id"], m["labeler"]))

    def _version(self, m: dict) -> None:
        self.seen.announced.append(m)

    def _drift(self, m: dict) -> None:
        self.seen.drift += 1
        if self.seen.drift_latest is None or m["ts"] >= self.seen.drift_latest["ts"]:
            self.seen.drift_latest = m

    def _dead(self, m: dict) -> None:
        self.seen.dead[m["error_kind"]] += 1
        self.seen.dead_records.append(m)
