"""molecule/field reaches its hosts with the SSH settings users get from ansible.cfg: molecule
writes an ansible.cfg of its own, so the scenario repeats them, and this keeps the two the same."""

import configparser

import yaml

from conftest import ROOT


def test_field_scenario_uses_the_ssh_settings_of_ansible_cfg():
    repo = configparser.ConfigParser()
    repo.read(ROOT / "ansible.cfg")
    scenario = yaml.safe_load((ROOT / "molecule" / "field" / "molecule.yml").read_text())
    field = scenario["ansible"]["cfg"]["ssh_connection"]
    assert repo.getboolean("ssh_connection", "pipelining") is field["pipelining"] is True
    assert repo.get("ssh_connection", "ssh_args") == field["ssh_args"]
    assert "ControlPersist=60s" in field["ssh_args"] and "ControlMaster=auto" in field["ssh_args"]
