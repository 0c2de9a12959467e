"""Logging of every activestream process: one format, and warnings that repeat held back.

A Kafka client that has lost its broker retries every 50-100 ms and logs the same few
errors each time (aiokafka: about 1,500 lines a minute); the first line, then one line per
``every`` seconds with how many were held back, says as much and keeps the log readable.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
NOISY = ("aiokafka", "kafka")  # their INFO is per-connection chatter


class Repeats(logging.Filter):
    """Lets a warning or error through once per ``every`` seconds per logger and message
    template; the next one let through says how many were held back. Lower levels pass.

    >>> now = [0.0]
    >>> repeats = Repeats(every=30.0, clock=lambda: now[0])
    >>> def record(): return logging.LogRecord("aiokafka", logging.ERROR, "", 0, "Unable connect to node %s", (1,), None)
    >>> [repeats.filter(record()) for _ in range(3)]
    [True, False, False]
    >>> now[0] = 31.0; r = record(); repeats.filter(r), r.getMessage()
    (True, 'Unable connect to node 1 (2 more like this held back in 31 s)')
    """

    def __init__(self, every: float = 30.0, clock: Callable[[], float] = time.monotonic, limit: int = 1000):
        super().__init__()
        self.every = every
        self.clock = clock
        self.limit = limit
        self._seen: dict[tuple, tuple[float, int]] = {}  # key -> (when last let through, held back since)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        last, held = self._seen.get(key, (None, 0))
        if last is not None and now - last < self.every:
            self._seen[key] = (last, held + 1)
            return False
        if held:
            record.msg = f"{record.msg} ({held} more like this held back in {now - last:.0f} s)"
        if len(self._seen) >= self.limit:  # messages formatted before logging make new keys each time
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.every}
        self._seen[key] = (now, 0)
        return True


def configure(level: str) -> None:
    """The root logger at ``level`` on stderr, repeats held back, the Kafka clients' chatter off."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
    for handler in logging.getLogger().handlers:
        handler.addFilter(Repeats())
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
