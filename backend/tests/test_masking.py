"""Credentials written into a URL (user:password@, ?token=, ?api_key=, ...) are never shown:
not by GET /api/config, not in validation messages."""

from __future__ import annotations

import pytest

from app import agent_runs, settings
from app.factory import create_app
from app.settings import SETTINGS_BY_NAME, mask_url_credentials
from helpers import API_TOKEN, api_client

MASKED = [
    ("https://user:hunter2@gw.example.com/v1", "https://***@gw.example.com/v1"),
    ("https://hunter2@gw.example.com", "https://***@gw.example.com"),
    ("http://user:hun@ter2@gw.example.com:8080/", "http://***@gw.example.com:8080/"),
    # A password with an unencoded / is not a valid URL, but a message still shows it.
    ("https://user:hun/ter2@gw.example.com/v1", "https://***@gw.example.com/v1"),
    ("https://gw.example.com/v1?token=hunter2", "https://gw.example.com/v1?token=***"),
    ("https://gw.example.com/?key=hunter2&region=eu", "https://gw.example.com/?key=***&region=eu"),
    (
        "https://gw.example.com/?region=eu&api_key=hunter2",
        "https://gw.example.com/?region=eu&api_key=***",
    ),
    ("https://gw.example.com/?API-KEY=hunter2", "https://gw.example.com/?API-KEY=***"),
    (
        "https://gw.example.com/?access_token=hunter2#x",
        "https://gw.example.com/?access_token=***#x",
    ),
    ("https://gw.example.com/#access_token=hunter2", "https://gw.example.com/#access_token=***"),
    ("https://gw.example.com/?apikey=hunter2", "https://gw.example.com/?apikey=***"),
    ("https://gw.example.com/?client_secret=hunter2", "https://gw.example.com/?client_secret=***"),
    ("https://gw.example.com/?password=hunter2", "https://gw.example.com/?password=***"),
    (
        "https://gw.example.com/?X-Amz-Signature=hunter2",
        "https://gw.example.com/?X-Amz-Signature=***",
    ),
    ("https://gw.example.com/?sig=hunter2", "https://gw.example.com/?sig=***"),
    (
        "https://u:hunter2@gw.example.com/?token=hunter2",
        "https://***@gw.example.com/?token=***",
    ),
    # Every URL inside a text.
    (
        "from https://u:hunter2@a.example.com/ to https://b.example.com/?key=hunter2 now",
        "from https://***@a.example.com/ to https://b.example.com/?key=*** now",
    ),
    # RFC 3986 allows ' in a password: it does not end the URL.
    ("https://user:hun'ter2@gw.example.com/", "https://***@gw.example.com/"),
]

UNCHANGED = [
    "https://gw.example.com/v1",
    "https://gw.example.com/v1?region=eu&page=2",
    "https://gw.example.com/v1?notify=a@example.com",
    "http://127.0.0.1:20000",
    "/var/lib/agented/agented.db",
    "user@example.com",
    "",
]


@pytest.mark.parametrize(("text", "masked"), MASKED)
def test_credentials_are_masked(text, masked):
    assert mask_url_credentials(text) == masked
    assert "hunter2" not in mask_url_credentials(text)
    assert mask_url_credentials(masked) == masked  # masking twice changes nothing


@pytest.mark.parametrize("text", UNCHANGED)
def test_text_without_credentials_is_unchanged(text):
    assert mask_url_credentials(text) == text


BASE = "https://proxy-user:hunter2@gw.example.com/anthropic?api_key=hunter2&region=eu"


def test_config_api_masks_credentials_in_urls(tmp_path):
    app = create_app(
        {
            "TESTING": True,
            "AGENTED_DB_PATH": str(tmp_path / "a.db"),
            "BACKGROUND_JOBS": False,
            "API_TOKEN": API_TOKEN,
            "ANTHROPIC_API_BASE": BASE,
        }
    )
    response = api_client(app).get("/api/config")
    assert "hunter2" not in response.get_data(as_text=True)
    answer = response.get_json()
    shown = "https://***@gw.example.com/anthropic?api_key=***&region=eu"
    assert answer["settings"]["ANTHROPIC_API_BASE"] == shown
    assert answer["agent_run"]["environment"]["ANTHROPIC_BASE_URL"] == shown
    # The agent run itself gets the URL as configured.
    assert agent_runs.environment(app.config)["ANTHROPIC_BASE_URL"] == BASE


def test_public_view_masks_every_value_that_is_not_a_secret():
    values = settings.load(environ={"ANTHROPIC_API_BASE": BASE}, env_file=None)
    assert "hunter2" not in repr(settings.public_view(values))


@pytest.mark.parametrize(
    "value",
    [
        "https://user:hunter2@gw.example.com:99999/",  # bad port
        "ftp://user:hunter2@gw.example.com/",  # not http(s)
        "https://gw.example.com/?token=hunter2 x",  # a space
        "https://user:hun/ter2@gw.example.com/",  # an unencoded / in the password
    ],
)
def test_validation_messages_mask_credentials(value):
    problem = settings.check(SETTINGS_BY_NAME["ANTHROPIC_API_BASE"], value)
    assert problem is not None and problem.startswith("ANTHROPIC_API_BASE=")
    assert "hunter2" not in problem
    with pytest.raises(settings.SettingsError) as raised:
        settings.load(environ={"ANTHROPIC_API_BASE": value}, env_file=None)
    assert "hunter2" not in str(raised.value)


def test_a_line_break_message_masks_credentials_too():
    problem = settings.check(SETTINGS_BY_NAME["ANTHROPIC_API_BASE"], "https://u:hunter2@h/\nx")
    assert problem is not None and "hunter2" not in problem


def test_a_url_without_its_scheme_still_hides_its_credentials():
    problem = settings.check(SETTINGS_BY_NAME["ANTHROPIC_API_BASE"], "user:hunter2@gw.example.com")
    assert problem is not None and "hunter2" not in problem and "gw.example.com" in problem
