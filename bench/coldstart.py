# /// script
# requires-python = ">=3.11"
# dependencies = ["matplotlib>=3.8"]
# ///
"""§2 Cold start: from process start to /health/readiness = 200, on loopback.

Starts Gunicorn as the service does (`gunicorn -c gunicorn.conf.py`, the backend's own virtualenv,
default workers, bytecode compiled as the role compiles it) from a copy of backend/ without any
.env, listening on 127.0.0.1, and polls readiness every 5 ms until it answers 200. Twenty starts
with the database already there (a restart) and twenty with none (a first start: migrations run).
bench/coldstart_hooks.py marks each step, so the time is broken down; python -X importtime shows
which imports cost the most.

    uv run bench/coldstart.py [--runs 20]
"""

from __future__ import annotations

import argparse
import collections
import http.client
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import common

NAME = "coldstart"
PORT = 20871
GOAL = 0.6
# Steps in the order they happen, each measured from the previous mark (first: from the start).
STEPS = [
    ("config_loaded", "master: Python, Gunicorn, gunicorn.conf.py"),
    ("migrations_start", "master: Gunicorn setup before on_starting"),
    ("migrations_done", "master: migrations (db.migrate in on_starting)"),
    ("master_listening", "master: listen, READY"),
    ("worker_forked", "fork the first worker"),
    ("gevent_patched", "worker: gevent monkey-patching"),
    ("app_imported", "worker: import app.factory (Flask, ...)"),
    ("app_created", "worker: create_app()"),
    ("worker_serving", "worker: enter the serving loop"),
    ("ready", "first readiness 200"),
]


def ready(timeout: float = 1.0) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    try:
        connection.request("GET", "/health/readiness")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def start_once(src: Path, state: Path, marks: Path) -> dict:
    """One start; returns the seconds from Popen to each mark of the first worker to serve."""
    marks.unlink(missing_ok=True)
    env = common.local_env(
        PORT, state, BENCH_MARKS=str(marks), BENCH_GUNICORN_CONF=str(src / "gunicorn.conf.py")
    )
    gunicorn = common.BACKEND / ".venv" / "bin" / "gunicorn"
    start = time.monotonic()
    process = subprocess.Popen(
        [str(gunicorn), "-c", str(common.BENCH / "coldstart_hooks.py")],
        cwd=src,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        while not ready():
            if process.poll() is not None:
                raise SystemExit(
                    f"gunicorn exited {process.returncode}: "
                    f"{process.stderr.read().decode()[-2000:]}"
                )
            if time.monotonic() - start > 30:
                raise SystemExit("gunicorn not ready after 30 s")
            time.sleep(0.005)
        elapsed = time.monotonic() - start
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    lines = [line.split() for line in marks.read_text().splitlines()]
    master = min(lines, key=lambda x: float(x[1]))[2]
    # The worker that served first: the first one to enter its serving loop.
    serving = [x for x in lines if x[0] == "worker_serving"]
    first = min(serving, key=lambda x: float(x[1]))[2]
    result = {"ready": elapsed}
    for name, seconds, pid in lines:
        if pid in (master, first) and name not in result:
            result[name] = float(seconds) - start
    return result


def breakdown(runs: list[dict]) -> list[tuple[str, dict]]:
    rows, previous = [], "start"
    for key, label in STEPS:
        values = [run[key] - run.get(previous, 0.0) for run in runs if key in run]
        rows.append((label, common.summary(values)))
        previous = key
    return rows


MASTER_CODE = (
    "import runpy, gunicorn.app.wsgiapp, gunicorn.workers.ggevent; "
    "runpy.run_path('gunicorn.conf.py')"
)
WORKER_CODE = "from gevent import monkey; monkey.patch_all(); import app.factory"
MARKER = "--- fork ---"
# How the import tables name a module with what imported it: "a > b", b imported by a.
IMPORTED_BY = " \N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK} "


def importtime(src: Path, runs: int = 5) -> tuple[list, list]:
    """The costliest imports (python -X importtime, median cumulative ms over a few runs) of the
    master (Gunicorn, gunicorn.conf.py) and then of a worker, which inherits what the master
    imported (gevent's monkey-patching, `import app.factory`); down to the third level, each
    named with what imported it ("a \N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK} b": b imported
    by a)."""
    python = common.BACKEND / ".venv" / "bin" / "python"
    code = f"{MASTER_CODE}; import sys; print({MARKER!r}, file=sys.stderr); {WORKER_CODE}"
    samples = {"master": collections.defaultdict(list), "worker": collections.defaultdict(list)}
    for _ in range(runs):
        out = subprocess.run(
            [str(python), "-X", "importtime", "-c", code],
            check=True,
            cwd=src,
            capture_output=True,
            text=True,
            env={"PATH": os.environ["PATH"]},
        ).stderr
        master, _, worker = out.partition(MARKER)
        for side, text in (("master", master), ("worker", worker)):
            stack: list[str] = []
            # A module is listed after everything it imported, indented by two spaces per level.
            for line in reversed(text.splitlines()):
                match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)", line)
                if not match:
                    continue
                depth = len(match[2]) // 2
                stack = [*stack[:depth], match[3]]
                if depth <= 2:
                    samples[side][IMPORTED_BY.join(stack)].append(int(match[1]) / 1000)
    result = []
    for side in ("master", "worker"):
        medians = {name: sorted(v)[len(v) // 2] for name, v in samples[side].items()}
        result.append(sorted(medians.items(), key=lambda item: -item[1])[:12])
    return result[0], result[1]


def chart(restart: list[tuple[str, dict]], first: list[tuple[str, dict]], directory: Path) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for y, rows in enumerate([restart, first]):
        left = 0.0
        for i, (label, stats) in enumerate(rows):
            width = stats["median"] or 0.0
            ax.barh(y, width, left=left, color=plt.cm.tab20(i), label=label if y == 0 else None)
            left += width
    ax.axvline(GOAL, color="red", ls="--", lw=1, label=f"goal {GOAL} s")
    ax.set_yticks([0, 1], ["restart", "first start"])
    ax.set_xlabel("seconds from process start (median of each step)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title("Cold start: where the time goes")
    fig.tight_layout()
    fig.savefig(directory / "coldstart.png")


def milliseconds(step: dict) -> str:
    """Median / p95 of a step, in milliseconds."""
    median, p95 = (common.fmt(step[key] * 1000, " ms", 0) for key in ("median", "p95"))
    return f"{median} / {p95}"


def summarize(totals: dict) -> list[dict]:
    """The goals of this benchmark and what was measured, for the summary of docs/BENCHMARKS.md."""
    goals = [
        common.goal(
            "§2",
            f"cold start to readiness 200 ≤ {GOAL} s (median of {s['n']}, {kind})",
            f"median {s['median']:.3f} s, p95 {s['p95']:.3f} s",
            s["median"] <= GOAL,
        )
        for kind, s in totals.items()
    ]
    return goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if not (common.BACKEND / ".venv" / "bin" / "gunicorn").exists():
        raise SystemExit("backend/.venv has no gunicorn: run `just ensure-backend` first")
    directory = common.results_dir(NAME)
    src = common.backend_copy()
    python = common.BACKEND / ".venv" / "bin" / "python"
    common.run([str(python), "-m", "compileall", "-q", str(src)])  # as the role does on the host
    work = Path(tempfile.mkdtemp(prefix="agented-bench-coldstart-"))
    marks = work / "marks"
    try:
        start_once(src, work / "warmup", marks)  # page cache and bytecode of the virtualenv
        restarts, firsts = [], []
        existing = work / "existing"
        start_once(src, existing, marks)
        for i in range(args.runs):
            common.log(f"start {i + 1}/{args.runs}")
            restarts.append(start_once(src, existing, marks))
            fresh = work / f"fresh-{i}"
            firsts.append(start_once(src, fresh, marks))
            shutil.rmtree(fresh)
        master_imports, worker_imports = importtime(src)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(src.parent, ignore_errors=True)

    restart_steps, first_steps = breakdown(restarts), breakdown(firsts)
    chart(restart_steps, first_steps, directory)
    totals = {
        "restart": common.summary(r["ready"] for r in restarts),
        "first start": common.summary(r["ready"] for r in firsts),
    }
    text = common.table(
        ["start", "runs", "median", "p95", "min", "max", f"goal ≤ {GOAL} s (median)"],
        [
            [
                kind,
                s["n"],
                common.fmt(s["median"], " s", 3),
                common.fmt(s["p95"], " s", 3),
                common.fmt(s["min"], " s", 3),
                common.fmt(s["max"], " s", 3),
                common.verdict(s["median"] <= GOAL),
            ]
            for kind, s in totals.items()
        ],
    )
    text += (
        "\nWhere the time goes (median / p95 of each step, in the master, then the first worker "
        "to serve):\n\n"
    )
    text += common.table(
        ["step", "restart", "first start"],
        [
            [
                label,
                milliseconds(a),
                milliseconds(b),
            ]
            for (label, a), (_, b) in zip(restart_steps, first_steps, strict=True)
        ],
    )
    text += (
        "\nLargest imports (python -X importtime, cumulative, median of 5; "
        f"`a{IMPORTED_BY}b`: b imported by a), "
        "in the master (Gunicorn and gunicorn.conf.py):\n\n"
    )
    text += common.table(
        ["import", "ms"], [[name, common.fmt(ms, "", 1)] for name, ms in master_imports[:8]]
    )
    text += (
        "\nand in a worker, after what it inherits from the master (gevent's monkey-patching, "
        "then `import app.factory`):\n\n"
    )
    text += common.table(
        ["import", "ms"], [[name, common.fmt(ms, "", 1)] for name, ms in worker_imports[:8]]
    )
    goals = summarize(totals)
    common.save(
        NAME,
        {
            "goals": goals,
            "goal_seconds": GOAL,
            "totals": totals,
            "steps": {"restart": restart_steps, "first start": first_steps},
            "imports": {"master": master_imports, "worker": worker_imports},
            "runs": {"restart": restarts, "first start": firsts},
        },
        text,
    )


if __name__ == "__main__":
    main()
