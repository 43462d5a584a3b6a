"""Releases: a changed backend deploys into a new release; a broken one is rolled back by itself
while the host keeps serving; playbooks/rollback.yml goes back on purpose; data survives it all.

Sequence, on every host at once (one ansible-playbook run each):
  A  the converged release                          write delivery 1
  B  a good change, with releases_keep=2            write delivery 2   (pruning: only A and B left),
                                                    under load that must lose no request
  C  a broken change (an import error)              play fails, host back on B, write delivery 3
  rollback.yml                                      host on A again
  converge with the repo's backend                  still A, nothing rebuilt
Then deliveries 1-3, .env and the generated key must all still be there.
"""

import tempfile
import time
from pathlib import Path

import harness
import pytest

from conftest import (
    CONVERGE,
    ENV_FILE,
    RELEASES_DIR,
    ROLLBACK,
    SERVICE,
    ansible_playbook,
    current_release,
    effective_secret_key,
    figure,
    file_digest,
    name_of,
    on_all,
    post_webhook,
    ready,
    sh,
    show,
    stored,
    under_load,
)

BROKEN_MODULE = "agented_molecule_deliberately_missing_module"
HEALTH_TIMEOUT = 10  # seconds the role waits for the broken release before rolling back


def snapshot(host) -> dict:
    return {"release": current_release(host), "master": show(host, SERVICE, "MainPID")["MainPID"]}


def write(all_hosts, label):
    deliveries = {name: f"molecule-{label}-{name}-{time.time_ns()}" for name in all_hosts}
    acks = on_all(all_hosts, lambda h: post_webhook(h, deliveries[name_of(h)]))
    assert all(200 <= a["status"] < 300 for a in acks.values()), acks
    return deliveries


@pytest.fixture(scope="module")
def story(all_hosts):
    s = {
        "env": on_all(all_hosts, lambda h: file_digest(h, ENV_FILE)),
        "key": on_all(all_hosts, effective_secret_key),
        "A": on_all(all_hosts, snapshot),
        "deliveries": [write(all_hosts, "release-a")],
    }
    with tempfile.TemporaryDirectory() as scratch:
        # Copies of backend/ as a release ships it (no local venv, caches, database or .env).
        good = harness.copy_release(
            Path(scratch) / "good", "# A harmless change: a new release of the same code."
        )
        started = time.monotonic()
        with under_load(all_hosts) as s["load through B"]:
            s["deploy B"] = ansible_playbook(
                CONVERGE,
                extra_vars={"agented_backend_src": str(good), "agented_backend_releases_keep": 2},
            )
        s["deploy B seconds"] = time.monotonic() - started
        s["B"] = on_all(all_hosts, snapshot)
        s["releases after B"] = on_all(all_hosts, lambda h: sh(h, f"ls {RELEASES_DIR}").split())
        s["deliveries"].append(write(all_hosts, "release-b"))

        broken = harness.copy_release(
            Path(scratch) / "broken", f"import {BROKEN_MODULE}  # noqa: deliberately broken release"
        )
        started = time.monotonic()
        s["deploy C"] = ansible_playbook(
            CONVERGE,
            extra_vars={
                "agented_backend_src": str(broken),
                "agented_backend_health_timeout": HEALTH_TIMEOUT,
            },
        )
        s["deploy C seconds"] = time.monotonic() - started
        s["after C"] = on_all(all_hosts, snapshot)
        s["serving after C"] = on_all(all_hosts, ready)
        s["deliveries"].append(write(all_hosts, "release-c"))

    s["rollback"] = ansible_playbook(ROLLBACK)
    s["after rollback"] = on_all(all_hosts, snapshot)
    s["serving after rollback"] = on_all(all_hosts, ready)
    started = time.monotonic()
    s["restore"] = ansible_playbook(CONVERGE)
    s["restore seconds"] = time.monotonic() - started
    s["after restore"] = on_all(all_hosts, snapshot)
    s["stored"] = on_all(all_hosts, lambda h: stored(h, *[d[name_of(h)] for d in s["deliveries"]]))
    s["env after"] = on_all(all_hosts, lambda h: file_digest(h, ENV_FILE))
    s["key after"] = on_all(all_hosts, effective_secret_key)
    figure(
        "deploy wall time (both hosts at once)",
        "a changed backend (new venv)",
        "seconds",
        f"{s['deploy B seconds']:.0f}",
    )
    figure(
        "deploy wall time (both hosts at once)",
        f"a broken release, rolled back (health timeout {HEALTH_TIMEOUT} s)",
        "seconds",
        f"{s['deploy C seconds']:.0f}",
    )
    # The converge back to the running release changes nothing: a no-op re-run (the goal of
    # docs/BENCHMARKS.md §5 is 10 s per host).
    figure(
        "deploy wall time (both hosts at once)",
        "a no-op re-run",
        "seconds",
        f"{s['restore seconds']:.1f}",
    )
    return s


def test_changed_backend_deploys_a_new_release_and_restarts(host, story):
    name = name_of(host)
    assert story["deploy B"].rc == 0, str(story["deploy B"])
    a, b = story["A"][name], story["B"][name]
    assert b["release"] != a["release"], "a changed backend did not make a new release"
    assert b["master"] != a["master"], "the service was not restarted on the new release"


def test_a_redeploy_under_load_loses_no_request(host, story):
    """20 requests/s inside the host on its loopback through the whole deploy of release B,
    its restart included: systemd's socket holds the connections while no worker accepts."""
    load = story["load through B"][name_of(host)]
    figure(
        "requests lost under 20/s (inside the host, loopback)",
        "through a redeploy of a changed release",
        name_of(host),
        f"{load['failed']} of {load['requests']}, slowest {load['slowest']:.2f} s",
    )
    assert load["requests"] > 100, load
    assert load["failed"] == 0, f"requests lost through the redeploy: {load['by_answer']}"


def test_old_releases_are_pruned(host, story):
    name = name_of(host)
    kept = story["releases after B"][name]
    a, b = (Path(story[k][name]["release"]).name for k in ("A", "B"))
    assert sorted(kept) == sorted([a, b]), f"releases_keep=2 kept {kept}"


def test_broken_release_is_rolled_back_and_the_host_keeps_serving(host, story):
    name = name_of(host)
    run = story["deploy C"]
    assert run.rc != 0, f"a release that cannot start was accepted:\n{run}"
    assert BROKEN_MODULE in run.output, f"the failure does not show the new release's log:\n{run}"
    assert story["after C"][name]["release"] == story["B"][name]["release"], "not back on release B"
    assert story["serving after C"][name], "the host stopped serving"
    assert show(host, SERVICE, "ActiveState")["ActiveState"] == "active"


def test_rollback_playbook_returns_to_the_previous_release(host, story):
    name = name_of(host)
    assert story["rollback"].rc == 0, str(story["rollback"])
    assert story["after rollback"][name]["release"] == story["A"][name]["release"], (
        "rollback.yml did not return to the release that ran before B"
    )
    assert story["serving after rollback"][name]


def test_redeploying_the_running_release_rebuilds_nothing(host, story):
    name = name_of(host)
    run = story["restore"]
    assert run.rc == 0, str(run)
    assert story["after restore"][name] == story["after rollback"][name], "the service was touched"
    assert run.changed(name) == 0, f"a converge to the running release changed things:\n{run}"


def test_data_survives_deploys_failures_and_rollbacks(host, story):
    name = name_of(host)
    assert story["stored"][name]["missing"] == [], f"lost deliveries: {story['stored'][name]}"
    assert story["env after"][name] == story["env"][name], ".env changed"
    assert story["key after"][name] == story["key"][name], "SECRET_KEY changed"
