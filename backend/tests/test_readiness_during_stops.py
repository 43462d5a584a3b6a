"""Readiness and new connections while workers stop: a reload (SIGHUP) keeps the instance
serving, so readiness stays 200 on every connection; only a stop of the whole instance
(SIGTERM to the master, or its death) makes it answer 503."""

from __future__ import annotations

import contextlib
import http.client
import signal
import sys
import threading
import time
from collections import Counter

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses prctl")


def _poll(port: int, keep_alive: bool, stop: threading.Event, answers: Counter) -> None:
    """Poll readiness as a load balancer would: on one kept-alive connection, or on a new
    connection each time. Every answer (status, reason) or error is counted."""
    connection = None
    while not stop.is_set():
        try:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("GET", "/health/readiness")
            response = connection.getresponse()
            body = response.read()
            answers[(response.status, body if response.status != 200 else b"")] += 1
            if not keep_alive or response.will_close:
                connection.close()
                connection = None
        except (OSError, http.client.HTTPException) as error:
            answers[("error", type(error).__name__)] += 1
            with contextlib.suppress(Exception):
                connection.close()  # type: ignore[union-attr]
            connection = None
        time.sleep(0.002)
    if connection is not None:
        connection.close()


def _polling(port: int, seconds: float, action) -> Counter:
    answers: Counter = Counter()
    stop = threading.Event()
    pollers = [
        threading.Thread(target=_poll, args=(port, keep_alive, stop, answers))
        for keep_alive in (True, True, False, False)
    ]
    for poller in pollers:
        poller.start()
    try:
        time.sleep(0.3)
        action()
        time.sleep(seconds)
    finally:
        stop.set()
        for poller in pollers:
            poller.join(10)
    return answers


def test_readiness_stays_200_through_reloads(gunicorn):
    server = gunicorn()
    reloads = 3

    def reload_three_times():
        # Each reload once the previous one's workers serve: a reload during the boot of the
        # last one's workers would only measure the boot. Connections wait in the backlog
        # meanwhile (hence the pollers' 30 s timeout on a loaded machine).
        for _ in range(reloads):
            before = server.worker_pids()
            server.signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (
                before & server.worker_pids() or len(server.worker_pids()) < 2
            ):
                time.sleep(0.05)
            time.sleep(0.5)

    answers = _polling(server.port, 0.5, reload_three_times)
    print(f"readiness during {reloads} reloads: {dict(answers)}")
    assert answers[(200, b"")] > 20
    assert set(answers) == {(200, b"")}, server.log


def test_readiness_is_503_once_the_whole_instance_stops(gunicorn):
    """A kept-alive connection to a worker draining for a stop of the master is told 503
    (or closed), never 200: a load balancer must pull an instance that is going away."""
    server = gunicorn()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("GET", "/health/readiness")
        first = connection.getresponse()
        first.read()
        assert first.status == 200
        # A stream holds its worker in the drain, so the kept-alive connection is still served.
        streams = [server.stream() for _ in range(4)]
        server.signal(signal.SIGTERM)
        time.sleep(0.05)
        try:
            connection.request("GET", "/health/readiness")
            response = connection.getresponse()
            answer = (response.status, response.read())
        except (OSError, http.client.HTTPException) as error:
            answer = ("closed", type(error).__name__)
        print(f"readiness on a kept-alive connection after SIGTERM: {answer}")
        assert answer[0] in (503, "closed")
        if answer[0] == 503:
            assert b"shutting down" in answer[1]
        for stream in streams:
            stream.close()
    finally:
        connection.close()
    assert server.wait(timeout=10) == 0
