"""`run`, `label serve` and `simulate` write only under their home and their --out folder:
started in an empty directory with their default folders, nothing else appears there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from activestream.streams.broker import free_port
from tests.test_label_serve_owner import wait_serving

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[1]


def user_env() -> dict[str, str]:
    """The environment of a user who set nothing: no ACTIVESTREAM_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTIVESTREAM_")}
    return {**env, "PYTHONPATH": str(ROOT), "ACTIVESTREAM_THREADS": "1"}


def everything(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_run_label_serve_and_simulate_write_only_under_home_and_out(tmp_path, broker):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = user_env()
    # `run` with its default home (var/runs/<time>), long enough to start every worker.
    done = subprocess.run([sys.executable, "-m", "activestream", "run", "--dataset", "digits", "--images", "300",
                           "--seed-size", "200", "--rate", "0"], cwd=cwd, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=480)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    homes = list((cwd / "var" / "runs").iterdir())
    assert len(homes) == 1 and (homes[0] / "logs").is_dir()
    assert any((homes[0] / "faust").iterdir()), "the workers' faust folders belong under the home"

    port = free_port()
    log = tmp_path / "label.log"
    with log.open("ab") as out:
        serve = subprocess.Popen([sys.executable, "-m", "activestream", "label", "serve", "--home", str(homes[0]),
                                  "--bootstrap", broker.bootstrap, "--port", str(port)],
                                 cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_serving(f"http://127.0.0.1:{port}", serve.pid, log)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)

    done = subprocess.run([sys.executable, "-m", "activestream", "simulate", "--dataset", "digits", "--images", "300",
                           "--seed-size", "100", "--window", "100", "--batch", "100", "--min-steps", "5",
                           "--max-steps", "5", "--device", "cpu", "--threads", "1", "--no-progress"],
                          cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=480)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(list((cwd / "var" / "sim").iterdir())) == 1

    assert {p.name for p in cwd.iterdir()} == {"var"}, everything(cwd)
    assert {p.name for p in (cwd / "var").iterdir()} == {"runs", "sim"}, everything(cwd)
