"""What an agent run started by this backend gets from it: the environment (API key and
base URL, plugin root, time zone, experimental flags) and the working directory.

Derived from the loaded settings alone, so that ``GET /api/config`` shows exactly what a run
would get.
"""

from __future__ import annotations

from collections.abc import Mapping

# Variables of an agent run's environment that carry secrets.
SECRET_VARIABLES = frozenset({"ANTHROPIC_API_KEY"})


def environment(config: Mapping[str, object]) -> dict[str, str]:
    """Environment variables this backend adds to an agent run's environment."""
    added: dict[str, str] = {}
    if config["ANTHROPIC_API_KEY"]:
        added["ANTHROPIC_API_KEY"] = str(config["ANTHROPIC_API_KEY"])
    if config["ANTHROPIC_API_BASE"]:
        added["ANTHROPIC_BASE_URL"] = str(config["ANTHROPIC_API_BASE"])
    if config["CLAUDE_PLUGIN_ROOT"]:
        added["CLAUDE_PLUGIN_ROOT"] = str(config["CLAUDE_PLUGIN_ROOT"])
    if config["TZ"]:
        added["TZ"] = str(config["TZ"])
    if config["CLAUDE_CODE_EXPERIMENTAL_AGENT_TEAMS"]:
        added["CLAUDE_CODE_EXPERIMENTAL_AGENT_TEAMS"] = "1"
    return added


def cwd(config: Mapping[str, object], default: str | None = None) -> str | None:
    """Working directory of a skill playground run."""
    return str(config["SKILLS_PLAYGROUND_CWD"]) if config["SKILLS_PLAYGROUND_CWD"] else default
