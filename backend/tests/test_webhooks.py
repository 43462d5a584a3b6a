"""POST /api/webhooks/github."""

from __future__ import annotations

import io
import json

import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

from app import db, events
from app.factory import create_app
from app.webhooks import signature_of
from helpers import WEBHOOK_SECRET, deliver

GITHUB_TEST_VECTOR = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def count(app, table: str) -> int:
    connection = db.connect(app.config["AGENTED_DB_PATH"])
    try:
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
    finally:
        connection.close()


def rows(app, query: str, *parameters) -> list[dict]:
    connection = db.connect(app.config["AGENTED_DB_PATH"])
    try:
        return [dict(row) for row in connection.execute(query, parameters)]
    finally:
        connection.close()


def call(app, environ) -> tuple[bytes, str, dict]:
    """Run the WSGI app on exactly this environ (the test client rebuilds it)."""
    iterable, status, headers = run_wsgi_app(app, environ)
    try:
        body = b"".join(iterable)
    finally:
        getattr(iterable, "close", lambda: None)()
    return body, status, dict(headers)


class Tripwire(io.RawIOBase):
    """A request body that fails the test if anyone reads it."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        raise AssertionError("the body was read")


def test_signature_matches_githubs_test_vector():
    assert signature_of(WEBHOOK_SECRET, b"Hello, World!") == f"sha256={GITHUB_TEST_VECTOR}"


def test_githubs_test_vector_passes_verification(client):
    response = client.post(
        "/api/webhooks/github",
        data=b"Hello, World!",
        headers={
            "X-Hub-Signature-256": f"sha256={GITHUB_TEST_VECTOR}",
            "X-GitHub-Delivery": "vector",
            "X-GitHub-Event": "push",
        },
    )
    # Verified (not 401); then refused because the body is not JSON.
    assert response.status_code == 400
    assert "JSON" in response.get_json()["error"]


def test_new_delivery_is_stored_with_its_execution_and_event(app, client):
    payload = {"ref": "refs/heads/main", "repository": {"full_name": "octo/repo"}}
    response = deliver(client, payload, guid="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert response.status_code == 202
    answer = response.get_json()
    assert answer["status"] == "accepted"
    assert answer["delivery"] == "72d3162e-cc78-11e3-81ab-4c9367dc0958"

    [delivery] = rows(app, "SELECT * FROM deliveries")
    assert delivery["guid"] == answer["delivery"]
    assert delivery["event"] == "push" and delivery["repository"] == "octo/repo"
    assert json.loads(delivery["payload"]) == payload
    [execution] = rows(app, "SELECT * FROM executions")
    assert execution["id"] == answer["execution_id"]
    assert execution["delivery_id"] == delivery["id"]
    assert execution["status"] == "running" and execution["source"] == "github:push"
    [event] = rows(app, "SELECT * FROM events")
    assert event["id"] == answer["event_id"] and event["type"] == "execution.created"
    assert json.loads(event["data"])["execution"]["id"] == execution["id"]


def test_repeated_delivery_is_acknowledged_and_not_stored_twice(app, client):
    first = deliver(client, {"n": 1}, guid="same")
    again = deliver(client, {"n": 1}, guid="same")
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.get_json() == {
        "status": "duplicate",
        "delivery": "same",
        "execution_id": first.get_json()["execution_id"],
    }
    assert (count(app, "deliveries"), count(app, "executions"), count(app, "events")) == (1, 1, 1)


def test_ping_needs_no_work(app, client):
    assert deliver(client, {"zen": "Keep it logically awesome."}, event="ping").status_code == 202
    [execution] = rows(app, "SELECT status, source FROM executions")
    assert execution == {"status": "succeeded", "source": "github:ping"}


def test_deliveries_about_one_issue_share_a_conversation(app, client):
    issue = {"action": "created", "issue": {"number": 7}, "repository": {"full_name": "o/r"}}
    deliver(client, issue, guid="a", event="issue_comment")
    deliver(client, issue, guid="b", event="issue_comment")
    deliver(client, issue | {"issue": {"number": 8}}, guid="c", event="issue_comment")
    conversations = rows(app, "SELECT id, key, status FROM conversations ORDER BY id")
    assert [c["key"] for c in conversations] == ["o/r#7", "o/r#8"]
    executions = rows(app, "SELECT conversation_id, source FROM executions ORDER BY id")
    assert [e["conversation_id"] for e in executions] == [1, 1, 2]
    assert executions[0]["source"] == "github:issue_comment.created"


def test_no_secret_configured_refuses_everything(tmp_path):
    app = create_app(
        {"TESTING": True, "AGENTED_DB_PATH": str(tmp_path / "a.db"), "BACKGROUND_JOBS": False},
        migrate=True,
    )
    response = deliver(app.test_client(), {"a": 1}, secret="")
    assert response.status_code == 503
    assert "GITHUB_WEBHOOK_SECRET" in response.get_json()["error"]
    assert count(app, "deliveries") == 0


@pytest.mark.parametrize(
    "signature",
    [None, "", "sha256=", f"sha256={'0' * 64}", "sha1=abc", "sha256=zz\u00ff", GITHUB_TEST_VECTOR],
)
def test_missing_or_wrong_signature_is_401(app, client, signature):
    headers = {"X-GitHub-Delivery": "d", "X-GitHub-Event": "push"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    response = client.post("/api/webhooks/github", data=b"{}", headers=headers)
    assert response.status_code == 401
    assert response.is_json
    assert count(app, "deliveries") == 0


def test_signature_with_another_secret_is_401(app, client):
    assert deliver(client, {"a": 1}, secret="not the secret").status_code == 401
    assert count(app, "deliveries") == 0


@pytest.mark.parametrize("guid", ["", "has space", "x" * 129, "semi;colon"])
def test_missing_or_malformed_delivery_id_is_400(app, client, guid):
    response = deliver(client, {"a": 1}, guid=guid)
    assert response.status_code == 400
    assert "X-GitHub-Delivery" in response.get_json()["error"]
    assert count(app, "deliveries") == 0


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe", b"", b"[" * 100000])
def test_body_that_is_not_a_json_object_is_400(app, client, body):
    response = deliver(client, body=body)
    assert response.status_code == 400
    assert count(app, "deliveries") == 0


@pytest.mark.parametrize(
    "body",
    [
        b'{"action": "\\ud800"}',
        b'{"action": "opened", "repository": {"full_name": "o/\\udfff"}}',
        b'{"issue": {"number": 9223372036854775808}, "repository": {"full_name": "o/r"}}',
        b'{"pull_request": {"number": -9223372036854775809}, "repository": {"full_name": "o/r"}}',
        b'{"issue": {"number": 1' + b"0" * 40 + b'}, "repository": {"full_name": "o/r"}}',
    ],
)
def test_signed_payload_sqlite_cannot_store_is_400_not_500(app, client, body):
    response = deliver(client, body=body, event="issues")
    assert response.status_code == 400
    assert response.get_json()["status"] == 400
    assert (count(app, "deliveries"), count(app, "executions"), count(app, "events")) == (0, 0, 0)


def test_the_largest_sqlite_integer_is_still_a_conversation_number(app, client):
    payload = {"issue": {"number": 2**63 - 1}, "repository": {"full_name": "o/r"}}
    assert deliver(client, payload, event="issues").status_code == 202
    [conversation] = rows(app, "SELECT key, number FROM conversations")
    assert conversation == {"key": f"o/r#{2**63 - 1}", "number": 2**63 - 1}


def test_oversized_body_is_413_without_reading_it(app):
    limit = app.config["GITHUB_WEBHOOK_MAX_BYTES"]
    environ = EnvironBuilder(
        method="POST",
        path="/api/webhooks/github",
        headers={"X-Hub-Signature-256": "sha256=whatever", "X-GitHub-Delivery": "big"},
    ).get_environ()
    environ["wsgi.input"] = Tripwire()
    environ["CONTENT_LENGTH"] = str(limit + 1)
    body, status, headers = call(app, environ)
    assert status.startswith("413")
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["status"] == 413


def test_chunked_body_is_cut_at_the_limit(tmp_path):
    app = create_app(
        {
            "TESTING": True,
            "AGENTED_DB_PATH": str(tmp_path / "a.db"),
            "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "BACKGROUND_JOBS": False,
            "GITHUB_WEBHOOK_MAX_BYTES": 1024,
        },
        migrate=True,
    )
    body = json.dumps({"pad": "x" * 2000}).encode()
    builder = EnvironBuilder(
        method="POST",
        path="/api/webhooks/github",
        input_stream=io.BytesIO(body),
        headers={
            "X-Hub-Signature-256": signature_of(WEBHOOK_SECRET, body),
            "X-GitHub-Delivery": "chunked",
            "Transfer-Encoding": "chunked",
        },
    )
    environ = builder.get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input_terminated"] = True  # what Gunicorn sets for a chunked body
    _body, status, _headers = call(app, environ)
    assert status.startswith("413")
    assert count(app, "deliveries") == 0


def test_a_delivery_is_stored_whole_or_not_at_all(app, client, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(events, "record", broken)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # answer 500 as in production
    response = deliver(client, {"a": 1})
    assert response.status_code == 500
    assert response.is_json
    assert (count(app, "deliveries"), count(app, "executions"), count(app, "events")) == (0, 0, 0)


def test_errors_are_json(client):
    response = client.get("/api/webhooks/github")
    assert response.status_code == 405
    assert response.get_json()["status"] == 405
    assert "POST" in response.headers["Allow"]


def test_every_request_gives_back_its_budget_and_client_slot(app, client, monkeypatch):
    limits = app.extensions["agented_webhook_limits"]
    deliver(client, {"a": 1}, guid="ok")  # 202
    deliver(client, {"a": 1}, guid="ok")  # 200, duplicate
    deliver(client, {"a": 1}, secret="wrong")  # 401
    deliver(client, body=b"[]")  # 400
    monkeypatch.setattr(events, "record", lambda *_args: 1 / 0)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert deliver(client, {"a": 2}, guid="fails").status_code == 500
    assert limits.budget.used == 0
    assert limits.unsigned.in_flight("127.0.0.1") == 0


def test_a_database_newer_than_the_code_accepts_no_delivery(app, client):
    connection = db.connect(app.config["AGENTED_DB_PATH"])
    try:
        connection.execute("PRAGMA user_version = 99")
        connection.execute("UPDATE schema_compatibility SET version = 99")  # incompatible with us
        response = deliver(client, {"action": "opened"}, guid="from-the-future")
        stored = connection.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    finally:
        connection.close()
    assert response.status_code == 503, response.get_json()
    assert response.headers["Retry-After"]
    assert "version 99" in response.get_json()["error"]
    assert stored == 0
