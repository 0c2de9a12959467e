"""Label ingest: validates ``labels`` and persists them in the store, idempotently."""

from __future__ import annotations

import asyncio
from typing import Sequence

from aiokafka.structs import ConsumerRecord

from activestream.config import Settings
from activestream.errors import InvalidInput
from activestream.pacing import Paced
from activestream.storage.registry import ModelRegistry
from activestream.storage.store import Label, SampleStore
from activestream.streams import metrics
from activestream.streams.accuracy import by_version, slots
from activestream.streams.messages import LabelV1, parse
from activestream.streams.stage import DeadLetters, Output

# Seconds between refreshes of the live-accuracy gauges: a read of every labelled
# selection, paced to a small share of the time as the store grows.
ESTIMATE_EVERY = 10.0


class IngestHandler:
    pipelined = False
    def __init__(self, settings: Settings, store: SampleStore, registry: ModelRegistry):
        self.settings = settings
        self.store = store
        self.registry = registry
        self.dead = DeadLetters(settings.topic_deadletter, "ingest")
        self._estimates = Paced(self._export_estimates, every=ESTIMATE_EVERY)

    def num_classes(self) -> int | None:
        latest = self.registry.latest(self.settings.model_name, status=None)
        return len(latest.spec["classes"]) if latest else None

    async def handle(self, records: Sequence[ConsumerRecord]) -> list[Output]:
        outputs, labels = [], []
        classes = await asyncio.to_thread(self.num_classes)
        for record in records:
            try:
                msg = parse(LabelV1, record.value)
                if classes is not None and msg.label >= classes:
                    raise InvalidInput("unknown_class", f"class {msg.label} is not one of the model's {classes} classes")
            except InvalidInput as e:
                outputs.append(self.dead.output(record, e))
                continue
            labels.append(Label(sample_id=msg.id, label=msg.label, labeler=msg.labeler, kind=msg.kind))
        if labels:
            await asyncio.to_thread(self.store.add_labels, labels)
            for label in labels:
                metrics.LABELS.labels(label.kind).inc()
            if self._estimates.due():
                await asyncio.to_thread(self._estimates.get)
        return outputs

    def _export_estimates(self) -> None:
        """The serving and previous versions' live accuracy, under their slot's name: a
        label per version number would grow the metrics without bound."""
        name = self.settings.model_name
        wanted = slots(self.registry.versions(name))
        for slot in metrics.SLOTS:
            if slot in wanted:
                metrics.SLOT_VERSION.labels(name, slot).set(wanted[slot])
            else:
                metrics.forget(metrics.SLOT_VERSION, (name, slot))
        metrics.export_live(name, wanted, by_version(self.store.outcomes()), ("audit", "ipw", "naive"))

    def committed(self) -> None:
        pass

