"""``POST /api/webhooks/github``: signed GitHub deliveries become executions and events.

Checks, in order (the first that fails answers):

1. no GITHUB_WEBHOOK_SECRET configured -> 503 (unsigned deliveries are never accepted);
2. Content-Length over GITHUB_WEBHOOK_MAX_BYTES -> 413, before any of the body is read;
   a chunked body is read up to the limit and refused with 413 when it goes past it;
3. missing or wrong X-Hub-Signature-256 (HMAC-SHA256 of the raw body) -> 401;
4. missing or malformed X-GitHub-Delivery, malformed X-GitHub-Event -> 400;
5. a body that is not a JSON object -> 400, and so is one whose action, repository name or
   issue/pull request/discussion number cannot be stored (a lone surrogate, an integer
   beyond 64 bits).

A valid delivery is stored with its execution and its event in ONE transaction, committed
before the answer: 202 with their ids. A delivery id seen before is answered 200 and not
stored again (GitHub redelivers with the same id).

The handler is these steps in order: read the body, verify its signature, parse the
delivery, store it; each of the first three refuses with :class:`Refused`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import sqlite3

from flask import Blueprint, Response, current_app, jsonify, request

from . import db, errors, events, request_db
from .executions import SQLITE_MAX_INTEGER, execution_row_to_dict

bp = Blueprint("webhooks", __name__, url_prefix="/api/webhooks")

_DELIVERY_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_EVENT_RE = re.compile(r"[a-z0-9_.-]{1,64}")
# Events about an issue, pull request or discussion belong to that conversation.
_CONVERSATION_OBJECTS = ("issue", "pull_request", "discussion")


def signature_of(secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value GitHub sends for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


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


class Refused(Exception):
    """A delivery that is not accepted, with the answer it gets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass(frozen=True)
class Delivery:
    """A delivery whose signature matched: what is stored of it."""

    guid: str  # X-GitHub-Delivery
    event: str  # X-GitHub-Event
    payload: dict
    body: bytes  # exactly as signed

    @property
    def action(self) -> str | None:
        return _text(self.payload, "action")

    @property
    def repository(self) -> str | None:
        return _text(self.payload, "repository", "full_name")


@bp.post("/github")
def github() -> tuple[Response, int] | Response:
    config = current_app.config
    try:
        secret = config["GITHUB_WEBHOOK_SECRET"]
        if not secret:
            raise Refused(503, "GITHUB_WEBHOOK_SECRET is not set: no delivery can be verified")
        body = read_body(config["GITHUB_WEBHOOK_MAX_BYTES"])
        verify_signature(secret, body, request.headers.get("X-Hub-Signature-256"))
        delivery = parse(
            body, request.headers.get("X-GitHub-Delivery"), request.headers.get("X-GitHub-Event")
        )
    except Refused as refusal:
        return errors.error_response(refusal.status, refusal.message)
    status, answer = store(request_db.get_db(), delivery)
    if status == 202:
        events.notify()
    return jsonify(answer), status


def read_body(limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes. A declared length over the
    limit is refused before anything is read; a chunked body, which declares none, is read
    one byte past the limit and no further."""
    too_large = f"The body is larger than GITHUB_WEBHOOK_MAX_BYTES ({limit} bytes)."
    if request.content_length is not None and request.content_length > limit:
        raise Refused(413, too_large)
    request.max_content_length = limit + 1
    body = request.get_data(cache=False)
    if len(body) > limit:
        raise Refused(413, too_large)
    return body


def verify_signature(secret: str, body: bytes, header: str | None) -> None:
    """Refuse with 401 unless ``header`` is the HMAC-SHA256 of ``body`` under ``secret``."""
    if not header or not hmac.compare_digest(
        # Bytes, not str: compare_digest refuses non-ASCII str, and the header is client input.
        signature_of(secret, body).encode(),
        header.encode("utf-8", "surrogateescape"),
    ):
        raise Refused(401, "X-Hub-Signature-256 is missing or does not match the body")


def parse(body: bytes, guid: str | None, event: str | None) -> Delivery:
    """The delivery that the (verified) body and headers describe; 400 when malformed."""
    if not guid or not _DELIVERY_RE.fullmatch(guid):
        raise Refused(400, "X-GitHub-Delivery is missing or malformed")
    event = event or "unknown"
    if not _EVENT_RE.fullmatch(event):
        raise Refused(400, "X-GitHub-Event is malformed")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        payload = None
    if not isinstance(payload, dict):
        raise Refused(400, "The body is not a JSON object: use content type application/json")
    delivery = Delivery(guid, event, payload, body)
    _check_storable(delivery)
    return delivery


def _check_storable(delivery: Delivery) -> None:
    """Refuse with 400 the values that are stored in columns of their own but that SQLite
    cannot hold: JSON may escape a lone surrogate (not UTF-8, so sqlite3 raises
    UnicodeEncodeError) and may carry integers beyond 64 bits (OverflowError). Both would
    otherwise be a 500 inside the transaction; GitHub sends neither."""
    for name, value in (("action", delivery.action), ("repository", delivery.repository)):
        if value is not None:
            try:
                value.encode()
            except UnicodeEncodeError:
                raise Refused(400, f"The payload's {name} is not valid Unicode") from None
    for name in _CONVERSATION_OBJECTS:
        subject = delivery.payload.get(name)
        number = subject.get("number") if isinstance(subject, dict) else None
        if isinstance(number, int) and not -SQLITE_MAX_INTEGER - 1 <= number <= SQLITE_MAX_INTEGER:
            raise Refused(400, f"The payload's {name}.number is out of range")


def store(connection: sqlite3.Connection, delivery: Delivery) -> tuple[int, dict]:
    """Store a verified delivery, its execution and its event in one transaction: 202 with
    their ids, or 200 for a delivery stored before."""
    received = db.now()
    with db.transaction(connection):
        delivery_id = _insert_delivery(connection, delivery, received)
        if delivery_id is None:
            return 200, _duplicate(connection, delivery.guid)
        conversation_id = _touch_conversation(connection, delivery.payload, received)
        execution = _insert_execution(connection, delivery, delivery_id, conversation_id, received)
        event_id = events.record(
            connection,
            "execution.created",
            {
                "execution": execution,
                "delivery": {
                    "id": delivery.guid,
                    "event": delivery.event,
                    "action": delivery.action,
                    "repository": delivery.repository,
                },
            },
        )
    return 202, {
        "status": "accepted",
        "delivery": delivery.guid,
        "execution_id": execution["id"],
        "event_id": event_id,
    }


def _insert_delivery(
    connection: sqlite3.Connection, delivery: Delivery, received: float
) -> int | None:
    """The new delivery's row id, or None when its guid is stored already."""
    row = connection.execute(
        """INSERT INTO deliveries (guid, event, action, repository, payload, received_at)
           VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (guid) DO NOTHING RETURNING id""",
        (
            delivery.guid,
            delivery.event,
            delivery.action,
            delivery.repository,
            delivery.body,
            received,
        ),
    ).fetchone()
    return None if row is None else row[0]


def _duplicate(connection: sqlite3.Connection, guid: str) -> dict:
    execution = connection.execute(
        """SELECT executions.id FROM executions JOIN deliveries
           ON deliveries.id = executions.delivery_id WHERE deliveries.guid = ?""",
        (guid,),
    ).fetchone()
    return {
        "status": "duplicate",
        "delivery": guid,
        "execution_id": execution[0] if execution else None,
    }


def _touch_conversation(
    connection: sqlite3.Connection, payload: dict, received: float
) -> int | None:
    """The id of the conversation the delivery is about, created or marked active again."""
    conversation = _conversation(payload)
    if conversation is None:
        return None
    repository, number = conversation
    return connection.execute(
        """INSERT INTO conversations
               (key, repository, number, status, created_at, updated_at)
           VALUES (?, ?, ?, 'active', ?, ?)
           ON CONFLICT (key) DO UPDATE
               SET status = 'active', updated_at = excluded.updated_at
           RETURNING id""",
        (f"{repository}#{number}", repository, number, received, received),
    ).fetchone()[0]


def _insert_execution(
    connection: sqlite3.Connection,
    delivery: Delivery,
    delivery_id: int,
    conversation_id: int | None,
    received: float,
) -> dict:
    source = f"github:{delivery.event}" + (f".{delivery.action}" if delivery.action else "")
    # A ping (sent when the webhook is created) asks for no work.
    status = "succeeded" if delivery.event == "ping" else "running"
    execution = connection.execute(
        """INSERT INTO executions
               (delivery_id, conversation_id, source, status, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?)
           RETURNING *""",
        (delivery_id, conversation_id, source, status, received, received),
    ).fetchone()
    return execution_row_to_dict(execution)
