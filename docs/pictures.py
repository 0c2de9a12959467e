"""The labeling page's pictures in docs/: a real ``label serve`` on the embedded broker with
CIFAR-10 photos in its queue, signed in and answered in headless Chromium.

    python docs/pictures.py [--data-dir ../shared/data] [--out docs]

Writes ``labeling-page.png`` (1366x768) and ``labeling-page-phone.png`` (390x844). Needs
/usr/bin/chromium (``make test`` installs it) and the CIFAR-10 archive of the data folder.
Everything binds to 127.0.0.1 and is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from activestream.config import Settings, default_data_dir, registry_from  # noqa: E402
from activestream.labeling.tokens import create  # noqa: E402
from activestream.learners.classifier import Classifier, state_arrays  # noqa: E402
from activestream.learners.models import ModelSpec  # noqa: E402
from activestream.storage.blobs import BlobStore  # noqa: E402
from activestream.storage.queue import LabelQueue  # noqa: E402
from activestream.storage.store import SampleStore  # noqa: E402
from activestream.streams.broker import EmbeddedBroker, free_port  # noqa: E402
from activestream.streams.messages import LabelRequestV1  # noqa: E402
from activestream.streams.topics import ensure_topics  # noqa: E402

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CLASS_KEYS = "1234567890"
PHOTOS = 12


def photos(data_dir: str, count: int) -> list[tuple[bytes, int]]:
    """``count`` CIFAR-10 test photos (32x32 JPEGs), at most two of a class."""
    found = []
    with tarfile.open(Path(data_dir) / "cifar10" / "cifar10-jpeg.tar.gz", "r|gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and parts[0] == "test" and parts[1] in CLASSES:
                label = CLASSES.index(parts[1])
                if sum(1 for _, c in found if c == label) < 2:
                    found.append((tar.extractfile(member).read(), label))
            if len(found) >= count:
                break
    return found


def prepare(settings: Settings, data_dir: str) -> tuple[str, list[int]]:
    """A promoted (untrained) model of the CIFAR classes, a token, and the photos' requests on the broker."""
    from kafka import KafkaProducer

    spec = ModelSpec("small_cnn", CLASSES, 3, 32, 32)
    registry_from(settings).register(settings.model_name, state_arrays(Classifier.fresh(spec).model),
                                     spec=spec.to_dict(), parent=None, train_size=0, metrics={}, status="promoted")
    store = SampleStore(settings.store)
    store.create_schema()
    queue = LabelQueue(store)
    queue.create_schema()
    token = create(queue, "ann")
    store.close()
    ensure_topics(settings, settings.bootstrap)
    blobs = BlobStore(settings.home_path / "blobs")
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap)
    truth = []
    for i, (data, label) in enumerate(photos(data_dir, PHOTOS)):
        item = f"cam1-{i:04d}"
        blobs.put(item, data)
        request = LabelRequestV1(id=item, uri=f"blob:{item}", reason="uncertain", score=0.9 - i / 100,
                                 probability=0.05, model=settings.model_name, version=1,
                                 top=[(label, 0.46), ((label + 3) % 10, 0.31), ((label + 5) % 10, 0.12)],
                                 priority=0.9 - i / 100, ts=time.time())
        producer.send(settings.topic_requests, request.encode(), key=item.encode())
        truth.append(label)
    producer.flush()
    producer.close()
    return token, truth


def wait_for_queue(url: str, token: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"label serve exited with {proc.returncode}")
        try:
            stats = httpx.get(f"{url}/api/stats", headers={"Authorization": f"Bearer {token}"}, timeout=2).json()
            if stats["queue"]["waiting"] == PHOTOS:
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.3)
    raise SystemExit("the requests never reached the queue")


def shoot(url: str, token: str, truth: list[int], out: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        for name, viewport, answers in (("labeling-page.png", {"width": 1366, "height": 768}, 3),
                                        ("labeling-page-phone.png", {"width": 390, "height": 844}, 1)):
            page = browser.new_page(viewport=viewport)
            page.goto(url)
            page.fill("#token", token)
            page.press("#token", "Enter")
            shown = page.locator("#item-id")
            for _ in range(answers):
                expect(shown).not_to_have_text("")
                item = shown.inner_text()
                expect(page.locator("#image")).to_have_attribute("data-item", item)
                expect(page.locator("body:not([data-busy])")).to_have_count(1)
                page.keyboard.press(CLASS_KEYS[truth[int(item.split("-")[1])]])
                expect(shown).not_to_have_text(item)
            expect(page.locator("#image")).to_have_attribute("data-item", shown.inner_text())
            page.wait_for_timeout(500)  # the stats' refresh after the last answer
            page.screenshot(path=str(out / name))
            print(f"wrote {out / name}")
            page.close()
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=default_data_dir() or "../shared/data")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home, EmbeddedBroker() as broker:
        settings = Settings(home=home, bootstrap=broker.bootstrap, label_port=free_port(), label_gold_share=0.0,
                            label_second_share=0.0, label_guesses="after", log_level="warning")
        token, truth = prepare(settings, args.data_dir)
        serve = subprocess.Popen([sys.executable, "-m", "activestream", "label", "serve"],
                                 env={**os.environ, **settings.to_env()}, stdin=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{settings.label_port}"
            wait_for_queue(url, token, serve)
            shoot(url, token, truth, Path(args.out))
        finally:
            serve.terminate()
            serve.wait(30)


if __name__ == "__main__":
    main()
