"""A person labels the demo: ``activestream run --labelers people`` on the embedded broker,
with simulated traffic and no simulated labeler, prints its labeling page's URL and a
token; a real headless Chromium signs in with them, labels by keyboard until a
fine-tuning round is due, and run's own output then shows the new version served."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from activestream.simulation.datasets import load_dataset
from activestream.storage.store import SampleStore
from activestream.streams.broker import free_port
from tests.test_no_stray_files import user_env

CHROMIUM = "/usr/bin/chromium"
CLASS_KEYS = "1234567890"  # the page's keys for classes 0..9
PAGE = re.compile(r"labeling\s+(http://\S+) sign in with the token (\S+) \(labeler '(\S+)'\)")
RETRAIN_EVERY = 8

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install chromium"),
]


def wait_for(pattern: re.Pattern, out: Path, proc: subprocess.Popen, timeout: float) -> re.Match:
    """The first match of ``pattern`` in run's output; fails when run exits first or never prints it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pattern.search(out.read_text(errors="replace"))
        if found:
            return found
        assert proc.poll() is None, f"run exited with {proc.returncode}:\n{out.read_text()[-4000:]}"
        time.sleep(0.5)
    raise AssertionError(f"run never printed {pattern.pattern!r}:\n{out.read_text()[-4000:]}")


def test_a_person_labels_the_demo_in_the_browser_and_a_new_version_is_served(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    home, out = tmp_path / "home", tmp_path / "run.out"
    # Every answer promoted: this shows labels reaching a round and its version served,
    # not how much 8 labels improve a model. No gold or second-opinion items: one person.
    env = {**user_env(), "ACTIVESTREAM_LABEL_PORT": str(free_port()), "ACTIVESTREAM_PROMOTE_TOLERANCE": "1",
           "ACTIVESTREAM_LABEL_GOLD_SHARE": "0", "ACTIVESTREAM_LABEL_SECOND_SHARE": "0"}
    command = [sys.executable, "-m", "activestream", "run", "--labelers", "people", "--home", str(home),
               "--dataset", "digits", "--images", "5000", "--rate", "4", "--budget", "0.25", "--seed-size", "200",
               "--retrain-every", str(RETRAIN_EVERY)]
    truth = load_dataset("digits").train_y
    answered: dict[str, int] = {}
    with out.open("wb") as sink:
        proc = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        url, token, person = wait_for(PAGE, out, proc, timeout=300).groups()
        assert f"home      {home.resolve()}" in out.read_text() and "broker    127.0.0.1:" in out.read_text()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)  # a busy 2-core machine: waiting longer is not a timed assertion
            page.goto(url)
            page.fill("#token", token)
            page.press("#token", "Enter")
            expect(page.locator("#who")).to_have_text(person)
            shown, idle = page.locator("#item-id"), page.locator("body:not([data-busy])")
            while len(answered) < RETRAIN_EVERY:
                expect(shown).not_to_have_text("")  # the queue fills as the traffic's picks arrive
                item = shown.inner_text()
                expect(page.locator("#image")).to_have_attribute("data-item", item)
                expect(idle).to_have_count(1)
                # The person sees the digit: its class, as the demo dataset knows it.
                answered[item] = int(truth[int(item.split("-")[2])])
                page.keyboard.press(CLASS_KEYS[answered[item]])
                expect(shown).not_to_have_text(item)
            browser.close()
        wait_for(re.compile(r"serving v2\b"), out, proc, timeout=600)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == 0, out.read_text()[-4000:]
    store = SampleStore(f"sqlite:///{home / 'store.db'}")
    for item, label in answered.items():
        assert [(row.label, row.labeler, row.kind) for row in store.labels_for(item)] == [(label, person, "human")]
    store.close()
