"""deploy/ holds the role's templates rendered with its defaults, never a hand-edited copy."""

import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

# The ansible-playbook beside this interpreter (.venv), whether or not .venv/bin is on PATH.
ANSIBLE_PLAYBOOK = (
    shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) or "ansible-playbook"
)
REFERENCE_FILES = [
    "agented.service",
    "agented.socket",
    "agented-standby.service",
    "com.agented.backend.plist",
    "agented.newsyslog.conf",
]


@pytest.fixture(scope="module")
def fresh_rendering(tmp_path_factory):
    dest = tmp_path_factory.mktemp("deploy")
    subprocess.run(
        [
            ANSIBLE_PLAYBOOK,
            "tools/reference/render.yml",
            "-e",
            f"reference_dest={dest}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return dest


@pytest.mark.parametrize("name", REFERENCE_FILES)
def test_deploy_matches_a_fresh_rendering_of_the_role_templates(fresh_rendering, name):
    committed = (ROOT / "deploy" / name).read_text()
    assert committed == (fresh_rendering / name).read_text(), (
        f"deploy/{name} is stale: run `just reference`"
    )


def test_reference_unit_uses_the_documented_paths_and_restart_policy():
    unit = (ROOT / "deploy" / "agented.service").read_text()
    for line in [
        "Type=notify",
        "User=agented",
        "Group=agented",
        "WorkingDirectory=/opt/agented/backend/current",
        "ExecStart=/opt/agented/backend/current/.venv/bin/gunicorn -c gunicorn.conf.py",
        "ExecReload=/bin/kill -s HUP $MAINPID",
        "Restart=on-failure",
        "RestartForceExitStatus=0",
        "RestartSec=3",
        "KillMode=control-group",
        "TimeoutStopSec=30",
    ]:
        assert line in unit.splitlines(), line
    # One .env parser: the service's own (see the unit's comment).
    assert not any(line.startswith("EnvironmentFile=") for line in unit.splitlines())


def test_reference_plist_parses_and_keeps_gunicorn_supervised():
    plist = plistlib.loads((ROOT / "deploy" / "com.agented.backend.plist").read_bytes())
    assert plist["Label"] == "com.agented.backend"
    assert plist["ProgramArguments"] == [
        "/opt/agented/backend/current/.venv/bin/gunicorn",
        "-c",
        "gunicorn.conf.py",
    ]
    assert plist["WorkingDirectory"] == "/opt/agented/backend/current"
    assert plist["UserName"] == "agented"
    assert plist["KeepAlive"] is True and plist["RunAtLoad"] is True
    assert plist["ThrottleInterval"] <= 5
    assert plist["ExitTimeOut"] > 10
    assert plist["EnvironmentVariables"] == {"OBJC_DISABLE_INITIALIZE_FORK_SAFETY": "YES"}
    assert plist["StandardErrorPath"].startswith("/usr/local/var/log/agented/")
    # Files the service creates are private to it, as under systemd's UMask=0077.
    assert plist["Umask"] == 0o077


def test_unit_and_plist_stop_timeouts_agree():
    unit = (ROOT / "deploy" / "agented.service").read_text()
    plist = plistlib.loads((ROOT / "deploy" / "com.agented.backend.plist").read_bytes())
    assert f"TimeoutStopSec={plist['ExitTimeOut']}\n" in unit


def test_newsyslog_rotates_both_launchd_logs_as_root_files():
    plist = plistlib.loads((ROOT / "deploy" / "com.agented.backend.plist").read_bytes())
    entries = [
        line.split()
        for line in (ROOT / "deploy" / "agented.newsyslog.conf").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    # logfilename owner:group mode count size when flags
    assert [entry[0] for entry in entries] == [
        plist["StandardOutPath"],
        plist["StandardErrorPath"],
    ]
    for _, owner, mode, count, size, when, flags in entries:
        # Recreated as root's and read-only to others: the service cannot rewrite its log.
        assert (owner, mode) == ("root:wheel", "644")
        assert (int(count), int(size), when) == (5, 10240, "*")
        # No signal (N) and no compression of the file launchd may still write to.
        assert "N" in flags and "J" not in flags and "Z" not in flags
