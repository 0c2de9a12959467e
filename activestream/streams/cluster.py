"""A local deployment: the broker (embedded unless configured), one process per worker
and, when asked for, ``activestream label serve``.

Used by ``activestream run`` and by the end-to-end tests; every process it starts is
stopped by PID.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from activestream.config import Settings, worker_env
from activestream.errors import EXIT_CONFIG, ConfigError
from activestream.storage.store import SampleStore
from activestream.streams.broker import EmbeddedBroker
from activestream.streams.topics import ensure_topics
from activestream.streams.worker import WORKERS, copies

log = logging.getLogger(__name__)

STEADY = 60.0  # seconds a restarted worker must run before its backoff starts again from the shortest
#: ``activestream label serve`` as a supervised process: not a worker (it is not in
#: ``WORKERS``, ``activestream run`` does not start it), but stopped and restarted like one.
LABEL = "label"


@dataclass
class Restarts:
    """How often a worker was restarted, and when the next restart is due (None: it runs)."""

    count: int = 0
    due: float | None = None
    started: float = field(default_factory=time.monotonic)
    last_exit: int | None = None


def restart_delay(count: int) -> float:
    """Seconds before restart number ``count + 1``: 1, 2, 4 ... up to 30.

    >>> [restart_delay(c) for c in (0, 1, 2, 10)]
    [1.0, 2.0, 4.0, 30.0]
    """
    return min(30.0, 2.0 ** count)


def command(name: str, instance: int, owner: int) -> list[str]:
    """The command line of one supervised process; ``owner`` is the PID it must not outlive.

    >>> command("label", 1, owner=42)[-4:]
    ['label', 'serve', '--owner', '42']
    """
    if name != LABEL:
        return [sys.executable, "-m", "activestream", "worker", name, "--instance", str(instance),
                "--owner", str(owner)]
    if instance != 1:
        raise ConfigError(f"instance {instance} of label serve: it runs as one process, on ACTIVESTREAM_LABEL_PORT")
    # Its settings (label_port, bootstrap, store) come through the environment, like a worker's.
    return [sys.executable, "-m", "activestream", "label", "serve", "--owner", str(owner)]


class LocalCluster:
    """Broker plus worker processes; ``settings`` gains the broker's address on ``start``.

    :meth:`supervise`, called now and then, restarts a worker that died, with backoff.
    ``workers`` may include :data:`LABEL` (``label serve``, on ``settings.label_port``).
    Every process started, restarts included, stays in :attr:`started_`.
    """

    def __init__(self, settings: Settings, workers: tuple[str, ...] = WORKERS):
        self.settings = settings
        self.workers = workers
        self.broker_: EmbeddedBroker | None = None
        self.procs_: dict[str, subprocess.Popen] = {}
        self.restarts_: dict[str, Restarts] = {}
        self.started_: list[subprocess.Popen] = []

    @property
    def logs(self) -> Path:
        return self.settings.home_path / "logs"

    def start(self) -> Settings:
        self.logs.mkdir(parents=True, exist_ok=True)
        if not self.settings.bootstrap:
            self.broker_ = EmbeddedBroker(log_path=self.logs / "broker.log")
            self.settings = self.settings.model_copy(update={"bootstrap": self.broker_.start()})
            _forget_positions(self.settings)
        ensure_topics(self.settings, self.settings.bootstrap)
        for name in self.workers:
            for instance in range(1, copies(self.settings, name) + 1):
                self.start_worker(name, instance)
        return self.settings

    def start_worker(self, name: str, instance: int = 1) -> subprocess.Popen:
        """Start (or restart) a worker process; the second predictor is ``predictor.2`` in
        :attr:`procs_` and in the logs."""
        key = name if instance == 1 else f"{name}.{instance}"
        argv = command(name, instance, owner=os.getpid())
        log_file = open(self.logs / f"{key}.log", "ab")
        proc = subprocess.Popen(
            argv,
            env=worker_env(self.settings), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches `run`, which stops workers in order
        )
        log_file.close()
        self.procs_[key] = proc
        self.started_.append(proc)
        self.restarts_.setdefault(key, Restarts()).started = time.monotonic()
        return proc

    def supervise(self, now: float | None = None) -> list[str]:
        """Restart every worker that exited, each after its backoff; returns what was done.

        Raises :class:`ConfigError` for a worker that exited because it refuses its
        configuration (exit code 2): it would only do so again.
        """
        now = time.monotonic() if now is None else now
        events = []
        for key, proc in list(self.procs_.items()):
            state = self.restarts_[key]
            code = proc.poll()
            if code is None:
                if state.count and now - state.started > STEADY:
                    state.count = 0
                continue
            if code == EXIT_CONFIG:
                raise ConfigError(f"worker {key} refuses its configuration (exit code 2); see {self.logs / key}.log")
            if state.due is None:
                state.due, state.last_exit = now + restart_delay(state.count), code
                events.append(f"worker {key} exited with code {code}; restarting in {state.due - now:.0f} s")
                log.warning("%s (log: %s.log)", events[-1], self.logs / key)
            elif now >= state.due:
                name, _, instance = key.partition(".")
                self.start_worker(name, int(instance or 1))
                state.count, state.due = state.count + 1, None
                events.append(f"worker {key} restarted (restart {state.count})")
                log.warning(events[-1])
        return events

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


def _forget_positions(settings: Settings) -> None:
    """A new embedded broker holds no records: the positions a home kept from an earlier
    run name offsets of topics that are gone (see ``SampleStore.forget_positions``)."""
    store = SampleStore(settings.store)
    try:
        store.create_schema()
        if store.forget_positions(settings.group_prefix):
            log.info("a new embedded broker: the stream positions kept from the last run are forgotten")
    finally:
        store.close()
