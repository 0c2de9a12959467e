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

from activestream.config import Settings
from activestream.errors import ConfigError, InvalidInput
from activestream.storage.blobs import BlobStore
from activestream.storage.registry import ModelRegistry
from activestream.storage.store import SampleStore
from activestream.streams import metrics
from activestream.streams.ingest import IngestHandler
from activestream.streams.learner import Learner
from activestream.streams.predictor import PredictorHandler
from activestream.streams.selector import SelectorHandler
from activestream.streams.serving import ServingModel
from activestream.streams.messages import ModelVersionV1, parse
from activestream.streams.stage import BatchStage, make_consumer, make_producer
from activestream.streams.topics import ensure_topics

log = logging.getLogger(__name__)
WORKERS = ("predictor", "selector", "ingest", "learner")


class Resources:
    """The store, blobs and registry of one worker, under ``settings.home``."""

    def __init__(self, settings: Settings):
        home = settings.home_path
        self.store = SampleStore(settings.store)
        self.blobs = BlobStore(home / "blobs")
        self.registry = ModelRegistry(home / "models")

    def open(self) -> "Resources":
        self.store.create_schema()
        return self


async def run_predictor(settings: Settings, bootstrap: str, stop: asyncio.Event, serving: ServingModel) -> None:
    await serving.refresh()
    if not serving.ready.is_set():
        log.info("no promoted version of %s yet; waiting for an announcement", settings.model_name)
    await serving.ready.wait()
    log.info("predictor ready with %s v%d", settings.model_name, serving.current.version)
    handler = PredictorHandler(settings, serving)
    await _run_stage("predictor", settings, bootstrap, handler, settings.topic_images, stop)


async def run_selector(settings: Settings, bootstrap: str, stop: asyncio.Event) -> None:
    res = Resources(settings).open()
    handler = SelectorHandler(settings, res.store, res.blobs)
    await _run_stage("selector", settings, bootstrap, handler, settings.topic_predictions, stop)


async def run_ingest(settings: Settings, bootstrap: str, stop: asyncio.Event) -> None:
    res = Resources(settings).open()
    handler = IngestHandler(settings, res.store, res.registry)
    await _run_stage("ingest", settings, bootstrap, handler, settings.topic_labels, stop)


async def run_learner(settings: Settings, bootstrap: str, stop: asyncio.Event) -> None:
    res = Resources(settings).open()
    learner = Learner(settings, res.store, res.blobs, res.registry, eval_sets=_eval_sets(settings))
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        await learner.run(producer, stop)
    finally:
        await producer.stop()


def _eval_sets(settings: Settings) -> dict:
    """In simulation the dataset's test split measures every version (never trained on)."""
    if not settings.simulate:
        return {}
    from activestream.simulation.datasets import load_dataset

    ds = load_dataset(settings.dataset, settings.data_dir)
    return {"test": (ds.test_x, ds.test_y)}


async def _run_stage(name: str, settings: Settings, bootstrap: str, handler, topic: str, stop: asyncio.Event) -> None:
    consumer = make_consumer(settings, bootstrap, settings.group(name), topic)
    producer = make_producer(bootstrap)
    await producer.start()
    await consumer.start()
    try:
        stage = BatchStage(name, consumer, producer, handler, settings.batch_size, settings.batch_wait_ms)
        # Everything built so far (torch, faust, the model: some 400,000 objects) lives as
        # long as the worker; frozen, a full collection skips it instead of scanning it
        # for 0.2 s every few tens of thousands of messages.
        gc.freeze()
        await stage.run(stop)
    finally:
        await consumer.stop()
        await producer.stop()


MAINS = {"predictor": run_predictor, "selector": run_selector, "ingest": run_ingest, "learner": run_learner}


def build_app(name: str, settings: Settings, bootstrap: str) -> faust.App:
    # The predictor's faust consumer reads model.versions as a broadcast: every
    # instance needs every announcement, so each process has a group of its own.
    app_id = f"{settings.group_prefix}-{name}" + (f"-{uuid.uuid4().hex[:12]}" if name == "predictor" else "")
    app = faust.App(
        app_id, broker=";".join(f"kafka://{b}" for b in bootstrap.split(",")),
        store="memory://", web_enabled=False, value_serializer="raw", key_serializer="raw",
        topic_disable_leader=True, consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.broker_session_timeout, broker_heartbeat_interval=0.5,
        broker_rebalance_timeout=max(5.0, settings.broker_session_timeout),
    )
    stop = asyncio.Event()
    parent = os.getppid()
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
        main_args = ()

    @app.task
    async def main() -> None:
        await MAINS[name](settings, bootstrap, stop, *main_args)

    @app.timer(interval=1.0)
    async def watch_parent() -> None:
        # A worker never outlives the `activestream run` that started it.
        if os.getppid() != parent:
            log.error("parent process %d is gone; stopping", parent)
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


def run_worker(name: str, settings: Settings, instance: int = 1) -> None:
    if name not in MAINS:
        raise ConfigError(f"unknown worker {name!r}; choose one of {', '.join(WORKERS)}")
    if instance < 1 or (instance > 1 and name != "predictor"):
        raise ConfigError(f"instance {instance} of {name}: only the predictor runs as several processes, numbered from 1")
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
    # Extra predictor processes take the ports after the last worker's.
    offset = WORKERS.index(name) if instance == 1 else len(WORKERS) + instance - 2
    port = settings.metrics_port and settings.metrics_port + offset
    metrics.serve_metrics(port)
    app = build_app(name, settings, settings.bootstrap)
    faust.Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
