"""Worker processes: one faust-streaming app per worker, run by ``faust.Worker``.

faust gives each worker its lifecycle (signals, graceful stop, crash on an escaped
exception, logging) and its timers; the data topics themselves are consumed by
:class:`~activestream.streams.stage.BatchStage` tasks, because faust's per-event path
costs more CPU than the model (see the README).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import uuid

import faust
import mode.loop
import torch

from activestream.config import Settings, blobs_from, registry_from
from activestream.errors import ConfigError, InvalidInput
from activestream.storage.store import SampleStore
from activestream.streams import health, metrics
from activestream.streams.health import HEALTH
from activestream.streams.fetch import fetcher_from
from activestream.streams.ingest import IngestHandler
from activestream.streams.learner import DriftHandler, Learner
from activestream.streams.predictor import PredictorHandler
from activestream.streams.reaper import orphaned
from activestream.streams.selector import SelectorHandler
from activestream.streams.serving import ServingModel
from activestream.streams.messages import ModelVersionV1, parse
from activestream.streams.stage import Assignment, BatchStage, make_consumer, make_producer
from activestream.streams.topics import ensure_topics

log = logging.getLogger(__name__)
WORKERS = ("predictor", "selector", "ingest", "learner")
SCALED = ("predictor", "selector", "ingest")  # several processes in one consumer group; the learner is one


def copies(settings: Settings, name: str) -> int:
    """How many processes of ``name`` a local deployment runs."""
    return {"predictor": settings.predictors, "selector": settings.selectors, "ingest": settings.ingesters}.get(name, 1)


def port_offset(settings: Settings, name: str, instance: int) -> int:
    """Where a process's metrics port lies after ``metrics_port``: the first process of
    each worker in :data:`WORKERS` order, then the extra ones, worker by worker.

    >>> from activestream.config import Settings
    >>> s = Settings(predictors=2, selectors=3)
    >>> [port_offset(s, *p) for p in (("predictor", 1), ("learner", 1), ("predictor", 2), ("selector", 2), ("selector", 3))]
    [0, 3, 4, 5, 6]
    """
    if instance == 1:
        return WORKERS.index(name)
    before = sum(copies(settings, w) - 1 for w in SCALED[:SCALED.index(name)])
    return len(WORKERS) + before + instance - 2


class Resources:
    """The store, blobs and registry of one worker (blobs and models under ``storage_url`` or home)."""

    def __init__(self, settings: Settings):
        self.store = SampleStore(settings.store)
        self.blobs = blobs_from(settings)
        self.registry = registry_from(settings)

    def open(self) -> "Resources":
        self.store.create_schema()
        for objects in (self.blobs.objects, self.registry.objects):
            check = getattr(objects, "check", None)  # a bucket: refuse to start on a wrong name or key
            if check is not None:
                check()
        return self


async def run_predictor(settings: Settings, bootstrap: str, stop: asyncio.Event, serving: ServingModel) -> None:
    await serving.refresh()
    if not serving.ready.is_set():
        HEALTH.trouble("model", f"no promoted version of {settings.model_name} to serve yet")
        log.info("no promoted version of %s yet; waiting for an announcement", settings.model_name)
    await serving.ready.wait()
    HEALTH.fine("model")
    log.info("predictor ready with %s v%d", settings.model_name, serving.current.version)
    handler = PredictorHandler(settings, serving)
    await _run_stage("predictor", settings, bootstrap, handler, settings.topic_images, stop)


async def run_selector(settings: Settings, bootstrap: str, stop: asyncio.Event, instance: int = 1) -> None:
    res = Resources(settings).open()
    handler = SelectorHandler(settings, res.store, res.blobs, instance, fetcher=fetcher_from(settings, bootstrap))
    if await asyncio.to_thread(handler.restore):
        log.info("selector %d restored its budget: %d seen, %d spent", instance, handler.budget.seen_,
                 handler.budget.spent_)
    await _run_stage("selector", settings, bootstrap, handler, settings.topic_predictions, stop)


async def run_ingest(settings: Settings, bootstrap: str, stop: asyncio.Event) -> None:
    res = Resources(settings).open()
    handler = IngestHandler(settings, res.store, res.registry)
    await _run_stage("ingest", settings, bootstrap, handler, settings.topic_labels, stop)


async def run_learner(settings: Settings, bootstrap: str, stop: asyncio.Event) -> None:
    res = Resources(settings).open()
    eval_sets, eval_classes = _eval_sets(settings)
    learner = Learner(settings, res.store, res.blobs, res.registry, eval_sets=eval_sets, eval_classes=eval_classes)
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        # drift messages ask for early rounds; rounds go on whether or not any come
        await asyncio.gather(learner.run(producer, stop), _run_stage(
            "learner", settings, bootstrap, DriftHandler(settings, learner), settings.topic_drift, stop))
    finally:
        await producer.stop()


def _eval_sets(settings: Settings) -> tuple[dict, tuple[str, ...] | None]:
    """In simulation the dataset's test split measures every version (never trained on);
    with the dataset's class names, which the versions measured must have."""
    if not settings.simulate:
        return {}, None
    from activestream.simulation.datasets import load_dataset

    ds = load_dataset(settings.dataset, settings.data_dir)
    return {"test": (ds.test_x, ds.test_y)}, tuple(ds.classes)


async def _run_stage(name: str, settings: Settings, bootstrap: str, handler, topic: str, stop: asyncio.Event) -> None:
    consumer = make_consumer(settings, bootstrap, settings.group(name))
    consumer.subscribe([topic], listener=Assignment(name, [topic]))
    producer = make_producer(bootstrap)
    await producer.start()
    await consumer.start()
    try:
        stage = BatchStage(name, consumer, producer, handler, settings.batch_size, settings.batch_wait_ms)
        # Everything built so far (torch, faust, the model: some 400,000 objects) lives as
        # long as the worker; frozen, a full collection skips it instead of scanning it
        # for 0.2 s every few tens of thousands of messages.
        gc.freeze()
        HEALTH.started()
        await stage.run(stop)
    finally:
        await consumer.stop()
        await producer.stop()
        if getattr(handler, "fetcher", None) is not None:
            await handler.fetcher.close()


MAINS = {"predictor": run_predictor, "selector": run_selector, "ingest": run_ingest, "learner": run_learner}


def build_app(name: str, settings: Settings, bootstrap: str, owner: int | None = None, port: int = 0,
              instance: int = 1) -> faust.App:
    # The predictor's faust consumer reads model.versions as a broadcast: every
    # instance needs every announcement, so each process has a group of its own.
    app_id = f"{settings.group_prefix}-{name}" + (f"-{uuid.uuid4().hex[:12]}" if name == "predictor" else "")
    # faust keeps a data folder even with memory stores; by default it lands in the
    # current directory, where it has no business: the home holds every worker's files.
    datadir = settings.home_path / "faust" / app_id
    datadir.mkdir(parents=True, exist_ok=True)  # faust makes only the last level
    app = faust.App(
        app_id, broker=";".join(f"kafka://{b}" for b in bootstrap.split(",")),
        datadir=str(datadir),
        store="memory://", web_enabled=False, value_serializer="raw", key_serializer="raw",
        topic_disable_leader=True, consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.broker_session_timeout, broker_heartbeat_interval=0.5,
        broker_rebalance_timeout=max(5.0, settings.broker_session_timeout),
    )
    stop = asyncio.Event()
    if name == "predictor":
        serving = ServingModel(Resources(settings).registry, settings.model_name, settings.device,
                               settings.forward_chunk)
        versions = app.topic(settings.topic_versions, value_serializer="raw")

        @app.agent(versions)
        async def hot_swap(stream) -> None:
            async for value in stream:
                await serving.refresh(_announced_version(value))

        main_args = (serving,)
    else:
        # These workers consume only through batch stages: faust runs their lifecycle
        # and timers, with no faust consumer or producer of its own.
        app.boot_strategy = app.BootStrategy(app, enable_kafka=False)
        main_args = (instance,) if name == "selector" else ()

    @app.task
    async def main() -> None:
        probes = await health.serve(settings.metrics_host, port)
        try:
            await MAINS[name](settings, bootstrap, stop, *main_args)
        finally:
            if probes is not None:
                await probes.cleanup()

    if owner is not None:
        @app.timer(interval=1.0)
        async def watch_owner() -> None:
            # A worker never outlives the `activestream run` that started it.
            if orphaned(owner):
                log.error("owner process %d is gone; stopping", owner)
                os.kill(os.getpid(), signal.SIGTERM)

    return app


def _announced_version(value: bytes) -> int | None:
    try:
        return parse(ModelVersionV1, value).version
    except InvalidInput as e:
        # A broadcast topic has no single owner to dead-letter it: count and log.
        metrics.DEAD.labels("predictor", e.kind).inc()
        log.warning("ignoring invalid model.versions record: %s", e)
        return None


def run_worker(name: str, settings: Settings, instance: int = 1, owner: int | None = None) -> None:
    """Run one worker until it is stopped; with ``owner`` (the PID of the process that
    started it), also stop once that process is gone, even if it died before we started."""
    if name not in MAINS:
        raise ConfigError(f"unknown worker {name!r}; choose one of {', '.join(WORKERS)}")
    if instance < 1 or (instance > 1 and name not in SCALED):
        raise ConfigError(f"instance {instance} of {name}: only the {', '.join(SCALED)} run as several processes, "
                          "numbered from 1")
    if not settings.bootstrap:
        raise ConfigError("a worker needs ACTIVESTREAM_BOOTSTRAP (`activestream run` sets it for the embedded broker)")
    # uvloop's event loop costs less CPU per fetch, produce and commit than asyncio's,
    # and a predictor shares its cores with the model; it must be chosen before faust
    # creates the loop.
    mode.loop.use("uvloop")
    threads = settings.learner_threads if name == "learner" else settings.threads
    if threads:
        torch.set_num_threads(threads)
    ensure_topics(settings, settings.bootstrap)
    port = settings.metrics_port and settings.metrics_port + port_offset(settings, name, instance)
    app = build_app(name, settings, settings.bootstrap, owner, port, instance)
    faust.Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
