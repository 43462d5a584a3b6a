"""Write transactions that wait for SQLite's write lock without blocking the gevent loop.

SQLite's own busy handler sleeps inside the sqlite3 call, which no greenlet can interrupt:
with the usual busy timeout, a write lock held elsewhere (another worker, a maintenance
shell, a backup) froze the whole worker for the timeout, and the request then failed. Here
each attempt at the lock blocks for at most BUSY_ATTEMPT_MS, and the waiting between
attempts is a gevent sleep, so the worker keeps serving; past the total wait the caller gets
:class:`LockNotAcquired` and can ask the client to come back.

Outside gevent (the development server's threads) gevent.sleep simply sleeps the thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator

import gevent

from . import db, metrics

# How long one attempt lets SQLite's busy handler block the loop.
BUSY_ATTEMPT_MS = 5
_FIRST_PAUSE_SECS = 0.005
_LONGEST_PAUSE_SECS = 0.1


class LockNotAcquired(sqlite3.OperationalError):
    """Another connection kept the database's write lock for the whole wait. An
    OperationalError, as SQLite's own "database is locked" is, so that callers which handle
    sqlite3.Error (the housekeeping job) handle it too."""


@contextlib.contextmanager
def transaction(connection: sqlite3.Connection, wait_secs: float) -> Iterator[sqlite3.Connection]:
    """Like :func:`app.db.transaction`, with the lock waited for cooperatively for at most
    ``wait_secs``: :class:`LockNotAcquired` then, with nothing written."""
    connection.execute(f"PRAGMA busy_timeout = {BUSY_ATTEMPT_MS:d}")
    started = time.perf_counter()
    try:
        deadline = time.monotonic() + wait_secs
        with db.transaction(connection, begin=lambda: _begin_immediate(connection, deadline)):
            yield connection
    finally:
        metrics.SQLITE_WRITE_LATENCY.observe(time.perf_counter() - started)
        # The connection may serve more of the request: back to the usual busy timeout.
        connection.execute(f"PRAGMA busy_timeout = {int(db.BUSY_TIMEOUT_SECS * 1000):d}")


def _begin_immediate(connection: sqlite3.Connection, deadline: float) -> None:
    pause = _FIRST_PAUSE_SECS
    while True:
        try:
            connection.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as error:
            if not _is_busy(error):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockNotAcquired(str(error)) from error
        gevent.sleep(min(pause, left))
        pause = min(pause * 2, _LONGEST_PAUSE_SECS)


def _is_busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:  # a build of sqlite3 without error codes
        return "locked" in str(error) or "busy" in str(error)
    return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
