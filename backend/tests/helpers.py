"""Test helpers: signed deliveries, an event-stream reader, and real Gunicorn processes."""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from app.settings import SETTINGS_BY_NAME
from app.webhooks import signature_of

BACKEND_DIR = Path(__file__).resolve().parent.parent
WEBHOOK_SECRET = "It's a Secret to Everybody"
API_TOKEN = "test-api-token-0123456789abcdef"
AUTHORIZATION = {"Authorization": f"Bearer {API_TOKEN}"}


def api_client(app: Flask) -> FlaskClient:
    """A test client that sends the app's API token with every request."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {app.config['API_TOKEN']}"
    return client


def delivery_request(
    payload: object = None,
    *,
    guid: str = "delivery-1",
    event: str = "push",
    secret: str = WEBHOOK_SECRET,
    body: bytes | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a delivery signed the way GitHub signs it."""
    if body is None:
        body = json.dumps({} if payload is None else payload).encode()
    headers = {
        "X-Hub-Signature-256": signature_of(secret, body),
        "X-GitHub-Delivery": guid,
        "X-GitHub-Event": event,
        "Content-Type": "application/json",
    }
    return body, headers


def deliver(
    client: FlaskClient, payload: object = None, *, headers: dict | None = None, **options: Any
):
    body, signed = delivery_request(payload, **options)
    return client.post("/api/webhooks/github", data=body, headers=signed | (headers or {}))


def parse_sse(text: str) -> list[dict[str, str]]:
    """Messages of an event stream as dicts of their fields; comments as {"comment": ...}."""
    messages = []
    for block in text.split("\n\n"):
        if not block:
            continue
        message: dict[str, str] = {}
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            field = field or "comment"
            message[field] = value.removeprefix(" ")
        messages.append(message)
    return messages


# --- Real processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_environment(**overrides: str | None) -> dict[str, str]:
    """This process's environment without any backend setting, plus ``overrides`` (None
    removes a variable): a child process sees only the configuration a test gives it."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in SETTINGS_BY_NAME and not name.startswith("LISTEN_")
    }
    for name, value in overrides.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return environment


def _release_lookup() -> ModuleType:
    """The Ansible role's lookup of what a release ships, which runs without Ansible: the
    tests then start exactly the files a deployment would."""
    path = BACKEND_DIR.parent / "roles" / "agented_backend" / "lookup_plugins"
    spec = importlib.util.spec_from_file_location(
        "agented_backend_release", path / "agented_backend_release.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def backend_copy(destination: Path) -> Path:
    """What a release of the backend ships, in ``destination``, configured with
    `cp .env.example .env`."""
    _release_lookup().copy(str(BACKEND_DIR), str(destination))
    shutil.copy(destination / ".env.example", destination / ".env")
    return destination


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, Any]:
    """One request on its own connection, closed after (no idle keep-alive left behind)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=AUTHORIZATION | (headers or {}))
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, data


class EventStream:
    """A client of /api/events on a real server."""

    def __init__(
        self,
        port: int,
        last_event_id: str | None = None,
        timeout: float = 5.0,
        connect: bool = True,
    ):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        headers = {"Accept": "text/event-stream", **AUTHORIZATION}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.connection.request("GET", "/api/events", headers=headers)
        self.socket = self.connection.sock  # http.client lets go of it on Connection: close
        self.buffer = ""
        self.messages: list[dict[str, str]] = []
        self.ended = False
        self.ended_cleanly = False  # the server finished the response (last chunk sent)
        if connect:
            self.receive_headers()

    def receive_headers(self) -> EventStream:
        self.response = self.connection.getresponse()
        assert self.response.status == 200
        return self

    @classmethod
    def many(cls, port: int, count: int) -> list[EventStream]:
        """Open ``count`` streams at once, as a crowd of clients would."""
        streams = [cls(port, connect=False) for _ in range(count)]
        return [stream.receive_headers() for stream in streams]

    def _read(self, deadline: float) -> bool:
        """Read what arrives before ``deadline``; False once the stream has ended."""
        self.socket.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = self.response.read1(65536)
        except TimeoutError:
            return True
        except (http.client.IncompleteRead, ConnectionError):
            self.ended = True  # cut off: the server process died mid-response
            return False
        if not chunk:
            self.ended = self.ended_cleanly = True
            return False
        self.buffer += chunk.decode()
        complete, _, self.buffer = self.buffer.rpartition("\n\n")
        if complete:
            self.messages += parse_sse(complete + "\n\n")
        return True

    def wait_for(self, predicate, timeout: float = 5.0) -> dict[str, str]:
        """The first message (past or future) for which ``predicate`` is true."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages:
                if predicate(message):
                    return message
            if time.monotonic() >= deadline or not self._read(deadline):
                raise AssertionError(f"no such message; got {self.messages}")

    def wait_for_end(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ended and time.monotonic() < deadline:
            self._read(deadline)
        assert self.ended, "the stream did not end"

    @property
    def pid(self) -> int:
        comment = self.wait_for(lambda message: "pid" in message.get("comment", ""))
        return int(comment["comment"].rsplit(" ", 1)[1])

    def close(self) -> None:
        self.response.close()
        self.connection.close()
        self.socket.close()


class Gunicorn:
    """``gunicorn -c gunicorn.conf.py`` in its own process group, on a free loopback port."""

    def __init__(
        self,
        backend_dir: Path,
        state_dir: Path,
        env: dict[str, str | None] | None = None,
        port: int | None = None,
        test_defaults: bool = True,
    ):
        """Listens on ``port`` (default: a free one). With ``test_defaults``, the database is in
        ``state_dir``, there is no control socket, the webhook secret is WEBHOOK_SECRET and the
        API token API_TOKEN (which request() and stream() send);
        ``env`` overrides (None unsets); anything else comes from the backend's .env."""
        self.backend_dir = backend_dir
        self.state_dir = state_dir
        self.port = port or free_port()
        overrides: dict[str, str | None] = {"GUNICORN_BIND": f"127.0.0.1:{self.port}"}
        if test_defaults:
            overrides |= {
                "AGENTED_DB_PATH": str(state_dir / "state" / "agented.db"),
                "GUNICORN_CONTROL_SOCKET": "off",
                "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "API_TOKEN": API_TOKEN,
                # As systemd gives it: the metrics directory lives here, not in /tmp.
                "RUNTIME_DIRECTORY": str(state_dir / f"run-{self.port}"),
            }
        self.env = clean_environment(**(overrides | (env or {})))
        self.process: subprocess.Popen | None = None
        self.log_path = state_dir / f"gunicorn-{self.port}.log"

    def start(self, wait: bool = True) -> Gunicorn:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
                cwd=self.backend_dir,
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 20.0) -> float:
        """Seconds until /health/readiness answered 200."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited {self.process.returncode}:\n{self.log}")
            with contextlib.suppress(OSError):
                if self.request("GET", "/health/readiness", timeout=1)[0] == 200:
                    return time.monotonic() - started
            time.sleep(0.02)
        raise AssertionError(f"gunicorn not ready after {timeout} s:\n{self.log}")

    def request(self, method: str, path: str, **options: Any) -> tuple[int, Any]:
        return request(self.port, method, path, **options)

    def deliver(self, payload: object = None, **options: Any) -> tuple[int, Any]:
        body, headers = delivery_request(payload, **options)
        return self.request("POST", "/api/webhooks/github", body=body, headers=headers)

    def stream(self, last_event_id: str | None = None) -> EventStream:
        return EventStream(self.port, last_event_id)

    def worker_pids(self) -> set[int]:
        """Processes whose parent is the master (Linux /proc)."""
        assert self.process is not None
        return children_of(self.process.pid)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group: the master and its workers."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def children_of(pid: int) -> set[int]:
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may contain spaces, so split after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            children.add(int(entry.name))
    return children


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
