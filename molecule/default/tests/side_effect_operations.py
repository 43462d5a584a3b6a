"""Day-2 operations: /metrics, the deploy history, the deploy lock, uninstall and purge.

Sequence, on every host at once (after side_effects/releases.yml, which leaves a previous
release to roll back to and a failed deploy in the history):
  metrics              signed and badly signed webhooks move the counters; a foreign address
                       gets 403
  two converges        the second starts while the first holds the lock: it fails within seconds,
                       changing nothing; the first deploys and records itself
  rollback.yml         over a stale lock (its ansible-playbook is gone), with a warning; recorded
  uninstall.yml        units, releases and configuration gone, the data and the user kept; recorded
  uninstall.yml again  nothing left to change, and on the last host with agented_backend_purge:
                       the state directory and the user gone too
  converge             both hosts serve the converged release again; the kept host finds its data
"""

import json
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (
    CONFIG_DIR,
    CONVERGE,
    INSTALL_DIR,
    PORT,
    PROJECT_DIR,
    ROLLBACK,
    SERVICE,
    SOCKET,
    STATE_DIR,
    USER,
    ansible_playbook,
    current_release,
    effective_secret_key,
    figure,
    name_of,
    on_all,
    post_webhook,
    sh,
    show,
    stored,
    wait_ready,
)

UNINSTALL = PROJECT_DIR / "playbooks" / "uninstall.yml"
HISTORY = f"{STATE_DIR}/deploys.jsonl"
LOCK = "/run/agented-deploy.lock"
JOURNAL_TAG = "agented-deploy"
FIELDS = {
    "time",
    "host",
    "action",
    "from",
    "to",
    "serving",
    "result",
    "user",
    "controller",
    "commit",
}
STORED = 'agented_webhook_deliveries_total{outcome="stored"}'
BAD_SIGNATURE = 'agented_webhook_deliveries_total{outcome="bad_signature"}'
LOCK_MESSAGE = re.compile(r"deploy in progress by \S+ since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def metrics(host) -> dict[str, float]:
    """The samples of GET /metrics, read from 127.0.0.1 inside the host."""
    code = (
        "import urllib.request; "
        f"r = urllib.request.urlopen('http://127.0.0.1:{PORT}/metrics', timeout=10); "
        "print(r.read().decode())"
    )
    samples = {}
    for line in sh(host, f'python3 -c "{code}"').splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def history(host) -> list[dict]:
    if not host.file(HISTORY).exists:
        return []
    return [json.loads(line) for line in sh(host, f"cat {HISTORY}").splitlines() if line]


def journal(host) -> list[dict]:
    out = sh(host, f"journalctl -t {JOURNAL_TAG} -o json --no-pager", check=False)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def new_records(host, before: int) -> list[dict]:
    return history(host)[before:]


def git_head() -> str:
    return subprocess.run(
        ["git", "-C", str(PROJECT_DIR), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def bridge_address(name: str) -> str:
    return subprocess.run(
        [
            "docker",
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            name,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]


def dead_pid() -> int:
    """The pid of a process of this controller that has ended."""
    process = subprocess.Popen(["/bin/true"])
    process.wait()
    return process.pid


def plant_stale_lock(host, pid: int) -> None:
    record = {
        "user": "molecule-gone",
        "controller": socket.gethostname(),
        "pid": pid,
        "action": "deploy",
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "epoch": int(time.time()),
    }
    host.run(f"printf '%s\\n' '{json.dumps(record)}' > {LOCK}")


def wait_for_lock(hosts, timeout=300.0) -> dict:
    """The lock records, once every host holds one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = on_all(hosts, lambda h: h.run(f"cat {LOCK}").stdout.strip())
        if all(held.values()):
            return {name: json.loads(text) for name, text in held.items()}
        time.sleep(0.5)
    pytest.fail(f"the first converge did not take the deploy lock within {timeout:.0f} s")


def uninstalled(host) -> dict:
    return {
        "units": [u for u in (SERVICE, SOCKET) if host.file(f"/etc/systemd/system/{u}").exists],
        "load": show(host, SERVICE, "LoadState")["LoadState"],
        "install_parent": host.file(os.path.dirname(INSTALL_DIR)).exists,
        "config": host.file(CONFIG_DIR).exists,
        "listening": host.run(f"ss -Hltn 'sport = :{PORT}'").stdout.strip(),
        "state dir": host.file(STATE_DIR).exists,
        "state": sh(host, f"ls -A {STATE_DIR}", check=False).split(),
        "user": host.user(USER).exists,
    }


@pytest.fixture(scope="module")
def story(all_hosts):
    names = sorted(all_hosts)
    purged = names[-1]
    s = {"purged": purged, "kept": [n for n in names if n != purged]}

    # --- metrics -------------------------------------------------------------------------
    s["metrics before"] = on_all(all_hosts, metrics)
    s["deliveries"] = {n: f"molecule-operations-{n}-{time.time_ns()}" for n in names}
    s["acks"] = on_all(all_hosts, lambda h: post_webhook(h, s["deliveries"][name_of(h)]))
    s["bad acks"] = on_all(all_hosts, lambda h: post_webhook(h, f"bad-{time.time_ns()}", "wrong"))
    s["metrics after"] = on_all(all_hosts, metrics)
    s["foreign"] = {}
    for name in names:
        url = f"http://{bridge_address(name)}:{PORT}/metrics"
        result = subprocess.run(
            ["curl", "-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", url],
            capture_output=True,
            text=True,
            check=False,  # the status code is the answer
        )
        s["foreign"][name] = result.stdout

    s["key"] = on_all(all_hosts, effective_secret_key)
    s["release"] = on_all(all_hosts, current_release)
    s["records before"] = on_all(all_hosts, lambda h: len(history(h)))
    s["journal before"] = on_all(all_hosts, lambda h: len(journal(h)))

    # --- two plays at once ---------------------------------------------------------------
    first = {}
    thread = threading.Thread(target=lambda: first.update(run=ansible_playbook(CONVERGE)))
    thread.start()
    s["lock held"] = wait_for_lock(all_hosts)
    started = time.monotonic()
    s["second"] = ansible_playbook(CONVERGE)
    s["second seconds"] = time.monotonic() - started
    s["first still running"] = thread.is_alive()
    s["lock pid command"] = {
        name: Path(f"/proc/{held['pid']}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if Path(f"/proc/{held['pid']}/cmdline").exists()
        else ""
        for name, held in s["lock held"].items()
    }
    thread.join()
    s["first"] = first["run"]
    s["deployed"] = on_all(all_hosts, current_release)
    s["lock after"] = on_all(all_hosts, lambda h: h.file(LOCK).exists)
    s["deploy records"] = on_all(
        all_hosts, lambda h: new_records(h, s["records before"][name_of(h)])
    )

    # --- rollback over a stale lock -------------------------------------------------------
    pid = dead_pid()
    on_all(all_hosts, lambda h: plant_stale_lock(h, pid))
    count = on_all(all_hosts, lambda h: len(history(h)))
    s["rollback"] = ansible_playbook(ROLLBACK)
    s["rolled back to"] = on_all(all_hosts, current_release)
    s["rollback records"] = on_all(all_hosts, lambda h: new_records(h, count[name_of(h)]))

    # --- uninstall, again, purge on one host ----------------------------------------------
    s["history"] = on_all(all_hosts, history)
    count = on_all(all_hosts, lambda h: len(history(h)))
    s["uninstall"] = ansible_playbook(UNINSTALL)
    s["after uninstall"] = on_all(all_hosts, uninstalled)
    s["uninstall records"] = on_all(all_hosts, lambda h: new_records(h, count[name_of(h)]))
    # One run: the kept hosts uninstall again, the last one is purged.
    s["again"] = ansible_playbook(
        UNINSTALL,
        extra_vars={"agented_backend_purge": f"{{{{ inventory_hostname == '{purged}' }}}}"},
    )
    s["after again"] = on_all(all_hosts, uninstalled)
    s["purge journal"] = journal(all_hosts[purged])[-1:]

    # --- and back ------------------------------------------------------------------------
    started = time.monotonic()
    s["converge"] = ansible_playbook(CONVERGE)
    s["converge seconds"] = time.monotonic() - started
    s["ready"] = on_all(all_hosts, lambda h: wait_ready(h, 60)["ready"])
    s["release after"] = on_all(all_hosts, current_release)
    s["key after"] = on_all(all_hosts, effective_secret_key)
    s["stored after"] = on_all(all_hosts, lambda h: stored(h, s["deliveries"][name_of(h)]))
    s["last record"] = on_all(all_hosts, lambda h: history(h)[-1:])
    s["journal after"] = on_all(all_hosts, journal)

    table = "operations (both hosts at once)"
    figure(table, "second play, refused by the lock", "seconds", f"{s['second seconds']:.1f}")
    figure(table, "first play, holding the lock", "seconds", f"{s['first'].seconds:.0f}")
    figure(table, "rollback over a stale lock", "seconds", f"{s['rollback'].seconds:.0f}")
    figure(table, "uninstall", "seconds", f"{s['uninstall'].seconds:.0f}")
    figure(table, "uninstall again / purge", "seconds", f"{s['again'].seconds:.0f}")
    figure(table, "deploy after uninstall (new venvs)", "seconds", f"{s['converge seconds']:.0f}")
    return s


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_count_signed_and_badly_signed_webhooks(host, story):
    name = name_of(host)
    assert 200 <= story["acks"][name]["status"] < 300, story["acks"][name]
    assert story["bad acks"][name]["status"] in (401, 403), story["bad acks"][name]
    before, after = story["metrics before"][name], story["metrics after"][name]
    figure(
        "metrics",
        "stored deliveries before -> after",
        name,
        f"{before.get(STORED, 0):.0f} -> {after[STORED]:.0f}",
    )
    # Another suite's requests may land in between, never fewer.
    assert after[STORED] >= before.get(STORED, 0) + 1
    assert after[BAD_SIGNATURE] >= before.get(BAD_SIGNATURE, 0) + 1


def test_metrics_refuse_an_address_not_allowed(host, story):
    assert story["foreign"][name_of(host)] == "403"


# --- the deploy lock -------------------------------------------------------------------------


def test_a_second_play_fails_at_once_with_the_holder_and_changes_nothing(host, story):
    name = name_of(host)
    second = story["second"]
    assert second.rc != 0, f"a second play ran while the first held the lock:\n{second}"
    assert LOCK_MESSAGE.search(second.output), f"no lock message:\n{second}"
    assert second.changed(name) == 0, f"the refused play changed things:\n{second}"
    assert story["first still running"], "the first play ended before the second was refused"
    # At once: the play ends on the lock, before any task of the deploy itself.
    assert "Stop, another play is changing this host]" in second.output, str(second)
    after_lock = second.output.split("Stop, another play is changing this host]", 1)[1]
    assert "TASK [" not in after_lock, f"the refused play went on:\n{second}"


def test_the_lock_names_the_playbook_that_holds_it_and_is_released(host, story):
    name = name_of(host)
    held = story["lock held"][name]
    assert held["controller"] == socket.gethostname()
    assert held["action"] == "deploy"
    assert "ansible-playbook" in story["lock pid command"][name], story["lock pid command"]
    assert story["first"].rc == 0, str(story["first"])
    assert not story["lock after"][name], "the lock outlived its play"


def test_a_stale_lock_is_taken_over_with_a_warning(host, story):
    run = story["rollback"]
    assert run.rc == 0, str(run)
    assert "taking over the deploy lock of molecule-gone" in run.output, str(run)
    assert not host.file(LOCK).exists


# --- the deploy history ----------------------------------------------------------------------


def check_record(record: dict, action: str, start: str, to: str, result: str, host: str):
    assert set(record) >= FIELDS, record
    assert (record["action"], record["from"], record["to"], record["result"]) == (
        action,
        start,
        to,
        result,
    ), record
    assert record["host"] == host
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["time"]), record
    assert record["controller"] == socket.gethostname()
    assert record["commit"] == git_head()


def test_a_deploy_writes_one_record_to_the_file_and_the_journal(host, story):
    name = name_of(host)
    before = os.path.basename(story["release"][name])
    deployed = os.path.basename(story["deployed"][name])
    records = story["deploy records"][name]
    assert len(records) == 1, records  # the refused play recorded nothing
    check_record(records[0], "deploy", before, deployed, "succeeded", name)
    assert records[0]["serving"] == deployed
    # The journal's entry carries the same fields.
    entry = next(
        e
        for e in reversed(story["journal after"][name])
        if e.get("AGENTED_TIME") == records[0]["time"]
    )
    assert entry["SYSLOG_IDENTIFIER"] == JOURNAL_TAG
    assert {k: entry[f"AGENTED_{k.upper()}"] for k in FIELDS} == {
        k: str(records[0][k]) for k in FIELDS
    }


def test_a_failed_deploy_was_recorded_as_rolled_back(host, story):
    # side_effects/releases.yml deployed a release that cannot start.
    records = story["history"][name_of(host)]
    failed = [r for r in records if r["action"] == "deploy" and r["result"] == "rolled back"]
    assert failed, "no failed deploy in the history"
    assert failed[-1]["serving"] != failed[-1]["to"]


def test_a_rollback_is_recorded(host, story):
    name = name_of(host)
    release = os.path.basename(story["deployed"][name])
    back = os.path.basename(story["rolled back to"][name])
    assert back != release
    (record,) = story["rollback records"][name]
    check_record(record, "rollback", release, back, "succeeded", name)


def test_the_history_file_is_roots_and_the_service_cannot_write_it(host, story):
    f = host.file(HISTORY)
    assert (f.user, f.group, f.mode) == ("root", "root", 0o644)
    assert host.run(f"runuser -u {USER} -- sh -c ': >> {HISTORY}'").rc != 0


# --- uninstall -------------------------------------------------------------------------------


def test_uninstall_removes_the_service_and_keeps_the_data(host, story):
    name = name_of(host)
    run = story["uninstall"]
    assert run.rc == 0, str(run)
    after = story["after uninstall"][name]
    assert after["units"] == [] and after["load"] == "not-found", after
    assert not after["install_parent"] and not after["config"], after
    assert after["listening"] == "", after
    assert {"agented.db", ".secret_key", "deploys.jsonl"} <= set(after["state"]), after
    assert after["user"]
    release = os.path.basename(story["rolled back to"][name])
    (record,) = story["uninstall records"][name]
    check_record(record, "uninstall", release, "", "succeeded", name)


def test_uninstall_again_changes_nothing(host, story):
    name = name_of(host)
    if name == story["purged"]:
        pytest.skip("purged instead")
    assert story["again"].rc == 0, str(story["again"])
    assert story["again"].changed(name) == 0, str(story["again"])
    assert story["after again"][name] == story["after uninstall"][name]


def test_purge_removes_the_data_and_the_user(host, story):
    name = name_of(host)
    if name != story["purged"]:
        pytest.skip(f"only {story['purged']} is purged")
    assert story["again"].rc == 0, str(story["again"])
    after = story["after again"][name]
    assert not after["state dir"], after
    assert not after["user"]
    (entry,) = story["purge journal"]
    assert (entry["AGENTED_ACTION"], entry["AGENTED_RESULT"]) == ("purge", "succeeded")


def test_a_deploy_after_uninstall_serves_again_and_finds_its_data(host, story):
    name = name_of(host)
    assert story["converge"].rc == 0, str(story["converge"])
    assert story["ready"][name]
    assert story["release after"][name] == story["deployed"][name]
    if name == story["purged"]:
        assert story["stored after"][name]["missing"] == [story["deliveries"][name]]
    else:
        assert story["stored after"][name]["missing"] == [], story["stored after"][name]
        assert story["key after"][name] == story["key"][name], "SECRET_KEY changed"
    release = os.path.basename(story["deployed"][name])
    check_record(story["last record"][name][0], "deploy", "", release, "succeeded", name)
