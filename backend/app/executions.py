"""Executions (work started by a delivery) and conversations (the issue, pull request or
discussion deliveries refer to): ``GET /api/executions``, ``GET /api/conversations``, and
the job that marks them stale.

An execution is ``running`` until whoever runs it reports back; one still running after
STALE_EXECUTION_THRESHOLD_SECS is marked ``stale``. A conversation without a delivery for
STALE_CONVERSATION_THRESHOLD_SECS is marked ``stale`` too (a new delivery reactivates it).
Each change is an event on the stream.
"""

from __future__ import annotations

import datetime
import sqlite3

from flask import Blueprint, abort, jsonify, request
from flask.typing import ResponseReturnValue

from . import db, events, request_db, write_lock

bp = Blueprint("executions", __name__, url_prefix="/api")

EXECUTION_STATUSES = ("running", "succeeded", "failed", "stale")
CONVERSATION_STATUSES = ("active", "stale")
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# Events kept for replay at least; older ones are pruned by the periodic job.
EVENTS_KEPT = 10000
# The largest integer SQLite stores (signed 64 bits); Python's sqlite3 raises OverflowError
# for a larger one instead of finding no row.
SQLITE_MAX_INTEGER = 2**63 - 1


def _timestamp(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.datetime.fromtimestamp(value, datetime.UTC).isoformat(timespec="milliseconds")


def execution_row_to_dict(row: sqlite3.Row) -> dict:
    return {
        "id": row["id"],
        "delivery_id": row["delivery_id"],
        "conversation_id": row["conversation_id"],
        "source": row["source"],
        "status": row["status"],
        "created_at": _timestamp(row["created_at"]),
        "updated_at": _timestamp(row["updated_at"]),
    }


def conversation_row_to_dict(row: sqlite3.Row) -> dict:
    return {
        "id": row["id"],
        "key": row["key"],
        "repository": row["repository"],
        "number": row["number"],
        "status": row["status"],
        "created_at": _timestamp(row["created_at"]),
        "updated_at": _timestamp(row["updated_at"]),
    }


def _list_arguments(statuses: tuple[str, ...]) -> tuple[str | None, int]:
    status = request.args.get("status")
    if status is not None and status not in statuses:
        abort(400, f"status must be one of {', '.join(statuses)}")
    try:
        limit = int(request.args.get("limit", DEFAULT_LIMIT))
    except ValueError:
        limit = -1
    if not 1 <= limit <= MAX_LIMIT:
        abort(400, f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return status, limit


@bp.get("/executions")
def list_executions() -> ResponseReturnValue:
    """Newest first; ?status= filters, ?limit= caps (default 50, at most 500)."""
    status, limit = _list_arguments(EXECUTION_STATUSES)
    rows = (
        request_db.get_db()
        .execute(
            """SELECT executions.*, deliveries.guid AS delivery_guid
           FROM executions JOIN deliveries ON deliveries.id = executions.delivery_id
           WHERE ?1 IS NULL OR executions.status = ?1
           ORDER BY executions.id DESC LIMIT ?2""",
            (status, limit),
        )
        .fetchall()
    )
    return jsonify(
        executions=[execution_row_to_dict(row) | {"delivery": row["delivery_guid"]} for row in rows]
    )


@bp.get("/executions/<int:execution_id>")
def get_execution(execution_id: int) -> ResponseReturnValue:
    if execution_id > SQLITE_MAX_INTEGER:  # no row can have it, and the query would overflow
        abort(404, f"no execution {execution_id}")
    row = (
        request_db.get_db()
        .execute(
            """SELECT executions.*, deliveries.guid AS delivery_guid, deliveries.event,
                  deliveries.action, deliveries.repository
           FROM executions JOIN deliveries ON deliveries.id = executions.delivery_id
           WHERE executions.id = ?""",
            (execution_id,),
        )
        .fetchone()
    )
    if row is None:
        abort(404, f"no execution {execution_id}")
    return jsonify(
        execution_row_to_dict(row)
        | {
            "delivery": {
                "id": row["delivery_guid"],
                "event": row["event"],
                "action": row["action"],
                "repository": row["repository"],
            }
        }
    )


@bp.get("/conversations")
def list_conversations() -> ResponseReturnValue:
    """Most recently active first; ?status= and ?limit= as for executions."""
    status, limit = _list_arguments(CONVERSATION_STATUSES)
    rows = (
        request_db.get_db()
        .execute(
            """SELECT * FROM conversations WHERE ?1 IS NULL OR status = ?1
           ORDER BY updated_at DESC, id DESC LIMIT ?2""",
            (status, limit),
        )
        .fetchall()
    )
    return jsonify(conversations=[conversation_row_to_dict(row) for row in rows])


def mark_stale(
    connection: sqlite3.Connection,
    execution_threshold: float,
    conversation_threshold: float,
    now: float | None = None,
    *,
    lock_wait_secs: float = db.BUSY_TIMEOUT_SECS,
) -> int:
    """Mark overdue executions and idle conversations stale, with one event each (jobs.py prunes
    old events, in batches). One short transaction;
    running it in every worker at once is harmless (a row changes once). Returns how many
    rows changed. The write lock is waited for without blocking other greenlets, for at most
    ``lock_wait_secs``: then write_lock.LockNotAcquired, an sqlite3.OperationalError."""
    now = db.now() if now is None else now
    with write_lock.transaction(connection, lock_wait_secs):
        executions = connection.execute(
            """UPDATE executions SET status = 'stale', updated_at = ?
               WHERE status = 'running' AND updated_at < ? RETURNING *""",
            (now, now - execution_threshold),
        ).fetchall()
        for row in executions:
            events.record(connection, "execution.stale", {"execution": execution_row_to_dict(row)})
        conversations = connection.execute(
            """UPDATE conversations SET status = 'stale'
               WHERE status = 'active' AND updated_at < ? RETURNING *""",
            (now - conversation_threshold,),
        ).fetchall()
        for row in conversations:
            events.record(
                connection, "conversation.stale", {"conversation": conversation_row_to_dict(row)}
            )
    return len(executions) + len(conversations)
