"""Labelers' tokens: who has one, and revoking one (``LabelQueue.set_token`` creates and replaces).

Only a token's sha256 is stored, so a lost token cannot be shown again: create a
new one for the labeler, which replaces the old. Revoking removes the labeler's
sign-in; their answers and labels stay. A running ``label serve`` remembers a token
for up to ``TOKEN_TTL`` seconds, so a revoked one stops working within that.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select

from activestream.errors import NotFound
from activestream.storage.queue import LABELERS, LabelQueue
from activestream.storage.store import writing


@dataclass(frozen=True)
class Holder:
    """A labeler who holds a token, and when it was first created (epoch seconds)."""

    name: str
    created: float


def holders(queue: LabelQueue) -> list[Holder]:
    """Every labeler with a token, by name."""
    with queue.engine.connect() as conn:
        rows = conn.execute(select(LABELERS.c.name, LABELERS.c.created).order_by(LABELERS.c.name)).all()
    return [Holder(name, created) for name, created in rows]


def revoke(queue: LabelQueue, name: str) -> None:
    """Take ``name``'s token away; ``NotFound`` if they have none."""
    with writing(queue.engine), queue.engine.begin() as conn:
        gone = conn.execute(delete(LABELERS).where(LABELERS.c.name == name)).rowcount
    if not gone:
        raise NotFound(f"labeler {name!r} has no token; `activestream label token list` shows who has one")
