"""``GET /api/config``: the effective configuration, secrets shown only as set or unset.

Also builds what an agent run started by this backend gets from it: the environment
(API key and base URL, plugin root, time zone, experimental flags) and working directory.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from . import settings

bp = Blueprint("config", __name__, url_prefix="/api")

# Variables of an agent run's environment that carry secrets.
_SECRET_AGENT_VARIABLES = frozenset({"ANTHROPIC_API_KEY"})


def agent_run_environment(config: Mapping[str, object]) -> dict[str, str]:
    """Environment variables this backend adds to an agent run's environment."""
    environment: dict[str, str] = {}
    if config["ANTHROPIC_API_KEY"]:
        environment["ANTHROPIC_API_KEY"] = str(config["ANTHROPIC_API_KEY"])
    if config["ANTHROPIC_API_BASE"]:
        environment["ANTHROPIC_BASE_URL"] = str(config["ANTHROPIC_API_BASE"])
    if config["CLAUDE_PLUGIN_ROOT"]:
        environment["CLAUDE_PLUGIN_ROOT"] = str(config["CLAUDE_PLUGIN_ROOT"])
    if config["TZ"]:
        environment["TZ"] = str(config["TZ"])
    if config["CLAUDE_CODE_EXPERIMENTAL_AGENT_TEAMS"]:
        environment["CLAUDE_CODE_EXPERIMENTAL_AGENT_TEAMS"] = "1"
    return environment


def agent_run_cwd(config: Mapping[str, object], default: str | None = None) -> str | None:
    """Working directory of a skill playground run."""
    return str(config["SKILLS_PLAYGROUND_CWD"]) if config["SKILLS_PLAYGROUND_CWD"] else default


@bp.get("/config")
def show_config() -> ResponseReturnValue:
    config = current_app.config
    environment = {
        name: "set" if name in _SECRET_AGENT_VARIABLES else value
        for name, value in agent_run_environment(config).items()
    }
    return jsonify(
        version=config["VERSION"],
        settings=settings.public_view(config),
        secret_key_source=config["SECRET_KEY_SOURCE"],
        agent_run={"environment": environment, "cwd": agent_run_cwd(config)},
    )
