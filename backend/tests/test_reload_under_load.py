"""Reloads (SIGHUP) under load on real Gunicorn: every request on every endpoint is answered
2xx, readiness included, and event streams that end when their worker stops resume on a new
connection with Last-Event-ID and miss no event."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections import Counter

import pytest

from helpers import AUTHORIZATION, delivery_request, parse_sse

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and prctl")

RELOADS = 3
STREAMS = 4
# Every endpoint a client or a monitor polls; the webhook writes the events the streams follow.
ENDPOINTS = [
    ("GET", "/health/liveness"),
    ("GET", "/health/readiness"),
    ("GET", "/api/executions?limit=1"),
    ("GET", "/api/config"),
    ("GET", "/metrics"),
    ("POST", "/api/webhooks/github"),
]
# Connections wait in the listen backlog while no worker accepts (between the old workers' stop
# and the new ones' boot): on a loaded machine that can take seconds.
TIMEOUT = 30


def _request(connection: http.client.HTTPConnection, method: str, path: str, n: int) -> int:
    body, headers = None, dict(AUTHORIZATION)
    if method == "POST":
        body, signed = delivery_request({"ref": "main"}, guid=f"reload-{n}-{time.time_ns()}")
        headers |= signed
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    if response.will_close:
        connection.close()
    return response.status


def _load(port: int, endpoint: tuple[str, str], keep_alive: bool, stop, answers: Counter) -> None:
    """Requests one after the other, on one kept-alive connection or a new one each time;
    every answer or error is counted by endpoint."""
    method, path = endpoint
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    for n in itertools.count():
        if stop.is_set():
            break
        sent = time.monotonic()
        try:
            outcome = _request(connection, method, path, n)
        except (OSError, http.client.HTTPException) as error:
            outcome = type(error).__name__
        answers[(path, outcome)] += 1
        answers["slowest"] = max(answers["slowest"], time.monotonic() - sent)
        if not keep_alive:
            connection.close()
        time.sleep(0.01)
    connection.close()


class _Stream:
    """One request to /api/events on a plain socket, its chunked body decoded as it arrives;
    a read blocks until the next chunk (the server sends heartbeats) or the stream's end."""

    def __init__(self, port: int, last_event_id: str):
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.socket.sendall(
            (
                "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                f"Authorization: {AUTHORIZATION['Authorization']}\r\n"
                f"Last-Event-ID: {last_event_id}\r\n\r\n"
            ).encode()
        )
        self.raw = b""
        self.text = ""
        self.ended_cleanly = False
        while b"\r\n\r\n" not in self.raw:
            self._receive()
        head, _, self.raw = self.raw.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])

    def _receive(self) -> None:
        data = self.socket.recv(65536)
        if not data:
            raise ConnectionError("closed")
        self.raw += data

    def messages(self) -> list[dict[str, str]]:
        """The messages that arrived since the last call; ConnectionError once the stream
        ended (ended_cleanly: with the last chunk, as a finished response)."""
        while True:
            size_line, found, rest = self.raw.partition(b"\r\n")
            if found and len(rest) >= int(size_line, 16) + 2:
                size = int(size_line, 16)
                if size == 0:
                    self.ended_cleanly = True
                    raise ConnectionError("ended")
                self.text += rest[:size].decode()
                self.raw = rest[size + 2 :]
                complete, _, self.text = self.text.rpartition("\n\n")
                if complete:
                    return parse_sse(complete + "\n\n")
                continue
            self._receive()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        self.socket.close()


def _follow(port: int, stop, seen: list[int], reconnects: Counter, streams: list) -> None:
    """An event-stream client as a browser's EventSource is one: when the stream ends, it
    reconnects with the id of the last event it got as Last-Event-ID."""
    last = "0"
    while not stop.is_set():
        try:
            stream = _Stream(port, last)
        except OSError as error:
            reconnects[f"refused: {type(error).__name__}: {error}"] += 1
            time.sleep(0.1)
            continue
        if stream.status != 200:
            reconnects[f"status {stream.status}"] += 1
            stream.close()
            continue
        streams.append(stream)  # closed from outside at the end of the load
        reconnects["connected"] += 1
        try:
            while True:
                for message in stream.messages():
                    if "id" in message:
                        seen.append(int(message["id"]))
                        last = message["id"]
        except OSError:
            pass
        finally:
            stream.close()
        if not stop.is_set():
            reconnects["clean" if stream.ended_cleanly else "cut off"] += 1


def _reload_and_wait(server, reconnects: Counter) -> float:
    """SIGHUP, then wait until every old worker has left and the new ones serve: every stream
    (all on old workers) has connected again, which only a new worker accepts."""
    before = server.worker_pids()
    connected = reconnects["connected"]
    started = time.monotonic()
    server.signal(signal.SIGHUP)
    deadline = started + 30
    while time.monotonic() < deadline and (
        before & server.worker_pids()
        or len(server.worker_pids()) < 2
        or reconnects["connected"] < connected + STREAMS
    ):
        time.sleep(0.05)
    return time.monotonic() - started


def test_reloads_under_load_answer_every_request_and_streams_miss_nothing(gunicorn):
    server = gunicorn(GUNICORN_WORKERS="2")
    stop, stop_load = threading.Event(), threading.Event()
    answers: Counter = Counter()
    reconnects: Counter = Counter()
    seen: list[list[int]] = [[] for _ in range(STREAMS)]
    streams: list = []
    loaders = [
        threading.Thread(target=_load, args=(server.port, endpoint, keep_alive, stop_load, answers))
        for endpoint in ENDPOINTS
        for keep_alive in (True, False)
    ]
    followers = [
        threading.Thread(target=_follow, args=(server.port, stop, seen[i], reconnects, streams))
        for i in range(STREAMS)
    ]
    for thread in followers + loaders:
        thread.start()
    try:
        time.sleep(1)
        durations = []
        for _ in range(RELOADS):
            durations.append(_reload_and_wait(server, reconnects))
            time.sleep(1)
    finally:
        stop_load.set()
        for thread in loaders:
            thread.join(TIMEOUT + 5)
        # The streams catch up with the last events written, then end.
        newest = _newest_event(server)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(not ids or ids[-1] < newest for ids in seen):
            time.sleep(0.05)
        stop.set()
        for stream in streams:
            stream.close()
        for thread in followers:
            thread.join(TIMEOUT + 5)
    slowest = answers.pop("slowest")
    failed = {
        key: n for key, n in answers.items() if not (isinstance(key[1], int) and key[1] < 300)
    }
    by_endpoint = Counter()
    for (path, _), n in answers.items():
        by_endpoint[path] += n
    print(
        f"{RELOADS} reloads (each {', '.join(f'{d:.2f}' for d in durations)} s"
        " until new workers serve):"
        f" {sum(answers.values())} requests, {sum(failed.values())} not 2xx {failed};"
        f" by endpoint {dict(by_endpoint)}; slowest answer {slowest:.2f} s;"
        f" streams reconnected {dict(reconnects)}"
    )
    assert all(by_endpoint[path] > 10 for _, path in ENDPOINTS), by_endpoint
    assert not failed, f"{failed}\n{server.log[-3000:]}"

    # Each stream saw every event written since it first connected, once and in order.
    for ids in seen:
        assert ids, "a stream got no event"
        assert ids == list(range(ids[0], newest + 1)), (ids, newest)
    assert reconnects["clean"] >= STREAMS * RELOADS, reconnects
    assert set(reconnects) <= {"clean", "connected"}, reconnects


def _newest_event(server) -> int:
    connection = sqlite3.connect(server.state_dir / "state" / "agented.db")
    try:
        return connection.execute("SELECT max(id) FROM events").fetchone()[0]
    finally:
        connection.close()
