"""Every worker and ``label serve`` SIGKILLed at seeded random points of one simulated stream
while `run` supervises: nothing is lost, nothing is stored twice, the budget holds, and a
labeler working through the HTTP API loses none of the answers it was told were taken."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections import Counter

import httpx
import pytest

from activestream.config import worker_env
from activestream.run import run_loop
from activestream.streams.broker import free_port
from activestream.streams.cluster import LABEL, LocalCluster
from activestream.streams.worker import WORKERS, Resources
from tests.conftest import make_settings, run_async

pytestmark = pytest.mark.kafka

IMAGES = 5000
SELECTED = ("uncertain", "audit")
KILLED = ("predictor", "selector", "ingest", "learner", LABEL)  # in the order their points are drawn
ORACLE, PERSON = "sim-oracle", "http-person"
PAUSE = 0.05  # seconds between two tries of the HTTP labeler: pacing, not waiting for anything


class HttpLabeler:
    """A person at the labeling API, answering with the truth, who keeps at it while
    ``label serve`` is down: refused connections and 5xx are tried again, and an item
    whose lease lapsed meanwhile (409) is let go.

    It answers an item only once the simulated labeler's answer to it has been observed:
    every id in ``seen.labels`` then carries the oracle's label, and ``run_loop``, which
    settles on the count of labelled ids, waits for the oracle exactly as without it.
    """

    def __init__(self, url: str, token: str):
        self.url = url
        self.token = token
        self.submitted: dict[str, int] = {}  # id -> label, for every answer taken with 200
        self.outages = 0
        self.task_: asyncio.Task | None = None

    def keep_running(self, truth: dict[str, int], seen) -> None:
        """Start labeling on the first call; afterwards, raise whatever stopped it."""
        if self.task_ is None:
            self.task_ = asyncio.ensure_future(self.run(truth, seen))
        elif self.task_.done():
            self.task_.result()

    async def stop(self) -> None:
        if self.task_ is not None:
            self.task_.cancel()
            await asyncio.gather(self.task_, return_exceptions=True)

    async def run(self, truth: dict[str, int], seen) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10.0) as client:
            held = None  # kept through an outage: the lease is in the store, not in the process
            while True:
                try:
                    held = held or await self._lease(client)
                    if held is not None and held in seen.labels:
                        held = await self._answer(client, held, truth[held])
                        if held is None:
                            continue  # answered or let go: straight on to the next item
                except httpx.TransportError:
                    self.outages += 1
                await asyncio.sleep(PAUSE)

    async def _lease(self, client: httpx.AsyncClient) -> str | None:
        r = await client.post("/api/next")
        if self._down(r):
            return None
        item = r.json()["item"]
        return item and item["id"]

    async def _answer(self, client: httpx.AsyncClient, item_id: str, label: int) -> str | None:
        """Submit; returns the item while it is still to be answered."""
        r = await client.post(f"/api/items/{item_id}/label", json={"label": label})
        if r.status_code == 409:  # the lease lapsed while label serve was down
            return None
        if self._down(r):
            return item_id
        self.submitted[item_id] = label
        return None

    def _down(self, r: httpx.Response) -> bool:
        if r.status_code >= 500:
            self.outages += 1
            return True
        if r.status_code != 200:
            raise AssertionError(f"{r.request.method} {r.request.url.path} answered {r.status_code}: {r.text}")
        return False


class KillSchedule:
    """Stands in for the display (called every half second with what was observed),
    keeps the HTTP labeler going, and SIGKILLs each process once the stream has reached
    its point: progress, not time."""

    def __init__(self, cluster: LocalCluster, points: list[tuple[int, str]], labeler: HttpLabeler | None = None):
        self.cluster = cluster
        self.labeler = labeler
        self.points = sorted(points)  # (images predicted, process to kill)
        self.killed: list[tuple[str, int]] = []
        self.killed_procs: dict[str, subprocess.Popen] = {}
        self.events: list[str] = []  # what supervision did, as `run` would show it
        self.answered_before_kill: int | None = None  # HTTP answers taken before label serve was killed
        self.broker_procs: list[subprocess.Popen] = []  # the cluster forgets them once stopped

    def update(self, settings, res, seen, demo) -> None:
        if not self.broker_procs and self.cluster.broker_:
            self.broker_procs = [self.cluster.broker_.process_, self.cluster.broker_.reaper_]
        if self.labeler is not None:
            self.labeler.keep_running(demo.truth, seen)
        while self.points and len(seen.predicted) >= self.points[0][0]:
            _, name = self.points.pop(0)
            proc = self.cluster.procs_[name]
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                # Dead before the loop next looks: a kill that lands once the stream is done
                # must not leave a run settling on a worker that merely has not died yet.
                proc.wait(30)
                self.killed.append((name, len(seen.predicted)))
                self.killed_procs[name] = proc
                if name == LABEL and self.labeler is not None:
                    self.answered_before_kill = len(self.labeler.submitted)

    def note(self, event: str) -> None:
        self.events.append(event)


@pytest.mark.parametrize("seed", [7])
def test_every_worker_killed_mid_stream_loses_nothing(tmp_path, digits, seed):
    settings = make_settings(tmp_path, dataset="digits", images=IMAGES, rate=400, seed_size=200, budget=0.1,
                             retrain_every=60, label_delay=0.0, epochs=1, label_port=free_port())
    labeler = HttpLabeler(f"http://127.0.0.1:{settings.label_port}", create_token(settings, PERSON))
    cluster = LocalCluster(settings, (*WORKERS, LABEL))
    rng = random.Random(seed)
    schedule = KillSchedule(cluster, [(rng.randint(IMAGES // 10, IMAGES * 7 // 10), name) for name in KILLED], labeler)

    async def stream() -> tuple:
        try:
            return await run_loop(settings, asyncio.Event(), schedule, cluster, timeout=540)
        finally:
            await labeler.stop()

    observer, demo = run_async(stream(), timeout=660)
    seen, settings = observer.seen, cluster.settings
    store = Resources(settings).open().store
    picks = store.samples_by_id(demo.produced).values()
    spends, _ = stream_spends(picks, f"{settings.group('selector')}/1", settings.budget_window)
    assert spends, "the selector saw under one window of traffic"
    target = settings.budget * settings.budget_window
    print(f"\nkilled {schedule.killed}; {schedule.events}; "
          f"{len(seen.requested)} selected, {seen.request_messages} request messages; "
          f"HTTP answers {len(labeler.submitted)} ({schedule.answered_before_kill} before label serve was killed), "
          f"{labeler.outages} tries met an outage; spend per window {spends}")
    assert sorted(name for name, _ in schedule.killed) == sorted(KILLED), "every kill must land mid-stream"
    # Not restarts_.count: it starts again from 0 once a restarted process has run STEADY seconds.
    not_restarted = [name for name, proc in schedule.killed_procs.items() if cluster.procs_[name] is proc]
    assert not not_restarted, f"{not_restarted} killed and never restarted"
    left = [p.pid for p in (*cluster.started_, *schedule.broker_procs) if p.poll() is None]
    assert schedule.broker_procs and not left, f"processes {left} outlived the run"
    assert "Uvicorn running" in (cluster.logs / "label.log").read_text()  # beside the workers' logs

    assert len(demo.produced) == IMAGES
    missing = set(demo.produced) - seen.predicted.keys()
    assert not missing, f"{len(missing)} images without a prediction"

    stored = {s.id for s in picks if s.reason in SELECTED}
    assert stored == set(seen.requested), "a stored selection without a request, or a request without one"
    for sample_id in seen.labels:
        stored_by = Counter(label.labeler for label in store.labels_for(sample_id))
        assert stored_by[ORACLE] == 1, f"{sample_id}: the oracle's label stored {stored_by[ORACLE]} times"
    assert labeler.submitted, "the HTTP labeler never had an answer taken"
    for sample_id, label in labeler.submitted.items():
        rows = [row.label for row in store.labels_for(sample_id) if row.labeler == PERSON]
        assert rows == [label], f"{sample_id}: answered {label} over HTTP, stored {rows}"

    assert all(abs(n - target) <= 0.1 * target for n in spends), f"spend per window {spends}, target {target}"


def stream_spends(samples, selector: str, window: int) -> tuple[list[int], int]:
    """Picks of one selector per full budget window of its stream, the order it decided in,
    and its picks in the last, partial window.

    Not the order the images were sent in: a predictor or selector restart and the
    partitions interleave traffic differently on the way, and the budget holds its
    windows over what the selector saw, restarts included (each pick stores its place).
    """
    positions = [s.meta["position"] for s in samples if s.reason in SELECTED and s.meta.get("selector") == selector]
    assert positions, f"no picks of {selector}"
    windows = max(positions) // window
    counts = Counter(p // window for p in positions)
    return [counts[k] for k in range(windows)], counts[windows]


def create_token(settings, name: str) -> str:
    """A labeler's token, made in the store by the command people use, before ``label serve`` starts."""
    done = subprocess.run([sys.executable, "-m", "activestream", "label", "token", "create", name],
                          env=worker_env(settings), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
