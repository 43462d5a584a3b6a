"""GET /api/config: the effective configuration without secret values."""

from __future__ import annotations

from app import settings
from app.factory import create_app
from helpers import api_client


def test_config_reports_every_setting_and_hides_secrets(tmp_path):
    secrets = {
        "SECRET_KEY": "k" * 40,
        "GITHUB_WEBHOOK_SECRET": "whsec-value",
        "ANTHROPIC_API_KEY": "sk-ant-value",
        "API_TOKEN": "api-token-value",
    }
    app = create_app(
        {
            "TESTING": True,
            "AGENTED_DB_PATH": str(tmp_path / "a.db"),
            "BACKGROUND_JOBS": False,
            **secrets,
        }
    )
    response = api_client(app).get("/api/config")
    assert response.status_code == 200
    for value in secrets.values():
        assert value not in response.get_data(as_text=True)
    answer = response.get_json()
    assert set(answer["settings"]) == set(settings.SETTINGS_BY_NAME)
    assert {name: answer["settings"][name] for name in secrets} == dict.fromkeys(secrets, "set")
    assert answer["settings"]["SSE_REPLAY_LIMIT"] == 500
    assert answer["secret_key_source"] == "environment"
    assert answer["agent_run"]["environment"] == {"ANTHROPIC_API_KEY": "set"}


def test_unset_secrets_and_the_generated_key(client):
    answer = client.get("/api/config").get_json()
    assert answer["settings"]["ANTHROPIC_API_KEY"] == "unset"
    assert answer["settings"]["SECRET_KEY"] == "set"
    assert answer["secret_key_source"] == "file"
    assert answer["agent_run"] == {"environment": {}, "cwd": None}
