"""Serving throughput: the model's raw batched forward pass against the whole path
through the broker (images produced -> predictor -> predictions), in one run.

    python benchmarks/serving.py [--images 40000] [--rounds 5] [--dataset fashion-mnist] [--predictors N --threads T]
    python benchmarks/serving.py --photos [--cases 640x480,224x224,32x32] [--arch mobilenet_v3_small]

``--photos`` runs the real-size cases instead (JPEG photos into a torchvision model; see
``benchmarks/serving_photos.py``).

The machine is shared, and its speed drifts by a factor of two over minutes, so the run
is a series of paired rounds: each round measures the raw forward pass just before and
just after its end-to-end phases, and its ratios divide by that round's raw figure.
The summary gives the median of each figure over the rounds, and the ratios' range.

- raw: the served model alone, in this process with torch's default threads (all cores),
  on decoded images; the best pass, in chunks of ``ACTIVESTREAM_FORWARD_CHUNK`` or in
  whole batches, whichever was faster.
- apart: the same model alone in the predictors' layout (one process of one torch
  thread per predictor, passes started together, after the round's end-to-end phases):
  against it, a ratio shows what the streaming path itself costs.
- backlog: the predictors drain images already on the topic: their capacity, counted
  from the first 10% of predictions to the first 90%, so neither their start (model
  load, group join) nor the tail counts.
- live: the load generator and the predictors run at once on the same machine: it
  offers images at 1.25 times the round's backlog rate, paced over the phase, and the
  predictors' rate is counted as for the backlog.

An image counts as predicted once a predictor has committed its offset, which it does
only after its prediction is on the broker (see ``Predicted``); after the phases every
image's prediction is read back from the topic.

By default one predictor process per core, each with one torch thread, share the images
partitions (``ACTIVESTREAM_PREDICTORS`` and ``ACTIVESTREAM_THREADS`` in a deployment).
Each round uses topics of its own, so every backlog starts full.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import median

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from aiokafka.partitioner import DefaultPartitioner  # noqa: E402
from aiokafka.structs import TopicPartition  # noqa: E402

from activestream.config import Settings  # noqa: E402
from activestream.learners.classifier import Classifier, state_arrays  # noqa: E402
from activestream.learners.models import ModelSpec  # noqa: E402
from activestream.learners.training import TrainConfig  # noqa: E402
from activestream.simulation.datasets import load_dataset  # noqa: E402
from activestream.simulation.seed import bootstrap_seed  # noqa: E402
from activestream.simulation.traffic import split_seed, stream_items  # noqa: E402
from activestream.streams.cluster import LocalCluster  # noqa: E402
from activestream.streams.demo import image_message  # noqa: E402
from activestream.streams.learner import announce  # noqa: E402
from activestream.streams.serving import load_classifier  # noqa: E402
from activestream.streams.stage import make_consumer, make_producer, send_batches  # noqa: E402
from activestream.streams.topics import ensure_topics, topic_partitions  # noqa: E402
from activestream.streams.worker import Resources  # noqa: E402


def raw_throughput(clf, images: np.ndarray, batch: int, repeats: int = 3) -> float:
    """The best of ``repeats`` passes: a shared machine only ever slows a pass down."""
    clf.predict_proba(images[:batch])  # warm-up
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(0, len(images), batch):
            clf.predict_proba(images[i:i + batch])
        best = max(best, len(images) / (time.perf_counter() - started))
    return best


def _forward_process(spec: dict, arrays: dict, chunk: int, images: np.ndarray, batch: int, barrier,
                     repeats: int) -> list[tuple[float, float]]:
    torch.set_num_threads(1)
    clf = Classifier.from_arrays(ModelSpec.from_dict(spec), arrays, 1, chunk=chunk)
    clf.predict_proba(images[:batch])  # warm-up
    passes = []
    for _ in range(repeats):
        barrier.wait()
        started = time.monotonic()  # system-wide: comparable across processes
        for i in range(0, len(images), batch):
            clf.predict_proba(images[i:i + batch])
        passes.append((started, time.monotonic()))
    return passes


def raw_per_process(clf: Classifier, chunk: int, images: np.ndarray, batch: int, processes: int,
                    repeats: int = 3) -> float:
    """The model alone in the predictors' layout: ``processes`` processes of one torch
    thread, passes started together, counted from the first start to the last end."""
    spec, arrays = clf.spec.to_dict(), state_arrays(clf.model)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(processes, mp_context=ctx) as pool:
        barrier = manager.Barrier(processes)
        jobs = [pool.submit(_forward_process, spec, arrays, chunk, images, batch, barrier, repeats)
                for _ in range(processes)]
        runs = [job.result() for job in jobs]
    return max(processes * len(images) / (max(end for _, end in together) - min(start for start, _ in together))
               for together in zip(*runs))


async def produce(producer, topic: str, messages: list[tuple[bytes, bytes]], slice_size: int = 512,
                  rate: float | None = None) -> float:
    """Produce slice by slice, in record batches, to the partitions the keys hash to; with
    ``rate``, paced to that many messages a second (in slices of a twentieth of a second).

    Production images come from other machines; here the load generator shares the
    predictors' cores, so it builds batches rather than calling ``send`` per message.
    """
    partitions = sorted(await producer.partitions_for(topic))
    partitioner = DefaultPartitioner()
    targets = [partitioner(key, partitions, partitions) for key, _ in messages]  # before the clock starts
    if rate is not None:
        slice_size = max(1, int(rate / 20))
    started = time.perf_counter()
    futures = []
    for i in range(0, len(messages), slice_size):
        if rate is not None:
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        groups: dict[int, list] = {}
        for message, partition in zip(messages[i:i + slice_size], targets[i:i + slice_size]):
            groups.setdefault(partition, []).append(message)
        for partition, group in groups.items():
            futures.extend(await send_batches(producer, topic, partition, group))
    await asyncio.gather(*futures)
    return started


LIVE_OFFER = 1.25  # the live phase's offered rate, against the round's backlog rate


def partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(topic_partitions(settings)[topic])]


class Predicted:
    """Counts the images predicted by the predictors' committed offsets on ``images``
    (a predictor commits a batch once its predictions are on the broker), a few bytes a
    poll, rather than by fetching every prediction: the measurement shares the
    predictors' cores, and reading every prediction took the benchmark's process about
    0.06 of a core at 5,000 images/s, besides the broker's work serving it. (The
    broker's end offsets cannot serve: Tansu answers them wrongly.) :func:`verify` reads
    the predictions once the phases are over."""

    def __init__(self, settings: Settings):
        self.group = settings.group("predictor")
        self.partitions = partitions(settings, settings.topic_images)
        self.admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)

    async def __aenter__(self) -> "Predicted":
        await self.admin.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.admin.close()

    async def count(self) -> int:
        offsets = await self.admin.list_consumer_group_offsets(self.group, partitions=self.partitions)
        return sum(max(0, meta.offset) for meta in offsets.values())

    async def until(self, count: int) -> list[tuple[float, int]]:
        """Poll every 20 ms until ``count`` images are predicted; (time, count) per poll."""
        arrivals = [(time.perf_counter(), await self.count())]
        while arrivals[-1][1] < count:
            await asyncio.sleep(0.02)
            arrivals.append((time.perf_counter(), await self.count()))
        return arrivals


async def verify(settings: Settings, ids: set[bytes], patience: float = 30.0) -> int:
    """Read every prediction once; raise unless each of ``ids`` was predicted; return how
    many were predicted more than once (a rebalance redelivers a batch whose commit it
    interrupted; the rates count each image once, by its committed offset)."""
    consumer = make_consumer(settings, settings.bootstrap, None)
    await consumer.start()
    try:
        consumer.assign(partitions(settings, settings.topic_predictions))
        seen: Counter = Counter()
        last_new = time.monotonic()
        while time.monotonic() - last_new < (1.0 if ids <= seen.keys() else patience):
            for records in (await consumer.getmany(timeout_ms=200, max_records=10000)).values():
                seen.update(r.key for r in records)  # the key is the image id
                last_new = time.monotonic()
    finally:
        await consumer.stop()
    missing = len(ids - seen.keys())
    if missing:
        raise SystemExit(f"{missing} of {len(ids)} images have no prediction on {settings.topic_predictions}")
    return sum(n - 1 for n in seen.values())


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


async def end_to_end(settings: Settings, messages: dict[str, list], seed_meta) -> dict[str, float]:
    """One round's backlog and live phases, with predictors started for the round."""
    ensure_topics(settings, settings.bootstrap)
    producer = make_producer(settings.bootstrap)
    await producer.start()
    try:
        async with Predicted(settings) as predicted:
            await produce(producer, settings.topic_images, messages["backlog"])
            await announce(producer, settings.topic_versions, seed_meta)
            waiter = asyncio.ensure_future(predicted.until(len(messages["backlog"])))
            cluster = LocalCluster(settings, ("predictor",))
            cluster.start()
            try:
                backlog = steady_rate(await waiter)
                await asyncio.sleep(0.5)
                base = await predicted.count()
                waiter = asyncio.ensure_future(predicted.until(base + len(messages["live"])))
                # offered faster than the backlog drained: the predictors take all they can
                # while the generator sends, not a burst that is over before they start
                await produce(producer, settings.topic_images, messages["live"], rate=LIVE_OFFER * backlog)
                live = steady_rate([(t, n - base) for t, n in await waiter])
            finally:
                cluster.stop()
    finally:
        await producer.stop()
    twice = await verify(settings, {key for phase in messages.values() for key, _ in phase})
    return {"backlog": backlog, "live": live, "twice": twice}


def twice(e2e: dict) -> str:
    return f" ({e2e['twice']} predicted twice: a rebalance redelivered them)" if e2e["twice"] else ""


def best_raw(classifiers: list, images: np.ndarray, batch: int) -> float:
    return max(raw_throughput(clf, images, batch) for clf in classifiers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=40000, help="images per phase (backlog, then live) of a round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dataset", default="auto")
    ap.add_argument("--batch-size", type=int, default=None, help="micro-batch (default 256; with --photos, each case's)")
    ap.add_argument("--predictors", type=int, default=os.cpu_count() or 1, help="predictor processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each predictor (0: torch's default)")
    ap.add_argument("--photos", action="store_true", help="the real-size cases: JPEG photos into a torchvision model")
    ap.add_argument("--cases", default="640x480,224x224,32x32", help="real-size cases to run, comma-separated")
    ap.add_argument("--arch", default="mobilenet_v3_small", help="torchvision classifier of the real-size cases")
    ap.add_argument("--photo-images", type=int, default=None, help="JPEGs a backlog in every real-size case "
                    "(default: each case's, a backlog of several seconds)")
    args = ap.parse_args()
    if args.photos:
        import serving_photos

        args.cases = args.cases.split(",")
        return serving_photos.run(args, end_to_end, twice)
    args.batch_size = args.batch_size or 256
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=home, dataset=args.dataset, batch_size=args.batch_size, log_level="warning",
                            threads=args.threads, predictors=args.predictors)
        ds = load_dataset(settings.dataset, settings.data_dir)
        res = Resources(settings).open()
        seed_idx, stream_idx = split_seed(ds, 300)
        meta = bootstrap_seed(ds, seed_idx, store=res.store, blobs=res.blobs, registry=res.registry,
                              name=settings.model_name, config=TrainConfig(epochs=2))
        served = [load_classifier(res.registry, settings.model_name, meta.version, chunk=chunk)
                  for chunk in {settings.forward_chunk, 0}]
        items = list(stream_items(ds, stream_idx, 2 * args.images))
        raw_images = np.stack([ds.train_x[int(i)] for i in stream_idx[:min(args.images, 20000)]])
        messages = {
            "backlog": [(it.id.encode(), image_message(it)) for it in items[:args.images]],
            "live": [(it.id.encode() + b"-live", image_message(it).replace(it.id.encode(), it.id.encode() + b"-live"))
                     for it in items[args.images:]],
        }
        cluster = LocalCluster(settings, ())
        settings = cluster.start()
        rounds = []
        try:
            for k in range(args.rounds):
                own = settings.model_copy(update={"topic_images": f"images.{k}", "topic_predictions": f"predictions.{k}",
                                                  "group_prefix": f"bench{k}"})
                before = best_raw(served, raw_images, args.batch_size)
                e2e = asyncio.run(end_to_end(own, messages, meta))
                raw = max(before, best_raw(served, raw_images, args.batch_size))
                apart = raw_per_process(served[0], settings.forward_chunk, raw_images, args.batch_size, args.predictors)
                rounds.append({"raw": raw, "apart": apart, **e2e})
                print(f"round {k + 1}: raw {raw:.0f} (apart {apart:.0f}), backlog {e2e['backlog']:.0f} "
                      f"({e2e['backlog'] / raw:.2f}, {e2e['backlog'] / apart:.2f}), live {e2e['live']:.0f} "
                      f"({e2e['live'] / raw:.2f}, {e2e['live'] / apart:.2f}) images/s{twice(e2e)}", flush=True)
        finally:
            cluster.stop()
    print(f"dataset {ds.name}, {args.images} images a phase, {args.rounds} rounds, batch {args.batch_size}, "
          f"forward chunk {settings.forward_chunk}; raw: torch threads {torch.get_num_threads()}; "
          f"end-to-end: {args.predictors} predictor(s) x {args.threads or 'default'} thread(s)")
    print(f"median of {len(rounds)} rounds (range):")
    print(f"raw batched forward      {median(r['raw'] for r in rounds):10.0f} images/s")
    print(f"raw, {args.predictors} x 1 thread apart {median(r['apart'] for r in rounds):10.0f} images/s "
          f"(the predictors' layout, forward passes only)")
    for name in ("backlog", "live"):
        ratios = sorted(r[name] / r["raw"] for r in rounds)
        apart = sorted(r[name] / r["apart"] for r in rounds)
        print(f"end-to-end ({name:7s})   {median(r[name] for r in rounds):10.0f} images/s   ratio {median(ratios):.2f} "
              f"({ratios[0]:.2f}-{ratios[-1]:.2f}); to the layout apart {median(apart):.2f} ({apart[0]:.2f}-{apart[-1]:.2f})")

if __name__ == "__main__":
    main()
