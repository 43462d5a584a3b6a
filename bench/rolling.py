# /// script
# requires-python = ">=3.11"
# dependencies = ["matplotlib>=3.8"]
# ///
"""§6 Beyond one host: `molecule test -s rolling`, then its figures and a timeline chart.

The scenario (molecule/rolling) deploys a changed release to three hosts with playbooks/site.yml
(serial 1) while a probe inside each host asks its own 127.0.0.1 for readiness every 50 ms, and
asserts that at every moment at least two hosts answered; then deploys a release that fails its
health gate and asserts the rollout stops at the first host, which rolls back, while the other two
keep their release. The scenario's tests write their probes' answers to bench/results/rolling/.

    uv run bench/rolling.py
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import common

NAME = "rolling"


def chart(runs: dict) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 2.8 * len(runs)), squeeze=False)
    for ax, (name, run) in zip(axes[:, 0], runs.items(), strict=True):
        t0 = run["answering"]["start"]
        hosts = sorted(run["samples"])
        for y, host in enumerate(hosts):
            samples = run["samples"][host]
            ok = [(s - t0) for s, _, good in samples if good]
            bad = [(s - t0) for s, _, good in samples if not good]
            ax.scatter(ok, [y] * len(ok), s=2, color="tab:green", marker="|")
            ax.scatter(bad, [y] * len(bad), s=12, color="tab:red", marker="|")
        count = run["answering"]["timeline"]
        twin = ax.twinx()
        twin.step(
            [w - t0 for w, _ in count] + [run["answering"]["end"] - t0],
            [c for _, c in count] + [count[-1][1]],
            where="post",
            color="black",
            lw=0.8,
        )
        twin.set_ylim(-0.2, 3.5)
        twin.set_ylabel("hosts answering")
        twin.axhline(2, color="red", ls="--", lw=0.8)
        ax.axvspan(
            run["deploy"]["started"] - t0, run["deploy"]["ended"] - t0, color="grey", alpha=0.12
        )
        ax.set_yticks(range(len(hosts)), hosts, fontsize=7)
        ax.set_ylim(-0.5, len(hosts) - 0.5)
        ax.set_title(
            f"{name}: green = readiness 200, red = not ready (probe every 50 ms); "
            f"grey = ansible-playbook",
            fontsize=8,
        )
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(common.results_dir(NAME) / "rolling.png")


def tables(runs: dict, seconds: float, rc: int) -> str:
    rows = []
    for name, run in runs.items():
        a = run["answering"]
        down = ", ".join(f"{sum(b - x for x, b in w):.1f} s" for _, w in sorted(a["down"].items()))
        below = sum(b - x for x, b, _ in a["below_minimum"])
        result = (
            "deployed everywhere"
            if run["deploy"]["rc"] == 0
            else (
                "failed on "
                + ", ".join(h for h, x in run.get("added", {}).items() if x)
                + ", rolled back; "
                "the others untouched"
            )
        )
        rows.append(
            [
                name,
                f"{run['deploy']['ended'] - run['deploy']['started']:.0f} s",
                result,
                f"{a['end'] - a['start']:.0f} s",
                a["fewest_answering"],
                f"{below:.2f} s",
                down,
                common.verdict(a["fewest_answering"] >= 2),
            ]
        )
    text = common.table(
        [
            "deploy",
            "ansible-playbook",
            "outcome",
            "probed",
            "fewest answering",
            "time with < 2",
            "not ready per host",
            "goal ≥ 2 at every moment",
        ],
        rows,
    )
    text += (
        f"\n`molecule test -s rolling`: exit {rc} ({common.verdict(rc == 0)}), "
        f"{seconds:.0f} s in all.\n"
    )
    return text


def summarize(runs: dict, rc: int) -> list[dict]:
    """The goals of this benchmark and what was measured, for the summary of docs/BENCHMARKS.md."""
    goals = []
    for name, run in runs.items():
        a = run["answering"]
        what = (
            "rolling deploy, serial 1: ≥ 2 of 3 hosts answer at every moment"
            if name == "rolling-deploy"
            else "a host failing its health gate stops the rollout; ≥ 2 of 3 answer throughout"
        )
        met = a["fewest_answering"] >= 2 and (name == "rolling-deploy" or run["deploy"]["rc"] != 0)
        goals.append(
            common.goal(
                "§6",
                what,
                f"fewest answering {a['fewest_answering']}; molecule exit {rc}",
                met and rc == 0,
            )
        )
    return goals


def main() -> None:
    directory = common.results_dir(NAME)
    for old in directory.glob("*.json"):
        old.unlink()
    # common put tools/bootstrap's tools (molecule) first on PATH.
    env = {**os.environ, "AGENTED_ROLLING_RESULTS": str(directory)}
    start = time.monotonic()
    with open(directory / "molecule.log", "w") as log:
        rc = subprocess.run(
            ["molecule", "test", "-s", "rolling"],
            cwd=common.ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,  # a failed scenario still leaves figures to chart; its exit is reported
        ).returncode
    seconds = time.monotonic() - start
    runs = {
        name: json.loads((directory / f"{name}.json").read_text())
        for name in ("rolling-deploy", "failed-health-gate")
        if (directory / f"{name}.json").exists()
    }
    if not runs:
        tail = "".join((directory / "molecule.log").read_text().splitlines(keepends=True)[-40:])
        raise SystemExit(f"molecule test -s rolling measured nothing (exit {rc}):\n{tail}")
    chart(runs)
    goals = summarize(runs, rc)
    common.save(
        NAME,
        {
            "goals": goals,
            "molecule_exit": rc,
            "seconds": seconds,
            "runs": {n: {k: v for k, v in r.items() if k != "samples"} for n, r in runs.items()},
        },
        tables(runs, seconds, rc),
    )
    if rc:
        raise SystemExit(
            f"molecule test -s rolling failed (exit {rc}): see {directory / 'molecule.log'}"
        )


if __name__ == "__main__":
    main()
