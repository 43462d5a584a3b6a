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

Hostile or stuck clients: a replay or a catch-up is read and sent in pages of PAGE_SIZE
events, one short query per page, at most PAGE_READERS streams of a process reading a page
at once, and the stream pauses between pages (app.cooperative), so no client holds the event
loop long nor more than about a page of unsent data in memory (a client that does not read
blocks in the write of its current page, and the kernel's send buffer of its connection is
bounded to SEND_BUFFER_BYTES). A stream whose
write has waited SSE_WRITE_TIMEOUT_SECS for the client to take it is disconnected by the
poller: its connection is shut down, the blocked write fails and the stream ends; the client
can reconnect and resume with Last-Event-ID.

Everything that can fail before the first byte (opening the database, reading where the
replay starts) happens in the view, before the response starts, so such an error is an
ordinary JSON error answer (app.errors), not an HTML page from Gunicorn.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

from flask import Blueprint, Flask, Response, current_app, request

from . import cooperative, db, errors, lifecycle, metrics

bp = Blueprint("events", __name__, url_prefix="/api")
log = logging.getLogger(__name__)

EXTENSION = "agented_event_hub"
# Reconnection delay suggested to clients (the SSE retry: field), in milliseconds.
RETRY_MS = 2000
# Events each process keeps in memory for subscribers that are a little behind. One that
# falls further behind (a slow client, a burst of events) catches up from the database.
BUFFER_SIZE = 1024
# Most events a lagging stream reads back from the database when it catches up.
CATCH_UP_LIMIT = 10000
# Events per query and per write of a replay or catch-up: bounds the time one query holds
# the event loop and the unsent bytes a stream keeps in memory.
PAGE_SIZE = 100
# Streams reading a page from the database at the same time, per process: the global budget
# that keeps a crowd of replays from filling every turn of the event loop. The others wait
# their turn, so other requests (liveness) wait for a few pages at most, not one per stream.
PAGE_READERS = 4
# Kernel send buffer of an event stream's connection (Linux doubles it). Without it, Linux
# grows the buffer up to net.ipv4.tcp_wmem's maximum (4 MiB by default) for a client that
# reads nothing, so a whole replay sits there per connection and the write deadline never
# comes. This still carries hundreds of events per round trip.
SEND_BUFFER_BYTES = 65536
# Rows read by the poller in one query.
BATCH_SIZE = 500
# Longest pause of the poller between two attempts after a failure (it doubles from
# SSE_POLL_INTERVAL_MS up to this).
RETRY_MAX_SECS = 5.0
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


class Subscription:
    """One open stream, as the hub sees it: whether a write to its client is pending, since
    when, and the socket to shut down when the client stops reading."""

    __slots__ = ("disconnected", "socket", "writing_since")

    def __init__(self, client_socket: socket.socket | None):
        self.socket = client_socket
        self.writing_since: float | None = None
        self.disconnected = False

    def disconnect(self) -> None:
        """End the stream from outside: its blocked write fails and the server closes it."""
        self.disconnected = True
        if self.socket is None:
            return
        # Shut down a duplicate of the descriptor, not the server's socket object: gevent's
        # shutdown() would cancel the blocked write with EBADF, which Gunicorn logs as an
        # error with a traceback. The kernel-level shutdown instead makes that write fail
        # with EPIPE, which Gunicorn treats as an ordinary client disconnect.
        with contextlib.suppress(OSError):
            duplicate = socket.fromfd(self.socket.fileno(), self.socket.family, self.socket.type)
            try:
                duplicate.shutdown(socket.SHUT_RDWR)
            finally:
                duplicate.close()


class Hub:
    """Per-process fan-out of new rows of the events table to the open streams."""

    def __init__(
        self,
        db_path: str,
        poll_interval: float,
        is_stopping: Callable[[], bool],
        write_timeout: float = 30.0,
    ):
        self._db_path = db_path
        self._poll_interval = poll_interval
        self._write_timeout = write_timeout
        self._is_stopping = is_stopping
        self._lock = threading.Lock()
        self._wake = threading.Event()  # replaced by a fresh one at every broadcast
        self._poke = threading.Event()  # set when this process wrote an event
        self._buffer: collections.deque[Event] = collections.deque(maxlen=BUFFER_SIZE)
        self._floor = 0  # the buffer holds every event after this id
        self._last_id = 0  # the newest event read by the poller
        self._streams: set[Subscription] = set()
        self.page_readers = threading.BoundedSemaphore(PAGE_READERS)
        self._polling = False
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._streams)

    def subscribe(
        self, newest: int, client_socket: socket.socket | None = None
    ) -> Subscription | None:
        """Register a stream that has read the database up to event ``newest``, or return
        None when the process is shutting down. The poller runs while anyone subscribes;
        when it starts, it delivers everything after ``newest``."""
        with self._lock:
            if self.closed:
                return None
            if not self._polling:
                self._last_id = self._floor = newest
                self._buffer.clear()
                self._polling = True
                threading.Thread(target=self._poll, name="sse-poller", daemon=True).start()
            subscription = Subscription(client_socket)
            self._streams.add(subscription)
            return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._streams.discard(subscription)

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

    def _disconnect_stuck_streams(self) -> None:
        """Disconnect the streams whose client has not taken a write for write_timeout."""
        limit = time.monotonic() - self._write_timeout
        with self._lock:
            stuck = [
                stream
                for stream in self._streams
                if not stream.disconnected
                and stream.writing_since is not None
                and stream.writing_since < limit
            ]
        for stream in stuck:
            log.info(
                "disconnecting an event stream whose client read nothing for %g s",
                self._write_timeout,
            )
            stream.disconnect()

    def _broadcast(self) -> None:
        wake, self._wake = self._wake, threading.Event()
        wake.set()

    def _close(self) -> None:
        with self._lock:
            self.closed = True
            self._polling = False
            self._broadcast()

    def _read_new(self, connection: sqlite3.Connection, last_id: int) -> int:
        """Buffer the events after ``last_id`` and wake the streams; returns how many."""
        rows = connection.execute(
            "SELECT id, type, data FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (last_id, BATCH_SIZE),
        ).fetchall()
        # Encoded before the buffer changes, so a failure leaves it as it was.
        new = [Event(row[0], encode(*row)) for row in rows]
        if new:
            with self._lock:
                for event in new:
                    if len(self._buffer) == BUFFER_SIZE:
                        self._floor = self._buffer[0].id
                    self._buffer.append(event)
                self._last_id = new[-1].id
                self._broadcast()
        return len(new)

    def _poll(self) -> None:
        """Poll until the process stops or the last stream leaves. A failure (the database
        cannot be opened, a query fails, anything unexpected) is logged once, then the poller
        backs off and tries again, with a new connection, until it works: it never gives up
        while streams wait, since no stream of this process would get an event again."""
        connection: sqlite3.Connection | None = None
        backoff = 0.0  # seconds to wait after a failure; 0 while polls succeed
        try:
            while True:
                if self._is_stopping():
                    self._close()
                    return
                with self._lock:
                    if not self._streams:
                        self._polling = False
                        return
                    last_id = self._last_id
                try:
                    self._disconnect_stuck_streams()
                    if connection is None:
                        connection = db.connect(self._db_path)
                    count = self._read_new(connection, last_id)
                except Exception as error:
                    if not backoff:  # the first failure of a series: log it, once
                        if isinstance(error, sqlite3.Error):
                            log.warning("reading new events failed, retrying: %s", error)
                        else:
                            log.exception("event poller failed, retrying")
                    if connection is not None:
                        with contextlib.suppress(sqlite3.Error):
                            connection.close()
                        connection = None
                    backoff = min(RETRY_MAX_SECS, max(self._poll_interval, backoff * 2))
                    self._poke.wait(backoff)  # a stop pokes: it is still seen at once
                    self._poke.clear()
                    continue
                if backoff:
                    log.warning("reading new events works again")
                    backoff = 0.0
                if count < BATCH_SIZE:
                    self._poke.wait(self._poll_interval)
                    self._poke.clear()
                else:
                    time.sleep(0)  # a burst: let the streams take this batch first
        finally:
            if connection is not None:
                connection.close()


def get_hub(app: Flask | None = None) -> Hub:
    return (app or current_app).extensions[EXTENSION]


def init_app(app: Flask) -> None:
    state = lifecycle.get(app)
    hub = Hub(
        app.config["AGENTED_DB_PATH"],
        app.config["SSE_POLL_INTERVAL_MS"] / 1000,
        lambda: state.stopping,
        app.config["SSE_WRITE_TIMEOUT_SECS"],
    )
    state.when_stopping(hub.poke)  # the poller sees the stop and ends the streams at once
    app.extensions[EXTENSION] = hub


def parse_last_event_id(value: str | None) -> int | None:
    """The id in a Last-Event-ID header, or None when absent or malformed."""
    if value is None or not _LAST_EVENT_ID_RE.fullmatch(value):
        return None
    return int(value)


class Replay(NamedTuple):
    """What a (re)connecting or lagging stream reads from the database: the frame saying
    that events were skipped (or b""), then the events after ``after`` up to ``newest``."""

    note: bytes
    after: int
    newest: int


def plan_replay(connection: sqlite3.Connection, last_event_id: int | None, limit: int) -> Replay:
    """Where a replay after ``last_event_id`` starts, with at most ``limit`` events. A few
    index lookups, whatever the size of the backlog: the stream then reads the events
    themselves page by page (:func:`read_page`)."""
    newest = newest_id(connection)
    if last_event_id is None or last_event_id >= newest:
        return Replay(b"", newest, newest)  # nothing missed, or an id from the future
    # Ids are never reused, so the newest ``limit`` events all lie above newest - limit.
    after = max(last_event_id, newest - limit)
    first = connection.execute(
        "SELECT coalesce(min(id), ?) FROM events WHERE id > ?", (newest + 1, last_event_id)
    ).fetchone()[0]
    after = max(after, first - 1)  # events before the first one left were pruned
    note = b""
    if after > last_event_id:
        skipped = {"last_event_id": last_event_id, "resumes_after": after}
        note = f"event: replay-truncated\ndata: {json.dumps(skipped)}\n\n".encode()
    return Replay(note, after, newest)


def read_page(db_path: str, after: int, newest: int) -> list[Event]:
    """At most PAGE_SIZE events after ``after`` up to ``newest``: one short query."""
    connection = db.connect(db_path)
    connection.row_factory = None  # plain tuples: several times cheaper than sqlite3.Row
    try:
        rows = connection.execute(
            "SELECT id, type, data FROM events WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
            (after, newest, PAGE_SIZE),
        ).fetchall()
    finally:
        connection.close()
    return [Event(row[0], encode(*row)) for row in rows]


def read_replay(db_path: str, last_event_id: int | None, limit: int) -> Replay:
    connection = db.connect(db_path)
    try:
        return plan_replay(connection, last_event_id, limit)
    finally:
        connection.close()


def _pages(events: list[Event]) -> Iterator[list[Event]]:
    for start in range(0, len(events), PAGE_SIZE):
        yield events[start : start + PAGE_SIZE]


def stream(
    hub: Hub,
    db_path: str,
    replay: Replay,
    heartbeat: float,
    client_socket: socket.socket | None = None,
) -> Iterator[bytes]:
    """The body of one event stream, starting with ``replay``. All work happens on
    iteration, so a response that is never iterated leaves nothing registered."""
    preamble = f"retry: {RETRY_MS}\n: agented event stream, pid {os.getpid()}\n\n".encode()
    subscription = hub.subscribe(replay.newest, client_socket)
    if subscription is None:
        yield preamble  # shutting down: the client reconnects to a live worker
        return

    def send(chunk: bytes) -> Iterator[bytes]:
        # The server writes what is yielded before it asks for more: a write is pending
        # from the yield until the generator resumes. The poller watches that time.
        subscription.writing_since = time.monotonic()
        yield chunk
        subscription.writing_since = None
        # A write to a client that keeps up returns without switching greenlets: give the
        # others (and the poller) their turn between pages.
        cooperative.pause()

    def send_replay(replay: Replay, first: bytes = b"") -> Iterator[bytes]:
        chunk, cursor = first + replay.note, replay.after
        # A stopping process ends its streams at once, even in the middle of a replay: the
        # client resumes on a live worker with Last-Event-ID.
        while cursor < replay.newest and not subscription.disconnected and not hub.closed:
            with hub.page_readers:
                page = cooperative.off_the_loop(read_page, db_path, cursor, replay.newest)
            if not page:
                break
            cursor = page[-1].id
            metrics.EVENTS_REPLAYED.inc(len(page))
            yield from send(chunk + b"".join(event.frame for event in page))
            chunk = b""
        if chunk:
            yield from send(chunk)

    metrics.EVENT_STREAMS_OPEN.inc()
    try:
        yield from send_replay(replay, preamble)
        cursor = replay.newest
        while not subscription.disconnected:
            waiter = hub.waiter()
            events = hub.after(cursor)
            if events is None:  # behind what the hub still holds: catch up from the database
                replay = cooperative.off_the_loop(read_replay, db_path, cursor, CATCH_UP_LIMIT)
                yield from send_replay(replay)
                cursor = replay.newest
                continue
            for page in _pages(events):
                cursor = page[-1].id
                metrics.EVENTS_SENT.inc(len(page))
                yield from send(b"".join(event.frame for event in page))
            if hub.closed:
                return
            if not waiter.wait(heartbeat) and not hub.closed:
                yield from send(b": heartbeat\n\n")
    finally:
        metrics.EVENT_STREAMS_OPEN.dec()
        hub.unsubscribe(subscription)


def _client_socket() -> socket.socket | None:
    """The connection's socket, where the server tells (Gunicorn, werkzeug's dev server),
    with its send buffer bounded."""
    for key in ("gunicorn.socket", "werkzeug.socket"):
        candidate = request.environ.get(key)
        if candidate is not None and hasattr(candidate, "shutdown"):
            with contextlib.suppress(OSError):
                candidate.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            return candidate
    return None


@bp.get("/events")
def events() -> Response:
    config = current_app.config
    db_path = config["AGENTED_DB_PATH"]
    # Streams stay open: left unbounded they would take every connection of the worker, and
    # health checks, webhooks and API reads would wait behind them.
    streams_allowed = (
        config["GUNICORN_WORKER_CONNECTIONS"] - config["GUNICORN_RESERVED_CONNECTIONS"]
    )
    if get_hub().subscribers >= streams_allowed:
        response = errors.error_response(
            503, "This worker holds as many event streams as it may: retry later"
        )
        response.headers["Retry-After"] = "5"
        return response
    # Read where the replay starts here, before the response: an error (database
    # unavailable) is then an ordinary JSON error answer, not a stream cut off at its start.
    replay = cooperative.off_the_loop(
        read_replay,
        db_path,
        parse_last_event_id(request.headers.get("Last-Event-ID")),
        config["SSE_REPLAY_LIMIT"],
    )
    # Not wrapped in stream_with_context: the stream needs nothing from the request, and
    # holding the request context would keep its resources for the life of the stream.
    body = stream(get_hub(), db_path, replay, config["SSE_HEARTBEAT_SECS"], _client_socket())
    return Response(
        body,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def notify(app: Flask | None = None) -> None:
    """Call after committing events so this process's streams get them without waiting."""
    get_hub(app).poke()
