"""The whole HTTP surface under hostile requests (property-based, with hypothesis).

The routes are read from ``app.url_map``, so a new route is covered without anyone listing
it here. Requests go to every route and to unknown paths, with every method, hostile path
parameters, query strings, headers (Authorization, Last-Event-ID, Content-Type, Origin) and
bodies, signed or not for the webhook, with and without the API token. The WSGI environ is
built the way Gunicorn builds it (PATH_INFO percent-decoded to bytes, then latin-1), so
invalid UTF-8 and invalid percent-encodings reach the app as they would in production.

- Never a 5xx, except the documented 503s (webhook without secret; load and busy database
  refusals, which carry Retry-After).
- Every error (4xx, 5xx) is JSON ``{"error": str, "status": int}`` matching the status.
- Nothing is logged at ERROR, nor with a traceback.
- A request under /api/ without the right token is answered 401 with WWW-Authenticate,
  except a CORS preflight (OPTIONS on a route, empty body) and the webhook, which only a valid
  signature gets past.
- Nothing a request holds outlives it: webhook memory budget, per-client slots, streams.
- Only a new signed delivery writes: one delivery, one execution, one event; nothing else
  changes the database.
- An event stream (GET /api/events) answers 200 with the token, 401 without; its body is
  never read here, only closed.
- A stateful test interleaves signed deliveries (new, repeated, badly signed) with reads of
  executions, conversations and event replays, and checks them against a model.
- Memory: replaying the same generated requests again and again retains nothing, and the
  peak stays bounded.

Examples are derandomized (a seed from each test's name), so CI runs the same ones every
time.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import re
import shutil
import tempfile
import tracemalloc
from collections.abc import Iterator
from urllib.parse import quote, unquote_to_bytes

import pytest
from flask import Flask
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)
from werkzeug.test import EnvironBuilder, run_wsgi_app

from app import db, events, webhooks
from app.factory import create_app
from app.webhooks import signature_of
from helpers import API_TOKEN, WEBHOOK_SECRET, parse_sse

LIMIT = 4096  # GITHUB_WEBHOOK_MAX_BYTES: small, so bodies around it are cheap
ORIGIN = "https://front.example"
WEBHOOK = "/api/webhooks/github"
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")
# Seeded from each test's name: the same examples on every run, in CI as on a laptop.
surface_settings = settings(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def make_app(directory: str, **config: object) -> Flask:
    return create_app(
        {
            "TESTING": True,
            # As in production: an unhandled exception is a logged 500, not raised here.
            "PROPAGATE_EXCEPTIONS": False,
            "AGENTED_DB_PATH": f"{directory}/agented.db",
            "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "GITHUB_WEBHOOK_MAX_BYTES": LIMIT,
            "API_TOKEN": API_TOKEN,
            "BACKGROUND_JOBS": False,
            "SSE_HEARTBEAT_SECS": 1,
            "SSE_POLL_INTERVAL_MS": 10,
            **config,
        },
        migrate=True,
    )


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Flask]:
    """The default configuration, CORS on for one origin, and no webhook secret."""
    return {
        "default": make_app(str(tmp_path_factory.mktemp("surface-default"))),
        "cors": make_app(
            str(tmp_path_factory.mktemp("surface-cors")), CORS_ALLOWED_ORIGINS=(ORIGIN,)
        ),
        "no secret": make_app(
            str(tmp_path_factory.mktemp("surface-no-secret")), GITHUB_WEBHOOK_SECRET=None
        ),
    }


# --- What a client can send -------------------------------------------------------------------

# Latin-1 text without line breaks: what a WSGI server hands the app as a header value.
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=60,
)
# Unicode sent as UTF-8 and decoded as latin-1 by the server, as any non-ASCII header is.
utf8_header = st.text(
    alphabet=st.characters(min_codepoint=0x20, exclude_categories=("Cs", "Cc")), max_size=20
).map(lambda text: text.encode().decode("latin-1"))

huge_numbers = st.sampled_from(
    [
        "0",
        "1",
        "-1",
        "-0",
        "+1",
        "01",
        str(2**63 - 1),
        str(2**63),
        str(2**64),
        str(10**30),
        "9" * 4301,  # past int()'s digit limit
        "1e3",
        "0x10",
        "1.5",
        " 1",
        "١٢٣",  # Arabic-Indic digits: \d and int() accept them
        "\uff11",  # fullwidth 1
    ]
)
segments = st.one_of(
    huge_numbers,
    st.integers(min_value=0, max_value=20).map(str),  # ids that exist
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(max_size=12).map(lambda text: quote(text, safe="")),  # unicode, %-encoded
    st.sampled_from(["%", "%zz", "%e9", "%ff%fe", "%00", "%2F", "..", ".", "%2e%2e", ""]),
    st.text(alphabet="abc%/.0", max_size=12),
    st.integers(min_value=1000, max_value=6000).map(lambda n: "x" * n),  # very long
)
# The parameters the views read, most often; others (credentials too) must change nothing.
query_keys = st.sampled_from(["limit", "limit", "status", "status", "token", "api_key", "a"])
query_values = st.one_of(
    huge_numbers,
    st.sampled_from(["-1", "500", "501", "running", "stale", "active", "RUNNING", "", "%zz"]),
    st.text(max_size=10).map(lambda text: quote(text, safe="")),
    st.just("v" * 10000),
)
query_pairs = st.lists(st.tuples(query_keys, query_values), min_size=1, max_size=4).map(
    lambda pairs: "&".join(f"{key}={value}" for key, value in pairs)
)
# No query first: hypothesis favours a one_of's first branch, which would leave most
# requests without one.
query_strings = st.one_of(
    query_pairs,
    query_pairs,
    st.sampled_from(["", "%", "%zz=1", "limit", "limit=1&limit=2", "=&=", ";;", "limit=%ff"]),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30),
)
# What Gunicorn accepts in a request target: printable ASCII only (anything else is a 400
# before the app), so whatever else a client means is percent-encoded as UTF-8 here.
WIRE_SAFE = "".join(chr(code) for code in range(0x21, 0x7F))


def on_the_wire(text: str) -> str:
    return quote(text, safe=WIRE_SAFE)


authorizations = st.one_of(
    st.none(),
    st.just(f"Bearer {API_TOKEN}"),
    st.just(f"Bearer {API_TOKEN}"),
    st.just(f"Bearer {API_TOKEN}"),
    st.sampled_from(
        [
            f"bearer {API_TOKEN}",
            f"BEARER {API_TOKEN}",
            f"Bearer  {API_TOKEN}",
            f"Bearer {API_TOKEN} ",
            f"Bearer {API_TOKEN[:-1]}",
            f"Basic {API_TOKEN}",
            API_TOKEN,
            "Bearer",
            "Bearer ",
            "",
        ]
    ),
    header_text,
    utf8_header.map(lambda token: f"Bearer {token}"),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-16",
        "text/plain",
        "multipart/form-data",  # no boundary
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "text/event-stream",
        ";;;",
        "ÿ/ÿ",
    ]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
odd_json = st.sampled_from(
    [
        b"[]",
        b"null",
        b'"text"',
        b"1e999999",
        b'{"action": "\\ud800"}',
        b'{"issue": {"number": 99999999999999999999}, "repository": {"full_name": "a/b"}}',
        b"[" * 5000,
        b'{"a":' * 2000,
    ]
)
payloads = st.fixed_dictionaries(
    {"action": st.text(max_size=6)},
    optional={
        "issue": st.fixed_dictionaries({"number": st.integers()}),
        "repository": st.fixed_dictionaries({"full_name": st.text(max_size=8)}),
    },
).map(lambda value: json.dumps(value).encode())
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=64),
    odd_json,
    json_values.map(lambda value: json.dumps(value).encode()),
    payloads,
    st.binary(min_size=LIMIT - 2, max_size=LIMIT + 2),
)


# Derandomized uuids repeat; a counter gives new delivery ids, so deliveries get stored.
delivery_numbers = itertools.count()
fresh_guids = st.builds(lambda: f"surface-{next(delivery_numbers)}")


def route_path(rule: str, draw) -> str:
    """``rule`` with every ``<converter:name>`` replaced by a hostile segment."""
    return re.sub(r"<[^>]+>", lambda _match: draw(segments), rule)


def one_in(n: int, value: bool) -> st.SearchStrategy[bool]:
    """``value`` once in ``n`` draws (st.integers would favour 0 far more often than that);
    shrinks to ``not value``."""
    return st.sampled_from([not value] * (n - 1) + [value])


@st.composite
def requests(draw, rules: list[tuple[str, list[str]]]) -> dict:
    """One request, as raw as a client can make it: path and query as sent on the wire.
    ``rules`` are the app's routes and their methods; half the time the method is one of the
    route's own, so that its view runs, not only the 405."""
    method = draw(st.sampled_from(METHODS))
    if draw(one_in(4, False)):  # mostly a route of the app
        rule, methods = draw(st.sampled_from(rules))
        path = route_path(rule, draw)
        if draw(st.booleans()):
            method = draw(st.sampled_from(methods))
    else:
        prefix = draw(st.sampled_from(["/api/", "/api", "/health/", "/", "//api/", "/api//"]))
        path = prefix + "/".join(draw(st.lists(segments, max_size=3)))
    headers: dict[str, str] = {}
    if (authorization := draw(authorizations)) is not None:
        headers["Authorization"] = authorization
    sometimes, mostly = one_in(3, True), one_in(4, False)
    for name, values, present in (
        ("Content-Type", content_types, sometimes),
        ("Last-Event-ID", st.one_of(header_text, huge_numbers), sometimes),
        ("Origin", st.sampled_from([ORIGIN, "https://evil.example", "null", "ÿ"]), sometimes),
        ("Access-Control-Request-Method", st.sampled_from(METHODS), sometimes),
        ("Accept", st.sampled_from(["text/event-stream", "*/*", "ÿ"]), sometimes),
        # Mostly there, mostly well-formed and new: a signed delivery is then stored.
        (
            "X-GitHub-Delivery",
            st.one_of(fresh_guids, fresh_guids, st.uuids().map(str), header_text),
            mostly,
        ),
        (
            "X-GitHub-Event",
            st.one_of(st.sampled_from(["push", "issues", "ping"]), header_text),
            mostly,
        ),
    ):
        if draw(present):
            headers[name] = draw(values)
    body = draw(bodies)
    signature = draw(st.sampled_from(["valid", "valid", "none", "garbage", "wrong"]))
    if draw(one_in(8, True)):
        # A delivery as GitHub sends it, signed or not (the rest of the request as hostile
        # as ever): else the webhook's checks past the first few would hardly ever run.
        path, method, body = WEBHOOK, "POST", draw(payloads)
        headers["X-GitHub-Delivery"] = draw(fresh_guids)
    if signature == "valid":
        headers["X-Hub-Signature-256"] = signature_of(WEBHOOK_SECRET, body)
    elif signature == "garbage":
        headers["X-Hub-Signature-256"] = draw(st.one_of(header_text, utf8_header))
    elif signature == "wrong":
        headers["X-Hub-Signature-256"] = signature_of("another secret", body)
    return {
        "method": method,
        "path": path,
        "query": draw(query_strings),
        "headers": headers,
        "body": body,
        "signed": signature == "valid",
    }


def api_rules(app: Flask) -> list[tuple[str, list[str]]]:
    """Every route of the app and its methods, from url_map."""
    return sorted((rule.rule, sorted(rule.methods or ())) for rule in app.url_map.iter_rules())


# --- Sending it -------------------------------------------------------------------------------


def environ_of(sent: dict) -> dict:
    """The environ Gunicorn would build: PATH_INFO percent-decoded to bytes, read as latin-1;
    QUERY_STRING as sent."""
    environ = EnvironBuilder(
        method=sent["method"], headers=sent["headers"], data=sent["body"]
    ).get_environ()
    environ["PATH_INFO"] = unquote_to_bytes(on_the_wire(sent["path"])).decode("latin-1")
    environ["QUERY_STRING"] = on_the_wire(sent["query"])
    environ["REMOTE_ADDR"] = "192.0.2.1"
    return environ


def app_path(environ: dict) -> str:
    """request.path as the app reads it from PATH_INFO (werkzeug's decoding)."""
    path = environ["PATH_INFO"].encode("latin-1").decode("utf-8", "replace")
    return "/" + path.lstrip("/")


def send(app: Flask, environ: dict) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body; an event stream's body is not read, only closed."""
    iterable, status, headers = run_wsgi_app(app, environ)
    try:
        if headers.get("Content-Type", "").startswith("text/event-stream"):
            body = b""  # a live stream: its status and headers say enough
        else:
            body = b"".join(iterable)
    finally:
        iterable.close()
    return int(status.split()[0]), dict(headers), body


def matched_rule(app: Flask, environ: dict):
    """The rule the request reaches, or None (404, 405, redirect)."""
    adapter = app.url_map.bind_to_environ(environ)
    try:
        rule, _arguments = adapter.match(return_rule=True)
    except Exception:
        return None
    return rule


def authorized(headers: dict[str, str]) -> bool:
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and token == API_TOKEN


class LogCheck(logging.Handler):
    """Records at ERROR or above, or with a traceback, from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info or record.exc_text:
            self.bad.append(record)


@pytest.fixture
def log_check(apps) -> Iterator[LogCheck]:
    handler = LogCheck()
    loggers = [logging.getLogger()] + [app.logger for app in apps.values()]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


def resources_left(app: Flask) -> dict:
    limits = app.extensions[webhooks._LIMITS_KEY]
    return {
        "budget": limits.budget.used,
        "unsigned": dict(limits.unsigned._counts),
        "streams": events.get_hub(app).subscribers,
    }


def stored_rows(app: Flask) -> tuple[int, int, int]:
    connection = db.connect(app.config["AGENTED_DB_PATH"])
    try:
        return tuple(
            connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
            for table in ("deliveries", "executions", "events")
        )
    finally:
        connection.close()


NOTHING_LEFT = {"budget": 0, "unsigned": {}, "streams": 0}


def check_answer(app: Flask, sent: dict, environ: dict) -> int:
    """Send ``sent`` and check every property of the answer; returns the status."""
    before, held_before = stored_rows(app), resources_left(app)
    status, headers, body = send(app, environ)
    note(f"{sent['method']} {environ['PATH_INFO'][:200]!r}?{sent['query'][:100]!r} -> {status}")
    note(f"body {body[:300]!r}")
    rule = matched_rule(app, environ)
    path = app_path(environ)
    webhook = rule is not None and rule.rule == WEBHOOK and sent["method"] == "POST"
    event(f"{sent['method']} {rule.rule if rule else 'no route'}: {status}")  # for statistics

    # Never a 5xx but the documented 503s.
    if status >= 500:
        no_secret = webhook and not app.config["GITHUB_WEBHOOK_SECRET"]
        assert status == 503 and (no_secret or "Retry-After" in headers), (status, body)

    # Every error is the one JSON shape, matching the status (HEAD: the headers say it).
    if status >= 400:
        assert headers.get("Content-Type") == "application/json", headers
        if sent["method"] != "HEAD":
            answer = json.loads(body)
            assert set(answer) - {"reason"} == {"error", "status"}, answer
            assert isinstance(answer["error"], str) and answer["error"]
            assert answer["status"] == status
    elif 300 <= status < 400:
        assert status == 308 and "Location" in headers  # werkzeug merging slashes

    # Under /api/, no answer without the token but a preflight's and a signed webhook's.
    if path == "/api" or path.startswith("/api/"):
        preflight = sent["method"] == "OPTIONS" and rule is not None
        if webhook:
            if 200 <= status < 300:
                assert sent["signed"] and app.config["GITHUB_WEBHOOK_SECRET"], status
        elif preflight:
            assert status == 200 and body == b"", (status, body)
        elif not authorized(sent["headers"]):
            assert status == 401, status
            assert headers["WWW-Authenticate"].startswith('Bearer realm="agented"')
        else:
            assert status != 401, body

    if rule is not None and rule.rule == "/api/events" and sent["method"] in ("GET", "HEAD"):
        assert status == (200 if authorized(sent["headers"]) else 401), status
        if status == 200:
            assert headers["Content-Type"].startswith("text/event-stream")
            assert headers["Cache-Control"] == "no-cache"
    # CORS: only the configured origin is ever allowed, never whatever the request says
    # (flask-cors names it even to a request without Origin), and only where configured.
    if "Access-Control-Allow-Origin" in headers:
        assert app.config["CORS_ALLOWED_ORIGINS"] == (ORIGIN,)
        assert headers["Access-Control-Allow-Origin"] == ORIGIN
    # Nothing the request took (budget, client slot, stream) outlives it; compared with what
    # was held before, so that a leak fails the request that leaks, not the next one.
    assert resources_left(app) == held_before
    # Only a new signed delivery writes: one delivery, one execution, one event.
    written = 1 if webhook and status == 202 else 0
    assert stored_rows(app) == tuple(count + written for count in before)
    return status


@settings(surface_settings, max_examples=1000)
@given(data=st.data())
def test_no_request_breaks_the_surface(apps, log_check, data):
    name = data.draw(st.sampled_from(sorted(apps)), label="app")
    app = apps[name]
    sent = data.draw(requests(api_rules(app)), label="request")
    log_check.bad.clear()
    check_answer(app, sent, environ_of(sent))
    assert not log_check.bad, [
        (record.levelname, record.getMessage(), record.exc_text) for record in log_check.bad
    ]


def test_every_route_is_generated(apps):
    """The generator reads the routes from url_map: every one of them, the ones added later
    included (the static route Flask adds too)."""
    rules = [rule for rule, _methods in api_rules(apps["default"])]
    assert {WEBHOOK, "/api/events", "/api/executions/<int:execution_id>"} <= set(rules)
    assert len(rules) == len(list(apps["default"].url_map.iter_rules()))


# --- Memory -----------------------------------------------------------------------------------

REQUESTS_FOR_MEMORY = 150


def test_repeated_requests_retain_no_memory(apps, log_check):
    """The same generated requests sent three times more after a first round: tracemalloc
    sees what the process keeps (bounded, and not growing with the requests) and the peak
    of any round (bounded by a small multiple of the largest body)."""
    app = apps["default"]
    collected: list[dict] = []

    @settings(
        max_examples=REQUESTS_FOR_MEMORY,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests(api_rules(app)))
    def collect(sent):
        collected.append(sent)

    collect()
    environs = [environ_of(sent) for sent in collected]

    def one_round() -> None:
        for environ in environs:
            # A fresh input stream each time; everything else is the same request again.
            fresh = dict(environ)
            body = environ["wsgi.input"].getvalue()
            fresh["wsgi.input"] = type(environ["wsgi.input"])(body)
            send(app, fresh)

    one_round()  # warm-up: caches, compiled regexes, the database's first pages
    gc.collect()
    tracemalloc.start()
    try:
        one_round()
        gc.collect()
        after_one, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        one_round()
        one_round()
        gc.collect()
        after_three, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(
        f"\n{len(environs)} requests a round: retained {after_one} B after one round, "
        f"{after_three} B after three, peak {peak} B"
    )
    assert after_three - after_one < 64 * 1024  # twice as many requests, no more memory kept
    assert after_three < 512 * 1024
    assert peak < 4 * 1024 * 1024  # the largest body is LIMIT bytes; the rest is the framework
    assert not log_check.bad
    assert resources_left(app) == NOTHING_LEFT


# --- Deliveries and reads, interleaved --------------------------------------------------------


class DeliveriesAndReads(RuleBasedStateMachine):
    """A model of what the API stores: guid -> (execution id, event id), in order."""

    guids = Bundle("guids")
    refused_guids = Bundle("refused_guids")

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="surface-state-")
        self.app = make_app(self.directory)
        self.accepted: dict[str, tuple[int, int]] = {}
        self.conversations: set[str] = set()
        self.event_ids: list[int] = []
        self.numbers = 0

    def teardown(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def request(self, method: str, path: str, **options):
        options.setdefault("headers", {})
        if path != WEBHOOK:
            options["headers"]["Authorization"] = f"Bearer {API_TOKEN}"
        return self.app.test_client().open(path, method=method, **options)

    def deliver(self, guid: str, payload: dict, secret: str = WEBHOOK_SECRET, event="issues"):
        body = json.dumps(payload).encode()
        headers = {
            "X-Hub-Signature-256": signature_of(secret, body),
            "X-GitHub-Delivery": guid,
            "X-GitHub-Event": event,
            "Content-Type": "application/json",
        }
        return self.request("POST", WEBHOOK, data=body, headers=headers)

    @initialize()
    def empty(self) -> None:
        assert self.request("GET", "/api/executions").get_json() == {"executions": []}

    payloads = st.fixed_dictionaries(
        {"action": st.sampled_from(["opened", "closed", ""])},
        optional={
            "issue": st.fixed_dictionaries({"number": st.integers(1, 3)}),
            "repository": st.fixed_dictionaries({"full_name": st.sampled_from(["a/b", "c/d"])}),
        },
    )

    @rule(target=guids, payload=payloads, event=st.sampled_from(["issues", "push", "ping"]))
    def deliver_new(self, payload, event):
        self.numbers += 1
        guid = f"guid-{self.numbers}"
        response = self.deliver(guid, payload, event=event)
        assert response.status_code == 202, response.get_json()
        answer = response.get_json()
        assert answer["delivery"] == guid
        assert answer["execution_id"] not in {ids[0] for ids in self.accepted.values()}
        assert not self.event_ids or answer["event_id"] > self.event_ids[-1]
        self.accepted[guid] = (answer["execution_id"], answer["event_id"])
        self.event_ids.append(answer["event_id"])
        repository = payload.get("repository", {}).get("full_name")
        if repository and "issue" in payload:
            self.conversations.add(f"{repository}#{payload['issue']['number']}")
        return guid

    @rule(guid=guids, payload=payloads)
    def deliver_again(self, guid, payload):
        response = self.deliver(guid, payload)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["execution_id"] == self.accepted[guid][0]

    @rule(target=refused_guids, payload=payloads)
    def deliver_badly_signed(self, payload):
        self.numbers += 1
        guid = f"guid-{self.numbers}"
        assert self.deliver(guid, payload, secret="not the secret").status_code == 401
        return guid

    @rule(target=guids, guid=consumes(refused_guids), payload=payloads)
    def deliver_refused_one_properly(self, guid, payload):
        response = self.deliver(guid, payload)
        assert response.status_code == 202  # the refusal stored nothing under its guid
        answer = response.get_json()
        self.accepted[guid] = (answer["execution_id"], answer["event_id"])
        self.event_ids.append(answer["event_id"])
        repository = payload.get("repository", {}).get("full_name")
        if repository and "issue" in payload:
            self.conversations.add(f"{repository}#{payload['issue']['number']}")
        return multiple(guid)

    @rule(limit=st.integers(1, 500), status=st.sampled_from([None, "running", "succeeded"]))
    def list_executions(self, limit, status):
        query = {"limit": limit} | ({"status": status} if status else {})
        listed = self.request("GET", "/api/executions", query_string=query).get_json()
        ids = [execution["id"] for execution in listed["executions"]]
        known = {execution_id: guid for guid, (execution_id, _) in self.accepted.items()}
        assert set(ids) <= set(known)
        assert ids == sorted(ids, reverse=True)
        for execution in listed["executions"]:
            assert execution["delivery"] == known[execution["id"]]
        if status is None:
            assert len(ids) == min(limit, len(self.accepted))

    @rule(guid=guids)
    def get_execution(self, guid):
        execution_id = self.accepted[guid][0]
        response = self.request("GET", f"/api/executions/{execution_id}")
        assert response.status_code == 200
        assert response.get_json()["delivery"]["id"] == guid

    @rule(execution_id=st.integers(min_value=-5, max_value=2**64))
    def get_unknown_execution(self, execution_id):
        known = {ids[0] for ids in self.accepted.values()}
        response = self.request("GET", f"/api/executions/{execution_id}")
        assert response.status_code == (200 if execution_id in known else 404)

    @rule()
    def list_conversations(self):
        listed = self.request("GET", "/api/conversations", query_string={"limit": 500})
        keys = [conversation["key"] for conversation in listed.get_json()["conversations"]]
        assert sorted(keys) == sorted(self.conversations)

    @rule(data=st.data())
    def replay(self, data):
        last = data.draw(
            st.one_of(
                st.sampled_from([0, *self.event_ids]).map(str),
                st.sampled_from(["", "-1", "x", " 1", str(10**30)]),
            )
        )
        expected = [
            event_id for event_id in self.event_ids if last.isdigit() and event_id > int(last)
        ]
        if last.isdigit() and int(last) >= 10**18:
            expected = []  # not a plain id of at most 18 digits: ignored
        response = self.request(
            "GET", "/api/events", headers={"Last-Event-ID": last}, buffered=False
        )
        try:
            assert response.status_code == 200
            replayed: list[int] = []
            chunks = iter(response.response)
            while True:  # the replay comes first, a page at a time; then the live stream
                messages = parse_sse(next(chunks).decode())
                replayed += [int(message["id"]) for message in messages if "id" in message]
                if not expected or replayed[-1:] == expected[-1:]:
                    break
        finally:
            response.close()
        assert replayed == expected

    @invariant()
    def each_guid_stored_once(self):
        connection = db.connect(self.app.config["AGENTED_DB_PATH"])
        try:
            guids = [row[0] for row in connection.execute("SELECT guid FROM deliveries")]
            executions = connection.execute("SELECT count(*) FROM executions").fetchone()[0]
            events_stored = [row[0] for row in connection.execute("SELECT id FROM events")]
        finally:
            connection.close()
        assert sorted(guids) == sorted(self.accepted)
        assert executions == len(self.accepted)
        assert events_stored == self.event_ids
        assert resources_left(self.app) == NOTHING_LEFT


DeliveriesAndReads.TestCase.settings = settings(
    surface_settings, max_examples=50, stateful_step_count=30
)
test_deliveries_and_reads = DeliveriesAndReads.TestCase
