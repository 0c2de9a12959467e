"""``label serve --owner PID`` never outlives the process that started it, and stops cleanly
(its store and consumer closed, not killed) once that process is gone, however it died."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from activestream.config import worker_env
from activestream.streams.broker import free_port
from tests.conftest import make_settings
from tests.test_broker_reaper import running, wait_gone

pytestmark = pytest.mark.kafka

# Stands in for `activestream run`: starts label serve as its owner, says its PID, then waits to be killed.
OWNER = """
import os, subprocess, sys
log = open(sys.argv[1], "ab")
serve = subprocess.Popen([sys.executable, "-m", "activestream", "label", "serve", "--owner", str(os.getpid())],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
print(serve.pid, flush=True)
serve.wait()
"""


def wait_serving(url: str, pid: int, log: Path, timeout: float = 120.0) -> None:
    """Until label serve answers (401 without a token); the bound only catches a hang."""
    deadline = time.monotonic() + timeout
    while True:
        assert running(pid), f"label serve exited before serving:\n{log.read_text()}"
        try:
            if httpx.get(f"{url}/api/config", timeout=2).status_code == 401:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"label serve did not answer within {timeout} s:\n{log.read_text()}"
        time.sleep(0.2)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_label_serve_stops_cleanly_once_its_sigkilled_owner_is_gone(tmp_path, broker):
    settings = make_settings(tmp_path, bootstrap=broker.bootstrap, label_port=free_port())
    log = tmp_path / "label.log"
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(log)], stdout=subprocess.PIPE, text=True,
                             env=worker_env(settings))
    serve_pid = int(owner.stdout.readline())
    try:
        wait_serving(f"http://127.0.0.1:{settings.label_port}", serve_pid, log)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        # It looks once a second, then closes the server, the consumer and the store.
        assert wait_gone(serve_pid, 60), f"label serve outlived its SIGKILLed owner:\n{log.read_text()}"
        text = log.read_text()
        assert f"owner process {owner.pid} is gone; stopping" in text
        assert "Traceback" not in text, text
    finally:
        if running(serve_pid):
            os.kill(serve_pid, signal.SIGKILL)
        if owner.poll() is None:
            owner.kill()



def test_label_serve_stops_cleanly_on_sigterm(tmp_path, broker):
    settings = make_settings(tmp_path, bootstrap=broker.bootstrap, label_port=free_port())
    log = tmp_path / "label.log"
    with log.open("ab") as out:
        serve = subprocess.Popen([sys.executable, "-m", "activestream", "label", "serve"], env=worker_env(settings),
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_serving(f"http://127.0.0.1:{settings.label_port}", serve.pid, log)
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0, f"label serve ended with {serve.returncode} on SIGTERM:\n{log.read_text()}"
        assert "label serve stopped" in log.read_text()  # after the consumer and the store were closed
        # Its home has no model: it says so at start instead of turning labelers away silently.
        assert "no version of classifier is in force" in log.read_text()
    finally:
        if serve.poll() is None:
            serve.kill()
