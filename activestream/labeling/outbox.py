"""Labels on their way to the ``labels`` topic, kept in the store until the broker has them.

A person's answer is the costliest message the loop has. When the loop's broker is gone
(the run stopped, a network cut), ``label serve`` keeps taking answers: each is written
here first, sent when the broker answers, and sent later by :meth:`OutboxSink.drain`
otherwise. While the broker is known to be down an answer is not even tried: the page
stays quick, and the page says that answers wait (``OutboxSink.state``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from sqlalchemy import Column, Float, Integer, String, Table, delete, func, insert, select, update

from activestream.storage.queue_tables import queue_metadata
from activestream.storage.store import SampleStore, writing
from activestream.streams.messages import LabelV1

log = logging.getLogger(__name__)

OUTBOX = Table(
    "label_outbox", queue_metadata,
    Column("item_id", String, primary_key=True),
    Column("labeler", String, primary_key=True),
    Column("label", Integer, nullable=False),
    Column("kind", String, nullable=False),
    Column("ts", Float, nullable=False),
)


@dataclass(frozen=True)
class SinkState:
    """Whether the last delivery reached the broker, and how many labels wait for it."""

    up: bool
    waiting: int


class OutboxSink:
    """A :class:`~activestream.labeling.service.LabelSink` that never loses a label to a
    broker outage: ``send`` keeps the label, then delivers it through ``sink`` when the
    broker is up; ``drain`` delivers what waits. Labels are idempotent by item and
    labeler downstream, so a label sent twice (a crash between delivery and removal)
    is harmless, and a correction replaces an answer still waiting."""

    def __init__(self, store: SampleStore, sink):
        self.engine = store.engine
        self.sink = sink
        self.up = True
        self._lock = threading.Lock()  # one delivery at a time: drain and answers race otherwise
        OUTBOX.create(self.engine, checkfirst=True)

    def send(self, label: LabelV1) -> None:
        key = (OUTBOX.c.item_id == label.id, OUTBOX.c.labeler == label.labeler)
        row = dict(label=label.label, kind=label.kind, ts=label.ts)
        with writing(self.engine), self.engine.begin() as conn:
            if not conn.execute(update(OUTBOX).where(*key).values(**row)).rowcount:
                conn.execute(insert(OUTBOX).values(item_id=label.id, labeler=label.labeler, **row))
        if self.up:
            self.drain()

    def drain(self, limit: int = 500) -> int:
        """Deliver up to ``limit`` waiting labels, oldest first; how many were delivered.
        The first failure marks the broker down and stops (the rest wait)."""
        with self._lock:
            with self.engine.connect() as conn:
                rows = conn.execute(select(OUTBOX).order_by(OUTBOX.c.ts).limit(limit)).all()
            delivered = 0
            for row in rows:
                label = LabelV1(id=row.item_id, label=row.label, labeler=row.labeler, kind=row.kind, ts=row.ts)
                try:
                    self.sink.send(label)
                except Exception as e:  # noqa: BLE001 - whatever the client raises, the label waits here
                    if self.up:
                        log.warning("the broker did not take a label (%s): answers are kept and sent when it is back", e)
                    self.up = False
                    break
                with writing(self.engine), self.engine.begin() as conn:
                    # Only the version sent: a correction that came meanwhile still waits.
                    conn.execute(delete(OUTBOX).where(OUTBOX.c.item_id == row.item_id, OUTBOX.c.labeler == row.labeler,
                                                      OUTBOX.c.label == row.label, OUTBOX.c.ts == row.ts))
                if not self.up:
                    log.warning("the broker is back: sending the answers that waited")
                self.up = True
                delivered += 1
            return delivered

    def state(self) -> SinkState:
        with self.engine.connect() as conn:
            waiting = conn.execute(select(func.count()).select_from(OUTBOX)).scalar_one()
        return SinkState(self.up, waiting)

    def close(self) -> None:
        self.sink.close()
