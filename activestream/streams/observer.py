"""Reads every output topic from the start and keeps counts: the run's live display,
its final summary, and the end-to-end tests' checks."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from activestream.config import Settings


@dataclass
class Observed:
    predicted: dict[str, int] = field(default_factory=dict)       # image id -> last version
    versions_served: Counter = field(default_factory=Counter)     # version -> predictions
    requested: dict[str, str] = field(default_factory=dict)       # image id -> reason
    labels: dict[str, int] = field(default_factory=dict)
    announced: list[dict] = field(default_factory=list)
    dead: Counter = field(default_factory=Counter)                 # error kind -> count
    dead_records: list[dict] = field(default_factory=list)
    predictions: int = 0


class Observer:
    def __init__(self, settings: Settings, bootstrap: str):
        self.settings = settings
        self.bootstrap = bootstrap
        self.seen = Observed()
        s = settings
        self._handlers = {
            s.topic_predictions: self._prediction, s.topic_requests: self._request,
            s.topic_labels: self._label, s.topic_versions: self._version, s.topic_deadletter: self._dead,
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

    def _request(self, m: dict) -> None:
        self.seen.requested[m["id"]] = m["reason"]

    def _label(self, m: dict) -> None:
        self.seen.labels[m["id"]] = m["label"]

    def _version(self, m: dict) -> None:
        self.seen.announced.append(m)

    def _dead(self, m: dict) -> None:
        self.seen.dead[m["error_kind"]] += 1
        self.seen.dead_records.append(m)
