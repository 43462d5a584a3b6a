# /// script
# requires-python = ">=3.11"
# dependencies = ["matplotlib>=3.8"]
# ///
"""§3 Zero-downtime reload and redeploy, under steady load.

Converges a systemd test host with playbooks/site.yml, then, under 50 requests/s sent from inside
the host to its own 127.0.0.1:

- reload: `systemctl reload agented` five times, 4 s apart (SIGHUP: new workers, old ones stop
  gracefully; the master and its listening socket stay);
- redeploy: playbooks/site.yml with agented_backend_src pointing at a copy of backend/ with one
  line changed, i.e. a new release, the `current` switch and the restart the role does.

Both with socket activation on (the default) and off. Reports failed requests and the slowest
answers for each.

    uv run bench/reload.py [--rate 50] [--variants on,off] [--keep]
"""

from __future__ import annotations

import argparse
import json
import time

import common

NAME = "reload"
HOST = "agented-bench-reload"
RELOADS = 5


def reload_under_load(host: common.Host, mode: str, rate: float) -> dict:
    common.log(f"{RELOADS} reloads under {rate:g} requests/s (socket activation {mode})")
    summary = host.inhost(
        "load.py",
        "--rate",
        str(rate),
        "--seconds",
        "120",
        "--out",
        "/root/load.json",
        "--action-at",
        "3",
        "--repeat",
        str(RELOADS),
        "--every",
        "4",
        "--",
        "systemctl",
        "reload",
        "agented",
        timeout=200,
    )
    return fetch(host, summary, f"reload-{mode}")


def redeploy_under_load(host: common.Host, mode: str, rate: float, inventory, extra: dict) -> dict:
    common.log(
        f"redeploy of a changed release under {rate:g} requests/s (socket activation {mode})"
    )
    directory = common.results_dir(NAME)
    host.put_inhost("load.py")
    host.exec("rm", "-f", "/root/stop", "/root/load.json")
    host.exec(
        "python3",
        "/root/load.py",
        "--rate",
        str(rate),
        "--seconds",
        "400",
        "--out",
        "/root/load.json",
        "--stop-file",
        "/root/stop",
        detach=True,
    )
    time.sleep(3)
    started = time.monotonic()
    seconds, _ = common.converge(inventory, directory / f"converge-redeploy-{mode}.log", extra)
    ended = time.monotonic()
    host.exec("touch", "/root/stop")
    deadline = time.monotonic() + 120
    while host.exec("test", "-e", "/root/load.json", check=False).returncode:
        if time.monotonic() > deadline:
            raise SystemExit("the load client did not finish")
        time.sleep(1)
    summary = json.loads(host.exec("cat", "/root/load.json").stdout)
    summary.pop("records")
    result = fetch(host, summary, f"redeploy-{mode}")
    result["converge"] = {
        "seconds": seconds,
        "from": started - summary["start_monotonic"],
        "to": ended - summary["start_monotonic"],
    }
    return result


def fetch(host: common.Host, summary: dict, name: str) -> dict:
    path = common.results_dir(NAME) / f"load-{name}.json"
    host.get("/root/load.json", path)
    records = json.loads(path.read_text())["records"]
    answered = [r[1] for r in records if isinstance(r[2], int)]
    return {
        "name": name,
        "requests": summary["requests"],
        "failed": summary["failed"],
        "failures": summary["failures"],
        "duration": summary["duration"],
        "actions": summary["actions"],
        "unit_events": summary["unit_events"],
        "workers_booted": summary["workers_booted"],
        "latency": common.summary(answered),
    }


def chart(runs: list[dict]) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 2.6 * len(runs)), squeeze=False)
    for ax, run in zip(axes[:, 0], runs, strict=True):
        records = json.loads((common.results_dir(NAME) / f"load-{run['name']}.json").read_text())[
            "records"
        ]
        common.plot_requests(ax, records)
        for i, action in enumerate(a for a in run["actions"] if a["command"] != ["stop-file"]):
            ax.axvline(
                action["at"],
                color="grey",
                ls="--",
                lw=0.8,
                label="systemctl reload" if i == 0 else None,
            )
        if "converge" in run:
            ax.axvspan(
                run["converge"]["from"],
                run["converge"]["to"],
                color="grey",
                alpha=0.15,
                label="ansible-playbook",
            )
            for i, (at, _text) in enumerate(
                e for e in run["unit_events"] if e[1].startswith("Stopping")
            ):
                ax.axvline(at, color="orange", lw=0.8, label="restart" if i == 0 else None)
        ax.set_yscale("log")
        ax.set_ylabel("response time (s)")
        ax.set_title(f"{run['name']}: {run['failed']} of {run['requests']} requests failed")
        ax.legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds since the load started (request sent at)")
    fig.tight_layout()
    fig.savefig(common.results_dir(NAME) / "reload.png")


def tables(runs: list[dict]) -> str:
    rows = []
    for run in runs:
        kind, mode = run["name"].split("-")
        what = (
            f"{RELOADS} {common.TIMES} systemctl reload"
            if kind == "reload"
            else "redeploy of a changed release"
        )
        lat = run["latency"]
        rows.append(
            [
                what,
                mode,
                f"{run['requests']} in {run['duration']:.0f} s",
                run["failed"],
                common.verdict(run["failed"] == 0),
                common.fmt(lat["median"] * 1000, " ms", 1),
                common.fmt(lat["p95"] * 1000, " ms", 1),
                common.fmt(lat["max"], " s"),
                run["workers_booted"],
            ]
        )
    return common.table(
        [
            "action",
            "socket activation",
            "requests",
            "failed",
            "goal 0",
            "response p50",
            "p95",
            "max",
            "workers booted",
        ],
        rows,
    )


def summarize(runs: list[dict]) -> list[dict]:
    """The goals of this benchmark and what was measured, for the summary of docs/BENCHMARKS.md."""
    goals = [
        common.goal(
            "§3",
            "0 failed requests: "
            + (
                f"{RELOADS} {common.TIMES} systemctl reload"
                if r["name"].startswith("reload")
                else "redeploy"
            )
            + f", socket activation {r['name'].split('-')[1]}",
            f"{r['failed']} of {r['requests']} failed, slowest answer {r['latency']['max']:.2f} s",
            r["failed"] == 0,
        )
        for r in runs
    ]
    return goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--variants", default="on,off")
    parser.add_argument("--keep", action="store_true", help="leave the test host running")
    args = parser.parse_args()
    directory = common.results_dir(NAME)
    releases = [
        common.backend_copy(),
        common.backend_copy("# release B"),
        common.backend_copy("# release C"),
    ]
    runs = []
    with common.Host(HOST, keep=args.keep) as host:
        inventory = common.write_inventory(directory / "inventory.json", [host.name])
        for n, mode in enumerate(args.variants.split(",")):
            socket_activation = mode == "on"
            base = {"agented_backend_socket_activation": socket_activation}
            if (
                socket_activation
                and host.exec("systemctl", "is-active", "agented.socket", check=False).returncode
            ):
                host.exec("systemctl", "stop", "agented.service", check=False)  # see bench/crash.py
            common.log(f"converging with socket activation {mode}")
            common.converge(
                inventory,
                directory / f"converge-{mode}.log",
                {**base, "agented_backend_src": str(releases[n])},
            )
            runs.append(reload_under_load(host, mode, args.rate))
            runs.append(
                redeploy_under_load(
                    host,
                    mode,
                    args.rate,
                    inventory,
                    {**base, "agented_backend_src": str(releases[n + 1])},
                )
            )
    chart(runs)
    goals = summarize(runs)
    common.save(
        NAME,
        {
            "goals": goals,
            "goal": {"failed": 0},
            "load": {"rate": args.rate, "path": "/api/executions?limit=1"},
            "runs": runs,
        },
        tables(runs),
    )


if __name__ == "__main__":
    main()
