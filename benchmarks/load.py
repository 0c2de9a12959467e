"""Load: the whole loop under a 10x burst, or a long soak at half load, with every
process's memory sampled.

    python benchmarks/load.py [--burst] [--warmup 60] [--burst-seconds 60] [--out samples.csv]
    python benchmarks/load.py --soak 30 [--soak-warmup 120] [--out samples.csv]
    common: [--dataset fashion-mnist] [--predictors N --threads T] [--base RATE | --base-share S]
            [--retrain-every N]

The real loop runs on the embedded broker: predictors, selector, label ingest and learner
as processes (``LocalCluster``), and in this process a source at a fixed rate and the
simulated labeler. The learner does not retrain unless ``--retrain-every`` says so (nor
early after a drift detection, which the burst itself can raise): a
fine-tuning round takes a core for tens of seconds, and the capacity would then be the
learner's schedule rather than the loop's.

- capacity: images/s end to end, once every worker runs: a backlog produced at full
  speed, through the predictors (counted from the first 10% of predictions to the first
  90%, as the backlog figure of ``benchmarks/serving.py``) and through the selector
  (the backlog over the time until the selector group has committed all of it), the
  lower of the two: on shared cores the selector's share of the CPU can make it the
  bottleneck, and a base rate the selector cannot keep up with never drains. Also as a
  ratio to the served model's raw batched forward pass in this process, measured before
  and after the run (the best of them): the machine's speed drifts, the ratio much
  less. The base rate, "half load", is half of the capacity (``--base-share``, or
  ``--base`` in images/s).
- burst (default): the base rate for ``--warmup`` s, 10x it for ``--burst-seconds`` s,
  then the base rate until both lags (images produced less images the predictors
  committed; predictions less those the selector committed) are back under the highest
  they were in the warm-up's last 30 s or one second of traffic (``--settled``),
  whichever is more; then 30 s more. Reports the peak lag,
  the drain time from the burst's end, and each process's RSS before, at the burst's
  peak and end, and once drained. Memory is bounded when the workers' RSS does not
  follow the backlog.
- soak: the base rate for ``--soak-warmup`` s, then for MINUTES; RSS every 10 s. The
  growth compares the median of the soak's first minute with that of its last minute.

The source counts what it produced; a rate it could not hold is reported, never hidden.
A run ends early, and says why, when the machine's available memory falls under 1.5 GiB
or when the predictors commit less than a tenth of what is produced for two minutes.
The broker (Tansu) keeps every record in memory by design, so its RSS grows with all that
was produced and is reported apart from the workers'; so does its CPU time per record it
serves, which on shared cores leaves the workers less (each process's cores are reported
per phase). A burst over half load produces millions of records on a fast machine: with
the embedded broker, ``--base-share 0.25`` keeps the broker's share in bounds. Everything binds to 127.0.0.1 and
every process is stopped by PID at the end, on Ctrl-C or SIGTERM too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import csv
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving import raw_throughput, steady_rate  # noqa: E402

from aiokafka import AIOKafkaConsumer  # noqa: E402
from aiokafka.structs import TopicPartition  # noqa: E402

from activestream.config import Settings  # noqa: E402
from activestream.learners.preprocess import encode_png  # noqa: E402
from activestream.learners.training import TrainConfig  # noqa: E402
from activestream.simulation.datasets import load_dataset  # noqa: E402
from activestream.simulation.seed import bootstrap_seed  # noqa: E402
from activestream.simulation.traffic import split_seed  # noqa: E402
from activestream.streams.cluster import LocalCluster  # noqa: E402
from activestream.streams.demo import SimulatedLabeler  # noqa: E402
from activestream.streams.learner import announce  # noqa: E402
from activestream.streams.messages import ImageV1  # noqa: E402
from activestream.streams.serving import load_classifier  # noqa: E402
from activestream.streams.stage import BatchStage, make_consumer, make_producer, send_batches  # noqa: E402
from activestream.streams.worker import Resources  # noqa: E402

WORKER_ORDER = ("predictor", "selector", "ingest", "learner")
SEED_SIZE = 500
NEVER = 10 ** 9  # labels between fine-tuning rounds: none during a run
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Images:
    """Image messages with fresh ids, cut from a few thousand encoded templates.

    Ids are ``load-<dataset index>-<n>``: unique, so no sink takes one for a redelivery,
    and the truth is read off the id, so nothing here grows with the stream.
    """

    def __init__(self, dataset, indices, templates: int = 4000):
        self.labels = dataset.train_y
        self.parts = [self._template(dataset, int(i)) for i in indices[:templates]]

    @staticmethod
    def _template(dataset, i: int) -> tuple[int, bytes, bytes]:
        value = ImageV1(v=1, id="ID", ts=0.0, source="load", truth=int(dataset.train_y[i]),
                        image=base64.b64encode(encode_png(dataset.train_x[i])).decode()).encode()
        head, _, tail = value.partition(b'"id":"ID","ts":0.0,')  # fields in declaration order
        if not tail:
            raise RuntimeError("ImageV1 no longer encodes id and ts first; update Images._template")
        return i, head, tail

    def message(self, n: int, ts: float) -> tuple[bytes, bytes]:
        i, head, tail = self.parts[n % len(self.parts)]
        key = b"load-%d-%d" % (i, n)
        return key, b'%s"id":"%s","ts":%.3f,%s' % (head, key, ts, tail)

    def get(self, image_id: str) -> int | None:
        """The truth, for the simulated labeler; None for an id not made here."""
        parts = image_id.split("-")
        return int(self.labels[int(parts[1])]) if len(parts) == 3 and parts[0] == "load" else None


class Source:
    """Produces at ``rate`` images/s; a deficit is caught up within a rate, never carried
    into the next one, so a burst cannot leak into the drain."""

    def __init__(self, producer, topic: str, partitions: list[int], images: Images):
        self.producer, self.topic, self.partitions, self.images = producer, topic, partitions, images
        self.rate, self.produced, self._target = 0.0, 0, 0.0

    def set_rate(self, rate: float) -> None:
        self.rate, self._target = rate, float(self.produced)

    async def send(self, count: int) -> None:
        # Round-robin, not the key's murmur2 (pure Python, as costly as decoding an image):
        # nothing downstream needs an image on the partition its key hashes to.
        ts, groups = time.time(), {p: [] for p in self.partitions}
        for n in range(self.produced, self.produced + count):
            groups[self.partitions[n % len(self.partitions)]].append(self.images.message(n, ts))
        futures = []
        for partition, records in groups.items():
            futures.extend(await send_batches(self.producer, self.topic, partition, records))
        await asyncio.gather(*futures)
        self.produced += count

    async def run(self, stop: asyncio.Event, tick: float = 0.05) -> None:
        last = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            self._target += self.rate * (now - last)
            last = now
            if int(self._target) > self.produced:
                await self.send(int(self._target) - self.produced)
            await asyncio.sleep(max(0.0, tick - (time.monotonic() - now)))


class Predictions:
    """Counts prediction records (keys only, no parsing, redeliveries included);
    ``arrivals`` keeps (time, count) for the capacity figure."""

    def __init__(self, settings: Settings):
        self.settings, self.count, self.arrivals = settings, 0, []

    async def run(self, stop: asyncio.Event) -> None:
        consumer = make_consumer(self.settings, self.settings.bootstrap, None, self.settings.topic_predictions)
        await consumer.start()
        try:
            while not stop.is_set():
                for records in (await consumer.getmany(timeout_ms=100, max_records=20000)).values():
                    self.count += len(records)
                    self.arrivals.append((time.perf_counter(), self.count))
        finally:
            await consumer.stop()


class Committed:
    """What a consumer group has finished: the sum of its committed offsets on a topic,
    read without joining the group. (Tansu answers a query for the latest offsets wrongly,
    so what was produced is counted by the producers here instead.)"""

    def __init__(self, settings: Settings, group: str, topic: str):
        self.consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=group, enable_auto_commit=False)
        self.partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]

    async def total(self) -> int:
        return sum([await self.consumer.committed(tp) or 0 for tp in self.partitions])


def available_mib() -> float:
    line = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemAvailable:"))
    return int(line.split()[1]) / 1024


def proc_figures(pid: int) -> tuple[float, float]:
    """RSS in MiB and CPU seconds so far of a live process."""
    rss = next(int(line.split()[1]) / 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    ticks = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return rss, (int(ticks[11]) + int(ticks[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15


@dataclass
class Sample:
    t: float
    phase: str
    rate: float
    produced: int     # images produced
    predicted: int    # images the predictors committed
    predictions: int  # prediction records on the topic
    selected: int     # predictions the selector committed
    rss: dict[str, float]
    cpu: dict[str, float]

    @property
    def lag(self) -> int:
        return self.produced - self.predicted

    @property
    def selector_lag(self) -> int:
        return self.predictions - self.selected


@dataclass
class Run:
    """The deployment under load and its timeline: samples, and phases as name ->
    [start, end, images produced at the start, at the end]."""

    workers: LocalCluster
    broker_pid: int
    source: Source
    predictions: Predictions
    done: dict[str, Committed]
    started: float = field(default_factory=time.monotonic)
    phase: str = "capacity"
    samples: list[Sample] = field(default_factory=list)
    phases: dict[str, list] = field(default_factory=dict)
    min_free: float = 1536.0  # MiB: below this much available memory the run ends
    stall: float = 120.0  # seconds in which predictors that keep up less than a tenth of the source have stalled
    ended: str | None = None  # why the run ended before its time

    def now(self) -> float:
        return time.monotonic() - self.started

    def enter(self, phase: str, rate: float) -> None:
        if self.phase in self.phases:
            ending = self.phases[self.phase]
            ending[1], ending[3] = self.now(), self.source.produced
        self.phase = phase
        print(f"{self.now():6.0f} s  {phase}: {rate:,.0f} images/s", flush=True)
        self.phases[phase] = [self.now(), None, self.source.produced, None]
        self.source.set_rate(rate)

    async def sample(self) -> Sample:
        self._check_alive()
        pids = ({name: p.pid for name, p in self.workers.procs_.items()}
                | {"broker": self.broker_pid, "load-gen": os.getpid()})
        figures = {name: proc_figures(pid) for name, pid in pids.items()}
        t, produced, predictions = self.now(), self.source.produced, self.predictions.count
        s = Sample(t, self.phase, self.source.rate, produced, await self.done["predictor"].total(), predictions,
                   await self.done["selector"].total(), {n: f[0] for n, f in figures.items()},
                   {n: f[1] for n, f in figures.items()})
        self.samples.append(s)
        if self.ended is None:
            self.ended = self._trouble(s)
            if self.ended:
                print(f"{s.t:6.0f} s  ending the run: {self.ended}", flush=True)
        return s

    def _trouble(self, s: Sample) -> str | None:
        if available_mib() < self.min_free:
            return f"available memory under {self.min_free:.0f} MiB (the broker holds {s.rss['broker']:,.0f} MiB)"
        old = next((o for o in reversed(self.samples) if o.t <= s.t - self.stall), None)
        if old and s.lag > 0 and s.predicted - old.predicted < (s.produced - old.produced) / 10:
            return (f"the predictors stalled: {s.predicted - old.predicted:,} images in the last {self.stall:.0f} s, "
                    f"{s.produced - old.produced:,} produced")
        return None

    def _check_alive(self) -> None:
        for name, proc in self.workers.procs_.items():
            if proc.poll() is not None:
                log = (self.workers.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"worker {name} exited with code {proc.returncode} under load; its log ends:\n{log}")

    async def record(self, stop: asyncio.Event, every: float, path: str | None) -> None:
        """Sample every ``every`` s, a line of progress every 30 s; each sample goes to the
        CSV at ``path`` at once, so an interrupted run leaves what it saw."""
        with open(path, "w", newline="") if path else contextlib.nullcontext() as f:
            rows = csv.writer(f) if f else None
            while not stop.is_set():
                s = await self.sample()
                if rows:
                    if len(self.samples) == 1:
                        rows.writerow(csv_header(s))
                    rows.writerow(csv_row(s))
                    f.flush()
                if len(self.samples) == 1 or int(s.t / 30) > int(self.samples[-2].t / 30):
                    print(f"{s.t:6.0f} s  {s.phase:8s} produced {s.produced:,}, lag {s.lag:,}, "
                          f"selector lag {s.selector_lag:,}", flush=True)
                await asyncio.sleep(every)

    def produced_rate(self, phase: str) -> float:
        start, end, before, after = self.phases[phase]
        return (after - before) / (end - start)

    async def hold(self, seconds: float) -> None:
        """Wait ``seconds``, or until the run has to end (memory short, predictors stalled)."""
        await until(lambda: self.ended, seconds)

    def in_phase(self, phase: str) -> list[Sample]:
        return [s for s in self.samples if s.phase == phase]


async def until(condition, limit: float, poll: float = 0.25) -> bool:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll)
    return True


async def measure_capacity(run: Run, backlog: int) -> dict:
    """Loop capacity in images/s (the lower of the predictors' and the selector's rates),
    each of those, and the seconds the backlog took to produce."""
    if not await until(lambda: run.predictions.count >= run.source.produced, 300):
        raise RuntimeError("the first images were not predicted within 5 minutes; see the workers' logs")
    await asyncio.sleep(5)  # every predictor in the group, rebalances over
    run.predictions.arrivals, first = [], run.predictions.count
    decided = await run.done["selector"].total()
    started = time.perf_counter()
    await run.source.send(backlog)
    produced_in = time.perf_counter() - started
    if not await until(lambda: run.predictions.count >= first + backlog, 600):
        raise RuntimeError("the capacity backlog was not predicted within 10 minutes")
    arrivals = [(t, n - first) for t, n in run.predictions.arrivals]
    run.predictions.arrivals = []
    while await run.done["selector"].total() < decided + backlog:
        if time.perf_counter() - started > 600:
            raise RuntimeError("the selector did not decide the capacity backlog within 10 minutes")
        await asyncio.sleep(0.25)
    predictors, selector = steady_rate(arrivals), backlog / (time.perf_counter() - started)
    return {"capacity": min(predictors, selector), "predictors": predictors, "selector": selector,
            "produced_in": produced_in}


async def burst(run: Run, base: float, args) -> dict:
    run.enter("warm-up", base)
    await run.hold(args.warmup)
    # Drained: the lag back under its peak of the warm-up's last 30 s, or under one second
    # of traffic, whichever is more: at the base rate a lag of either is no backlog.
    recent = [s for s in run.in_phase("warm-up") if s.t > run.now() - 30] + run.samples[-1:]
    baseline = max([s.lag for s in recent] + [int(base * args.settled)])
    selector_baseline = max([s.selector_lag for s in recent] + [int(base * args.settled)])
    run.enter("burst", 10 * base)
    await run.hold(args.burst_seconds)
    if run.ended:
        raise RuntimeError(f"the run ended before the drain: {run.ended}")
    run.enter("drain", base)
    began = time.monotonic()

    def drained() -> bool:
        last = run.samples[-1]
        return last.phase == "drain" and last.lag <= baseline and last.selector_lag <= selector_baseline

    await until(lambda: run.ended or drained(), args.drain_limit)
    drain = time.monotonic() - began if drained() else None
    run.enter("after", base)
    await run.hold(30)
    run.enter("end", 0.0)
    return {"baseline": baseline, "selector_baseline": selector_baseline, "drain": drain}


async def soak(run: Run, base: float, args) -> dict:
    """A soak that runs short of memory ends early; the report says how long it lasted."""
    run.enter("warm-up", base)
    await run.hold(args.soak_warmup)
    run.enter("soak", base)
    await run.hold(args.soak * 60)
    run.enter("end", 0.0)
    return {}


async def label_forever(settings: Settings, producer, images: Images, stop: asyncio.Event) -> None:
    labeler = SimulatedLabeler(images, settings.topic_labels, settings.topic_deadletter, settings.label_delay)
    consumer = make_consumer(settings, settings.bootstrap, settings.group("sim-labeler"), settings.topic_requests)
    await consumer.start()
    try:
        await BatchStage("sim-labeler", consumer, producer, labeler, max_records=500, wait_ms=100).run(stop)
    finally:
        await consumer.stop()


async def bench(settings: Settings, workers: LocalCluster, broker_pid: int, images: Images, seed, args):
    producer = make_producer(settings.bootstrap)
    done = {"predictor": Committed(settings, settings.group("predictor"), settings.topic_images),
            "selector": Committed(settings, settings.group("selector"), settings.topic_predictions)}
    stop, tasks = asyncio.Event(), []
    for client in [producer] + [c.consumer for c in done.values()]:
        await client.start()
    try:
        await announce(producer, settings.topic_versions, seed)
        partitions = sorted(await producer.partitions_for(settings.topic_images))
        run = Run(workers, broker_pid, Source(producer, settings.topic_images, partitions, images),
                  Predictions(settings), done)
        await asyncio.to_thread(workers.start)
        tasks = [asyncio.ensure_future(c) for c in (
            run.predictions.run(stop), run.source.run(stop), label_forever(settings, producer, images, stop),
            run.record(stop, 10.0 if args.soak else 1.0, args.out))]
        await run.source.send(2000)  # every worker's first batch: model loads, group joins
        capacity = await measure_capacity(run, args.capacity_images)
        base = args.base or capacity["capacity"] * args.base_share
        found = await (soak if args.soak else burst)(run, base, args)
        return run, {**capacity, "base": base, **found}
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in [producer] + [c.consumer for c in done.values()]:
            await client.stop()


def cores(samples: list[Sample], name: str) -> float:
    return (samples[-1].cpu[name] - samples[0].cpu[name]) / (samples[-1].t - samples[0].t)


def report_burst(run: Run, found: dict, args) -> None:
    print(f"base rate {found['base']:,.0f} images/s: produced {run.produced_rate('warm-up'):,.0f} "
          f"in the warm-up, {run.produced_rate('drain'):,.0f} while draining")
    print(f"burst: 10x for {args.burst_seconds:.0f} s, target {10 * found['base']:,.0f} images/s, "
          f"produced {run.produced_rate('burst'):,.0f}")
    top = max(run.samples, key=lambda s: s.lag)
    print(f"peak lag {top.lag:,} images ({top.t - run.phases['burst'][0]:.0f} s after the burst began); "
          f"selector's peak lag "
          f"{max(s.selector_lag for s in run.samples):,} predictions")
    drain = (f"in {found['drain']:.0f} s" if found["drain"] is not None
             else f"not within {args.drain_limit:.0f} s" if run.ended is None else f"never: {run.ended}")
    print(f"drain: lag back under {found['baseline']:,} and selector lag under {found['selector_baseline']:,} "
          f"(the warm-up's peaks or {args.settled:g} s of traffic) {drain} after the burst's end")
    burst, drain = run.in_phase("burst"), run.in_phase("drain")
    before, after = run.in_phase("warm-up")[-1], run.in_phase("after")[-1]
    print(f"\n{'RSS, MiB':12s}{'before':>8s}{'burst peak':>11s}{'burst end':>10s}{'drain peak':>11s}"
          f"{'drained':>8s}{'30 s on':>8s}{'drained/before':>15s}{'cores, drain':>13s}")
    for name in before.rss:
        print(f"{name:12s}{before.rss[name]:8.0f}{max(s.rss[name] for s in burst):11.0f}{burst[-1].rss[name]:10.0f}"
              f"{max(s.rss[name] for s in drain):11.0f}{drain[-1].rss[name]:8.0f}{after.rss[name]:8.0f}"
              f"{drain[-1].rss[name] / before.rss[name]:15.2f}{cores(drain, name):13.2f}")
    print("broker: Tansu keeps every record in memory by design; its RSS follows all that was produced.\n"
          "load-gen: this process (source, simulated labeler, counters), on the same cores")


def report_soak(run: Run, found: dict, args) -> None:
    soaked = run.in_phase("soak")
    first = [s for s in soaked if s.t < soaked[0].t + 60]
    last = [s for s in soaked if s.t > soaked[-1].t - 60]
    lasted = run.phases["soak"][1] - run.phases["soak"][0]
    if run.ended:
        print(f"the soak ended after {lasted / 60:.1f} of {args.soak:g} min: {run.ended}")
    print(f"soak: {lasted / 60:.1f} min at {found['base']:,.0f} images/s target, produced "
          f"{run.produced_rate('soak'):,.0f}, after {args.soak_warmup:.0f} s of warm-up; lag median "
          f"{median(s.lag for s in soaked):,.0f}, peak {max(s.lag for s in soaked):,}; selector's peak lag "
          f"{max(s.selector_lag for s in soaked):,}")
    print(f"\n{'RSS, MiB':12s}{'first min':>10s}{'last min':>9s}{'growth':>8s}{'cores':>7s}"
          "  (medians of samples every 10 s)")
    for name in soaked[0].rss:
        a, b = median(s.rss[name] for s in first), median(s.rss[name] for s in last)
        print(f"{name:12s}{a:10.0f}{b:9.0f}{100 * (b - a) / a:7.1f}%{cores(soaked, name):7.2f}")
    print("target: predictor growth under 10%; the broker keeps every record in memory by design")


def csv_header(s: Sample) -> list[str]:
    return (["t", "phase", "rate", "produced", "predicted", "lag", "predictions", "selected", "selector_lag"]
            + [f"rss_mib_{n}" for n in s.rss] + [f"cpu_s_{n}" for n in s.cpu])


def csv_row(s: Sample) -> list:
    return ([f"{s.t:.1f}", s.phase, f"{s.rate:.0f}", s.produced, s.predicted, s.lag, s.predictions, s.selected,
             s.selector_lag] + [f"{v:.1f}" for v in s.rss.values()] + [f"{v:.2f}" for v in s.cpu.values()])


def seeded(settings: Settings, dataset) -> tuple[Images, object]:
    res = Resources(settings).open()
    seed_idx, stream_idx = split_seed(dataset, SEED_SIZE)
    seed = bootstrap_seed(dataset, seed_idx, store=res.store, blobs=res.blobs, registry=res.registry,
                          name=settings.model_name, config=TrainConfig(epochs=5))
    return Images(dataset, stream_idx), seed


def raw_rate(settings: Settings, dataset, seed) -> float:
    """The served model alone in this process, with torch's default threads, on decoded
    images: the baseline that the capacity is divided by, as in ``benchmarks/serving.py``."""
    clf = load_classifier(Resources(settings).registry, settings.model_name, seed.version, chunk=settings.forward_chunk)
    _, stream_idx = split_seed(dataset, SEED_SIZE)
    images = np.stack([dataset.train_x[int(i)] for i in stream_idx[:10000]])
    return raw_throughput(clf, images, settings.batch_size)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--burst", action="store_true", help="the default mode")
    mode.add_argument("--soak", type=float, metavar="MINUTES", help="half load for MINUTES instead of a burst")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds at the base rate before the burst")
    ap.add_argument("--burst-seconds", type=float, default=60.0)
    ap.add_argument("--settled", type=float, default=1.0,
                    help="drained: a lag under this many seconds of base-rate traffic (or the warm-up's peak)")
    ap.add_argument("--drain-limit", type=float, default=1800.0, help="give up waiting for the drain after this")
    ap.add_argument("--soak-warmup", type=float, default=120.0, help="seconds at the base rate before the soak counts")
    ap.add_argument("--base", type=float, default=0.0, help="base rate in images/s (default: --base-share of the capacity)")
    ap.add_argument("--base-share", type=float, default=0.5, help="base rate as a share of the capacity")
    ap.add_argument("--capacity-images", type=int, default=40000)
    ap.add_argument("--dataset", default="auto")
    ap.add_argument("--predictors", type=int, default=os.cpu_count() or 1, help="predictor processes (one per core)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each predictor")
    ap.add_argument("--retrain-every", type=int, default=0, help="labels between fine-tuning rounds (0: none)")
    ap.add_argument("--out", help="CSV of every sample")
    return ap.parse_args()


def _stop_on_sigterm(*_) -> None:
    raise KeyboardInterrupt  # the finally clauses then stop every process, as on Ctrl-C


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=home, dataset=args.dataset, log_level="warning", threads=args.threads,
                            predictors=args.predictors, retrain_every=args.retrain_every or NEVER, group_prefix="load",
                            **({} if args.retrain_every else {"drift_early_labels": 0}))
        dataset = load_dataset(settings.dataset, settings.data_dir)
        broker = LocalCluster(settings, ())
        workers = None
        try:
            settings = broker.start()
            images, seed = seeded(settings, dataset)
            raw = raw_rate(settings, dataset, seed)
            workers = LocalCluster(settings, WORKER_ORDER)
            run, found = asyncio.run(bench(settings, workers, broker.broker_.process_.pid, images, seed, args))
        except KeyboardInterrupt:
            print("interrupted; stopping every process", file=sys.stderr)
            sys.exit(130)
        finally:
            if workers is not None:
                workers.stop()
            broker.stop()
        raw = max(raw, raw_rate(settings, dataset, seed))  # a shared machine only ever slows a pass down
    report(args, settings, dataset.name, raw, run, found)


def report(args, settings: Settings, dataset: str, raw: float, run: Run, found: dict) -> None:
    learner = f"retraining every {args.retrain_every} labels" if args.retrain_every else "no retraining"
    print(f"\ndataset {dataset}; {args.predictors} predictor(s) x {args.threads} thread(s), selector "
          f"(budget {settings.budget:.0%}), ingest, learner ({learner}), simulated labeler")
    print(f"capacity {found['capacity']:,.0f} images/s (backlog of {args.capacity_images:,} produced in "
          f"{found['produced_in']:.1f} s; predictors {found['predictors']:,.0f} images/s from 10% to 90% of its "
          f"predictions, selector {found['selector']:,.0f} images/s to its last decision): "
          f"{found['capacity'] / raw:.2f} of the raw forward pass, {raw:,.0f} images/s (the model alone here, "
          f"best before and after the run)")
    report_soak(run, found, args) if args.soak else report_burst(run, found, args)


if __name__ == "__main__":
    main()
