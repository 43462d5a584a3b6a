"""Expand/contract: the database records the oldest schema version that can still run on it,
and a release is ready on a newer database exactly when it is compatible with it."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
import threading

import pytest

from app import db
from app.factory import create_app
from helpers import BACKEND_DIR


def release_app(path):
    return create_app(
        {"TESTING": True, "SECRET_KEY": "k", "BACKGROUND_JOBS": False, "AGENTED_DB_PATH": str(path)}
    )


def newer_database(path, *, oldest: int, extra: int = 1) -> None:
    """A database as a later release with ``extra`` more migrations left it."""
    db.migrate(str(path))
    connection = db.connect(str(path))
    try:
        connection.execute("ALTER TABLE deliveries ADD COLUMN later TEXT")
        connection.execute(f"PRAGMA user_version = {db.SCHEMA_VERSION + extra:d}")
        connection.execute("UPDATE schema_compatibility SET version = ?", (oldest,))
    finally:
        connection.close()


INSERT_DELIVERY = (
    "INSERT INTO deliveries (guid, event, payload, received_at) VALUES (?, 'push', ?, 0)"
)


def insert_deliveries(connection, guids, payload: bytes) -> None:
    """One committed delivery per guid, each with ``payload`` as its body."""
    with db.transaction(connection):
        connection.executemany(INSERT_DELIVERY, [(guid, payload) for guid in guids])


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ((False,), [0, 1]),
        ((False, True, True), [0, 1, 1, 1]),
        ((False, True, False, True), [0, 1, 1, 3, 3]),
    ],
)
def test_oldest_compatible_follows_the_last_incompatible_migration(monkeypatch, flags, expected):
    migrations = tuple(db.Migration(f, (), f"m{n}") for n, f in enumerate(flags))
    monkeypatch.setattr(db, "MIGRATIONS", migrations)
    assert [db.oldest_compatible(version) for version in range(len(flags) + 1)] == expected


def test_every_migration_declares_its_compatibility():
    assert all(isinstance(migration.compatible, bool) for migration in db.MIGRATIONS)
    assert db.MIGRATIONS[0].compatible is False


def test_migrate_records_the_oldest_compatible_version(tmp_path):
    path = str(tmp_path / "agented.db")
    db.migrate(path)
    connection = db.connect(path)
    try:
        assert db.recorded_oldest_compatible(connection) == db.oldest_compatible(db.SCHEMA_VERSION)
        assert db.compatibility_problem(connection) is None
    finally:
        connection.close()


def test_a_database_migrated_before_the_record_counts_as_needing_its_own_version(tmp_path):
    path = str(tmp_path / "agented.db")
    db.migrate(path)
    connection = db.connect(path)
    try:
        connection.execute("DROP TABLE schema_compatibility")
        assert db.recorded_oldest_compatible(connection) == db.SCHEMA_VERSION
    finally:
        connection.close()
    db.migrate(path)  # the current release records it again
    connection = db.connect(path)
    try:
        assert connection.execute("SELECT version FROM schema_compatibility").fetchone()[0] == (
            db.oldest_compatible(db.SCHEMA_VERSION)
        )
    finally:
        connection.close()


def test_ready_and_storing_on_a_newer_compatible_database(tmp_path):
    path = tmp_path / "agented.db"
    newer_database(path, oldest=db.SCHEMA_VERSION)
    db.migrate(str(path))  # this release starts: it must leave the newer database alone
    connection = db.connect(str(path))
    try:
        assert db.schema_version(connection) == db.SCHEMA_VERSION + 1
        assert db.recorded_oldest_compatible(connection) == db.SCHEMA_VERSION
    finally:
        connection.close()
    response = release_app(path).test_client().get("/health/readiness")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["schema_version"] == db.SCHEMA_VERSION + 1


def test_not_ready_on_a_newer_incompatible_database_and_says_what_it_needs(tmp_path):
    path = tmp_path / "agented.db"
    newer_database(path, oldest=db.SCHEMA_VERSION + 1)
    db.migrate(str(path))
    response = release_app(path).test_client().get("/health/readiness")
    assert response.status_code == 503
    assert response.get_json()["reason"] == (
        f"database schema version {db.SCHEMA_VERSION + 1} is newer than this release's"
        f" ({db.SCHEMA_VERSION}) and needs at least version {db.SCHEMA_VERSION + 1}"
    )


def test_migrate_records_every_migration_by_name(tmp_path):
    path = str(tmp_path / "agented.db")
    db.migrate(path)
    connection = db.connect(path)
    try:
        assert db.recorded_migrations(connection) == {
            number: (migration.name, migration.compatible)
            for number, migration in enumerate(db.MIGRATIONS, 1)
        }
    finally:
        connection.close()
    assert all(migration.name for migration in db.MIGRATIONS)


def test_an_older_release_names_the_newer_migration_it_cannot_run_after(tmp_path):
    path = tmp_path / "agented.db"
    newer_database(path, oldest=db.SCHEMA_VERSION + 1)
    connection = db.connect(str(path))
    try:
        connection.execute(
            "INSERT INTO schema_migrations (version, name, compatible) VALUES (?, ?, 0)",
            (db.SCHEMA_VERSION + 1, "drop the source column"),
        )
        assert db.compatibility_problem(connection) == (
            f"database schema version {db.SCHEMA_VERSION + 1} is newer than this release's"
            f" ({db.SCHEMA_VERSION}) and needs at least version {db.SCHEMA_VERSION + 1}:"
            f" incompatible migration {db.SCHEMA_VERSION + 1} (drop the source column)"
        )
    finally:
        connection.close()


def run_db_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "app.db", *args],
        cwd=BACKEND_DIR,
        capture_output=True,
        text=True,
        check=False,
    )


def test_status_says_whether_starting_this_release_migrates_without_writing(tmp_path):
    path = tmp_path / "agented.db"
    missing = run_db_cli("status", str(path))
    assert missing.returncode == 0, missing.stderr
    assert json.loads(missing.stdout)["database_version"] is None
    assert not path.exists()

    connection = sqlite3.connect(path, isolation_level=None)
    for statement in db.MIGRATIONS[0].statements:
        connection.execute(statement)
    connection.execute("PRAGMA user_version = 1")
    connection.close()
    before = path.stat()
    answer = json.loads(run_db_cli("status", str(path)).stdout)
    assert answer == {
        "database_version": 1,
        "release_version": db.SCHEMA_VERSION,
        "oldest_compatible_after": db.oldest_compatible(db.SCHEMA_VERSION),
        "migrates": True,
        "migrations": [
            f"{number} ({db.MIGRATIONS[number - 1].name})"
            for number in range(2, db.SCHEMA_VERSION + 1)
        ],
        "problem": f"database schema version 1 is older than this release's ({db.SCHEMA_VERSION})",
    }
    after = path.stat()
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)


def test_snapshot_of_a_live_wal_database_holds_every_committed_row_with_mode_0600(tmp_path):
    path = str(tmp_path / "agented.db")
    db.migrate(path)
    writer = db.connect(path)
    try:
        insert_deliveries(writer, (f"g{n}" for n in range(500)), b"{}")
        destination = tmp_path / "snapshot.db"
        result = run_db_cli("snapshot", path, str(destination))
        assert result.returncode == 0, result.stderr
    finally:
        writer.close()  # still open during the snapshot: the rows are in the WAL, not the file
    assert stat.S_IMODE(destination.stat().st_mode) == 0o600
    copy = sqlite3.connect(destination)
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 500
    finally:
        copy.close()
    assert run_db_cli("snapshot", path, str(destination)).returncode != 0  # never overwrites


def test_a_snapshot_taken_in_steps_while_a_writer_commits_is_one_moment_of_the_database(
    tmp_path, monkeypatch
):
    """Every step of the copy reads the same snapshot: the copy holds every delivery committed
    before it began and, of those committed while it ran, an unbroken first part, never a torn
    mix, however many commits land between its steps."""
    path = str(tmp_path / "agented.db")
    db.migrate(path)
    writer = db.connect(path)
    insert_deliveries(writer, (f"before-{n}" for n in range(3000)), b"x" * 4000)
    copying, stop, committed = threading.Event(), threading.Event(), []

    def write() -> None:
        connection = db.connect(path)
        try:
            # Bounded: a copy that started again after every commit would finish only then.
            while not stop.is_set() and len(committed) < 3000:
                with db.transaction(connection):
                    connection.execute(INSERT_DELIVERY, (f"during-{len(committed)}", b"y" * 4000))
                committed.append(copying.is_set())
        finally:
            connection.close()

    monkeypatch.setattr(db, "SNAPSHOT_STEP_PAGES", 8)
    thread = threading.Thread(target=write)
    thread.start()
    try:
        destination = tmp_path / "snapshot.db"
        copying.set()
        db.snapshot(path, str(destination))
        copying.clear()
    finally:
        stop.set()
        thread.join()
        writer.close()
    assert committed.count(True) > 20  # the writer went on while the copy was taken,
    assert committed[-1] is False  # and the copy was done before the writer was
    copy = sqlite3.connect(destination)
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        guids = {row[0] for row in copy.execute("SELECT guid FROM deliveries")}
    finally:
        copy.close()
    during = len(guids) - 3000
    assert guids == {f"before-{n}" for n in range(3000)} | {f"during-{n}" for n in range(during)}


def test_verify_reads_a_snapshot_without_writing_beside_it(tmp_path):
    path = str(tmp_path / "agented.db")
    db.migrate(path)
    snapshot = tmp_path / "backups" / "snapshot.db"
    snapshot.parent.mkdir()
    db.snapshot(path, str(snapshot))
    answer = json.loads(run_db_cli("verify", str(snapshot)).stdout)
    assert answer == {
        "integrity": "ok",
        "database_version": db.SCHEMA_VERSION,
        "release_version": db.SCHEMA_VERSION,
        "migrates": False,
        "problem": None,
    }
    assert sorted(p.name for p in snapshot.parent.iterdir()) == ["snapshot.db"]


def test_verify_refuses_a_truncated_snapshot_and_a_missing_one(tmp_path):
    path = str(tmp_path / "agented.db")
    db.migrate(path)
    connection = db.connect(path)
    try:
        insert_deliveries(connection, (f"g{n}" for n in range(200)), b"x" * 2000)
    finally:
        connection.close()
    snapshot = tmp_path / "snapshot.db"
    db.snapshot(path, str(snapshot))
    data = snapshot.read_bytes()
    snapshot.write_bytes(data[: len(data) // 2])
    assert db.verify(str(snapshot))["integrity"] != "ok"
    assert db.verify(str(tmp_path / "missing.db"))["integrity"] != "ok"


def test_verify_reports_a_snapshot_this_release_cannot_run_on(tmp_path):
    path = tmp_path / "agented.db"
    newer_database(path, oldest=db.SCHEMA_VERSION + 1)
    answer = db.verify(str(path))
    assert answer["integrity"] == "ok"
    assert "needs at least version" in answer["problem"]
