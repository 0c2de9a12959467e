"""``activestream run``: the whole loop on one machine, with a live display.

Broker (embedded unless configured), the four workers as processes (and ``label serve``
with ``--label`` or when people label, ``--labelers people|both``), and in this process
the traffic source (the demo dataset, or the user's images with ``--images-from``), the
simulated labeler and an observer.
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
from activestream.labeling.tokens import create as create_token
from activestream.learners.training import TrainConfig
from activestream.simulation.datasets import load_dataset
from activestream.simulation.seed import bootstrap_seed
from activestream.simulation.traffic import split_seed, stream_items
from activestream.storage.decisions import in_force
from activestream.storage.queue import LabelQueue
from activestream.streams.cluster import LABEL, LocalCluster
from activestream.streams.demo import SimulatedLabeler, stream_images
from activestream.streams.learner import announce, considered
from activestream.streams.observer import Observer
from activestream.streams.selector import SELECTED_REASONS
from activestream.streams.source import Source, describe, open_source, stream_source, with_fetch_root
from activestream.streams.stage import BatchStage, make_consumer, make_producer
from activestream.streams.worker import WORKERS, Resources

log = logging.getLogger(__name__)

PERSON = "you"  # the labeler whose token `run` prints beside its labeling page


@dataclass
class Demo:
    """What the simulated side of a run produced, for the summary and the tests."""

    produced: list[str] = field(default_factory=list)
    truth: dict[str, int] = field(default_factory=dict)
    seed_version: int | None = None
    finished: bool = False
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    answered: bool = True  # the simulated labeler answers every request; if not, people label until Ctrl-C
    paused: bool = False  # the source waits for a due fine-tuning round (pace_learner)
    skipped: Counter = field(default_factory=Counter)  # files of --images-from not sent, by reason


def seed_if_empty(settings: Settings, res: Resources, dataset, seed_indices):
    meta = in_force(res.registry, settings.model_name)
    if meta is None:
        meta = bootstrap_seed(dataset, seed_indices, store=res.store, blobs=res.blobs, registry=res.registry,
                              name=settings.model_name, arch=settings.arch, holdout=settings.holdout,
                              config=TrainConfig(epochs=10, seed=settings.seed), device=settings.device)
    return meta


def settled(settings: Settings, res: Resources, observer: Observer, demo: Demo) -> bool:
    """Every image predicted, every prediction decided, every request answered and its label
    stored, and no fine-tuning due."""
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
    # Labels on the topic are not labels in the store until ingest has them (a restarted
    # ingest may still be on its way to them); dead-lettered ones never will be.
    dead = {d["key"] for d in seen.dead_records if d["topic"] == settings.topic_labels}
    sent = {key for key in set(seen.labelers) if key[0] not in dead}  # a copy: the observer adds to it
    if not sent <= res.store.labelers_of({sample_id for sample_id, _ in sent}):
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
    embedded = not settings.bootstrap
    cluster = cluster or LocalCluster(settings, WORKERS + ((LABEL,) if serves_page(settings) else ()))
    settings = await asyncio.to_thread(cluster.start)
    res = Resources(settings).open()
    _tell(display, *where(settings, embedded, serves_page(settings)))
    demo, tasks = Demo(), []
    observer = Observer(settings, settings.bootstrap)
    producer = make_producer(settings.bootstrap)
    await producer.start()
    try:
        tasks.append(asyncio.ensure_future(observer.run(stop)))
        if settings.simulate:
            tasks += await _start_simulation(settings, res, producer, demo, stop, display)
        if serves_page(settings):  # once a model is in force: the page refuses labelers before
            token = await asyncio.to_thread(_page_token, res)
            if not await _page_up(settings, cluster):
                _tell(display, f"label serve does not answer yet: see {cluster.logs / 'label.log'}")
            _tell(display, page_line(settings, token))
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


def serves_page(settings: Settings) -> bool:
    """Whether `run` starts ``label serve``: asked for, or people label."""
    return settings.label_serve or settings.labelers != "simulated"


async def _page_up(settings: Settings, cluster: LocalCluster, wait: float = 120.0) -> bool:
    """Whether label serve accepts connections, waiting for its start-up (``wait`` only
    bounds a hang): the URL printed then works at once."""
    host = _page_host(settings)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and cluster.alive().get(LABEL, False):
        try:
            _, writer = await asyncio.open_connection(host, settings.label_port)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        writer.close()
        return True
    return False


def _page_token(res: Resources) -> str:
    queue = LabelQueue(res.store)
    queue.create_schema()
    return create_token(queue, PERSON)


def where(settings: Settings, embedded: bool, page: bool) -> list[str]:
    """Where a run keeps its things, and how another terminal joins it: the first lines it prints.

    >>> s = Settings(home="/srv/as", bootstrap="127.0.0.1:9092")
    >>> print("\\n".join(where(s, embedded=True, page=False)))  # doctest: +NORMALIZE_WHITESPACE
    home      /srv/as
    broker    127.0.0.1:9092 (embedded: it stops with this run)
    logs      /srv/as/logs (one file per worker)
    join      export ACTIVESTREAM_HOME=/srv/as ACTIVESTREAM_BOOTSTRAP=127.0.0.1:9092
              then: activestream source FOLDER | activestream models list | activestream label serve
    """
    home = settings.home_path.resolve()
    labelers = "activestream label token create NAME" if page else "activestream label serve"
    return [f"home      {home}",
            f"broker    {settings.bootstrap}" + (" (embedded: it stops with this run)" if embedded else ""),
            f"logs      {home / 'logs'} (one file per worker)",
            f"join      export ACTIVESTREAM_HOME={home} ACTIVESTREAM_BOOTSTRAP={settings.bootstrap}",
            f"          then: activestream source FOLDER | activestream models list | {labelers}"]


def page_line(settings: Settings, token: str) -> str:
    """The labeling page's address and a token to sign in with.

    >>> page_line(Settings(label_host="0.0.0.0", label_port=8090), "tok")
    "labeling  http://127.0.0.1:8090 sign in with the token tok (labeler 'you')"
    """
    return f"labeling  http://{_page_host(settings)}:{settings.label_port} sign in with the token {token} (labeler {PERSON!r})"


def _page_host(settings: Settings) -> str:
    """Where this machine reaches label serve: a bind to every address is reached on loopback."""
    return "127.0.0.1" if settings.label_host in ("0.0.0.0", "::", "") else settings.label_host


def _tell(display: Display | None, *lines: str) -> None:
    """Show ``lines`` above the live table, or log them when there is no display (tests)."""
    for text in lines:
        if display is not None and hasattr(display, "say"):
            display.say(text)
        elif display is not None and hasattr(display, "note"):
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
    if in_force(res.registry, settings.model_name) is None:
        _tell(display, f"training the seed model on {len(seed_idx)} labeled images of {dataset.name} "
                       "(on a laptop's CPU about a minute); traffic starts once it serves")
    meta = await asyncio.to_thread(seed_if_empty, settings, res, dataset, seed_idx)
    demo.seed_version = meta.version
    await announce(producer, settings.topic_versions, meta)

    async def source() -> None:
        items = stream_items(dataset, stream_idx, settings.images)
        await stream_images(producer, settings.topic_images, items, settings.rate, demo.truth, demo.produced,
                            _hold(settings, res, demo))
        demo.finished = True

    return [*await _labelers(settings, producer, demo, stop, display), asyncio.ensure_future(source())]


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
        tasks += await _labelers(settings, producer, demo, stop, display)

    async def source() -> None:
        _, demo.skipped = await stream_source(producer, settings, opened, settings.rate, demo.truth, demo.produced,
                                              _hold(settings, res, demo) if demo.answered else None)
        demo.finished = True
        if demo.skipped:
            _tell(display, f"{settings.images_from}: {describe(demo.skipped)} (not sent; the log names each file)")

    return [*tasks, asyncio.ensure_future(source())]


def _hold(settings: Settings, res: Resources, demo: Demo):
    """The source's pause while a fine-tuning round is due (``pace_learner``); the display
    shows it from ``demo.paused``."""
    if not settings.pace_learner:
        return None

    async def hold() -> bool:
        demo.paused = await asyncio.to_thread(round_due, settings, res)
        return demo.paused

    return hold


async def _labelers(settings: Settings, producer, demo: Demo, stop: asyncio.Event,
                    display: Display | None) -> list[asyncio.Future]:
    """The simulated labeler, unless only people label: then the run goes on until Ctrl-C."""
    if settings.labelers == "people":
        demo.answered = False
        _tell(display, "people label: the labeling page gets the requests (its address follows once a model serves); "
                       "the run goes on until Ctrl-C")
        return []
    return [await _simulated_labeler(settings, producer, demo, stop)]


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
