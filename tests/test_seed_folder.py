"""``activestream seed`` from a folder of CIFAR-10 JPEGs in ImageFolder layout: the class names
reach the registry, the Label Studio labeling config and the labeling page (real Chromium)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from activestream.cli import main
from activestream.config import registry_from
from activestream.storage.store import SampleStore
from tests.cifar_data import CIFAR_CLASSES, cifar_jpegs
from tests.conftest import make_settings

PER_CLASS = 12
CHROMIUM = "/usr/bin/chromium"


def cifar_folder(dest: Path, per_class: int) -> Path:
    """The first ``per_class`` training JPEGs of each class, copied as ``dest/<class>/<n>.jpg``."""
    for name, file_name, data in cifar_jpegs({"train": per_class})["train"]:
        (dest / name).mkdir(parents=True, exist_ok=True)
        (dest / name / file_name).write_bytes(data)
    return dest


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return cifar_folder(tmp_path_factory.mktemp("cifar"), PER_CLASS)


def seed(capsys, settings, folder: Path, *extra: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(["seed", str(folder), "--home", str(settings.home_path), "--arch", "small_cnn", "--size", "32",
              "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--max-steps", "10", "--by", "ann", *extra])
    out = capsys.readouterr()
    return done.value.code, out.out + out.err


def test_seed_from_an_image_folder_names_the_classes_everywhere(tmp_path, cifar, capsys, monkeypatch):
    monkeypatch.delenv("ACTIVESTREAM_BOOTSTRAP", raising=False)
    settings = make_settings(tmp_path)
    code, out = seed(capsys, settings, cifar)
    assert code == 0, out
    mv = registry_from(settings).get(settings.model_name, 1)
    assert mv.status == "promoted" and tuple(mv.spec["classes"]) == CIFAR_CLASSES
    assert (mv.spec["height"], mv.spec["width"], mv.spec["channels"]) == (32, 32, 3)
    assert mv.train_size == 10 * PER_CLASS and mv.history[0]["by"] == "ann"
    store = SampleStore(settings.store)
    assert store.count_labeled() == 10 * PER_CLASS
    store.close()

    config = tmp_path / "studio.xml"
    with pytest.raises(SystemExit) as done:
        main(["label", "export", "--home", str(settings.home_path), "--out", str(tmp_path / "tasks.json"),
              "--config-out", str(config)])
    assert done.value.code == 0
    choices = ET.fromstring(config.read_text()).iter("Choice")
    assert tuple(c.get("value") for c in choices) == CIFAR_CLASSES

    code, out = seed(capsys, settings, cifar, "--reason", "a second try")  # the same folder again
    assert code == 0 and registry_from(settings).get(settings.model_name, 2).status == "candidate"
    assert "models promote 2" in out
    store = SampleStore(settings.store)
    assert store.count_labeled() == 10 * PER_CLASS  # content-addressed ids: nothing stored twice
    store.close()


def test_a_folder_with_one_class_is_refused(tmp_path, cifar, capsys):
    one = tmp_path / "one"
    (one / "cat").mkdir(parents=True)
    for path in list((cifar / "cat").iterdir())[:3]:
        (one / "cat" / path.name).write_bytes(path.read_bytes())
    code, out = seed(capsys, make_settings(tmp_path), one)
    assert code == 2 and "1 class folder(s)" in out


@pytest.mark.kafka
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install chromium")
def test_the_labeling_page_shows_the_seeded_class_names(tmp_path, cifar, broker, capsys):
    from playwright.sync_api import expect, sync_playwright

    from activestream.streams.broker import free_port

    settings = make_settings(tmp_path, bootstrap=broker.bootstrap, label_port=free_port(),
                             label_second_share=0.0, label_gold_share=0.0)
    assert seed(capsys, settings, cifar)[0] == 0
    env = {**os.environ, **settings.to_env()}
    token = subprocess.run([sys.executable, "-m", "activestream", "label", "token", "create", "ann"], env=env,
                           capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    _request_seed_images(settings, 3)
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "activestream", "label", "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    shot = tmp_path / "labeling-page-cifar.png"
    try:
        _wait_for_items(f"http://127.0.0.1:{settings.label_port}", token, proc, 3)
        expect.set_options(timeout=30_000)  # a busy machine: waiting longer is not a timed assertion
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(f"http://127.0.0.1:{settings.label_port}")
            page.fill("#token", token)
            page.press("#token", "Enter")
            expect(page.locator("#item-id")).not_to_have_text("")
            buttons = page.locator("#classes button")
            expect(buttons).to_have_count(len(CIFAR_CLASSES))
            page.screenshot(path=str(shot))
            texts = buttons.all_inner_texts()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    print(f"\nlabeling page screenshot: {shot}")
    # each button: its key, then the class name
    assert [re.sub(r"^\s*\d\s*", "", t).strip() for t in texts] == list(CIFAR_CLASSES)
    assert shot.stat().st_size > 10_000


def _request_seed_images(settings, count: int) -> None:
    """Send labeling requests for ``count`` stored seed images, as the selector would."""
    from kafka import KafkaProducer

    from activestream.streams.messages import LabelRequestV1
    from activestream.streams.topics import ensure_topics

    store = SampleStore(settings.store)
    ids = sorted(sid for sid, _, _ in store.training_set())[:count]
    store.close()
    ensure_topics(settings, settings.bootstrap)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap)
    for i, sid in enumerate(ids):
        request = LabelRequestV1(id=sid, uri=f"blob:{sid}", reason="uncertain", score=0.5, probability=0.05,
                                 model=settings.model_name, version=1, top=[(3, 0.5), (5, 0.3), (0, 0.2)],
                                 priority=1 - i / 10, ts=time.time())
        producer.send(settings.topic_requests, request.encode(), key=sid.encode())
    producer.flush()
    producer.close()


def _wait_for_items(url: str, token: str, proc: subprocess.Popen, count: int, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"label serve exited with {proc.returncode}"
        try:
            stats = httpx.get(f"{url}/api/stats", headers={"Authorization": f"Bearer {token}"}, timeout=2).json()
            if stats["queue"]["waiting"] >= count:
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.3)
    raise AssertionError("the labeling requests never reached the queue")
