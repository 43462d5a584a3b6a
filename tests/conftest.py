import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
ROLE = ROOT / "roles" / "agented_backend"
BACKEND = ROOT / "backend"

sys.path.insert(0, str(ROLE / "filter_plugins"))
sys.path.insert(0, str(ROLE / "lookup_plugins"))


@pytest.fixture(scope="session")
def root():
    return ROOT


def run_ansible(command: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`ansible` or `ansible-playbook` of this interpreter with the repository's ansible.cfg (and
    `env` added to the environment); fails the test, with its output, unless it succeeds."""
    result = subprocess.run(
        [str(pathlib.Path(sys.executable).with_name(command)), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), **env},
        timeout=300,
        check=False,  # the output goes into the assertion's message
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result
