"""A rolling deploy across three hosts keeps two of them answering; a failed health gate stops it.

Runs in molecule's verify step after converge has deployed a first release to the three hosts.
Each test starts `in_host_checks.py sample-readiness` (molecule/harness/) inside every host
(systemd-run, asking its own 127.0.0.1 for readiness every 50 ms with a 0.5 s timeout), runs
playbooks/site.yml as users do (serial 1, any error fatal), stops the samplers and lines their
answers up on the hosts' shared clock: at every moment, at least two of the three must have
answered readiness with 200.

What was measured goes to $AGENTED_ROLLING_RESULTS (bench/rolling.py charts it), or a temporary
directory.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

SCENARIO_DIR = Path(__file__).resolve().parents[1]
PROJECT_DIR = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", SCENARIO_DIR.parents[1]))
sys.path.insert(0, str(PROJECT_DIR / "molecule" / "harness"))
import harness  # noqa: E402 -- found through the line above

# The scenario's hosts, from the configuration molecule merged (or the scenario's own file).
MOLECULE_FILE = Path(os.environ.get("MOLECULE_FILE") or SCENARIO_DIR / "molecule.yml")
HOSTS = [p["name"] for p in yaml.safe_load(MOLECULE_FILE.read_text())["platforms"]]
RESULTS = Path(
    os.environ.get("AGENTED_ROLLING_RESULTS") or tempfile.mkdtemp(prefix="agented-rolling-")
)
CURRENT = "/opt/agented/backend/current"
RELEASES = "/opt/agented/backend/releases"
SAMPLER_UNIT = "agented-readiness-sampler"
MIN_ANSWERING = 2


def docker_exec(host: str, *cmd: str, check: bool = True) -> str:
    result = harness.SystemdHost(host).exec(*cmd, check=False)
    if check:
        assert result.returncode == 0, f"{host}: {cmd} failed: {result.stdout}{result.stderr}"
    return result.stdout


def release_of(host: str) -> str:
    return os.path.basename(docker_exec(host, "readlink", CURRENT).strip())


def releases_on(host: str) -> set[str]:
    return set(docker_exec(host, "ls", RELEASES).split())


def backend_copy(line: str) -> Path:
    """backend/ as a release ships it, in a scratch directory, with one line appended to
    app/__init__.py."""
    scratch = Path(tempfile.mkdtemp(prefix="agented-rolling-"))
    return harness.copy_release(scratch / "backend", line)


class ReadinessSamplers:
    """`in_host_checks.py sample-readiness` running in every host while the `with` block runs."""

    def __init__(self, name: str):
        self.name = name
        self.samples: dict[str, list[tuple[float, float, bool]]] = {}

    def __enter__(self) -> ReadinessSamplers:
        for host in HOSTS:
            harness.SystemdHost(host).put(harness.IN_HOST_CHECKS, "/root/in_host_checks.py")
            docker_exec(host, "rm", "-f", "/root/readiness.log")
            docker_exec(host, "systemctl", "reset-failed", SAMPLER_UNIT, check=False)
            docker_exec(
                host,
                "systemd-run",
                "--unit",
                SAMPLER_UNIT,
                "--collect",
                "--quiet",
                "python3",
                "/root/in_host_checks.py",
                "sample-readiness",
                "/root/readiness.log",
            )
        time.sleep(2)  # every sampler has answers from before the deploy
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(2)  # and from after it
        for host in HOSTS:
            docker_exec(host, "systemctl", "stop", SAMPLER_UNIT, check=False)
            lines = docker_exec(host, "cat", "/root/readiness.log").split("\n")
            self.samples[host] = [
                (float(s), float(d), status == "200")
                for s, d, status in (line.split() for line in lines if line)
            ]


def answering(samples: dict[str, list[tuple[float, float, bool]]]) -> dict:
    """How many hosts answered at each moment. A host counts from a probe sent at t to the next
    probe as it answered that probe: 200 within the timeout or not."""
    start = max(host_samples[0][0] for host_samples in samples.values())
    end = min(host_samples[-1][0] for host_samples in samples.values())
    changes = []  # (time, host, answering)
    for host, host_samples in samples.items():
        for sent, _done, ok in host_samples:
            changes.append((sent, host, ok))
    changes.sort()
    state = dict.fromkeys(samples, True)
    timeline, low = [], []
    for when, host, ok in changes:
        state[host] = ok
        count = sum(state.values())
        if timeline and timeline[-1][1] == count:
            continue
        timeline.append((when, count))
    for (when, count), (following, _) in zip(timeline, [*timeline[1:], (end, None)], strict=True):
        if start <= when < end and count < MIN_ANSWERING:
            low.append((when, following, count))
    down = {}
    for host, host_samples in samples.items():
        windows, opened = [], None
        for sent, _done, ok in host_samples:
            if not ok and opened is None:
                opened = sent
            elif ok and opened is not None:
                windows.append((opened, sent))
                opened = None
        down[host] = windows
    inside = [count for when, count in timeline if start <= when < end]
    return {
        "start": start,
        "end": end,
        "timeline": timeline,
        "below_minimum": low,
        "down": down,
        "fewest_answering": min(inside, default=len(samples)),
    }


def deploy(src: Path) -> harness.PlaybookRun:
    """playbooks/site.yml with molecule's inventory, as users run it (serial 1, any error fatal),
    and molecule's ANSIBLE_CONFIG (pipelining: .config/molecule/config.yml)."""
    return harness.ansible_playbook(
        PROJECT_DIR / "playbooks" / "site.yml",
        inventory=os.environ["MOLECULE_INVENTORY_FILE"],
        extra_vars={"agented_backend_src": str(src)},
    )


def save(
    name: str, run: harness.PlaybookRun, samplers: ReadinessSamplers, timeline: dict, extra: dict
) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.log").write_text(run.output)
    record = {
        "deploy": {"rc": run.rc, "started": run.started, "ended": run.ended},
        "samples": samplers.samples,
        "answering": timeline,
        **extra,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(record))


def describe(timeline: dict) -> str:
    return "; ".join(
        f"{count} answering from {a:.2f} to {b:.2f}" for a, b, count in timeline["below_minimum"]
    )


@pytest.fixture(scope="module")
def first_release() -> dict[str, str]:
    releases = {host: release_of(host) for host in HOSTS}
    assert len(set(releases.values())) == 1, (
        f"converge left the hosts on different releases: {releases}"
    )
    return releases


@pytest.fixture(scope="module")
def rolled_out(first_release) -> dict:
    src = backend_copy("# rolling deploy: a changed release")
    with ReadinessSamplers("rolling-deploy") as samplers:
        run = deploy(src)
    timeline = answering(samplers.samples)
    releases = {host: release_of(host) for host in HOSTS}
    save("rolling-deploy", run, samplers, timeline, {"before": first_release, "after": releases})
    shutil.rmtree(src.parent, ignore_errors=True)
    return {"run": run, "timeline": timeline, "releases": releases}


def test_rolling_deploy_succeeds_on_every_host(first_release, rolled_out):
    run = rolled_out["run"]
    assert run.rc == 0, run.output[-4000:]
    new = set(rolled_out["releases"].values())
    assert len(new) == 1 and new != set(first_release.values()), rolled_out["releases"]


def test_at_least_two_hosts_answer_at_every_moment_of_the_rollout(rolled_out):
    timeline = rolled_out["timeline"]
    seconds = timeline["end"] - timeline["start"]
    print(
        f"\n    rolling deploy: {seconds:.0f} s probed, "
        f"fewest hosts answering {timeline['fewest_answering']}; "
        + ", ".join(
            f"{h} unready {sum(b - a for a, b in w):.2f} s" for h, w in timeline["down"].items()
        )
    )
    assert not timeline["below_minimum"], describe(timeline)


def test_a_host_failing_its_health_gate_stops_the_rollout(rolled_out):
    good = rolled_out["releases"]
    before = {host: releases_on(host) for host in HOSTS}
    src = backend_copy(
        "import agented_rolling_test_missing_module  # noqa: F401 -- a release that cannot start"
    )
    with ReadinessSamplers("failed-health-gate") as samplers:
        run = deploy(src)
    timeline = answering(samplers.samples)
    releases = {host: release_of(host) for host in HOSTS}
    added = {host: sorted(releases_on(host) - before[host]) for host in HOSTS}
    save(
        "failed-health-gate",
        run,
        samplers,
        timeline,
        {"before": good, "after": releases, "added": added},
    )
    shutil.rmtree(src.parent, ignore_errors=True)

    assert run.rc != 0, "the broken release was deployed without failing"
    assert releases == good, (
        f"a host does not run the release it ran before: {releases}, was {good}"
    )
    tried = [host for host in HOSTS if added[host]]
    assert len(tried) == 1, (
        f"the broken release reached {tried}: the rollout did not stop at the first host"
    )
    assert "Rolled back to release" in run.output, run.output[-4000:]
    for host in HOSTS:
        assert docker_exec(host, "curl", "-fsS", "http://127.0.0.1:20000/health/readiness"), host
    print(
        f"\n    failed health gate: tried on {tried[0]} only, rolled back; fewest hosts answering "
        f"{timeline['fewest_answering']}"
    )
    assert not timeline["below_minimum"], describe(timeline)
