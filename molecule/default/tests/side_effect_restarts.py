"""The headline: whatever kills Gunicorn, systemd has it serving again within 5 seconds.

Each kill is timed on the host itself (molecule/harness/in_host_checks.py): from the signal to
the moment a NEW master, reported active by systemd, answers /health/readiness with 200. The
tests of one host run back to back (pytest groups them by host), as the crash-loop limits must
allow.
"""

import json
import subprocess
import time

import pytest

from conftest import (
    PORT,
    RESTART_PROMISE,
    SERVICE,
    SOCKET,
    STANDBY,
    URL,
    VENV,
    figure,
    in_host_checks,
    name_of,
    on_all,
    seconds,
    sh,
    show,
    standby_settled,
    stored,
    under_load,
    wait_ready,
    webhook_secret,
)

TABLE = "kill-to-ready: seconds from the signal to readiness 200 from a new master's worker"
LOST = "requests lost under load (inside the host, loopback)"


@pytest.fixture(autouse=True)
def serving(host):
    """Each test starts from a serving host, so one failure does not fail the ones after it."""
    if not wait_ready(host, 5)["ready"]:
        sh(
            host,
            f"systemctl reset-failed {SERVICE} {SOCKET}; systemctl start {SOCKET} {SERVICE}",
            check=False,
        )
        assert wait_ready(host, 30)["ready"], "the host does not serve, even after a fresh start"


def restart(host, target, signame):
    result = in_host_checks(host, "time-restart", target, signame)
    assert "error" not in result, result
    shown = "not back" if result["seconds"] is None else f"{result['seconds']:.2f} s"
    figure(
        TABLE,
        f"{signame} of the {'process group' if target == 'group' else target}",
        name_of(host),
        shown,
    )
    return result


@pytest.mark.parametrize(
    ("target", "signame"),
    [
        ("master", "SIGKILL"),
        ("master", "SIGTERM"),  # a plain `kill <pid>` from outside systemd: Gunicorn exits 0
        ("master", "SIGSEGV"),
        ("master", "SIGABRT"),
        ("group", "SIGKILL"),
    ],
)
def test_killed_master_is_replaced_within_5_seconds(host, target, signame):
    r = restart(host, target, signame)
    assert r["seconds"] is not None, f"not serving again after 30 s: {r}"
    assert r["new_master"] not in (0, r["old_master"]), r
    assert r["restarts_after"] == r["restarts_before"] + 1, r
    assert r["new_workers"], f"the new master has no workers: {r}"
    assert r["seconds"] <= RESTART_PROMISE, f"{r['seconds']:.2f} s > {RESTART_PROMISE} s: {r}"


def test_hung_master_is_restarted_by_the_watchdog(host):
    """A master that stops turning its main loop (SIGSTOP here, a deadlock in the field) keeps
    its workers serving but stops feeding systemd's watchdog: systemd kills it once WatchdogSec
    has passed and restarts the service."""
    watchdog = seconds(show(host, SERVICE, "WatchdogUSec")["WatchdogUSec"])
    restart_sec = seconds(show(host, SERVICE, "RestartUSec")["RestartUSec"])
    assert watchdog > 0, "no watchdog on the unit"
    r = restart(host, "master", "SIGSTOP")
    assert r["seconds"] is not None, f"a hung master was not replaced within 30 s: {r}"
    assert r["new_master"] not in (0, r["old_master"]), r
    assert r["restarts_after"] == r["restarts_before"] + 1, r
    assert r["seconds"] <= watchdog + restart_sec + 2, r


def test_killed_worker_is_replaced_by_the_same_master(host):
    r = restart(host, "worker", "SIGKILL")
    assert r["seconds"] is not None, f"no replacement worker after 30 s: {r}"
    assert r["new_master"] == r["old_master"], r
    assert r["restarts_after"] == r["restarts_before"], r
    assert r["victim"] not in r["new_workers"] and len(r["new_workers"]) >= len(r["old_workers"]), r
    assert r["seconds"] <= RESTART_PROMISE, r


def test_acknowledged_webhook_survives_a_sigkill(host):
    delivery = f"molecule-kill-{name_of(host)}-{time.time_ns()}"
    env = {"WEBHOOK_SECRET": webhook_secret()}
    r = in_host_checks(host, "post-webhook-then-sigkill", delivery, env=env)
    assert 200 <= r["status"] < 300, f"the delivery was not acknowledged: {r}"
    assert r.get("seconds") is not None, f"not serving again after the kill: {r}"
    figure(TABLE, "SIGKILL right after a 2xx webhook", name_of(host), f"{r['seconds']:.2f} s")
    assert stored(host, delivery)["missing"] == [], "an acknowledged delivery was lost"


def test_systemctl_stop_leaves_it_stopped_and_start_brings_it_back(host):
    restart_sec = seconds(show(host, SERVICE, "RestartUSec")["RestartUSec"])
    restarts = int(show(host, SERVICE, "NRestarts")["NRestarts"])
    sh(host, f"systemctl stop {SERVICE}")
    time.sleep(restart_sec + 2)  # long enough for a restart that should not happen
    p = show(host, SERVICE, "ActiveState", "MainPID", "NRestarts")
    assert p == {"ActiveState": "inactive", "MainPID": "0", "NRestarts": str(restarts)}, p
    # With socket activation the socket keeps listening: the next request would start it again.
    assert show(host, SOCKET, "ActiveState")["ActiveState"] == "active"

    sh(host, f"systemctl start {SERVICE}")
    waited = wait_ready(host, 30)
    assert waited["ready"], waited
    figure(
        "seconds from `systemctl start` to readiness 200",
        "after systemctl stop agented",
        name_of(host),
        f"{waited['seconds']:.2f} s",
    )


def test_stopping_socket_and_service_stops_it_fully(host):
    sh(host, f"systemctl stop {SOCKET} {SERVICE}")
    time.sleep(1)
    assert show(host, SERVICE, "ActiveState")["ActiveState"] == "inactive"
    assert show(host, SOCKET, "ActiveState")["ActiveState"] == "inactive"
    # What a user sees: nothing listens any more.
    refused = host.run(
        f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {PORT}), 2)'"
    )
    assert refused.rc != 0 and "Connection refused" in refused.stderr, refused.stderr

    # `systemctl start agented` alone brings back the whole service, socket included.
    sh(host, f"systemctl start {SERVICE}")
    waited = wait_ready(host, 30)
    assert waited["ready"], waited
    assert show(host, SOCKET, "ActiveState")["ActiveState"] == "active", (
        "starting agented.service did not start agented.socket (Requires=/Wants= it?)"
    )


# --- crash loop and reboot: slow, so every host at once ------------------------------------------

CRASH_DROP_IN = "/run/systemd/system/agented.service.d/zz-molecule-crash-loop.conf"


def _crash_loop(host):
    """Make every start fail (an invalid LOG_LEVEL in the real environment, which wins over .env)
    and watch systemd give up; then restore the service."""
    p = show(host, SERVICE, "StartLimitBurst", "StartLimitIntervalUSec", "RestartUSec", "NRestarts")
    burst, restarts = int(p["StartLimitBurst"]), int(p["NRestarts"])
    limit = seconds(p["StartLimitIntervalUSec"]) + 10
    # systemd's start limit is a fixed window opened by the first start in it, here one of the
    # kill tests'; reset-failed zeroes the counter so that the loop starts a window of its own.
    sh(
        host,
        f"mkdir -p {CRASH_DROP_IN.rsplit('/', 1)[0]} && "
        f"printf '[Service]\\nEnvironment=LOG_LEVEL=loud\\n' > {CRASH_DROP_IN} && "
        f"systemctl daemon-reload && systemctl reset-failed {SERVICE} && "
        f"systemctl restart {SERVICE}",
        check=False,
    )
    start = time.monotonic()
    state = {}
    try:
        while time.monotonic() - start < limit:
            state = show(host, SERVICE, "ActiveState", "Result", "NRestarts")
            if state["ActiveState"] == "failed":
                break
            time.sleep(0.5)
        gave_up_after = time.monotonic() - start
        # The standby stops gracefully once the socket has failed: give it its stop timeout.
        given_up = standby_settled(host, "inactive", timeout=30)
        log = sh(host, f"journalctl -u {SERVICE} --lines 300 --no-pager -o cat", check=False)
    finally:
        sh(
            host,
            f"rm -f {CRASH_DROP_IN} && systemctl daemon-reload && "
            f"systemctl reset-failed {SERVICE} {SOCKET} && systemctl start {SOCKET} {SERVICE}",
        )
    return {
        "state": state,
        "burst": burst,
        "restarts": int(state.get("NRestarts", restarts)) - restarts,
        "seconds": gave_up_after,
        "log": log,
        "given_up": given_up,
        "ready_again": wait_ready(host, 30)["ready"],
        "standby_again": standby_settled(host, "active")[STANDBY],
    }


@pytest.fixture(scope="module")
def crash_loops(all_hosts):
    return on_all(all_hosts, _crash_loop)


def test_crash_loop_gives_up_and_shows_the_cause(host, crash_loops):
    r = crash_loops[name_of(host)]
    figure(
        "crash loop (every start fails)",
        "systemd gives up after",
        name_of(host),
        f"{r['seconds']:.1f} s, {r['restarts']} restarts",
    )
    assert r["state"].get("ActiveState") == "failed", f"still restarting: {r['state']}"
    # systemd 252 keeps the last exit's Result and logs the start limit; later ones may report it.
    assert (
        r["state"].get("Result") == "start-limit-hit"
        or "Start request repeated too quickly" in r["log"]
    ), f"it failed, but not by the start limit: {r['state']}"
    assert r["restarts"] <= r["burst"], r
    assert "LOG_LEVEL" in r["log"], f"the journal does not say why it fails:\n{r['log'][-2000:]}"
    # The socket fails with the start limit; the standby goes with it (BindsTo=), or its copy of the
    # listening socket would keep the port and the socket could not listen again.
    assert (r["given_up"][SOCKET], r["given_up"][STANDBY]) == ("failed", "inactive"), r["given_up"]
    assert r["ready_again"], "the service did not come back after the crash loop"
    assert r["standby_again"] == "active", "the standby did not come back with the service"


def _reboot(host):
    """Stop and start the container, as a reboot would, and time until it serves again."""
    name = name_of(host)
    before = show(host, SERVICE, "MainPID")["MainPID"]
    subprocess.run(["docker", "stop", "-t", "60", name], check=True, capture_output=True)
    start = time.monotonic()
    subprocess.run(["docker", "start", name], check=True, capture_output=True)
    waited = wait_ready(host, 60)
    return {
        "ready": waited["ready"],
        "seconds": time.monotonic() - start,
        "before": before,
        "after": show(host, SERVICE, "MainPID", "ActiveState", "UnitFileState"),
    }


@pytest.fixture(scope="module")
def reboots(all_hosts):
    return on_all(all_hosts, _reboot)


def test_service_comes_back_after_a_reboot(host, reboots):
    r = reboots[name_of(host)]
    figure(
        "reboot (docker stop + start)",
        "seconds from start to readiness 200",
        name_of(host),
        f"{r['seconds']:.1f} s",
    )
    assert r["ready"], r
    assert r["after"]["ActiveState"] == "active" and r["after"]["UnitFileState"] == "enabled", r


# Open-loop load from inside the host (a new connection per request, on schedule whatever happened
# to the earlier ones) while the master is SIGKILLed, each kill once the service has been ready
# again for a second. Prints one JSON line: requests sent, answered 2xx, and every failure.
_LOAD_THROUGH_KILLS = r"""
import json, subprocess, sys, threading, time, urllib.error, urllib.request
url, kills, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
results, lock, stop = [], threading.Lock(), threading.Event()

def one(sent):
    try:
        with urllib.request.urlopen(url + "/health/liveness", timeout=30) as answer:
            outcome = answer.status
    except urllib.error.HTTPError as error:
        outcome = error.code
    except OSError as error:
        outcome = type(error).__name__ + ": " + str(error)
    with lock:
        results.append((round(sent, 3), outcome))

def main_pid():
    out = subprocess.run(["systemctl", "show", "-P", "MainPID", "agented.service"],
                         capture_output=True, text=True).stdout
    return int(out.strip() or 0)

def ready():
    try:
        with urllib.request.urlopen(url + "/health/readiness", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False

def serving_for(seconds, old):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if main_pid() not in (0, old) and ready():
            time.sleep(seconds)
            return True
        time.sleep(0.05)
    return False

def load():
    start, n, threads = time.monotonic(), 0, []
    while not stop.is_set():
        at = start + n / rate
        time.sleep(max(0.0, at - time.monotonic()))
        thread = threading.Thread(target=one, args=(at - start,))
        thread.start()
        threads.append(thread)
        n += 1
    for thread in threads:
        thread.join(40)

loader = threading.Thread(target=load)
loader.start()
time.sleep(1)
def diagnosis():
    # What systemd and the unit's processes were doing, for a failure that may not come again.
    commands = [["systemctl", "status", "--no-pager", "--lines=0", "agented.service"],
                ["journalctl", "--unit=agented.service", "--since=-60s", "--no-pager",
                 "--output=short-precise", "--grep=^(?!.*GET /health/)"]]
    return "\n".join(subprocess.run(c, capture_output=True, text=True).stdout[-6000:]
                     for c in commands)

killed, back, why = 0, True, ""
for _ in range(kills):
    old = main_pid()
    subprocess.run(["kill", "-KILL", str(old)], check=True)
    killed += 1
    if not serving_for(1.0, old):
        back, why = False, diagnosis()
        break
stop.set()
loader.join(60)
failed = [r for r in results if not (isinstance(r[1], int) and 200 <= r[1] < 300)]
print(json.dumps({"kills": killed, "back": back, "requests": len(results),
                  "failed": len(failed), "failures": failed[:20], "diagnosis": why}))
"""


def test_no_request_is_lost_through_three_sigkills_of_the_master(host):
    """Every request sent while the master is SIGKILLed three times is answered 2xx: systemd's
    socket holds new connections while no worker accepts, and dying workers stop accepting."""
    command = f"{VENV}/bin/python - {URL} 3 50 <<'PYTHON'\n{_LOAD_THROUGH_KILLS}\nPYTHON"
    r = json.loads(sh(host, command).splitlines()[-1])
    figure(
        LOST, "3 SIGKILLs of the master, 50/s", name_of(host), f"{r['failed']} of {r['requests']}"
    )
    why = r.pop("diagnosis")
    assert r["back"], f"not serving again after a kill: {r}\n{why}"
    assert r["kills"] == 3 and r["requests"] > 100, r
    assert r["failed"] == 0, f"lost or non-2xx requests through the kills: {r}"


def test_reloads_under_load_answer_every_request_and_readiness_stays_200(host):
    """`systemctl reload agented` (SIGHUP: new workers, the old ones drain) twice under 20
    requests/s of readiness: the instance goes on serving, so every answer is 200."""
    with under_load({name_of(host): host}, path="/health/readiness") as load:
        for _ in range(2):
            sh(host, f"systemctl reload {SERVICE}")
            # The next reload once the new workers serve: one during their boot measures the boot.
            time.sleep(3)
            assert wait_ready(host, 30)["ready"]
    r = load[name_of(host)]
    figure(
        LOST,
        "2 x systemctl reload, readiness at 20/s",
        name_of(host),
        f"{r['failed']} of {r['requests']}, slowest {r['slowest']:.2f} s",
    )
    assert r["requests"] > 50, r
    assert r["failed"] == 0, f"non-200 readiness during reloads: {r}"
