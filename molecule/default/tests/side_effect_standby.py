"""agented_backend_standby, on by default: a second Gunicorn, agented-standby.service, serves from
the same socket, so when either master is SIGKILLed the other's workers answer at once while
systemd restarts the killed one. Then it is switched off and on again on the running hosts.

Each kill and each switch runs under open-loop load inside the host (50 requests/s on its
loopback); no request may fail. The kills are timed on the host (in_host_checks.py
time-takeover): from the SIGKILL to readiness 200 answered by a worker of the other master, and
to the killed unit serving again; the figures are printed. A `systemctl stop agented`, unlike a
crash, stops the standby too, and a start starts both."""

from conftest import (
    CONVERGE,
    SERVICE,
    SOCKET,
    STANDBY,
    ansible_playbook,
    figure,
    in_host_checks,
    on_all,
    sh,
    show,
    standby_settled,
    under_load,
    unit_states,
    wait_ready,
)

STANDBY_UNIT_FILE = f"/etc/systemd/system/{STANDBY}"
RATE = 50
# What the standby is for: readiness from the other instance well within RestartSec + 0.5 s.
TAKEOVER_LIMIT = 0.5
TABLE = "agented_backend_standby: 50 requests/s inside the host"


def stopped_standby(host) -> dict[str, str]:
    return standby_settled(host, "inactive")


def started_standby(host) -> dict[str, str]:
    return standby_settled(host, "active")


def check_load(load: dict, what: str) -> None:
    for name, result in load.items():
        figure(TABLE, what, name, f"{result['failed']} failed of {result['requests']}")
        assert result["requests"] > 50, result
        assert result["failed"] == 0, f"{name}: requests failed while {what}: {result}"


def check_on(all_hosts) -> None:
    for name, found in on_all(all_hosts, unit_states).items():
        assert set(found.values()) == {"active"}, f"{name}: {found}"
    enabled = on_all(all_hosts, lambda host: show(host, STANDBY, "UnitFileState"))
    assert all(e == {"UnitFileState": "enabled"} for e in enabled.values()), enabled


def test_standby_runs_by_default_either_master_killed_then_off_and_on_again(all_hosts):
    check_on(all_hosts)

    with under_load(all_hosts, rate=RATE) as load:
        for killed, other in ((SERVICE, STANDBY), (STANDBY, SERVICE)):
            takeovers = on_all(
                all_hosts,
                lambda host, k=killed, o=other: in_host_checks(host, "time-takeover", k, o),
            )
            for name, r in takeovers.items():
                figure(
                    TABLE,
                    f"SIGKILL of {killed}'s master: the other answers / it serves again",
                    name,
                    f"{r['takeover']:.2f} s / {r['back']:.1f} s"
                    if r.get("takeover") is not None and r.get("back") is not None
                    else str(r),
                )
                assert r.get("takeover") is not None and r["takeover"] <= TAKEOVER_LIMIT, r
                assert r["back"] is not None, f"{name}: {killed} did not serve again: {r}"
                assert r["other_master_after"] == r["other_master"], r
    check_load(load, "each master SIGKILLed once")

    # Unlike a crash, a stop of agented stops both; a start starts both. (No load: a request would
    # start agented again through its socket.)
    on_all(all_hosts, lambda host: sh(host, f"systemctl stop {SERVICE}"))
    for name, found in on_all(all_hosts, stopped_standby).items():
        assert found == {SOCKET: "active", SERVICE: "inactive", STANDBY: "inactive"}, (
            f"{name}: {found}"
        )
    on_all(all_hosts, lambda host: sh(host, f"systemctl start {SERVICE}"))
    assert all(ready["ready"] for ready in on_all(all_hosts, wait_ready).values())
    for name, found in on_all(all_hosts, started_standby).items():
        assert set(found.values()) == {"active"}, f"{name}: {found}"

    with under_load(all_hosts, rate=RATE) as load:
        off = ansible_playbook(CONVERGE, extra_vars={"agented_backend_standby": False})
    assert off.rc == 0, str(off)
    check_load(load, "switched off")
    for name, found in on_all(all_hosts, unit_states).items():
        assert found == {SOCKET: "active", SERVICE: "active", STANDBY: "inactive"}, (
            f"{name}: {found}"
        )
    left = on_all(all_hosts, lambda host: sh(host, f"ls {STANDBY_UNIT_FILE} 2>/dev/null || true"))
    assert left == dict.fromkeys(all_hosts, ""), f"the standby's unit is still installed: {left}"
    assert all(ready["ready"] for ready in on_all(all_hosts, wait_ready).values())

    with under_load(all_hosts, rate=RATE) as load:
        on = ansible_playbook(CONVERGE)
    assert on.rc == 0, str(on)
    check_load(load, "switched on")
    check_on(all_hosts)
    assert all(ready["ready"] for ready in on_all(all_hosts, wait_ready).values())
