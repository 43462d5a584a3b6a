"""The role's controller-side plugins, run against the real backend/ of this repository."""

import multiprocessing
import os
import re
import socket
import subprocess
import time

import pytest
import yaml
from agented_backend import (
    agented_backend_dotenv_quote,
    agented_backend_dotenv_read,
    agented_backend_env_errors,
    agented_backend_env_values,
    agented_backend_input_errors,
    agented_backend_listen,
    agented_backend_settings,
)
from agented_backend_release import copy, release
from ansible.errors import AnsibleFilterError, AnsibleLookupError
from dotenv import dotenv_values

from conftest import BACKEND, ROLE, ROOT

SRC = str(BACKEND)


def test_settings_are_the_backend_declarations_that_env_example_documents():
    names = [s["name"] for s in agented_backend_settings(SRC)]
    example = (BACKEND / ".env.example").read_text()
    documented = re.findall(r"^# type: .*\n# ([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE)
    assert names and names == documented
    assert {"SECRET_KEY", "API_TOKEN", "GITHUB_WEBHOOK_SECRET", "ANTHROPIC_API_KEY"} <= {
        s["name"] for s in agented_backend_settings(SRC) if s["secret"]
    }


def test_valid_env_has_no_errors():
    env = {
        "LOG_LEVEL": "warning",
        "SSE_REPLAY_LIMIT": 10,
        "CLAUDE_CODE_EXPERIMENTAL_AGENT_TEAMS": True,
    }
    assert agented_backend_env_errors(env, SRC) == []


def test_undocumented_key_is_named_with_the_closest_documented_one():
    (error,) = agented_backend_env_errors({"LOG_LEVL": "info"}, SRC)
    assert "LOG_LEVL" in error and "did you mean LOG_LEVEL?" in error


def test_bad_value_is_named_with_what_is_allowed():
    (error,) = agented_backend_env_errors({"LOG_LEVEL": "loud"}, SRC)
    assert "LOG_LEVEL" in error and "loud" in error and "warning" in error


def test_newline_is_refused():
    (error,) = agented_backend_env_errors({"ANTHROPIC_API_BASE": "https://a\nb"}, SRC)
    assert "ANTHROPIC_API_BASE" in error and "newline" in error


def test_errors_never_show_a_secret_value():
    errors = agented_backend_env_errors(
        {
            "GITHUB_WEBHOOK_SECRET": "hunter2-secret\nsecond line",
            "SECRET_KEY": ["zz-listed-secret"],
        },
        SRC,
    )
    assert len(errors) == 2
    assert not any("hunter2" in error or "zz-listed" in error for error in errors), errors


def test_values_layer_defaults_role_values_and_user_values():
    values = agented_backend_env_values(
        {"LOG_LEVEL": "debug"}, SRC, {"AGENTED_DB_PATH": "/var/lib/x.db"}
    )
    assert values["LOG_LEVEL"] == "debug"
    assert values["AGENTED_DB_PATH"] == "/var/lib/x.db"
    assert values["GUNICORN_BIND"] == "0.0.0.0:20000"
    assert values["SECRET_KEY"] is None


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "with spaces",
        "hash # here",
        "#start",
        "quotes ' and \"",
        "dollar $HOME ${HOME}",
        "a=b=c",
        "back\\slash\\'",
        "",
    ],
)
def test_quoting_reaches_python_dotenv_exactly(tmp_path, value):
    env = tmp_path / ".env"
    env.write_text(f"X={agented_backend_dotenv_quote(value, SRC)}\n")
    # The service reads .env without interpolation (app.settings), so $HOME stays literal.
    assert dotenv_values(env, interpolate=False)["X"] == value
    assert agented_backend_dotenv_read(env.read_text(), "X", SRC) == (value or None)


def test_listen_address_and_probe_url():
    assert agented_backend_listen("0.0.0.0:20000", SRC) == {
        "listen": "0.0.0.0:20000",
        "url": "http://127.0.0.1:20000",
        "port": 20000,
    }
    assert agented_backend_listen("[::]:8080", SRC)["url"] == "http://[::1]:8080"
    assert agented_backend_listen("[::1]:8080", SRC)["listen"] == "[::1]:8080"
    for unsupported in ("unix:/run/agented.sock", "fd://3", "localhost", ""):
        with pytest.raises(AnsibleFilterError, match="GUNICORN_BIND"):
            agented_backend_listen(unsupported, SRC)


@pytest.mark.parametrize(
    "separator", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
)
def test_dotenv_read_keeps_characters_that_splitlines_would_split_at(separator):
    value = f"before{separator}after"
    text = f"A=1\nSECRET_KEY={agented_backend_dotenv_quote(value, SRC)}\nB=2\n"
    assert agented_backend_dotenv_read(text, "SECRET_KEY", SRC) == value


def test_a_backend_copy_is_loaded_beside_the_real_one(tmp_path):
    copy(SRC, tmp_path / "backend")
    declarations = tmp_path / "backend" / "app" / "settings" / "declarations.py"
    declarations.write_text(declarations.read_text().replace('default="info"', 'default="warning"'))
    assert agented_backend_env_values({}, str(tmp_path / "backend"))["LOG_LEVEL"] == "warning"
    assert agented_backend_env_values({}, SRC)["LOG_LEVEL"] == "info"


def make_backend(path):
    for name in ("pyproject.toml", "uv.lock", "gunicorn.conf.py", ".env.example"):
        (path / name).write_text(name)
    for name in (
        "app/__init__.py",
        "app/__pycache__/x.pyc",
        ".venv/bin/python",
        "tests/test_x.py",
        ".env",
        "agented.db",
        "gunicorn.log",
    ):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(name)
    return path


def test_release_ships_source_only_and_its_id_follows_the_content(tmp_path):
    backend = make_backend(tmp_path)
    first = release(str(backend))
    assert sorted(first["files"]) == [
        ".env.example",
        "app/__init__.py",
        "gunicorn.conf.py",
        "pyproject.toml",
        "uv.lock",
    ]
    assert first["dirs"] == ["app"]
    (backend / ".venv/bin/python").write_text("changed")
    assert release(str(backend))["id"] == first["id"]
    (backend / "uv.lock").write_text("changed")
    assert release(str(backend))["id"] != first["id"]


def test_release_refuses_a_directory_that_is_not_a_backend(tmp_path):
    with pytest.raises(AnsibleLookupError, match=r"has no pyproject\.toml; point it at backend/"):
        release(str(tmp_path))


def test_copy_ships_exactly_the_release_files(tmp_path):
    (tmp_path / "src").mkdir()
    backend = make_backend(tmp_path / "src")
    copied = copy(str(backend), tmp_path / "copy")
    shipped = sorted(str(path.relative_to(copied)) for path in copied.rglob("*") if path.is_file())
    assert shipped == sorted(release(str(backend))["files"])
    assert release(str(copied))["id"] == release(str(backend))["id"]


OPTIONS = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"][
    "main"
]["options"]
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def test_the_defaults_fit_the_specs():
    plain = {name: value for name, value in DEFAULTS.items() if "{{" not in str(value)}
    assert agented_backend_input_errors(OPTIONS, plain) == []


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("agented_backend_restart_sec", True, "true (a YAML boolean): use a whole number"),
        ("agented_backend_restart_sec", "three", "use a whole number"),
        ("agented_backend_uv_version", 1.1, "1.1 (a YAML number) is not text: quote it"),
        ("agented_backend_user", 511, "quote it"),
        ("agented_backend_user", "agented\nExecStartPre=/bin/true", "user or group name"),
        ("agented_backend_group", "Agented Group", "user or group name"),
        ("agented_backend_state_dir", "var/lib/agented", "use an absolute path"),
        ("agented_backend_state_dir", "/var/lib/a\nExecStartPre=/bin/true", "absolute path"),
        ("agented_backend_install_dir", "/opt/a b", "absolute path"),
        ("agented_backend_config_dir", "/etc/%n", "absolute path"),
        ("agented_backend_socket_activation", "false", "use true or false"),
        ("agented_backend_service_state", "running", "use one of started, stopped"),
        ("agented_backend_memory_max", "1 GB", "such as 1G"),
        ("agented_backend_memory_max", "150%", "such as 1G"),
        ("agented_backend_env", ["LOG_LEVEL=info"], "use a mapping"),
    ],
)
def test_role_variables_of_the_wrong_type_or_form_are_refused(name, value, expected):
    (error,) = agented_backend_input_errors(OPTIONS, {name: value})
    assert error.startswith(name) and expected in error, error


def test_command_line_numbers_are_whole_numbers():
    assert agented_backend_input_errors(OPTIONS, {"agented_backend_restart_sec": "2"}) == []


@pytest.mark.parametrize("value", ["1G", "512M", "1073741824", "50%", "infinity"])
def test_memory_limits_systemd_takes(value):
    assert agented_backend_input_errors(OPTIONS, {"agented_backend_memory_max": value}) == []


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GUNICORN_CONTROL_SOCKET": False}, "false (a YAML boolean) is not text: quote it"),
        ({"LOG_LEVEL": 1}, "quote it"),
        ({"GITHUB_WEBHOOK_SECRET": 1.1}, "(secret) (a YAML number) is not text: quote it"),
        ({"SSE_REPLAY_LIMIT": True}, "quote it"),
        ({"AGENTED_DB_PATH": "data/agented.db"}, "use an absolute path"),
        ({"GUNICORN_GRACEFUL_TIMEOUT": 30}, "use at most 29"),
        ({"GUNICORN_BIND": "localhost:8080"}, "use an IP address"),
        ({"GUNICORN_WORKERS": "9" * 5000}, "agented_backend_env.GUNICORN_WORKERS: "),
        ({"GITHUB_WEBHOOK_SECRET": "short"}, "at least 8 characters"),
    ],
)
def test_env_values_the_role_cannot_render_faithfully_are_refused(env, expected):
    (error,) = agented_backend_env_errors(env, SRC, 30, True)
    assert expected in error, error


def test_numbers_and_flags_keep_their_yaml_types():
    env = {"SSE_REPLAY_LIMIT": 10, "CLAUDE_CODE_EXPERIMENTAL_AGENT_TEAMS": True}
    assert agented_backend_env_errors(env, SRC) == []
    assert agented_backend_env_errors({"GUNICORN_BIND": "localhost:8080"}, SRC, 30, False) == []


@pytest.mark.parametrize(
    "value",
    [
        "https://user:hunter2@gw.example.com:99999/",
        "ftp://user:hunter2@gw.example.com/",
        "https://gw.example.com/v1?api_key=hunter2 x",
        "https://user:hun/ter2@gw.example.com/",
        ["https://user:hunter2@gw.example.com/"],  # not a string: its repr is shown
        {"url": "https://gw.example.com/?token=hunter2"},
    ],
)
def test_errors_never_show_credentials_written_into_a_url(value):
    (error,) = agented_backend_env_errors({"ANTHROPIC_API_BASE": value}, SRC)
    assert error.startswith("agented_backend_env.ANTHROPIC_API_BASE: ")
    assert "hunter2" not in error
    assert "***" in error


def test_the_role_masks_with_the_backends_function():
    import agented_backend  # noqa: PLC0415 -- the role's own filter plugin

    settings = agented_backend._settings(SRC)
    assert settings.mask_url_credentials("https://u:p@h/?token=t") == "https://***@h/?token=***"


# --- the deploy lock and the controller it names ---------------------------------------------


def _ended_pid():
    process = subprocess.Popen(["/bin/true"])
    process.wait()
    return process.pid


def test_a_lock_holds_while_its_playbook_runs_and_is_stale_once_it_is_gone():
    from agented_backend_lock import agented_backend_lock_stale as stale  # noqa: PLC0415

    now = time.time()
    here = socket.gethostname()
    running = {"controller": here, "pid": os.getpid(), "epoch": now - 10}
    assert stale(running, 3600, now) == ""
    assert "is gone" in stale({**running, "pid": _ended_pid()}, 3600, now)
    # Another controller's pid means nothing here: only the age counts.
    assert stale({**running, "controller": "elsewhere", "pid": _ended_pid()}, 3600, now) == ""
    assert "3600 s" in stale({**running, "controller": "elsewhere", "epoch": now - 4000}, 3600, now)
    assert stale({}, 3600, now) == ""


def test_a_lock_file_is_read_as_its_record_or_as_unreadable():
    from agented_backend_lock import (  # noqa: PLC0415
        agented_backend_lock_read,
        agented_backend_lock_stale,
    )

    assert agented_backend_lock_read("") == {}
    assert agented_backend_lock_read('{"user": "alice"}\n') == {"user": "alice"}
    garbage = agented_backend_lock_read("not json")
    assert garbage == {"unreadable": "not json"}
    assert agented_backend_lock_stale(garbage, 3600, time.time())


def _controller_in_a_worker(directory, queue):
    from agented_backend_controller import controller  # noqa: PLC0415

    queue.put(controller(directory))


def test_the_controller_is_the_playbook_process_with_its_checkout_commit(tmp_path):
    from agented_backend_controller import controller  # noqa: PLC0415

    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    # Ansible evaluates lookups in workers it forks: the pid is that of their parent.
    queue = multiprocessing.get_context("fork").Queue()
    worker = multiprocessing.get_context("fork").Process(
        target=_controller_in_a_worker, args=(str(ROOT / "playbooks"), queue)
    )
    worker.start()
    seen = queue.get(timeout=30)
    worker.join()
    assert seen["pid"] == os.getpid()
    assert seen["commit"] == head
    assert seen["host"] == socket.gethostname()
    assert controller(str(tmp_path))["commit"] == ""
