"""Socket activation can be switched off and on again on a running host, and both converge to a
ready service: systemd refuses to start a socket while its service runs, so the role stops the
service for the socket first."""

from conftest import CONVERGE, SOCKET, ansible_playbook, on_all, sh, wait_ready


def socket_state(host) -> str:
    return sh(host, f"systemctl is-active {SOCKET} || true").strip()


def test_socket_activation_off_then_on_on_a_running_host(all_hosts):
    off = ansible_playbook(CONVERGE, extra_vars={"agented_backend_socket_activation": False})
    assert off.rc == 0, str(off)
    assert set(on_all(all_hosts, socket_state).values()) == {"inactive"}, str(off)
    assert all(ready["ready"] for ready in on_all(all_hosts, wait_ready).values())

    on = ansible_playbook(CONVERGE)
    assert on.rc == 0, str(on)
    assert set(on_all(all_hosts, socket_state).values()) == {"active"}, str(on)
    assert all(ready["ready"] for ready in on_all(all_hosts, wait_ready).values())
