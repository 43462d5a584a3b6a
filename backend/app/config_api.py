"""``GET /api/config``: the effective configuration, secrets shown only as set or unset and
credentials in URLs masked, and what an agent run would get from it."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from . import agent_runs, settings

bp = Blueprint("config", __name__, url_prefix="/api")


@bp.get("/config")
def show_config() -> ResponseReturnValue:
    config = current_app.config
    environment = {
        name: "set" if name in agent_runs.SECRET_VARIABLES else settings.mask_url_credentials(value)
        for name, value in agent_runs.environment(config).items()
    }
    return jsonify(
        version=config["VERSION"],
        settings=settings.public_view(config),
        secret_key_source=config["SECRET_KEY_SOURCE"],
        api_token_source=config["API_TOKEN_SOURCE"],
        agent_run={"environment": environment, "cwd": agent_runs.cwd(config)},
    )
