# /// script
# requires-python = ">=3.11"
# dependencies = ["matplotlib>=3.8"]
# ///
"""§1 Requests through a crash: steady load while the Gunicorn master is SIGKILLed.

Converges a systemd test host with playbooks/site.yml, then, for each variant (the role's
defaults: socket activation on, agented and its standby on the socket, KillMode=control-group and
RestartSec=3; the same with RestartSec=1; one instance, agented_backend_standby false, with
RestartSec=3 and 1; one instance with KillMode=mixed as a systemd drop-in, the former default;
socket activation off, which has no standby): 50 requests/s from inside the host to its own
127.0.0.1 while agented's master is SIGKILLed 10 times (each kill once the service has been ready
for a second), in --runs consecutive runs. Reports failed requests and kill-to-ready (SIGKILL to
readiness 200 from a worker of a live master: the new one, or the standby's), with where that time
goes according to systemd's journal for one instance, and whether every run met the goals.

    uv run bench/crash.py [--kills 10] [--runs 1] [--rate 50] [--keep]
                          [--variants on,on-1s,one,one-1s,mixed,off]
"""

from __future__ import annotations

import argparse
import json

import common

NAME = "crash"
HOST = "agented-bench-crash"
LABELS = {
    "on": "agented and its standby on the socket, RestartSec=3 (default)",
    "on-1s": "agented and its standby on the socket, RestartSec=1",
    "one": "one instance (agented_backend_standby: false), RestartSec=3",
    "one-1s": "one instance, RestartSec=1",
    "mixed": "one instance + KillMode=mixed (the former default)",
    "off": "socket activation off (no standby)",
}
# The variants that run agented_backend_standby, and those with RestartSec=1.
WITH_STANDBY = {"on", "on-1s"}
RESTART_SEC_1 = {"on-1s", "one-1s"}


# KillMode=mixed, the former default: when the master dies, systemd SIGKILLs the orphaned workers
# with requests in hand, where KillMode=control-group (the unit's) SIGTERMs them.
MIXED_DROP_IN = "/etc/systemd/system/agented.service.d/bench-kill-mode-mixed.conf"
MIXED_UNIT = "[Service]\nKillMode=mixed\n"

# agented_backend_standby (the default): a second Gunicorn, booted and serving, that systemd hands
# the same listening socket (Sockets=). When one master dies its workers stop accepting and the
# other instance's workers take every new connection, so nothing waits for the restart.
STANDBY = "agented-standby.service"


def measure(host: common.Host, variant: str, args) -> dict:
    directory = common.results_dir(NAME)
    socket_activation = variant != "off"
    standby = variant in WITH_STANDBY
    inventory = common.write_inventory(directory / "inventory.json", [host.name])
    host.sh(f"rm -f {MIXED_DROP_IN} && systemctl daemon-reload")
    if variant == "mixed":
        host.sh(
            f"mkdir -p $(dirname {MIXED_DROP_IN})"
            f" && printf '{MIXED_UNIT}' > {MIXED_DROP_IN}"
            " && systemctl daemon-reload"
        )
    common.log(f"converging: {LABELS[variant]}")
    common.converge(
        inventory,
        directory / f"converge-{variant}.log",
        {
            "agented_backend_socket_activation": socket_activation,
            "agented_backend_src": str(args.src),
            "agented_backend_restart_sec": 1 if variant in RESTART_SEC_1 else 3,
            "agented_backend_standby": standby,
        },
    )
    restart_sec = float(
        host.exec("systemctl", "show", "agented", "--property=RestartUSec", "--value")
        .stdout.strip()
        .rstrip("s")
        or 0
    )
    runs = [one_run(host, variant, args, n) for n in range(args.runs)]
    kills = [kill for run in runs for kill in run["kills"]]
    records = [record for run in runs for record in run["records"]]
    # With a standby, the first answers after the kill come from it, not from a new master.
    first_answers = [
        k["breakdown"]["first_answer"]
        for k in kills
        if "first_answer" in k["breakdown"] and not standby
    ]
    for run in runs:
        del run["records"]
    return {
        "variant": variant,
        "label": LABELS[variant],
        "socket_activation": socket_activation,
        "restart_sec": restart_sec,
        "requests": sum(run["requests"] for run in runs),
        "failed": sum(run["failed"] for run in runs),
        "failures": [f for run in runs for f in run["failures"]][:50],
        "duration": sum(run["duration"] for run in runs),
        "kills": kills,
        "runs": runs,
        "kill_to_ready": common.summary([k["seconds"] for k in kills if k["seconds"] is not None]),
        "kill_to_first_answer": common.summary(first_answers),
        "latency": common.summary([r[1] for r in records if isinstance(r[2], int)]),
        "phases": None if standby else phases(kills),
    }


def one_run(host: common.Host, variant: str, args, n: int) -> dict:
    """--kills SIGKILLs under load; the run's load is kept as load-VARIANT[-N].json."""
    directory = common.results_dir(NAME)
    name = f"load-{variant}" + (f"-{n + 1}" if n else "") + ".json"
    # Each run starts with a clean start-limit counter: 10 kills are 10 starts within a minute.
    host.exec("systemctl", "reset-failed", "agented")
    common.log(f"run {n + 1} of {args.runs}: {args.kills} SIGKILLs under {args.rate:g} requests/s")
    summary = host.inhost(
        "load.py",
        "--rate",
        str(args.rate),
        "--seconds",
        "300",
        "--kills",
        str(args.kills),
        "--settle",
        "1",
        "--out",
        "/root/load.json",
        *(["--standby", STANDBY] if variant in WITH_STANDBY else []),
        timeout=400,
    )
    host.get("/root/load.json", directory / name)
    records = json.loads((directory / name).read_text())["records"]
    for kill in summary["kills"]:
        first_answer(kill, records)
    seconds = [k["seconds"] for k in summary["kills"] if k["seconds"] is not None]
    return {
        "load": name,
        "load_average": common.load_average(),
        "requests": summary["requests"],
        "failed": summary["failed"],
        "failures": summary["failures"],
        "duration": summary["duration"],
        "kills": summary["kills"],
        "kill_to_ready": common.summary(seconds),
        "records": records,
    }


def first_answer(kill: dict, records: list) -> float | None:
    """Seconds from the kill to the first request answered by the new master (the first answer
    after its READY=1, when systemd has seen every old process gone); also noted in the kill's
    breakdown."""
    ready = kill["breakdown"].get("new_master_ready")
    if ready is None:
        return None
    done = [
        r[0] + r[1] for r in records if isinstance(r[2], int) and r[0] + r[1] > kill["at"] + ready
    ]
    if not done:
        return None
    kill["breakdown"]["first_answer"] = min(done) - kill["at"]
    return kill["breakdown"]["first_answer"]


def phases(kills: list[dict]) -> dict:
    """Median seconds of each step of a kill-to-ready, from the journal marks and the load's
    answers."""
    steps = {
        "old processes gone": ("", "stopped"),
        "RestartSec wait": ("stopped", "restart_scheduled"),
        "new master up (READY=1)": ("restart_scheduled", "new_master_ready"),
        "a worker boots, first request answered": ("new_master_ready", "first_answer"),
        "queued requests served, readiness 200": ("first_answer", ""),
    }
    out = {}
    for label, (first, last) in steps.items():
        values = []
        for kill in kills:
            marks = {"": 0.0, **kill["breakdown"]}
            end = kill["seconds"] if last == "" else marks.get(last)
            begin = marks.get(first)
            if end is not None and begin is not None:
                values.append(end - begin)
        out[label] = common.summary(values)
    return out


def chart(runs: list[dict]) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 3.2 * len(runs)), sharex=True, squeeze=False)
    axes = axes[:, 0]
    for ax, run in zip(axes, runs, strict=True):
        records = json.loads((common.results_dir(NAME) / run["runs"][0]["load"]).read_text())[
            "records"
        ]
        first_kills = run["runs"][0]["kills"]
        common.plot_requests(ax, records)
        for i, kill in enumerate(first_kills):
            ax.axvline(
                kill["at"], color="grey", lw=0.8, ls="--", label="SIGKILL" if i == 0 else None
            )
        ax.set_yscale("log")
        ax.set_ylabel("response time (s)")
        first = run["runs"][0]
        ax.set_title(f"{run['label']}: {first['failed']} of {first['requests']} requests failed")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("seconds since the load started (request sent at)")
    fig.tight_layout()
    fig.savefig(common.results_dir(NAME) / "crash.png")


def tables(runs: list[dict]) -> str:
    rows = []
    for run in runs:
        k = run["kill_to_ready"]
        goal = run["restart_sec"] + 0.5
        rows.append(
            [
                run["label"],
                len(run["kills"]),
                f"{run['requests']} in {run['duration']:.0f} s",
                run["failed"],
                common.verdict(run["failed"] == 0),
                common.fmt(k["median"], " s"),
                common.fmt(k["p95"], " s"),
                common.fmt(k["max"], " s"),
                f"≤ {goal:g} s: " + common.verdict(k["p95"] is not None and k["p95"] <= goal),
                f"{common.fmt(run['kill_to_first_answer']['median'], ' s')} / "
                f"{common.fmt(run['kill_to_first_answer']['p95'], ' s')}",
            ]
        )
    text = common.table(
        [
            "variant",
            "kills",
            "requests",
            "failed",
            "goal 0",
            "kill-to-ready p50",
            "p95",
            "max",
            "goal RestartSec + 0.5 s (p95)",
            "kill to first answer p50 / p95",
        ],
        rows,
    )
    text += "\nWhere kill-to-ready goes (median / p95 of each step, from systemd's journal):\n\n"
    single = [run for run in runs if run["phases"]]
    labels = list(single[0]["phases"]) if single else []
    rows = [
        [label]
        + [
            f"{common.fmt(run['phases'][label]['median'], ' s')} / "
            f"{common.fmt(run['phases'][label]['p95'], ' s')}"
            for run in single
        ]
        for label in labels
    ]
    text += common.table(["step"] + [r["label"] for r in single], rows)
    text += "\nEach run (the machine is shared: its load average at the end of the run):\n\n"
    text += runs_table(runs)
    text += "\nResponse time of the requests that were answered:\n\n"
    rows = [
        [
            r["label"],
            common.fmt(r["latency"]["median"] * 1000, " ms", 1),
            common.fmt(r["latency"]["p95"] * 1000, " ms", 1),
            common.fmt(r["latency"]["max"], " s"),
        ]
        for r in runs
    ]
    text += common.table(["variant", "p50", "p95", "max"], rows)
    return text


def summarize(runs: list[dict]) -> list[dict]:
    """The goals of this benchmark and what was measured, for the summary of docs/BENCHMARKS.md:
    with several runs, a goal is met only if every run met it."""
    goals = []
    for run in runs:
        k, first = run["kill_to_ready"], run["kill_to_first_answer"]
        limit = run["restart_sec"] + 0.5
        p95s = [r["kill_to_ready"]["p95"] for r in run["runs"]]
        each = f" in each of {len(run['runs'])} runs" if len(run["runs"]) > 1 else ""
        goals.append(
            common.goal(
                "§1",
                f"{run['label']}: 0 failed requests through {len(run['runs'][0]['kills'])}"
                f" SIGKILLs{each}",
                f"{run['failed']} of {run['requests']} failed"
                + (f" ({', '.join(str(r['failed']) for r in run['runs'])})" if each else ""),
                all(r["failed"] == 0 for r in run["runs"]),
            )
        )
        goals.append(
            common.goal(
                "§1",
                f"{run['label']}: kill-to-ready ≤ RestartSec + 0.5 s = {limit:g} s (p95){each}",
                f"p50 {common.fmt(k['median'], ' s')}, p95 {common.fmt(k['p95'], ' s')}"
                + (
                    f" (p95 of each run: {', '.join(common.fmt(p, ' s') for p in p95s)})"
                    if each
                    else ""
                )
                + f"; first answer p50 {common.fmt(first['median'], ' s')}, "
                f"p95 {common.fmt(first['p95'], ' s')}",
                all(p is not None and p <= limit for p in p95s),
            )
        )
    return goals


def runs_table(runs: list[dict]) -> str:
    """One row per consecutive run, with the machine's load average at its end."""
    rows = []
    for run in runs:
        limit = run["restart_sec"] + 0.5
        for n, one in enumerate(run["runs"], 1):
            k = one["kill_to_ready"]
            rows.append(
                [
                    run["label"],
                    n,
                    f"{one['failed']} of {one['requests']}",
                    common.fmt(k["median"], " s"),
                    common.fmt(k["p95"], " s"),
                    common.verdict(
                        one["failed"] == 0 and k["p95"] is not None and k["p95"] <= limit
                    ),
                    " / ".join(f"{x:.2f}" for x in one["load_average"]),
                ]
            )
    return common.table(
        [
            "variant",
            "run",
            "failed",
            "kill-to-ready p50",
            "p95",
            "goals met",
            "load average 1/5/15 min",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument(
        "--runs", type=int, default=1, help="consecutive runs of --kills kills per variant"
    )
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument(
        "--variants",
        default="on,on-1s,one,one-1s,mixed,off",
        help="comma-separated, of: " + ", ".join(f"{k} ({v})" for k, v in LABELS.items()),
    )
    parser.add_argument("--keep", action="store_true", help="leave the test host running")
    args = parser.parse_args()
    args.src = common.backend_copy()
    with common.Host(HOST, keep=args.keep) as host:
        runs = [measure(host, variant, args) for variant in args.variants.split(",")]
    chart(runs)
    goals = summarize(runs)
    common.save(
        NAME,
        {
            "goals": goals,
            "goal": {"failed": 0, "kill_to_ready": "RestartSec + 0.5 s"},
            "load": {
                "rate": args.rate,
                "kills": args.kills,
                "runs": args.runs,
                "path": "/api/executions?limit=1",
            },
            "runs": runs,
        },
        tables(runs),
    )


if __name__ == "__main__":
    main()
