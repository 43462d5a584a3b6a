"""Hostile clients of the event stream, against a real Gunicorn worker: clients that ask for
a full replay and never read must not grow the worker's memory without bound nor stall its
event loop (liveness), and must be disconnected once they stop reading for
SSE_WRITE_TIMEOUT_SECS."""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import socket
import sqlite3
import threading
import time
from pathlib import Path

from app import db
from helpers import AUTHORIZATION, EventStream, request

EVENTS = 5000
CLIENTS = 100
# About the size of a real execution.created event.
PAYLOAD = {"execution": {"id": 1, "status": "running", "source": "github"}, "pad": "x" * 400}


def add_events(db_path: str, count: int, payload: dict) -> None:
    connection = sqlite3.connect(db_path)
    try:
        data = json.dumps(payload)
        with connection:
            connection.executemany(
                "INSERT INTO events (type, data, created_at) VALUES ('test.event', ?, 0)",
                [(data,)] * count,
            )
    finally:
        connection.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class LivenessProbe(threading.Thread):
    """Requests /health/liveness back to back, each on a new connection, and records how
    long each took: the latency of the worker's event loop as a client sees it."""

    def __init__(self, port: int, until_up: bool = False):
        """``until_up``: the server is starting; connections refused until it listens do not
        count."""
        super().__init__(daemon=True)
        self.port = port
        self.until_up = until_up
        self.up = False
        self.latencies: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and len(self.latencies) < 5000:
            started = time.monotonic()
            try:
                status, _ = request(self.port, "GET", "/health/liveness", timeout=10)
            except ConnectionRefusedError:
                if self.until_up and not self.up:
                    self.stop.wait(0.02)
                    continue
                raise
            assert status == 200
            if self.until_up and not self.up:
                self.up = True  # the first answer waited for the worker to boot: not counted
            else:
                self.latencies.append(time.monotonic() - started)
            self.stop.wait(0.005)

    def p99(self) -> float:
        ordered = sorted(self.latencies)  # nearest rank: honest with few samples too
        return ordered[min(len(ordered) - 1, round(0.99 * len(ordered)))]


def open_non_reader(port: int) -> socket.socket:
    """A client that asks for everything since event 0 and then never reads."""
    client = socket.socket()
    # A small receive buffer, as a hostile client would choose: the kernel takes little of
    # the replay, and the server's writes soon wait for a client that never reads.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.settimeout(5)
    client.connect(("127.0.0.1", port))
    # With the token: an authenticated client (or a leaked token) must not pin memory either.
    client.sendall(
        b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        + f"Authorization: {AUTHORIZATION['Authorization']}\r\n".encode()
        + b"Last-Event-ID: 0\r\n\r\n"
    )
    return client


def drained_to_end(client: socket.socket, deadline: float) -> bool:
    """Read what the server sent; True when it closed the connection before ``deadline``."""
    while time.monotonic() < deadline:
        client.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not client.recv(1 << 20):
                return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True
    return False


def test_non_reading_replay_clients_are_bounded_and_do_not_stall_the_worker(gunicorn, tmp_path):
    server = gunicorn(
        GUNICORN_WORKERS="1",
        SSE_REPLAY_LIMIT=str(EVENTS),
        SSE_WRITE_TIMEOUT_SECS="3",
    )
    add_events(str(tmp_path / "state" / "agented.db"), EVENTS, PAYLOAD)
    [worker] = server.worker_pids()

    # Throughput of one full replay to a client that reads.
    started = time.monotonic()
    reader = EventStream(server.port, last_event_id="0", timeout=10)
    try:
        reader.wait_for(lambda message: message.get("id") == str(EVENTS), timeout=10)
    finally:
        reader.close()
    replay_secs = time.monotonic() - started

    baseline = rss_mb(worker)
    probe = LivenessProbe(server.port)
    probe.start()
    clients: list[socket.socket] = []
    peak = baseline
    try:
        # A crowd arriving over half a second. (All within a millisecond, the worker handles
        # the 100 requests back to back, about 1 ms each, whatever the replay does.)
        for _ in range(CLIENTS):
            clients.append(open_non_reader(server.port))
            time.sleep(0.005)
        deadline = time.monotonic() + 2.5  # within the write timeout: all still connected
        while time.monotonic() < deadline:
            peak = max(peak, rss_mb(worker))
            time.sleep(0.05)
        probe.stop.set()
        probe.join(15)
        # Past the write timeout every one of them is disconnected; it may resume.
        time.sleep(2)
        drain_deadline = time.monotonic() + 5
        ended = sum(drained_to_end(client, drain_deadline) for client in clients)
    finally:
        probe.stop.set()
        for client in clients:
            with contextlib.suppress(OSError):
                client.close()
    p99, worst = probe.p99(), max(probe.latencies)
    print(
        f"\nreplay of {EVENTS} events to a reading client: {replay_secs:.2f} s "
        f"({EVENTS / replay_secs:.0f} events/s); worker RSS {baseline:.0f} MB -> peak "
        f"{peak:.0f} MB with {CLIENTS} non-reading clients; liveness p99 {p99 * 1000:.1f} ms, "
        f"p50 {sorted(probe.latencies)[len(probe.latencies) // 2] * 1000:.1f} ms, "
        f"max {worst * 1000:.1f} ms over {len(probe.latencies)} probes; {ended} disconnected"
    )
    assert peak - baseline < 60
    assert p99 < 0.1
    assert worst < 0.25  # no single long stall (one replay in one query stalled 2.5 s)
    assert ended == CLIENTS


def test_an_error_before_the_stream_starts_is_json_not_gunicorns_html(gunicorn, tmp_path):
    server = gunicorn()
    shutil.rmtree(tmp_path / "state")  # the database can no longer be opened
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("GET", "/api/events", headers={"Last-Event-ID": "0", **AUTHORIZATION})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 500
    assert response.getheader("Content-Type") == "application/json"
    assert json.loads(body)["status"] == 500


def count_events(db_path: str) -> int:
    connection = sqlite3.connect(db_path)
    try:
        return connection.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        connection.close()


def test_a_large_backlog_is_pruned_without_stalling_the_worker(gunicorn, tmp_path):
    # The backlog is there before the service starts (as after a long stop), so that the
    # first sweep, at the first request, prunes it. Inserting it while the worker runs would
    # hold the write lock, and the worker waits for a lock without yielding.
    db_path = str(tmp_path / "state" / "agented.db")
    db.migrate(db_path)
    backlog = 300_000
    add_events(db_path, backlog, {"pad": "x" * 300})
    server = gunicorn(GUNICORN_WORKERS="1", wait=False)
    probe = LivenessProbe(server.port, until_up=True)
    started = time.monotonic()
    probe.start()
    try:
        # The job keeps the newest 10,000 (EVENTS_KEPT) and prunes the rest.
        while count_events(db_path) > 10_000 and time.monotonic() - started < 20:
            time.sleep(0.1)
        pruned_after = time.monotonic() - started
        time.sleep(0.5)  # and a little longer, for the count of probes
    finally:
        probe.stop.set()
        probe.join(15)
    worst = max(probe.latencies)
    print(
        f"\npruned {backlog - count_events(db_path)} events within {pruned_after:.1f} s of the "
        f"start; liveness p99 {probe.p99() * 1000:.1f} ms, max {worst * 1000:.1f} ms over "
        f"{len(probe.latencies)} probes"
    )
    assert count_events(db_path) == 10_000
    assert worst < 0.1
