"""SQLite: created with its directory, WAL, versioned migrations safe with several workers,
and the fallback secret key."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading

import pytest

from app import db, secret_key
from helpers import BACKEND_DIR


def test_sqlite_is_recent_enough():
    assert sqlite3.sqlite_version_info >= (3, 35)  # RETURNING, used by every write


def test_migrate_creates_directory_and_current_schema_in_wal_mode(tmp_path):
    path = tmp_path / "deep" / "state" / "agented.db"
    assert db.migrate(str(path)) == db.SCHEMA_VERSION
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    connection = db.connect(str(path))
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.schema_version(connection) == db.SCHEMA_VERSION
        assert connection.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert connection.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        tables = {
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        assert {"deliveries", "executions", "events", "conversations"} <= tables
    finally:
        connection.close()
    assert db.migrate(str(path)) == db.SCHEMA_VERSION  # idempotent


def test_migrate_upgrades_an_older_schema_and_keeps_its_data(tmp_path):
    path = str(tmp_path / "agented.db")
    connection = sqlite3.connect(path, isolation_level=None)
    for statement in db.MIGRATIONS[0].statements:
        connection.execute(statement)
    connection.execute("PRAGMA user_version = 1")
    connection.execute(
        "INSERT INTO deliveries (guid, event, payload, received_at) VALUES ('g', 'push', '{}', 0)"
    )
    connection.close()

    assert db.migrate(path) == 2
    connection = db.connect(path)
    try:
        assert connection.execute("SELECT guid FROM deliveries").fetchone()[0] == "g"
        columns = {row[1] for row in connection.execute("PRAGMA table_info(executions)")}
        assert "conversation_id" in columns
    finally:
        connection.close()


def test_newer_schema_is_left_alone(tmp_path):
    path = str(tmp_path / "agented.db")
    db.migrate(path)
    connection = db.connect(path)
    connection.execute("PRAGMA user_version = 99")
    connection.close()
    assert db.migrate(path) == 99


def test_transaction_rolls_back_on_error(tmp_path):
    path = str(tmp_path / "agented.db")
    db.migrate(path)
    connection = db.connect(path)
    try:
        try:
            with db.transaction(connection):
                connection.execute(
                    "INSERT INTO events (type, data, created_at) VALUES ('x', '{}', 0)"
                )
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        assert connection.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    finally:
        connection.close()


def _run_at_once(code: str, count: int, cwd) -> list[str]:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        outputs.append(stdout.strip())
    return outputs


def test_migrations_started_together_apply_once(tmp_path):
    """Like two masters starting at the same moment: one applies, the others wait and skip.
    A lost race is rare (about 1 round in 20 here), so the test runs many rounds."""
    for round_number in range(60):
        path = str(tmp_path / str(round_number) / "agented.db")
        barrier = threading.Barrier(6)
        results: list[int | Exception] = []

        def start(path=path, barrier=barrier, results=results) -> None:
            barrier.wait()
            try:
                results.append(db.migrate(path))
            except sqlite3.Error as error:
                results.append(error)

        threads = [threading.Thread(target=start) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [db.SCHEMA_VERSION] * 6, f"round {round_number}"
        connection = db.connect(path)
        try:
            assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            connection.close()


def test_secret_key_is_created_once_with_mode_0600_and_reused(tmp_path):
    directory = tmp_path / "state"
    # The app package and secret_key import no Flask, so these processes start fast.
    code = f"from app import secret_key; print(secret_key.load_or_create({str(directory)!r}))"
    keys = _run_at_once(code, 6, BACKEND_DIR)
    assert len(set(keys)) == 1 and len(keys[0]) >= 32
    key_file = directory / ".secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert sorted(os.listdir(directory)) == [".secret_key"]  # no candidates left behind
    assert secret_key.load_or_create(str(directory)) == keys[0]


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ("a key with inner  spaces\n", "a key with inner  spaces"),
        ("  padded\t\r\n", "padded"),
        ("ends-with-a-separator\x1c\n", "ends-with-a-separator\x1c"),
    ],
)
def test_a_stored_key_is_read_as_written_less_surrounding_whitespace(tmp_path, content, key):
    (tmp_path / ".secret_key").write_text(content, encoding="utf-8", newline="")
    os.chmod(tmp_path / ".secret_key", 0o600)
    assert secret_key.load_or_create(str(tmp_path)) == key
