"""Labelers' tokens: creating one, who has one, and revoking one.

Only a token's sha256 is stored, so a lost token cannot be shown again: create a
new one for the labeler, which replaces the old. Revoking removes the labeler's
sign-in; their answers and labels stay. A running ``label serve`` remembers a token
for up to ``TOKEN_TTL`` seconds, so a revoked one stops working within that.
"""

from __future__ import annotations

import secrets
import time
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


def create(queue: LabelQueue, name: str) -> str:
    """A new token for ``name`` (a new labeler, or a replaced token); shown once, only its sha256 is kept."""
    token = secrets.token_urlsafe(32)
    queue.set_token(name, token, now=time.time())
    return token


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
