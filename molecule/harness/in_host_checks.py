"""Runs inside a test host (system python3, standard library only) for what must be timed there.

A round trip from the controller (docker exec) costs tens of milliseconds, too coarse for
"back within 5 seconds", so the kill, the polling and the clock all live on the host.
tests/conftest.py ships this file with each call and reads the one JSON line it prints.

    probe.py restart master|group|worker SIGNAL   kill, then time until a new master serves
    probe.py webhook-then-kill DELIVERY_ID        2xx for a signed delivery, SIGKILL at once
    probe.py webhook DELIVERY_ID                  post one signed delivery
    probe.py stored DELIVERY_ID...                which ids the database holds (run as the
                                                  service user: it must own any file it creates)
    probe.py wait-ready SECONDS                   time until readiness answers 200

Environment: AGENTED_URL (http://127.0.0.1:20000), AGENTED_DB (the SQLite file),
WEBHOOK_SECRET (GITHUB_WEBHOOK_SECRET of the host).
"""

import hashlib
import hmac
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

URL = os.environ.get("AGENTED_URL", "http://127.0.0.1:20000")
UNIT = "agented.service"
DEADLINE = 30.0  # report the real figure even when it is far above the 5-second promise
POLL = 0.02


def unit(*properties):
    out = subprocess.run(
        ["systemctl", "show", UNIT, "--property=" + ",".join(properties)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:  # fields: state, ppid, ...
                kids.append(int(entry))
    return sorted(kids)


def parent(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def get(path, timeout=2.0):
    """(status, body) or (None, error text)."""
    try:
        with urllib.request.urlopen(URL + path, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (OSError, ValueError) as error:
        return None, str(error)


def readiness():
    """(answered 200, pid of the worker that answered)."""
    status, body = get("/health/readiness")
    try:
        pid = int(json.loads(body)["pid"])
    except (ValueError, KeyError, TypeError):
        pid = None
    return status == 200, pid


def ready():
    return readiness()[0]


def is_child(pid, master):
    try:
        return pid is not None and parent(pid) == master
    except OSError:
        return False


def new_master_serves(old_master):
    """Whether a worker of a NEW master answers readiness. Old workers may still answer for a
    moment after their master died, so only a new MainPID that systemd reports active
    (Type=notify: READY=1 received) counts, and only when one of its own workers answers."""
    now = unit("MainPID", "ActiveState")
    new_master = int(now["MainPID"])
    if new_master in (0, old_master) or now["ActiveState"] != "active":
        return False
    ok, pid = readiness()
    return ok and is_child(pid, new_master)


def restart(target, signame):
    sig = getattr(signal, signame)
    before = unit("MainPID", "NRestarts")
    master = int(before["MainPID"])
    if not master or not ready():
        return {"error": f"not serving before the kill: {before}"}
    workers = children(master)
    victim = workers[0] if target == "worker" else master
    start = time.monotonic()
    if target == "group":
        os.killpg(os.getpgid(master), sig)
    else:
        os.kill(victim, sig)

    seconds = None
    while time.monotonic() - start < DEADLINE:
        if target == "worker":
            # The same master forked a replacement, and the replacement itself serves.
            fresh = set(children(master)) - set(workers)
            if fresh:
                ok, pid = readiness()
                if ok and pid in fresh:
                    seconds = time.monotonic() - start
                    break
        elif new_master_serves(master):
            seconds = time.monotonic() - start
            break
        time.sleep(POLL)
    after = unit("MainPID", "NRestarts", "ActiveState", "SubState", "Result")
    new_master = int(after["MainPID"])
    return {
        "target": target,
        "signal": signame,
        "seconds": seconds,
        "old_master": master,
        "new_master": new_master,
        "old_workers": workers,
        "new_workers": children(new_master) if new_master else [],
        "victim": victim,
        "restarts_before": int(before["NRestarts"]),
        "restarts_after": int(after["NRestarts"]),
        "state": after,
    }


def signed_post(delivery):
    body = json.dumps(
        {
            "zen": "Keep it logically awesome.",
            "ref": "refs/heads/main",
            "repository": {"full_name": "agented/molecule-test"},
            "molecule_delivery": delivery,
        }
    ).encode()
    secret = os.environ["WEBHOOK_SECRET"].encode()
    request = urllib.request.Request(
        URL + "/api/webhooks/github",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest(),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def webhook(delivery):
    status, body = signed_post(delivery)
    return {"status": status, "body": body[:500]}


def webhook_then_kill(delivery):
    master = int(unit("MainPID")["MainPID"])
    status, body = signed_post(delivery)
    os.kill(master, signal.SIGKILL)  # right after the 2xx: nothing had time to happen since
    result = {"status": status, "body": body[:500], "old_master": master}
    start = time.monotonic()
    while time.monotonic() - start < DEADLINE:
        if new_master_serves(master):
            result["seconds"] = time.monotonic() - start
            break
        time.sleep(POLL)
    result["new_master"] = int(unit("MainPID")["MainPID"])
    return result


def stored(deliveries):
    """Which of the ids appear in any text cell of any table: independent of the schema."""
    path = os.environ.get("AGENTED_DB", "/var/lib/agented/agented.db")
    found = set()
    # Read-only, as the service user (see the module docstring); WAL content is included.
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        tables = [
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for cell in row:
                    if isinstance(cell, bytes):
                        cell = cell.decode(errors="replace")
                    if isinstance(cell, str):
                        found.update(d for d in deliveries if d in cell)
    return {"stored": sorted(found), "missing": sorted(set(deliveries) - found)}


def wait_ready(seconds):
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if ready():
            return {"ready": True, "seconds": time.monotonic() - start}
        time.sleep(0.1)
    return {"ready": False, "seconds": time.monotonic() - start, "last": get("/health/readiness")}


def main(argv):
    command, args = argv[0], argv[1:]
    if command == "restart":
        result = restart(args[0], args[1])
    elif command == "webhook":
        result = webhook(args[0])
    elif command == "webhook-then-kill":
        result = webhook_then_kill(args[0])
    elif command == "stored":
        result = stored(args)
    elif command == "wait-ready":
        result = wait_ready(float(args[0]))
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
