"""The one declaration of every environment variable the agented backend reads.

Everything else derives from ``SETTINGS``: ``create_app()``, ``gunicorn.conf.py``
and ``run.py`` read their configuration through :func:`load`, and
``.env.example`` is rendered by :func:`render_example` (a test keeps the
committed file identical to it).

This module is loaded by file path as well as imported: ``gunicorn.conf.py``
loads it without importing the ``app`` package, and deployment tooling loads it
on a controller that has none of the backend's dependencies. So it uses the
standard library only at import time (python-dotenv is imported inside
:func:`load`) and no relative imports.

Command line (run from the backend directory)::

    python app/settings.py example            # print .env.example
    python app/settings.py example --check    # exit 1 if .env.example is stale
    python app/settings.py check              # validate the environment and .env
"""

# No `from __future__ import annotations`: with real (not string) annotations, dataclasses
# works even when a loader does not register this module in sys.modules.
import dataclasses
import ipaddress
import os
import re
import sys
import urllib.parse
from collections.abc import Mapping

BACKEND_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV_FILE = os.path.join(BACKEND_DIR, ".env")
EXAMPLE_FILE = os.path.join(BACKEND_DIR, ".env.example")

SECTIONS = (
    "Security",
    "Server",
    "CORS",
    "Database",
    "GitHub",
    "AI/LLM",
    "Plugins",
    "Tuning",
    "Experimental",
)

# Kind -> what a valid value looks like. The text is the legend printed at the
# top of .env.example; the rules themselves are in check().
KINDS = {
    "string": "any text on one line",
    "int": "a whole number from MIN to MAX (written int MIN..MAX)",
    "choice": "one of the listed words (written choice a,b,c)",
    "flag": "0 (off) or 1 (on)",
    "bind": "HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N",
    "path": "a file system path, relative to the backend directory unless absolute",
    "socket-path": "off, or an absolute path",
    "url": "an http:// or https:// URL",
    "origins": "* or a comma-separated list of origins such as https://app.example.com",
    "timezone": "a time zone name from the tz database, such as UTC or Europe/Berlin",
}

_NAME_RE = re.compile(r"[A-Z][A-Z0-9_]*")
_SPEC_SEPARATOR = " | "


class SettingsError(ValueError):
    """Invalid configuration. The message is one line meant for the user."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """One environment variable: what it is for, where it is documented, what is valid."""

    name: str
    section: str
    kind: str
    default: str | None
    description: str
    secret: bool = False
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if not _NAME_RE.fullmatch(self.name):
            problems.append("the name must be upper case letters, digits and _")
        if self.section not in SECTIONS:
            problems.append(f"unknown section {self.section!r}")
        if self.kind not in KINDS:
            problems.append(f"unknown kind {self.kind!r}")
        if self.kind == "int" and (self.minimum is None or self.maximum is None):
            problems.append("an int needs a minimum and a maximum")
        if self.kind != "int" and (self.minimum is not None or self.maximum is not None):
            problems.append("only an int has a minimum and a maximum")
        if self.kind in ("choice", "flag") and not self.choices:
            problems.append(f"a {self.kind} needs choices")
        if self.kind == "flag" and self.choices != ("0", "1"):
            problems.append("a flag's choices are 0 and 1")
        if self.kind not in ("choice", "flag") and self.choices:
            problems.append("only a choice or a flag has choices")
        if any("," in choice or not choice or choice != choice.strip() for choice in self.choices):
            problems.append("a choice must be a non-empty word without commas")
        if " ".join(self.description.split()) != self.description or not self.description:
            problems.append("the description must be one paragraph with single spaces")
        if self.description.startswith("type: "):
            problems.append("the description must not start with 'type: '")
        if self.default is not None:
            if (
                not self.default
                or self.default != self.default.strip()
                or _SPEC_SEPARATOR in self.default
            ):
                problems.append("a default must be non-empty, without surrounding spaces or ' | '")
            elif self.secret:
                problems.append("a secret has no default")
            elif (problem := _check(self, self.default)) is not None:
                problems.append(f"the default is invalid: {problem}")
        if problems:
            raise ValueError(f"setting {self.name}: " + "; ".join(problems))

    @property
    def spec(self) -> str:
        """The machine-readable line of .env.example, without the leading '# '."""
        rule = self.kind
        if self.kind == "int":
            rule += f" {self.minimum}..{self.maximum}"
        elif self.choices:
            rule += " " + ",".join(self.choices)
        parts = [f"type: {rule}"]
        parts.append("no default" if self.default is None else f"default: {self.default}")
        if self.secret:
            parts.append("secret")
        return _SPEC_SEPARATOR.join(parts)


# --- Validation -------------------------------------------------------------------------------

_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_PORT_RE = re.compile(r"[0-9]{1,5}")
_INT_RE = re.compile(r"[+-]?[0-9]+")


def _valid_port(text: str) -> bool:
    return bool(_PORT_RE.fullmatch(text)) and 1 <= int(text) <= 65535


def _valid_bind(value: str) -> bool:
    if value.startswith("unix:"):
        return len(value) > len("unix:")
    if value.startswith("fd://"):
        return bool(re.fullmatch(r"[0-9]{1,9}", value[len("fd://") :]))
    if value.startswith("["):
        address, _, port = value[1:].partition("]:")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return False
        return _valid_port(port)
    host, _, port = value.rpartition(":")
    if not _valid_port(port):
        return False
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return bool(_HOSTNAME_RE.fullmatch(host))


def _valid_url(value: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in value


def _valid_origin(origin: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(origin)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not parts.path
        and not parts.query
        and not parts.fragment
        and "@" not in parts.netloc
        and " " not in origin
    )


def _split_origins(value: str) -> tuple[str, ...]:
    return tuple(origin.strip() for origin in value.split(","))


def _valid_timezone(value: str) -> bool:
    import zoneinfo  # noqa: PLC0415 -- only needed when TZ is set

    try:
        zoneinfo.ZoneInfo(value)
    except Exception:
        return False
    return True


def _allowed(setting: Setting) -> str:
    """What a valid value of this setting looks like, as the end of an error message."""
    if setting.kind == "int":
        return f"use a whole number from {setting.minimum} to {setting.maximum}"
    if setting.kind in ("choice", "flag"):
        return "use one of " + ", ".join(setting.choices)
    return "use " + KINDS[setting.kind]


def _check(setting: Setting, value: str) -> str | None:
    kind = setting.kind
    if kind == "int":
        ok = bool(_INT_RE.fullmatch(value)) and (
            setting.minimum <= int(value) <= setting.maximum  # type: ignore[operator]
        )
    elif kind in ("choice", "flag"):
        ok = value in setting.choices
    elif kind == "bind":
        ok = _valid_bind(value)
    elif kind == "path":
        ok = "\0" not in value and value == value.strip()
    elif kind == "socket-path":
        ok = value == "off" or (os.path.isabs(value) and "\0" not in value)
    elif kind == "url":
        ok = _valid_url(value)
    elif kind == "origins":
        ok = value == "*" or all(_valid_origin(origin) for origin in _split_origins(value))
    elif kind == "timezone":
        ok = _valid_timezone(value)
    else:  # string
        ok = "\0" not in value
    if ok:
        return None
    return f"{_show(setting, value)} is not allowed: {_allowed(setting)}"


def _show(setting: Setting, value: str) -> str:
    if setting.secret:
        return f"{setting.name}=<hidden>"
    text = repr(value)
    if len(text) > 80:
        text = text[:76] + "...'"
    return f"{setting.name}={text}"


def check(setting: Setting, value: str) -> str | None:
    """Validate one value. None when valid, else ONE line naming the variable, the bad value
    (hidden for secrets) and what is allowed.

    An empty value means unset and is valid. Values containing a line break are refused for
    every kind: .env files and unit files cannot carry them faithfully.
    """
    if value == "":
        return None
    if "\n" in value or "\r" in value:
        return f"{_show(setting, value)} is not allowed: values cannot contain a line break"
    return _check(setting, value)


def _convert(setting: Setting, value: str) -> object:
    if setting.kind == "int":
        return int(value)
    if setting.kind == "flag":
        return value == "1"
    if setting.kind == "origins":
        return ("*",) if value == "*" else _split_origins(value)
    if setting.kind == "path":
        return os.path.normpath(os.path.join(BACKEND_DIR, value))
    return value


def _setting(*, description: str, **fields: object) -> Setting:
    """A Setting whose description may be wrapped over several lines in the source."""
    return Setting(description=" ".join(description.split()), **fields)  # type: ignore[arg-type]


SETTINGS: tuple[Setting, ...] = (
    # --- Security ---
    _setting(
        name="SECRET_KEY",
        section="Security",
        kind="string",
        default=None,
        description="""Key that signs sessions and tokens (Flask's SECRET_KEY). Unset: a random
        key is generated once into .secret_key next to the database (mode 0600) and reused; set
        it explicitly when several hosts must share it.""",
        secret=True,
    ),
    # --- Server ---
    _setting(
        name="GUNICORN_BIND",
        section="Server",
        kind="bind",
        default="0.0.0.0:20000",
        description="""Address Gunicorn listens on; run.py uses it too (HOST:PORT forms only).
        Ignored when systemd hands over the listening socket (socket activation).""",
    ),
    _setting(
        name="LOG_LEVEL",
        section="Server",
        kind="choice",
        default="info",
        description="Verbosity of the application and Gunicorn logs.",
        choices=("debug", "info", "warning", "error", "critical"),
    ),
    _setting(
        name="GUNICORN_CONTROL_SOCKET",
        section="Server",
        kind="socket-path",
        default=None,
        description="""Where Gunicorn puts its control socket (for gunicornc). Unset: Gunicorn's
        default, $XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl; off: no control
        socket; otherwise an absolute path, e.g. /run/agented/gunicorn.ctl under systemd.""",
    ),
    _setting(
        name="TZ",
        section="Server",
        kind="timezone",
        default=None,
        description="""Time zone of the process (log timestamps, agent runs). Unset: the
        system's time zone. Timestamps in the API are always UTC.""",
    ),
    # --- CORS ---
    _setting(
        name="CORS_ALLOWED_ORIGINS",
        section="CORS",
        kind="origins",
        default="*",
        description="""Browser origins allowed to call the API and open the event stream. *
        allows any origin and logs a warning at start: list your front end's origins instead.""",
    ),
    # --- Database ---
    _setting(
        name="AGENTED_DB_PATH",
        section="Database",
        kind="path",
        default="agented.db",
        description="""SQLite database file; its directory is created if missing and also holds
        .secret_key. The default resolves to backend/agented.db; deployments point it at a state
        directory such as /var/lib/agented/agented.db.""",
    ),
    # --- GitHub ---
    _setting(
        name="GITHUB_WEBHOOK_SECRET",
        section="GitHub",
        kind="string",
        default=None,
        description="""Secret of the GitHub webhook; every delivery must carry a valid
        X-Hub-Signature-256. Unset: the webhook answers 503 and accepts nothing.""",
        secret=True,
    ),
    _setting(
        name="GITHUB_WEBHOOK_MAX_BYTES",
        section="GitHub",
        kind="int",
        default="26214400",
        description="""Largest webhook body accepted, in bytes (GitHub caps payloads at 25 MB).
        Larger deliveries get 413 without the body being read.""",
        minimum=1024,
        maximum=1073741824,
    ),
    # --- AI/LLM ---
    _setting(
        name="ANTHROPIC_API_KEY",
        section="AI/LLM",
        kind="string",
        default=None,
        description="API key given to agent runs (as ANTHROPIC_API_KEY).",
        secret=True,
    ),
    _setting(
        name="ANTHROPIC_API_BASE",
        section="AI/LLM",
        kind="url",
        default=None,
        description="""Base URL of the Anthropic API or a compatible gateway, given to agent
        runs as ANTHROPIC_BASE_URL. Unset: the client's default.""",
    ),
    # --- Plugins ---
    _setting(
        name="CLAUDE_PLUGIN_ROOT",
        section="Plugins",
        kind="path",
        default=None,
        description="""Directory holding Claude Code plugins, given to agent runs as
        CLAUDE_PLUGIN_ROOT.""",
    ),
    _setting(
        name="SKILLS_PLAYGROUND_CWD",
        section="Plugins",
        kind="path",
        default=None,
        description="""Working directory of skill playground runs. Unset: the agent run's own
        working directory.""",
    ),
    # --- Tuning ---
    _setting(
        name="GUNICORN_WORKERS",
        section="Tuning",
        kind="int",
        default="2",
        description="""Gunicorn worker processes. Each is a gevent event loop holding many
        connections; one or two per core is plenty.""",
        minimum=1,
        maximum=64,
    ),
    _setting(
        name="GUNICORN_WORKER_CONNECTIONS",
        section="Tuning",
        kind="int",
        default="4096",
        description="""Simultaneous connections per worker, event streams included. Gunicorn
        raises the open-files limit to fit when the hard limit allows.""",
        minimum=1,
        maximum=100000,
    ),
    _setting(
        name="GUNICORN_TIMEOUT",
        section="Tuning",
        kind="int",
        default="30",
        description="""Seconds a worker may block its event loop before the master restarts it
        (0 disables).""",
        minimum=0,
        maximum=3600,
    ),
    _setting(
        name="GUNICORN_GRACEFUL_TIMEOUT",
        section="Tuning",
        kind="int",
        default="10",
        description="""Seconds a stopping worker gets to finish its requests (on stop, restart
        and reload). Event streams end at once and clients resume with Last-Event-ID. Keep it
        below the service manager's stop timeout (systemd TimeoutStopSec=30).""",
        minimum=0,
        maximum=3600,
    ),
    _setting(
        name="GUNICORN_KEEPALIVE",
        section="Tuning",
        kind="int",
        default="2",
        description=(
            "Seconds an idle keep-alive connection is held open for the next request. A stopping"
            " worker waits for idle connections this long, so a short value keeps restarts fast."
        ),
        minimum=0,
        maximum=300,
    ),
    _setting(
        name="STALE_CONVERSATION_THRESHOLD_SECS",
        section="Tuning",
        kind="int",
        default="1800",
        description="Seconds without activity after which an active conversation is marked stale.",
        minimum=1,
        maximum=31536000,
    ),
    _setting(
        name="STALE_EXECUTION_THRESHOLD_SECS",
        section="Tuning",
        kind="int",
        default="900",
        description="Seconds after which an execution still running is marked stale.",
        minimum=1,
        maximum=31536000,
    ),
    _setting(
        name="SSE_REPLAY_LIMIT",
        section="Tuning",
        kind="int",
        default="500",
        description="""Most missed events replayed to an event-stream client that reconnects
        with Last-Event-ID (the newest ones; 0 disables replay).""",
        minimum=0,
        maximum=100000,
    ),
    _setting(
        name="SSE_HEARTBEAT_SECS",
        section="Tuning",
        kind="int",
        default="15",
        description="Seconds between heartbeat comments on an idle event stream.",
        minimum=1,
        maximum=3600,
    ),
    _setting(
        name="SSE_POLL_INTERVAL_MS",
        section="Tuning",
        kind="int",
        default="100",
        description="""Milliseconds between two reads of new events from the database by each
        worker; the upper bound of the delay before an event written by another worker is
        delivered.""",
        minimum=10,
        maximum=10000,
    ),
    # --- Experimental ---
    _setting(
        name="CLAUDE_CODE_EXPERIMENTAL_AGENT_TEAMS",
        section="Experimental",
        kind="flag",
        default=None,
        description="""1 lets agent runs use Claude Code's experimental agent teams (passed
        through as CLAUDE_CODE_EXPERIMENTAL_AGENT_TEAMS=1).""",
        choices=("0", "1"),
    ),
)

SETTINGS_BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}


# --- Loading ----------------------------------------------------------------------------------


def read_env_file(env_file: str | os.PathLike[str] | None = ENV_FILE) -> dict[str, str | None]:
    """The raw values of a .env file, parsed by python-dotenv without variable expansion
    (values arrive exactly as written). A missing file reads as empty."""
    if env_file is None or not os.path.exists(env_file):
        return {}
    from dotenv import dotenv_values  # noqa: PLC0415 -- keeps this module stdlib-only

    try:
        with open(env_file, encoding="utf-8") as stream:
            return dict(dotenv_values(stream=stream, interpolate=False))
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"cannot read {os.fspath(env_file)}: {error}") from None


def load(
    environ: Mapping[str, str] = os.environ,
    env_file: str | os.PathLike[str] | None = ENV_FILE,
) -> dict[str, object]:
    """The typed value of every setting, keyed by name (None when unset without default).

    Sources, first non-empty wins: ``environ``, then ``env_file`` (read with python-dotenv's
    dotenv_values, so os.environ is never modified and a reload re-reads the file), then the
    declared default. Ints become int, flags bool, origins a tuple and paths absolute.
    Raises SettingsError, with every invalid variable on one line.
    """
    file_values = read_env_file(env_file)
    values: dict[str, object] = {}
    problems: list[str] = []
    for setting in SETTINGS:
        raw = environ.get(setting.name) or file_values.get(setting.name) or setting.default
        if raw is None:
            values[setting.name] = None
            continue
        problem = check(setting, raw)
        if problem is not None:
            problems.append(problem)
            continue
        values[setting.name] = _convert(setting, raw)
    if problems:
        raise SettingsError("; ".join(problems))
    return values


def unknown_names(env_file: str | os.PathLike[str] | None = ENV_FILE) -> list[str]:
    """Names set in the .env file that no setting declares, each with a suggestion when one is
    close (a typo there is otherwise silently ignored)."""
    notes = []
    for name in read_env_file(env_file):
        if name in SETTINGS_BY_NAME:
            continue
        import difflib  # noqa: PLC0415 -- only needed for a typo

        close = difflib.get_close_matches(name, SETTINGS_BY_NAME, n=1)
        notes.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return notes


def public_view(values: Mapping[str, object]) -> dict[str, object]:
    """Loaded values safe to show: secrets become "set" or "unset", tuples become lists."""
    view: dict[str, object] = {}
    for setting in SETTINGS:
        value = values.get(setting.name)
        if setting.secret:
            view[setting.name] = "set" if value else "unset"
        elif isinstance(value, tuple):
            view[setting.name] = list(value)
        else:
            view[setting.name] = value
    return view


# --- .env.example -----------------------------------------------------------------------------

_HEADER = """\
# Configuration of the agented backend.
#
# Copy this file to .env in the backend directory and uncomment what you change:
#     cp .env.example .env
# Gunicorn and run.py read .env from the backend directory at start and again on
# reload (SIGHUP). A variable set in the process environment wins over .env. An
# empty value means unset: the default applies. Values are taken literally (no
# $VAR expansion); put a value containing spaces, # or quotes in single quotes,
# with \\ and ' escaped by a backslash. Line breaks are not allowed.
#
# Generated from app/settings.py, which declares every variable; do not edit by
# hand. Regenerate it from the backend directory with:
#     uv run python app/settings.py example > .env.example
# Check the effective configuration (environment and .env) with:
#     uv run python app/settings.py check
#
# Each variable has a description, one line
#     type: KIND [RULE] | default: VALUE | secret
# ("no default" instead of a default; "secret" only where it applies), then the
# variable, commented out, with its default. Kinds:
"""

_SECTION_RE = re.compile(r"# --- (.+) ---")
_VARIABLE_RE = re.compile(r"# ([A-Z][A-Z0-9_]*)=(.*)")
_PLAIN_VALUE_RE = re.compile(r"[A-Za-z0-9_.:/@*+,\[\]-]*")


def dotenv_quote(value: str) -> str:
    """Quote ``value`` so that python-dotenv's parser returns it exactly: single quotes, with
    backslash and single quote escaped by a backslash. Spaces, #, quotes, $ and = survive
    (load() reads without interpolation). A line break cannot be written; check() refuses it."""
    if "\n" in value or "\r" in value:
        raise ValueError("a value with a line break cannot be written to a .env file")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def dotenv_unquote(text: str) -> str:
    """The value dotenv_quote() wrote as ``text``; the Ansible role reads its rendered .env back."""
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return re.sub(r"\\([\\'])", r"\1", text[1:-1])
    return text


def _example_value(default: str | None) -> str:
    if default is None:
        return ""
    return default if _PLAIN_VALUE_RE.fullmatch(default) else dotenv_quote(default)


def render_example() -> str:
    """The text of .env.example, derived from SETTINGS."""
    import textwrap  # noqa: PLC0415 -- only needed to render the example

    width = max(len(kind) for kind in KINDS) + 2
    lines = _HEADER.splitlines()
    lines += [f"#     {kind:<{width}}{text}" for kind, text in KINDS.items()]
    section = None
    for setting in SETTINGS:
        if setting.section != section:
            section = setting.section
            lines += ["", f"# --- {section} ---"]
        lines.append("")
        lines += textwrap.wrap(
            setting.description,
            width=88,
            initial_indent="# ",
            subsequent_indent="# ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        lines.append(f"# {setting.spec}")
        lines.append(f"# {setting.name}={_example_value(setting.default)}")
    return "\n".join(lines) + "\n"


def _parse_spec(line_number: int, text: str) -> dict[str, object]:
    def fail(reason: str) -> ValueError:
        return ValueError(f"line {line_number}: {reason}: {text!r}")

    parts = text.split(_SPEC_SEPARATOR)
    if len(parts) not in (2, 3) or not parts[0].startswith("type: "):
        raise fail("expected 'type: KIND [RULE] | default: VALUE [| secret]'")
    kind, _, rule = parts[0][len("type: ") :].partition(" ")
    fields: dict[str, object] = {"kind": kind}
    if kind == "int":
        match = re.fullmatch(r"(-?[0-9]+)\.\.(-?[0-9]+)", rule)
        if not match:
            raise fail("an int needs its range as MIN..MAX")
        fields["minimum"], fields["maximum"] = int(match[1]), int(match[2])
    elif kind in ("choice", "flag"):
        if not rule:
            raise fail(f"a {kind} needs its choices")
        fields["choices"] = tuple(rule.split(","))
    elif rule:
        raise fail(f"a {kind} takes no rule")
    if parts[1] == "no default":
        fields["default"] = None
    elif parts[1].startswith("default: "):
        fields["default"] = parts[1][len("default: ") :]
    else:
        raise fail("expected 'default: VALUE' or 'no default'")
    if len(parts) == 3 and parts[2] != "secret":
        raise fail("only 'secret' may follow the default")
    fields["secret"] = len(parts) == 3
    return fields


def parse_example(text: str) -> tuple[Setting, ...]:
    """Rebuild the settings from the text of .env.example (the inverse of render_example)."""
    settings: list[Setting] = []
    section: str | None = None
    comments: list[tuple[int, str]] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            comments = []
            continue
        if match := _SECTION_RE.fullmatch(line):
            section = match[1]
            comments = []
            continue
        match = _VARIABLE_RE.fullmatch(line)
        if match and comments and comments[-1][1].startswith("type: "):
            name, value = match[1], match[2]
            spec_line, spec = comments[-1]
            fields = _parse_spec(spec_line, spec)
            written = dotenv_unquote(value)
            if written != (fields["default"] or ""):
                raise ValueError(
                    f"line {line_number}: {name}={value} does not match the declared default"
                )
            if section is None:
                raise ValueError(f"line {line_number}: {name} comes before any section")
            description = " ".join(comment for _, comment in comments[:-1])
            try:
                settings.append(
                    Setting(name=name, section=section, description=description, **fields)
                )  # type: ignore[arg-type]
            except ValueError as error:
                raise ValueError(f"line {line_number}: {error}") from None
            comments = []
            continue
        if line.startswith("#"):
            comments.append((line_number, line[2:] if line.startswith("# ") else line[1:]))
            continue
        raise ValueError(f"line {line_number}: expected a comment or a blank line: {line!r}")
    names = [setting.name for setting in settings]
    if duplicates := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError("declared more than once: " + ", ".join(duplicates))
    return tuple(settings)


# --- Command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="python app/settings.py", description="The agented backend's configuration."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    example = commands.add_parser("example", help="print .env.example")
    example.add_argument(
        "--check", action="store_true", help="exit 1 if the committed .env.example differs"
    )
    commands.add_parser("check", help="validate the environment and .env; exit 1 if invalid")
    get = commands.add_parser("get", help="print the effective value of one variable")
    get.add_argument("name", choices=[setting.name for setting in SETTINGS], metavar="NAME")
    args = parser.parse_args(argv)

    if args.command == "example":
        text = render_example()
        if not args.check:
            sys.stdout.write(text)
            return 0
        try:
            with open(EXAMPLE_FILE, encoding="utf-8") as stream:
                current = stream.read()
        except FileNotFoundError:
            current = ""
        if current == text:
            return 0
        print(
            f"{EXAMPLE_FILE} is out of date: regenerate it with "
            "python app/settings.py example > .env.example",
            file=sys.stderr,
        )
        return 1

    try:
        values = load()
    except SettingsError as error:
        print(f"agented: invalid configuration: {error}", file=sys.stderr)
        return 1
    if args.command == "get":
        value = values[args.name]
        if SETTINGS_BY_NAME[args.name].secret:
            print("agented: secrets are not printed", file=sys.stderr)
            return 1
        print("" if value is None else value)
        return 0
    for note in unknown_names():
        print(f"agented: warning: .env sets an unknown variable: {note}", file=sys.stderr)
    print("configuration OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
