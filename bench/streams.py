# /// script
# requires-python = ">=3.11"
# dependencies = ["aiohttp>=3.9", "matplotlib>=3.8"]
# ///
"""§4 Event streams: thousands of /api/events clients on one host, each new event delivered to all.

Runs Gunicorn locally as the service does (default workers, gevent), from a copy of backend/ with
no .env, on 127.0.0.1. An asyncio client (aiohttp) opens the streams in batches, measuring the
Gunicorn processes' RSS with none, 1,000 and 2,000 open; then posts one signed GitHub webhook a
second and records when each client receives the event (the `id:` line), for the delivery latency
of every (client, event) pair. RSS is sampled every second throughout (chart).

    uv run bench/streams.py [--clients 2000] [--events 60] [--ramp 4000,6000] [--poll-ms 100,25]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import common

NAME = "streams"
PORT = 20872
URL = f"http://127.0.0.1:{PORT}"
GOAL_P99 = 0.250
BATCH = 100


def rss_mb(master: int) -> dict[int, float]:
    """Resident memory (MB) of the master and each of its children."""
    pids = [master]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == master:
                        pids.append(int(entry))
            except (OSError, ValueError):
                pass
    sizes = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        sizes[pid] = int(line.split()[1]) / 1024
        except OSError:
            pass
    return sizes


def cpu_seconds(master: int) -> float:
    """CPU time (user + system) used so far by the master and its live children."""
    total = 0.0
    for pid in rss_mb(master):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError):
            pass
    return total


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class Bench:
    def __init__(self, master: int):
        self.master = master
        self.session: aiohttp.ClientSession | None = None
        self.open = 0
        self.worker_of: dict[int, int] = {}  # client -> pid of the worker serving its stream
        self.received: dict[int, list[float]] = collections.defaultdict(list)  # event id -> times
        self.sent: dict[int, tuple[float, int]] = {}  # event id -> (posted at, streams open then)
        self.samples: list[dict] = []
        self.receivers: dict[int, list[int]] = collections.defaultdict(list)  # event id -> clients
        self.dropped = 0
        self.closing = False
        self.phase = "idle"

    async def sample_memory(self, stop: asyncio.Event) -> None:
        start = time.monotonic()
        while not stop.is_set():
            sizes = rss_mb(self.master)
            self.samples.append(
                {
                    "t": time.monotonic() - start,
                    "open": self.open,
                    "phase": self.phase,
                    "rss_total": sum(sizes.values()),
                    "rss": sizes,
                }
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def stream(self, client: int, connected: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None)
        pending = b""
        try:
            async with self.session.get(f"{URL}/api/events", timeout=timeout) as response:
                # Whatever arrived at once, not line by line: the client must stay cheaper than the
                # server it measures (both share the same cores).
                async for chunk in response.content.iter_any():
                    now = time.monotonic()
                    *frames, pending = (pending + chunk).split(b"\n\n")
                    for frame in frames:
                        if frame.startswith(b"id: "):
                            event = int(frame[4 : frame.index(b"\n")])
                            self.received[event].append(now)
                            self.receivers[event].append(client)
                        elif b": agented event stream, pid " in frame:
                            self.worker_of[client] = int(frame.rsplit(b" ", 1)[1])
                            self.open += 1
                            connected.set()
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        finally:
            if client in self.worker_of:
                self.open -= 1
                self.dropped += not self.closing
            connected.set()

    async def connect(self, total: int, tasks: list) -> float | None:
        """Open streams up to `total`, BATCH at a time; the seconds it took (None: some never
        opened)."""
        start = time.monotonic()
        while len(tasks) < total:
            events = []
            for _ in range(min(BATCH, total - len(tasks))):
                connected = asyncio.Event()
                tasks.append(asyncio.create_task(self.stream(len(tasks), connected)))
                events.append(connected)
            try:
                await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 60)
            except TimeoutError:
                common.log(f"streams do not open any more: {self.open} open, {len(tasks)} tried")
                return None
        return time.monotonic() - start

    async def post_event(self, n: int) -> int:
        body, headers = common.signed_webhook(n)
        sent = time.monotonic()
        async with self.session.post(
            f"{URL}/api/webhooks/github", data=body, headers=headers
        ) as response:
            answer = await response.json()
            if response.status != 202:
                raise SystemExit(f"webhook answered {response.status}: {answer}")
        self.sent[answer["event_id"]] = (sent, self.open)
        return answer["event_id"]

    async def settle_rss(self, seconds: float = 3.0) -> float:
        await asyncio.sleep(seconds)
        return sum(rss_mb(self.master).values())


async def run(master: int, args) -> dict:
    bench = Bench(master)
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    headers = {"Authorization": f"Bearer {common.API_TOKEN}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        bench.session = session
        sampler = asyncio.create_task(bench.sample_memory(stop))
        tasks: list[asyncio.Task] = []
        memory = {0: await bench.settle_rss()}
        connect_seconds = {}
        for level in sorted({min(1000, args.clients), args.clients}):
            bench.phase = f"connecting to {level}"
            connect_seconds[level] = await bench.connect(level, tasks)
            bench.phase = f"{level} open"
            memory[level] = await bench.settle_rss()
            common.log(f"{bench.open} streams open, RSS {memory[level]:.0f} MB")

        workers = collections.Counter(bench.worker_of.values())  # before any ramp
        bench.phase = "events"
        common.log(f"posting {args.events} events, one every {args.interval} s")
        main_events = []
        cpu = (cpu_seconds(master), own_cpu_seconds())
        for n in range(args.events):
            main_events.append(await bench.post_event(n))
            await asyncio.sleep(args.interval)
        await asyncio.sleep(2)  # the last deliveries
        cpu = {
            "server": (cpu_seconds(master) - cpu[0]) / args.events,
            "client": (own_cpu_seconds() - cpu[1]) / args.events,
        }
        events_memory = [s["rss_total"] for s in bench.samples if s["phase"] == "events"]
        ramp = []
        for level in args.ramp:
            bench.phase = f"connecting to {level}"
            if await bench.connect(level, tasks) is None:
                ramp.append(
                    {
                        "clients": level,
                        "open": bench.open,
                        "rss_total": sum(rss_mb(master).values()),
                        "latency": latency(bench, []),
                    }
                )
                break
            bench.phase = f"ramp {level}"
            ramp_events = []
            for n in range(args.ramp_events):
                ramp_events.append(await bench.post_event(10_000 + level + n))
                await asyncio.sleep(args.interval)
            await asyncio.sleep(2)
            ramp.append(
                {
                    "clients": level,
                    "open": bench.open,
                    "rss_total": sum(rss_mb(master).values()),
                    "latency": latency(bench, ramp_events),
                }
            )
            common.log(f"ramp {level}: {ramp[-1]['open']} open, p99 {ramp[-1]['latency']['p99']}")
        open_at_end = bench.open
        bench.closing = True
        stop.set()
        await sampler
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    slope = trend(bench.samples)
    return {
        "clients": args.clients,
        "events": args.events,
        "interval": args.interval,
        "connect_seconds": connect_seconds,
        "rss_mb": memory,
        "rss_per_1000": (memory[args.clients] - memory[0]) / (args.clients / 1000),
        "rss_events": common.summary(events_memory),
        "rss_slope_mb_per_min": slope,
        "streams_per_worker": dict(workers),
        "open_at_end": open_at_end,
        "dropped": bench.dropped,
        "latency": latency(bench, main_events),
        "per_event": per_event(bench, main_events),
        "cpu_per_event": cpu,
        "by_worker": by_worker(bench, main_events),
        "delays": delays(bench, main_events),
        "ramp": ramp,
        "samples": bench.samples,
    }


def delays(bench: Bench, events) -> list[float]:
    """Seconds from posting each event to each client reading it."""
    return [t - bench.sent[event][0] for event in events for t in bench.received.get(event, [])]


def per_event(bench: Bench, events) -> list[dict]:
    """For each event: when it was posted (s after the first) and its first, median and last
    delivery."""
    first = bench.sent[events[0]][0] if events else 0.0
    rows = []
    for event in events:
        values = sorted(t - bench.sent[event][0] for t in bench.received.get(event, []))
        if values:
            rows.append(
                {
                    "t": bench.sent[event][0] - first,
                    "first": values[0],
                    "median": values[len(values) // 2],
                    "last": values[-1],
                }
            )
    return rows


def by_worker(bench: Bench, events) -> dict:
    """Delivery latency of the streams of each worker."""
    per = collections.defaultdict(list)
    for event in events:
        for t, client in zip(
            bench.received.get(event, []), bench.receivers.get(event, []), strict=True
        ):
            per[bench.worker_of.get(client)].append(t - bench.sent[event][0])
    return {str(pid): common.summary(values) for pid, values in per.items()}


def latency(bench: Bench, events) -> dict:
    """Delivery latency over every (client, event) pair, and how many pairs were never delivered
    (streams open when the event was posted that did not receive it)."""
    values = delays(bench, events)
    missing = sum(max(0, bench.sent[e][1] - len(bench.received.get(e, []))) for e in events)
    return {**common.summary(values), "deliveries": len(values), "missing": missing}


def trend(samples: list[dict]) -> float | None:
    """Least-squares slope of the total RSS while events flow, in MB per minute."""
    points = [(s["t"], s["rss_total"]) for s in samples if s["phase"] == "events"]
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_r = sum(r for _, r in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return 60 * sum((t - mean_t) * (r - mean_r) for t, r in points) / var


def chart(result: dict, seconds: list[float], directory: Path) -> None:
    plt = common.pyplot()
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 9.5))
    samples = result["samples"]
    t = [s["t"] for s in samples]
    top.plot(t, [s["rss_total"] for s in samples], label="RSS, master + workers (MB)")
    top.set_ylabel("MB")
    twin = top.twinx()
    twin.plot(t, [s["open"] for s in samples], color="tab:orange", label="open streams")
    twin.set_ylabel("open streams")
    events = [s["t"] for s in samples if s["phase"] == "events"]
    if events:
        top.axvspan(events[0], events[-1], color="grey", alpha=0.15, label="one event a second")
    top.set_xlabel("seconds")
    top.set_title("Memory while streams open and events flow")
    lines = top.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    top.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=8)
    rows = result["per_event"]
    for key, label in (
        ("last", "last stream"),
        ("median", "median stream"),
        ("first", "first stream"),
    ):
        middle.plot(
            [r["t"] for r in rows], [r[key] * 1000 for r in rows], marker=".", lw=0.8, label=label
        )
    middle.axhline(GOAL_P99 * 1000, color="red", ls="--", lw=1, label="250 ms")
    middle.set_xlabel("seconds since the first event")
    middle.set_ylabel("delivery latency (ms)")
    middle.set_title("Each event: how long its first, median and last stream waited")
    middle.legend(fontsize=8, loc="upper right")
    ms = sorted(d * 1000 for d in seconds)
    if ms:
        bottom.plot(ms, [i / len(ms) for i in range(1, len(ms) + 1)])
    bottom.axvline(GOAL_P99 * 1000, color="red", ls="--", lw=1, label="goal p99 250 ms")
    bottom.set_xlabel("delivery latency (ms): webhook posted → event line read by the client")
    bottom.set_ylabel("fraction of deliveries")
    bottom.set_title(
        f"Delivery latency to {result['clients']} streams "
        f"({result['latency']['deliveries']} deliveries)"
    )
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(directory / "streams.png")


def tables(results: list[dict]) -> str:
    rows = []
    for r in results:
        lat = r["latency"]
        workers = " / ".join(common.fmt(w["p99"] * 1000, "", 0) for w in r["by_worker"].values())
        rows.append(
            [
                r["clients"],
                r["poll_ms"],
                r["events"],
                lat["deliveries"],
                lat["missing"],
                common.fmt(lat["median"] * 1000, " ms", 0),
                common.fmt(lat["p95"] * 1000, " ms", 0),
                common.fmt(lat["p99"] * 1000, " ms", 0),
                common.fmt(lat["max"] * 1000, " ms", 0),
                workers + " ms",
                common.verdict(
                    lat["p99"] is not None and lat["p99"] < GOAL_P99 and lat["missing"] == 0
                ),
            ]
        )
    text = common.table(
        [
            "streams",
            "SSE_POLL_INTERVAL_MS",
            "events",
            "deliveries",
            "missed",
            "p50",
            "p95",
            "p99",
            "max",
            "p99 per worker",
            f"goal p99 < {GOAL_P99 * 1000:.0f} ms",
        ],
        rows,
    )
    for r in results:
        last = [e["last"] for e in r["per_event"]]
        slow = sum(x > GOAL_P99 for x in last)
        text += (
            f"\nSSE_POLL_INTERVAL_MS={r['poll_ms']}: the last stream to get an event waited "
            f"{common.fmt(common.percentile(last, 50) * 1000, ' ms', 0)} (median over events), "
            f"{common.fmt(max(last) * 1000, ' ms', 0)} at most; "
            f"{slow} of {len(last)} events reached some stream "
            f"after more than {GOAL_P99 * 1000:.0f} ms.\n"
        )
    r = results[0]
    text += (
        "\nMemory of the Gunicorn processes (master + workers, RSS; "
        f"SSE_POLL_INTERVAL_MS={r['poll_ms']}):\n\n"
    )
    rows = [[f"{n} streams open", common.fmt(v, " MB", 0)] for n, v in r["rss_mb"].items()]
    rows.append(["**per 1,000 streams**", common.fmt(r["rss_per_1000"], " MB", 1)])
    ev = r["rss_events"]
    rows.append(
        [
            f"while events flow ({r['events']} s), median / max",
            f"{common.fmt(ev['median'], ' MB', 0)} / {common.fmt(ev['max'], ' MB', 0)}",
        ]
    )
    rows.append(["trend while events flow", common.fmt(r["rss_slope_mb_per_min"], " MB/min", 2)])
    text += common.table(["", "RSS"], rows)
    for r in results:
        per_worker = ", ".join(
            str(n) for n in sorted(r["streams_per_worker"].values(), reverse=True)
        )
        text += (
            f"\nSSE_POLL_INTERVAL_MS={r['poll_ms']}: streams per worker {per_worker}; "
            f"open at the end {r['open_at_end']}, dropped by the server {r['dropped']}; "
            f"{r['clients']} streams opened in {r['connect_seconds'][str(r['clients'])]:.1f} s; "
            f"CPU per event: server {r['cpu_per_event']['server'] * 1000:.0f} ms, "
            f"client {r['cpu_per_event']['client'] * 1000:.0f} ms.\n"
        )
    ramp = [x for r in results for x in r["ramp"]]
    if ramp:
        text += "\nBeyond the goal (fewer events per step):\n\n"
        text += common.table(
            ["streams", "open", "RSS", "p50", "p99", "missed"],
            [
                [
                    x["clients"],
                    x["open"],
                    common.fmt(x["rss_total"], " MB", 0),
                    common.fmt(x["latency"]["median"] and x["latency"]["median"] * 1000, " ms", 0),
                    common.fmt(x["latency"]["p99"] and x["latency"]["p99"] * 1000, " ms", 0),
                    x["latency"]["missing"],
                ]
                for x in ramp
            ],
        )
    return text


def summarize(results: list[dict]) -> list[dict]:
    """The goals of this benchmark and what was measured, for the summary of docs/BENCHMARKS.md."""
    goals = []
    for r in results:
        lat = r["latency"]
        goals.append(
            common.goal(
                "§4",
                f"{r['clients']} streams, SSE_POLL_INTERVAL_MS={r['poll_ms']}: "
                f"delivery p99 < {GOAL_P99 * 1000:.0f} ms",
                f"p50 {lat['median'] * 1000:.0f} ms, p95 {lat['p95'] * 1000:.0f} ms, "
                f"p99 {lat['p99'] * 1000:.0f} ms, {lat['missing']} missed",
                lat["p99"] < GOAL_P99 and lat["missing"] == 0,
            )
        )
    r = results[0]
    goals.append(
        common.goal(
            "§4",
            "RSS per 1,000 streams; steady memory while events flow",
            f"{r['rss_per_1000']:.1f} MB per 1,000; trend {r['rss_slope_mb_per_min']:+.2f} MB/min",
            None,
        )
    )
    return goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--events", type=int, default=60)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument(
        "--ramp",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[4000, 6000],
        help="after the main run, more streams in steps (with the first --poll-ms only)",
    )
    parser.add_argument("--ramp-events", type=int, default=15)
    parser.add_argument(
        "--poll-ms",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[100, 25],
        help="SSE_POLL_INTERVAL_MS values to run with; the first (the default, 100) is charted",
    )
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max([args.clients, *args.ramp]) + 256
    if soft < needed:  # like `ulimit -n`: one descriptor per stream
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed * 2), hard))
    directory = common.results_dir(NAME)
    src = common.backend_copy()
    results = []
    try:
        for poll_ms in args.poll_ms:
            common.log(f"SSE_POLL_INTERVAL_MS={poll_ms}")
            result = measure(
                src,
                poll_ms,
                args
                if poll_ms == args.poll_ms[0]
                else argparse.Namespace(**{**vars(args), "ramp": []}),
            )
            if poll_ms == args.poll_ms[0]:
                chart(result, result["delays"], directory)
            result.pop("delays")
            results.append(result)
    finally:
        shutil.rmtree(src.parent, ignore_errors=True)
    goals = summarize(results)
    common.save(
        NAME,
        {
            "goals": goals,
            "goal": {"clients": args.clients, "p99_seconds": GOAL_P99},
            "runs": results,
        },
        tables(results),
    )


def measure(src: Path, poll_ms: int, args) -> dict:
    state = Path(tempfile.mkdtemp(prefix="agented-bench-streams-"))
    gunicorn = common.BACKEND / ".venv" / "bin" / "gunicorn"
    with open(common.results_dir(NAME) / f"gunicorn-{poll_ms}.log", "w") as log:
        process = subprocess.Popen(
            [str(gunicorn), "-c", "gunicorn.conf.py"],
            cwd=src,
            stdout=subprocess.DEVNULL,
            # One load client on loopback stands for thousands of browsers: lift the cap on
            # connections per client address for it.
            env=common.local_env(
                PORT,
                state,
                SSE_POLL_INTERVAL_MS=str(poll_ms),
                GUNICORN_CONNECTIONS_PER_CLIENT="100000",
            ),
            stderr=log,
        )
    try:
        common.wait_http(PORT, process=process)
        result = asyncio.run(run(process.pid, args))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        shutil.rmtree(state, ignore_errors=True)
    result["poll_ms"] = poll_ms
    result["connect_seconds"] = {str(k): v for k, v in result["connect_seconds"].items()}
    return result


if __name__ == "__main__":
    main()
