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

# The owner dies the instant its reaper is launched, long before a Python process can
# have started: whatever the machine's speed, the reaper starts an orphan.
OWNER_DIES_AT_ONCE = """
import os
from activestream.streams.broker import EmbeddedBroker

class DiesAtOnce(EmbeddedBroker):
    def _wait_ready(self, timeout):
        print(self.process_.pid, self.reaper_.pid, flush=True)
        os._exit(0)

DiesAtOnce().start()
"""

# A worker's owner that dies as soon as the worker is launched, before it has imported anything.
WORKER_OWNER_DIES_AT_ONCE = """
import os, subprocess, sys
worker = subprocess.Popen([sys.executable, "-m", "activestream", "worker", "ingest", "--owner", str(os.getpid())],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
print(worker.pid, flush=True)
os._exit(0)
"""

ROOT = Path(__file__).resolve().parents[1]


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
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True, cwd=ROOT)
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


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_an_owner_dead_before_its_reaper_started_still_gets_its_broker_stopped():
    owner = subprocess.Popen([sys.executable, "-c", OWNER_DIES_AT_ONCE], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    broker_pid, reaper_pid = (int(p) for p in owner.stdout.readline().split())
    owner.wait(60)
    try:
        assert wait_gone(broker_pid, 30), "the broker outlived an owner that died before the reaper started"
        assert wait_gone(reaper_pid, 30), "the reaper outlived the broker"
    finally:
        for pid in (broker_pid, reaper_pid):
            if running(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_a_worker_whose_owner_died_before_it_started_stops(broker, tmp_path):
    env = {**os.environ, "ACTIVESTREAM_BOOTSTRAP": broker.bootstrap, "ACTIVESTREAM_HOME": str(tmp_path / "home")}
    owner = subprocess.Popen([sys.executable, "-c", WORKER_OWNER_DIES_AT_ONCE], stdout=subprocess.PIPE, text=True,
                             cwd=ROOT, env=env)
    worker_pid = int(owner.stdout.readline())
    owner.wait(60)
    try:
        # A worker takes seconds to import torch and faust on a slow machine, then looks
        # once a second: the bound is generous because it is not what is tested.
        assert wait_gone(worker_pid, 120), "a worker outlived an owner that died before it started"
    finally:
        if running(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)


def test_a_normal_stop_stops_the_broker_and_its_reaper():
    with EmbeddedBroker() as broker:
        proc, reaper = broker.process_, broker.reaper_
        assert proc.poll() is None and reaper.poll() is None
    assert proc.poll() is not None and reaper.poll() is not None
