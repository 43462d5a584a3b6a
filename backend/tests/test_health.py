"""Liveness and readiness."""

from __future__ import annotations

import os
import sqlite3
import tomllib

import pytest

from app import db, lifecycle
from app.factory import create_app
from helpers import BACKEND_DIR


def pyproject_version() -> str:
    with open(BACKEND_DIR / "pyproject.toml", "rb") as stream:
        return tomllib.load(stream)["project"]["version"]


def test_liveness(client):
    response = client.get("/health/liveness")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok",
        "pid": os.getpid(),
        "version": pyproject_version(),
    }


def test_readiness(client):
    response = client.get("/health/readiness")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ready"
    assert response.get_json()["schema_version"] == db.SCHEMA_VERSION


def test_not_ready_when_the_schema_is_newer_than_the_code(app, client):
    connection = db.connect(app.config["AGENTED_DB_PATH"])
    connection.execute("PRAGMA user_version = 99")
    connection.execute("UPDATE schema_compatibility SET version = 99")  # incompatible with us
    connection.close()
    response = client.get("/health/readiness")
    assert response.status_code == 503
    assert "schema version 99 is newer" in response.get_json()["reason"]


def test_not_ready_while_the_database_is_unreachable_then_ready_once_migrated(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    path = blocker / "agented.db"
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "k",
            "API_TOKEN": "t",
            "BACKGROUND_JOBS": False,
            "AGENTED_DB_PATH": str(path),
        }
    )  # a worker starts anyway: the database may become available later
    client = app.test_client()
    response = client.get("/health/readiness")
    assert response.status_code == 503
    assert "unavailable" in response.get_json()["reason"]
    assert client.get("/health/liveness").status_code == 200

    blocker.unlink()  # the "volume" appears, but readiness does not create the database...
    blocker.mkdir()
    response = client.get("/health/readiness")
    assert response.status_code == 503
    assert "unavailable" in response.get_json()["reason"]
    assert not path.exists()

    db.migrate(str(path))  # ...the next start migrates it
    response = client.get("/health/readiness")
    assert response.status_code == 200, response.get_json()


def test_an_unavailable_database_is_detailed_in_the_log_only(tmp_path, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    path = blocker / "agented.db"
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "k",
            "API_TOKEN": "t",
            "BACKGROUND_JOBS": False,
            "AGENTED_DB_PATH": str(path),
        }
    )
    caplog.clear()
    response = app.test_client().get("/health/readiness")
    assert response.status_code == 503
    # Anyone can probe readiness: the answer names no path and no SQLite error.
    assert response.get_json() == {
        "error": "database unavailable",
        "status": 503,
        "reason": "database unavailable",
    }
    [record] = [r for r in caplog.records if "readiness" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert str(path) in record.getMessage()
    assert "unable to open database file" in record.getMessage()
    assert "\n" not in record.getMessage()


def older_database(path) -> None:
    """A database at schema version 1, as the previous release left it."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    for statement in db.MIGRATIONS[0].statements:
        connection.execute(statement)
    connection.execute("PRAGMA user_version = 1")
    connection.close()


def test_readiness_never_writes_and_refuses_an_older_schema(tmp_path):
    path = tmp_path / "agented.db"
    older_database(path)
    before = path.stat()
    app = create_app(
        {"TESTING": True, "SECRET_KEY": "k", "BACKGROUND_JOBS": False, "AGENTED_DB_PATH": str(path)}
    )
    client = app.test_client()
    for _ in range(3):
        response = client.get("/health/readiness")
        assert response.status_code == 503
        assert response.get_json()["reason"] == (
            f"database schema version 1 is older than this release's ({db.SCHEMA_VERSION})"
        )
    after = path.stat()
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    connection = sqlite3.connect(path)
    try:
        assert db.schema_version(connection) == 1
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        assert "conversations" not in tables
    finally:
        connection.close()


def test_readiness_does_not_create_a_missing_database(tmp_path):
    path = tmp_path / "agented.db"
    app = create_app(
        {"TESTING": True, "SECRET_KEY": "k", "BACKGROUND_JOBS": False, "AGENTED_DB_PATH": str(path)}
    )
    response = app.test_client().get("/health/readiness")
    assert response.status_code == 503
    assert not path.exists()


def test_without_secret_key_an_unusable_state_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(RuntimeError, match="set SECRET_KEY, or AGENTED_DB_PATH"):
        create_app({"TESTING": True, "AGENTED_DB_PATH": str(blocker / "agented.db")})


def test_not_ready_when_shutting_down(app, client):
    lifecycle.get(app).attach(lambda: False)
    response = client.get("/health/readiness")
    assert response.status_code == 503
    assert response.get_json()["reason"] == "shutting down"
