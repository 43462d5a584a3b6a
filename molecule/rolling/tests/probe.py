"""Readiness probe that runs inside a test host (system python3, standard library only).

    probe.py OUT [INTERVAL] [TIMEOUT] [MAX_SECONDS]

Asks http://127.0.0.1:20000/health/readiness every INTERVAL seconds (default 0.05), each on a new
connection with a TIMEOUT (default 0.5 s), and appends one line per answer to OUT:

    <sent, unix seconds> <answered or given up, unix seconds> <HTTP status or error name>

Runs until SIGTERM (tests/test_rolling.py starts and stops it with systemd-run / systemctl) and at
most MAX_SECONDS (default 1200), so a probe that nobody stops still ends. The clock is the host's
wall clock, which Docker containers share, so the probes of several hosts line up.
"""

import http.client
import signal
import sys
import time

URL_HOST, URL_PORT, PATH = "127.0.0.1", 20000, "/health/readiness"


def ask(timeout):
    connection = http.client.HTTPConnection(URL_HOST, URL_PORT, timeout=timeout)
    try:
        connection.request("GET", PATH)
        response = connection.getresponse()
        response.read()
        return str(response.status)
    except (OSError, http.client.HTTPException) as error:
        return type(error).__name__
    finally:
        connection.close()


def main(out, interval="0.05", timeout="0.5", max_seconds="1200"):
    interval, timeout, max_seconds = float(interval), float(timeout), float(max_seconds)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    end = time.monotonic() + max_seconds
    with open(out, "a", buffering=1) as stream:
        while not stopping and time.monotonic() < end:
            sent = time.time()
            status = ask(timeout)
            stream.write(f"{sent:.3f} {time.time():.3f} {status}\n")
            time.sleep(max(0.0, sent + interval - time.time()))


if __name__ == "__main__":
    main(*sys.argv[1:])
