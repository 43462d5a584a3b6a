"""``POST /api/webhooks/github``: signed GitHub deliveries become executions and events.

Checks, in order (the first that fails answers):

1. no GITHUB_WEBHOOK_SECRET configured -> 503 (unsigned deliveries are never accepted);
2. Content-Length over GITHUB_WEBHOOK_MAX_BYTES -> 413, before any of the body is read;
   a chunked body is read up to the limit and refused with 413 when it goes past it;
3. more than GITHUB_WEBHOOK_UNSIGNED_PER_CLIENT bodies from the client's address being read
   and not yet verified -> 429 with Retry-After;
4. the worker's GITHUB_WEBHOOK_MEMORY_BUDGET_BYTES spent -> 503 with Retry-After (checked
   again for a verified body, which is then read whole into memory);
5. the body not received within GITHUB_WEBHOOK_READ_TIMEOUT_SECS -> 408;
6. missing or wrong X-Hub-Signature-256 (HMAC-SHA256 of the raw body) -> 401;
7. missing or malformed X-GitHub-Delivery, malformed X-GitHub-Event -> 400;
8. a body that is not a JSON object -> 400, and so is one whose action, repository name or
   issue/pull request/discussion number cannot be stored (a lone surrogate, an integer
   beyond 64 bits);
9. the database's write lock held elsewhere for AGENTED_DB_LOCK_WAIT_SECS -> 503 with
   Retry-After and nothing stored; the worker keeps serving while it waits.

A valid delivery is stored with its execution and its event in ONE transaction, committed
before the answer: 202 with their ids. A delivery id seen before is answered 200 and not
stored again (GitHub redelivers with the same id).

The body is streamed into the HMAC and into a spool that keeps little in memory and the rest
in a temporary file, so an unverified body costs a worker little memory however large or
slow it is; only a verified one is read whole. A refusal that leaves the body unread closes
the connection, so that the server does not read the rest.

The handler is these steps in order: read the body, verify its signature, parse the
delivery, store it; each of the first three refuses with :class:`Refused`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import re
import socket
import sqlite3
import tempfile
import time
from collections.abc import Callable
from typing import IO

import gevent
from flask import Blueprint, Response, current_app, g, jsonify, request
from flask.blueprints import BlueprintSetupState

from . import auth, body_limits, db, errors, events, metrics, request_db, write_lock
from .executions import SQLITE_MAX_INTEGER, execution_row_to_dict

bp = Blueprint("webhooks", __name__, url_prefix="/api/webhooks")

_DELIVERY_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_EVENT_RE = re.compile(r"[a-z0-9_.-]{1,64}")
# Events about an issue, pull request or discussion belong to that conversation.
_CONVERSATION_OBJECTS = ("issue", "pull_request", "discussion")
# A body is read this much at a time. Larger chunks hold more memory per waiting body;
# smaller ones make Gunicorn copy its read-ahead buffer more often (64 KiB read 20 bodies of
# 25 MiB about twice as slowly as this).
_CHUNK_BYTES = 256 * 1024
# Bytes of a body the spool keeps in memory; past them it moves to a temporary file. Most
# deliveries are a few KiB and never touch the disk.
_SPOOL_ROLLOVER_BYTES = 256 * 1024
# About the most a body being read holds in memory (its spool's part, the chunk in hand and
# Gunicorn's read-ahead for it): what it takes from the worker's budget until its signature
# is verified.
SPOOL_MEMORY_BYTES = _SPOOL_ROLLOVER_BYTES + 2 * _CHUNK_BYTES
# What a refusal for load (429, 503) asks the client to wait before it tries again.
RETRY_AFTER_SECS = 5
_LIMITS_KEY = "agented_webhook_limits"
_BODY_READ = "webhook_body_read"  # flask.g: the body was read to its end


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
    """A delivery that is not accepted, with the answer it gets and the metrics' name for why
    (``outcome``, one of metrics.WEBHOOK_OUTCOMES); ``retry_after`` (seconds) for a refusal
    that says nothing about the delivery itself, only about the load or the time."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        outcome: str = "refused",
        retry_after: int | None = None,
    ) -> None:
        if outcome not in metrics.WEBHOOK_OUTCOMES:
            raise ValueError(f"unknown webhook outcome {outcome!r}: see metrics.WEBHOOK_OUTCOMES")
        super().__init__(message)
        self.status = status
        self.message = message
        self.outcome = outcome
        self.retry_after = retry_after


class _Once:
    """Call ``function`` the first time only."""

    def __init__(self, function: Callable[[], None]) -> None:
        self._function: Callable[[], None] | None = function

    def __call__(self) -> None:
        function, self._function = self._function, None
        if function is not None:
            function()


@dataclasses.dataclass(frozen=True)
class _Limits:
    budget: body_limits.MemoryBudget  # bytes of bodies in memory, all requests of the worker
    unsigned: body_limits.ClientSlots  # bodies not yet verified, per client address


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


@bp.record_once
def _create_limits(state: BlueprintSetupState) -> None:
    # Under Gunicorn the app is created in each worker after fork: the limits are per worker.
    config = state.app.config
    state.app.extensions[_LIMITS_KEY] = _Limits(
        body_limits.MemoryBudget(config["GITHUB_WEBHOOK_MEMORY_BUDGET_BYTES"]),
        body_limits.ClientSlots(config["GITHUB_WEBHOOK_UNSIGNED_PER_CLIENT"]),
    )


@bp.post("/github")
@auth.no_token  # the signature authenticates GitHub
def github() -> tuple[Response, int] | Response:
    config = current_app.config
    # What the request holds (budget, client slot, spool) is given back when it ends.
    with contextlib.ExitStack() as held:
        try:
            secret = config["GITHUB_WEBHOOK_SECRET"]
            if not secret:
                raise Refused(
                    503,
                    "GITHUB_WEBHOOK_SECRET is not set: no delivery can be verified",
                    outcome="no_secret",
                )
            body = read_verified_body(held, secret, request.headers.get("X-Hub-Signature-256"))
            delivery = parse(
                body,
                request.headers.get("X-GitHub-Delivery"),
                request.headers.get("X-GitHub-Event"),
            )
            status, answer = store(
                request_db.get_db(), delivery, config["AGENTED_DB_LOCK_WAIT_SECS"]
            )
        except Refused as refusal:
            metrics.count_delivery(refusal.outcome)
            return _refusal(refusal)
    metrics.count_delivery("stored" if status == 202 else "duplicate")
    if status == 202:
        events.notify()
    return jsonify(answer), status


def _refusal(refusal: Refused) -> Response:
    response = errors.error_response(refusal.status, refusal.message)
    if refusal.retry_after is not None:
        response.headers["Retry-After"] = str(refusal.retry_after)
    if not g.get(_BODY_READ):
        _close_connection_after(response)
    return response


def _close_connection_after(response: Response) -> None:
    """Have the server close the connection once ``response`` is sent, for a body left
    (partly) unread: Gunicorn would otherwise read the rest of it to reuse the connection,
    for as long as the client cares to send. Gunicorn ignores a Connection header from the
    app; shutting the socket's read side makes it see the end of the connection instead."""
    connection = request.environ.get("gunicorn.socket")
    if connection is None:
        # Another server (tests, run.py). No Connection header: PEP 3333 leaves hop-by-hop
        # headers to the server.
        return

    def shut_read_side() -> None:
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RD)

    response.call_on_close(shut_read_side)


def read_verified_body(held: contextlib.ExitStack, secret: str, header: str | None) -> bytes:
    """The body, once its signature is verified; refused with 413 (too large), 429 (too many
    unverified bodies from this address), 503 (the worker's memory budget is spent), 408 (not
    sent in time) or 401 (bad signature).

    The body is streamed into the HMAC and a spool that keeps at most SPOOL_MEMORY_BYTES in
    memory and the rest in a temporary file: an unsigned body, which anyone can send, costs
    the worker little memory however large or slow. Only a verified body is read whole.
    """
    config = current_app.config
    limit = config["GITHUB_WEBHOOK_MAX_BYTES"]
    declared = request.content_length
    if declared is not None and declared > limit:
        raise Refused(413, _too_large(limit), outcome="too_large")
    limits: _Limits = current_app.extensions[_LIMITS_KEY]

    address = request.remote_addr or ""
    if not limits.unsigned.take(address):
        raise Refused(
            429,
            "Too many webhook bodies from this address are being received: retry later",
            retry_after=RETRY_AFTER_SECS,
        )
    unsigned = _Once(lambda: limits.unsigned.give_back(address))
    held.callback(unsigned)

    in_memory = min(limit if declared is None else declared, SPOOL_MEMORY_BYTES)
    _reserve(held, limits.budget, in_memory)
    spool = held.enter_context(
        tempfile.SpooledTemporaryFile(max_size=_SPOOL_ROLLOVER_BYTES)  # noqa: SIM115 -- closed by held
    )
    digest, size = _spool_body(spool, limit, config["GITHUB_WEBHOOK_READ_TIMEOUT_SECS"], secret)
    setattr(g, _BODY_READ, True)
    verify_signature("sha256=" + digest.hexdigest(), header)
    unsigned()  # verified: no longer counts against the address
    if size > in_memory:
        _reserve(held, limits.budget, size - in_memory)
    spool.seek(0)
    return spool.read()


def _too_large(limit: int) -> str:
    return f"The body is larger than GITHUB_WEBHOOK_MAX_BYTES ({limit} bytes)."


def _reserve(held: contextlib.ExitStack, budget: body_limits.MemoryBudget, size: int) -> None:
    if not budget.reserve(size):
        raise Refused(
            503,
            "The server is receiving too many webhook bodies at once: retry later",
            retry_after=RETRY_AFTER_SECS,
        )
    held.callback(budget.release, size)


def _spool_body(spool: IO[bytes], limit: int, timeout: int, secret: str) -> tuple[hmac.HMAC, int]:
    """Read the body into ``spool`` and its HMAC-SHA256 within ``timeout`` seconds: 408
    after, 413 past ``limit`` bytes (a chunked body declares no length: it is read one byte
    past the limit, no further)."""
    digest = hmac.new(secret.encode(), digestmod=hashlib.sha256)
    request.max_content_length = limit + 1
    stream = request.stream
    size = 0
    late = Refused(408, f"The body was not received within {timeout} s: send it faster")
    # The timer interrupts a read that waits on the socket (gevent); the clock check also
    # stops a trickle where reads block the thread (development server).
    deadline = time.monotonic() + timeout
    timer = gevent.Timeout(timeout)
    timer.start()
    try:
        while chunk := stream.read(_CHUNK_BYTES):
            size += len(chunk)
            if size > limit:
                raise Refused(413, _too_large(limit), outcome="too_large")
            digest.update(chunk)
            spool.write(chunk)
            # A socket with data waiting never yields: let other requests run between chunks.
            gevent.sleep(0)
            if time.monotonic() > deadline:
                raise late
    except gevent.Timeout as expired:
        if expired is not timer:
            raise
        raise late from None
    finally:
        timer.close()
    return digest, size


def verify_signature(expected: str, header: str | None) -> None:
    """Refuse with 401 unless ``header`` is ``expected``, the body's X-Hub-Signature-256."""
    if not header or not hmac.compare_digest(
        # Bytes, not str: compare_digest refuses non-ASCII str, and the header is client input.
        expected.encode(),
        header.encode("utf-8", "surrogateescape"),
    ):
        raise Refused(
            401,
            "X-Hub-Signature-256 is missing or does not match the body",
            outcome="bad_signature",
        )


def parse(body: bytes, guid: str | None, event: str | None) -> Delivery:
    """The delivery that the (verified) body and headers describe; 400 when malformed."""
    if not guid or not _DELIVERY_RE.fullmatch(guid):
        raise Refused(400, "X-GitHub-Delivery is missing or malformed", outcome="bad_headers")
    event = event or "unknown"
    if not _EVENT_RE.fullmatch(event):
        raise Refused(400, "X-GitHub-Event is malformed", outcome="bad_headers")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        payload = None
    if not isinstance(payload, dict):
        raise Refused(
            400,
            "The body is not a JSON object: use content type application/json",
            outcome="bad_json",
        )
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
                raise Refused(
                    400, f"The payload's {name} is not valid Unicode", outcome="bad_json"
                ) from None
    for name in _CONVERSATION_OBJECTS:
        subject = delivery.payload.get(name)
        number = subject.get("number") if isinstance(subject, dict) else None
        if isinstance(number, int) and not -SQLITE_MAX_INTEGER - 1 <= number <= SQLITE_MAX_INTEGER:
            raise Refused(400, f"The payload's {name}.number is out of range", outcome="bad_json")


def store(
    connection: sqlite3.Connection, delivery: Delivery, lock_wait_secs: float
) -> tuple[int, dict]:
    """Store a verified delivery, its execution and its event in one transaction: 202 with
    their ids, or 200 for a delivery stored before. 503 when the database's write lock is
    held elsewhere for ``lock_wait_secs``: nothing is stored, and GitHub can redeliver."""
    try:
        with write_lock.transaction(connection, lock_wait_secs):
            return _store(connection, delivery)
    except write_lock.LockNotAcquired:
        current_app.logger.warning(
            "delivery %s not stored: the database stayed locked for %s s",
            delivery.guid,
            lock_wait_secs,
        )
        raise Refused(
            503,
            "The database is busy: the delivery was not stored, retry later",
            retry_after=RETRY_AFTER_SECS,
        ) from None


def _store(connection: sqlite3.Connection, delivery: Delivery) -> tuple[int, dict]:
    # Checked under the write lock: no migration can come between the check and the inserts.
    if (problem := db.compatibility_problem(connection)) is not None:
        raise Refused(
            503,
            f"The {problem}: nothing is stored until a release that can run on it does",
            retry_after=RETRY_AFTER_SECS,
        )
    received = db.now()
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
