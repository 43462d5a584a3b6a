"""The agented backend's settings: every environment variable it reads, declared once.

``declarations.SETTINGS`` is the declaration; everything else derives from it:
``create_app()``, ``gunicorn.conf.py`` and ``run.py`` read their configuration through
:func:`load`, ``.env.example`` is rendered by :func:`render_example` (a test keeps the
committed file identical to it), and the Ansible role validates and writes ``.env`` from
``SETTINGS`` with :func:`check` and :func:`dotenv_quote`.

The Gunicorn master and deployment tooling load this package without the backend's
dependencies, the tooling by path under a private name. So the package uses the standard
library only at import time (python-dotenv is imported inside :func:`read_env_file`) and
only relative imports among its modules.

Command line (from the backend directory), see ``__main__.py``::

    python -m app.settings example [--check]   # print .env.example, or check it is current
    python -m app.settings check               # validate the environment and .env
    python -m app.settings get NAME            # print one effective value
    python -m app.settings local-url           # the URL a local client uses for GUNICORN_BIND
"""

import io
import os
import re
from collections.abc import Mapping

from .declarations import SETTINGS
from .schema import (
    KINDS,
    SECTIONS,
    Bind,
    Setting,
    SettingsError,
    check,
    dotenv_quote,
    dotenv_unquote,
    mask_url_credentials,
    parse_bind,
    split_networks,
    split_origins,
)

__all__ = [
    "BACKEND_DIR",
    "ENV_FILE",
    "EXAMPLE_FILE",
    "KINDS",
    "SECTIONS",
    "SETTINGS",
    "SETTINGS_BY_NAME",
    "Bind",
    "Setting",
    "SettingsError",
    "check",
    "dotenv_quote",
    "dotenv_unquote",
    "load",
    "mask_url_credentials",
    "parse_bind",
    "public_view",
    "read_env_file",
    "render_example",
    "split_networks",
    "unknown_names",
]

BACKEND_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV_FILE = os.path.join(BACKEND_DIR, ".env")
EXAMPLE_FILE = os.path.join(BACKEND_DIR, ".env.example")


def _convert(setting: Setting, value: str) -> object:
    if setting.kind == "int":
        return int(value)
    if setting.kind == "flag":
        return value == "1"
    if setting.kind == "origins":
        return ("*",) if value == "*" else split_origins(value)
    if setting.kind == "path":
        return os.path.normpath(os.path.join(BACKEND_DIR, value))
    return value


SETTINGS_BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}


# --- Loading ----------------------------------------------------------------------------------


def read_env_file(env_file: str | os.PathLike[str] | None = ENV_FILE) -> dict[str, str | None]:
    """The raw values of a .env file, parsed by python-dotenv without variable expansion
    (values arrive exactly as written). A missing file reads as empty."""
    if env_file is None or not os.path.exists(env_file):
        return {}
    from dotenv import dotenv_values  # noqa: PLC0415 -- keeps this module stdlib-only
    from dotenv.parser import parse_stream  # noqa: PLC0415

    try:
        with open(env_file, encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"cannot read {os.fspath(env_file)}: {error}") from None
    # python-dotenv skips a line it cannot parse with a warning only: a value would be lost
    # without a word. The line itself is not shown, since it may hold a secret.
    unparsed = [
        binding.original.line for binding in parse_stream(io.StringIO(text)) if binding.error
    ]
    if unparsed:
        lines = ", ".join(str(line) for line in unparsed)
        raise SettingsError(
            f"{os.fspath(env_file)}: cannot parse line{'s' if len(unparsed) > 1 else ''} {lines}:"
            " write NAME=value, quoting a"
            " value that holds spaces, # or quotes in single quotes"
        )
    return dict(dotenv_values(stream=io.StringIO(text), interpolate=False))


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
    """Loaded values safe to show: secrets become "set" or "unset", credentials written into a
    URL are masked (:func:`mask_url_credentials`), tuples become lists."""
    view: dict[str, object] = {}
    for setting in SETTINGS:
        value = values.get(setting.name)
        if setting.secret:
            view[setting.name] = "set" if value else "unset"
        elif isinstance(value, tuple):
            view[setting.name] = [mask_url_credentials(str(item)) for item in value]
        elif isinstance(value, str):
            view[setting.name] = mask_url_credentials(value)
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
# Generated from app/settings/declarations.py, which declares every variable; do
# not edit by hand. Regenerate it from the backend directory with:
#     uv run python -m app.settings example > .env.example
# Check the effective configuration (environment and .env) with:
#     uv run python -m app.settings check
#
# Each variable has a description, one line
#     type: KIND [RULE] | default: VALUE | secret
# ("no default" instead of a default; "secret" only where it applies), then the
# variable, commented out, with its default. Kinds:
"""

_PLAIN_VALUE_RE = re.compile(r"[A-Za-z0-9_.:/@*+,\[\]-]*")


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
