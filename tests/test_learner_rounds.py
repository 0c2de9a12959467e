"""The learner trains only when something usable is new, never on nothing, and announces
the version in force when it starts."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from activestream.learners.preprocess import encode_png
from activestream.learners.training import TrainConfig
from activestream.simulation.seed import bootstrap_seed
from activestream.simulation.traffic import split_seed
from activestream.storage.store import Label, Sample
from activestream.streams.learner import Learner
from activestream.streams.messages import ModelVersionV1, parse
from activestream.streams.stage import make_consumer, make_producer
from activestream.streams.topics import ensure_topics
from activestream.streams.worker import Resources
from tests.conftest import make_settings, run_async


@pytest.fixture
def seeded(tmp_path, digits):
    settings = make_settings(tmp_path, dataset="digits", retrain_every=20)
    res = Resources(settings).open()
    seed_idx, stream_idx = split_seed(digits, 60)
    bootstrap_seed(digits, seed_idx, store=res.store, blobs=res.blobs, registry=res.registry,
                   name=settings.model_name, config=TrainConfig(epochs=1))
    return settings, res, stream_idx


def test_labels_for_ids_never_stored_do_not_call_for_a_round(seeded):
    settings, res, _ = seeded
    res.store.add_labels(Label(f"never-stored-{i}", 1, "ann") for i in range(100))
    assert not Learner(settings, res.store, res.blobs, res.registry).due()


def test_labels_whose_images_do_not_decode_train_nothing_and_stop_calling_for_rounds(seeded):
    settings, res, _ = seeded
    for i in range(40):
        res.blobs.put(f"bad-{i}", b"not an image")
    res.store.add_samples(Sample(f"bad-{i}", blob_key=f"bad-{i}") for i in range(40))
    res.store.add_labels(Label(f"bad-{i}", 1, "ann") for i in range(40))
    learner = Learner(settings, res.store, res.blobs, res.registry)
    assert learner.due()
    assert learner.train_round() is None
    assert not learner.due()
    assert [v.version for v in res.registry.versions(settings.model_name)] == [1]


def test_skipped_images_are_recorded_so_a_restarted_learner_does_not_train_again(seeded, digits):
    settings, res, stream_idx = seeded
    good = stream_idx[:25]
    for i in good:
        res.blobs.put(f"ok-{i}", encode_png(digits.train_x[i]))
    res.blobs.put("bad-0", b"not an image")
    res.store.add_samples([Sample(f"ok-{i}", blob_key=f"ok-{i}") for i in good] + [Sample("bad-0", blob_key="bad-0")])
    res.store.add_labels([Label(f"ok-{i}", int(digits.train_y[i]), "ann") for i in good] + [Label("bad-0", 1, "ann")])
    learner = Learner(settings, res.store, res.blobs, res.registry)
    meta = learner.train_round()
    assert meta.version == 2 and meta.metrics["skipped_samples"] == 1
    assert not Learner(settings, res.store, res.blobs, res.registry).due()


def test_an_empty_training_set_is_no_round(tmp_path, digits):
    settings = make_settings(tmp_path, dataset="digits", retrain_every=1)
    res = Resources(settings).open()
    seed_idx, _ = split_seed(digits, 30)
    seed = bootstrap_seed(digits, seed_idx, store=res.store, blobs=res.blobs, registry=res.registry,
                          name=settings.model_name, config=TrainConfig(epochs=1))
    for _, blob_key, _ in res.store.training_set():
        res.blobs.path(blob_key).unlink()
    res.store.add_samples([Sample("gone", blob_key="gone")])
    res.store.add_labels([Label("gone", 1, "ann")])
    learner = Learner(settings, res.store, res.blobs, res.registry)
    assert learner.train_round() is None
    assert res.registry.latest(settings.model_name, None).version == seed.version


@pytest.mark.kafka
def test_a_starting_learner_announces_the_version_in_force(seeded, broker):
    settings, res, _ = seeded
    settings = settings.model_copy(update={"bootstrap": broker.bootstrap})
    arrays, fields = _weights_of(res, settings)
    promoted = res.registry.register(settings.model_name, arrays, **fields, status="promoted")
    run_async(_announced_at_start(settings, res, promoted.version), timeout=120)


def _weights_of(res, settings):
    arrays, meta = res.registry.load(settings.model_name, 1)
    return arrays, {"spec": meta.spec, "parent": 1, "train_size": meta.train_size, "metrics": {}}


async def _announced_at_start(settings, res, version: int) -> None:
    ensure_topics(settings, settings.bootstrap)
    producer = make_producer(settings.bootstrap)
    await producer.start()
    stop = asyncio.Event()
    task = asyncio.ensure_future(Learner(settings, res.store, res.blobs, res.registry).run(producer, stop))
    consumer = make_consumer(settings, settings.bootstrap, None, settings.topic_versions)
    await consumer.start()
    try:
        announced = []
        while not announced:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=200), 60)
            announced += [parse(ModelVersionV1, r.value).version for part in batch.values() for r in part]
        assert announced == [version]
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await consumer.stop()
        await producer.stop()


def test_the_demo_test_split_measures_only_models_of_its_classes(tmp_path):
    from activestream.learners.models import ModelSpec

    sets = {"test": (np.zeros((2, 8, 8), np.uint8), np.zeros(2, np.int64))}
    res = Resources(make_settings(tmp_path))
    learner = Learner(make_settings(tmp_path), res.store, res.blobs, res.registry, eval_sets=sets,
                      eval_classes=tuple("0123456789"))
    digits = ModelSpec(arch="small_cnn", classes=tuple("0123456789"), channels=1, height=8, width=8)
    photos = ModelSpec(arch="small_cnn", classes=("cat", "dog"), channels=3, height=32, width=32)
    assert learner._eval_sets_for(digits) is sets
    assert learner._eval_sets_for(photos) == {}
