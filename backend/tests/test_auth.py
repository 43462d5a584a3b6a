"""Every /api/ request needs API_TOKEN as a bearer token, except the signed GitHub webhook;
/health/ stays open. Without API_TOKEN the backend generates one into .api_token."""

from __future__ import annotations

import os
import stat

import pytest
from flask import Flask, url_for

from app.factory import create_app
from helpers import API_TOKEN, BACKEND_DIR, api_client, deliver
from test_db import _run_at_once

# Routes that answer without a token, and why: the webhook proves itself with its signature.
NO_TOKEN_ENDPOINTS = {"webhooks.github"}


def api_routes(app: Flask, method: str) -> list[str]:
    """A URL for every /api/ route that takes ``method``, from the URL map, so that a new
    route is covered without anyone remembering to add it here."""
    urls = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            if rule.rule.startswith("/api/") and method in (rule.methods or ()):
                urls.append(url_for(rule.endpoint, **dict.fromkeys(rule.arguments, 1)))
    return sorted(urls)


def test_the_routes_are_enumerated(app):
    assert api_routes(app, "GET") == [
        "/api/config",
        "/api/conversations",
        "/api/events",
        "/api/executions",
        "/api/executions/1",
    ]


def get(app: Flask, url: str, **headers: str):
    # buffered=False: the event stream never ends; only its status and headers are read.
    response = app.test_client().get(url, headers=headers, buffered=False)
    response.close()
    return response


def assert_refused(response) -> None:
    assert response.status_code == 401
    assert response.get_json() == {
        "error": "this API needs a token: send Authorization: Bearer <API_TOKEN>",
        "status": 401,
    }
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


@pytest.fixture
def routes(app):
    return api_routes(app, "GET")


def test_every_api_read_without_a_token_is_refused(app, routes):
    for url in routes:
        assert_refused(get(app, url))


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong",
        f"Bearer {API_TOKEN}x",
        f"Bearer {API_TOKEN[:-1]}",
        f"Basic {API_TOKEN}",
        API_TOKEN,
        "Bearer ",
        "Bearer",
        "Bearer dé",
    ],
)
def test_every_api_read_with_a_wrong_token_is_refused(app, routes, authorization):
    for url in routes:
        response = get(app, url, Authorization=authorization)
        assert_refused(response)
        # RFC 6750: credentials were sent, so the answer says they are invalid.
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_every_api_read_with_the_token_is_answered(app, routes):
    for url in routes:
        status = get(app, url, Authorization=f"Bearer {API_TOKEN}").status_code
        # /api/executions/1 does not exist: 404 comes after the token was accepted.
        assert status == (404 if url == "/api/executions/1" else 200), url
    # The scheme is case-insensitive (RFC 9110).
    assert get(app, "/api/config", Authorization=f"bearer {API_TOKEN}").status_code == 200


def test_a_token_in_the_query_string_is_not_accepted(app):
    """URLs end up in access logs, proxies and browser history: the token goes in the
    Authorization header only, for the event stream too."""
    for name in ("access_token", "token", "api_token"):
        assert_refused(get(app, f"/api/events?{name}={API_TOKEN}"))


def test_every_other_api_route_and_method_needs_the_token_too(app):
    client = app.test_client()
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for url in [*api_routes(app, method), "/api/config", "/api/no/such/route"]:
            if url == "/api/webhooks/github":
                continue
            assert_refused(client.open(url, method=method))
    assert_refused(client.get("/api/no/such/route"))
    assert_refused(client.get("/api"))
    assert api_client(app).get("/api/no/such/route").status_code == 404


def test_every_route_is_under_api_or_health(app):
    """The token guards /api/; a route elsewhere would be open to anyone, so there is none but
    /metrics, which METRICS_ALLOWED_IPS guards instead (test_metrics.py)."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint not in ("static", "metrics.metrics"):
            assert rule.rule.startswith(("/api/", "/health/")), rule.rule


def test_only_the_webhook_needs_no_token(app):
    public = {
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        and getattr(app.view_functions[rule.endpoint], "api_token_not_required", False)
    }
    assert public == NO_TOKEN_ENDPOINTS


def test_the_webhook_needs_its_signature_and_no_token(app):
    client = app.test_client()
    assert deliver(client, {"zen": "ok"}, guid="no-token").status_code == 202
    assert deliver(client, {"zen": "ok"}, guid="bad", secret="wrong").status_code == 401


def test_health_is_open(app):
    client = app.test_client()
    assert client.get("/health/liveness").status_code == 200
    assert client.get("/health/readiness").status_code == 200


def test_a_cors_preflight_needs_no_token(tmp_path):
    """Browsers send no credentials on a preflight; the request that follows carries them."""
    app = create_app(
        {
            "TESTING": True,
            "AGENTED_DB_PATH": str(tmp_path / "a.db"),
            "BACKGROUND_JOBS": False,
            "API_TOKEN": API_TOKEN,
            "CORS_ALLOWED_ORIGINS": ("https://app.example.com",),
        }
    )
    response = app.test_client().options(
        "/api/config",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"


def unconfigured_app(state) -> Flask:
    return create_app(
        {"TESTING": True, "AGENTED_DB_PATH": str(state / "agented.db"), "BACKGROUND_JOBS": False}
    )


def test_without_api_token_one_is_generated_once_and_reused(tmp_path):
    state = tmp_path / "state"
    first = unconfigured_app(state)
    path = state / ".api_token"
    token = path.read_text().strip()
    assert len(token) >= 32
    assert first.config["API_TOKEN"] == token
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert token != (state / ".secret_key").read_text().strip()

    second = unconfigured_app(state)  # another worker, or the next start
    assert second.config["API_TOKEN"] == token
    assert path.read_text().strip() == token
    assert_refused(get(second, "/api/config"))
    answer = get(second, "/api/config", Authorization=f"Bearer {token}")
    assert answer.status_code == 200


def test_the_token_is_never_shown_by_the_config_api(tmp_path):
    state = tmp_path / "state"
    app = unconfigured_app(state)
    token = app.config["API_TOKEN"]
    response = api_client(app).get("/api/config")
    assert token not in response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["settings"]["API_TOKEN"] == "set"
    assert answer["api_token_source"] == "file"

    configured = create_app(
        {
            "TESTING": True,
            "AGENTED_DB_PATH": str(tmp_path / "other" / "agented.db"),
            "BACKGROUND_JOBS": False,
            "API_TOKEN": API_TOKEN,
        }
    )
    response = api_client(configured).get("/api/config")
    assert API_TOKEN not in response.get_data(as_text=True)
    assert response.get_json()["api_token_source"] == "environment"
    assert not (tmp_path / "other" / ".api_token").exists()


def test_an_unusable_state_directory_without_api_token_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(RuntimeError, match="set API_TOKEN, or AGENTED_DB_PATH"):
        create_app(
            {"TESTING": True, "SECRET_KEY": "k", "AGENTED_DB_PATH": str(blocker / "agented.db")}
        )


def test_workers_starting_at_once_agree_on_one_generated_token(tmp_path):
    """The same race-safe generation as SECRET_KEY's: one candidate wins, all read it."""
    directory = tmp_path / "state"
    code = (
        "from app import secret_key; "
        f"print(secret_key.load_or_create({str(directory)!r}, 'API_TOKEN'))"
    )
    tokens = _run_at_once(code, 6, BACKEND_DIR)
    assert len(set(tokens)) == 1 and len(tokens[0]) >= 32
    assert sorted(os.listdir(directory)) == [".api_token"]  # no candidates left behind
    assert stat.S_IMODE((directory / ".api_token").stat().st_mode) == 0o600
