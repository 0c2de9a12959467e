"""Serving at real sizes: JPEG photos through the predictor worker on the embedded broker,
against the same decode, resize and forward pass run in-process on the same cores, in one run.

    python benchmarks/serving.py --photos [--cases 640x480,224x224,32x32] [--arch mobilenet_v3_small] [--rounds 3]

Cases: 640x480 and 224x224 JPEGs into a torchvision model at 224 (shorter side, then
centre crop), in micro-batches of 32, and CIFAR-sized 32x32 JPEGs into the same
architecture at 32, in micro-batches of 256. The model has random weights
(``torchvision.models.get_model(arch, weights=None)``): speed does not depend on what it
learned. Each case's backlog lasts several seconds on two cores (3,000 large photos,
40,000 small ones; ``--photo-images`` and ``--batch-size`` set every case's), so its rate
is not the predictors' start: one may join its group a second after the other. Each
round measures, per case:

- in-process: the predictors' layout without the streaming path, one process of one torch
  thread per predictor, each parsing its share of the same messages, decoding and resizing
  them by batches (``decode_batch``) and running the forward pass; counted from the first
  start to the last end;
- backlog: the predictor processes drain the same messages from a full ``images`` topic,
  counted from the first 10% of predictions to the first 90% (as in ``serving.py``);
- live: half as many more, offered while the predictors run at 1.25 times the round's
  backlog rate (as in ``serving.py``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from statistics import median

import torch

from images import jpegs

from activestream.config import Settings
from activestream.learners.classifier import Classifier, state_arrays
from activestream.learners.models import ModelSpec
from activestream.learners.preprocess import decode_batch
from activestream.streams.cluster import LocalCluster
from activestream.streams.messages import ImageV1, parse
from activestream.streams.worker import Resources

# width, height, model side, JPEGs a backlog, micro-batch
CASES = {"640x480": (640, 480, 224, 3000, 32), "224x224": (224, 224, 224, 3000, 32), "32x32": (32, 32, 32, 40000, 256)}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
UNIQUE = 200  # distinct JPEGs a case cycles through


def messages(width: int, height: int, count: int, case: str) -> list[tuple[bytes, bytes]]:
    blobs = [base64.b64encode(b).decode() for b in jpegs(width, height, min(UNIQUE, count))]
    return [(f"{case}-{i}".encode(), json.dumps({"v": 1, "id": f"{case}-{i}", "ts": time.time(), "source": "bench",
                                                 "image": blobs[i % len(blobs)]}).encode()) for i in range(count)]


def _in_process(spec: dict, arrays: dict, chunk: int, values: list[bytes], batch: int, barrier) -> tuple[float, float]:
    torch.set_num_threads(1)
    clf = Classifier.from_arrays(ModelSpec.from_dict(spec), arrays, 1, chunk=chunk)
    clf.predict_proba(decode_batch([parse(ImageV1, v).image_bytes() for v in values[:batch]], clf.spec)[0])  # warm-up
    barrier.wait()
    started = time.monotonic()  # system-wide: comparable across processes
    for i in range(0, len(values), batch):
        images, _ = decode_batch([parse(ImageV1, v).image_bytes() for v in values[i:i + batch]], clf.spec)
        clf.predict_proba(images)
    return started, time.monotonic()


def in_process(clf: Classifier, chunk: int, values: list[bytes], batch: int, processes: int) -> float:
    """Images/s of ``processes`` processes of one torch thread, each on its share of ``values``."""
    spec, arrays = clf.spec.to_dict(), state_arrays(clf.model)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(processes, mp_context=ctx) as pool:
        barrier = manager.Barrier(processes)
        jobs = [pool.submit(_in_process, spec, arrays, chunk, values[k::processes], batch, barrier)
                for k in range(processes)]
        spans = [job.result() for job in jobs]
    return len(values) / (max(end for _, end in spans) - min(start for start, _ in spans))


def run(args, end_to_end, twice) -> None:
    """``end_to_end``: serving.py's round (settings, messages, meta) -> {"backlog", "live", "twice"};
    ``twice``: its note on images predicted more than once."""
    with __import__("tempfile").TemporaryDirectory() as home:
        settings = Settings(home=home, log_level="warning", threads=args.threads, predictors=args.predictors)
        registry = Resources(settings).open().registry
        cluster = LocalCluster(settings, ())
        settings = cluster.start()
        results: dict[str, list] = {case: [] for case in args.cases}
        try:
            for case in args.cases:
                width, height, side, count, batch = CASES[case]
                count, batch = args.photo_images or count, args.batch_size or batch
                spec = ModelSpec(args.arch, tuple(f"c{k}" for k in range(10)), 3, side, side, *IMAGENET)
                clf = Classifier.fresh(spec)
                meta = registry.register(case.replace("x", "by"), state_arrays(clf.model), spec=spec.to_dict(),
                                         parent=None, train_size=0, metrics={}, status="promoted")
                sent = {"backlog": messages(width, height, count, case),
                        "live": messages(width, height, count // 2, case + "-live")}
                values = [v for _, v in sent["backlog"]]
                for k in range(args.rounds):
                    own = settings.model_copy(update={
                        "model_name": meta.name, "topic_images": f"images.{case}.{k}",
                        "topic_predictions": f"predictions.{case}.{k}", "group_prefix": f"bench-{case}-{k}",
                        "batch_size": batch})
                    before = in_process(clf, settings.forward_chunk, values, batch, args.predictors)
                    e2e = asyncio.run(end_to_end(own, sent, meta))
                    inproc = max(before, in_process(clf, settings.forward_chunk, values, batch, args.predictors))
                    results[case].append({"in-process": inproc, "images": count, "batch": batch, **e2e})
                    print(f"{case} round {k + 1}: in-process {inproc:.0f}, backlog {e2e['backlog']:.0f} "
                          f"({e2e['backlog'] / inproc:.2f}), live {e2e['live']:.0f} ({e2e['live'] / inproc:.2f}) images/s{twice(e2e)}",
                          flush=True)
        finally:
            cluster.stop()
    print(f"{args.arch}, {args.rounds} rounds, {args.predictors} predictor(s) x {args.threads or 'default'} "
          f"thread(s); medians (range of the ratio):")
    for case, rounds in results.items():
        line = (f"{case:8s} {rounds[0]['images']:6d} JPEGs, batch {rounds[0]['batch']:3d}: "
                f"in-process {median(r['in-process'] for r in rounds):7.0f} images/s")
        for name in ("backlog", "live"):
            ratios = sorted(r[name] / r["in-process"] for r in rounds)
            line += (f"  {name} {median(r[name] for r in rounds):7.0f} ratio {median(ratios):.2f} "
                     f"({ratios[0]:.2f}-{ratios[-1]:.2f})")
        print(line)
