"""``activestream run``: the whole loop on one machine, with a live display.

Broker (embedded unless configured), the four workers as processes, and in this
process the simulated traffic source, the simulated labeler and an observer.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field

from activestream.config import Settings
from activestream.errors import ActivestreamError
from activestream.display import Display
from activestream.learners.training import TrainConfig
from activestream.simulation.datasets import load_dataset
from activestream.simulation.seed import bootstrap_seed
from activestream.simulation.traffic import split_seed, stream_items
from activestream.streams.cluster import LocalCluster
from activestream.streams.demo import SimulatedLabeler, stream_images
from activestream.streams.learner import announce
from activestream.streams.observer import Observer
from activestream.streams.stage import BatchStage, make_consumer, make_producer
from activestream.streams.worker import Resources

log = logging.getLogger(__name__)


@dataclass
class Demo:
    """What the simulated side of a run produced, for the summary and the tests."""

    produced: list[str] = field(default_factory=list)
    truth: dict[str, int] = field(default_factory=dict)
    seed_version: int | None = None
    finished: bool = False


def seed_if_empty(settings: Settings, res: Resources, dataset, seed_indices):
    meta = res.registry.latest(settings.model_name, status="promoted")
    if meta is None:
        meta = bootstrap_seed(dataset, seed_indices, store=res.store, blobs=res.blobs, registry=res.registry,
                              name=settings.model_name, arch=settings.arch, holdout=settings.holdout,
                              config=TrainConfig(epochs=10, seed=settings.seed), device=settings.device)
    return meta


def settled(settings: Settings, res: Resources, observer: Observer, demo: Demo) -> bool:
    """Every image predicted, every request answered, and no fine-tuning due."""
    seen = observer.seen
    if not demo.finished or len(seen.predicted.keys() & set(demo.produced)) < len(demo.produced):
        return False
    if len(seen.labels) < len(seen.requested):
        return False
    return not round_due(settings, res) and seen.announced and seen.announced[-1]["version"] == _last_promoted(settings, res)


def round_due(settings: Settings, res: Resources) -> bool:
    """Whether enough new labels wait for a fine-tuning round the learner has not finished."""
    latest = res.registry.latest(settings.model_name, status=None)
    return res.store.count_labeled() - latest.train_size >= settings.retrain_every


def _last_promoted(settings: Settings, res: Resources) -> int:
    return res.registry.latest(settings.model_name, status="promoted").version


async def run_loop(settings: Settings, stop: asyncio.Event, display: Display | None = None,
                   cluster: LocalCluster | None = None, timeout: float | None = None) -> tuple[Observer, Demo]:
    """Run the loop until the simulated stream is done and settled, or until ``stop``."""
    cluster = cluster or LocalCluster(settings)
    settings = await asyncio.to_thread(cluster.start)
    res = Resources(settings).open()
    demo, tasks = Demo(), []
    observer = Observer(settings, settings.bootstrap)
    producer = make_producer(settings.bootstrap)
    await producer.start()
    try:
        tasks.append(asyncio.ensure_future(observer.run(stop)))
        if settings.simulate:
            tasks += await _start_simulation(settings, res, producer, demo, stop)
        started = time.monotonic()
        while not stop.is_set():
            if display:
                display.update(settings, res, observer.seen, demo)
            failed = [t for t in tasks if t.done() and t.exception()]
            if failed:
                raise failed[0].exception()
            exited = [name for name, alive in cluster.alive().items() if not alive]
            if exited:
                raise ActivestreamError(f"worker {exited[0]} exited; its log is {cluster.logs / exited[0]}.log")
            if settings.simulate and await asyncio.to_thread(settled, settings, res, observer, demo):
                break
            if timeout and time.monotonic() - started > timeout:
                log.error("run did not settle within %.0f s", timeout)
                break
            await asyncio.sleep(0.5)
        return observer, demo
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()
        await asyncio.to_thread(cluster.stop)


async def _start_simulation(settings: Settings, res: Resources, producer, demo: Demo, stop: asyncio.Event) -> list:
    dataset = await asyncio.to_thread(load_dataset, settings.dataset, settings.data_dir)
    seed_idx, stream_idx = split_seed(dataset, settings.seed_size, settings.seed)
    meta = await asyncio.to_thread(seed_if_empty, settings, res, dataset, seed_idx)
    demo.seed_version = meta.version
    await announce(producer, settings.topic_versions, meta)
    labeler = SimulatedLabeler(demo.truth, settings.topic_labels, settings.topic_deadletter, settings.label_delay)
    consumer = make_consumer(settings, settings.bootstrap, settings.group("sim-labeler"), settings.topic_requests)
    await consumer.start()
    stage = BatchStage("sim-labeler", consumer, producer, labeler, max_records=500, wait_ms=100)

    async def label_forever() -> None:
        try:
            await stage.run(stop)
        finally:
            await consumer.stop()

    async def source() -> None:
        items = stream_items(dataset, stream_idx, settings.images)
        hold = (lambda: asyncio.to_thread(round_due, settings, res)) if settings.pace_learner else None
        await stream_images(producer, settings.topic_images, items, settings.rate, demo.truth, demo.produced, hold)
        demo.finished = True

    return [asyncio.ensure_future(label_forever()), asyncio.ensure_future(source())]


def main(settings: Settings) -> int:
    display = Display()
    stop = asyncio.Event()

    async def go():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with display:
            observer, demo = await run_loop(settings, stop, display)
        res = Resources(settings).open()
        display.summary(settings, observer.seen, demo, res.registry, res.store)

    asyncio.run(go())
    return 0
