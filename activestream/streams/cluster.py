"""A local deployment: the broker (embedded unless configured) and one process per worker.

Used by ``activestream run`` and by the end-to-end tests; every process it starts is
stopped by PID.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from activestream.config import Settings, worker_env
from activestream.streams.broker import EmbeddedBroker
from activestream.streams.topics import ensure_topics
from activestream.streams.worker import WORKERS

log = logging.getLogger(__name__)


class LocalCluster:
    """Broker plus worker processes; ``settings`` gains the broker's address on ``start``."""

    def __init__(self, settings: Settings, workers: tuple[str, ...] = WORKERS):
        self.settings = settings
        self.workers = workers
        self.broker_: EmbeddedBroker | None = None
        self.procs_: dict[str, subprocess.Popen] = {}

    @property
    def logs(self) -> Path:
        return self.settings.home_path / "logs"

    def start(self) -> Settings:
        self.logs.mkdir(parents=True, exist_ok=True)
        if not self.settings.bootstrap:
            self.broker_ = EmbeddedBroker(log_path=self.logs / "broker.log")
            self.settings = self.settings.model_copy(update={"bootstrap": self.broker_.start()})
        ensure_topics(self.settings, self.settings.bootstrap)
        for name in self.workers:
            copies = self.settings.predictors if name == "predictor" else 1
            for instance in range(1, copies + 1):
                self.start_worker(name, instance)
        return self.settings

    def start_worker(self, name: str, instance: int = 1) -> subprocess.Popen:
        """Start (or restart) a worker process; the second predictor is ``predictor.2`` in
        :attr:`procs_` and in the logs."""
        key = name if instance == 1 else f"{name}.{instance}"
        log_file = open(self.logs / f"{key}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "activestream", "worker", name, "--instance", str(instance)],
            env=worker_env(self.settings), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches `run`, which stops workers in order
        )
        log_file.close()
        self.procs_[key] = proc
        return proc

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs_[name]
        os.kill(proc.pid, sig)
        proc.wait(30)

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.procs_.items()}

    def stop(self, timeout: float = 15.0) -> None:
        for proc in self.procs_.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs_.items():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("worker %s did not stop in %.0f s; killing it", name, timeout)
                proc.kill()
                proc.wait(5)
        if self.broker_:
            self.broker_.stop()
            self.broker_ = None

    def __enter__(self) -> "LocalCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
