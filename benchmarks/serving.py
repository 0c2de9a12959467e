"""Serving throughput: the model's raw batched forward pass against the whole path
through the broker (images produced -> predictor -> predictions), in one run.

    python benchmarks/serving.py [--images 40000] [--dataset fashion-mnist] [--predictors N --threads T]

Prints both throughputs and their ratio. Two end-to-end figures are measured:
``backlog`` (the predictors drain images already on the topic: their capacity, counted
from the first 10% of predictions to the first 90%, so neither their start nor the tail
counts) and ``live`` (producer and predictors run at once on the same machine, from the first
image produced to the last prediction received). By default one predictor process per
core, each with one torch thread, share the images partitions (``ACTIVESTREAM_PREDICTORS``
and ``ACTIVESTREAM_THREADS`` in a deployment); the raw figure is the model alone with
torch's default threads, all cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from activestream.config import Settings  # noqa: E402
from activestream.learners.training import TrainConfig  # noqa: E402
from activestream.simulation.datasets import load_dataset  # noqa: E402
from activestream.simulation.seed import bootstrap_seed  # noqa: E402
from activestream.simulation.traffic import split_seed, stream_items  # noqa: E402
from activestream.streams.cluster import LocalCluster  # noqa: E402
from activestream.streams.demo import image_message  # noqa: E402
from activestream.streams.learner import announce  # noqa: E402
from activestream.streams.serving import load_classifier  # noqa: E402
from activestream.streams.stage import make_consumer, make_producer  # noqa: E402
from activestream.streams.worker import Resources  # noqa: E402


def raw_throughput(clf, images: np.ndarray, batch: int, repeats: int = 5) -> float:
    """The best of ``repeats`` passes: a shared machine only ever slows a pass down."""
    clf.predict_proba(images[:batch])  # warm-up
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(0, len(images), batch):
            clf.predict_proba(images[i:i + batch])
        best = max(best, len(images) / (time.perf_counter() - started))
    return best


async def produce(producer, topic: str, messages: list[tuple[bytes, bytes]]) -> float:
    started = time.perf_counter()
    futures = [await producer.send(topic, value, key=key) for key, value in messages]
    await asyncio.gather(*futures)
    return started


async def collect(settings: Settings, count: int, group: str) -> list[tuple[float, int]]:
    """Wait for ``count`` predictions; return (arrival time, predictions so far) per fetch."""
    consumer = make_consumer(settings, settings.bootstrap, group, settings.topic_predictions)
    await consumer.start()
    seen, arrivals = set(), []
    try:
        while len(seen) < count:
            for records in (await consumer.getmany(timeout_ms=100, max_records=10000)).values():
                seen.update(r.key for r in records)  # the key is the image id: no JSON parsing here
                arrivals.append((time.perf_counter(), len(seen)))
        return arrivals
    finally:
        await consumer.stop()


def steady_rate(arrivals: list[tuple[float, int]], low: float = 0.1, high: float = 0.9) -> float:
    """Predictions per second between the arrival of the first ``low`` and ``high`` shares:
    the drain rate, without the predictors' start (model load, group join) or the tail.

    >>> steady_rate([(0.0, 10), (1.0, 100), (2.0, 900), (9.0, 1000)])
    800.0
    """
    total = arrivals[-1][1]
    t0, n0 = next((t, n) for t, n in arrivals if n >= low * total)
    t1, n1 = next((t, n) for t, n in arrivals if n >= high * total)
    return (n1 - n0) / (t1 - t0)


async def end_to_end(settings: Settings, messages: dict[str, list], res: Resources, seed_meta) -> dict[str, float]:
    producer = make_producer(settings.bootstrap)
    await producer.start()
    try:
        # backlog: images already on the topic before the predictor starts
        await produce(producer, settings.topic_images, messages["backlog"])
        await announce(producer, settings.topic_versions, seed_meta)
        waiter = asyncio.ensure_future(collect(settings, len(messages["backlog"]), "bench-backlog"))
        cluster = LocalCluster(settings, ("predictor",))
        cluster.start()
        try:
            backlog = steady_rate(await waiter)
            waiter = asyncio.ensure_future(collect(settings, len(messages["backlog"]) + len(messages["live"]), "bench-live"))
            await asyncio.sleep(0.5)
            started = await produce(producer, settings.topic_images, messages["live"])
            last, _ = (await waiter)[-1]
            live = len(messages["live"]) / (last - started)
        finally:
            cluster.stop()
    finally:
        await producer.stop()
    return {"backlog": backlog, "live": live}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=40000, help="images per phase (backlog, then live)")
    ap.add_argument("--dataset", default="auto")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--predictors", type=int, default=os.cpu_count() or 1, help="predictor processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each predictor (0: torch's default)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=home, dataset=args.dataset, batch_size=args.batch_size, log_level="warning",
                            threads=args.threads, predictors=args.predictors)
        ds = load_dataset(settings.dataset, settings.data_dir)
        res = Resources(settings).open()
        seed_idx, stream_idx = split_seed(ds, 300)
        meta = bootstrap_seed(ds, seed_idx, store=res.store, blobs=res.blobs, registry=res.registry,
                              name=settings.model_name, config=TrainConfig(epochs=2))
        clf = load_classifier(res.registry, settings.model_name, meta.version)
        items = list(stream_items(ds, stream_idx, 2 * args.images))
        raw_images = np.stack([ds.train_x[int(i)] for i in stream_idx[:args.images]])
        raw = raw_throughput(clf, raw_images, args.batch_size)
        messages = {
            "backlog": [(it.id.encode(), image_message(it)) for it in items[:args.images]],
            "live": [(it.id.encode() + b"-live", image_message(it).replace(it.id.encode(), it.id.encode() + b"-live"))
                     for it in items[args.images:]],
        }
        cluster = LocalCluster(settings, ())
        settings = cluster.start()
        try:
            e2e = asyncio.run(end_to_end(settings, messages, res, meta))
        finally:
            cluster.stop()
        raw = max(raw, raw_throughput(clf, raw_images, args.batch_size))  # again, now that the machine is quiet
    print(f"dataset {ds.name}, {args.images} images, batch {args.batch_size}; raw: torch threads "
          f"{torch.get_num_threads()}; end-to-end: {args.predictors} predictor(s) x {args.threads or 'default'} thread(s)")
    print(f"raw batched forward      {raw:10.0f} images/s")
    for name, value in e2e.items():
        print(f"end-to-end ({name:7s})   {value:10.0f} images/s   ratio {value / raw:.2f}")


if __name__ == "__main__":
    main()
