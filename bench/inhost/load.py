"""Steady load on the service from inside its host, to 127.0.0.1 only (system python3, stdlib).

Sends GET requests at a fixed rate (open loop: request i leaves at start + i / rate, each on its
own connection and thread, whatever happened to the earlier ones), for a bounded time, and
optionally disturbs the service meanwhile:

    load.py --rate 50 --seconds 60 --out FILE [--kills N --settle S]   SIGKILL the master N times
    load.py --rate 50 --seconds 60 --out FILE --action-at T [--repeat N --every S] -- CMD...
                                                        run CMD at T (N times, S s apart)
    load.py --rate 50 --seconds 300 --out FILE --stop-file PATH         until PATH exists

Each request is recorded as (sent at, seconds, status or error). A kill waits until the service
has been ready for S seconds, SIGKILLs the unit's MainPID and times how long until readiness
answers 200 from a worker of a live master other than the killed one: the unit's new master, or
with --standby UNIT also that unit's (kill-to-ready); the journal then tells where that time
went. The summary is printed as one JSON line; every record goes to --out.
"""

import argparse
import functools
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

# Shipped beside this script (bench/common.py): the in-host checks of the molecule suites.
from in_host_checks import UNIT, parent, unit

HOST, PORT = "127.0.0.1", 20000
REQUEST_TIMEOUT = 30.0
POLL = 0.02


# The token the backend generated on the host (run as root, which may read the state directory).
TOKEN_FILE = "/var/lib/agented/.api_token"


@functools.cache
def authorization():
    """The bearer header every /api/ read needs, read once; empty where no token was generated."""
    try:
        with open(TOKEN_FILE) as stream:
            return {"Authorization": f"Bearer {stream.read().strip()}"}
    except FileNotFoundError:
        return {}


def get(path, timeout=REQUEST_TIMEOUT):
    """(status, body) of one GET on a fresh connection; (error name, message) on failure."""
    connection = http.client.HTTPConnection(HOST, PORT, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close", **authorization()})
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as error:
        return type(error).__name__, str(error)
    finally:
        connection.close()


def readiness_master():
    """The master of the worker that answered readiness 200, or None for any other answer.

    Asked as a load balancer asks: a new connection each time, whatever systemd says. With
    socket activation a probe sent while no Gunicorn runs waits in the socket's backlog and is
    answered by the first worker that serves, so the probe itself adds no delay. Polling
    systemctl until the unit is active would queue the probe behind the outage's backlog, and
    keep PID 1 awake, which hides the slack of its restart timer (docs/BENCHMARKS.md §1).
    """
    status, body = get("/health/readiness", timeout=10)
    if status != 200:
        return None
    try:
        return parent(json.loads(body)["pid"])
    except (ValueError, KeyError, TypeError):
        return None


def main_pid(name=UNIT):
    """The MainPID of a unit while it is active, else None."""
    state = unit("MainPID", "ActiveState", name=name)
    pid = int(state["MainPID"])
    return pid if pid and state["ActiveState"] == "active" else None


def wait_ready(not_master=None, deadline=60.0, standby=None):
    """Seconds until readiness answers 200 from a worker of the unit's main process (or of the
    standby unit's), other than not_master (None: gave up)."""
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        master = readiness_master()
        answered = time.monotonic() - start
        # An orphaned worker (its master gone) has another parent than any unit's MainPID.
        if (
            master
            and master != not_master
            and (master == main_pid() or (standby and master == main_pid(standby)))
        ):
            return answered
        time.sleep(POLL)
    return None


def journal_since(realtime):
    """systemd's messages about the unit since a time.time() value, as (seconds after it, text)."""
    out = subprocess.run(
        [
            "journalctl",
            "--unit",
            UNIT,
            "--output",
            "json",
            "--no-pager",
            "--since",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(realtime - 1)),
        ],
        capture_output=True,
        text=True,
        check=False,  # no journal is no breakdown, not a failed run
    ).stdout
    lines = []
    for line in out.splitlines():
        entry = json.loads(line)
        seconds = int(entry["__REALTIME_TIMESTAMP"]) / 1e6 - realtime
        if seconds >= 0:
            message = entry.get("MESSAGE")
            lines.append(
                (
                    round(seconds, 4),
                    message if isinstance(message, str) else str(message),
                    entry.get("_PID") == "1",
                )
            )
    return lines


def breakdown(events):
    """Where a kill-to-ready went, from systemd's own messages (seconds after the kill)."""
    marks = {}
    for seconds, text, from_systemd in events:
        if not from_systemd:
            if "Booting worker" in text and "stopped" in marks:
                marks.setdefault("worker_forked", seconds)
            continue
        if "Failed with result" in text or "Deactivated successfully" in text:
            marks.setdefault("stopped", seconds)  # every process of the old master is gone
        elif "Scheduled restart job" in text:
            marks.setdefault("restart_scheduled", seconds)
        elif text.startswith("Started ") and "stopped" in marks:
            marks.setdefault("new_master_ready", seconds)  # READY=1 from the new master
    return marks


class Load:
    def __init__(self, path, rate, seconds):
        self.path = path
        self.rate = rate
        self.seconds = seconds
        self.records = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def one(self, sent):
        t0 = time.monotonic()
        status, body = get(self.path)
        elapsed = time.monotonic() - t0
        with self.lock:
            self.records.append(
                [
                    round(sent, 4),
                    round(elapsed, 4),
                    status if isinstance(status, int) else f"{status}: {body}"[:200],
                ]
            )

    def run(self, start):
        threads = []
        count = int(self.rate * self.seconds)
        for i in range(count):
            due = start + i / self.rate
            delay = due - time.monotonic()
            if delay > 0 and self.stop.wait(delay):
                break
            thread = threading.Thread(
                target=self.one, args=(time.monotonic() - start,), daemon=True
            )
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(REQUEST_TIMEOUT + 5)


def parse(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--path", default="/api/executions?limit=1")
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--out", required=True)
    parser.add_argument("--kills", type=int, default=0)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument(
        "--standby",
        help="a second unit on the same socket: readiness from its workers counts after a kill",
    )
    parser.add_argument(
        "--lead", type=float, default=2.0, help="seconds of load before the first disturbance"
    )
    parser.add_argument("--action-at", type=float, default=0.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument("--stop-file")
    parser.add_argument("action", nargs="*")
    return parser.parse_args(argv)


def disturb(args, start, kills, actions):
    """The kills, the actions or the wait for the stop file, while the load runs; what happened
    goes to kills and actions."""
    time.sleep(args.lead)
    for _ in range(args.kills):
        if wait_ready(deadline=60) is None:
            break
        time.sleep(args.settle)
        master = main_pid()
        at, wall = time.monotonic() - start, time.time()
        os.kill(master, signal.SIGKILL)
        seconds = wait_ready(not_master=master, deadline=60, standby=args.standby)
        kills.append({"at": round(at, 4), "wall": wall, "master": master, "seconds": seconds})
    for i in range(args.repeat if args.action else 0):
        due = args.action_at + i * args.every
        time.sleep(max(0.0, due - (time.monotonic() - start)))
        at = time.monotonic() - start
        # The action's exit code is recorded, not raised: a failed reload is a result too.
        result = subprocess.run(args.action, capture_output=True, text=True, check=False)
        actions.append(
            {
                "at": round(at, 4),
                "seconds": round(time.monotonic() - start - at, 4),
                "command": args.action,
                "returncode": result.returncode,
                "output": (result.stdout + result.stderr)[-500:],
            }
        )
    if args.stop_file:
        while not os.path.exists(args.stop_file) and time.monotonic() - start < args.seconds:
            time.sleep(0.1)
        actions.append({"at": round(time.monotonic() - start, 4), "command": ["stop-file"]})
    if args.kills or args.action or args.stop_file:
        time.sleep(args.lead)  # the service settles, under load, after the last disturbance


def main(argv):
    args = parse(argv)
    if wait_ready(deadline=60) is None:
        raise SystemExit("the service is not ready before the load")
    load = Load(args.path, args.rate, args.seconds)
    start = time.monotonic()
    wall_start = time.time()
    sender = threading.Thread(target=load.run, args=(start,))
    sender.start()
    kills, actions = [], []
    try:
        disturb(args, start, kills, actions)
    finally:
        load.stop.set()
        sender.join()
    duration = time.monotonic() - start
    journal = journal_since(wall_start)
    for kill in kills:
        later = [(s - (kill["wall"] - wall_start), t, p) for s, t, p in journal]
        kill["breakdown"] = breakdown([e for e in later if 0 <= e[0] < 60])
        del kill["wall"]
    failed = [r for r in load.records if not (isinstance(r[2], int) and r[2] < 400)]
    unit_events = [
        (seconds, text)
        for seconds, text, from_systemd in journal
        if from_systemd
        and text.split(" ", 1)[0]
        in ("Stopping", "Stopped", "Starting", "Started", "Reloading", "Reloaded")
    ]
    result = {
        "path": args.path,
        "rate": args.rate,
        "duration": round(duration, 3),
        "start_monotonic": start,
        "unit_events": unit_events,
        "workers_booted": sum("Booting worker" in text for _, text, _ in journal),
        "requests": len(load.records),
        "failed": len(failed),
        "failures": sorted({str(r[2]) for r in failed})[:10],
        "kills": kills,
        "actions": actions,
    }
    with open(args.out + ".part", "w") as stream:
        json.dump({**result, "records": sorted(load.records)}, stream)
    os.replace(args.out + ".part", args.out)  # whoever waits for --out never reads half of it
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
