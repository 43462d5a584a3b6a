"""One client cannot take every connection of a worker: a cap per client address, a time limit
on a new connection's request head, and connections held back from event streams. Real
Gunicorn on loopback; the attacker connects from 127.0.0.2, everyone else from 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import socket
import time

from helpers import AUTHORIZATION, request

ATTACKER = "127.0.0.2"


def connect_from(address: str, port: int) -> socket.socket:
    client = socket.socket()
    client.bind((address, 0))
    client.settimeout(5)
    client.connect(("127.0.0.1", port))
    return client


def answer_of(client: socket.socket) -> tuple[int, dict]:
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := client.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_connections_beyond_the_cap_of_one_address_get_429_and_others_are_served(gunicorn):
    server = gunicorn(GUNICORN_WORKERS="1", GUNICORN_CONNECTIONS_PER_CLIENT="20")
    held = [connect_from(ATTACKER, server.port) for _ in range(20)]
    try:
        for client in held:
            client.sendall(b"GET /health/liveness HTTP/1.1\r\nHost: x\r\n")  # never finished
        time.sleep(0.3)
        with connect_from(ATTACKER, server.port) as extra:
            status, body = answer_of(extra)
        assert status == 429 and body["status"] == 429, body
        started = time.monotonic()
        assert request(server.port, "GET", "/health/liveness")[0] == 200
        print(
            f"\n    liveness from another address with 20 held: {time.monotonic() - started:.3f} s"
        )
    finally:
        for client in held:
            client.close()


def test_a_request_head_that_does_not_arrive_in_time_is_disconnected(gunicorn):
    # GUNICORN_KEEPALIVE=0 used to leave the first request head without any time limit.
    server = gunicorn(GUNICORN_KEEPALIVE="0", GUNICORN_HEADER_TIMEOUT_SECS="1")
    client = connect_from(ATTACKER, server.port)
    try:
        client.sendall(b"GET /health/liveness HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        client.settimeout(5)
        assert client.recv(65536) == b"", "the server answered a request it never got"
        waited = time.monotonic() - started
        print(f"\n    slow head disconnected after {waited:.2f} s")
        assert 0.8 <= waited < 3, waited
    finally:
        client.close()


def test_a_request_slower_than_the_head_timeout_is_still_served_once_its_head_arrived(gunicorn):
    server = gunicorn(GUNICORN_HEADER_TIMEOUT_SECS="1")
    client = connect_from("127.0.0.1", server.port)
    try:
        client.sendall(b"GET /health/liveness HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _ = answer_of_first_response(client)
        time.sleep(1.5)  # longer than the head timeout, shorter than nothing: no later cut
        assert status == 200
    finally:
        client.close()


def answer_of_first_response(client: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += client.recv(65536)
    return int(data.split()[1]), data


def test_event_streams_leave_connections_for_everything_else(gunicorn):
    server = gunicorn(
        GUNICORN_WORKERS="1",
        GUNICORN_WORKER_CONNECTIONS="40",
        GUNICORN_RESERVED_CONNECTIONS="10",
        GUNICORN_CONNECTIONS_PER_CLIENT="1000",
    )
    streams = []
    try:
        for _ in range(30):
            client = connect_from(ATTACKER, server.port)
            client.sendall(
                b"GET /api/events HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: {AUTHORIZATION['Authorization']}\r\n\r\n".encode()
            )
            status, _ = answer_of_first_response(client)
            assert status == 200
            streams.append(client)
        one_more = connect_from(ATTACKER, server.port)
        one_more.sendall(
            b"GET /api/events HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: {AUTHORIZATION['Authorization']}\r\n\r\n".encode()
        )
        status, data = answer_of_first_response(one_more)
        one_more.close()
        assert status == 503 and b"Retry-After" in data, data[:300]
        assert request(server.port, "GET", "/health/liveness")[0] == 200
    finally:
        for client in streams:
            client.close()
