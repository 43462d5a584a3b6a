"""Webhook bodies from hostile clients, against a real Gunicorn: slow and unsigned bodies must
not pin a worker's memory or time, and the worker keeps answering meanwhile."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from app import webhooks
from helpers import delivery_request, request

MIB = 1024 * 1024
WEBHOOK = "/api/webhooks/github"


def _head(size: int, extra: str = "") -> bytes:
    return (
        f"POST {WEBHOOK} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"X-Hub-Signature-256: sha256=00\r\nX-GitHub-Delivery: slow\r\n{extra}"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()


def _slow_body(port: int, size: int, sent: int, timeout: float = 5.0) -> socket.socket:
    """A connection that declares ``size`` body bytes and sends only ``sent`` of them."""
    client = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    client.sendall(_head(size))
    with contextlib.suppress(OSError):  # a refusal may close the connection mid-body
        client.sendall(b" " * sent)
    return client


@contextlib.contextmanager
def _slow_bodies(port: int, count: int, size: int, sent: int) -> Iterator[list[socket.socket]]:
    clients: list[socket.socket] = []
    try:
        for _ in range(count):
            clients.append(_slow_body(port, size, sent))
        yield clients
    finally:
        for client in clients:
            client.close()


def _answer(client: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """What the server sends before ``timeout``, and whether it then closed the connection."""
    answer = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = client.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return answer, True
        if not data:
            return answer, True
        answer += data
    return answer, False


def _status_headers_body(answer: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body)


def _rss_bytes(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def _liveness_seconds(port: int) -> float:
    started = time.monotonic()
    status, _answer = request(port, "GET", "/health/liveness", timeout=5)
    assert status == 200
    return time.monotonic() - started


def _unsigned(port: int) -> tuple[int, dict[str, str], dict]:
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        client.sendall(_head(2, "Connection: close\r\n") + b"{}")
        answer, _closed = _answer(client, 3)
    finally:
        client.close()
    return _status_headers_body(answer)


def _wait_for_status(port: int, wanted: int, timeout: float = 3.0) -> tuple[dict[str, str], dict]:
    """Send small unsigned deliveries until one is answered ``wanted`` (the server may not
    have started reading the slow bodies yet)."""
    deadline = time.monotonic() + timeout
    while True:
        status, headers, body = _unsigned(port)
        if status == wanted or time.monotonic() > deadline:
            assert status == wanted, (status, body)
            return headers, body
        time.sleep(0.05)


def test_slow_unsigned_bodies_keep_the_workers_memory_bounded(gunicorn):
    # The per-client limit is lifted so that every body is read: what is measured is how the
    # body is read, not the refusal of extra bodies from one address.
    server = gunicorn(GUNICORN_WORKERS="1", GITHUB_WEBHOOK_UNSIGNED_PER_CLIENT="64")
    [worker] = server.worker_pids()
    before = _rss_bytes({worker})
    size = 25 * MIB
    peak, latencies = before, []
    with _slow_bodies(server.port, 0, size, 0) as clients:
        # Every body but its last byte, sent from a thread while this one measures; each
        # connection is closed at the end, at most a few seconds later.
        def send() -> None:
            for _ in range(20):
                clients.append(_slow_body(server.port, size, size - 1))

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        started = time.monotonic()
        held_since = None
        while time.monotonic() - started < 10.0:
            latencies.append(_liveness_seconds(server.port))
            peak = max(peak, _rss_bytes({worker}))
            if held_since is None and not sender.is_alive():
                held_since = time.monotonic()
            if held_since is not None and time.monotonic() - held_since > 1.0:
                break
            time.sleep(0.1)
        sender.join(timeout=5)
        assert len(clients) == 20
    print(
        f"worker RSS {before / MIB:.0f} MiB before, {peak / MIB:.0f} MiB peak while 20 unsigned "
        f"{size // MIB} MiB bodies were sent and held (last byte held back); "
        f"liveness max {max(latencies) * 1000:.0f} ms over {len(latencies)} probes"
    )
    assert peak < 150 * MIB
    assert max(latencies) < 1.0
    assert server.request("GET", "/health/readiness")[0] == 200


def test_a_body_not_sent_in_time_is_408_and_the_connection_closed(gunicorn):
    server = gunicorn(GITHUB_WEBHOOK_READ_TIMEOUT_SECS="1")
    client = _slow_body(server.port, 1000, 10)
    try:
        answer, closed = _answer(client, 4)
    finally:
        client.close()
    assert answer, "no answer while the body was held back"
    status, headers, body = _status_headers_body(answer)
    assert (status, body["status"]) == (408, 408)
    assert headers["content-type"] == "application/json"
    assert closed, "the connection stayed open"
    assert _liveness_seconds(server.port) < 1.0


def test_too_many_unsigned_bodies_from_one_address_are_429(gunicorn):
    # One worker: the limit is per worker, and with several the slow bodies may spread out.
    server = gunicorn(GUNICORN_WORKERS="1", GITHUB_WEBHOOK_UNSIGNED_PER_CLIENT="4")
    with _slow_bodies(server.port, 4, 100_000, 50_000):
        headers, body = _wait_for_status(server.port, 429)
        assert body["status"] == 429
        assert int(headers["retry-after"]) > 0
    # The slots are given back when the connections go.
    _wait_for_status(server.port, 401)


def test_webhook_bodies_beyond_the_memory_budget_are_503(gunicorn):
    budget = 2 * webhooks.SPOOL_MEMORY_BYTES
    server = gunicorn(
        GUNICORN_WORKERS="1",
        GITHUB_WEBHOOK_MEMORY_BUDGET_BYTES=str(budget),
        GITHUB_WEBHOOK_UNSIGNED_PER_CLIENT="64",
    )
    with _slow_bodies(server.port, 2, 25 * MIB, MIB):
        headers, body = _wait_for_status(server.port, 503)
        assert body["status"] == 503
        assert int(headers["retry-after"]) > 0
    _wait_for_status(server.port, 401)


def _deliver(port: int, guid: str, outcome: dict) -> None:
    """A signed delivery on its own connection; its status, Retry-After and duration go into
    ``outcome`` (run in a thread while the test measures liveness)."""
    started = time.monotonic()
    body, headers = delivery_request({"zen": guid}, guid=guid)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request("POST", WEBHOOK, body=body, headers=headers)
        response = connection.getresponse()
        outcome["body"] = json.loads(response.read())
        outcome["status"] = response.status
        outcome["retry_after"] = response.getheader("Retry-After")
    finally:
        connection.close()
        outcome["seconds"] = time.monotonic() - started


def _deliver_measuring_liveness(port: int, guid: str, release=None) -> tuple[dict, list[float]]:
    """Deliver from a thread, probing liveness meanwhile (at most 10 s); ``release`` is
    called once, half a second in."""
    outcome: dict = {}
    thread = threading.Thread(target=_deliver, args=(port, guid, outcome), daemon=True)
    started = time.monotonic()
    thread.start()
    latencies = []
    while thread.is_alive() and time.monotonic() - started < 10.0:
        latencies.append(_liveness_seconds(port))
        if release is not None and time.monotonic() - started > 0.5:
            release()
            release = None
        time.sleep(0.05)
    thread.join(timeout=5)
    return outcome, latencies


def test_a_held_database_write_lock_neither_freezes_the_worker_nor_loses_the_delivery(
    gunicorn, tmp_path
):
    server = gunicorn(GUNICORN_WORKERS="1", AGENTED_DB_LOCK_WAIT_SECS="2")
    holder = sqlite3.connect(tmp_path / "state" / "agented.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        refused, latencies = _deliver_measuring_liveness(server.port, "while-locked")
        print(
            f"write lock held: delivery answered {refused.get('status')} after "
            f"{refused['seconds']:.2f} s; liveness max {max(latencies) * 1000:.0f} ms "
            f"over {len(latencies)} probes"
        )
        assert refused["status"] == 503, refused
        assert int(refused["retry_after"]) > 0
        assert refused["body"]["status"] == 503
        assert 1.5 < refused["seconds"] < 5.0
        assert max(latencies) < 0.5

        # A lock let go while the delivery waits for it: the delivery is stored.
        accepted, latencies = _deliver_measuring_liveness(
            server.port, "after-release", release=lambda: holder.execute("ROLLBACK")
        )
        assert accepted["status"] == 202, accepted
        assert max(latencies) < 0.5
        guids = [row[0] for row in holder.execute("SELECT guid FROM deliveries")]
        assert guids == ["after-release"]
    finally:
        holder.close()
