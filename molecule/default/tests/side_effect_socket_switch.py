"""Socket activation can be switched off and on again on a running host, and both converge to a
ready service: systemd refuses to start a socket while its service runs, so the role stops the
service for the socket first. The standby follows socket activation by default: it goes with the
socket and comes back with it.

Both switches run under load inside the host (10 requests/s on its loopback): a request may fail
only in the one moment the socket changes hands, refused while nothing listens or reset when it was
queued on the socket that closed, or, after a slow start, turned away by the per-client connection
limit (429) among what queued meanwhile; never by a timeout or another error; the counts are
printed."""

import itertools

from conftest import (
    CONVERGE,
    SOCKET,
    STANDBY,
    ansible_playbook,
    figure,
    on_all,
    sh,
    under_load,
    wait_ready,
)

TABLE = "requests failed under 10/s (inside the host, loopback)"
RATE = 10
# Refused while nothing listens; reset if the kernel had queued the connection on a socket that
# closed before any worker took it.
NO_SOCKET = {"ConnectionRefusedError", "ConnectionResetError"}
# Once a socket listens again, what queued meanwhile reaches the first worker at once, all from
# 127.0.0.1: beyond GUNICORN_CONNECTIONS_PER_CLIENT (128) it is answered 429 with Retry-After.
# Only a slow start (a loaded machine) queues that many.
TOO_MANY = "429"
# Requests leave every 0.1 s: failures further apart than this are two outages, not one.
ONE_OUTAGE_GAP = 1.0


def socket_state(host) -> str:
    return sh(host, f"systemctl is-active {SOCKET} {STANDBY} || true").split()


def check_load(load: dict, switch: str) -> None:
    for name, result in load.items():
        no_socket = sorted(at for at, answer in result["failures"] if answer in NO_SOCKET)
        window = f", within {no_socket[-1] - no_socket[0]:.2f} s" if no_socket else ""
        figure(
            TABLE,
            f"socket activation {switch}",
            name,
            f"{result['failed']} of {result['requests']} {result['by_answer']}{window}",
        )
        assert result["requests"] > 50, result
        assert set(result["by_answer"]) <= NO_SOCKET | {TOO_MANY}, (
            f"{name}: requests failed otherwise than for want of a socket: {result}"
        )
        gaps = [later - earlier for earlier, later in itertools.pairwise(no_socket)]
        assert all(gap < ONE_OUTAGE_GAP for gap in gaps), (
            f"{name}: requests failed at more than one moment: {no_socket}"
        )


def test_socket_activation_off_then_on_on_a_running_host(all_hosts):
    with under_load(all_hosts, rate=RATE) as load:
        off = ansible_playbook(CONVERGE, extra_vars={"agented_backend_socket_activation": False})
    assert off.rc == 0, str(off)
    assert on_all(all_hosts, socket_state) == dict.fromkeys(all_hosts, ["inactive"] * 2), str(off)
    assert all(ready["ready"] for ready in on_all(all_hosts, wait_ready).values())
    check_load(load, "on -> off")

    with under_load(all_hosts, rate=RATE) as load:
        on = ansible_playbook(CONVERGE)
    assert on.rc == 0, str(on)
    assert on_all(all_hosts, socket_state) == dict.fromkeys(all_hosts, ["active"] * 2), str(on)
    assert all(ready["ready"] for ready in on_all(all_hosts, wait_ready).values())
    check_load(load, "off -> on")
