"""Fixtures: an app on a temporary database (flaskr style) and real Gunicorn processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.factory import create_app
from helpers import API_TOKEN, WEBHOOK_SECRET, Gunicorn, api_client, backend_copy


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(
        {
            "TESTING": True,
            "AGENTED_DB_PATH": str(tmp_path / "state" / "agented.db"),
            "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "API_TOKEN": API_TOKEN,
            "BACKGROUND_JOBS": False,
            "SSE_HEARTBEAT_SECS": 1,
            "SSE_POLL_INTERVAL_MS": 20,
        },
        migrate=True,
    )


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A client of the API as its front end is: with the token."""
    return api_client(app)


@pytest.fixture(scope="session")
def backend_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the backend's code, configured by `cp .env.example .env` and nothing else."""
    return backend_copy(tmp_path_factory.mktemp("backend") / "backend")


@pytest.fixture
def gunicorn(backend_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Gunicorn]]:
    """``gunicorn(**env)`` starts Gunicorn and waits for readiness; every process group
    started is killed after the test."""
    started: list[Gunicorn] = []

    def start(port: int | None = None, wait: bool = True, **env: str) -> Gunicorn:
        server = Gunicorn(backend_dir, tmp_path, env, port=port)
        started.append(server)
        return server.start(wait=wait)

    yield start
    for server in started:
        server.kill()
