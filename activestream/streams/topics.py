"""Topic names and idempotent topic creation (kafka-python's admin client)."""

from __future__ import annotations

import logging
import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from activestream.config import Settings
from activestream.errors import ActivestreamError

log = logging.getLogger(__name__)


def topic_partitions(settings: Settings) -> dict[str, int]:
    """Every topic the loop uses and its partition count.

    Data topics get ``settings.partitions`` (the scale-out unit of the predictor);
    low-rate topics one partition, which keeps their order total.
    """
    wide = settings.partitions
    return {
        settings.topic_images: wide,
        settings.topic_predictions: wide,
        settings.topic_requests: 1,
        settings.topic_labels: settings.label_partitions,
        settings.topic_versions: 1,
        settings.topic_deadletter: 1,
        settings.topic_drift: 1,
    }


def ensure_topics(settings: Settings, bootstrap: str, timeout: float = 30.0) -> None:
    """Create every topic that does not exist yet; safe to call from every process.

    Topics are always created explicitly because brokers that auto-create them
    (Tansu does, with 4 partitions) would give the wrong partition counts.
    """
    admin = _admin(bootstrap, timeout)
    try:
        existing = set(admin.list_topics())
        for name, partitions in topic_partitions(settings).items():
            if name in existing:
                continue
            try:
                admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
                log.info("created topic %s with %d partitions", name, partitions)
            except TopicAlreadyExistsError:
                pass  # another process won the race
    except KafkaError as e:
        raise ActivestreamError(f"could not create topics on {bootstrap}: {e}") from e
    finally:
        admin.close()


def _admin(bootstrap: str, timeout: float) -> KafkaAdminClient:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="activestream-admin",
                                    request_timeout_ms=10000)
        except KafkaError as e:
            if time.monotonic() > deadline:
                raise ActivestreamError(
                    f"no Kafka broker answers at {bootstrap}; check ACTIVESTREAM_BOOTSTRAP "
                    f"or leave it unset to use the embedded broker"
                ) from e
            time.sleep(0.5)
