"""Letting the other greenlets of a gevent worker run between two pieces of blocking work.

Every sqlite3 call blocks the whole worker. Code that makes many of them in a row (a replay
read page by page, old events pruned in batches) pauses between two, so that requests and
streams are served in between. The pause must be a real one: under gevent, ``sleep(0)``
only switches to the greenlets that are ready now, and a loop of queries separated by
``sleep(0)`` starves socket I/O and timers for as long as it runs (over 100 ms measured
while pruning a backlog). A millisecond lets the event loop poll its sockets. Under run.py's
threads it is a harmless short sleep.
"""

from __future__ import annotations

import time

PAUSE_SECS = 0.001


def pause() -> None:
    time.sleep(PAUSE_SECS)
