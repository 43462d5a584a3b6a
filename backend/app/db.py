"""SQLite storage: the schema's migrations, connections and transactions.

WAL mode so readers never wait for the writer, and a busy timeout so several Gunicorn
workers can write to the same file. Every sqlite3 call blocks the whole gevent worker, so
transactions stay short and writers take the lock up front (BEGIN IMMEDIATE) instead of
upgrading a read lock, which cannot be retried. A request's own connection is in
:mod:`app.request_db`.

The schema is versioned with ``PRAGMA user_version``: ``MIGRATIONS[n]`` brings a database
from version n to n + 1. They run once per start, before anything serves: in the Gunicorn
master before it forks workers (gunicorn.conf.py), in run.py, and in tests through
``create_app(migrate=True)``; workers never migrate, and readiness only reads the version.
:func:`migrate` applies what is missing inside BEGIN IMMEDIATE, so two processes migrating
together (two masters during a restart) apply each migration once.

Each migration declares whether it is *compatible*: whether a release at the version before
it can still read and write the database after it (expand/contract: add, never remove or
change the meaning of, what that release uses). The database records the oldest schema
version that can still run on it (table ``schema_compatibility``) and every migration's
name (table ``schema_migrations``), so an older release, which cannot know the migrations
that came after it, can tell whether it is still ready, and if not, which one it cannot
run after.

Standard library only: the Gunicorn master imports this module without Flask.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import NamedTuple

# How long a connection waits for another one's write lock before failing. Writes take
# milliseconds, so reaching this means something is badly wrong.
BUSY_TIMEOUT_SECS = 5.0
# Pages a snapshot copies and flushes to disk at a time (4 MiB at SQLite's default page size).
SNAPSHOT_STEP_PAGES = 1024


class Migration(NamedTuple):
    # True when a release at the version before this migration still reads and writes
    # the database correctly after it (see "Adding a migration" in the README).
    compatible: bool
    statements: tuple[str, ...]
    # What it does, in a few words. Recorded in the database (table schema_migrations), so
    # that an older release, which cannot know it, can still say which migration it cannot
    # run after.
    name: str


MIGRATIONS: tuple[Migration, ...] = (
    # 1: deliveries, the executions they start, and the event stream.
    Migration(
        name="deliveries, executions and events",
        compatible=False,  # nothing runs on a database without tables
        statements=(
            """CREATE TABLE deliveries (
                id INTEGER PRIMARY KEY,
                guid TEXT NOT NULL UNIQUE,        -- X-GitHub-Delivery
                event TEXT NOT NULL,              -- X-GitHub-Event
                action TEXT,
                repository TEXT,
                payload BLOB NOT NULL,            -- the body exactly as signed
                received_at REAL NOT NULL
            )""",
            """CREATE TABLE executions (
                id INTEGER PRIMARY KEY,
                delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
                source TEXT NOT NULL,
                status TEXT NOT NULL
                    CHECK (status IN ('running', 'succeeded', 'failed', 'stale')),
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL
            )""",
            "CREATE INDEX executions_by_status ON executions (status, updated_at)",
            # AUTOINCREMENT: an id is never reused, even after old events are pruned, so it can
            # serve as the SSE event id that clients send back in Last-Event-ID.
            """CREATE TABLE events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                type TEXT NOT NULL,
                data TEXT NOT NULL,
                created_at REAL NOT NULL
            )""",
        ),
    ),
    # 2: conversations (an issue, pull request or discussion that deliveries refer to).
    Migration(
        name="conversations",
        # Releases at version 1 required an exact schema match: they refuse any newer one.
        compatible=False,
        statements=(
            """CREATE TABLE conversations (
                id INTEGER PRIMARY KEY,
                key TEXT NOT NULL UNIQUE,         -- owner/repo#number
                repository TEXT NOT NULL,
                number INTEGER NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('active', 'stale')),
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL
            )""",
            "CREATE INDEX conversations_by_status ON conversations (status, updated_at)",
            "ALTER TABLE executions"
            " ADD COLUMN conversation_id INTEGER REFERENCES conversations (id)",
        ),
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


def oldest_compatible(version: int) -> int:
    """The oldest schema version a release can have and still run on a database at
    ``version``: the version reached by the last incompatible migration up to it."""
    return max(
        (number for number, m in enumerate(MIGRATIONS[:version], 1) if not m.compatible),
        default=0,
    )


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode: transactions are explicit (see :func:`transaction`)."""
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECS, isolation_level=None)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


@contextlib.contextmanager
def transaction(
    connection: sqlite3.Connection, begin: Callable[[], None] | None = None
) -> Iterator[sqlite3.Connection]:
    """A write transaction that holds the write lock from its first statement; ``begin``
    starts it another way (app/write_lock.py waits for the lock without blocking)."""
    if begin is None:
        connection.execute("BEGIN IMMEDIATE")
    else:
        begin()
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def connect_read_only(path: str) -> sqlite3.Connection:
    """A connection that cannot write, nor create a missing database file."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_SECS, isolation_level=None)


def schema_version(connection: sqlite3.Connection) -> int:
    return connection.execute("PRAGMA user_version").fetchone()[0]


def recorded_oldest_compatible(connection: sqlite3.Connection) -> int:
    """What the database says; one migrated before the record existed needs its own version."""
    try:
        row = connection.execute("SELECT version FROM schema_compatibility").fetchone()
    except sqlite3.OperationalError as error:
        if "no such table" not in str(error):
            raise
        row = None
    return schema_version(connection) if row is None else row[0]


def recorded_migrations(connection: sqlite3.Connection) -> dict[int, tuple[str, bool]]:
    """{version: (name, compatible)} of the migrations the database records; empty for one
    migrated before the record existed."""
    try:
        rows = connection.execute(
            "SELECT version, name, compatible FROM schema_migrations"
        ).fetchall()
    except sqlite3.OperationalError as error:
        if "no such table" not in str(error):
            raise
        return {}
    return {row[0]: (row[1], bool(row[2])) for row in rows}


def compatibility_problem(connection: sqlite3.Connection) -> str | None:
    """Why this release cannot run on the database, or None when it can."""
    version = schema_version(connection)
    if version < SCHEMA_VERSION:
        return f"database schema version {version} is older than this release's ({SCHEMA_VERSION})"
    if version > SCHEMA_VERSION:
        oldest = recorded_oldest_compatible(connection)
        if oldest > SCHEMA_VERSION:
            recorded = recorded_migrations(connection)
            blocking = [
                f"{number} ({recorded[number][0]})"
                for number in range(SCHEMA_VERSION + 1, oldest + 1)
                if number in recorded and not recorded[number][1]
            ]
            named = f": incompatible migration {', '.join(blocking)}" if blocking else ""
            return (
                f"database schema version {version} is newer than this release's"
                f" ({SCHEMA_VERSION}) and needs at least version {oldest}{named}"
            )
    return None


def _record_schema(connection: sqlite3.Connection) -> None:
    """Record the oldest version that can run on this schema, and every migration's name."""
    connection.execute(
        """CREATE TABLE IF NOT EXISTS schema_compatibility (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            version INTEGER NOT NULL
        )"""
    )
    connection.execute(
        "INSERT INTO schema_compatibility (id, version) VALUES (1, ?)"
        " ON CONFLICT (id) DO UPDATE SET version = excluded.version",
        (oldest_compatible(SCHEMA_VERSION),),
    )
    connection.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            compatible INTEGER NOT NULL CHECK (compatible IN (0, 1))
        )"""
    )
    connection.executemany(
        "INSERT INTO schema_migrations (version, name, compatible) VALUES (?, ?, ?)"
        " ON CONFLICT (version)"
        " DO UPDATE SET name = excluded.name, compatible = excluded.compatible",
        [(number, m.name, int(m.compatible)) for number, m in enumerate(MIGRATIONS, 1)],
    )


def _use_wal(connection: sqlite3.Connection) -> None:
    """Switch the database to WAL. The mode is stored in the file, so this only does work the
    first time. When two processes switch a new database together (the role's two Gunicorn
    masters), the one that loses gets "database is locked" at once: SQLite does not call the
    busy handler for the exclusive lock the switch takes. So it tries again, within the busy
    timeout, and finds the database switched."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECS
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
        time.sleep(0.01)


def migrate(path: str) -> int:
    """Create the database (and its directory) if needed, switch it to WAL and apply the
    missing migrations. Returns the schema version found or reached; a database newer than
    this code is left alone (readiness says whether this release can run on it)."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    connection = connect(path)
    try:
        _use_wal(connection)
        with transaction(connection):
            version = schema_version(connection)
            for migration in MIGRATIONS[version:]:
                for statement in migration.statements:
                    connection.execute(statement)
            if version < SCHEMA_VERSION:
                # PRAGMA takes no parameters; the value is our own integer.
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")
                version = SCHEMA_VERSION
            if version == SCHEMA_VERSION:
                _record_schema(connection)
        return version
    finally:
        connection.close()


def now() -> float:
    return time.time()


def status(path: str) -> dict:
    """What starting this release would do to the database at ``path``, read without writing
    or creating it: the role asks a new release this before activating it."""
    try:
        connection = connect_read_only(path)
    except sqlite3.OperationalError:
        version = None
    else:
        try:
            version = schema_version(connection)
            problem = compatibility_problem(connection)
        finally:
            connection.close()
    migrates = version is not None and version < SCHEMA_VERSION
    return {
        "database_version": version,
        "release_version": SCHEMA_VERSION,
        "oldest_compatible_after": oldest_compatible(SCHEMA_VERSION),
        "migrates": migrates,
        # The migrations starting this release would apply, as "<version> (<name>)".
        "migrations": [
            f"{number} ({MIGRATIONS[number - 1].name})"
            for number in range(version + 1, SCHEMA_VERSION + 1)
        ]
        if migrates
        else [],
        "problem": None if version is None else problem,
    }


def snapshot(path: str, destination: str) -> None:
    """An online, consistent copy of a live WAL database through SQLite's backup API (a
    file copy could miss what is still in the WAL), created with mode 0600.

    The copy is written and flushed SNAPSHOT_STEP_PAGES at a time: written at once, hundreds of
    megabytes of dirty pages would sit in front of every commit's fsync, and webhooks would wait
    seconds for their acknowledgement (docs/BENCHMARKS.md, section 9). All steps read inside one
    read transaction, so they copy the same moment of the database while writers go on, and
    the backup never has to start again."""
    descriptor = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        source = connect_read_only(path)
        try:
            source.execute("BEGIN")
            source.execute("SELECT count(*) FROM sqlite_schema").fetchone()
            target = sqlite3.connect(destination)
            try:
                source.backup(
                    target,
                    pages=SNAPSHOT_STEP_PAGES,
                    progress=lambda *_: os.fsync(descriptor),
                )
            finally:
                target.close()
            source.execute("COMMIT")
        finally:
            source.close()
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def verify(path: str) -> dict:
    """Whether the file at ``path`` (a snapshot, say) is a sound database this release can run
    on (``problem``), and would migrate first (``migrates``), read without writing anything
    beside it (immutable: no lock, no -wal or -shm file)."""
    answer = {
        "integrity": None,
        "database_version": None,
        "release_version": SCHEMA_VERSION,
        "migrates": False,
        "problem": None,
    }
    if not os.path.isfile(path):
        answer["integrity"] = f"{path} is not a file"
        return answer
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro&immutable=1"
    try:
        connection = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            rows = [row[0] for row in connection.execute("PRAGMA integrity_check")]
            answer["integrity"] = "; ".join(rows)
            if rows == ["ok"]:
                answer["database_version"] = schema_version(connection)
                answer["migrates"] = answer["database_version"] < SCHEMA_VERSION
                answer["problem"] = compatibility_problem(connection)
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        answer["integrity"] = str(error)
    return answer


def _main(argv: list[str]) -> int:
    import json  # noqa: PLC0415 -- only the command line needs it
    import sys  # noqa: PLC0415

    if len(argv) == 2 and argv[0] == "status":
        print(json.dumps(status(argv[1]), sort_keys=True))
        return 0
    if len(argv) == 3 and argv[0] == "snapshot":
        snapshot(argv[1], argv[2])
        return 0
    if len(argv) == 2 and argv[0] == "verify":
        print(json.dumps(verify(argv[1]), sort_keys=True))
        return 0
    print(
        "usage: python -m app.db status DB | snapshot DB DESTINATION | verify SNAPSHOT",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    import sys

    raise SystemExit(_main(sys.argv[1:]))
