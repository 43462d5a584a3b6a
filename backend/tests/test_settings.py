"""app/settings/declarations.py is the one declaration: the code reads nothing else, uses
everything it declares, and .env.example is derived from it."""

from __future__ import annotations

import ast
import io
import logging
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dotenv import dotenv_values
from hypothesis import given
from hypothesis import strategies as st

from app import db, jobs, settings
from app.factory import create_app
from app.settings import SETTINGS, SETTINGS_BY_NAME, Bind, Setting, SettingsError
from helpers import BACKEND_DIR, api_client, backend_copy, clean_environment, delivery_request

# A valid value different from the default for every setting.
NON_DEFAULTS = {
    "SECRET_KEY": "a secret key with spaces, # and 'quotes'",
    "API_TOKEN": "an API token",
    "GUNICORN_BIND": "127.0.0.1:21000",
    "GUNICORN_HEADER_TIMEOUT_SECS": "7",
    "GUNICORN_CONNECTIONS_PER_CLIENT": "50",
    "GUNICORN_RESERVED_CONNECTIONS": "10",
    "LOG_LEVEL": "warning",
    "METRICS_ALLOWED_IPS": "10.0.0.0/8,::1",
    "GUNICORN_CONTROL_SOCKET": "/run/agented/gunicorn.ctl",
    "TZ": "Asia/Tokyo",
    "CORS_ALLOWED_ORIGINS": "https://app.example.com, http://localhost:5173",
    "AGENTED_DB_PATH": "(set by the test)",
    "AGENTED_DB_LOCK_WAIT_SECS": "3",
    "GITHUB_WEBHOOK_SECRET": "webhook $ecret = 'x'",
    "GITHUB_WEBHOOK_MAX_BYTES": "2048",
    "GITHUB_WEBHOOK_READ_TIMEOUT_SECS": "12",
    "GITHUB_WEBHOOK_MEMORY_BUDGET_BYTES": "33554432",
    "GITHUB_WEBHOOK_UNSIGNED_PER_CLIENT": "8",
    "ANTHROPIC_API_KEY": "sk-ant-test-key",
    "ANTHROPIC_API_BASE": "https://gateway.example.com/anthropic",
    "CLAUDE_PLUGIN_ROOT": "plugins",
    "SKILLS_PLAYGROUND_CWD": "/srv/playground",
    "GUNICORN_WORKERS": "3",
    "GUNICORN_WORKER_CONNECTIONS": "2000",
    "GUNICORN_TIMEOUT": "45",
    "GUNICORN_GRACEFUL_TIMEOUT": "7",
    "GUNICORN_KEEPALIVE": "4",
    "STALE_CONVERSATION_THRESHOLD_SECS": "3600",
    "STALE_EXECUTION_THRESHOLD_SECS": "120",
    "SSE_REPLAY_LIMIT": "123",
    "SSE_HEARTBEAT_SECS": "5",
    "SSE_POLL_INTERVAL_MS": "250",
    "SSE_WRITE_TIMEOUT_SECS": "20",
    "CLAUDE_CODE_EXPERIMENTAL_AGENT_TEAMS": "1",
}


@pytest.fixture
def restore_timezone():
    before = os.environ.get("TZ")
    yield
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


def run_gunicorn_conf() -> dict:
    """The names gunicorn.conf.py defines, run in this process. It forgets every ``app``
    module, as the master must; the test process keeps the ones its tests imported."""
    imported = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "app"}
    try:
        return runpy.run_path(str(BACKEND_DIR / "gunicorn.conf.py"))
    finally:
        sys.modules.update(imported)


# --- The declaration and .env.example -----------------------------------------------------------


def test_settings_load_as_a_private_package_with_the_standard_library_only(tmp_path):
    """As deployment tooling loads it: by path, as a package under a name of its own, from
    outside the backend, isolated from the environment and the user's site (python -I); every
    module imported on the way belongs to the standard library."""
    package = BACKEND_DIR / "app" / "settings"
    code = f"""
import importlib.util, sys
before = set(sys.modules)
spec = importlib.util.spec_from_file_location(
    "private_name", {str(package / "__init__.py")!r},
    submodule_search_locations=[{str(package)!r}],
)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
module.SETTINGS, module.check, module.parse_bind, module.dotenv_quote, module.dotenv_unquote
assert module.check(module.SETTINGS_BY_NAME["TZ"], "Mars/Base")
assert module.parse_bind("[::]:8080").local_url == "http://[::1]:8080"
assert module.render_example().startswith("# Configuration of the agented backend.")
import sysconfig
stdlib = (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])
def third_party(name):
    if name.partition(".")[0] in sys.stdlib_module_names | {{"private_name"}}:
        return False
    origin = getattr(sys.modules[name], "__file__", None) or ""
    return not origin.startswith(stdlib)
foreign = sorted(name for name in set(sys.modules) - before if third_party(name))
assert not foreign, foreign
assert "app" not in sys.modules
print(module.dotenv_quote("it's"))
"""
    result = subprocess.run(
        [sys.executable, "-I", "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "'it\\'s'\n"


def test_importing_the_app_package_loads_no_third_party_module():
    code = (
        "import sys; before = set(sys.modules); import app.settings; "
        "print(sorted({m.partition('.')[0] for m in set(sys.modules) - before} "
        "- set(sys.stdlib_module_names) - {'app'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=BACKEND_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_sections_are_in_the_documented_order():
    seen = list(dict.fromkeys(setting.section for setting in SETTINGS))
    assert seen == list(settings.SECTIONS)


def test_required_variables_are_declared_with_their_defaults():
    expected = {
        "SECRET_KEY": None,
        "API_TOKEN": None,
        "GUNICORN_BIND": "0.0.0.0:20000",
        "LOG_LEVEL": "info",
        "CORS_ALLOWED_ORIGINS": None,
        "AGENTED_DB_PATH": "agented.db",
        "GITHUB_WEBHOOK_SECRET": None,
        "ANTHROPIC_API_KEY": None,
        "ANTHROPIC_API_BASE": None,
        "CLAUDE_PLUGIN_ROOT": None,
        "STALE_CONVERSATION_THRESHOLD_SECS": "1800",
        "STALE_EXECUTION_THRESHOLD_SECS": "900",
        "SSE_REPLAY_LIMIT": "500",
        "TZ": None,
        "SKILLS_PLAYGROUND_CWD": None,
        "CLAUDE_CODE_EXPERIMENTAL_AGENT_TEAMS": None,
    }
    assert {name: SETTINGS_BY_NAME[name].default for name in expected} == expected
    assert SETTINGS_BY_NAME["LOG_LEVEL"].choices == (
        "debug",
        "info",
        "warning",
        "error",
        "critical",
    )
    assert {s.name for s in SETTINGS if s.secret} == {
        "SECRET_KEY",
        "API_TOKEN",
        "GITHUB_WEBHOOK_SECRET",
        "ANTHROPIC_API_KEY",
    }
    # Stops must finish before systemd's TimeoutStopSec=30.
    assert int(SETTINGS_BY_NAME["GUNICORN_GRACEFUL_TIMEOUT"].default) < 30


def test_env_example_is_rendered_from_the_declaration():
    committed = (BACKEND_DIR / ".env.example").read_text(encoding="utf-8")
    assert committed == settings.render_example(), (
        "regenerate: uv run python -m app.settings example > .env.example"
    )


def test_env_example_layout():
    text = settings.render_example()
    assert "cp .env.example .env" in text
    for section in settings.SECTIONS:
        assert f"\n# --- {section} ---\n" in text
    log_level = "# type: choice debug,info,warning,error,critical | default: info\n# LOG_LEVEL=info"
    assert f"\n{log_level}\n" in text
    assert "\n# type: string | no default | secret\n# SECRET_KEY=\n" in text
    # Every line is a comment or blank: copying the file changes nothing.
    assert all(not line or line.startswith("#") for line in text.splitlines())
    assert dotenv_values(stream=io.StringIO(text)) == {}


def test_cli_prints_the_example_and_checks_it():
    result = subprocess.run(
        [sys.executable, "-m", "app.settings", "example"],
        cwd=BACKEND_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == settings.render_example()
    subprocess.run(
        [sys.executable, "-m", "app.settings", "example", "--check"], cwd=BACKEND_DIR, check=True
    )


def test_cli_get_prints_one_effective_value_but_never_a_secret(tmp_path):
    env = clean_environment(
        GUNICORN_BIND="127.0.0.1:8123", SECRET_KEY="not-for-printing", PYTHONPATH=str(BACKEND_DIR)
    )
    got = subprocess.run(
        [sys.executable, "-m", "app.settings", "get", "GUNICORN_BIND"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert got.stdout == "127.0.0.1:8123\n"
    secret = subprocess.run(
        [sys.executable, "-m", "app.settings", "get", "SECRET_KEY"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert secret.returncode == 1 and "not-for-printing" not in secret.stdout + secret.stderr


def test_cli_check_reports_one_line(tmp_path):
    env = clean_environment(LOG_LEVEL="loud", PYTHONPATH=str(BACKEND_DIR))
    result = subprocess.run(
        [sys.executable, "-m", "app.settings", "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "agented: invalid configuration: LOG_LEVEL='loud' is not allowed: use one of "
        "debug, info, warning, error, critical"
    ]


# --- Validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "LOG_LEVEL",
            "loud",
            "LOG_LEVEL='loud' is not allowed: use one of debug, info, warning, error, critical",
        ),
        (
            "SSE_REPLAY_LIMIT",
            "-5",
            "SSE_REPLAY_LIMIT='-5' is not allowed: use a whole number from 0 to 100000",
        ),
        (
            "SSE_REPLAY_LIMIT",
            "abc",
            "SSE_REPLAY_LIMIT='abc' is not allowed: use a whole number from 0 to 100000",
        ),
        ("SSE_REPLAY_LIMIT", "1.5", "use a whole number"),
        ("GUNICORN_BIND", "localhost", "GUNICORN_BIND='localhost' is not allowed: use HOST:PORT"),
        ("GUNICORN_BIND", "0.0.0.0:99999", "use HOST:PORT"),
        ("GUNICORN_BIND", "300.1.1.1:80", "use HOST:PORT"),
        ("GUNICORN_BIND", "[::1:80", "use HOST:PORT"),
        ("GUNICORN_BIND", "fd://x", "use HOST:PORT"),
        ("GUNICORN_BIND", "unix:", "use HOST:PORT"),
        ("GUNICORN_CONTROL_SOCKET", "run/gunicorn.ctl", "off, or an absolute path"),
        ("CORS_ALLOWED_ORIGINS", "https://a.example.com/", "comma-separated list of origins"),
        ("CORS_ALLOWED_ORIGINS", "*,https://a.example.com", "comma-separated list of origins"),
        ("ANTHROPIC_API_BASE", "ftp://example.com", "http:// or https://"),
        ("TZ", "Mars/Olympus_Mons", "time zone name"),
        ("CLAUDE_CODE_EXPERIMENTAL_AGENT_TEAMS", "yes", "use one of 0, 1"),
        ("GUNICORN_WORKERS", "0", "from 1 to 64"),
        ("METRICS_ALLOWED_IPS", "127.0.0.1,localhost", "list of IP addresses and networks"),
        ("METRICS_ALLOWED_IPS", "10.0.0.0/33", "list of IP addresses and networks"),
    ],
)
def test_invalid_values_are_one_line_naming_variable_value_and_rule(name, value, message):
    problem = settings.check(SETTINGS_BY_NAME[name], value)
    assert problem is not None
    assert message in problem
    assert "\n" not in problem


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GUNICORN_BIND", "127.0.0.1:20000"),
        ("GUNICORN_BIND", "[::1]:20000"),
        ("GUNICORN_BIND", "localhost:8000"),
        ("GUNICORN_BIND", "unix:/run/agented.sock"),
        ("GUNICORN_BIND", "fd://3"),
        ("GUNICORN_CONTROL_SOCKET", "off"),
        ("CORS_ALLOWED_ORIGINS", "http://localhost:5173"),
        ("TZ", "UTC"),
        ("SSE_REPLAY_LIMIT", "0"),
        ("LOG_LEVEL", ""),
        ("METRICS_ALLOWED_IPS", "127.0.0.1, ::1,10.0.0.0/8"),
        ("METRICS_ALLOWED_IPS", ""),
    ],
)
def test_valid_values(name, value):
    assert settings.check(SETTINGS_BY_NAME[name], value) is None


@pytest.mark.parametrize(
    ("value", "bind", "address", "local_url"),
    [
        (
            "0.0.0.0:20000",
            Bind("tcp", host="0.0.0.0", port=20000),
            "0.0.0.0:20000",
            "http://127.0.0.1:20000",
        ),
        ("127.0.0.1:8000", Bind("tcp", host="127.0.0.1", port=8000), None, "http://127.0.0.1:8000"),
        ("[::]:8080", Bind("tcp", host="::", port=8080), "[::]:8080", "http://[::1]:8080"),
        ("[::1]:8080", Bind("tcp", host="::1", port=8080), "[::1]:8080", "http://[::1]:8080"),
        (
            "[2001:db8::7]:443",
            Bind("tcp", host="2001:db8::7", port=443),
            "[2001:db8::7]:443",
            "http://[2001:db8::7]:443",
        ),
        ("localhost:80", Bind("tcp", host="localhost", port=80), "localhost:80", None),
        ("unix:/run/agented.sock", Bind("unix", path="/run/agented.sock"), "/run/agented.sock", ""),
        ("unix:///run/agented.sock", Bind("unix", path="/run/agented.sock"), None, ""),
        ("fd://3", Bind("fd", fd=3), "", ""),
    ],
)
def test_parse_bind(value, bind, address, local_url):
    """None: not asserted; "": refused with one line naming GUNICORN_BIND."""
    assert settings.parse_bind(value) == bind
    for attribute, expected in (("address", address), ("local_url", local_url)):
        if expected == "":
            with pytest.raises(SettingsError, match=r"^GUNICORN_BIND='.*'") as raised:
                getattr(bind, attribute)
            assert "\n" not in str(raised.value)
        elif expected is not None:
            assert getattr(bind, attribute) == expected


@pytest.mark.parametrize(
    "value", ["localhost", "0.0.0.0:99999", "300.1.1.1:80", "[::1:80", "fd://x", "unix:", ""]
)
def test_parse_bind_refuses_in_one_line(value):
    with pytest.raises(SettingsError) as raised:
        settings.parse_bind(value)
    assert str(raised.value) == (
        f"GUNICORN_BIND={value!r} is not allowed: use HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"
    )
    assert (
        str(raised.value) == settings.check(SETTINGS_BY_NAME["GUNICORN_BIND"], value) or not value
    )


def test_parse_bind_refuses_line_breaks_and_nul():
    for value in ("unix:/run/a\nb.sock", "unix:/run/a\rb", "unix:/run/a\0b"):
        with pytest.raises(SettingsError, match="is not allowed"):
            settings.parse_bind(value)


def test_run_py_takes_tcp_binds_only():
    run = runpy.run_path(str(BACKEND_DIR / "run.py"))
    assert run["tcp_address"]("[::1]:8000") == ("::1", 8000)
    assert run["tcp_address"]("localhost:8000") == ("localhost", 8000)
    for bind in ("unix:/run/agented.sock", "fd://3"):
        with pytest.raises(SettingsError, match=r"not allowed for run\.py"):
            run["tcp_address"](bind)


@pytest.mark.parametrize(
    ("bind", "output", "returncode"),
    [
        ("0.0.0.0:20000", "http://127.0.0.1:20000\n", 0),
        ("[::]:20001", "http://[::1]:20001\n", 0),
        ("unix:/run/agented.sock", "", 1),
        ("fd://3", "", 1),
    ],
)
def test_cli_local_url(tmp_path, bind, output, returncode):
    result = subprocess.run(
        [sys.executable, "-m", "app.settings", "local-url"],
        cwd=tmp_path,
        env=clean_environment(GUNICORN_BIND=bind, PYTHONPATH=str(BACKEND_DIR)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout) == (returncode, output)
    if returncode:
        assert result.stderr.splitlines() == [
            f"agented: GUNICORN_BIND={bind!r} has no http:// URL: use HOST:PORT or [IPv6]:PORT"
        ]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.name)
def test_line_breaks_are_refused_everywhere(setting):
    for value in ("a\nb", "a\rb", "trailing\n"):
        problem = settings.check(setting, value)
        assert problem is not None and "line break" in problem


def test_secret_values_are_not_echoed():
    problem = settings.check(SETTINGS_BY_NAME["GITHUB_WEBHOOK_SECRET"], "hunter2\nx")
    assert problem is not None
    assert "hunter2" not in problem and "GITHUB_WEBHOOK_SECRET=<hidden>" in problem


def test_load_reports_every_bad_variable_on_one_line():
    with pytest.raises(SettingsError) as raised:
        settings.load(environ={"LOG_LEVEL": "loud", "SSE_REPLAY_LIMIT": "-5"}, env_file=None)
    message = str(raised.value)
    assert "\n" not in message
    assert "LOG_LEVEL='loud'" in message and "SSE_REPLAY_LIMIT='-5'" in message


def test_declarations_are_validated():
    with pytest.raises(ValueError, match="the default is invalid"):
        Setting("X_LEVEL", "Server", "choice", "loud", "A level.", choices=("low", "high"))
    with pytest.raises(ValueError, match="a secret has no default"):
        Setting("X_TOKEN", "Security", "string", "abc", "A token.", secret=True)
    with pytest.raises(ValueError, match="unknown section"):
        Setting("X", "Nowhere", "string", None, "X.")


# --- Loading ----------------------------------------------------------------------------------


def test_defaults_when_nothing_is_set():
    values = settings.load(environ={}, env_file=None)
    assert values["GUNICORN_BIND"] == "0.0.0.0:20000"
    assert values["SSE_REPLAY_LIMIT"] == 500
    assert values["CORS_ALLOWED_ORIGINS"] is None
    assert values["AGENTED_DB_PATH"] == str(BACKEND_DIR / "agented.db")
    assert values["SECRET_KEY"] is None
    assert values["CLAUDE_CODE_EXPERIMENTAL_AGENT_TEAMS"] is None


def test_environment_wins_over_env_file_and_empty_means_unset(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "LOG_LEVEL=debug\nSSE_REPLAY_LIMIT=7\nSSE_HEARTBEAT_SECS=\nGUNICORN_WORKERS=5\n"
    )
    values = settings.load(
        environ={"LOG_LEVEL": "error", "SSE_REPLAY_LIMIT": "", "GUNICORN_WORKERS": "4"},
        env_file=env_file,
    )
    assert values["LOG_LEVEL"] == "error"  # environment wins
    assert values["SSE_REPLAY_LIMIT"] == 7  # empty in the environment: the file applies
    assert values["SSE_HEARTBEAT_SECS"] == 15  # empty in the file: the default applies
    assert values["GUNICORN_WORKERS"] == 4


def test_env_file_values_are_literal_and_the_environment_is_not_modified(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("GITHUB_WEBHOOK_SECRET='a $HOME b#c = \\'d\\''\nLOG_LEVEL=debug\n")
    before = dict(os.environ)
    values = settings.load(environ={}, env_file=env_file)
    assert values["GITHUB_WEBHOOK_SECRET"] == "a $HOME b#c = 'd'"
    assert dict(os.environ) == before


def test_unknown_names_in_env_file_are_reported_with_a_suggestion(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("LOG_LEVL=debug\nCOMPLETELY_UNRELATED=1\n")
    assert settings.unknown_names(env_file) == [
        "LOG_LEVL (did you mean LOG_LEVEL?)",
        "COMPLETELY_UNRELATED",
    ]


@given(
    st.text().filter(
        lambda value: settings.check(SETTINGS_BY_NAME["ANTHROPIC_API_KEY"], value) is None
    )
)
def test_dotenv_quote_round_trips_through_python_dotenv(value):
    quoted = settings.dotenv_quote(value)
    line = f"ANTHROPIC_API_KEY={quoted}\n"
    assert dotenv_values(stream=io.StringIO(line), interpolate=False) == {
        "ANTHROPIC_API_KEY": value
    }
    assert settings.dotenv_unquote(quoted) == value


def test_dotenv_quote_examples(tmp_path):
    values = [
        "with space",
        "hash # not a comment",
        "it's",
        'say "hi"',
        "$HOME",
        "a=b",
        "back\\slash",
    ]
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"SECRET_KEY={settings.dotenv_quote(v)}\n" for v in values[:1]))
    for example in values:
        value = f"{example} -- as long as a secret must be"
        env_file.write_text(f"SECRET_KEY={settings.dotenv_quote(value)}\n")
        assert settings.load(environ={}, env_file=env_file)["SECRET_KEY"] == value
    with pytest.raises(ValueError, match="line break"):
        settings.dotenv_quote("a\nb")


# --- The code reads only what is declared, and uses all of it ---------------------------------

_ENVIRONMENT_CALLS = {
    "get",
    "getenv",
    "getenvb",
    "setdefault",
    "pop",
    "setenv",
    "delenv",
    "putenv",
    "unsetenv",
}


def environment_names(source: str) -> set[str]:
    """Names of environment variables that ``source`` reads or writes with a literal name:
    through os.environ (or environ imported from os), os.getenv and the like, or
    monkeypatch.setenv/delenv in tests."""
    tree = ast.parse(source)
    aliases = {"os.environ", "os.environb", "os", "monkeypatch"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            aliases |= {
                alias.asname or alias.name
                for alias in node.names
                if alias.name in ("environ", "environb", "getenv")
            }

    def is_environment(expression: ast.expr) -> bool:
        return ast.unparse(expression) in aliases

    names = set()
    for node in ast.walk(tree):
        literal = None
        if (
            isinstance(node, ast.Call)
            and node.args
            and (
                (
                    isinstance(node.func, ast.Attribute)
                    and node.func.attr in _ENVIRONMENT_CALLS
                    and is_environment(node.func.value)
                )
                or (isinstance(node.func, ast.Name) and is_environment(node.func))
            )
        ):
            literal = node.args[0]
        elif isinstance(node, ast.Subscript) and is_environment(node.value):
            literal = node.slice
        elif (
            isinstance(node, ast.Compare)
            and len(node.ops) == 1
            and isinstance(node.ops[0], ast.In | ast.NotIn)
            and is_environment(node.comparators[0])
        ):
            literal = node.left
        if isinstance(literal, ast.Constant) and isinstance(literal.value, str):
            names.add(literal.value)
    return names


def backend_sources() -> list[Path]:
    return sorted(
        path
        for path in BACKEND_DIR.rglob("*.py")
        if not any(part.startswith(".") for part in path.relative_to(BACKEND_DIR).parts)
    )


def test_the_scanner_finds_environment_reads():
    source = """
import os
from os import environ as env, getenv
a = os.environ.get("A_READ")
b = os.getenv("B_READ", "x")
c = os.environ["C_READ"]
d = "D_READ" in os.environ
e = env.get("E_READ")
f = getenv("F_READ")
monkeypatch.setenv("G_WRITTEN", "1")
config.get("NOT_ENVIRONMENT")
environment["NOT_ENVIRONMENT_EITHER"] = "x"
wsgi_environ["wsgi.input"] = None
"""
    assert environment_names(source) == {
        "A_READ",
        "B_READ",
        "C_READ",
        "D_READ",
        "E_READ",
        "F_READ",
        "G_WRITTEN",
    }


# Set by systemd for the service's main process, never by an operator: not configuration.
# PROMETHEUS_MULTIPROC_DIR is set by gunicorn.conf.py itself, for prometheus_client.
SERVICE_MANAGER_VARIABLES = {
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "RUNTIME_DIRECTORY",
    "PROMETHEUS_MULTIPROC_DIR",
}


def test_every_environment_variable_read_is_declared():
    sources = backend_sources()
    assert BACKEND_DIR / "gunicorn.conf.py" in sources
    assert BACKEND_DIR / "run.py" in sources
    undeclared = {
        f"{path.relative_to(BACKEND_DIR)}: {name}"
        for path in sources
        for name in environment_names(path.read_text(encoding="utf-8"))
        if name not in SETTINGS_BY_NAME and name not in SERVICE_MANAGER_VARIABLES
    }
    assert not undeclared, "declare these in app/settings/declarations.py"


def test_every_declared_variable_is_used_by_name_in_the_code():
    consumers = [
        BACKEND_DIR / "gunicorn.conf.py",
        BACKEND_DIR / "run.py",
        *sorted((BACKEND_DIR / "app").glob("*.py")),
    ]
    literals = set()
    for path in consumers:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                literals.add(node.value)
    assert sorted(set(SETTINGS_BY_NAME) - literals) == []


def test_non_default_values_cover_every_setting():
    assert set(NON_DEFAULTS) == set(SETTINGS_BY_NAME)
    for name, value in NON_DEFAULTS.items():
        if name != "AGENTED_DB_PATH":
            assert value != SETTINGS_BY_NAME[name].default, name
            assert settings.check(SETTINGS_BY_NAME[name], value) is None, name


def test_every_setting_takes_effect(tmp_path, monkeypatch, restore_timezone):
    environment = dict(NON_DEFAULTS, AGENTED_DB_PATH=str(tmp_path / "db" / "custom.db"))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    app = create_app(migrate=True)
    client = api_client(app)

    # Security, Database
    assert app.config["SECRET_KEY"] == NON_DEFAULTS["SECRET_KEY"]
    assert app.test_client().get("/api/config").status_code == 401
    authorization = {"Authorization": "Bearer " + NON_DEFAULTS["API_TOKEN"]}
    assert app.test_client().get("/api/config", headers=authorization).status_code == 200
    assert (tmp_path / "db" / "custom.db").exists()
    # Server: log level and time zone of the process
    assert app.logger.level == logging.WARNING
    assert time.tzname[0] == "JST"
    # CORS
    allowed = client.get("/api/config", headers={"Origin": "https://app.example.com"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    refused = client.get("/api/config", headers={"Origin": "https://elsewhere.example.com"})
    assert "Access-Control-Allow-Origin" not in refused.headers
    # GitHub: the secret verifies deliveries, the size limit refuses larger ones
    body, headers = delivery_request({"zen": "ok"}, secret=NON_DEFAULTS["GITHUB_WEBHOOK_SECRET"])
    assert client.post("/api/webhooks/github", data=body, headers=headers).status_code == 202
    body, headers = delivery_request(
        {"pad": "x" * 3000}, guid="big", secret=NON_DEFAULTS["GITHUB_WEBHOOK_SECRET"]
    )
    assert client.post("/api/webhooks/github", data=body, headers=headers).status_code == 413
    # AI/LLM, Plugins, Experimental: what an agent run gets
    agent_run = client.get("/api/config").get_json()["agent_run"]
    assert agent_run == {
        "environment": {
            "ANTHROPIC_API_KEY": "set",
            "ANTHROPIC_BASE_URL": "https://gateway.example.com/anthropic",
            "CLAUDE_PLUGIN_ROOT": str(BACKEND_DIR / "plugins"),
            "CLAUDE_CODE_EXPERIMENTAL_AGENT_TEAMS": "1",
            "TZ": "Asia/Tokyo",
        },
        "cwd": "/srv/playground",
    }
    # Tuning
    assert jobs.interval(app) == 12.0  # a tenth of the shortest stale threshold
    hub = app.extensions["agented_event_hub"]
    assert hub._poll_interval == 0.25
    for name in (
        "SSE_REPLAY_LIMIT",
        "SSE_HEARTBEAT_SECS",
        "STALE_CONVERSATION_THRESHOLD_SECS",
        "STALE_EXECUTION_THRESHOLD_SECS",
    ):
        assert app.config[name] == int(NON_DEFAULTS[name])
    # Everything is reported, secrets only as set
    reported = client.get("/api/config").get_json()["settings"]
    for name, value in NON_DEFAULTS.items():
        if SETTINGS_BY_NAME[name].secret:
            assert reported[name] == "set"
        elif name not in ("AGENTED_DB_PATH", "CLAUDE_PLUGIN_ROOT", "CORS_ALLOWED_ORIGINS"):
            assert str(reported[name]).lower() in (value.lower(), "true"), name

    # Server and Tuning: Gunicorn's own settings
    gunicorn_config = run_gunicorn_conf()
    assert gunicorn_config["bind"] == ["127.0.0.1:21000"]
    assert gunicorn_config["loglevel"] == "warning"
    assert gunicorn_config["control_socket"] == "/run/agented/gunicorn.ctl"
    assert gunicorn_config["workers"] == 3
    assert gunicorn_config["worker_connections"] == 2000
    assert gunicorn_config["timeout"] == 45
    assert gunicorn_config["graceful_timeout"] == 7
    assert gunicorn_config["keepalive"] == 4
    assert gunicorn_config["worker_class"] == "gevent"
    assert gunicorn_config["preload_app"] is False
    assert "user" not in gunicorn_config and "group" not in gunicorn_config


def test_control_socket_off_and_default(monkeypatch):
    monkeypatch.setenv("GUNICORN_CONTROL_SOCKET", "off")
    config = run_gunicorn_conf()
    assert config["control_socket_disable"] is True
    monkeypatch.setenv("GUNICORN_CONTROL_SOCKET", "")
    config = run_gunicorn_conf()
    assert "control_socket" not in config and "control_socket_disable" not in config


def test_gunicorn_conf_does_not_import_the_app_package(tmp_path):
    """Neither loading the configuration nor migrating in on_starting leaves an app module,
    or Flask, in the master."""
    path = tmp_path / "state" / "agented.db"
    code = (
        "import logging, runpy, sys, types; config = runpy.run_path('gunicorn.conf.py'); "
        "config['on_starting'](types.SimpleNamespace(log=logging.getLogger('test'))); "
        "print(sorted(m for m in sys.modules if m == 'app' or m.startswith(('app.', 'flask'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=BACKEND_DIR,
        env=clean_environment(AGENTED_DB_PATH=str(path)),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"
    connection = db.connect(str(path))
    try:
        assert db.schema_version(connection) == db.SCHEMA_VERSION
    finally:
        connection.close()


@pytest.mark.parametrize("value", [" ", "        ", "x", "short", " 1234567 "])
def test_blank_or_short_secrets_are_refused_without_showing_them(value):
    for name in ("SECRET_KEY", "API_TOKEN", "GITHUB_WEBHOOK_SECRET"):
        problem = settings.check(SETTINGS_BY_NAME[name], value)
        assert problem is not None and "at least 8 characters" in problem, (name, problem)
        assert repr(value) not in problem


def test_a_secret_of_eight_characters_is_accepted():
    assert settings.check(SETTINGS_BY_NAME["GITHUB_WEBHOOK_SECRET"], "8 chars!") is None


def test_a_5000_digit_number_is_refused_not_raised():
    problem = settings.check(SETTINGS_BY_NAME["GUNICORN_WORKERS"], "9" * 5000)
    assert problem is not None and problem.startswith("GUNICORN_WORKERS=")


def test_an_unparsable_env_line_is_an_error_that_does_not_show_the_line(tmp_path):
    env = tmp_path / ".env"
    env.write_text("LOG_LEVEL=debug\nGITHUB_WEBHOOK_SECRET='hunter2-unterminated\nTZ=UTC\n")
    with pytest.raises(SettingsError, match="cannot parse line 2") as raised:
        settings.read_env_file(env)
    assert "hunter2" not in str(raised.value)


def test_check_command_fails_on_an_unparsable_env_line(tmp_path):
    env = tmp_path / "backend"
    copy = backend_copy(env)
    with open(copy / ".env", "a") as stream:
        stream.write("this line is not an assignment\n")
    result = subprocess.run(
        [sys.executable, "-m", "app.settings", "check"],
        cwd=copy,
        env=clean_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and "cannot parse line" in result.stderr, result
