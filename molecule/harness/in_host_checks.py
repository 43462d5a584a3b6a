"""Checks that run inside a test host (system python3, standard library only), where they must be
timed or where they must run for a while.

A round trip from the controller (docker exec) costs tens of milliseconds, too coarse for
"back within 5 seconds", so the kill, the polling and the clock all live on the host. The
harness (molecule/harness/harness.py) ships this file with each call; every subcommand but
sample-readiness, post-webhooks and load prints one JSON line, which the harness reads.

    in_host_checks.py time-restart master|group|worker SIGNAL
        kill, then time until a new master (or, for a worker, a new worker) serves
    in_host_checks.py time-takeover UNIT OTHER_UNIT
        SIGKILL of UNIT's master, then time until a worker of OTHER_UNIT's master answers
        readiness 200 (the standby on the same socket), and until UNIT serves again
    in_host_checks.py post-webhook-then-sigkill DELIVERY_ID
        2xx for a signed delivery, SIGKILL of the master at once, time until a new one serves
    in_host_checks.py post-webhook DELIVERY_ID
        post one signed delivery
    in_host_checks.py post-webhooks PREFIX SECONDS MAX OUT
        steady load: post signed deliveries PREFIX-<n>, one after the other, for at most SECONDS
        and MAX posts or until SIGTERM, appending one line per answer to OUT:
            <answered, unix seconds> <delivery id> <HTTP status or error name>
    in_host_checks.py find-deliveries DELIVERY_ID...
        which ids the database holds (run as the service user: it must own any file it creates)
    in_host_checks.py wait-until-ready SECONDS
        time until readiness answers 200
    in_host_checks.py load OUT [RATE] [PATH] [MAX_SECONDS]
        open-loop load: RATE requests a second (default 20) of GET PATH (default
        /health/liveness), each on a new connection with a 30 s timeout, sent on schedule
        whatever became of the earlier ones, until SIGTERM and at most MAX_SECONDS (default
        1200); one line per request in OUT once it is answered or has failed:
            <sent, unix seconds> <answered or failed, unix seconds> <HTTP status or error name>
    in_host_checks.py sample-readiness OUT [INTERVAL] [TIMEOUT] [MAX_SECONDS]
        ask readiness every INTERVAL seconds (default 0.05), each on a new connection with a
        TIMEOUT (default 0.5 s), and append one line per answer to OUT:
            <sent, unix seconds> <answered or given up, unix seconds> <HTTP status or error name>
        until SIGTERM (the rolling tests start and stop it with systemd-run / systemctl) and at
        most MAX_SECONDS (default 1200), so a sampler that nobody stops still ends. The clock is
        the host's wall clock, which Docker containers share, so the samples of several hosts
        line up.

Environment: AGENTED_URL (http://127.0.0.1:20000), AGENTED_DB (the SQLite file),
WEBHOOK_SECRET (GITHUB_WEBHOOK_SECRET of the host).
"""

import hashlib
import hmac
import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse

URL = os.environ.get("AGENTED_URL", "http://127.0.0.1:20000")
UNIT = "agented.service"
DEADLINE = 30.0  # report the real figure even when it is far above the 5-second promise
POLL = 0.02


def unit(*properties, name=UNIT):
    out = subprocess.run(
        ["systemctl", "show", name, "--property=" + ",".join(properties)],
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
    """The parent of pid, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def request(method, path, timeout, body=None, headers=None):
    """(status, body), or (None, the error's name and text). A new connection each time, and no
    proxy: what a client on the host itself sees."""
    url = urllib.parse.urlsplit(URL)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as error:
        return None, f"{type(error).__name__}: {error}"
    finally:
        connection.close()


def get(path, timeout=2.0):
    return request("GET", path, timeout)


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
    return pid is not None and parent(pid) == master


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


def time_restart(target, signame):
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


def time_takeover(name, other):
    """Two instances on one socket: how soon the other answers for the killed one, and how soon
    the killed one serves again (its new master's own worker answering, among the other's)."""
    master, other_master = (int(unit("MainPID", name=n)["MainPID"]) for n in (name, other))
    if not master or not other_master:
        return {"error": f"{name} or {other} is not running: {master}, {other_master}"}
    start = time.monotonic()
    os.kill(master, signal.SIGKILL)
    takeover = back = None
    while time.monotonic() - start < DEADLINE and back is None:
        ok, pid = readiness()
        now = time.monotonic() - start
        if ok and takeover is None and is_child(pid, other_master):
            takeover = now
        new = unit("MainPID", "ActiveState", name=name)
        if ok and int(new["MainPID"]) not in (0, master) and is_child(pid, int(new["MainPID"])):
            back = now
        time.sleep(POLL)
    return {
        "unit": name,
        "takeover": takeover,
        "back": back,
        "other_master": other_master,
        "other_master_after": int(unit("MainPID", name=other)["MainPID"]),
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
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest(),
    }
    return request("POST", "/api/webhooks/github", 10, body, headers)


def post_webhook(delivery):
    status, body = signed_post(delivery)
    return {"status": status, "body": body[:500]}


def post_webhook_then_sigkill(delivery):
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


def post_webhooks(prefix, seconds, most, out):
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    end = time.monotonic() + float(seconds)
    sent = 0
    with open(out, "a", buffering=1) as stream:
        while not stopping and sent < int(most) and time.monotonic() < end:
            delivery = f"{prefix}-{sent}"
            status, body = signed_post(delivery)
            answer = str(status) if status is not None else body.split(":", 1)[0]
            stream.write(f"{time.time():.3f} {delivery} {answer}\n")
            sent += 1


def find_deliveries(deliveries):
    """Which of the ids appear in any text cell of any table: independent of the schema."""
    path = os.environ.get("AGENTED_DB", "/var/lib/agented/agented.db")
    found = set()
    # Read-only, as the service user (see the module docstring); WAL content is included.
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        tables = [
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in tables:
            quoted = '"' + table.replace('"', '""') + '"'
            # The names come from sqlite_master, not from a caller.
            for row in db.execute(f"SELECT * FROM {quoted}"):  # noqa: S608
                for cell in row:
                    text = cell.decode(errors="replace") if isinstance(cell, bytes) else cell
                    if isinstance(text, str):
                        found.update(d for d in deliveries if d in text)
    return {"stored": sorted(found), "missing": sorted(set(deliveries) - found)}


def wait_until_ready(seconds):
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if ready():
            return {"ready": True, "seconds": time.monotonic() - start}
        time.sleep(0.1)
    return {"ready": False, "seconds": time.monotonic() - start, "last": get("/health/readiness")}


def sample_readiness(out, interval="0.05", timeout="0.5", max_seconds="1200"):
    interval, timeout, max_seconds = float(interval), float(timeout), float(max_seconds)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    end = time.monotonic() + max_seconds
    with open(out, "a", buffering=1) as stream:
        while not stopping and time.monotonic() < end:
            sent = time.time()
            status, body = get("/health/readiness", timeout)
            answer = str(status) if status is not None else body.split(":", 1)[0]
            stream.write(f"{sent:.3f} {time.time():.3f} {answer}\n")
            time.sleep(max(0.0, sent + interval - time.time()))


def load(out, rate="20", path="/health/liveness", max_seconds="1200"):
    import threading  # noqa: PLC0415 -- only the load needs threads

    rate, max_seconds = float(rate), float(max_seconds)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    lock, threads = threading.Lock(), []

    def one(stream, sent):
        status, body = get(path, 30.0)
        answer = str(status) if status is not None else body.split(":", 1)[0]
        with lock:
            stream.write(f"{sent:.3f} {time.time():.3f} {answer}\n")

    with open(out, "a", buffering=1) as stream:
        start, n = time.monotonic(), 0
        while not stopping.is_set() and time.monotonic() - start < max_seconds:
            thread = threading.Thread(target=one, args=(stream, time.time()), daemon=True)
            thread.start()
            threads.append(thread)
            n += 1
            stopping.wait(max(0.0, start + n / rate - time.monotonic()))
        for thread in threads:  # the requests already sent are answered or time out
            thread.join(35)


COMMANDS = {
    "time-restart": time_restart,
    "time-takeover": time_takeover,
    "post-webhook": post_webhook,
    "post-webhook-then-sigkill": post_webhook_then_sigkill,
    "find-deliveries": lambda *deliveries: find_deliveries(deliveries),
    "wait-until-ready": lambda seconds: wait_until_ready(float(seconds)),
}


def main(argv):
    command, args = argv[0], argv[1:]
    if command == "sample-readiness":
        sample_readiness(*args)  # writes its samples to a file, prints nothing
        return
    if command == "post-webhooks":
        post_webhooks(*args)  # writes its answers to a file, prints nothing
        return
    if command == "load":
        load(*args)  # writes its answers to a file, prints nothing
        return
    if command not in COMMANDS:
        raise SystemExit(f"unknown command {command!r}; one of {sorted(COMMANDS)}")
    print(json.dumps(COMMANDS[command](*args)))


if __name__ == "__main__":
    main(sys.argv[1:])
