"""Simulated traffic and labeler on the stream, for demos and tests.

The ground truth rides in each image's ``truth`` field; only the simulated labeler
(through the truth map the source fills) and evaluators read it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from activestream.errors import InvalidInput
from activestream.simulation.traffic import StreamItem
from activestream.streams.messages import ImageV1, LabelRequestV1, LabelV1, parse
from activestream.streams.stage import DeadLetters, Output

log = logging.getLogger(__name__)


def image_message(item: StreamItem, source: str = "simulator") -> bytes:
    image = None if item.png is None else base64.b64encode(item.png).decode()
    return ImageV1(v=1, id=item.id, ts=time.time(), source=source, image=image, uri=item.uri,
                   truth=item.truth).encode()


async def _each(items: Iterable[StreamItem] | AsyncIterable[StreamItem]) -> AsyncIterator[StreamItem]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def stream_images(producer: AIOKafkaProducer, topic: str,
                        items: Iterable[StreamItem] | AsyncIterable[StreamItem], rate: float,
                        truth: dict[str, int], produced: list[str] | None = None,
                        hold: Callable[[], Awaitable[bool]] | None = None, max_hold: float = 120.0,
                        source: str = "simulator") -> int:
    """Produce ``items`` at ``rate`` images/s (0: as fast as possible); returns the count.

    ``items`` may be asynchronous (a source that reads files or objects in threads).
    ``truth`` gains the known answer of each item that has one. ``hold``, asked every few
    hundred images, pauses the source while it answers True (for at most ``max_hold``
    seconds a pause): the demo's traffic waits for a due fine-tuning round, so learning
    shows on a slow machine as on a fast one.
    """
    started, n, pending = time.monotonic(), 0, []
    async for item in _each(items):
        if item.truth is not None:
            truth[item.id] = item.truth
        pending.append(await producer.send(topic, image_message(item, source), key=item.id.encode()))
        n += 1
        if produced is not None:
            produced.append(item.id)
        if len(pending) >= 500:
            await asyncio.gather(*pending)
            pending.clear()
        if hold is not None and n % 250 == 0:
            started += await _held(hold, max_hold)
        if rate > 0:
            ahead = n / rate - (time.monotonic() - started)
            if ahead > 0.005:
                await asyncio.sleep(ahead)
    await asyncio.gather(*pending)
    return n


async def _held(hold: Callable[[], Awaitable[bool]], max_hold: float) -> float:
    """Wait while ``hold()`` is true; return the seconds waited."""
    began = time.monotonic()
    while await hold():
        if time.monotonic() - began > max_hold:
            log.warning("source held for %.0f s; going on", max_hold)
            break
        await asyncio.sleep(0.25)
    return time.monotonic() - began


class SimulatedLabeler:
    """Answers labeling requests from the truth, after a delay."""

    pipelined = False

    def __init__(self, truth: dict[str, int], labels_topic: str, deadletter_topic: str,
                 delay: float = 0.0, labeler: str = "sim-oracle"):
        self.truth = truth
        self.labels_topic = labels_topic
        self.delay = delay
        self.labeler = labeler
        self.dead = DeadLetters(deadletter_topic, "sim-labeler")

    async def handle(self, records: Sequence[ConsumerRecord]) -> list[Output]:
        outputs = []
        for record in records:
            try:
                request = parse(LabelRequestV1, record.value)
            except InvalidInput as e:
                outputs.append(self.dead.output(record, e))
                continue
            answer = self.truth.get(request.id)
            if answer is None:
                log.warning("no truth for %s; the simulated labeler skips it", request.id)
                continue
            label = LabelV1(id=request.id, label=answer, labeler=self.labeler)
            outputs.append(Output(self.labels_topic, request.id.encode(), label.encode()))
        if outputs and self.delay:
            await asyncio.sleep(self.delay)
        return outputs

    def committed(self) -> None:
        pass
