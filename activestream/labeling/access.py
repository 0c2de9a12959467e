"""Where a labeler stands with an item: whether it is leased to them, and what they answered.

The API lets a labeler submit only for the item leased to them and see only the
images of items leased to them or answered by them; Label Studio's paths have no
leases and use :meth:`LabelingService.record_label` directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from activestream.errors import NotFound
from activestream.storage.queue import ANSWERS, ITEMS, LabelQueue


@dataclass(frozen=True)
class Standing:
    """``leased``: a live lease of the labeler's; ``outcome``/``label``: their answer, if any."""

    leased: bool
    outcome: str | None = None
    label: int | None = None


def standing(queue: LabelQueue, item_id: str, labeler: str, now: float) -> Standing:
    """Where ``labeler`` stands with the item; ``NotFound`` for an unknown item."""
    with queue.engine.connect() as conn:
        item = conn.execute(select(ITEMS.c.holder, ITEMS.c.until).where(ITEMS.c.id == item_id)).first()
        if item is None:
            raise NotFound(f"no labeling item {item_id!r}; fetch items with POST /api/next")
        answer = conn.execute(select(ANSWERS.c.outcome, ANSWERS.c.label)
                              .where(ANSWERS.c.item_id == item_id, ANSWERS.c.labeler == labeler)).first()
    leased = item.holder == labeler and item.until is not None and item.until > now
    return Standing(leased, *(answer or (None, None)))
