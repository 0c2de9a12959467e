"""Failed sign-ins per client address, as a token bucket: guessing tokens becomes slow.

An address may fail ``burst`` times in a row and earns one more try every
``window / burst`` seconds, up to ``burst`` again. An address with no try left is
answered 429 with ``Retry-After`` before its credentials are even looked at, so a
right guess would not show either. Time comes from the clock passed in: tests move
it by hand instead of sleeping.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class FailedSignIns:
    """Tries left per client address; ``failed`` spends one, time earns them back.

    >>> now = [0.0]
    >>> signins = FailedSignIns(burst=2, window=10.0, clock=lambda: now[0])
    >>> signins.failed("10.0.0.9"); signins.retry_after("10.0.0.9")
    0
    >>> signins.failed("10.0.0.9"); signins.retry_after("10.0.0.9"), signins.retry_after("10.0.0.10")
    (5, 0)
    >>> now[0] = 5.0; signins.retry_after("10.0.0.9")
    0
    """

    def __init__(self, burst: int, window: float, clock: Callable[[], float] = time.monotonic,
                 max_addresses: int = 10_000):
        self.burst = burst
        self.window = window
        self.clock = clock
        self.max_addresses = max_addresses
        self.buckets_: dict[str, tuple[float, float]] = {}  # address -> (tries left, as of when), oldest first
        self._lock = threading.Lock()

    @property
    def interval(self) -> float:
        """Seconds to earn back one try."""
        return self.window / self.burst

    def _left(self, address: str, now: float) -> float:
        left, when = self.buckets_.get(address, (float(self.burst), now))
        return min(float(self.burst), left + max(0.0, now - when) / self.interval)

    def retry_after(self, address: str) -> int:
        """Whole seconds until ``address`` may try again; 0 when it may now. Changes nothing."""
        with self._lock:
            left = self._left(address, self.clock())
        return 0 if left >= 1.0 else max(1, math.ceil((1.0 - left) * self.interval))

    def failed(self, address: str) -> None:
        """Spend one of ``address``'s tries."""
        with self._lock:
            now = self.clock()
            left = self._left(address, now) - 1.0
            self.buckets_.pop(address, None)  # re-inserted last: the dict stays in order of last failure
            self.buckets_[address] = (left, now)
            if len(self.buckets_) > self.max_addresses:
                self._forget(now)

    def _forget(self, now: float) -> None:
        """Keep memory bounded under a flood of addresses: drop those that earned every try back,
        then those whose last failure is oldest."""
        for address in [a for a in self.buckets_ if self._left(a, now) >= self.burst]:
            del self.buckets_[address]
        while len(self.buckets_) > self.max_addresses:
            del self.buckets_[next(iter(self.buckets_))]
