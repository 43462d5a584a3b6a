# /// script
# requires-python = ">=3.11"
# dependencies = ["matplotlib>=3.8"]
# ///
"""§7 Hostile clients: idle streams, stalled bodies and slow headers, all at once, on one host.

Runs Gunicorn locally as the service does (default workers, gevent, default limits), from a copy
of backend/ with no .env, on 127.0.0.1. First it posts a few thousand signed GitHub webhooks (the
public API, so each one becomes an event of /api/events). Then, all open at once for --duration
seconds, from attacker addresses 127.0.1.1 to 127.0.1.<--sources> (loopback; one address per
client of a small botnet, so that per-address limits are not the only thing tested):

- --streams event streams (GET /api/events, Last-Event-ID: 0, the API token) that never read;
- --bodies webhook POSTs declaring Content-Length 25 MiB, wrongly signed, sending the body
  slowly and holding back its last KiB;
- --slow-headers sockets sending a request head a byte every few seconds, never finishing it;
  one the server closes is replaced by a new one (--no-reconnect: not), so that about as many
  stay open however soon the server gives up on them.

A separate process, from 127.0.0.1, measures what a well-behaved client gets: GET
/health/liveness every 50 ms and a signed webhook every second (each on a new connection, open
loop), and the RSS of every Gunicorn worker (VmRSS) every 0.5 s. At the end every attacker socket
is read to see how it was answered (a status code, closed without an answer, or still waiting).
About 80 s in all.

    uv run bench/hostile.py [--duration 35] [--streams 400] [--bodies 50] [--slow-headers 2000]
        [--sources 50] [--name hostile]    (--streams 0 etc. leave an attack out)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import http.client
import multiprocessing
import os
import random
import resource
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import common

NAME = "hostile"
PORT = 20873
HOST = "127.0.0.1"
GOAL_LIVENESS_P99 = 0.050
GOAL_WEBHOOK = 0.250
GOAL_RSS_MB = 150.0
BODY_BYTES = 26214400  # 25 MiB, GITHUB_WEBHOOK_MAX_BYTES's default
DASH = "\N{EN DASH}"
HELD_BACK = 1024  # the last bytes of a stalled body, never sent
RECV_BUFFER = 16384  # a never-reading stream client's receive buffer
RECONNECT_AFTER = 0.25  # a slow-header attacker whose socket was closed opens a new one


# --- the well-behaved client (its own process) ------------------------------------------------


def request(method: str, path: str, body=None, headers=None, timeout=5.0) -> tuple[float, object]:
    """(seconds, status or the exception's name) of one request on a new connection."""
    start = time.monotonic()
    connection = http.client.HTTPConnection(HOST, PORT, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return time.monotonic() - start, response.status
    except (OSError, http.client.HTTPException) as error:
        return time.monotonic() - start, type(error).__name__
    finally:
        connection.close()


def worker_rss(master: int) -> dict[int, float]:
    """VmRSS (MB) of each child of the master."""
    sizes = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) != master:
                    continue
            with open(f"/proc/{entry}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        sizes[int(entry)] = int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            pass
    return sizes


def cpu_seconds(master: int) -> float:
    """CPU time (user + system) used so far by the master and its live workers."""
    total = 0.0
    for pid in [master, *worker_rss(master)]:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
    return total


def probe(master: int, until: float, out) -> None:
    """Runs in its own process until time.time() reaches `until`; sends its records to `out`.
    Times are wall-clock (time.time()), the clock the attacking process marks its phases on."""
    stop = threading.Event()
    liveness, webhooks, rss = [], [], []

    def every(interval: float, action, open_loop: bool) -> None:
        """Open loop: each request leaves on schedule in its own thread, whatever happened to the
        ones before (a slow answer does not hide the ones that would have followed)."""
        next_at = time.time()
        started = []
        while not stop.is_set() and time.time() < until:
            if open_loop:
                started.append(threading.Thread(target=action))
                started[-1].start()
            else:
                action()
            next_at += interval
            stop.wait(max(0.0, next_at - time.time()))
        for thread in started:
            thread.join(timeout=10)

    def live() -> None:
        sent = time.time()
        liveness.append((sent, *request("GET", "/health/liveness", timeout=2.0)))

    count = iter(range(10**9))

    def hook() -> None:
        body, headers = common.signed_webhook(100_000 + next(count))
        sent = time.time()
        webhooks.append((sent, *request("POST", "/api/webhooks/github", body, headers)))

    def memory() -> None:
        rss.append((time.time(), worker_rss(master), cpu_seconds(master)))

    threads = [
        threading.Thread(target=every, args=(0.05, live, True)),
        threading.Thread(target=every, args=(1.0, hook, True)),
        threading.Thread(target=every, args=(0.5, memory, False)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(1.0, until - time.time() + 15))
    stop.set()
    out.send(
        {
            "liveness": liveness,
            "webhooks": webhooks,
            "rss": [(t, {str(k): v for k, v in s.items()}) for t, s, _ in rss],
            "cpu": [(t, c) for t, _, c in rss],
        }
    )
    out.close()


# --- the attackers ----------------------------------------------------------------------------


def first_line(data: bytes) -> object:
    """The status of an HTTP answer's first bytes, 'closed' for none."""
    if not data:
        return "closed"
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return "garbled"


class Attack:
    def __init__(self, args):
        self.args = args
        self.sources = [f"127.0.1.{i}" for i in range(1, args.sources + 1)]
        self.deadline = 0.0
        self.answers: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.answered_at: dict[str, list[tuple[float, object]]] = collections.defaultdict(list)
        self.opened = collections.Counter()
        self.refused = collections.Counter()
        self.lifetimes: dict[str, list[float]] = collections.defaultdict(list)
        self.stream_sockets: list[socket.socket] = []
        self.body_progress: list[int] = []

    def source(self, n: int) -> str:
        return self.sources[n % len(self.sources)]

    async def connect(self, kind: str, n: int, rcvbuf: int | None = None):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((self.source(n), 0))
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (HOST, PORT)), 10)
        except (OSError, TimeoutError) as error:
            sock.close()
            self.refused[kind] += 1
            self.answers[kind][f"connect failed ({type(error).__name__})"] += 1
            return None
        self.opened[kind] += 1
        return sock

    async def read_answer(self, kind: str, sock: socket.socket) -> None:
        """Wait (until the deadline) for the server to answer or close; count how, and how long
        the connection lasted."""
        loop = asyncio.get_running_loop()
        opened = time.time()
        try:
            data = await asyncio.wait_for(
                loop.sock_recv(sock, 256), max(0.1, self.deadline - time.time())
            )
            answer = first_line(data)
        except TimeoutError:
            answer = "still waiting"
        except OSError as error:
            answer = f"closed ({type(error).__name__})"
        self.answers[kind][answer] += 1
        if answer != "still waiting":
            self.answered_at[kind].append((time.time(), answer))
            self.lifetimes[kind].append(time.time() - opened)

    async def slow_header(self, n: int) -> None:
        """One slow head after another until the deadline: a socket the server closes is
        replaced by a new one (at most one connection per RECONNECT_AFTER seconds)."""
        while time.time() < self.deadline:
            began = time.monotonic()
            await self.one_slow_header(n)
            if not self.args.reconnect:
                return
            await asyncio.sleep(max(0.0, RECONNECT_AFTER - (time.monotonic() - began)))

    async def one_slow_header(self, n: int) -> None:
        sock = await self.connect("slow headers", n)
        if sock is None:
            return
        loop = asyncio.get_running_loop()
        reader = asyncio.create_task(self.read_answer("slow headers", sock))
        head = b"GET /health/liveness HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        try:
            await loop.sock_sendall(sock, head[:10])
            rest = iter(head[10:] + b"a" * 10_000)
            while time.time() < self.deadline:
                # The next byte in 3 to 7 s, unless the server answers or closes before.
                pause = random.uniform(3, 7)  # noqa: S311 -- pacing, not secrets
                await asyncio.wait([reader], timeout=min(pause, self.deadline - time.time()))
                if reader.done() or time.time() >= self.deadline:
                    break
                await loop.sock_sendall(sock, bytes([next(rest)]))
        except OSError:
            pass
        await reader
        sock.close()

    async def stalled_body(self, n: int) -> None:
        sock = await self.connect("stalled bodies", n)
        if sock is None:
            return
        loop = asyncio.get_running_loop()
        reader = asyncio.create_task(self.read_answer("stalled bodies", sock))
        head = (
            "POST /api/webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nX-GitHub-Event: issues\r\n"
            f"X-GitHub-Delivery: {uuid.uuid4()}\r\nX-Hub-Signature-256: sha256={'0' * 64}\r\n"
            f"Content-Length: {BODY_BYTES}\r\n\r\n"
        ).encode()
        chunk = b"x" * 262144
        to_send = BODY_BYTES - HELD_BACK
        sent = 0
        # Most of the body over most of the attack, then nothing: the last KiB never comes.
        pace = (self.deadline - time.time()) * 0.7 / (to_send / len(chunk))
        try:
            await loop.sock_sendall(sock, head)
            while sent < to_send and not reader.done() and time.time() < self.deadline:
                piece = chunk[: min(len(chunk), to_send - sent)]
                await asyncio.wait_for(
                    loop.sock_sendall(sock, piece), max(0.1, self.deadline - time.time())
                )
                sent += len(piece)
                await asyncio.sleep(pace)
        except (OSError, TimeoutError):
            pass
        self.body_progress.append(sent)
        await reader
        sock.close()

    async def idle_stream(self, n: int) -> None:
        sock = await self.connect("idle streams", n, rcvbuf=RECV_BUFFER)
        if sock is None:
            return
        head = (
            "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {common.API_TOKEN}\r\nLast-Event-ID: 0\r\n\r\n"
        ).encode()
        try:
            await asyncio.get_running_loop().sock_sendall(sock, head)
        except OSError:
            self.answers["idle streams"]["closed (send failed)"] += 1
            sock.close()
            return
        self.stream_sockets.append(sock)

    def settle_streams(self) -> None:
        """After the attack: how each never-reading stream was answered (its status line) and
        whether the server has closed it (reading what is buffered, a bounded time)."""
        end = time.time() + 10
        for sock in self.stream_sockets:
            sock.setblocking(False)
            first, closed = b"", False
            try:
                while time.time() < end:
                    data = sock.recv(1 << 20)
                    if not data:
                        closed = True
                        break
                    first = first or data
            except BlockingIOError:
                pass
            except OSError:
                closed = True
            status = first_line(first) if first else "nothing sent"
            kind = f"{status}, then closed by the server" if closed else f"{status}, held open"
            if status == "nothing sent" and closed:
                kind = "closed"
            self.answers["idle streams"][kind] += 1
            sock.close()

    async def run(self, marks: dict) -> None:
        args = self.args
        marks["ramp"] = time.time()
        self.deadline = marks["ramp"] + args.ramp + args.duration
        tasks = []
        # Streams and bodies first, then the slow heads 200 at a time: all open within the ramp.
        for n in range(args.streams):
            tasks.append(asyncio.create_task(self.idle_stream(n)))
        for n in range(args.bodies):
            tasks.append(asyncio.create_task(self.stalled_body(n)))
        for start in range(0, args.slow_headers, 200):
            for n in range(start, min(args.slow_headers, start + 200)):
                tasks.append(asyncio.create_task(self.slow_header(n)))
            await asyncio.sleep(0.2)
        await asyncio.sleep(max(0.0, marks["ramp"] + args.ramp - time.time()))
        marks["attack"] = time.time()
        common.log(
            f"open: {dict(self.opened)}; connect failures: {dict(self.refused) or 'none'}; "
            f"attack for {args.duration} s"
        )
        await asyncio.wait(tasks, timeout=max(1.0, self.deadline - time.time() + 15))
        await asyncio.sleep(max(0.0, self.deadline - time.time()))  # idle streams only wait
        marks["end"] = time.time()
        self.settle_streams()


# --- running it -------------------------------------------------------------------------------


def insert_events(count: int) -> float:
    """Post `count` signed webhooks, 16 at a time; the seconds it took."""
    start = time.monotonic()

    def post(n: int):
        body, headers = common.signed_webhook(n, padding=512)
        return request("POST", "/api/webhooks/github", body, headers, timeout=30)[1]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = collections.Counter(pool.map(post, range(count)))
    if set(statuses) - {202}:
        raise SystemExit(f"inserting events: answers {dict(statuses)}")
    return time.monotonic() - start


def measure(args) -> dict:
    src = common.backend_copy()
    state = Path(tempfile.mkdtemp(prefix="agented-bench-hostile-"))
    process = common.start_gunicorn(
        src, PORT, state, common.results_dir(args.name) / "gunicorn.log"
    )
    try:
        common.wait_http(PORT, process=process)
        common.log(f"posting {args.events} signed webhooks")
        insert_seconds = insert_events(args.events)
        time.sleep(1)
        marks = {"start": time.time()}
        until = marks["start"] + args.baseline + args.ramp + args.duration + args.after
        receive, send = multiprocessing.Pipe(duplex=False)
        prober = multiprocessing.get_context("fork").Process(
            target=probe, args=(process.pid, until, send)
        )
        prober.start()
        time.sleep(args.baseline)
        attack = Attack(args)
        own = os.times()
        asyncio.run(attack.run(marks))
        attacker_cpu = (os.times().user - own.user) + (os.times().system - own.system)
        records = receive.recv() if receive.poll(max(0.0, until - time.time()) + 30) else None
        prober.join(timeout=30)
        if records is None:
            raise SystemExit("the probe process sent no records")
        alive = process.poll() is None
    finally:
        common.stop_gunicorn(process)
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(src.parent, ignore_errors=True)
    return {
        "marks": marks,
        "insert_seconds": insert_seconds,
        "opened": dict(attack.opened),
        "answers": {k: dict(v) for k, v in attack.answers.items()},
        "answered_at": dict(attack.answered_at),
        "lifetimes": {k: common.summary(v) for k, v in attack.lifetimes.items()},
        "body_bytes_sent": common.summary(attack.body_progress),
        "gunicorn_alive_at_end": alive,
        "attacker_cpu_seconds": attacker_cpu,
        **records,
    }


def window(records, start: float, end: float):
    return [r for r in records if start <= r[0] <= end]


def analyse(raw: dict, args) -> dict:
    marks = raw["marks"]
    phases = {
        "before": (marks["start"], marks["ramp"]),
        "under attack": (marks["ramp"], marks["end"]),
        "of which held, after the ramp": (marks["attack"], marks["end"]),
    }
    result = {"phases": {}}
    for phase, (start, end) in phases.items():
        live = window(raw["liveness"], start, end)
        hooks = window(raw["webhooks"], start, end)
        rss = [max(s.values(), default=0.0) for t, s in raw["rss"] if start <= t <= end]
        live_ok = [r[1] for r in live if r[2] == 200]
        hooks_ok = [r[1] for r in hooks if isinstance(r[2], int) and 200 <= r[2] < 300]
        result["phases"][phase] = {
            "seconds": end - start,
            "liveness": {**common.summary(live_ok), "sent": len(live)},
            "liveness_failures": dict(collections.Counter(str(r[2]) for r in live if r[2] != 200)),
            "webhook": {**common.summary(hooks_ok), "sent": len(hooks)},
            "webhook_failures": dict(
                collections.Counter(
                    str(r[2]) for r in hooks if not (isinstance(r[2], int) and 200 <= r[2] < 300)
                )
            ),
            "webhook_slow": sum(r[1] >= GOAL_WEBHOOK for r in hooks),
            "rss_worker_max": max(rss, default=None),
        }
    cpu = [c for t, c in raw["cpu"] if marks["ramp"] <= t <= marks["end"]]
    result["server_cpu_seconds"] = cpu[-1] - cpu[0] if len(cpu) > 1 else None
    result["attacker_cpu_seconds"] = raw["attacker_cpu_seconds"]
    per_worker = collections.defaultdict(float)
    for _, sizes in raw["rss"]:
        for pid, size in sizes.items():
            per_worker[pid] = max(per_worker[pid], size)
    result["rss_max_per_worker"] = dict(per_worker)
    result["workers_seen"] = len(per_worker)
    return result


def goals_of(result: dict) -> list[dict]:
    attack = result["phases"]["under attack"]
    live, hook = attack["liveness"], attack["webhook"]
    live_failed = sum(attack["liveness_failures"].values())
    hook_failed = sum(attack["webhook_failures"].values())
    live_met = live["p99"] is not None and live["p99"] < GOAL_LIVENESS_P99 and live_failed == 0
    hook_met = hook_failed == 0 and attack["webhook_slow"] == 0 and hook["n"] > 0
    rss = max(result["rss_max_per_worker"].values(), default=None)
    return [
        common.goal(
            "§7",
            f"under attack: liveness p99 < {GOAL_LIVENESS_P99 * 1000:.0f} ms, none failed",
            f"p50 {common.fmt(live['median'] and live['median'] * 1000, ' ms', 1)}, "
            f"p99 {common.fmt(live['p99'] and live['p99'] * 1000, ' ms', 1)}, "
            f"max {common.fmt(live['max'] and live['max'] * 1000, ' ms', 0)}; "
            f"{live_failed} of {live['sent']} failed",
            live_met,
        ),
        common.goal(
            "§7",
            f"under attack: every signed webhook acknowledged (2xx) in < "
            f"{GOAL_WEBHOOK * 1000:.0f} ms",
            f"p99 {common.fmt(hook['p99'] and hook['p99'] * 1000, ' ms', 0)}, "
            f"max {common.fmt(hook['max'] and hook['max'] * 1000, ' ms', 0)}; "
            f"{hook_failed} of {hook['sent']} not acknowledged, "
            f"{attack['webhook_slow']} slower than {GOAL_WEBHOOK * 1000:.0f} ms",
            hook_met,
        ),
        common.goal(
            "§7",
            f"RSS of each worker < {GOAL_RSS_MB:.0f} MB",
            f"max {common.fmt(rss, ' MB', 0)}",
            rss is not None and rss < GOAL_RSS_MB,
        ),
    ]


def tables(raw: dict, result: dict, args) -> str:
    rows = []
    for phase, p in result["phases"].items():
        live, hook = p["liveness"], p["webhook"]
        failures = ", ".join(f"{v} {k}" for k, v in p["liveness_failures"].items()) or "0"
        hook_failures = ", ".join(f"{v} {k}" for k, v in p["webhook_failures"].items()) or "0"
        rows.append(
            [
                f"{phase} ({p['seconds']:.0f} s)",
                live["sent"],
                common.fmt(live["median"] and live["median"] * 1000, " ms", 1),
                common.fmt(live["p95"] and live["p95"] * 1000, " ms", 1),
                common.fmt(live["p99"] and live["p99"] * 1000, " ms", 1),
                common.fmt(live["max"] and live["max"] * 1000, " ms", 0),
                failures,
                hook["sent"],
                common.fmt(hook["median"] and hook["median"] * 1000, " ms", 0),
                common.fmt(hook["p99"] and hook["p99"] * 1000, " ms", 0),
                common.fmt(hook["max"] and hook["max"] * 1000, " ms", 0),
                hook_failures,
                common.fmt(p["rss_worker_max"], " MB", 0),
            ]
        )
    text = common.table(
        [
            "",
            "liveness",
            "p50",
            "p95",
            "p99",
            "max",
            "failed",
            "signed webhooks",
            "p50",
            "p99",
            "max",
            "not 2xx",
            "largest worker RSS",
        ],
        rows,
    )
    goals = goals_of(result)
    text += "\n" + common.table(
        ["goal", "measured", ""],
        [[g["goal"], g["measured"], common.verdict(g["met"])] for g in goals],
    )
    per_worker = ", ".join(
        common.fmt(v, " MB", 0) for v in sorted(result["rss_max_per_worker"].values())
    )
    text += (
        f"\nLargest RSS of each worker over the run: {per_worker} "
        f"({result['workers_seen']} worker processes seen"
        f"{'' if raw['gunicorn_alive_at_end'] else '; the master had exited by the end'}).\n"
    )
    attack = result["phases"]["under attack"]
    text += (
        f"\nCPU while under attack ({attack['seconds']:.0f} s, 2 cores at most): Gunicorn "
        f"{common.fmt(result['server_cpu_seconds'], ' s', 1)}, the attacking process "
        f"{common.fmt(result['attacker_cpu_seconds'], ' s', 1)}.\n"
    )
    text += "\nHow the attackers were answered (by the end of the attack):\n\n"
    wanted = {
        "idle streams": args.streams,
        "stalled bodies": args.bodies,
        "slow headers": args.slow_headers,
    }
    rows = []
    for kind, count in wanted.items():
        answers = raw["answers"].get(kind, {})
        times = raw["answered_at"].get(kind, [])
        ramp = raw["marks"]["ramp"]
        when = (
            f"{min(t for t, _ in times) - ramp:.1f}{DASH}{max(t for t, _ in times) - ramp:.1f} s"
            if times
            else "\N{EN DASH}"
        )
        life = raw["lifetimes"].get(kind, {})
        rows.append(
            [
                f"{count} {kind}",
                raw["opened"].get(kind, 0),
                "; ".join(
                    f"{v} {common.TIMES} {k}"
                    for k, v in sorted(answers.items(), key=lambda x: -x[1])
                ),
                when,
                f"{common.fmt(life.get('median'), ' s', 1)} / "
                f"{common.fmt(life.get('max'), ' s', 1)}",
            ]
        )
    text += common.table(
        [
            "attackers",
            "connections",
            "answers",
            "answered (s after the ramp began)",
            "lifetime of those answered, median / max",
        ],
        rows,
    )
    sent = raw["body_bytes_sent"]
    text += (
        f"\n{args.events} events inserted first (signed webhooks, {raw['insert_seconds']:.1f} s); "
        f"attackers from {args.sources} addresses (127.0.1.1{DASH}127.0.1.{args.sources}), "
        f"{args.ramp:.0f} s of ramp-up, {args.duration:.0f} s of attack; stalled bodies sent "
        f"{common.fmt(sent['median'] and sent['median'] / 2**20, ' MiB', 1)} each (median), "
        f"{common.fmt(sent['max'] and sent['max'] / 2**20, ' MiB', 1)} at most, "
        f"of {BODY_BYTES / 2**20:.0f} MiB declared.\n"
    )
    return text


def chart(raw: dict, directory: Path) -> None:
    plt = common.pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    zero = raw["marks"]["start"]
    for records, label, size in (
        (raw["liveness"], "GET /health/liveness", 3),
        (raw["webhooks"], "signed webhook", 10),
    ):
        ok = [(r[0] - zero, max(r[1], 1e-4) * 1000) for r in records if r[2] in (200, 202)]
        bad = [(r[0] - zero, max(r[1], 1e-4) * 1000) for r in records if r[2] not in (200, 202)]
        common.scatter_outcomes(top, ok, bad, label=label, size=size, failed_size=12)
    top.axhline(GOAL_LIVENESS_P99 * 1000, color="tab:blue", ls="--", lw=1, label="50 ms")
    top.axhline(GOAL_WEBHOOK * 1000, color="tab:orange", ls="--", lw=1, label="250 ms")
    top.set_yscale("log")
    top.set_ylabel("latency (ms)")
    top.set_title("A well-behaved client's requests while hostile clients hold the workers")
    top.legend(fontsize=8, loc="upper left")
    workers = sorted({pid for _, sizes in raw["rss"] for pid in sizes})
    for pid in workers:
        points = [(t - zero, s[pid]) for t, s in raw["rss"] if pid in s]
        bottom.plot([x for x, _ in points], [y for _, y in points], label=f"worker {pid}")
    bottom.axhline(GOAL_RSS_MB, color="red", ls="--", lw=1, label=f"{GOAL_RSS_MB:.0f} MB")
    bottom.set_ylabel("RSS (MB)")
    bottom.set_xlabel("seconds")
    bottom.set_title("RSS of each Gunicorn worker")
    bottom.legend(fontsize=8, loc="upper left")
    for ax in (top, bottom):
        ax.axvspan(
            raw["marks"]["ramp"] - zero, raw["marks"]["attack"] - zero, color="grey", alpha=0.1
        )
        ax.axvspan(
            raw["marks"]["attack"] - zero, raw["marks"]["end"] - zero, color="red", alpha=0.07
        )
    fig.tight_layout()
    fig.savefig(directory / "hostile.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=400)
    parser.add_argument("--bodies", type=int, default=50)
    parser.add_argument("--slow-headers", type=int, default=2000)
    parser.add_argument("--events", type=int, default=3000, help="events inserted first")
    parser.add_argument(
        "--no-reconnect",
        dest="reconnect",
        action="store_false",
        help="a slow-header socket the server closes is not replaced",
    )
    parser.add_argument("--sources", type=int, default=50, help="attacker addresses 127.0.1.N")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds before the attack")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds to open every attacker")
    parser.add_argument("--duration", type=float, default=35.0, help="seconds of attack")
    parser.add_argument("--after", type=float, default=5.0, help="seconds measured after it")
    parser.add_argument(
        "--name",
        default=NAME,
        help="results into bench/results/NAME/ (report.py copies only hostile's)",
    )
    args = parser.parse_args()
    if not 1 <= args.sources <= 254:
        raise SystemExit("--sources must be 1 to 254")
    for name in ("duration", "ramp", "baseline", "after"):
        if not 0 <= getattr(args, name) <= 120:
            raise SystemExit(f"--{name} must be 0 to 120 s")
    # Stopped from outside: leave through the finally blocks, which stop Gunicorn.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = args.streams + args.bodies + args.slow_headers + 256
    if soft < needed:  # like `ulimit -n`: one descriptor per attacker
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed * 2), hard))
    directory = common.results_dir(args.name)
    raw = measure(args)
    result = analyse(raw, args)
    chart(raw, directory)
    common.save(
        args.name,
        {
            "goals": goals_of(result),
            "settings": vars(args),
            **result,
            "answers": raw["answers"],
            "opened": raw["opened"],
            "lifetimes": raw["lifetimes"],
            "raw": {k: raw[k] for k in ("marks", "liveness", "webhooks", "rss", "cpu")},
        },
        tables(raw, result, args),
    )


if __name__ == "__main__":
    main()
