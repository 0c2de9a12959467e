"""Announcing the version in force on ``model.versions``.

Apart from the learner so that ``activestream models ...`` announces without importing
torch (seconds on a small machine, for a command an operator runs during an incident).
"""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from activestream.storage.registry import ModelVersion
from activestream.streams.messages import ModelVersionV1


def announcement(meta: ModelVersion, decision: str | None = None, by: str | None = None,
                 reason: str | None = None) -> ModelVersionV1:
    """``meta`` as a ``model.versions`` message; for a manual decision, which, who and why."""
    return ModelVersionV1(name=meta.name, version=meta.version, parent=meta.parent, uri=meta.uri,
                          sha256=meta.sha256, metrics=meta.metrics, status=meta.status, train_size=meta.train_size,
                          decision=decision, by=by, reason=reason or None)


async def announce(producer: AIOKafkaProducer, topic: str, meta: ModelVersion, decision: str | None = None,
                   by: str | None = None, reason: str | None = None) -> None:
    """Publish the version in force (rolling back is announcing an older one)."""
    await producer.send_and_wait(topic, announcement(meta, decision, by, reason).encode(), key=meta.name.encode())
