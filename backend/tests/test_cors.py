"""CORS: no cross-origin access unless CORS_ALLOWED_ORIGINS lists the origins (or is *)."""

from __future__ import annotations

import logging

import pytest

from app import settings
from app.factory import create_app
from helpers import API_TOKEN, api_client

PREFLIGHT = {
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": "Authorization",
}


def app_with(tmp_path, **config):
    return create_app(
        {
            "TESTING": True,
            "AGENTED_DB_PATH": str(tmp_path / "a.db"),
            "BACKGROUND_JOBS": False,
            "API_TOKEN": API_TOKEN,
            **config,
        }
    )


def test_by_default_no_origin_is_allowed(client):
    for origin in ("https://app.example.com", "http://localhost:5173", "null"):
        for path in ("/api/config", "/health/liveness"):
            response = client.get(path, headers={"Origin": origin})
            assert response.status_code == 200
            assert "Access-Control-Allow-Origin" not in response.headers, (origin, path)
        preflight = client.options("/api/config", headers={"Origin": origin, **PREFLIGHT})
        assert "Access-Control-Allow-Origin" not in preflight.headers


def test_the_default_is_unset_and_loads_as_no_origins():
    assert settings.SETTINGS_BY_NAME["CORS_ALLOWED_ORIGINS"].default is None
    assert settings.load(environ={}, env_file=None)["CORS_ALLOWED_ORIGINS"] is None


def test_a_configured_origin_is_allowed_and_no_other(tmp_path):
    origins = settings.load(
        environ={"CORS_ALLOWED_ORIGINS": "https://app.example.com"}, env_file=None
    )["CORS_ALLOWED_ORIGINS"]
    client = api_client(app_with(tmp_path, CORS_ALLOWED_ORIGINS=origins))
    allowed = client.get("/api/config", headers={"Origin": "https://app.example.com"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    preflight = client.options(
        "/api/config", headers={"Origin": "https://app.example.com", **PREFLIGHT}
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    refused = client.get("/api/config", headers={"Origin": "https://elsewhere.example.com"})
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_a_401_carries_the_cors_headers_so_the_front_end_can_read_it(tmp_path):
    app = app_with(tmp_path, CORS_ALLOWED_ORIGINS=("https://app.example.com",))
    response = app.test_client().get("/api/config", headers={"Origin": "https://app.example.com"})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"


@pytest.mark.parametrize(
    ("origins", "warned"), [(("*",), True), (None, False), (("https://a.example.com",), False)]
)
def test_only_star_warns(tmp_path, caplog, origins, warned):
    with caplog.at_level(logging.WARNING):
        app_with(tmp_path, CORS_ALLOWED_ORIGINS=origins)
    assert ("CORS_ALLOWED_ORIGINS is *" in caplog.text) is warned


def test_star_still_allows_any_origin(tmp_path):
    client = api_client(app_with(tmp_path, CORS_ALLOWED_ORIGINS=("*",)))
    response = client.get("/api/config", headers={"Origin": "https://any.example.com"})
    assert response.headers["Access-Control-Allow-Origin"] in ("*", "https://any.example.com")
