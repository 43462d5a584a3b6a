"""Real Gunicorn with the gevent worker, on a free loopback port, in its own process group."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app import db, events
from helpers import (
    EventStream,
    Gunicorn,
    alive,
    backend_copy,
    clean_environment,
    free_port,
    request,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses /proc and prctl")


def is_socket_soon(path: Path, timeout: float = 5.0) -> bool:
    """Gunicorn opens its control socket once the first workers are spawned, which may be
    after a worker already answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            return stat.S_ISSOCK(path.stat().st_mode)
        time.sleep(0.02)
    return False


def test_env_example_gives_a_running_service(tmp_path):
    """`cp .env.example .env`, then Gunicorn: only the port is overridden (and HOME, to see
    where Gunicorn puts its control socket by default)."""
    backend = backend_copy(tmp_path / "backend")
    home = tmp_path / "home"
    home.mkdir()
    server = Gunicorn(
        backend, tmp_path, {"HOME": str(home), "XDG_RUNTIME_DIR": None}, test_defaults=False
    )
    try:
        ready_after = server.start(wait=False).wait_ready()
        assert ready_after < 10
        assert len(server.worker_pids()) == 2
        status, liveness = server.request("GET", "/health/liveness")
        assert status == 200 and liveness["status"] == "ok"
        # Defaults: the database and the generated key in the backend directory...
        assert (backend / "agented.db").is_file()
        assert stat.S_IMODE((backend / ".secret_key").stat().st_mode) == 0o600
        # ...and the generated API token, which the API needs:
        token = (backend / ".api_token").read_text().strip()
        assert stat.S_IMODE((backend / ".api_token").stat().st_mode) == 0o600
        assert server.request("GET", "/api/config")[0] == 401
        authorization = {"Authorization": f"Bearer {token}"}
        assert server.request("GET", "/api/config", headers=authorization)[0] == 200
        # ...the control socket where Gunicorn puts it by default...
        assert is_socket_soon(home / ".gunicorn" / "gunicorn.ctl")
        # ...and no webhook secret: deliveries are refused.
        assert server.deliver({"zen": "x"})[0] == 503
        log = server.log
        assert "CORS_ALLOWED_ORIGINS" not in log  # no cross-origin access by default
        assert '"GET /health/liveness HTTP/1.1" 200' in log  # access log
        assert '"GET /api/config HTTP/1.1" 401' in log
        assert token not in log
    finally:
        server.kill()


def test_the_master_migrates_an_older_database_once_before_workers_serve(gunicorn, tmp_path):
    path = tmp_path / "state" / "agented.db"
    path.parent.mkdir()
    connection = sqlite3.connect(path, isolation_level=None)
    for statement in db.MIGRATIONS[0].statements:
        connection.execute(statement)
    connection.execute("PRAGMA user_version = 1")
    connection.close()

    server = gunicorn(GUNICORN_WORKERS="2")
    status, answer = server.request("GET", "/health/readiness")
    assert (status, answer["schema_version"]) == (200, db.SCHEMA_VERSION)
    migrated = [line for line in server.log.splitlines() if "at schema version" in line]
    assert len(migrated) == 1, server.log  # by the master, not by each worker
    assert f"[{server.process.pid}]" in migrated[0]


def test_gunicorn_stops_in_one_line_when_it_cannot_migrate(backend_dir, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=backend_dir,
        env=clean_environment(
            AGENTED_DB_PATH=str(blocker / "agented.db"),
            GUNICORN_BIND=f"127.0.0.1:{free_port()}",
            GUNICORN_CONTROL_SOCKET="off",
        ),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("agented:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"agented: cannot migrate the database {blocker / 'agented.db'}: ")
    assert "Booting worker" not in result.stderr


def test_signed_webhook_end_to_end_and_events_reach_every_worker(gunicorn, tmp_path):
    server = gunicorn(GUNICORN_WORKERS="2")
    streams = []
    try:
        # Connections arriving together are spread over the workers (one after the other,
        # they would all go to whichever worker wakes first).
        # The second worker may still be booting: try until it serves too.
        deadline = time.monotonic() + 10
        while len({stream.pid for stream in streams}) < 2 and time.monotonic() < deadline:
            streams += EventStream.many(server.port, 8)
            time.sleep(0.1)
        assert len({stream.pid for stream in streams}) == 2

        status, answer = server.deliver(
            {"action": "opened", "issue": {"number": 5}, "repository": {"full_name": "o/r"}},
            guid="end-to-end",
            event="issues",
        )
        assert status == 202, answer
        for stream in streams:  # streams on both workers, the delivery handled by one
            message = stream.wait_for(lambda m: m.get("id") == str(answer["event_id"]))
            assert message["event"] == "execution.created"
            assert json.loads(message["data"])["execution"]["id"] == answer["execution_id"]

        # An event written by another process entirely reaches every worker's streams too.
        connection = db.connect(str(tmp_path / "state" / "agented.db"))
        try:
            with db.transaction(connection):
                outside = events.record(connection, "outside.event", {"from": "test"})
        finally:
            connection.close()
        for stream in streams:
            stream.wait_for(lambda m: m.get("id") == str(outside), timeout=3)

        status, executions = server.request("GET", "/api/executions")
        assert [e["delivery"] for e in executions["executions"]] == ["end-to-end"]
        assert server.deliver({"action": "opened"}, guid="end-to-end")[0] == 200

        # A client that reconnects gets what it missed.
        resumed = server.stream(last_event_id=str(answer["event_id"] - 1))
        streams.append(resumed)
        resumed.wait_for(lambda m: m.get("id") == str(answer["event_id"]))
    finally:
        for stream in streams:
            stream.close()


def test_acknowledged_delivery_survives_sigkill_of_the_whole_service(gunicorn):
    server = gunicorn()
    status, answer = server.deliver({"ref": "main"}, guid="survivor")
    assert status == 202
    server.kill()  # SIGKILL to the master and its workers, no chance to flush anything

    restarted = gunicorn(port=server.port)
    status, executions = restarted.request("GET", "/api/executions")
    assert [e["delivery"] for e in executions["executions"]] == ["survivor"]
    assert restarted.deliver({"ref": "main"}, guid="survivor")[0] == 200  # not stored twice
    stream = restarted.stream(last_event_id="0")
    try:
        stream.wait_for(lambda m: m.get("id") == str(answer["event_id"]))
    finally:
        stream.close()


def test_workers_leave_at_once_when_the_master_is_killed(gunicorn):
    server = gunicorn()
    stream = server.stream()
    try:
        workers = server.worker_pids()
        assert len(workers) == 2
        assert stream.pid in workers
        killed = time.monotonic()
        os.kill(server.process.pid, signal.SIGKILL)
        # PR_SET_PDEATHSIG: the kernel sends SIGTERM to the workers; the event stream is
        # finished properly (not cut off by the process dying) well within a second.
        stream.wait_for_end(timeout=3)
        assert stream.ended_cleanly
        assert time.monotonic() - killed < 0.8
        deadline = killed + 3
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(alive(pid) for pid in workers)
        # The service manager restarts only once every worker has left (gunicorn.conf.py
        # checks for a stop ten times a second instead of Gunicorn's once a second).
        gone = time.monotonic() - killed
        print(f"workers gone {gone:.2f} s after SIGKILL of the master")
        assert gone < 0.6
    finally:
        stream.close()


def test_idle_workers_leave_at_once_when_the_master_is_killed(gunicorn):
    """A worker that holds no connection has nothing to drain when its master dies: it leaves
    in its SIGTERM handler, without the interpreter's teardown, and the service manager may
    restart the service sooner."""
    server = gunicorn()
    workers = server.worker_pids()
    assert len(workers) == 2
    killed = time.monotonic()
    os.kill(server.process.pid, signal.SIGKILL)
    deadline = killed + 3
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.005)
    gone = time.monotonic() - killed
    print(f"idle workers gone {gone:.3f} s after SIGKILL of the master")
    assert not any(alive(pid) for pid in workers)
    # Each leaves without the teardown, in its SIGTERM handler or, when its own loop saw the
    # master gone first, once drained: both are at once with nothing in hand.
    assert server.log.count("worker leaving at once: ") == len(workers), server.log
    assert gone < 0.5


def test_stop_ends_event_streams_instead_of_waiting_for_the_graceful_timeout(gunicorn):
    server = gunicorn(GUNICORN_GRACEFUL_TIMEOUT="20")
    stream = server.stream()
    try:
        stopped = time.monotonic()
        server.signal(signal.SIGTERM)
        stream.wait_for_end(timeout=3)
        assert stream.ended_cleanly
        assert server.wait(timeout=10) == 0
        assert time.monotonic() - stopped < 1.5
    finally:
        stream.close()


def test_reload_brings_workers_with_new_code_and_configuration(tmp_path):
    backend = backend_copy(tmp_path / "backend")
    server = Gunicorn(backend, tmp_path).start()
    try:
        before = server.worker_pids()
        assert server.request("GET", "/api/config")[1]["settings"]["SSE_REPLAY_LIMIT"] == 500
        (backend / ".env").write_text("SSE_REPLAY_LIMIT=123\n")
        health = backend / "app" / "health.py"
        health.write_text(health.read_text().replace('status="ok"', 'status="ok, reloaded"'))

        server.signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                config = server.request("GET", "/api/config")[1]
                liveness = server.request("GET", "/health/liveness")[1]
                if (
                    config["settings"]["SSE_REPLAY_LIMIT"] == 123
                    and liveness["status"] == "ok, reloaded"
                ):
                    break
            time.sleep(0.1)
        else:
            pytest.fail(f"not reloaded:\n{server.log}")
        assert server.process.poll() is None  # the same master...
        deadline = time.monotonic() + 5  # ...and the old workers leave promptly
        while before & server.worker_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not before & server.worker_pids()
        assert len(server.worker_pids()) == 2
    finally:
        server.kill()


def test_systemd_socket_activation_serves_the_inherited_socket(backend_dir, tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    ignored_port = free_port()
    env = clean_environment(
        GUNICORN_BIND=f"127.0.0.1:{ignored_port}",  # ignored under socket activation
        AGENTED_DB_PATH=str(tmp_path / "agented.db"),
        GUNICORN_CONTROL_SOCKET="off",
        LISTEN_FDS="1",
    )
    # What systemd does: the socket is fd 3 and LISTEN_PID is the service's own pid.
    launcher = (
        "import os, sys; os.dup2(int(sys.argv[1]), 3); "
        "os.environ['LISTEN_PID'] = str(os.getpid()); "
        "os.execv(sys.executable, [sys.executable, '-m', 'gunicorn', '-c', 'gunicorn.conf.py'])"
    )
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", launcher, str(listener.fileno())],
            cwd=backend_dir,
            env=env,
            pass_fds=(listener.fileno(),),
            start_new_session=True,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    listener.close()  # the service owns it now, as with systemd
    try:
        deadline = time.monotonic() + 15
        status = None
        while time.monotonic() < deadline and status != 200:
            with contextlib.suppress(OSError):
                status = request(port, "GET", "/health/readiness", timeout=1)[0]
            time.sleep(0.05)
        assert status == 200, log.read_text()
        with pytest.raises(ConnectionRefusedError):
            request(ignored_port, "GET", "/health/readiness", timeout=1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _raw_exchange(port: int, head: bytes, body: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send ``head`` and part of a body; return the answer and whether the server closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as client:
        client.sendall(head + body)
        answer = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = client.recv(65536)
            except TimeoutError:
                break
            if not data:
                return answer, True
            answer += data
        return answer, False


def test_oversized_bodies_are_refused_and_not_drained(gunicorn, tmp_path):
    control_socket = tmp_path / "run" / "gunicorn.ctl"
    server = gunicorn(GITHUB_WEBHOOK_MAX_BYTES="2048", GUNICORN_CONTROL_SOCKET=str(control_socket))
    assert is_socket_soon(control_socket)

    declared = (
        b"POST /api/webhooks/github HTTP/1.1\r\nHost: test\r\n"
        b"X-Hub-Signature-256: sha256=00\r\nContent-Length: 1000000000\r\n\r\n"
    )
    answer, closed = _raw_exchange(server.port, declared, b"x" * 1000)
    assert answer.startswith(b"HTTP/1.1 413")
    assert closed, "the server kept reading the body"

    chunked = (
        b"POST /api/webhooks/github HTTP/1.1\r\nHost: test\r\n"
        b"X-Hub-Signature-256: sha256=00\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answer, closed = _raw_exchange(
        server.port,
        chunked,
        b"800\r\n" + b"y" * 0x800 + b"\r\n" * 1 + b"800\r\n" + b"y" * 0x800 + b"\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413")
    assert closed, "the server kept reading the body"


BAD_CONFIGURATIONS = [
    ("LOG_LEVEL", "loud", "use one of debug, info, warning, error, critical"),
    ("SSE_REPLAY_LIMIT", "-5", "use a whole number from 0 to 100000"),
    ("SSE_REPLAY_LIMIT", "abc", "use a whole number from 0 to 100000"),
    ("GUNICORN_BIND", "0.0.0.0", "use HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"),
]


def _assert_one_line_error(
    result: subprocess.CompletedProcess, name: str, value: str, allowed: str
) -> None:
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{name}={value!r} is not allowed: {allowed}" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("name", "value", "allowed"), BAD_CONFIGURATIONS)
def test_gunicorn_refuses_bad_configuration_in_one_line(backend_dir, name, value, allowed):
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=backend_dir,
        env=clean_environment(**{name: value}),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    _assert_one_line_error(result, name, value, allowed)
    assert result.stdout == ""


def test_gunicorn_refuses_bad_configuration_from_env_file(tmp_path):
    backend = backend_copy(tmp_path / "backend")
    (backend / ".env").write_text("LOG_LEVEL=loud\n")
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=backend,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    _assert_one_line_error(result, *BAD_CONFIGURATIONS[0])


def test_run_py_refuses_bad_configuration_in_one_line(backend_dir):
    result = subprocess.run(
        [sys.executable, "run.py"],
        cwd=backend_dir,
        env=clean_environment(SSE_REPLAY_LIMIT="abc"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    _assert_one_line_error(result, *BAD_CONFIGURATIONS[2])


@pytest.mark.parametrize("arguments", [[], ["--debug"]], ids=["plain", "debug-reloader"])
def test_run_py_development_server(backend_dir, tmp_path, arguments):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "run.py", *arguments],
        cwd=backend_dir,
        env=clean_environment(
            GUNICORN_BIND=f"127.0.0.1:{port}", AGENTED_DB_PATH=str(tmp_path / "agented.db")
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        status, answer = None, None
        while time.monotonic() < deadline and status != 200:
            with contextlib.suppress(OSError):
                status, answer = request(port, "GET", "/health/liveness", timeout=1)
            time.sleep(0.05)
        assert status == 200
        # No Gunicorn master: run.py migrated the fresh database itself before serving.
        assert request(port, "GET", "/health/readiness", timeout=1)[0] == 200
        if arguments == ["--debug"]:
            assert answer["pid"] != process.pid  # served by the reloader's child process
        else:
            assert answer["pid"] == process.pid
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _notifications(notify: socket.socket, seconds: float) -> list[tuple[float, bytes]]:
    """What arrives on a NOTIFY_SOCKET within ``seconds``, each with its arrival time."""
    received = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        notify.settimeout(left)
        try:
            received.append((time.monotonic(), notify.recv(4096)))
        except TimeoutError:
            break
    return received


def test_the_master_feeds_systemds_watchdog_from_its_main_loop(gunicorn, tmp_path):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    try:
        server = gunicorn(NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="2000000")
        alive = [at for at, message in _notifications(notify, 3.5) if message == b"WATCHDOG=1"]
        assert len(alive) >= 3, "the master does not feed the watchdog once a second"
        assert max(b - a for a, b in itertools.pairwise(alive)) < 1.5
        # A master that stops looping stops feeding it, whatever its workers still do.
        server.signal(signal.SIGSTOP)
        stopped = _notifications(notify, 2.0)
        server.signal(signal.SIGCONT)
        assert b"WATCHDOG=1" not in [message for _, message in stopped]
    finally:
        notify.close()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    ],
)
def test_requests_gunicorn_cannot_parse_get_json_errors(gunicorn, request_bytes, status):
    server = gunicorn()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
        client.sendall(request_bytes)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert b"Content-Type: application/json" in head, head
    assert json.loads(body)["status"] == status, body


def _start_once(backend_dir, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=backend_dir,
        env=clean_environment(
            GUNICORN_BIND=f"127.0.0.1:{free_port()}", GUNICORN_CONTROL_SOCKET="off", **env
        ),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "Booting worker" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("agented:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda path: path.write_text(""), "is empty"),
        (lambda path: path.mkdir(), "is not a regular file"),
        (lambda path: path.write_bytes("clé\n".encode()), "holds bytes that are not ASCII"),
        (
            lambda path: (path.write_text("k" * 20), os.chown(path, 54321, -1)),
            "belongs to uid 54321",
        ),
    ],
    ids=["empty", "directory", "not ASCII", "another owner"],
)
def test_a_key_file_that_cannot_serve_stops_gunicorn_in_one_line(
    backend_dir, tmp_path, make, expected
):
    state = tmp_path / "state"
    state.mkdir()
    make(state / ".secret_key")
    line = _one_line(
        _start_once(
            backend_dir, {"AGENTED_DB_PATH": str(state / "agented.db"), "API_TOKEN": "t" * 20}
        )
    )
    assert expected in line and "set SECRET_KEY" in line, line


def test_a_state_directory_that_cannot_hold_a_key_stops_gunicorn_in_one_line(backend_dir, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / ".api_token").mkdir()  # SECRET_KEY is kept, API_TOKEN cannot be
    line = _one_line(_start_once(backend_dir, {"AGENTED_DB_PATH": str(state / "agented.db")}))
    assert "api_token" in line and "API_TOKEN" in line, line


def test_a_path_component_too_long_stops_gunicorn_in_one_line(backend_dir, tmp_path):
    line = _one_line(
        _start_once(backend_dir, {"AGENTED_DB_PATH": str(tmp_path / ("x" * 5000) / "agented.db")})
    )
    assert "cannot migrate the database" in line or "File name too long" in line, line


def test_a_5000_digit_number_is_refused_in_one_line(backend_dir):
    line = _one_line(_start_once(backend_dir, {"GUNICORN_WORKERS": "9" * 5000}))
    assert "GUNICORN_WORKERS" in line and "whole number" in line, line[:300]


def test_an_unparsable_env_line_stops_gunicorn_in_one_line(backend_dir, tmp_path):
    copy = backend_copy(tmp_path / "backend")
    with open(copy / ".env", "a") as env:
        env.write("LOG_LEVEL='debug\n")  # unterminated quote: python-dotenv would skip it
    line = _one_line(_start_once(copy, {"AGENTED_DB_PATH": str(tmp_path / "agented.db")}))
    assert "cannot parse line" in line, line
