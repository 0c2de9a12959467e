"""Tables and records of the labeling queue (see :mod:`activestream.storage.queue`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from sqlalchemy import JSON, Column, Float, Index, Integer, MetaData, String, Table

from activestream.errors import ActivestreamError

queue_metadata = MetaData()
ITEMS = Table(
    "label_items", queue_metadata,
    Column("id", String, primary_key=True),
    Column("uri", String, nullable=False),
    Column("reason", String, nullable=False),
    Column("lane", String, nullable=False),
    Column("score", Float, nullable=False),
    Column("probability", Float, nullable=False),
    Column("model", String, nullable=False),
    Column("version", Integer, nullable=False),
    Column("top", JSON, nullable=False),
    Column("priority", Float, nullable=False),
    Column("gold", Integer),
    Column("wanted", Integer, nullable=False),
    Column("labeled", Integer, nullable=False, default=0),
    Column("holder", String),
    Column("until", Float),
    Column("created", Float, nullable=False),
    Index("ix_label_items_holder", "holder"),
)
# Hand-out order as indexes, so picking the next item walks an index and stops early
# instead of sorting every open item.
Index("ix_label_items_pick", ITEMS.c.lane, ITEMS.c.priority.desc(), ITEMS.c.created, ITEMS.c.id)
Index("ix_label_items_fifo", ITEMS.c.lane, ITEMS.c.created, ITEMS.c.id)
ANSWERS = Table(
    "label_answers", queue_metadata,
    Column("item_id", String, primary_key=True),
    Column("labeler", String, primary_key=True),
    Column("outcome", String, nullable=False),
    Column("label", Integer),
    Column("created", Float, nullable=False),
    Index("ix_label_answers_labeler", "labeler", "created"),
)
LABELERS = Table(
    "labelers", queue_metadata,
    Column("name", String, primary_key=True),
    Column("token_sha256", String, nullable=False, unique=True),
    Column("created", Float, nullable=False),
)


class LeaseConflict(ActivestreamError):
    """The item is leased to another labeler, already labeled, or not in a state for this."""


@dataclass(frozen=True)
class QueueItem:
    """A persisted labeling request. ``top`` is ``[(class, probability)]``, best first."""

    id: str
    uri: str
    reason: str
    score: float
    probability: float
    model: str
    version: int
    top: list = field(default_factory=list)
    priority: float = 0.0
    lane: str = "normal"
    wanted: int = 1
    gold: int | None = None


@dataclass(frozen=True)
class Answer:
    """Result of recording a label: ``changed`` is False for a repeat of the same answer."""

    changed: bool
    gold: bool
    lane: str = "normal"
    queued: float | None = None  # when the item arrived in the queue


def token_hash(token: str) -> str:
    """The stored form of a labeler token.

    >>> len(token_hash("secret"))
    64
    """
    return hashlib.sha256(token.encode()).hexdigest()
