# /// script
# requires-python = ">=3.11"
# dependencies = ["matplotlib>=3.8"]
# ///
"""§9 Backups: a snapshot of a database of 100,000 deliveries, and webhooks while it is taken.

Runs Gunicorn locally as the service does (default workers, gevent), from a copy of backend/ with
no .env, on 127.0.0.1, on a database filled beforehand with --deliveries signed `issues`
deliveries of --payload-bytes each, stored by the backend's own code (app.webhooks), so every
delivery has its execution, conversation and event as on a real host.

Then a client posts signed webhooks at --rate per second, each on a new connection (open loop),
for --baseline seconds with no backup, and then for as long as --backups snapshots take one after
the other. A snapshot is what the role and playbooks/backup.yml take: `python -m app.db snapshot`
(SQLite's online backup API) of the live database. Every snapshot is then checked: PRAGMA
integrity_check, and every delivery acknowledged before it began must be in it.

    uv run bench/backup.py [--deliveries 100000] [--payload-bytes 6000] [--rate 50]
        [--baseline 20] [--backups 5] [--name backup]
"""

from __future__ import annotations

import argparse
import collections
import http.client
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import common

NAME = "backup"
PORT = 20874
HOST = "127.0.0.1"
PYTHON = common.BACKEND / ".venv" / "bin" / "python"

# Runs in the backend's virtualenv, from the copy: migrate, then store the deliveries through the
# backend's own parsing and storage, in transactions of 1,000 (a fill, not a measurement).
FILL = """
import json, sys, uuid
from app import db, webhooks
path, count, padding = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
db.migrate(path)
connection = db.connect(path)
for start in range(0, count, 1000):
    with db.transaction(connection):
        for n in range(start, min(count, start + 1000)):
            body = json.dumps({"action": "opened", "repository": {"full_name": "agented/bench"},
                               "issue": {"number": n % 500}, "bench": n,
                               "padding": "x" * padding}).encode()
            delivery = webhooks.parse(body, str(uuid.uuid4()), "issues")
            webhooks._store(connection, delivery)
connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
"""


def fill(src: Path, path: Path, args) -> float:
    common.log(f"storing {args.deliveries:,} deliveries of {args.payload_bytes:,} bytes")
    start = time.monotonic()
    common.run(
        [PYTHON, "-c", FILL, path, str(args.deliveries), str(args.payload_bytes)],
        cwd=src,
    )
    return time.monotonic() - start


class Client:
    """Signed webhooks at a fixed rate, each in its own thread on a new connection, whatever
    happened to the ones before. Records (sent at, seconds, status or error, guid) for each."""

    def __init__(self, rate: float, padding: int):
        self.rate, self.padding = rate, padding
        self.records: list[tuple[float, float, object, str]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def post(self, n: int) -> None:
        body, headers = common.signed_webhook(1_000_000 + n, padding=self.padding)
        sent = time.time()
        start = time.monotonic()
        connection = http.client.HTTPConnection(HOST, PORT, timeout=10)
        try:
            connection.request("POST", "/api/webhooks/github", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            outcome: object = response.status
        except (OSError, http.client.HTTPException) as error:
            outcome = type(error).__name__
        finally:
            connection.close()
        with self.lock:
            self.records.append(
                (sent, time.monotonic() - start, outcome, headers["X-GitHub-Delivery"])
            )

    def run(self) -> None:
        threads, n, next_at = [], 0, time.time()
        while not self.stop.is_set():
            threads.append(threading.Thread(target=self.post, args=(n,)))
            threads[-1].start()
            n += 1
            next_at += 1 / self.rate
            self.stop.wait(max(0.0, next_at - time.time()))
        for thread in threads:
            thread.join(timeout=15)

    def acknowledged_before(self, moment: float) -> set[str]:
        """Deliveries whose 202 arrived before ``moment`` (wall clock)."""
        with self.lock:
            return {
                guid
                for sent, seconds, outcome, guid in self.records
                if outcome == 202 and sent + seconds < moment
            }


def check_snapshot(path: Path, acknowledged: set[str]) -> dict:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
        guids = {row[0] for row in connection.execute("SELECT guid FROM deliveries")}
    finally:
        connection.close()
    return {
        "integrity": integrity,
        "deliveries": len(guids),
        "acknowledged_before": len(acknowledged),
        "acknowledged_missing": len(acknowledged - guids),
    }


def measure(args) -> dict:
    src = common.backend_copy()
    state = Path(tempfile.mkdtemp(prefix="agented-bench-backup-", dir="/var/tmp"))
    database = state / "agented.db"
    fill_seconds = fill(src, database, args)
    database_bytes = database.stat().st_size
    process = common.start_gunicorn(
        src, PORT, state, common.results_dir(args.name) / "gunicorn.log"
    )
    client = Client(args.rate, args.payload_bytes)
    backups = []
    try:
        common.wait_http(PORT, process=process)
        loader = threading.Thread(target=client.run)
        marks = {"start": time.time()}
        loader.start()
        time.sleep(args.baseline)
        marks["backups"] = time.time()
        for number in range(1, args.backups + 1):
            destination = state / f"snapshot-{number}.db"
            began = time.time()
            acknowledged = client.acknowledged_before(began)
            common.run([PYTHON, "-m", "app.db", "snapshot", database, destination], cwd=src)
            ended = time.time()
            common.log(f"snapshot {number}: {ended - began:.2f} s")
            backups.append(
                {
                    "began": began,
                    "ended": ended,
                    "seconds": ended - began,
                    "bytes": destination.stat().st_size,
                    "mode": oct(destination.stat().st_mode & 0o777),
                    **check_snapshot(destination, acknowledged),
                }
            )
            destination.unlink()
        marks["end"] = time.time()
        client.stop.set()
        loader.join(timeout=30)
    finally:
        client.stop.set()
        common.stop_gunicorn(process)
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(src.parent, ignore_errors=True)
    return {
        "fill_seconds": fill_seconds,
        "database_bytes": database_bytes,
        "marks": marks,
        "backups": backups,
        "records": client.records,
    }


def during(record, backups) -> bool:
    """Whether a request was in flight at any moment a snapshot was being taken."""
    sent, seconds = record[0], record[1]
    return any(sent <= b["ended"] and sent + seconds >= b["began"] for b in backups)


def analyse(raw: dict, args) -> dict:
    marks, backups = raw["marks"], raw["backups"]
    baseline = [r for r in raw["records"] if r[0] + r[1] < marks["backups"]]
    in_backup = [r for r in raw["records"] if during(r, backups)]

    def phase(records):
        return {
            "requests": len(records),
            "failed": sum(1 for r in records if r[2] != 202),
            "latency": common.summary(r[1] for r in records if r[2] == 202),
        }

    return {
        "args": vars(args),
        "fill_seconds": raw["fill_seconds"],
        "database_bytes": raw["database_bytes"],
        "backup_seconds": common.summary(b["seconds"] for b in backups),
        "snapshot_bytes": backups[0]["bytes"] if backups else None,
        "snapshots": backups,
        "without_backup": phase(baseline),
        "during_backup": phase(in_backup),
        "outcomes": dict(collections.Counter(str(r[2]) for r in raw["records"])),
        "failed_total": sum(1 for r in raw["records"] if r[2] != 202),
        "requests_total": len(raw["records"]),
    }


def megabytes(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


def report(result: dict, raw: dict, args) -> str:
    backup, snapshots = result["backup_seconds"], result["snapshots"]
    complete = all(
        s["integrity"] == "ok" and s["acknowledged_missing"] == 0 and s["mode"] == "0o600"
        for s in snapshots
    )
    ms = 1000
    rows = [
        [
            phase,
            data["requests"],
            data["failed"],
            common.fmt(data["latency"]["median"] and data["latency"]["median"] * ms, " ms", 1),
            common.fmt(data["latency"]["p99"] and data["latency"]["p99"] * ms, " ms", 1),
            common.fmt(data["latency"]["max"] and data["latency"]["max"] * ms, " ms", 1),
        ]
        for phase, data in (
            ("without a backup", result["without_backup"]),
            ("while a snapshot is taken", result["during_backup"]),
        )
    ]
    tables = common.table(
        ["Database", "Size", "Snapshot size", "Snapshot time (median / max)", "Snapshots checked"],
        [
            [
                f"{args.deliveries:,} deliveries of {args.payload_bytes:,} bytes",
                megabytes(result["database_bytes"]),
                megabytes(result["snapshot_bytes"]),
                f"{backup['median']:.2f} / {backup['max']:.2f} s",
                f"{len(snapshots)}: integrity_check ok, mode 0600, every delivery acknowledged "
                f"before it began present: {'yes' if complete else '**no**'}",
            ]
        ],
    )
    tables += "\n" + common.table(
        [f"Signed webhooks, {args.rate:g}/s", "Requests", "Not 202", "p50", "p99", "max"], rows
    )
    goals = [
        common.goal(
            "§9",
            "a snapshot holds every delivery acknowledged before it began",
            "yes" if complete else "no",
            complete,
        ),
        common.goal(
            "§9",
            "no webhook fails while a snapshot is taken",
            f"{result['during_backup']['failed']} of {result['during_backup']['requests']}",
            result["during_backup"]["failed"] == 0,
        ),
    ]
    result["goals"] = goals
    chart(raw, result, args)
    return tables


def chart(raw: dict, result: dict, args) -> None:
    plt = common.pyplot()
    figure, ax = plt.subplots()
    zero = raw["marks"]["start"]
    for n, b in enumerate(raw["backups"]):
        ax.axvspan(
            b["began"] - zero,
            b["ended"] - zero,
            color="orange",
            alpha=0.25,
            label="snapshot being taken" if n == 0 else None,
        )
    ok = [(r[0] - zero, r[1] * 1000) for r in raw["records"] if r[2] == 202]
    bad = [(r[0] - zero, max(r[1] * 1000, 1)) for r in raw["records"] if r[2] != 202]
    common.scatter_outcomes(ax, ok, bad, label="webhook acknowledged")
    ax.set_yscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("acknowledgement latency (ms)")
    ax.set_title(
        f"Signed webhooks at {args.rate:g}/s on a database of {args.deliveries:,} deliveries "
        f"({megabytes(result['database_bytes'])})"
    )
    ax.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(common.results_dir(args.name) / "backup.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--payload-bytes", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--baseline", type=float, default=20.0)
    parser.add_argument("--backups", type=int, default=5)
    parser.add_argument("--name", default=NAME)
    args = parser.parse_args()
    raw = measure(args)
    result = analyse(raw, args)
    tables = report(result, raw, args)
    common.save(args.name, result, tables)


if __name__ == "__main__":
    main()
