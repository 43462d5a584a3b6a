# /// script
# requires-python = ">=3.11"
# dependencies = ["matplotlib>=3.8"]
# ///
"""§1 Requests through a crash: steady load while the Gunicorn master is SIGKILLed.

Converges a systemd test host with playbooks/site.yml, then, for each variant (socket activation on,
the default; on with KillMode=control-group as a systemd drop-in, the proposal; the same with
RestartSec=1; socket activation off): 50 requests/s from inside the host to its own 127.0.0.1 while
the master is SIGKILLed 10 times (each kill once the service has been ready for a second). Reports
failed requests and kill-to-ready (SIGKILL to readiness 200 from a worker of the new master), with
where that time goes according to systemd's journal.

    uv run bench/crash.py [--kills 10] [--rate 50] [--variants on,proposal,proposal-1s,off] [--keep]
"""

from __future__ import annotations

import argparse
import json

import common

NAME = "crash"
HOST = "agented-bench-crash"
LABELS = {
    "on": "socket activation on (default)",
    "off": "socket activation off",
    "proposal": "socket activation on + KillMode=control-group (proposal)",
    "proposal-1s": "the same + RestartSec=1",
}


# The proposal (see docs/BENCHMARKS.md): when the master dies, systemd SIGTERMs the workers, which
# answer what they hold and leave, instead of SIGKILLing them (KillMode=mixed).
PROPOSAL_DROP_IN = "/etc/systemd/system/agented.service.d/bench-proposal.conf"
PROPOSAL_UNIT = "[Service]\nKillMode=control-group\n"


def measure(host: common.Host, variant: str, args) -> dict:
    directory = common.results_dir(NAME)
    socket_activation = variant != "off"
    proposal = variant.startswith("proposal")
    mode = variant
    inventory = common.write_inventory(directory / "inventory.json", [host.name])
    host.sh(f"rm -f {PROPOSAL_DROP_IN} && systemctl daemon-reload")
    if proposal:
        host.sh(
            f"mkdir -p $(dirname {PROPOSAL_DROP_IN})"
            f" && printf '{PROPOSAL_UNIT}' > {PROPOSAL_DROP_IN}"
            " && systemctl daemon-reload"
        )
    if (
        socket_activation
        and host.exec("systemctl", "is-active", "agented.socket", check=False).returncode
    ):
        # The role cannot switch a running service to socket activation yet: the socket refuses to
        # start while agented.service holds the port (see docs/BENCHMARKS.md).
        host.exec("systemctl", "stop", "agented.service", check=False)
    common.log(f"converging: {LABELS[variant]}")
    common.converge(
        inventory,
        directory / f"converge-{mode}.log",
        {
            "agented_backend_socket_activation": socket_activation,
            "agented_backend_src": str(args.src),
            **({"agented_backend_restart_sec": 1} if variant == "proposal-1s" else {}),
        },
    )
    restart_sec = float(
        host.exec("systemctl", "show", "agented", "--property=RestartUSec", "--value")
        .stdout.strip()
        .rstrip("s")
        or 0
    )
    # Each run starts with a clean start-limit counter: 10 kills are 10 starts within a minute.
    host.exec("systemctl", "reset-failed", "agented")
    common.log(f"{args.kills} SIGKILLs under {args.rate:g} requests/s")
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
        timeout=400,
    )
    host.get("/root/load.json", directory / f"load-{mode}.json")
    records = json.loads((directory / f"load-{mode}.json").read_text())["records"]
    seconds = [k["seconds"] for k in summary["kills"] if k["seconds"] is not None]
    first_answers = [
        k["breakdown"]["first_answer"] for k in summary["kills"] if first_answer(k, records)
    ]
    return {
        "variant": variant,
        "label": LABELS[variant],
        "socket_activation": socket_activation,
        "restart_sec": restart_sec,
        "requests": summary["requests"],
        "failed": summary["failed"],
        "failures": summary["failures"],
        "duration": summary["duration"],
        "kills": summary["kills"],
        "kill_to_ready": common.summary(seconds),
        "kill_to_first_answer": common.summary(first_answers),
        "latency": common.summary([r[1] for r in records if isinstance(r[2], int)]),
        "phases": phases(summary["kills"]),
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
        mode = run["variant"]
        records = json.loads((common.results_dir(NAME) / f"load-{mode}.json").read_text())[
            "records"
        ]
        common.plot_requests(ax, records)
        for i, kill in enumerate(run["kills"]):
            ax.axvline(
                kill["at"], color="grey", lw=0.8, ls="--", label="SIGKILL" if i == 0 else None
            )
        ax.set_yscale("log")
        ax.set_ylabel("response time (s)")
        ax.set_title(f"{run['label']}: {run['failed']} of {run['requests']} requests failed")
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
    labels = list(runs[0]["phases"])
    rows = [
        [label]
        + [
            f"{common.fmt(run['phases'][label]['median'], ' s')} / "
            f"{common.fmt(run['phases'][label]['p95'], ' s')}"
            for run in runs
        ]
        for label in labels
    ]
    text += common.table(["step"] + [r["label"] for r in runs], rows)
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
    """The goals of this benchmark and what was measured, for the summary of docs/BENCHMARKS.md."""
    goals = []
    for run in runs:
        k, first = run["kill_to_ready"], run["kill_to_first_answer"]
        limit = run["restart_sec"] + 0.5
        goals.append(
            common.goal(
                "§1",
                f"{run['label']}: 0 failed requests through {len(run['kills'])} SIGKILLs",
                f"{run['failed']} of {run['requests']} failed",
                run["failed"] == 0,
            )
        )
        goals.append(
            common.goal(
                "§1",
                f"{run['label']}: kill-to-ready ≤ RestartSec + 0.5 s = {limit:g} s (p95)",
                f"p50 {common.fmt(k['median'], ' s')}, p95 {common.fmt(k['p95'], ' s')} "
                f"(first answer p50 {common.fmt(first['median'], ' s')}, "
                f"p95 {common.fmt(first['p95'], ' s')})",
                k["p95"] is not None and k["p95"] <= limit,
            )
        )
    return goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument(
        "--variants",
        default="on,proposal,proposal-1s,off",
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
            "load": {"rate": args.rate, "kills": args.kills, "path": "/api/executions?limit=1"},
            "runs": runs,
        },
        tables(runs),
    )


if __name__ == "__main__":
    main()
