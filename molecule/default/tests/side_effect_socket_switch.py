"""Socket activation can be switched off and on again on a running host, and both converge to a
ready service: systemd refuses to start a socket while its service runs, so the role stops the
service for the socket first.

Both switches run under load inside the host (20 requests/s on its loopback): a request may fail
only while nothing listens (ConnectionRefusedError), never by a reset, a timeout or an error answer;
the counts are printed."""

from conftest import (
    CONVERGE,
    SOCKET,
    ansible_playbook,
    figure,
    on_all,
    sh,
    under_load,
    wait_ready,
)

TABLE = "requests failed under 20/s (inside the host, loopback)"
REFUSED = "ConnectionRefusedError"


def socket_state(host) -> str:
    return sh(host, f"systemctl is-active {SOCKET} || true").strip()


def check_load(load: dict, switch: str) -> None:
    for name, result in load.items():
        window = (
            f", refused for {max(result['failed_at']) - min(result['failed_at']):.2f} s"
            if result["failed_at"]
            else ""
        )
        figure(
            TABLE,
            f"socket activation {switch}",
            name,
            f"{result['failed']} of {result['requests']}{window}",
        )
        assert result["requests"] > 50, result
        assert set(result["by_answer"]) <= {REFUSED}, (
            f"{name}: requests failed otherwise than refused while nothing listened: {result}"
        )


def test_socket_activation_off_then_on_on_a_running_host(all_hosts):
    with under_load(all_hosts) as load:
        off = ansible_playbook(CONVERGE, extra_vars={"agented_backend_socket_activation": False})
    assert off.rc == 0, str(off)
    assert set(on_all(all_hosts, socket_state).values()) == {"inactive"}, str(off)
    assert all(ready["ready"] for ready in on_all(all_hosts, wait_ready).values())
    check_load(load, "on -> off")

    with under_load(all_hosts) as load:
        on = ansible_playbook(CONVERGE)
    assert on.rc == 0, str(on)
    assert set(on_all(all_hosts, socket_state).values()) == {"active"}, str(on)
    assert all(ready["ready"] for ready in on_all(all_hosts, wait_ready).values())
    check_load(load, "off -> on")
