"""tasks/prune.yml run for real (ansible-playbook on this machine, in a temporary install tree):
old releases go, and so do the wheelhouses that no kept release was built from."""

import json
import os
import sys
from pathlib import Path

from conftest import ROLE, run_ansible

KEEP = 3


def run_prune(tmp_path: Path, running: str, previous: str, shipped: str | None) -> None:
    variables = {
        "agented_backend_releases_keep": KEEP,
        "__agented_backend_releases_dir": str(tmp_path / "backend" / "releases"),
        "__agented_backend_wheelhouses_dir": str(tmp_path / "wheelhouse"),
        "__agented_backend_running_release": running,
        "__agented_backend_previous_release": previous,
        "ansible_python_interpreter": sys.executable,
    }
    if shipped:
        variables["__agented_backend_wheelhouse"] = {"id": shipped}
    playbook = tmp_path / "prune.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars": variables,
                    "tasks": [
                        {
                            "ansible.builtin.include_role": {
                                "name": "agented_backend",
                                "tasks_from": "prune.yml",
                            }
                        }
                    ],
                }
            ]
        )
    )
    run_ansible(
        "ansible-playbook", "-i", "localhost,", str(playbook), ANSIBLE_ROLES_PATH=str(ROLE.parent)
    )


def make_tree(tmp_path: Path, releases: dict[str, str | None], wheelhouses: list[str]) -> None:
    """releases: name -> the wheelhouse it was built from (None: a release that does not say),
    oldest first."""
    for age, (name, wheelhouse) in enumerate(reversed(list(releases.items()))):
        release = tmp_path / "backend" / "releases" / name
        release.mkdir(parents=True)
        if wheelhouse:
            (release / ".agented-wheelhouse").write_text(wheelhouse + "\n")
        stamp = 1_700_000_000 - age * 60
        os.utime(release, (stamp, stamp))
    for name in wheelhouses:
        (tmp_path / "wheelhouse" / name).mkdir(parents=True)
        (tmp_path / "wheelhouse" / name / "requirements.txt").write_text("")


def remaining(tmp_path: Path, what: str) -> set[str]:
    return {p.name for p in (tmp_path / what).iterdir()}


def test_wheelhouses_of_pruned_releases_are_removed_and_those_of_kept_ones_stay(tmp_path):
    releases = {"r1": "wh-1", "r2": "wh-2", "r3": "wh-3", "r4": "wh-3", "r5": "wh-5"}
    make_tree(tmp_path, releases, ["wh-1", "wh-2", "wh-3", "wh-5", "wh-stray"])
    run_prune(tmp_path, running="r5", previous="r4", shipped="wh-5")
    assert remaining(tmp_path, "backend/releases") == {"r3", "r4", "r5"}
    assert remaining(tmp_path, "wheelhouse") == {"wh-3", "wh-5"}


def test_the_wheelhouse_this_play_shipped_stays_even_before_a_release_notes_it(tmp_path):
    # A release from before releases noted their wheelhouse, and one just shipped for uv.
    make_tree(tmp_path, {"r1": None}, ["wh-old", "wh-new"])
    run_prune(tmp_path, running="r1", previous="", shipped="wh-new")
    assert remaining(tmp_path, "backend/releases") == {"r1"}
    assert remaining(tmp_path, "wheelhouse") == {"wh-new"}
