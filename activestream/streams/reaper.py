"""Stops a child process once its owner is gone, however the owner died.

A SIGKILLed ``activestream run`` cannot stop what it started. Its workers notice on
their own (they watch their owner), but the embedded broker is a plain binary, so a
watcher started beside it by the same owner sends it SIGTERM when that owner goes,
then exits. It only imports the standard library, so it starts in milliseconds.

    python -m activestream.streams.reaper OWNER_PID CHILD_PID

The owner's PID comes on the command line, not from ``os.getppid()`` at start-up: an
owner killed before this process has even started has already been replaced by
another parent, and a PID read then would name that stranger as the owner.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def orphaned(owner: int) -> bool:
    """Whether the process that started us, ``owner``, is gone (we were reparented).

    True from the first instant if the owner died before we could look.

    >>> orphaned(os.getppid())
    False
    """
    return os.getppid() != owner


def watch(owner: int, child: int, interval: float = 0.25) -> bool:
    """Wait until ``child`` exits (False) or ``owner`` is gone (True: SIGTERM sent to ``child``)."""
    while _alive(child):
        if orphaned(owner):
            os.kill(child, signal.SIGTERM)
            return True
        time.sleep(interval)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the owner's to handle, in order
    watch(int(sys.argv[1]), int(sys.argv[2]))
