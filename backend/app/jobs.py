"""Periodic housekeeping in every process: marks stale executions and conversations.

Started by the first request a process serves rather than at import, so that processes
which never serve (the reloader's parent in ``run.py --debug``, test apps) run nothing.
Under the gevent worker the thread is a greenlet, and every sqlite3 call blocks the whole
worker: old events are therefore pruned in batches of PRUNE_BATCH rows, one short
transaction each, with a short pause in between (app.cooperative), so even a large backlog (the
first sweep after a long stop) never holds the event loop for long.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

from flask import Flask

from . import cooperative, db, events, lifecycle
from .executions import EVENTS_KEPT, mark_stale

log = logging.getLogger(__name__)

EXTENSION = "agented_jobs"
_start_lock = threading.Lock()
# Longest pause between two sweeps; shorter when a threshold is short.
MAX_INTERVAL_SECS = 60.0
# Events deleted per statement (and transaction) when pruning.
PRUNE_BATCH = 500


def interval(app: Flask) -> float:
    shortest = min(
        app.config["STALE_EXECUTION_THRESHOLD_SECS"],
        app.config["STALE_CONVERSATION_THRESHOLD_SECS"],
    )
    return min(MAX_INTERVAL_SECS, max(1.0, shortest / 10))


def prune_events(connection: sqlite3.Connection, keep: int) -> int:
    """Delete the events older than the newest ``keep``, PRUNE_BATCH at a time; returns how
    many were deleted."""
    deleted = 0
    while True:
        with db.transaction(connection):
            count = connection.execute(
                """DELETE FROM events WHERE id IN (
                       SELECT id FROM events WHERE id <= (SELECT max(id) FROM events) - ?
                       ORDER BY id LIMIT ?)""",
                (keep, PRUNE_BATCH),
            ).rowcount
        deleted += count
        if count < PRUNE_BATCH:
            return deleted
        cooperative.pause()  # let requests and streams run between two batches


def sweep(app: Flask) -> int:
    connection = db.connect(app.config["AGENTED_DB_PATH"])
    try:
        changed = mark_stale(
            connection,
            app.config["STALE_EXECUTION_THRESHOLD_SECS"],
            app.config["STALE_CONVERSATION_THRESHOLD_SECS"],
        )
        prune_events(connection, max(app.config["SSE_REPLAY_LIMIT"], EVENTS_KEPT))
    finally:
        connection.close()
    if changed:
        events.notify(app)
    return changed


def _run(app: Flask, stop: threading.Event) -> None:
    state = lifecycle.get(app)
    pause = interval(app)
    while not state.stopping:
        try:
            sweep(app)
        except (sqlite3.Error, OSError) as error:
            log.warning("marking stale executions failed: %s", error)
        if stop.wait(pause):
            return


def start(app: Flask) -> None:
    """Start the housekeeping thread once per app (idempotent)."""
    with _start_lock:
        if app.extensions.get(EXTENSION) is not None:
            return
        stop = threading.Event()
        app.extensions[EXTENSION] = stop
    threading.Thread(target=_run, args=(app, stop), name="housekeeping", daemon=True).start()


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION] = None

    @app.before_request
    def start_housekeeping() -> None:
        if app.config["BACKGROUND_JOBS"] and app.extensions[EXTENSION] is None:
            start(app)
