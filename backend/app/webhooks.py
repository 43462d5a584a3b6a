"""``POST /api/webhooks/github``: signed GitHub deliveries become executions and events.

Checks, in order (the first that fails answers):

1. no GITHUB_WEBHOOK_SECRET configured -> 503 (unsigned deliveries are never accepted);
2. Content-Length over GITHUB_WEBHOOK_MAX_BYTES -> 413, before any of the body is read;
   a chunked body is read up to the limit and refused with 413 when it goes past it;
3. missing or wrong X-Hub-Signature-256 (HMAC-SHA256 of the raw body) -> 401;
4. missing or malformed X-GitHub-Delivery, malformed X-GitHub-Event -> 400;
5. a body that is not a JSON object -> 400.

A valid delivery is stored with its execution and its event in ONE transaction, committed
before the answer: 202 with their ids. A delivery id seen before is answered 200 and not
stored again (GitHub redelivers with the same id).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3

from flask import Blueprint, Response, abort, current_app, jsonify, request

from . import db, events, request_db
from .executions import execution_row_to_dict

bp = Blueprint("webhooks", __name__, url_prefix="/api/webhooks")

_DELIVERY_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_EVENT_RE = re.compile(r"[a-z0-9_.-]{1,64}")
# Events about an issue, pull request or discussion belong to that conversation.
_CONVERSATION_OBJECTS = ("issue", "pull_request", "discussion")


def signature_of(secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value GitHub sends for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    if not header:
        return False
    # Bytes, not str: compare_digest refuses non-ASCII str, and the header is client input.
    return hmac.compare_digest(
        signature_of(secret, body).encode(), header.encode("utf-8", "surrogateescape")
    )


def _text(value: object, *path: str) -> str | None:
    """payload[path[0]][path[1]]... when every step is an object and the end is a string."""
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, str) else None


def _conversation(payload: dict) -> tuple[str, int] | None:
    repository = _text(payload, "repository", "full_name")
    for name in _CONVERSATION_OBJECTS:
        subject = payload.get(name)
        if isinstance(subject, dict):
            number = subject.get("number")
            if repository and isinstance(number, int) and not isinstance(number, bool):
                return repository, number
    return None


def _error(status: int, message: str) -> Response:
    response = jsonify(error=message, status=status)
    response.status_code = status
    return response


@bp.post("/github")
def github() -> tuple[Response, int] | Response:
    config = current_app.config
    secret = config["GITHUB_WEBHOOK_SECRET"]
    if not secret:
        return _error(503, "GITHUB_WEBHOOK_SECRET is not set: no delivery can be verified")

    limit = config["GITHUB_WEBHOOK_MAX_BYTES"]
    too_large = f"The body is larger than GITHUB_WEBHOOK_MAX_BYTES ({limit} bytes)."
    if request.content_length is not None and request.content_length > limit:
        abort(413, too_large)
    # A chunked body has no Content-Length: read one byte past the limit, no further.
    request.max_content_length = limit + 1
    body = request.get_data(cache=False)
    if len(body) > limit:
        abort(413, too_large)

    if not _signature_valid(secret, body, request.headers.get("X-Hub-Signature-256")):
        return _error(401, "X-Hub-Signature-256 is missing or does not match the body")

    guid = request.headers.get("X-GitHub-Delivery", "")
    if not _DELIVERY_RE.fullmatch(guid):
        return _error(400, "X-GitHub-Delivery is missing or malformed")
    event = request.headers.get("X-GitHub-Event") or "unknown"
    if not _EVENT_RE.fullmatch(event):
        return _error(400, "X-GitHub-Event is malformed")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        payload = None
    if not isinstance(payload, dict):
        return _error(400, "The body is not a JSON object: use content type application/json")

    status, answer = store(request_db.get_db(), guid, event, payload, body)
    if status == 202:
        events.notify()
    return jsonify(answer), status


def store(
    connection: sqlite3.Connection,
    guid: str,
    event: str,
    payload: dict,
    body: bytes,
) -> tuple[int, dict]:
    """Store a verified delivery, its execution and its event in one transaction."""
    action = _text(payload, "action")
    repository = _text(payload, "repository", "full_name")
    received = db.now()
    with db.transaction(connection):
        delivery = connection.execute(
            """INSERT INTO deliveries (guid, event, action, repository, payload, received_at)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT (guid) DO NOTHING RETURNING id""",
            (guid, event, action, repository, body, received),
        ).fetchone()
        if delivery is None:
            execution = connection.execute(
                """SELECT executions.id FROM executions JOIN deliveries
                   ON deliveries.id = executions.delivery_id WHERE deliveries.guid = ?""",
                (guid,),
            ).fetchone()
            return 200, {
                "status": "duplicate",
                "delivery": guid,
                "execution_id": execution[0] if execution else None,
            }

        conversation_id = None
        if (conversation := _conversation(payload)) is not None:
            conversation_repository, number = conversation
            conversation_id = connection.execute(
                """INSERT INTO conversations
                       (key, repository, number, status, created_at, updated_at)
                   VALUES (?, ?, ?, 'active', ?, ?)
                   ON CONFLICT (key) DO UPDATE
                       SET status = 'active', updated_at = excluded.updated_at
                   RETURNING id""",
                (
                    f"{conversation_repository}#{number}",
                    conversation_repository,
                    number,
                    received,
                    received,
                ),
            ).fetchone()[0]

        source = f"github:{event}" + (f".{action}" if action else "")
        # A ping (sent when the webhook is created) asks for no work.
        status = "succeeded" if event == "ping" else "running"
        execution = connection.execute(
            """INSERT INTO executions
                   (delivery_id, conversation_id, source, status, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?)
               RETURNING *""",
            (delivery[0], conversation_id, source, status, received, received),
        ).fetchone()
        execution_data = execution_row_to_dict(execution)
        event_id = events.record(
            connection,
            "execution.created",
            {
                "execution": execution_data,
                "delivery": {
                    "id": guid,
                    "event": event,
                    "action": action,
                    "repository": repository,
                },
            },
        )
    return 202, {
        "status": "accepted",
        "delivery": guid,
        "execution_id": execution_data["id"],
        "event_id": event_id,
    }
