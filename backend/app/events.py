"""The event stream: ``GET /api/events`` (server-sent events).

Events are rows of the ``events`` table; their id is the SSE id. Whatever worker writes an
event, every worker delivers it: each process runs ONE poller that reads new rows every
SSE_POLL_INTERVAL_MS (sooner when this process wrote one) and wakes all of its subscribers
at once by setting a shared Event and swapping in a fresh one. A broadcast therefore costs
one query per process and one write per client, not one query per client.

The poller and the subscribers use ``threading`` primitives. Under Gunicorn's gevent worker
these are monkey-patched into greenlets and gevent events (one greenlet per client, no
thread); under run.py's threaded development server they are real threads.

Resuming: a client that reconnects with ``Last-Event-ID: N`` first gets the events after N,
at most the SSE_REPLAY_LIMIT newest of them; if some were skipped (over the limit, or pruned)
a ``replay-truncated`` event says so before the replay. A Last-Event-ID that is not a plain
decimal number, or that is ahead of the newest event (e.g. from before a database reset), is
ignored: no replay, the stream starts with the next new event. It is never an error.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

from flask import Blueprint, Flask, Response, current_app, request

from . import db, lifecycle

bp = Blueprint("events", __name__, url_prefix="/api")
log = logging.getLogger(__name__)

EXTENSION = "agented_event_hub"
# Reconnection delay suggested to clients (the SSE retry: field), in milliseconds.
RETRY_MS = 2000
# Events each process keeps in memory for subscribers that are a little behind. One that
# falls further behind (a slow client, a burst of events) catches up from the database.
BUFFER_SIZE = 1024
# Most events a lagging stream reads back from the database at once.
CATCH_UP_LIMIT = 10000
# Rows read by the poller in one query.
BATCH_SIZE = 500
_LAST_EVENT_ID_RE = re.compile(r"[0-9]{1,18}")


class Event(NamedTuple):
    id: int
    frame: bytes  # the encoded SSE message, built once and written to every client


def encode(event_id: int, event_type: str, data: str) -> bytes:
    return f"id: {event_id}\nevent: {event_type}\ndata: {data}\n\n".encode()


def record(connection: sqlite3.Connection, event_type: str, data: dict) -> int:
    """Insert an event (inside the caller's transaction); returns its id."""
    return connection.execute(
        "INSERT INTO events (type, data, created_at) VALUES (?, ?, ?) RETURNING id",
        (event_type, json.dumps(data, separators=(",", ":")), db.now()),
    ).fetchone()[0]


def newest_id(connection: sqlite3.Connection) -> int:
    return connection.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]


class Hub:
    """Per-process fan-out of new rows of the events table to the open streams."""

    def __init__(self, db_path: str, poll_interval: float, is_stopping: Callable[[], bool]):
        self._db_path = db_path
        self._poll_interval = poll_interval
        self._is_stopping = is_stopping
        self._lock = threading.Lock()
        self._wake = threading.Event()  # replaced by a fresh one at every broadcast
        self._poke = threading.Event()  # set when this process wrote an event
        self._buffer: collections.deque[Event] = collections.deque(maxlen=BUFFER_SIZE)
        self._floor = 0  # the buffer holds every event after this id
        self._last_id = 0  # the newest event read by the poller
        self._subscribers = 0
        self._polling = False
        self.closed = False

    @property
    def subscribers(self) -> int:
        return self._subscribers

    def subscribe(self) -> int | None:
        """Register a stream; returns the id after which the hub will deliver everything, or
        None when the process is shutting down. The poller runs while anyone subscribes."""
        with self._lock:
            if self.closed:
                return None
            if not self._polling:
                connection = db.connect(self._db_path)
                try:
                    self._last_id = self._floor = newest_id(connection)
                finally:
                    connection.close()
                self._buffer.clear()
                self._polling = True
                threading.Thread(target=self._poll, name="sse-poller", daemon=True).start()
            self._subscribers += 1
            return self._last_id

    def unsubscribe(self) -> None:
        with self._lock:
            self._subscribers -= 1

    def poke(self) -> None:
        """Read new events now rather than at the next poll (this process just wrote one)."""
        self._poke.set()

    def waiter(self) -> threading.Event:
        """The event set at the next broadcast. Take it BEFORE reading with after()."""
        return self._wake

    def after(self, cursor: int) -> list[Event] | None:
        """Buffered events newer than ``cursor``, oldest first; None if some are no longer
        buffered (the subscriber fell too far behind)."""
        with self._lock:
            if cursor < self._floor:
                return None
            newer = []
            for event in reversed(self._buffer):
                if event.id <= cursor:
                    break
                newer.append(event)
        newer.reverse()
        return newer

    def _broadcast(self) -> None:
        wake, self._wake = self._wake, threading.Event()
        wake.set()

    def _close(self) -> None:
        with self._lock:
            self.closed = True
            self._polling = False
            self._broadcast()

    def _poll(self) -> None:
        connection = db.connect(self._db_path)
        try:
            while True:
                if self._is_stopping():
                    self._close()
                    return
                with self._lock:
                    if self._subscribers <= 0:
                        self._polling = False
                        return
                    last_id = self._last_id
                try:
                    rows = connection.execute(
                        "SELECT id, type, data FROM events WHERE id > ? ORDER BY id LIMIT ?",
                        (last_id, BATCH_SIZE),
                    ).fetchall()
                except sqlite3.Error as error:
                    log.warning("reading new events failed: %s", error)
                    rows = []
                if rows:
                    with self._lock:
                        for row in rows:
                            if len(self._buffer) == BUFFER_SIZE:
                                self._floor = self._buffer[0].id
                            self._buffer.append(Event(row[0], encode(*row)))
                        self._last_id = rows[-1][0]
                        self._broadcast()
                if len(rows) < BATCH_SIZE:
                    self._poke.wait(self._poll_interval)
                    self._poke.clear()
                else:
                    time.sleep(0)  # a burst: let the streams take this batch first
        except Exception:
            log.exception("event poller failed")
            self._close()
        finally:
            connection.close()


def get_hub(app: Flask | None = None) -> Hub:
    return (app or current_app).extensions[EXTENSION]


def init_app(app: Flask) -> None:
    state = lifecycle.get(app)
    hub = Hub(
        app.config["AGENTED_DB_PATH"],
        app.config["SSE_POLL_INTERVAL_MS"] / 1000,
        lambda: state.stopping,
    )
    state.when_stopping(hub.poke)  # the poller sees the stop and ends the streams at once
    app.extensions[EXTENSION] = hub


def parse_last_event_id(value: str | None) -> int | None:
    """The id in a Last-Event-ID header, or None when absent or malformed."""
    if value is None or not _LAST_EVENT_ID_RE.fullmatch(value):
        return None
    return int(value)


def _replay(
    connection: sqlite3.Connection,
    last_event_id: int | None,
    limit: int,
) -> tuple[list[bytes], int]:
    """The frames a (re)connecting client gets first, and the id it is then current with."""
    newest = newest_id(connection)
    if last_event_id is None or last_event_id >= newest:
        return [], newest  # nothing missed, or an id from the future: ignore it
    rows = connection.execute(
        "SELECT id, type, data FROM events WHERE id > ? AND id <= ? ORDER BY id DESC LIMIT ?",
        (last_event_id, newest, limit),
    ).fetchall()
    rows.reverse()
    frames = []
    first_replayed = rows[0][0] if rows else newest + 1
    if first_replayed > last_event_id + 1:
        note = {"last_event_id": last_event_id, "resumes_after": first_replayed - 1}
        frames.append(f"event: replay-truncated\ndata: {json.dumps(note)}\n\n".encode())
    frames += [encode(*row) for row in rows]
    return frames, newest


def _read_from_database(
    db_path: str, last_event_id: int | None, limit: int
) -> tuple[list[bytes], int]:
    connection = db.connect(db_path)
    try:
        return _replay(connection, last_event_id, limit)
    finally:
        connection.close()


def stream(
    hub: Hub, db_path: str, last_event_id: int | None, replay_limit: int, heartbeat: float
) -> Iterator[bytes]:
    """The body of one event stream. All work happens on iteration, so a response that is
    never iterated leaves nothing registered."""
    preamble = f"retry: {RETRY_MS}\n: agented event stream, pid {os.getpid()}\n\n".encode()
    if hub.subscribe() is None:
        yield preamble  # shutting down: the client reconnects to a live worker
        return
    try:
        frames, cursor = _read_from_database(db_path, last_event_id, replay_limit)
        yield preamble + b"".join(frames)
        while True:
            waiter = hub.waiter()
            events = hub.after(cursor)
            if events is None:  # behind what the hub still holds: catch up from the database
                frames, cursor = _read_from_database(db_path, cursor, CATCH_UP_LIMIT)
                if frames:
                    yield b"".join(frames)
                continue
            if events:
                cursor = events[-1].id
                yield b"".join(event.frame for event in events)
            if hub.closed:
                return
            if not waiter.wait(heartbeat) and not hub.closed:
                yield b": heartbeat\n\n"
    finally:
        hub.unsubscribe()


@bp.get("/events")
def events() -> Response:
    config = current_app.config
    # Not wrapped in stream_with_context: the stream needs nothing from the request, and
    # holding the request context would keep its resources for the life of the stream.
    body = stream(
        get_hub(),
        config["AGENTED_DB_PATH"],
        parse_last_event_id(request.headers.get("Last-Event-ID")),
        config["SSE_REPLAY_LIMIT"],
        config["SSE_HEARTBEAT_SECS"],
    )
    return Response(
        body,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def notify(app: Flask | None = None) -> None:
    """Call after committing events so this process's streams get them without waiting."""
    get_hub(app).poke()
