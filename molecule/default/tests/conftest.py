"""Shared helpers of the testinfra suites: host layout, in-host checks, ansible-playbook runs,
figures.

test_*.py only read the hosts: molecule's verify step runs them (molecule exports
MOLECULE_INVENTORY_FILE, ANSIBLE_CONFIG, MOLECULE_PROJECT_DIRECTORY, ... and passes
--connection=ansible and --ansible-inventory). side_effect_*.py change the hosts and check what
follows: molecule's side_effect steps run them, one playbook each (../side_effects/), with the
same options. Tests that run ansible-playbook use the same inventory, so they target exactly
the converged hosts with the group variables in ../group_vars/.

Measured figures (restart seconds, exposure scores, ...) are printed when measured and again in
a table at the end of the run, so a CI log shows them.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

import pytest
import testinfra
import yaml

SCENARIO_DIR = Path(__file__).resolve().parents[1]
PROJECT_DIR = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", SCENARIO_DIR.parents[1]))
sys.path.insert(0, str(PROJECT_DIR / "molecule" / "harness"))
import harness  # noqa: E402 -- found through the line above

GROUP_VARS = yaml.safe_load((SCENARIO_DIR / "group_vars" / "agented.yml").read_text())

# The host layout the role produces with its defaults (README, "Host layout").
SERVICE = "agented.service"
SOCKET = "agented.socket"
# The second instance, on by default (agented_backend_standby).
STANDBY = "agented-standby.service"
USER = GROUP = "agented"
INSTALL_DIR = "/opt/agented/backend"
RELEASES_DIR = f"{INSTALL_DIR}/releases"
CURRENT = f"{INSTALL_DIR}/current"
VENV = f"{CURRENT}/.venv"
CONFIG_DIR = "/etc/agented"
ENV_FILE = f"{CONFIG_DIR}/agented.env"
STATE_DIR = "/var/lib/agented"
DATABASE = f"{STATE_DIR}/agented.db"
SECRET_KEY_FILE = f"{STATE_DIR}/.secret_key"
PORT = 20000
URL = f"http://127.0.0.1:{PORT}"
RESTART_PROMISE = 5.0  # seconds from a crash to serving again

_FIGURES: dict[str, dict[str, str]] = collections.defaultdict(dict)


# --- the backend's declaration of its settings ----------------------------------------------


# The backend's app.settings imports only the standard library, as app/ itself does.
sys.path.insert(0, str(PROJECT_DIR / "backend"))
from app import settings as SETTINGS  # noqa: E402

DOCUMENTED = [setting.name for setting in SETTINGS.SETTINGS]
SECRETS = {setting.name for setting in SETTINGS.SETTINGS if setting.secret}


def webhook_secret() -> str:
    return GROUP_VARS["agented_backend_env"]["GITHUB_WEBHOOK_SECRET"]


# --- hosts ------------------------------------------------------------------------------------


def name_of(host) -> str:
    """The inventory name of a testinfra host, which is also its molecule instance (container)."""
    return host.backend.get_hostname()


@pytest.fixture(scope="session")
def all_hosts(request) -> dict:
    """Every host of the inventory, for steps that act on all of them at once."""
    option = request.config.option
    hosts = testinfra.get_hosts(
        [None],
        connection=option.connection,
        ansible_inventory=option.ansible_inventory,
        force_ansible=option.force_ansible,
    )
    return {name_of(host): host for host in hosts}


def on_all(hosts: dict, action) -> dict:
    """action(host) on every host at once (each in its own thread): {name: result}."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        futures = {name: pool.submit(action, host) for name, host in hosts.items()}
        return {name: future.result() for name, future in futures.items()}


def sh(host, command: str, *, check: bool = True) -> str:
    result = host.run(command)
    if check:
        assert result.rc == 0, f"{command!r} failed ({result.rc}): {result.stdout}{result.stderr}"
    return result.stdout


def in_host_checks(host, *args: str, user: str | None = None, env: dict | None = None) -> dict:
    """Run one subcommand of in_host_checks.py on the host and return the JSON object it prints."""
    variables = {"AGENTED_URL": URL, "AGENTED_DB": DATABASE, **(env or {})}
    result = host.run(harness.in_host_checks_command(*args, env=variables, user=user))
    assert result.rc == 0, f"in_host_checks {args} failed: {result.stdout}{result.stderr}"
    return harness.last_json_line(result.stdout)


LOAD_UNIT = "agented-molecule-load"
LOAD_OUT = "/root/agented-molecule-load.log"


@contextlib.contextmanager
def under_load(hosts: dict, rate: float = 20, path: str = "/health/liveness"):
    """Open-loop load inside every host on its own loopback while the block runs (in_host_checks.py
    load, in a transient unit): yields {name: result}, filled at the end of the block with the
    requests sent, the failed ones (not 2xx: how many, how many of each answer, and each as
    (sent, answer)) and the slowest answer in seconds."""
    results: dict[str, dict] = {}

    def start(host):
        # A load left behind by an interrupted run would hold the unit name.
        sh(
            host,
            f"systemctl stop {LOAD_UNIT}; systemctl reset-failed {LOAD_UNIT}; rm -f {LOAD_OUT}",
            check=False,
        )
        command = harness.in_host_checks_command(
            "load", LOAD_OUT, str(rate), path, env={"AGENTED_URL": URL}
        )
        sh(
            host,
            f"systemd-run --unit {LOAD_UNIT} --collect --quiet /bin/sh -c {shlex.quote(command)}",
        )

    def stop(host):
        sh(host, f"systemctl stop {LOAD_UNIT}", check=False)
        lines = [line.split() for line in sh(host, f"cat {LOAD_OUT}").splitlines() if line]
        failed = [
            (float(sent), answer) for sent, _done, answer in lines if not answer.startswith("2")
        ]
        return {
            "requests": len(lines),
            "failed": len(failed),
            "by_answer": dict(collections.Counter(answer for _, answer in failed)),
            "failures": failed,
            "slowest": max((float(done) - float(sent) for sent, done, _ in lines), default=0.0),
        }

    on_all(hosts, start)
    try:
        yield results
    finally:
        results.update(on_all(hosts, stop))


def show(host, unit: str, *properties: str) -> dict[str, str]:
    """Unit properties as systemd reports them (systemctl show), not as a file says."""
    out = sh(host, f"systemctl show {unit} --property={','.join(properties)}")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def unit_states(host) -> dict[str, str]:
    """ActiveState of the socket and both Gunicorn instances."""
    return {
        unit: show(host, unit, "ActiveState")["ActiveState"] for unit in (SOCKET, SERVICE, STANDBY)
    }


def standby_settled(host, wanted: str, timeout: float = 10.0) -> dict[str, str]:
    """The units' states once the standby is `wanted` (its stop and start follow agented's and the
    socket's), or as they are after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    found = unit_states(host)
    while found[STANDBY] != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
        found = unit_states(host)
    return found


_SPAN_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(span: str) -> float:
    """systemd's time span ("3s", "1min 30s", "2s 500ms", "infinity") in seconds."""
    if span == "infinity":
        return float("inf")
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)\s*([a-z]+)", span):
        total += float(number) * _SPAN_UNITS[unit]
    return total


def ready(host) -> bool:
    return in_host_checks(host, "wait-until-ready", "0.5")["ready"]


def wait_ready(host, timeout: float = 60.0) -> dict:
    return in_host_checks(host, "wait-until-ready", str(timeout))


def file_digest(host, path: str) -> str:
    return sh(host, f"sha256sum {path}").split()[0]


def read_env(host) -> dict[str, str]:
    """The host's .env as python-dotenv would parse it, using the release's own python-dotenv."""
    code = f"import json, dotenv; print(json.dumps(dotenv.dotenv_values({ENV_FILE!r})))"
    return json.loads(sh(host, f"{VENV}/bin/python -c {shlex.quote(code)}"))


def effective_secret_key(host) -> str:
    """SECRET_KEY from .env, else the generated key file the service falls back to."""
    key = read_env(host).get("SECRET_KEY") or ""
    if not key and host.file(SECRET_KEY_FILE).exists:
        key = sh(host, f"cat {SECRET_KEY_FILE}").strip()
    return key


def current_release(host) -> str:
    return sh(host, f"readlink -f {CURRENT}").strip()


def stored(host, *deliveries: str) -> dict:
    return in_host_checks(host, "find-deliveries", *deliveries, user=USER)


def post_webhook(host, delivery: str, secret: str | None = None) -> dict:
    env = {"WEBHOOK_SECRET": secret or webhook_secret()}
    return in_host_checks(host, "post-webhook", delivery, env=env)


# --- ansible-playbook against the converged hosts ---------------------------------------------


def ansible_playbook(
    playbook: str, *args: str, extra_vars: dict | None = None
) -> harness.PlaybookRun:
    """Run a playbook of the repo (or this scenario) with molecule's inventory and config."""
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not inventory:
        pytest.fail("MOLECULE_INVENTORY_FILE is not set: run the suite through molecule")
    # Both hosts at once, as in converge (the base config's ansible_playbook arguments).
    return harness.ansible_playbook(
        playbook,
        "--extra-vars",
        "agented_serial=100%",
        *args,
        inventory=inventory,
        extra_vars=extra_vars,
        timeout=900,
    )


CONVERGE = SCENARIO_DIR / "converge.yml"
ROLLBACK = PROJECT_DIR / "playbooks" / "rollback.yml"


def env_with(**changes) -> dict:
    """agented_backend_env of the group variables with some keys changed (None removes one)."""
    env = dict(GROUP_VARS["agented_backend_env"])
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


# --- figures ----------------------------------------------------------------------------------


def figure(table: str, row: str, column: str, value: str) -> None:
    """Print a measured figure now and keep it for the summary table at the end."""
    print(f"\n    {table}: {row} on {column}: {value}", flush=True)
    _FIGURES[table][(row, column)] = value


def pytest_terminal_summary(terminalreporter):
    for table, cells in _FIGURES.items():
        rows = list(dict.fromkeys(row for row, _ in cells))
        columns = sorted({column for _, column in cells})
        width = max(len(row) for row in rows) + 2
        cell = max(len(text) for text in [*columns, *cells.values()]) + 4
        terminalreporter.section(table)
        terminalreporter.write_line(" " * width + "".join(f"{c:>{cell}}" for c in columns))
        for row in rows:
            terminalreporter.write_line(
                f"{row:<{width}}" + "".join(f"{cells.get((row, c), '-'):>{cell}}" for c in columns)
            )
