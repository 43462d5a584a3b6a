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

import functools
import time
from collections.abc import Callable
from typing import TypeVar

PAUSE_SECS = 0.001
THREADS = 4

Result = TypeVar("Result")


def pause() -> None:
    time.sleep(PAUSE_SECS)


def off_the_loop(work: Callable[..., Result], *args: object) -> Result:
    """``work(*args)`` in gevent's pool of native threads when this is a gevent worker, so its
    sqlite3 calls block that thread, not the event loop; hundreds of streams opening at once
    would otherwise stall every request of the worker for their reads. ``work`` must open and
    close what it uses itself (an sqlite3 connection belongs to its thread). Elsewhere (tests,
    run.py's threads) it runs right here."""
    try:
        from gevent import monkey  # noqa: PLC0415 -- only under gevent
    except ImportError:
        return work(*args)
    if not monkey.is_module_patched("socket"):
        return work(*args)
    return _threads().apply(work, args)


@functools.cache
def _threads():
    """This process's few native threads for blocking reads: few, because every thread that
    allocates gets a malloc arena of its own, and memory per worker is bounded. Made at the
    first use, in the worker (the master never imports the app)."""
    from gevent.threadpool import ThreadPool  # noqa: PLC0415

    return ThreadPool(THREADS)
