"""Checkpoints of a streaming stage's own state, written in the same transaction as its outputs.

A selector decides a batch, stores the chosen samples and moves its budget on. If those
three do not land together, a restart decides the batch again with a fresh budget and
some stored samples are never requested. So the store keeps, beside the samples:

* ``checkpoints``: per stage instance, its learned state (bytes) and a little JSON;
* ``positions``: per consumer group and partition, the next offset not yet decided.

Both are written in the transaction that inserts the batch's samples
(:meth:`~activestream.storage.store.SampleStore.add_samples`), so after any crash the
store holds either all of a batch's decisions or none of them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import (JSON, BigInteger, Column, Connection, Float, Integer, LargeBinary, MetaData, String, Table,
                        delete, select, tuple_)

checkpoint_metadata = MetaData()
CHECKPOINTS = Table(
    "checkpoints", checkpoint_metadata,
    Column("key", String, primary_key=True),
    Column("state", LargeBinary, nullable=False),
    Column("meta", JSON, nullable=False),
    Column("updated", Float, nullable=False),
)
POSITIONS = Table(
    "positions", checkpoint_metadata,
    Column("group", String, primary_key=True),
    Column("topic", String, primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, nullable=False),
)


@dataclass(frozen=True)
class Checkpoint:
    """What a stage instance (``key``) knows after a batch: its state, and for its consumer
    ``group`` the next offset to decide in each ``(topic, partition)`` it read."""

    key: str
    state: bytes
    group: str
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def write(conn: Connection, insert, checkpoint: Checkpoint) -> None:
    """Upsert ``checkpoint`` on ``conn``; ``insert``: the dialect's ``insert`` (with ON CONFLICT)."""
    row = dict(key=checkpoint.key, state=checkpoint.state, meta=checkpoint.meta, updated=time.time())
    stmt = insert(CHECKPOINTS)
    conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={
        "state": stmt.excluded.state, "meta": stmt.excluded.meta, "updated": stmt.excluded.updated}), row)
    if checkpoint.positions:
        stmt = insert(POSITIONS)
        # Positions only move forward: a batch redelivered to a slower instance never rewinds them.
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["group", "topic", "partition"], set_={"offset": stmt.excluded.offset},
            where=POSITIONS.c.offset < stmt.excluded.offset,
        ), [dict(group=checkpoint.group, topic=t, partition=p, offset=o) for (t, p), o in checkpoint.positions.items()])


def forget_positions(conn: Connection, group_prefix: str) -> int:
    """Delete the positions of every group named ``<group_prefix>.<worker>``; returns how many rows."""
    query = delete(POSITIONS).where(POSITIONS.c.group.startswith(f"{group_prefix}.", autoescape=True))
    return conn.execute(query).rowcount


def read(conn: Connection, key: str) -> tuple[bytes, dict] | None:
    row = conn.execute(select(CHECKPOINTS.c.state, CHECKPOINTS.c.meta).where(CHECKPOINTS.c.key == key)).first()
    return None if row is None else (bytes(row.state), dict(row.meta))


def positions(conn: Connection, group: str, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    wanted = list(partitions)
    if not wanted:
        return {}
    query = select(POSITIONS.c.topic, POSITIONS.c.partition, POSITIONS.c.offset).where(
        POSITIONS.c.group == group, tuple_(POSITIONS.c.topic, POSITIONS.c.partition).in_(wanted))
    return {(t, p): o for t, p, o in conn.execute(query)}
