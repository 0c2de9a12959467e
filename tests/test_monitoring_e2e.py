"""A real Prometheus (Debian's) scrapes a running loop: the embedded broker, every worker,
``label serve`` with a person labeling through its API, simulated traffic that shifts
half-way (the digits turned a quarter) and a few poisoned messages. Every dashboard
query and every alert expression must return data through Prometheus's HTTP API, the
drift alert must fire, and promtool must pass the configuration, the rules and every
/metrics page."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import httpx
import pytest

from activestream.learners.preprocess import encode_png
from activestream.labeling.server import metrics_port as label_metrics_port
from activestream.run import Demo, _start_simulation, round_due
from activestream.simulation.datasets import load_dataset
from activestream.simulation.scenarios import rotate
from activestream.simulation.traffic import StreamItem, sample_id, split_seed
from activestream.streams.broker import free_port
from activestream.streams.cluster import LABEL, LocalCluster
from activestream.streams.demo import stream_images
from activestream.streams.stage import make_producer
from activestream.streams.worker import WORKERS, Resources, port_offset
from tests.conftest import make_settings, run_async
from tests.monitoring import Prometheus, alert_rules, dashboard_queries, prometheus_binaries, scrape_config, with_bool
from tests.test_kill_schedule_e2e import create_token

pytestmark = pytest.mark.kafka

IMAGES = 2400  # one fine-tuning round (150 labels at a 10% budget), then traffic for the new version
DEADLINE = 480.0  # seconds for every query to have data: generous, the loop shares 2 cores with Prometheus
PERSON = "http-person"


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports on 127.0.0.1."""
    for _ in range(200):
        base = free_port()
        if base + count < 65536 and all(_free(base + i) for i in range(count)):
            return base
    raise AssertionError(f"no {count} consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def shifted_traffic(dataset, indices, count: int):
    """``count`` digits, the second half turned a quarter (a covariate shift the labels do not see)."""
    for n in range(count):
        i = int(indices[n % len(indices)])
        image = dataset.train_x[i]
        turned = n >= count // 2
        if turned:
            image = rotate(image[None])[0]
        yield StreamItem(f"{sample_id(dataset, 'train', i)}-n{n}{'-rot' if turned else ''}", encode_png(image),
                         int(dataset.train_y[i]))


async def person(url: str, token: str, truth: dict[str, int]) -> None:
    """Someone at the labeling API: answers with the truth, skips every fifth item."""
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        n = 0
        while True:
            try:
                item = (await client.post("/api/next")).json().get("item")
                if item and item["id"] in truth:
                    n += 1
                    if n % 5 == 0:
                        await client.post(f"/api/items/{item['id']}/skip", json={"unsure": n % 10 == 0})
                    else:
                        await client.post(f"/api/items/{item['id']}/label", json={"label": truth[item["id"]]})
            except (httpx.TransportError, ValueError):
                pass  # label serve still starting
            await asyncio.sleep(0.2)


def evaluate(prom: Prometheus, queries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The queries without data."""
    return [(where, expr) for where, expr in queries if not prom.query(expr)]


def queries() -> list[tuple[str, str]]:
    """Every dashboard query, every alert expression, and the drift alert firing: the
    traffic turns a quarter half-way, which the drift detectors must see."""
    return (dashboard_queries() + [(f"alert {r['alert']}", with_bool(r["expr"])) for r in alert_rules()]
            + [("the drift alert firing", 'ALERTS{alertname="ActivestreamDriftDetected", alertstate="firing"}')])


@pytest.mark.timeout(DEADLINE + 420)  # start-up, the seed's training and the shutdown come on top of DEADLINE
def test_prometheus_scrapes_the_loop_and_every_query_has_data(tmp_path, digits):
    binaries = prometheus_binaries()
    if binaries is None:
        pytest.skip("Debian's prometheus could not be installed (make prometheus needs apt-get as root or sudo)")
    prometheus, promtool = binaries
    settings = make_settings(tmp_path, dataset="digits", images=0, seed_size=200, budget=0.1, audit_share=0.5,
                             retrain_every=150, label_delay=0.0, epochs=1, label_port=free_port(),
                             metrics_port=free_ports(5))
    ports = {name: [settings.metrics_port + port_offset(settings, name, 1)] for name in WORKERS}
    ports["label"] = [label_metrics_port(settings)]
    folder = tmp_path / "prometheus"
    folder.mkdir()
    prom = Prometheus(prometheus, folder, scrape_config(ports), free_port())
    checked = subprocess.run([promtool, "check", "config", str(prom.config_path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = subprocess.run([promtool, "check", "rules", *scrape_config(ports)["rule_files"]], capture_output=True,
                           text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    try:
        prom.start()
        empty, pages = run_async(_loop(settings, prom, ports), timeout=DEADLINE + 300)
    finally:
        prom.stop()
    assert prom.process_.poll() is not None
    assert not empty, "queries without data:\n" + "\n".join(f"{w}: {e}" for w, e in empty)
    for port, page in pages.items():
        lint = subprocess.run([promtool, "check", "metrics"], input=page, capture_output=True, text=True)
        assert lint.returncode == 0, f"/metrics on port {port}: {lint.stdout}{lint.stderr}"


async def _loop(settings, prom: Prometheus, ports: dict[str, list[int]]):
    token = await asyncio.to_thread(create_token, settings, PERSON)
    cluster = LocalCluster(settings, (*WORKERS, LABEL))
    settings = await asyncio.to_thread(cluster.start)
    stop, demo, tasks = asyncio.Event(), Demo(), []
    producer = make_producer(settings.bootstrap)
    await producer.start()
    try:
        res = Resources(settings).open()
        tasks += await _start_simulation(settings, res, producer, demo, stop)  # seed, announce, simulated labeler
        dataset = await asyncio.to_thread(load_dataset, "digits")
        _, stream_idx = split_seed(dataset, settings.seed_size, settings.seed)
        for bad in (b"not json", b'{"v": 1}', b'{"v": 2, "id": "x"}'):
            await producer.send_and_wait(settings.topic_images, bad, key=b"poison")
        hold = lambda: asyncio.to_thread(round_due, settings, res)  # noqa: E731 - as `run` paces its source
        tasks.append(asyncio.ensure_future(stream_images(
            producer, settings.topic_images, shifted_traffic(dataset, stream_idx, IMAGES), 60, demo.truth, hold=hold)))
        tasks.append(asyncio.ensure_future(person(f"http://127.0.0.1:{settings.label_port}", token, demo.truth)))
        empty = await _until_every_query_has_data(prom, tasks)
        pages = {}
        async with httpx.AsyncClient(timeout=30) as client:
            for port in (p for group in ports.values() for p in group):
                pages[port] = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        return empty, pages
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()
        await asyncio.to_thread(cluster.stop)


async def _until_every_query_has_data(prom: Prometheus, tasks: list) -> list[tuple[str, str]]:
    """Until every query has returned data at least once. Not all in one poll: a slot's series
    comes and goes (after a promotion the serving slot waits for the new version's labels),
    and on a slow machine the moments when all of them have data need not overlap."""
    deadline = time.monotonic() + DEADLINE
    answered: set[tuple[str, str]] = set()
    while True:
        failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
        if failed:
            raise failed[0].exception()
        up = await asyncio.to_thread(prom.query, 'up{job=~"activestream-.*"} == 1')
        todo = [q for q in queries() if q not in answered]
        empty = await asyncio.to_thread(evaluate, prom, todo)
        answered.update(q for q in todo if q not in empty)
        if (len(up) == 5 and not empty) or time.monotonic() > deadline:
            if len(up) != 5:
                empty.append(("targets", f"up: only {len(up)} of 5 processes up"))
            return empty
        await asyncio.sleep(3)

