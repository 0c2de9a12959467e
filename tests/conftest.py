"""Shared fixtures: settings in a temp folder, the embedded broker, PostgreSQL, datasets."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from activestream.config import Settings, default_data_dir
from activestream.simulation.datasets import load_dataset

PG_ADMIN_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"

POSTGRES_ADMIN_URL = os.environ.get("ACTIVESTREAM_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def make_settings(tmp_path, **overrides) -> Settings:
    base = dict(home=str(tmp_path / "home"), group_prefix=f"t{uuid.uuid4().hex[:8]}", data_dir=default_data_dir(),
                log_level="info", threads=1)
    return Settings(**{**base, **overrides})


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def fashion():
    data_dir = default_data_dir() or os.environ.get("ACTIVESTREAM_DATA_DIR")
    if not data_dir:
        pytest.skip("Fashion-MNIST not available: set ACTIVESTREAM_DATA_DIR")
    return load_dataset("fashion-mnist", data_dir)


@pytest.fixture
def broker():
    """A fresh embedded Tansu broker per test (it keeps everything in memory)."""
    from activestream.streams.broker import EmbeddedBroker

    with EmbeddedBroker() as b:
        yield b


def run_async(coro, timeout: float = 600):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Harness:
    """A seeded local deployment for end-to-end tests: broker, worker processes,
    a producer and an observer of every output topic."""

    def __init__(self, settings: Settings, dataset, workers=("predictor", "selector", "ingest", "learner"),
                 seed_size: int = 200, seeder=None):
        from activestream.streams.cluster import LocalCluster

        self.cluster = LocalCluster(settings, workers)
        self.dataset = dataset
        self.seed_size = seed_size
        self.seeder = seeder  # Resources -> the first version, when not trained on ``dataset``
        self.settings = settings

    async def __aenter__(self) -> "Harness":
        from activestream.learners.training import TrainConfig
        from activestream.simulation.seed import bootstrap_seed
        from activestream.simulation.traffic import split_seed
        from activestream.streams.learner import announce
        from activestream.streams.observer import Observer
        from activestream.streams.stage import make_producer
        from activestream.streams.worker import Resources

        self.settings = await asyncio.to_thread(self.cluster.start)
        self.res = Resources(self.settings).open()
        if self.seeder is not None:
            self.seed = await asyncio.to_thread(self.seeder, self.res)
        else:
            self.seed_idx, self.stream_idx = split_seed(self.dataset, self.seed_size)
            self.seed = await asyncio.to_thread(
                bootstrap_seed, self.dataset, self.seed_idx, store=self.res.store, blobs=self.res.blobs,
                registry=self.res.registry, name=self.settings.model_name, config=TrainConfig(epochs=5))
        self.producer = make_producer(self.settings.bootstrap)
        await self.producer.start()
        await announce(self.producer, self.settings.topic_versions, self.seed)
        self.stop = asyncio.Event()
        self.observer = Observer(self.settings, self.settings.bootstrap)
        self.observer_task = asyncio.ensure_future(self.observer.run(self.stop))
        return self

    async def __aexit__(self, *exc) -> None:
        self.stop.set()
        await asyncio.gather(self.observer_task, return_exceptions=True)
        await self.producer.stop()
        await asyncio.to_thread(self.cluster.stop)

    async def send(self, topic: str, value: bytes | None, key: bytes | None = None):
        return await self.producer.send(topic, value, key=key)

    async def wait_for(self, predicate, timeout: float = 120.0, what: str = "condition") -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if self.observer_task.done():
                self.observer_task.result()
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            await asyncio.sleep(0.2)


def pg_database():
    """Create a fresh PostgreSQL database; returns (url, drop) or skips the test."""
    name = f"activestream_l_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except OperationalError as e:
        admin.dispose()
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {e}")

    def drop():
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()

    return f"postgresql+psycopg://root@127.0.0.1:5432/{name}", drop


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    """A store URL on each backend: a SQLite file, or a fresh PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url, drop = pg_database()
    yield url
    drop()
