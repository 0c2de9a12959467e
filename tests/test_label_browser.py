"""End to end in a real headless Chromium: sign in, label 20 items by keyboard, undo one, skip one.

``activestream label serve`` runs as its own process on the embedded broker; the
requests arrive on ``labeling.requests`` and the labels must come out on
``labels`` and in the store with the right ids and labeler.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from activestream.config import registry_from
from activestream.learners.preprocess import encode_png
from activestream.storage.blobs import BlobStore
from activestream.storage.store import SampleStore
from activestream.streams.broker import free_port
from activestream.streams.messages import LabelRequestV1, LabelV1
from conftest import make_settings
from label_helpers import CLASSES, digit_images, register_model

CHROMIUM = "/usr/bin/chromium"
CLASS_KEYS = "1234567890"
ITEMS = 22

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install chromium"),
]


def cli(env: dict, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "activestream", *args], env=env, capture_output=True, text=True,
                          check=True, timeout=60, **kw)


@pytest.fixture
def served(tmp_path, broker):
    """A label server process with a token for 'alice' and ITEMS requests sent on the broker."""
    from kafka import KafkaProducer

    from activestream.streams.topics import ensure_topics

    settings = make_settings(tmp_path, bootstrap=broker.bootstrap, label_port=free_port(), label_guesses="after",
                             label_second_share=0.0, label_gold_share=0.0)
    env = {**os.environ, **settings.to_env()}
    register_model(registry_from(settings), settings.model_name)
    token = cli(env, "label", "token", "create", "alice").stdout.strip()
    ensure_topics(settings, broker.bootstrap)
    blobs = BlobStore(settings.home_path / "blobs")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i, (image, truth) in enumerate(digit_images(ITEMS)):
        item_id = f"cam1-{i:04d}"
        blobs.put(item_id, encode_png(image))
        request = LabelRequestV1(id=item_id, uri=f"blob:{item_id}", reason="uncertain", score=1 - i / 100,
                                 probability=0.05, model=settings.model_name, version=1,
                                 top=[(truth, 0.6), ((truth + 1) % 10, 0.3), ((truth + 2) % 10, 0.1)],
                                 priority=1 - i / 100, ts=time.time())
        producer.send(settings.topic_requests, request.encode(), key=item_id.encode())
    producer.flush()
    producer.close()
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "activestream", "label", "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{settings.label_port}"
    try:
        wait_for_queue(url, token, proc, tmp_path / "serve.log")
        yield settings, url, token
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def wait_for_queue(url: str, token: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"label serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            stats = httpx.get(f"{url}/api/stats", headers={"Authorization": f"Bearer {token}"}, timeout=2).json()
            if stats["queue"]["waiting"] == ITEMS:
                return
        except (httpx.HTTPError, KeyError, json.JSONDecodeError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"the requests never reached the queue:\n{log.read_text()}")


def read_labels(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list[LabelV1]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                             consumer_timeout_ms=1000)
    got, deadline = [], time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        got.extend(LabelV1.model_validate_json(r.value) for r in consumer)
    consumer.close()
    return got


def test_a_labeler_works_through_the_queue_by_keyboard(served, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    settings, url, token = served
    expect.set_options(timeout=30_000)  # a busy 2-core machine: waiting longer is not a timed assertion
    answers: dict[str, int] = {}
    skipped = undone = None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.set_default_timeout(30_000)
        page.goto(url)
        page.fill("#token", token)
        page.press("#token", "Enter")
        expect(page.locator("#who")).to_have_text("alice")
        shown = page.locator("#item-id")
        idle = page.locator("body:not([data-busy])")
        step = 0
        while len(answers) < 20:
            expect(shown).not_to_have_text("")
            item = shown.inner_text()
            expect(page.locator("#image")).to_have_attribute("data-item", item)
            expect(idle).to_have_count(1)
            if step == 5:
                skipped = item
                page.keyboard.press("s")
            else:
                answers[item] = (step * 3) % len(CLASSES)
                page.keyboard.press(CLASS_KEYS[answers[item]])
            expect(shown).not_to_have_text(item)
            if step == 12:  # undo the label just given, and correct it
                undone = item
                expect(idle).to_have_count(1)
                page.keyboard.press("z")
                expect(shown).to_have_text(undone)
                expect(idle).to_have_count(1)
                answers[undone] = (answers[undone] + 1) % len(CLASSES)
                page.keyboard.press(CLASS_KEYS[answers[undone]])
                expect(shown).not_to_have_text(undone)
            step += 1
        expect(page.locator("#s-count")).to_contain_text("20 (1 skipped")
        expect(page.locator("#image")).to_have_class("pixelated")      # 8x8 digits, upscaled crisply
        expect(page.locator("#previous-text")).to_contain_text("model:")  # guesses shown after answering
        page.screenshot(path=str(tmp_path / "labeling-page.png"))
        browser.close()

    labels = read_labels(settings.bootstrap, settings.topic_labels, expected=21)
    assert len(labels) == 21 and {m.labeler for m in labels} == {"alice"}
    last = {}
    for m in labels:
        last[m.id] = m.label
    assert last == answers
    assert [m.id for m in labels].count(undone) == 2
    store = SampleStore(settings.store)
    for item, label in answers.items():
        assert [(lab.label, lab.labeler, lab.kind) for lab in store.labels_for(item)] == [(label, "alice", "human")]
    assert store.labels_for(skipped) == []
    assert (tmp_path / "labeling-page.png").stat().st_size > 10_000
    store.close()
