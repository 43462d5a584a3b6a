"""What a converged host looks like: account, files and permissions, unit, processes, sandbox."""

import re

import pytest

from conftest import (
    CONFIG_DIR,
    CURRENT,
    DOCUMENTED,
    ENV_FILE,
    GROUP,
    PORT,
    RELEASES_DIR,
    RESTART_PROMISE,
    SECRET_KEY_FILE,
    SERVICE,
    SOCKET,
    STANDBY,
    STATE_DIR,
    USER,
    VENV,
    figure,
    name_of,
    seconds,
    sh,
    show,
    wait_ready,
)

MAX_EXPOSURE = 1.5
# The two Gunicorn instances on the socket.
INSTANCES = [SERVICE, STANDBY]


# --- the service account -----------------------------------------------------------------------


def test_service_account_is_a_system_account_without_login(host):
    user = host.user(USER)
    assert user.exists
    assert user.group == GROUP
    assert host.group(GROUP).exists
    sys_uid_max = int(
        sh(host, "awk '$1 == \"SYS_UID_MAX\" {print $2}' /etc/login.defs").strip() or 999
    )
    assert user.uid <= sys_uid_max, f"uid {user.uid} is not a system uid (<= {sys_uid_max})"
    assert user.shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false")
    assert user.home == STATE_DIR
    assert sh(host, f"passwd --status {USER}").split()[1] in ("L", "NP"), (
        "the account has a password"
    )


# --- files and permissions ---------------------------------------------------------------------


def test_release_holds_a_venv_with_gunicorn_and_gevent(host):
    assert host.file(CURRENT).is_symlink
    assert sh(host, f"readlink -f {CURRENT}").strip().startswith(RELEASES_DIR + "/")
    assert host.file(f"{VENV}/bin/gunicorn").is_file
    sh(host, f"{VENV}/bin/python -c 'import gunicorn, gevent, flask, dotenv'")


def test_env_file_is_readable_by_the_service_only_and_writable_by_root_only(host):
    env = host.file(ENV_FILE)
    assert env.is_file and not env.is_symlink
    assert (env.user, env.group) == ("root", GROUP)
    assert env.mode & 0o007 == 0, f"{ENV_FILE} is open to other users: {env.mode:04o}"
    assert env.mode & 0o022 == 0, f"{ENV_FILE} is writable by its group: {env.mode:04o}"
    # What the modes mean for real users, checked as those users.
    assert host.run(f"runuser -u {USER} -- cat {ENV_FILE}").rc == 0
    assert host.run(f"runuser -u {USER} -- sh -c ': >> {ENV_FILE}'").rc != 0
    assert host.run(f"runuser -u nobody -- cat {ENV_FILE}").rc != 0
    config_dir = host.file(CONFIG_DIR)
    assert (config_dir.user, config_dir.group) == ("root", GROUP)
    assert config_dir.mode & 0o027 == 0, f"{CONFIG_DIR}: {config_dir.mode:04o}"
    # The release reads it as its .env (one parser: python-dotenv in the service).
    assert sh(host, f"readlink -f {CURRENT}/.env").strip() == ENV_FILE


def test_env_file_has_every_documented_variable(host):
    # Set ones as NAME=value; unset ones without a default may stay commented out ("# TZ="),
    # as in .env.example: either way a reader of the host's .env sees every variable.
    names = set(
        re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", sh(host, f"cat {ENV_FILE}"), re.MULTILINE)
    )
    missing = [name for name in DOCUMENTED if name not in names]
    assert not missing, f"{ENV_FILE} lacks {missing}"
    undocumented = sorted(names - set(DOCUMENTED))
    assert not undocumented, f"{ENV_FILE} sets undocumented {undocumented}"


def test_releases_are_not_writable_by_the_service(host):
    writable = sh(
        host, f"runuser -u {USER} -- find {RELEASES_DIR}/ -writable -print -quit", check=False
    )
    assert writable.strip() == "", f"the service user can write {writable.strip()}"
    for path in (RELEASES_DIR, CURRENT + "/", VENV + "/"):
        f = host.file(path)
        assert f.user == "root" and f.mode & 0o022 == 0, f"{path}: {f.user} {f.mode:04o}"


def test_state_directory_is_private_to_the_service(host):
    state = host.file(STATE_DIR)
    assert (state.user, state.group) == (USER, GROUP)
    assert state.mode & 0o077 == 0, f"{STATE_DIR}: {state.mode:04o}"
    assert host.run(f"runuser -u nobody -- ls {STATE_DIR}").rc != 0
    for name in sh(host, f"ls -A {STATE_DIR}").split():
        f = host.file(f"{STATE_DIR}/{name}")
        if name == "deploys.jsonl":
            # The deploy history is root's: the service reads it and cannot rewrite it.
            assert (f.user, f.mode & 0o022) == ("root", 0), f"{STATE_DIR}/{name}: {f.mode:04o}"
            continue
        assert f.user == USER, (
            f"{STATE_DIR}/{name} belongs to {f.user}: the service cannot manage it"
        )
    key = host.file(SECRET_KEY_FILE)
    if key.exists:
        assert key.mode & 0o077 == 0, f"{SECRET_KEY_FILE}: {key.mode:04o}"


# --- the unit as systemd runs it ---------------------------------------------------------------


@pytest.mark.parametrize("unit", INSTANCES)
def test_service_is_enabled_and_active(host, unit):
    service = host.service(unit)
    assert service.is_enabled
    assert service.is_running
    props = show(host, unit, "ActiveState", "SubState", "UnitFileState")
    assert props == {"ActiveState": "active", "SubState": "running", "UnitFileState": "enabled"}


def test_unit_restarts_on_failure_within_the_promise(host):
    p = show(
        host,
        SERVICE,
        "Type",
        "Restart",
        "RestartUSec",
        "RestartForceExitStatus",
        "KillMode",
        "TimeoutStopUSec",
        "User",
        "Group",
        "WorkingDirectory",
        "ExecStart",
        "ExecReload",
        "StartLimitBurst",
        "StartLimitIntervalUSec",
    )
    assert p["Type"] == "notify"
    assert p["Restart"] == "on-failure"
    assert seconds(p["RestartUSec"]) <= RESTART_PROMISE, p["RestartUSec"]
    # Gunicorn exits 0 on SIGTERM: without this a plain `kill <master>` would not restart it.
    assert "0" in p["RestartForceExitStatus"].split(), p["RestartForceExitStatus"]
    assert p["KillMode"] == "control-group"
    assert seconds(p["TimeoutStopUSec"]) == 30
    assert (p["User"], p["Group"]) == (USER, GROUP)
    assert p["WorkingDirectory"] == CURRENT
    assert f"path={VENV}/bin/gunicorn" in p["ExecStart"]
    assert "argv[]=" + f"{VENV}/bin/gunicorn -c gunicorn.conf.py" in p["ExecStart"]
    assert "kill -s HUP" in p["ExecReload"] or "kill -HUP" in p["ExecReload"], p["ExecReload"]
    # Crash loops end (issue: a release that crashes at start must not spin forever).
    assert 0 < int(p["StartLimitBurst"]) <= 20, p["StartLimitBurst"]
    assert 0 < seconds(p["StartLimitIntervalUSec"]) < float("inf"), p["StartLimitIntervalUSec"]


def test_unit_bounds_memory_and_tasks_and_watches_the_master(host):
    p = show(host, SERVICE, "MemoryMax", "TasksMax", "WatchdogUSec")
    assert p["MemoryMax"] == str(1024**3), p
    assert p["TasksMax"] == "512", p
    assert 0 < seconds(p["WatchdogUSec"]) <= 30, p


def test_socket_owns_the_port(host):
    p = show(host, SOCKET, "ActiveState", "UnitFileState", "Listen")
    assert p["ActiveState"] == "active" and p["UnitFileState"] == "enabled", p
    assert f":{PORT} (Stream)" in p["Listen"], p["Listen"]


def test_gunicorn_master_and_gevent_workers_run_as_the_service_user(host):
    master = int(show(host, SERVICE, "MainPID")["MainPID"])
    assert master > 0
    ps = sh(host, f"ps -o user=,pid=,ppid=,args= --ppid {master} --pid {master}")
    rows = [line.split(None, 3) for line in ps.splitlines()]
    assert len(rows) >= 2, f"no workers under master {master}:\n{ps}"
    for user, pid, _ppid, args in rows:
        assert user == USER, f"{pid} runs as {user}: {args}"
        assert "gunicorn" in args, args
    workers = [int(pid) for _, pid, ppid, _ in rows if int(ppid) == master]
    assert workers, ps
    for pid in workers:
        # The gevent worker has gevent's C extensions mapped.
        assert host.run(f"grep -q gevent /proc/{pid}/maps").rc == 0, f"worker {pid} is not gevent"
    # Gunicorn must not switch users itself under systemd.
    assert sh(host, f"ps -o user= -p {master}").strip() == USER


def test_readiness_answers_200_inside_the_host(host):
    assert wait_ready(host, 10)["ready"]


@pytest.mark.parametrize("unit", INSTANCES)
def test_sandbox_exposure_is_low(host, unit):
    out = sh(host, f"systemd-analyze security --no-pager {unit}")
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", out).group(1))
    figure(
        "exposure score (systemd-analyze security)",
        unit,
        name_of(host),
        f"{score:.1f}",
    )
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}:\n{out}"


@pytest.mark.parametrize("path", [*INSTANCES, "agented.socket"])
def test_installed_units_pass_systemd_analyze_verify(host, path):
    result = host.run(f"systemd-analyze verify /etc/systemd/system/{path}")
    assert result.rc == 0, result.stderr
