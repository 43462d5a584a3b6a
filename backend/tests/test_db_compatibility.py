"""Expand/contract: the database records the oldest schema version that can still run on it,
and a release is ready on a newer database exactly when it is compatible with it."""

from __future__ import annotations

import pytest

from app import db
from app.factory import create_app


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


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ((False,), [0, 1]),
        ((False, True, True), [0, 1, 1, 1]),
        ((False, True, False, True), [0, 1, 1, 3, 3]),
    ],
)
def test_oldest_compatible_follows_the_last_incompatible_migration(monkeypatch, flags, expected):
    monkeypatch.setattr(db, "MIGRATIONS", tuple(db.Migration(f, ()) for f in flags))
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
