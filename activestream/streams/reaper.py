"""Stops a child process once its owner is gone, however the owner died.

A SIGKILLed ``activestream run`` cannot stop what it started. Its workers notice on
their own (they watch their parent), but the embedded broker is a plain binary, so a
watcher started beside it by the same owner sends it SIGTERM when that owner goes,
then exits. It only imports the standard library, so it starts in milliseconds.

    python -m activestream.streams.reaper CHILD_PID
"""

from __future__ import annotations

import os
import signal
import sys
import time


def watch(child: int, interval: float = 0.25) -> bool:
    """Wait until ``child`` exits (False) or our parent, its owner, is gone (True: SIGTERM sent)."""
    owner = os.getppid()
    while _alive(child):
        if os.getppid() != owner:  # orphaned: the owner died and we were reparented
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
    watch(int(sys.argv[1]))
