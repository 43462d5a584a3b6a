"""GET /api/events through the test client (the real-server tests are in test_gunicorn.py)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator

import pytest

from app import db, events, lifecycle
from app.factory import create_app
from helpers import API_TOKEN, api_client, deliver, parse_sse


class Stream:
    """An open event stream from the Flask test client, read chunk by chunk."""

    def __init__(self, client, last_event_id: str | None = None):
        headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
        self.response = client.get("/api/events", headers=headers, buffered=False)
        assert self.response.status_code == 200
        assert self.response.mimetype == "text/event-stream"
        self.chunks: Iterator[bytes] = iter(self.response.response)

    def next(self) -> list[dict[str, str]]:
        return parse_sse(next(self.chunks).decode())

    def close(self) -> None:
        self.response.close()


@pytest.fixture
def open_stream(client):
    streams: list[Stream] = []

    def open_(last_event_id: str | None = None) -> Stream:
        stream = Stream(client, last_event_id)
        streams.append(stream)
        return stream

    yield open_
    for stream in streams:
        stream.close()


def add_events(app, count: int) -> list[int]:
    connection = db.connect(app.config["AGENTED_DB_PATH"])
    try:
        with db.transaction(connection):
            return [events.record(connection, "test.event", {"n": n}) for n in range(count)]
    finally:
        connection.close()


def ids(messages: list[dict[str, str]]) -> list[int]:
    return [int(message["id"]) for message in messages if "id" in message]


def test_stream_starts_with_retry_hint_and_no_replay(app, client, open_stream):
    add_events(app, 3)
    first = open_stream().next()
    assert first[0]["retry"] == str(events.RETRY_MS)
    assert first[0]["comment"] == f"agented event stream, pid {os.getpid()}"
    assert ids(first) == []
    assert open_stream().response.headers["Cache-Control"] == "no-cache"


def test_new_events_are_pushed(app, client, open_stream):
    stream = open_stream()
    stream.next()
    response = deliver(client, {"a": 1}, guid="live")
    [message] = stream.next()
    assert message["event"] == "execution.created"
    assert int(message["id"]) == response.get_json()["event_id"]
    assert json.loads(message["data"])["delivery"]["id"] == "live"


def test_every_subscriber_gets_every_event(app, open_stream):
    streams = [open_stream() for _ in range(20)]
    for stream in streams:
        stream.next()
    new_ids = add_events(app, 3)
    events.notify(app)
    for stream in streams:
        received: list[int] = []
        while len(received) < 3:
            received += ids(stream.next())
        assert received == new_ids


def test_reconnect_with_last_event_id_replays_what_was_missed(app, open_stream):
    created = add_events(app, 5)
    replay = open_stream(str(created[1])).next()
    assert ids(replay) == created[2:]
    assert [json.loads(m["data"])["n"] for m in replay if "id" in m] == [2, 3, 4]


def test_replay_is_limited_to_the_newest_events_and_says_so(app, open_stream):
    app.config["SSE_REPLAY_LIMIT"] = 2
    created = add_events(app, 5)
    replay = open_stream("0").next()
    truncated = [m for m in replay if m.get("event") == "replay-truncated"]
    assert len(truncated) == 1
    assert json.loads(truncated[0]["data"]) == {"last_event_id": 0, "resumes_after": created[2]}
    assert ids(replay) == created[3:]


def test_replay_disabled(app, open_stream):
    app.config["SSE_REPLAY_LIMIT"] = 0
    add_events(app, 2)
    replay = open_stream("0").next()
    assert ids(replay) == []
    assert [m["event"] for m in replay if "event" in m] == ["replay-truncated"]


@pytest.mark.parametrize(
    "value", ["", "abc", "-1", "1.0", " 2", "2 ", "0x2", "٣", "9" * 40, "99999"]
)
def test_malformed_or_future_last_event_id_means_no_replay(app, client, open_stream, value):
    add_events(app, 3)
    stream = open_stream(value)
    assert ids(stream.next()) == []
    # ...and the stream goes on with the next new event.
    later = add_events(app, 1)
    events.notify(app)
    assert ids(stream.next()) == later


def test_heartbeat_on_an_idle_stream(app, open_stream):
    stream = open_stream()
    stream.next()
    started = time.monotonic()
    assert stream.next() == [{"comment": "heartbeat"}]
    assert 0.5 < time.monotonic() - started < 3  # SSE_HEARTBEAT_SECS is 1 in tests


def test_streams_end_when_the_process_shuts_down(app, open_stream):
    alive = threading.Event()
    alive.set()
    lifecycle.get(app).attach(alive.is_set)
    stream = open_stream()
    stream.next()
    alive.clear()
    started = time.monotonic()
    received = list(stream.chunks)  # ends: the generator returns
    assert all(b"heartbeat" in chunk for chunk in received)
    assert time.monotonic() - started < 1
    # A client that reconnects to this process gets the retry hint and an ended stream.
    reconnect = open_stream()
    assert reconnect.next()[0]["retry"] == str(events.RETRY_MS)
    with pytest.raises(StopIteration):
        reconnect.next()


def traced_queries(monkeypatch) -> list[str]:
    """The SQL statements run on every connection db.connect opens from now on."""
    queries: list[str] = []
    connect = db.connect

    def tracing_connect(path):
        connection = connect(path)
        connection.set_trace_callback(queries.append)
        return connection

    monkeypatch.setattr(db, "connect", tracing_connect)
    return queries


def test_one_query_per_poll_whatever_the_number_of_subscribers(app, open_stream, monkeypatch):
    queries = traced_queries(monkeypatch)
    streams = [open_stream() for _ in range(30)]
    for stream in streams:
        stream.next()
    queries.clear()
    started = time.monotonic()
    add_events(app, 1)
    for stream in streams:
        assert len(ids(stream.next())) == 1
    elapsed = time.monotonic() - started
    polls = [q for q in queries if q.startswith("SELECT id, type, data FROM events WHERE id >")]
    interval = app.config["SSE_POLL_INTERVAL_MS"] / 1000
    assert len(polls) <= elapsed / interval + 3
    assert app.extensions["agented_event_hub"].subscribers == 30


def test_poller_stops_when_the_last_subscriber_leaves(app, open_stream):
    hub = events.get_hub(app)
    stream = open_stream()
    stream.next()
    assert hub.subscribers == 1
    stream.close()
    assert hub.subscribers == 0
    deadline = time.monotonic() + 2
    while hub._polling and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not hub._polling


def test_a_stream_behind_the_buffer_catches_up_from_the_database(app, open_stream):
    stream = open_stream()
    stream.next()
    hub = events.get_hub(app)
    created = add_events(app, 3)
    events.notify(app)
    deadline = time.monotonic() + 2
    while hub.after(created[-1] - 1) in (None, []) and time.monotonic() < deadline:
        time.sleep(0.01)  # the poller has buffered them...
    with hub._lock:
        hub._floor = created[-1]  # ...and pretend they were pushed out
    received: list[int] = []
    while len(received) < 3:
        received += ids(stream.next())
    assert received == created


def test_a_burst_larger_than_the_buffer_reaches_every_stream(app, open_stream):
    streams = [open_stream() for _ in range(3)]
    for stream in streams:
        stream.next()
    created = add_events(app, events.BUFFER_SIZE + 700)
    events.notify(app)
    for stream in streams:
        received: list[int] = []
        while len(received) < len(created):
            received += ids(stream.next())
        assert received == created


def test_an_error_before_the_stream_starts_is_a_json_500(tmp_path, caplog):
    app = create_app(
        {
            "TESTING": True,
            "PROPAGATE_EXCEPTIONS": False,  # as in production, not as in tests
            "SECRET_KEY": "k",
            "API_TOKEN": API_TOKEN,
            "BACKGROUND_JOBS": False,
            # A directory that does not exist: the database cannot be opened.
            "AGENTED_DB_PATH": str(tmp_path / "missing" / "agented.db"),
        }
    )
    response = api_client(app).get("/api/events", headers={"Last-Event-ID": "0"})
    assert response.status_code == 500
    assert response.content_type == "application/json"
    assert response.get_json() == {"error": response.get_json()["error"], "status": 500}
    assert "unable to open database file" in caplog.text  # the detail only in the log


def fail_in_the_poller(monkeypatch, module, name: str, times: int, error: Exception) -> list:
    """Make ``module.name`` raise ``error`` the first ``times`` times the poller calls it;
    returns the list of failures injected so far."""
    original = getattr(module, name)
    failures: list = []

    def failing(*args, **kwargs):
        if threading.current_thread().name == "sse-poller" and len(failures) < times:
            failures.append(error)
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)
    return failures


def receive_ids(stream: Stream, wanted: list[int], timeout: float = 5) -> list[int]:
    received: list[int] = []
    deadline = time.monotonic() + timeout
    while not set(wanted) <= set(received) and time.monotonic() < deadline:
        try:
            received += ids(stream.next())
        except StopIteration:
            break  # the stream ended
    return received


def test_the_poller_retries_when_it_cannot_open_the_database(app, open_stream, monkeypatch):
    failures = fail_in_the_poller(
        monkeypatch, db, "connect", 3, sqlite3.OperationalError("unable to open database file")
    )
    stream = open_stream()
    stream.next()
    created = add_events(app, 2)
    events.notify(app)
    assert receive_ids(stream, created) == created
    assert len(failures) == 3


def test_an_unexpected_error_in_one_poll_is_logged_once_and_polling_goes_on(
    app, open_stream, monkeypatch, caplog
):
    failures = fail_in_the_poller(monkeypatch, events, "encode", 2, RuntimeError("surprise"))
    streams = [open_stream() for _ in range(3)]
    for stream in streams:
        stream.next()
    created = add_events(app, 2)
    events.notify(app)
    for stream in streams:
        assert receive_ids(stream, created) == created
    assert len(failures) == 2
    assert not events.get_hub(app).closed
    [logged] = [r for r in caplog.records if r.name == "app.events" and r.levelname == "ERROR"]
    assert logged.exc_info is not None and "surprise" in str(logged.exc_info[1])


def test_a_long_replay_is_read_and_sent_in_pages(app, open_stream, monkeypatch):
    app.config["SSE_REPLAY_LIMIT"] = 1000
    created = add_events(app, 2 * events.PAGE_SIZE + 50)
    queries = traced_queries(monkeypatch)
    stream = open_stream("0")
    chunks = []
    received: list[int] = []
    while len(received) < len(created):
        chunks.append(ids(stream.next()))
        received += chunks[-1]
    assert received == created
    assert [len(chunk) for chunk in chunks] == [events.PAGE_SIZE, events.PAGE_SIZE, 50]
    pages = [q for q in queries if "ORDER BY id LIMIT" in q and "id <=" in q]
    assert len(pages) == 3


def test_a_replay_after_pruned_events_says_where_it_resumes(app, open_stream):
    created = add_events(app, 6)
    connection = db.connect(app.config["AGENTED_DB_PATH"])
    connection.execute("DELETE FROM events WHERE id <= ?", (created[2],))
    connection.close()
    replay = open_stream(str(created[0])).next()
    [truncated] = [m for m in replay if m.get("event") == "replay-truncated"]
    assert json.loads(truncated["data"]) == {
        "last_event_id": created[0],
        "resumes_after": created[2],
    }
    assert ids(replay) == created[3:]


def test_a_long_replay_ends_when_the_process_shuts_down(app, open_stream):
    app.config["SSE_REPLAY_LIMIT"] = 10 * events.PAGE_SIZE
    add_events(app, 10 * events.PAGE_SIZE)
    alive = threading.Event()
    alive.set()
    lifecycle.get(app).attach(alive.is_set)
    stream = open_stream("0")
    assert len(ids(stream.next())) == events.PAGE_SIZE
    alive.clear()
    lifecycle.get(app).stopped()
    hub = events.get_hub(app)
    deadline = time.monotonic() + 2
    while not hub.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hub.closed
    rest = list(stream.chunks)  # the stream ends without the other nine pages
    assert len(rest) <= 1
