"""The embedded broker never outlives its owner, even one killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from activestream.streams.broker import EmbeddedBroker

pytestmark = pytest.mark.kafka

OWNER = """
import sys, time
from activestream.streams.broker import EmbeddedBroker
broker = EmbeddedBroker()
broker.start()
print(broker.process_.pid, broker.reaper_.pid, flush=True)
time.sleep(120)
"""


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_a_sigkilled_owner_leaves_no_broker_behind():
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[1])
    try:
        broker_pid, reaper_pid = (int(p) for p in owner.stdout.readline().split())
        assert running(broker_pid) and running(reaper_pid)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        assert wait_gone(broker_pid), "the broker outlived its SIGKILLed owner"
        assert wait_gone(reaper_pid), "the reaper outlived the broker"
    finally:
        if owner.poll() is None:
            owner.kill()


def test_a_normal_stop_stops_the_broker_and_its_reaper():
    with EmbeddedBroker() as broker:
        proc, reaper = broker.process_, broker.reaper_
        assert proc.poll() is None and reaper.poll() is None
    assert proc.poll() is not None and reaper.poll() is not None
