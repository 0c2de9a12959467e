"""Pacing for reads whose cost grows with the store: the learner's label count, the live
accuracy gauges, the display's audit column. Each runs at most every ``every`` seconds and
never more than ``share`` of the time, however long the read has grown, so a store of a
million labels costs a worker a bounded fraction of a core, not all of it."""

from __future__ import annotations

import time
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Paced(Generic[T]):
    """``read``'s last result, read again once ``every`` seconds have passed since that read
    started, or ``took / share`` seconds when the read itself took ``took``, whichever is longer.

    >>> now, reads = [0.0], []
    >>> def read():
    ...     reads.append(now[0]); now[0] += 0.5  # each read takes 0.5 s
    ...     return len(reads)
    >>> count = Paced(read, every=1.0, share=0.1, clock=lambda: now[0])
    >>> count.get(), count.due()
    (1, False)
    >>> now[0] = 4.9; count.get()  # 0.5 s is a tenth of 5 s: too soon
    1
    >>> now[0] = 5.0; count.get()
    2
    """

    def __init__(self, read: Callable[[], T], every: float, share: float = 0.05,
                 clock: Callable[[], float] = time.monotonic):
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], not {share}")
        self.read = read
        self.every = every
        self.share = share
        self.clock = clock
        self.value: T | None = None
        self._next = float("-inf")

    def due(self) -> bool:
        return self.clock() >= self._next

    def get(self) -> T:
        if self.due():
            started = self.clock()
            self.value = self.read()
            self._next = started + max(self.every, (self.clock() - started) / self.share)
        return self.value
