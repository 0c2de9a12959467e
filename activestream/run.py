"""``activestream run``: the whole loop on one machine, with a live display.

Broker (embedded unless configured), the four workers as processes (and ``label serve``
with ``--label``), and in this process the traffic source (the demo dataset, or the
user's images with ``--images-from``), the simulated labeler and an observer.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from activestream.config import Settings
from activestream.display import Display
from activestream.errors import ConfigError
from activestream.learners.training import TrainConfig
from activestream.simulation.datasets import load_dataset
from activestream.simulation.seed import bootstrap_seed
from activestream.simulation.traffic import split_seed, stream_items
from activestream.storage.decisions import in_force
from activestream.streams.cluster import LABEL, LocalCluster
from activestream.streams.demo import SimulatedLabeler, stream_images
from activestream.streams.learner import announce, considered
from activestream.streams.observer import Observer
from activestream.streams.selector import SELECTED_REASONS
from activestream.streams.source import Source, describe, open_source, stream_source, with_fetch_root
from activestream.streams.stage import BatchStage, make_consumer, make_producer
from activestream.streams.worker import WORKERS, Resources

log = logging.getLogger(__name__)


@dataclass
class Demo:
    """What the simulated side of a run produced, for the summary and the tests."""

    produced: list[str] = field(default_factory=list)
    truth: dict[str, int] = field(default_factory=dict)
    seed_version: int | None = None
    finished: bool = False
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    answered: bool = True  # the simulated labeler answers every request; if not, people label until Ctrl-C
    skipped: Counter = field(default_factory=Counter)  # files of --images-from not sent, by reason


def seed_if_empty(settings: Settings, res: Resources, dataset, seed_indices):
    meta = in_force(res.registry, settings.model_name)
    if meta is None:
        meta = bootstrap_seed(dataset, seed_indices, store=res.store, blobs=res.blobs, registry=res.registry,
                              name=settings.model_name, arch=settings.arch, holdout=settings.holdout,
                              config=TrainConfig(epochs=10, seed=settings.seed), device=settings.device)
    return meta


def settled(settings: Settings, res: Resources, observer: Observer, demo: Demo) -> bool:
    """Every image predicted, every prediction decided, every request answered, and no fine-tuning due."""
    seen = observer.seen
    if not demo.answered:
        return False
    # An image the predictor dead-lettered (a file that is no image after all) is done too.
    done = seen.predicted.keys() | {d["key"] for d in seen.dead_records if d["topic"] == settings.topic_images}
    if not demo.finished or len(done & set(demo.produced)) < len(demo.produced):
        return False
    if not decided(settings, res, dict(seen.prediction_ends)):  # a copy: the observer adds to it meanwhile
        return False  # a selector restarting with a backlog has requests still to make
    # Read after the positions: a batch's picks land with its position, so this count is final.
    if len(seen.requested) < res.store.count_samples(SELECTED_REASONS, since=demo.started):
        return False  # picks stored whose requests the observer has not read yet
    if len(seen.labels) < len(seen.requested):
        return False
    return not round_due(settings, res) and seen.announced and seen.announced[-1]["version"] == _last_promoted(settings, res)


def decided(settings: Settings, res: Resources, ends: dict[tuple[str, int], int]) -> bool:
    """Whether the selectors have decided every prediction record up to ``ends`` (per partition)."""
    known = res.store.positions(settings.group("selector"), ends)
    return all(known.get(tp, 0) >= end for tp, end in ends.items())


def round_due(settings: Settings, res: Resources) -> bool:
    """Whether enough new labels wait for a fine-tuning round the learner has not finished."""
    latest = res.registry.latest(settings.model_name, status=None)
    return res.store.count_labeled() - considered(latest) >= settings.retrain_every


def _last_promoted(settings: Settings, res: Resources) -> int:
    return in_force(res.registry, settings.model_name).version


async def run_loop(settings: Settings, stop: asyncio.Event, display: Display | None = None,
                   cluster: LocalCluster | None = None, timeout: float | None = None) -> tuple[Observer, Demo]:
    """Run the loop until the simulated stream is done and settled, or until ``stop``."""
    if settings.images_from:  # a folder sent by reference must be open to the workers it starts
        settings = with_fetch_root(settings, _user_source(settings))
    cluster = cluster or LocalCluster(settings, WORKERS + ((LABEL,) if settings.label_serve else ()))
    settings = await asyncio.to_thread(cluster.start)
    _tell(display, f"broker at {settings.bootstrap} (--bootstrap for `activestream source`, `label serve`, "
                   "`models promote`)" + (f"; labeling page at http://{settings.label_host}:{settings.label_port}"
                                         if settings.label_serve else ""))
    res = Resources(settings).open()
    demo, tasks = Demo(), []
    observer = Observer(settings, settings.bootstrap)
    producer = make_producer(settings.bootstrap)
    await producer.start()
    try:
        tasks.append(asyncio.ensure_future(observer.run(stop)))
        if settings.simulate:
            tasks += await _start_simulation(settings, res, producer, demo, stop, display)
        started = time.monotonic()
        while not stop.is_set():
            if display:
                display.update(settings, res, observer.seen, demo)
            failed = [t for t in tasks if t.done() and t.exception()]
            if failed:
                raise failed[0].exception()
            for event in cluster.supervise():
                if display and hasattr(display, "note"):
                    display.note(event)
            # Not while a worker waits to be restarted: a run ends with every worker up.
            whole = all(cluster.alive().values())
            if settings.simulate and whole and await asyncio.to_thread(settled, settings, res, observer, demo):
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


def _tell(display: Display | None, text: str) -> None:
    """Show ``text`` above the live table, or log it when there is no display (tests)."""
    if display is not None and hasattr(display, "note"):
        display.note(text)
    else:
        log.info("%s", text)


def _user_source(settings: Settings) -> Source:
    return Source(settings.images_from, settings.images_by)


async def _start_simulation(settings: Settings, res: Resources, producer, demo: Demo, stop: asyncio.Event,
                            display: Display | None = None) -> list:
    if settings.images_from:
        return await _start_user_images(settings, res, producer, demo, stop, display)
    dataset = await asyncio.to_thread(load_dataset, settings.dataset, settings.data_dir)
    seed_idx, stream_idx = split_seed(dataset, settings.seed_size, settings.seed)
    meta = await asyncio.to_thread(seed_if_empty, settings, res, dataset, seed_idx)
    demo.seed_version = meta.version
    await announce(producer, settings.topic_versions, meta)

    async def source() -> None:
        items = stream_items(dataset, stream_idx, settings.images)
        await stream_images(producer, settings.topic_images, items, settings.rate, demo.truth, demo.produced,
                            _hold(settings, res))
        demo.finished = True

    return [await _simulated_labeler(settings, producer, demo, stop), asyncio.ensure_future(source())]


async def _start_user_images(settings: Settings, res: Resources, producer, demo: Demo, stop: asyncio.Event,
                             display: Display | None) -> list:
    """Stream the user's folder or prefix; the simulated labeler answers only where the
    sub-folders name the classes of the version in force."""
    meta = in_force(res.registry, settings.model_name)
    if meta is None:
        raise ConfigError(f"no version of {settings.model_name!r} is in force in {settings.home}: train one with "
                          "`activestream seed LABELED_FOLDER ...` or bring yours with `activestream models import ...`")
    opened = await asyncio.to_thread(open_source, _user_source(settings), meta.spec.get("classes"))
    demo.seed_version = meta.version
    await announce(producer, settings.topic_versions, meta)
    tasks = []
    if opened.answers is None:
        demo.answered = False
        _tell(display, f"{settings.images_from} is not in ImageFolder layout with the model's classes: only people "
                       "label (`activestream label serve`, or run with --label); the run goes on until Ctrl-C")
    else:
        tasks.append(await _simulated_labeler(settings, producer, demo, stop))

    async def source() -> None:
        _, demo.skipped = await stream_source(producer, settings, opened, settings.rate, demo.truth, demo.produced,
                                              _hold(settings, res) if demo.answered else None)
        demo.finished = True
        if demo.skipped:
            _tell(display, f"{settings.images_from}: {describe(demo.skipped)} (not sent; the log names each file)")

    return [*tasks, asyncio.ensure_future(source())]


def _hold(settings: Settings, res: Resources):
    return (lambda: asyncio.to_thread(round_due, settings, res)) if settings.pace_learner else None


async def _simulated_labeler(settings: Settings, producer, demo: Demo, stop: asyncio.Event) -> asyncio.Future:
    labeler = SimulatedLabeler(demo.truth, settings.topic_labels, settings.topic_deadletter, settings.label_delay)
    consumer = make_consumer(settings, settings.bootstrap, settings.group("sim-labeler"), settings.topic_requests)
    await consumer.start()
    stage = BatchStage("sim-labeler", consumer, producer, labeler, max_records=500, wait_ms=100)

    async def label_forever() -> None:
        try:
            await stage.run(stop)
        finally:
            await consumer.stop()

    return asyncio.ensure_future(label_forever())


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
