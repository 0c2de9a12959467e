"""``labeling.requests`` -> the queue, in the labeling service's consumer group.

Runs as a :class:`~activestream.streams.stage.BatchStage`: a batch is parsed, its
good requests are persisted in one call (idempotent by id), bad ones go to the
dead-letter topic with their reason, and only then are the offsets committed.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

from aiokafka.structs import ConsumerRecord

from activestream.errors import InvalidInput, NotFound
from activestream.labeling.service import LabelingService, blob_key
from activestream.streams.messages import LabelRequestV1, parse
from activestream.streams.stage import DeadLetters, Output

WORKER = "labeling"


class RequestsHandler:
    pipelined = False

    def __init__(self, service: LabelingService):
        self.service = service
        self.dead = DeadLetters(service.settings.topic_deadletter, WORKER)

    async def handle(self, records: Sequence[ConsumerRecord]) -> list[Output]:
        outputs, parsed = [], []
        for record in records:
            try:
                parsed.append((record, parse(LabelRequestV1, record.value)))
            except InvalidInput as e:
                outputs.append(self.dead.output(record, e))
        good, bad = await asyncio.to_thread(self._check, parsed)
        outputs.extend(self.dead.output(record, e) for record, e in bad)
        if good:
            await asyncio.to_thread(self.service.enqueue, good)
        return outputs

    def _check(self, parsed: list) -> tuple[list[LabelRequestV1], list]:
        """Refuse what the page could never show: no image, or guesses outside the model's classes."""
        try:
            classes = len(self.service.classes)
        except NotFound:  # no model yet: its classes are checked when labels are recorded
            classes = None
        good, bad = [], []
        for record, request in parsed:
            try:
                key = blob_key(request.uri)
                if not self.service.blobs.exists(key):
                    raise InvalidInput("missing_image", f"request {request.id!r}: no blob {key!r} in the blob store")
                if classes is not None and any(not 0 <= c < classes for c, _ in request.top):
                    raise InvalidInput("unknown_class", f"request {request.id!r}: a guess is outside the model's {classes} classes")
            except InvalidInput as e:
                bad.append((record, e))
                continue
            good.append(request)
        return good, bad

    def committed(self) -> None:
        pass
