# /// script
# requires-python = ">=3.11"
# dependencies = ["matplotlib>=3.8"]
# ///
"""§5 Deploy speed: playbooks/site.yml on one host, and uv against pip for the same lock.

On a fresh systemd test host, with ansible.cfg as the repository has it (pipelining for every
connection, here `docker exec`): the wall time of the first converge, of five no-op re-runs, and of
a re-run after a one-line change to the backend (a new release: copy, venv build, switch, restart,
readiness). Then, inside the same host, the backend's virtualenv built from uv.lock by
`uv sync --frozen --no-dev` and by `python3 -m venv` + `pip install -r` (requirements exported from
the same lock by `uv export --no-dev --frozen`), with empty and with warm caches.

    uv run bench/deploy_speed.py [--rounds 3] [--keep]
"""

from __future__ import annotations

import argparse
import collections
import json

import common

NAME = "deploy_speed"
HOST = "agented-bench-deploy"
GOAL_NOOP = 10.0
GOAL_RATIO = 3.0
BUILDS = {  # bench/inhost/venvbuild.py's variants
    "uv-cold": "`uv sync --frozen --no-dev`, empty cache",
    "uv-cold-bytecode": "the same with `--compile-bytecode` (as the role builds), empty cache",
    "pip-cold": "`python3 -m venv` + `pip install -r` (compiles bytecode), no cache",
    "uv-warm": "`uv sync ... --compile-bytecode`, warm cache",
    "pip-warm": "`python3 -m venv` + `pip install -r`, warm cache",
}


def converges(host: common.Host) -> list[dict]:
    directory = common.results_dir(NAME)
    inventory = common.write_inventory(directory / "inventory.json", [host.name])
    release = common.backend_copy()
    changes = [
        common.backend_copy("# one-line change"),
        common.backend_copy("# another one-line change"),
    ]
    plan = [("first converge of a fresh host", release)]
    plan += [("no-op re-run", release)] * 5
    plan += [("re-run after a one-line backend change", changes[0])]
    runs = []
    for i, (label, src) in enumerate(plan):
        common.log(label)
        path = directory / f"converge-{i}.log"
        seconds, _ = common.converge(
            inventory, path, {"agented_backend_src": str(src)}, profile=True
        )
        recap = common.play_recap(path).get(host.name, {})
        runs.append(
            {
                "label": label,
                "seconds": seconds,
                "changed": recap.get("changed"),
                "ok": recap.get("ok"),
                "tasks": timings(path),
            }
        )
        common.log(f"{seconds:.1f} s, changed={recap.get('changed')}")
    return runs


def timings(log) -> list:
    """The slowest tasks of a converge, from the profile_tasks callback's summary."""
    lines = log.read_text().splitlines()
    rows = []
    for line in lines:
        # e.g. "agented_backend : Build the virtualenv from uv.lock ---------- 12.34s"
        if (
            line.rstrip().endswith("s")
            and " -" in line
            and line.split()[-1][:-1].replace(".", "").isdigit()
        ):
            name = line.rsplit(" -", 1)[0].strip()
            rows.append((name, float(line.split()[-1][:-1])))
    return rows[:8]


def venv_builds(host: common.Host, rounds: int) -> dict:
    common.log(f"uv against pip, {rounds} rounds")
    directory = common.results_dir(NAME)
    requirements = common.run(
        [
            str(common.TOOLS / "uv"),
            "export",
            "--no-dev",
            "--frozen",
            "--format",
            "requirements-txt",
            "--quiet",
        ],
        cwd=common.BACKEND,
    ).stdout
    (directory / "requirements.txt").write_text(requirements)
    host.exec("mkdir", "-p", "/root/lock")
    for name in ("pyproject.toml", "uv.lock"):
        host.put(common.BACKEND / name, f"/root/lock/{name}")
    host.put(directory / "requirements.txt", "/root/lock/requirements.txt")
    env = " ".join(f"{k}={v}" for k, v in common.BUILD_ENVIRONMENT.items())
    # pip's side needs the venv module, which a host deployed from the wheelhouse goes without.
    host.sh(
        "dpkg-query --show --showformat='${db:Status-Status}' python3-venv 2>/dev/null"
        " | grep -qx installed || (apt-get update -q && apt-get install -y -q python3-venv)",
        timeout=600,
    )
    host.put(common.BENCH / "inhost" / "venvbuild.py", "/root/venvbuild.py")
    out = host.sh(
        f"env {env} python3 /root/venvbuild.py /opt/agented/uv/bin/uv /root/lock "
        f"/root/lock/requirements.txt {rounds}",
        timeout=1800,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def chart(runs: list[dict], builds: dict) -> None:
    plt = common.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    short = {
        "first converge of a fresh host": "first",
        "no-op re-run": "no-op",
        "re-run after a one-line backend change": "change",
    }
    labels = [short[r["label"]] for r in runs]
    colors = {"first": "tab:blue", "no-op": "tab:green", "change": "tab:orange"}
    left.bar(
        range(len(runs)),
        [r["seconds"] for r in runs],
        color=[colors[short[r["label"]]] for r in runs],
    )
    left.set_xticks(range(len(runs)), labels, rotation=35, ha="right", fontsize=7)
    left.axhline(GOAL_NOOP, color="red", ls="--", lw=1, label=f"goal no-op < {GOAL_NOOP:g} s")
    left.set_ylabel("seconds (wall)")
    left.set_title("playbooks/site.yml, one host, in order")
    left.legend(fontsize=8)
    names = list(builds)
    medians = [common.summary(builds[n])["median"] for n in names]
    right.bar(
        names, medians, color=["tab:purple" if n.startswith("uv") else "tab:grey" for n in names]
    )
    right.set_ylabel("seconds (median)")
    right.set_title("virtualenv from the same lock")
    right.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(common.results_dir(NAME) / "deploy_speed.png")


def tables(runs: list[dict], builds: dict) -> str:
    rows = []
    for label in (
        "first converge of a fresh host",
        "no-op re-run",
        "re-run after a one-line backend change",
    ):
        chosen = [r for r in runs if r["label"] == label]
        if not chosen:
            continue
        s = common.summary([r["seconds"] for r in chosen])
        goal = ""
        if label == "no-op re-run":
            goal = f"< {GOAL_NOOP:g} s: " + common.verdict(s["max"] < GOAL_NOOP)
        rows.append(
            [
                label,
                s["n"],
                common.fmt(s["median"], " s", 1),
                common.fmt(s["max"], " s", 1),
                "/".join(str(r["changed"]) for r in chosen),
                goal,
            ]
        )
    text = common.table(
        [
            "run of playbooks/site.yml",
            "runs",
            "median",
            "max",
            "tasks changed",
            "goal",
        ],
        rows,
    )
    slowest = collections.Counter()
    for r in runs:
        if r["label"] == "re-run after a one-line backend change":
            slowest.update(dict(r["tasks"][:4]))
    text += (
        "\nSlowest tasks of the re-run after a change (profile_tasks): "
        + ", ".join(
            f"{name.split(' : ', 1)[-1]} {seconds:.1f} s"
            for name, seconds in slowest.most_common(4)
        )
        + ".\n\n"
    )
    stats = {name: common.summary(values) for name, values in builds.items()}
    rows = [
        [
            BUILDS[name],
            len(values),
            common.fmt(stats[name]["median"], " s", 2),
            common.fmt(stats[name]["p95"], " s", 2),
        ]
        for name, values in builds.items()
    ]
    text += common.table(["virtualenv build", "runs", "median", "p95"], rows)
    cold = stats["pip-cold"]["median"] / stats["uv-cold"]["median"]
    cold_bc = stats["pip-cold"]["median"] / stats["uv-cold-bytecode"]["median"]
    warm = stats["pip-warm"]["median"] / stats["uv-warm"]["median"]
    x = common.TIMES
    text += (
        f"\npip ÷ uv, empty caches: **{cold:.1f}{x}** "
        f"(uv with --compile-bytecode, as the role builds: {cold_bc:.1f}{x}); "
        f"warm caches: {warm:.1f}{x}. Goal ≥ {GOAL_RATIO:g}{x}: "
        f"{common.verdict(min(cold, cold_bc) >= GOAL_RATIO)}.\n"
    )
    return text


def summarize(runs: list[dict], builds: dict) -> list[dict]:
    """The goals of this benchmark and what was measured, for the summary of docs/BENCHMARKS.md."""
    goals = []
    noop = common.summary([r["seconds"] for r in runs if r["label"] == "no-op re-run"])
    goals.append(
        common.goal(
            "§5",
            f"no-op re-run of one host < {GOAL_NOOP:g} s",
            f"median {noop['median']:.1f} s, max {noop['max']:.1f} s",
            noop["max"] < GOAL_NOOP,
        )
    )
    medians = {name: common.summary(values)["median"] for name, values in builds.items()}
    ratio, ratio_bc = (
        medians["pip-cold"] / medians["uv-cold"],
        medians["pip-cold"] / medians["uv-cold-bytecode"],
    )
    goals.append(
        common.goal(
            "§5",
            f"uv ≥ {GOAL_RATIO:g}{common.TIMES} faster than pip for the same lock (empty caches)",
            f"{ratio:.1f}{common.TIMES} "
            f"({ratio_bc:.1f}{common.TIMES} with --compile-bytecode, as the role builds)",
            min(ratio, ratio_bc) >= GOAL_RATIO,
        )
    )
    first = next(r for r in runs if r["label"].startswith("first"))
    change = [r for r in runs if r["label"].startswith("re-run after")]
    goals.append(
        common.goal(
            "§5",
            "first converge; re-run after a one-line change",
            f"{first['seconds']:.0f} s; " + " / ".join(f"{r['seconds']:.0f} s" for r in change),
            None,
        )
    )
    return goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the test host running")
    args = parser.parse_args()
    with common.Host(HOST, keep=args.keep) as host:
        runs = converges(host)
        builds = venv_builds(host, args.rounds)
    chart(runs, builds)
    goals = summarize(runs, builds)
    common.save(
        NAME,
        {
            "goals": goals,
            "goal": {"noop_seconds": GOAL_NOOP, "pip_over_uv": GOAL_RATIO},
            "converges": runs,
            "venv_builds": builds,
        },
        tables(runs, builds),
    )


if __name__ == "__main__":
    main()
