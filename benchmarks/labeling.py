"""Labeling service under load: simulated labelers on the HTTP API of a real ``label serve`` process.

    python benchmarks/labeling.py [--labelers 5] [--items 6000] [--seconds 60] [--think 0] [--store-url URL]

Each labeler is a thread with its own HTTP connection that does what the page does
for every item, as fast as the server lets it: ``POST /api/next``, ``GET`` the
image, waits ``--think`` seconds (0: none, the server saturated; a person takes one
to a few), ``POST`` a label. Labels go through the embedded broker to ``labels``.
Prints next-item latency p50/p95 (the target is p95 under 50 ms), image and submit
latencies, labels per minute, and, measured in the same run, the round trip of a
static file as the baseline cost of one HTTP request on this machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from activestream.config import Settings  # noqa: E402
from activestream.labeling.service import LabelingService, MemorySink  # noqa: E402
from activestream.streams.broker import EmbeddedBroker, free_port  # noqa: E402
from label_helpers import make_requests, register_model  # noqa: E402


def fill(settings: Settings, items: int, labelers: int) -> dict[str, str]:
    """Queue ``items`` requests (10% audit) and create the labelers' tokens; returns name -> token."""
    service = LabelingService.open(settings, MemorySink())
    register_model(service.registry, settings.model_name)
    for start in range(0, items, 500):
        requests = make_requests(service, min(500, items - start), prefix=f"b{start}", audit_every=10, seed=start)
        service.enqueue(requests)
    tokens = {}
    for i in range(labelers):
        tokens[f"lab{i}"] = f"bench-token-{i}-{os.urandom(8).hex()}"
        service.queue.set_token(f"lab{i}", tokens[f"lab{i}"], now=time.time())
    service.close()
    return tokens


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"label serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/static/app.css", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("label serve did not answer")


def labeler(url: str, token: str, stop: float, think: float, out: dict, lock: threading.Lock) -> None:
    rng = np.random.default_rng(int.from_bytes(token.encode()[-4:], "big"))
    timings = {"next": [], "image": [], "submit": []}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            item = client.post("/api/next").json()["item"]
            t1 = time.perf_counter()
            if item is None:
                break
            client.get(item["image"]).raise_for_status()
            t2 = time.perf_counter()
            if think:
                time.sleep(think * rng.uniform(0.5, 1.5))
            t2b = time.perf_counter()
            client.post(f"/api/items/{item['id']}/label", json={"label": sum(map(ord, item["id"])) % 10}
                        ).raise_for_status()
            t3 = time.perf_counter()
            timings["next"].append(t1 - t0)
            timings["image"].append(t2 - t1)
            timings["submit"].append(t3 - t2b)
    with lock:
        for k, v in timings.items():
            out.setdefault(k, []).extend(v)


def baseline(url: str, n: int = 300) -> float:
    """Median round trip of a static file: the cost of any HTTP request here."""
    with httpx.Client(base_url=url) as client:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            client.get("/static/app.css").raise_for_status()
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labelers", type=int, default=5)
    p.add_argument("--items", type=int, default=6000, help="queued requests (enough that 60 s never drain them)")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--think", type=float, default=0.0, help="mean seconds a labeler looks at an item")
    p.add_argument("--store-url", default=None, help="default: SQLite in a temporary folder")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as home, EmbeddedBroker() as broker:
        settings = Settings(home=home, store_url=args.store_url, bootstrap=broker.bootstrap, label_port=free_port(),
                            label_gold_share=0.0, label_second_share=0.05, log_level="warning",
                            group_prefix=f"bench{os.getpid()}")
        tokens = fill(settings, args.items, args.labelers)
        env = {**os.environ, **settings.to_env()}
        proc = subprocess.Popen([sys.executable, "-m", "activestream", "label", "serve"], env=env)
        url = f"http://127.0.0.1:{settings.label_port}"
        try:
            wait_ready(url, proc)
            base = baseline(url)
            out, lock = {}, threading.Lock()
            started = time.perf_counter()
            threads = [threading.Thread(target=labeler, args=(url, t, started + args.seconds, args.think, out, lock))
                       for t in tokens.values()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait(30)
    ms = {k: np.array(v) * 1000 for k, v in out.items()}
    store = "SQLite" if not args.store_url else args.store_url.split(":")[0]
    print(f"{args.labelers} labelers, think {args.think} s, {store}, {len(ms['next'])} labels in {wall:.1f} s")
    for name in ("next", "image", "submit"):
        print(f"{name:>7}: p50 {np.percentile(ms[name], 50):6.1f} ms   p95 {np.percentile(ms[name], 95):6.1f} ms")
    print(f"baseline (static file round trip): p50 {base * 1000:.1f} ms; next-item p50 / baseline = "
          f"{np.percentile(ms['next'], 50) / (base * 1000):.1f}")
    print(f"labels per minute: {len(ms['next']) / wall * 60:.0f}")
    verdict = "met" if np.percentile(ms["next"], 95) < 50 else "NOT met"
    print(f"target next-item p95 < 50 ms: {verdict}")


if __name__ == "__main__":
    main()
