"""``label serve`` survives the loss of its broker: a labeler's answers are taken and kept
while the broker is gone, the stats say so, the server neither dies nor floods its log,
and the kept answers reach ``labels`` once the broker is back."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from activestream.config import registry_from
from activestream.learners.preprocess import encode_png
from activestream.storage.blobs import BlobStore
from activestream.storage.store import SampleStore
from activestream.streams.broker import EmbeddedBroker, free_port
from activestream.streams.messages import LabelRequestV1
from activestream.streams.topics import ensure_topics
from tests.conftest import make_settings
from tests.label_helpers import digit_images, register_model
from tests.test_label_browser import read_labels, wait_for_queue

pytestmark = pytest.mark.kafka

ITEMS = 22  # wait_for_queue's count


def send_requests(settings, bootstrap: str) -> None:
    from kafka import KafkaProducer

    blobs = BlobStore(settings.home_path / "blobs")
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i, (image, truth) in enumerate(digit_images(ITEMS)):
        item_id = f"cam1-{i:04d}"
        blobs.put(item_id, encode_png(image))
        request = LabelRequestV1(id=item_id, uri=f"blob:{item_id}", reason="uncertain", score=0.5, probability=0.05,
                                 model=settings.model_name, version=1, top=[(truth, 0.6)], priority=0.5, ts=time.time())
        producer.send(settings.topic_requests, request.encode(), key=item_id.encode())
    producer.flush()
    producer.close()


def until(check, what: str, log, timeout: float = 180.0):
    """Poll ``check`` until it returns something true; the bound only catches a hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what} never happened:\n{log.read_text()[-4000:]}")


def test_answers_given_while_the_broker_is_gone_are_kept_and_sent_when_it_is_back(tmp_path):
    port = free_port()
    broker = EmbeddedBroker(port=port)
    bootstrap = broker.start()
    settings = make_settings(tmp_path, bootstrap=bootstrap, label_port=free_port(), label_gold_share=0.0,
                             label_second_share=0.0)
    env = {**os.environ, **settings.to_env()}
    register_model(registry_from(settings), settings.model_name)
    token = subprocess.run([sys.executable, "-m", "activestream", "label", "token", "create", "ann"], env=env,
                           capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    ensure_topics(settings, bootstrap)
    send_requests(settings, bootstrap)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "activestream", "label", "serve"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url, auth = f"http://127.0.0.1:{settings.label_port}", {"Authorization": f"Bearer {token}"}
    answered: dict[str, int] = {}

    def answer() -> str:
        item = httpx.post(f"{url}/api/next", headers=auth, timeout=60).json()["item"]
        answered[item["id"]] = len(answered) % 10
        done = httpx.post(f"{url}/api/items/{item['id']}/label", json={"label": answered[item["id"]]},
                          headers=auth, timeout=60)
        assert done.status_code == 200, done.text
        return item["id"]

    def stats() -> dict:
        return httpx.get(f"{url}/api/stats", headers=auth, timeout=60).json()

    try:
        wait_for_queue(url, token, proc, log)
        before = answer()
        assert stats()["broker"] == {"up": True, "waiting": 0}
        broker.stop()
        lines_at_loss = len(log.read_text().splitlines())
        during = [answer() for _ in range(5)]
        assert stats()["broker"] == {"up": False, "waiting": 5}
        time.sleep(10)  # the server goes on retrying in the background: it must neither die nor flood its log
        assert proc.poll() is None, log.read_text()[-4000:]
        flood = len(log.read_text().splitlines()) - lines_at_loss
        assert flood < 60, f"{flood} log lines while the broker was away:\n{log.read_text()[-4000:]}"

        broker = EmbeddedBroker(port=port)  # back on the same address, as a restarted broker is
        broker.start()
        ensure_topics(settings, bootstrap)
        until(lambda: stats()["broker"] == {"up": True, "waiting": 0}, "the kept answers' delivery", log)
        after = answer()
        labels = read_labels(bootstrap, settings.topic_labels, expected=6)
        assert {m.id: m.label for m in labels} == {k: answered[k] for k in (*during, after)}
        assert {m.labeler for m in labels} == {"ann"}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        broker.stop()
    store = SampleStore(settings.store)
    assert {k: [row.label for row in store.labels_for(k)] for k in answered} == {k: [v] for k, v in answered.items()}
    assert before in answered
    store.close()
