"""--tags and --skip-tags select what the README says, and a selective run still deploys all of it.

A changed unit setting shows whether the tasks that install the units ran: tags on a dynamic
include never reach the included tasks, which is how `--tags agented_backend` used to skip them.
"""

from conftest import (
    CONVERGE,
    SERVICE,
    ansible_playbook,
    current_release,
    env_with,
    on_all,
    show,
    wait_ready,
)


def restart_delay(host) -> str:
    return show(host, SERVICE, "RestartUSec")["RestartUSec"]


def main_pid(host) -> str:
    return show(host, SERVICE, "MainPID")["MainPID"]


def test_tags_agented_backend_runs_the_whole_role(all_hosts):
    before = on_all(all_hosts, main_pid)
    run = ansible_playbook(
        CONVERGE, "--tags", "agented_backend", extra_vars={"agented_backend_restart_sec": 2}
    )
    assert run.rc == 0, str(run)
    assert on_all(all_hosts, restart_delay) == dict.fromkeys(all_hosts, "2s"), str(run)
    after = on_all(all_hosts, main_pid)
    assert all(after[name] != before[name] for name in all_hosts), (
        "the changed unit did not restart"
    )
    assert all(ready["ready"] for ready in on_all(all_hosts, wait_ready).values())


def test_skip_tags_validate_deploys_without_the_checks(all_hosts):
    run = ansible_playbook(CONVERGE, "--skip-tags", "agented_backend_validate")
    assert run.rc == 0, str(run)
    for check in ("Check the role's variables", "Check agented_backend_env"):
        assert check not in run.output, f"{check!r} ran under --skip-tags"
    assert on_all(all_hosts, restart_delay) == dict.fromkeys(all_hosts, "3s"), str(run)
    assert all(ready["ready"] for ready in on_all(all_hosts, wait_ready).values())


def test_tags_validate_alone_checks_and_changes_nothing(all_hosts):
    releases, pids = on_all(all_hosts, current_release), on_all(all_hosts, main_pid)
    good = ansible_playbook(CONVERGE, "--tags", "agented_backend_validate")
    assert good.rc == 0, str(good)
    assert all(good.changed(name) == 0 for name in all_hosts), str(good)
    bad = ansible_playbook(
        CONVERGE,
        "--tags",
        "agented_backend_validate",
        extra_vars={"agented_backend_env": env_with(LOG_LEVEL="loud")},
    )
    assert bad.rc != 0, str(bad)
    assert "LOG_LEVEL='loud' is not allowed" in bad.output, str(bad)
    assert on_all(all_hosts, current_release) == releases
    assert on_all(all_hosts, main_pid) == pids
