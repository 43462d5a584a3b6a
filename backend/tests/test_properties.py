"""Bad input never breaks the service (property-based, with hypothesis).

- Arbitrary bodies, headers and signatures never produce a 5xx, and nothing is stored unless
  the signature is valid.
- A body declared larger than GITHUB_WEBHOOK_MAX_BYTES is refused with 413 without being read.
- Any Last-Event-ID value is handled: a plain decimal id below the newest event replays what
  follows it; anything else (malformed, negative, padded, from the future) replays nothing.
"""

from __future__ import annotations

import itertools
import json
import re

import pytest
from flask import Flask
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder

from app import db, events
from app.factory import create_app
from app.webhooks import signature_of
from helpers import WEBHOOK_SECRET, api_client, parse_sse
from test_webhooks import Tripwire, call

LIMIT = 4096
delivery_numbers = itertools.count()

# What a WSGI server can hand the app as a header value: latin-1 text without line breaks.
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=80,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.fixed_dictionaries(
    {"action": st.text(max_size=8)},
    optional={
        "issue": st.dictionaries(st.sampled_from(["number", "title"]), json_values),
        "repository": st.dictionaries(st.just("full_name"), json_values),
    },
).map(lambda value: json.dumps(value).encode())
bodies = st.one_of(
    json_objects,
    json_objects,
    json_objects,
    st.binary(max_size=256),
    st.binary(min_size=LIMIT - 8, max_size=LIMIT + 64),
    json_values.map(lambda value: json.dumps(value).encode()),
)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    return create_app(
        {
            "TESTING": True,
            "AGENTED_DB_PATH": str(tmp_path_factory.mktemp("properties") / "agented.db"),
            "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "GITHUB_WEBHOOK_MAX_BYTES": LIMIT,
            "BACKGROUND_JOBS": False,
            "SSE_POLL_INTERVAL_MS": 10,
            "SSE_REPLAY_LIMIT": 100000,
        },
        migrate=True,
    )


def stored_deliveries(app: Flask) -> int:
    connection = db.connect(app.config["AGENTED_DB_PATH"])
    try:
        return connection.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    finally:
        connection.close()


@st.composite
def deliveries(draw):
    body = draw(bodies)
    signature_kind = draw(
        st.sampled_from(
            ["valid", "valid", "valid", "none", "garbage", "other secret", "uppercase", "truncated"]
        )
    )
    signature = {
        "valid": signature_of(WEBHOOK_SECRET, body),
        "none": None,
        "garbage": draw(header_text),
        "other secret": signature_of(draw(st.text(min_size=1)) + "x", body),
        "uppercase": signature_of(WEBHOOK_SECRET, body).upper(),
        "truncated": signature_of(WEBHOOK_SECRET, body)[:-1],
    }[signature_kind]
    headers = draw(
        st.dictionaries(
            st.sampled_from(["Content-Type", "User-Agent", "X-GitHub-Hook-ID"]), header_text
        )
    )
    optional_headers = {
        # Mostly fresh ids (a repeated one is acknowledged, not stored: also checked).
        "X-GitHub-Delivery": st.one_of(
            st.builds(lambda: f"delivery-{next(delivery_numbers)}"),
            st.uuids().map(str),
            header_text,
        ),
        "X-GitHub-Event": st.one_of(
            st.sampled_from(["push", "issues", "issue_comment", "ping"]), header_text
        ),
    }
    for name, values in optional_headers.items():
        if draw(st.integers(0, 4)):
            headers[name] = draw(values)
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return body, headers, signature_kind == "valid"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries())
def test_arbitrary_deliveries_never_fail_and_only_signed_ones_are_stored(app, delivery):
    body, headers, signed = delivery
    before = stored_deliveries(app)
    response = app.test_client().post("/api/webhooks/github", data=body, headers=headers)
    event(f"{'signed' if signed else 'unsigned'}: {response.status_code}")
    assert response.status_code < 500
    assert response.is_json
    stored = stored_deliveries(app) - before
    if not signed:
        assert response.status_code in (401, 413)
        assert stored == 0
    else:
        assert response.status_code in (200, 202, 400, 413)
        assert stored == (1 if response.status_code == 202 else 0)


@settings(max_examples=50, deadline=None)
@given(extra=st.integers(min_value=1, max_value=2**62), signature=header_text)
def test_declared_oversized_bodies_are_refused_unread(app, extra, signature):
    environ = EnvironBuilder(
        method="POST",
        path="/api/webhooks/github",
        headers={"X-Hub-Signature-256": signature, "X-GitHub-Delivery": "oversized"},
    ).get_environ()
    environ["wsgi.input"] = Tripwire()
    environ["CONTENT_LENGTH"] = str(LIMIT + extra)
    _body, status, _headers = call(app, environ)
    assert status.startswith("413")


last_event_ids = st.one_of(
    header_text,
    st.integers(min_value=-5, max_value=10**20).map(str),
    st.integers(min_value=0, max_value=12).map(str),
    st.tuples(
        st.sampled_from([" ", "\t", "+", "0", "-"]), st.integers(min_value=0, max_value=12)
    ).map(lambda pair: f"{pair[0]}{pair[1]}"),
)


@pytest.fixture(scope="module")
def known_events(app: Flask) -> list[int]:
    connection = db.connect(app.config["AGENTED_DB_PATH"])
    try:
        with db.transaction(connection):
            return [events.record(connection, "test.event", {"n": n}) for n in range(8)]
    finally:
        connection.close()


@settings(max_examples=150, deadline=None)
@given(value=last_event_ids)
def test_any_last_event_id_is_handled(app, known_events, value):
    connection = db.connect(app.config["AGENTED_DB_PATH"])
    try:
        newest = events.newest_id(connection)
    finally:
        connection.close()
    response = api_client(app).get("/api/events", headers={"Last-Event-ID": value}, buffered=False)
    try:
        assert response.status_code == 200
        first = parse_sse(next(iter(response.response)).decode())
    finally:
        response.close()
    replayed = [int(message["id"]) for message in first if "id" in message]
    if re.fullmatch(r"[0-9]{1,18}", value) and int(value) < newest:
        assert replayed == list(range(int(value) + 1, newest + 1))
    else:
        assert replayed == []
