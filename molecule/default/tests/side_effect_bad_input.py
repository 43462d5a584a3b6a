"""Bad input fails the play before anything changes on a host, and says what is wrong.

Each case runs the real converge playbook against the converged hosts with one bad variable
(as --extra-vars), then checks the play failed with changed=0 on every host, the message names
the problem, and the hosts still serve with their old configuration: same .env bytes, same
master process, same release.
"""

import pytest

from conftest import (
    CONVERGE,
    ENV_FILE,
    SERVICE,
    ansible_playbook,
    current_release,
    env_with,
    file_digest,
    on_all,
    ready,
    show,
)

LEAKED = "molecule-leak-9e3d"

CASES = {
    "undocumented key": (
        {"agented_backend_env": env_with(LOG_LEVL="debug")},
        ["LOG_LEVL", "LOG_LEVEL"],  # the key, and the documented name it is closest to
    ),
    "LOG_LEVEL loud": (
        {"agented_backend_env": env_with(LOG_LEVEL="loud")},
        ["LOG_LEVEL", "loud"],
    ),
    "restart delay above 5": (
        {"agented_backend_restart_sec": 10},
        ["agented_backend_restart_sec"],
    ),
    "relative install path": (
        {"agented_backend_install_dir": "opt/agented/backend"},
        ["agented_backend_install_dir"],
    ),
    "newline in a value": (
        {"agented_backend_env": env_with(CLAUDE_PLUGIN_ROOT="/srv/plugins\nSECRET_KEY=injected")},
        ["CLAUDE_PLUGIN_ROOT"],
    ),
    "newline in a secret": (
        {"agented_backend_env": env_with(GITHUB_WEBHOOK_SECRET=f"{LEAKED}\nEXTRA=1")},
        ["GITHUB_WEBHOOK_SECRET"],
    ),
    # Each of these used to pass validation and change the host before failing, or be rendered
    # as something else than what was written.
    "boolean restart delay": (
        {"agented_backend_restart_sec": True},
        ["agented_backend_restart_sec", "use a whole number"],
    ),
    "unit line injected through the user name": (
        {"agented_backend_user": "agented\nExecStartPre=/bin/true"},
        ["agented_backend_user", "user or group name"],
    ),
    "unit line injected through a directory": (
        {"agented_backend_state_dir": "/var/lib/agented\nExecStartPre=/bin/true"},
        ["agented_backend_state_dir", "absolute path"],
    ),
    "host name with socket activation": (
        {"agented_backend_env": env_with(GUNICORN_BIND="localhost:20000")},
        ["GUNICORN_BIND", "use an IP address"],
    ),
    "standby without socket activation": (
        {"agented_backend_standby": True, "agented_backend_socket_activation": False},
        ["agented_backend_standby", "agented_backend_socket_activation"],
    ),
    "relative database path": (
        {"agented_backend_env": env_with(AGENTED_DB_PATH="data/agented.db")},
        ["AGENTED_DB_PATH", "absolute path"],
    ),
    "graceful timeout beyond the stop timeout": (
        {"agented_backend_env": env_with(GUNICORN_GRACEFUL_TIMEOUT=45)},
        ["GUNICORN_GRACEFUL_TIMEOUT", "stop timeout"],
    ),
    "unquoted version number": (
        {"agented_backend_uv_version": 1.10},
        ["agented_backend_uv_version", "quote it"],
    ),
    "unquoted number as a secret": (
        {"agented_backend_env": env_with(ANTHROPIC_API_KEY=1.10)},
        ["ANTHROPIC_API_KEY", "quote it"],
    ),
    "unquoted off": (
        {"agented_backend_env": env_with(GUNICORN_CONTROL_SOCKET=False)},
        ["GUNICORN_CONTROL_SOCKET", "quote it"],
    ),
    "no snapshot kept": (
        {"agented_backend_backups_keep": 0},
        ["agented_backend_backups_keep", "1 or more"],
    ),
    "a path as the snapshot to restore": (
        {"agented_backend_restore": "../agented.db"},
        ["agented_backend_restore", "not a path"],
    ),
}


def _state(host):
    return {
        "env": file_digest(host, ENV_FILE),
        "master": show(host, SERVICE, "MainPID")["MainPID"],
        "release": current_release(host),
    }


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_before_any_change(all_hosts, case):
    extra_vars, named = CASES[case]
    before = on_all(all_hosts, _state)
    run = ansible_playbook(CONVERGE, extra_vars=extra_vars)

    assert run.rc != 0, f"the play accepted {case}:\n{run}"
    for name in all_hosts:
        assert name in run.recap, f"{name} missing from the recap:\n{run}"
        assert run.recap[name]["changed"] == 0, f"{name} changed before failing:\n{run}"
        assert run.recap[name]["failed"] >= 1, f"{name} did not fail:\n{run}"
    for word in named:
        assert word in run.output, f"the failure does not name {word!r}:\n{run}"
    if "newline" in case:
        assert "line break" in run.output or "newline" in run.output, f"no reason given:\n{run}"
    assert LEAKED not in run.output, f"a secret value was printed:\n{run}"
    assert "Traceback (most recent call last)" not in run.output, (
        f"a traceback, not a message:\n{run}"
    )

    after = on_all(all_hosts, _state)
    assert after == before, f"a host changed: {before} -> {after}"
    assert all(on_all(all_hosts, ready).values()), "a host stopped serving"
