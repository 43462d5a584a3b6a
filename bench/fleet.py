# /// script
# requires-python = ">=3.11"
# dependencies = ["matplotlib>=3.8"]
# ///
"""§8 A fleet: playbooks/site.yml over SSH to 1, 2, 4 and 8 hosts without internet.

For each fleet size, fresh Debian 12 hosts on a Docker network created with --internal (no
egress), reached over SSH as a non-root `deploy` user with sudo, exactly as molecule/field's hosts
(its create.yml and destroy.yml start and remove them); ansible.cfg as the repository has it
(forks 10, pipelining, ControlPersist). Measured: the wall time and the controller's CPU time of
a first deploy (from a fresh, empty wheelhouse cache on the controller) and of a no-op re-run, all
hosts at once (serial 100%), with each task's time (profile_tasks) in the logs; the CPU time of
the hosts (their containers' cgroups) in each play, and the wall time that CPU time allows at the
least on this machine's cores;
the bytes the controller fetched from the package index in each play, as the wheelhouse lookup
counts them (and the size of the cache directory afterwards); the marginal cost of one more host
(least squares over the fleet sizes).

    uv run bench/fleet.py [--sizes 1 2 4 8]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import tempfile
from pathlib import Path

import common

NAME = "fleet"
FIELD = common.ROOT / "molecule" / "field"
IMAGE = "agented-molecule/debian:bookworm-ssh"
# Named like molecule's hosts: AGENTED_MOLECULE_PREFIX keeps two checkouts' benches apart.
PREFIX = f"{os.environ.get('AGENTED_MOLECULE_PREFIX') or 'agented'}-bench-fleet"
GOAL_RATIO = 3.0
CORES = len(os.sched_getaffinity(0))
CGROUPS = Path("/sys/fs/cgroup")


def platforms(size: int) -> list[dict]:
    return [
        {"name": f"{PREFIX}-{i}", "image": IMAGE, "networks": [{"name": PREFIX}]}
        for i in range(1, size + 1)
    ]


def field_playbook(playbook: str, size: int, state: Path) -> None:
    """molecule/field's create.yml or destroy.yml, given what molecule would give them."""
    extra_vars = {
        "molecule_yml": {"platforms": platforms(size)},
        "molecule_ephemeral_directory": str(state),
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
    }
    run = common.harness.ansible_playbook(
        FIELD / playbook, inventory="localhost,", extra_vars=extra_vars
    )
    if run.rc != 0:
        raise SystemExit(f"{playbook} failed:\n{run}")


def write_inventory(path: Path, state: Path) -> Path:
    """The bench's inventory (common.write_inventory) with the SSH host variables create.yml
    wrote."""
    reach = json.loads((state / "ssh_inventory.json").read_text())["_meta"]["hostvars"]
    common.write_inventory(path, list(reach))
    inventory = json.loads(path.read_text())
    inventory["agented"]["hosts"] = reach
    path.write_text(json.dumps(inventory, indent=2))
    return path


def fetched_bytes(log: Path) -> int:
    """What the wheelhouse lookup reports it fetched in this play (tasks/wheelhouse.yml)."""
    match = re.search(r"(\d+) bytes fetched for", log.read_text())
    if not match:
        raise SystemExit(f"{log}: no 'bytes fetched' line")
    return int(match[1])


def controller_cpu_seconds() -> float:
    """CPU time of this process's finished children: ansible-playbook and every fork it waited
    for (SSH's ControlPersist masters outlive the play and are not counted)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def hosts_cpu_seconds(size: int) -> float:
    """CPU time the fleet's containers have used so far: each one's cgroup (`cpu.stat`), which
    holds everything the host ran, its SSH sessions and Gunicorn alike."""
    total = 0.0
    for platform in platforms(size):
        run = common.run(["docker", "inspect", "--format", "{{.Id}}", platform["name"]])
        cid = run.stdout.strip()
        # The engine's cgroup of the container: cgroup v2 under systemd, or the hybrid layout.
        candidates = [f"system.slice/docker-{cid}.scope", f"unified/docker/{cid}", f"docker/{cid}"]
        found = [CGROUPS / c for c in candidates if (CGROUPS / c / "cpu.stat").is_file()]
        if not found:
            raise SystemExit(f"no cgroup with a cpu.stat for container {platform['name']}")
        stat = dict(line.split() for line in (found[0] / "cpu.stat").read_text().splitlines())
        total += int(stat["usage_usec"]) / 1e6
    return total


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def deploy(size: int, directory: Path) -> dict:
    state = Path(tempfile.mkdtemp(prefix="agented-bench-fleet-"))
    cache = state / "wheelhouse-cache"  # empty: the first play fetches everything
    try:
        common.log(f"{size} host(s): creating")
        field_playbook("create.yml", size, state)
        inventory = write_inventory(directory / f"inventory-{size}.json", state)
        extra = {"agented_serial": "100%", "agented_backend_wheelhouse_cache": str(cache)}
        row = {"hosts": size}
        for label in ("first", "noop"):
            log = directory / f"deploy-{size}-{label}.log"
            common.log(f"{size} host(s): {label} deploy")
            controller_before, hosts_before = controller_cpu_seconds(), hosts_cpu_seconds(size)
            seconds, _ = common.converge(inventory, log, extra, profile=True)
            controller = controller_cpu_seconds() - controller_before
            hosts_cpu = hosts_cpu_seconds(size) - hosts_before
            recap = common.play_recap(log)
            row[label] = {
                "seconds": seconds,
                "controller_cpu_seconds": controller,
                "hosts_cpu_seconds": hosts_cpu,
                "fetched_bytes": fetched_bytes(log),
                "cache_bytes": tree_bytes(cache),
                "changed": {host: counts.get("changed") for host, counts in recap.items()},
            }
            common.log(f"{size} host(s): {label} {seconds:.1f} s, {row[label]['fetched_bytes']} B")
        return row
    finally:
        field_playbook("destroy.yml", size, state)
        shutil.rmtree(state, ignore_errors=True)


def cpu_seconds(play: dict) -> float:
    """The play's CPU time, the controller's and the hosts'."""
    return play["controller_cpu_seconds"] + play["hosts_cpu_seconds"]


def fastest(play: dict) -> float:
    """The shortest wall time the play's CPU time allows on this machine's cores."""
    return cpu_seconds(play) / CORES


def slope(points: list[tuple[int, float]]) -> float:
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in points)
    den = sum((x - mean_x) ** 2 for x, _ in points)
    return num / den if den else 0.0


def chart(rows: list[dict], directory: Path) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots()
    sizes = [r["hosts"] for r in rows]
    for label, key in (("first deploy", "first"), ("no-op re-run", "noop")):
        ax.plot(sizes, [r[key]["seconds"] for r in rows], marker="o", label=label)
    one = rows[0]["first"]["seconds"]
    ax.axhline(
        GOAL_RATIO * one,
        color="grey",
        linestyle="--",
        label=f"goal: {GOAL_RATIO:g}{common.TIMES} one host",
    )
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("hosts (all at once, over SSH, no egress)")
    ax.set_ylabel("wall time (s)")
    ax.set_ylim(bottom=0)
    ax.set_title("site.yml to a fleet: wall time by fleet size")
    ax.legend()
    fig.tight_layout()
    fig.savefig(directory / "fleet.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    directory = common.results_dir(NAME)
    report([deploy(size, directory) for size in args.sizes], directory)


def report(rows: list[dict], directory: Path) -> None:
    """Tables, goals and chart of the measured rows, saved as the benchmark's results."""
    first = [(r["hosts"], r["first"]["seconds"]) for r in rows]
    noop = [(r["hosts"], r["noop"]["seconds"]) for r in rows]
    marginal = {"first": slope(first), "noop": slope(noop)}
    table_rows = [
        [
            r["hosts"],
            common.fmt(r["first"]["seconds"], " s", 1),
            common.fmt(r["first"]["seconds"] / rows[0]["first"]["seconds"], common.TIMES, 2),
            common.fmt(r["noop"]["seconds"], " s", 1),
            f"{r['first']['fetched_bytes'] / 1e6:.1f} MB",
            f"{r['noop']['fetched_bytes'] / 1e6:.1f} MB",
            f"{r['first']['cache_bytes'] / 1e6:.1f} MB",
        ]
        for r in rows
    ]
    tables = common.table(
        [
            "hosts",
            "first deploy",
            "of one host's",
            "no-op re-run",
            "fetched (first)",
            "fetched (no-op)",
            "cache after",
        ],
        table_rows,
    )
    tables += (
        f"\nMarginal cost of one more host (least squares over {len(rows)} sizes): first deploy "
        f"{marginal['first']:.1f} s, no-op re-run {marginal['noop']:.1f} s.\n"
    )
    tables += (
        "\nCPU time in each play: of the controller (ansible-playbook and every fork it waited for)"
        " and of the hosts (their containers' cgroups: the SSH sessions that run each task's"
        f" module, Gunicorn and the rest), all on the same {CORES} cores. *Fastest possible* is"
        f" that CPU time spread perfectly over the {CORES} cores, and what it would be as a"
        " multiple of one host's deploy:\n\n"
    )
    tables += common.table(
        [
            "hosts",
            "controller (first)",
            "hosts (first)",
            "per host",
            "fastest possible",
            "of one host's",
            "controller (no-op)",
            "hosts (no-op)",
        ],
        [
            [
                r["hosts"],
                common.fmt(r["first"]["controller_cpu_seconds"], " s", 1),
                common.fmt(r["first"]["hosts_cpu_seconds"], " s", 1),
                common.fmt(cpu_seconds(r["first"]) / r["hosts"], " s", 1),
                common.fmt(fastest(r["first"]), " s", 1),
                common.fmt(fastest(r["first"]) / rows[0]["first"]["seconds"], common.TIMES, 2),
                common.fmt(r["noop"]["controller_cpu_seconds"], " s", 1),
                common.fmt(r["noop"]["hosts_cpu_seconds"], " s", 1),
            ]
            for r in rows
        ],
    )
    largest, one = rows[-1], rows[0]
    bytes_flat = all(r["first"]["fetched_bytes"] == one["first"]["fetched_bytes"] for r in rows)
    noop_zero = all(r["noop"]["fetched_bytes"] == 0 for r in rows)
    ratio = largest["first"]["seconds"] / one["first"]["seconds"]
    fetched = " / ".join(f"{r['first']['fetched_bytes'] / 1e6:.1f} MB" for r in rows)
    sizes = " / ".join(str(r["hosts"]) for r in rows)
    reruns = "0 on every re-run" if noop_zero else "not 0 on a re-run"
    goals = [
        common.goal(
            "§8",
            "bytes fetched from the package index do not grow with the hosts",
            f"{fetched} for {sizes} hosts; {reruns}",
            bytes_flat and noop_zero,
        ),
        common.goal(
            "§8",
            f"{largest['hosts']} hosts deploy in ≤ {GOAL_RATIO:g}{common.TIMES} the time of one",
            f"{largest['first']['seconds']:.0f} s against {one['first']['seconds']:.0f} s: "
            f"{ratio:.2f}{common.TIMES} (fastest possible on {CORES} cores:"
            f" {fastest(largest['first']) / one['first']['seconds']:.2f}{common.TIMES})",
            ratio <= GOAL_RATIO,
        ),
    ]
    tables += "\n" + common.table(
        ["goal", "measured", ""],
        [[g["goal"], g["measured"], common.verdict(g["met"])] for g in goals],
    )
    chart(rows, directory)
    common.save(NAME, {"rows": rows, "marginal_seconds": marginal, "goals": goals}, tables)


if __name__ == "__main__":
    main()
