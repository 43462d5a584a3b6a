"""How the field hosts were deployed: over SSH as the deploy user, with sudo, timed."""

import json
import os
from pathlib import Path

import pytest

from conftest import figure, name_of, sh

TABLE = "seconds of a deploy over SSH (deploy user, sudo, no egress)"


def test_tests_and_deploys_reach_the_host_over_ssh_as_deploy_with_sudo(host):
    assert host.backend.ansible_runner.get_variables(name_of(host))["ansible_connection"] == "ssh"
    assert sh(host, "id -un").strip() == "root"
    # This very command came in through sshd, as the deploy user.
    assert sh(host, "pgrep -u deploy sshd", check=False).strip(), "no SSH session of deploy"
    assert sh(host, "printenv SUDO_USER").strip() == "deploy"
    assert host.user("deploy").uid != 0


def test_first_deploy_and_no_op_rerun_are_timed():
    path = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "converge-times.json"
    if not path.is_file():
        pytest.skip("no converge has run in this scenario yet")
    times = json.loads(path.read_text())
    for label, seconds in zip(
        ["first deploy (converge)", "no-op re-run (idempotence)"], times, strict=False
    ):
        figure(TABLE, label, "both hosts", f"{seconds:.1f}")
    assert len(times) >= 2, f"converge and idempotence should both have run: {times}"
