#!/usr/bin/python
"""Everything a deploy reads from a host before it changes anything, in one round trip."""

from __future__ import annotations

DOCUMENTATION = r"""
module: agented_backend_host
short_description: Read in one round trip what a deploy of the agented backend must know of a host
description:
  - Read-only, so it runs in check mode too. Each read would otherwise be a task of its own, and
    every task is a round trip to the host: together they were most of a deploy that changes
    nothing.
options:
  install_dir:
    description: The role's install directory, holding C(releases/), C(current) and C(previous).
    type: path
    required: true
  release:
    description: The release the play deploys; C(release_built) says whether it is complete.
    type: str
    default: ""
  release_marker:
    description: The file written last into a release (a directory without it is unfinished).
    type: str
    required: true
  python:
    description: The interpreter of the backend, whose platform the wheels must fit ("" for none).
    type: str
    default: ""
  uv:
    description: The path of the uv binary the role installs.
    type: path
    required: true
  env_file:
    description: The rendered C(.env).
    type: path
    required: true
  wheelhouses_dir:
    description: The directory of the shipped wheelhouses.
    type: path
    required: true
  requirements:
    description: The file that a completely unpacked wheelhouse holds.
    type: str
    required: true
  units:
    description: systemd units whose states are read, where systemd runs.
    type: list
    elements: str
    default: []
  expect:
    description: >-
      Paths the play installs, each with C(owner), C(group), C(mode) (octal text) and, for a file,
      the C(checksum) (SHA-1) of its content. C(as_wanted) lists those already so, whose tasks
      then need no round trip of their own.
    type: list
    elements: dict
    default: []
  keep:
    description: >-
      How many releases a prune keeps (see the agented_backend_prune module); C(prunable) says
      whether a prune would remove anything now.
    type: int
    default: 0
  release_wheelhouse:
    description: The file in a release that names the wheelhouse it was built from.
    type: str
    default: ""
  account:
    description: >-
      The service account as the play creates it (C(user), C(group), C(home), C(shell));
      C(account_as_wanted) says whether it exists so.
    type: dict
    default: {}
"""

RETURN = r"""
current:
  description: The release C(current) points at, "" for none.
  type: str
previous:
  description: The release C(previous) points at, "" for none.
  type: str
release_built:
  description: Whether the release of C(release) is complete on the host.
  type: bool
platform:
  description: >-
    The platform of C(python) (system, machine, python, libc), or {} when none was asked or it
    cannot run.
  type: dict
platform_error:
  description: Why C(python) could not say its platform, "" when it did.
  type: str
uv_version:
  description: The version of the installed uv, "" when it does not run.
  type: str
env_sets_secret_key:
  description: Whether C(.env) has a SECRET_KEY line (written by earlier versions of the role).
  type: bool
wheelhouses:
  description: The shipped wheelhouses that are completely unpacked.
  type: list
prunable:
  description: >-
    Whether a prune with C(keep) would remove a release or a wheelhouse now, keeping C(current)
    and C(previous); false when C(keep) is 0.
  type: bool
as_wanted:
  description: The paths of C(expect) whose content, owner, group and mode are already as wanted.
  type: list
account_as_wanted:
  description: Whether the group and the user of C(account) exist, with that group, home and shell.
  type: bool
units:
  description: For each unit of C(units), its ActiveState and UnitFileState ("" when not loaded).
  type: dict
serving_current:
  description: >-
    Whether the service's main process started after C(current) was last pointed at a release, and
    so runs that release. Not so when a play was interrupted between pointing C(current) at a
    release and restarting the service, or when the service does not run.
  type: bool
"""

import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import time

from ansible.module_utils.agented_backend_prune import plan
from ansible.module_utils.basic import AnsibleModule

# Run by the host's interpreter for the backend, which may not be the one running this module.
PLATFORM = (
    "import json, platform; print(json.dumps({'system': platform.system(),"
    " 'machine': platform.machine(), 'python': platform.python_version(),"
    " 'libc': platform.libc_ver()[1] if platform.system() == 'Linux' else platform.mac_ver()[0]}))"
)
SECRET_KEY_LINE = re.compile(r"^\s*(export\s+)?SECRET_KEY\s*=", re.MULTILINE)


def link_target(path: str) -> str:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return ""


def run(argv: list[str]) -> tuple[int, str, str]:
    try:
        done = subprocess.run(  # noqa: S603 -- the role's own paths
            argv, capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return 127, "", str(error)
    return done.returncode, done.stdout, done.stderr


def platform_of(python: str) -> tuple[dict, str]:
    if not python:
        return {}, ""
    rc, out, err = run([python, "-c", PLATFORM])
    if rc != 0:
        return {}, f"{python} -c ... exited {rc}: {(err or out).strip()}"
    return json.loads(out), ""


def uv_version(uv: str) -> str:
    rc, out, _ = run([uv, "--version"])
    # "uv 0.9.7 (...)"
    return out.split()[1] if rc == 0 and len(out.split()) > 1 else ""


def env_sets_secret_key(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as env:
            return bool(SECRET_KEY_LINE.search(env.read()))
    except OSError:
        return False


def wheelhouses(directory: str, requirements: str) -> list[str]:
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(n for n in names if os.path.isfile(os.path.join(directory, n, requirements)))


def unit_states(units: list[str], current: str) -> tuple[dict, bool]:
    """The units' states, and whether the main process of one of them started after `current`
    was last pointed at a release."""
    systemctl = shutil.which("systemctl")
    if not units or not systemctl:
        return {}, False
    rc, out, _ = run(
        [
            systemctl,
            "show",
            "--property=ActiveState,UnitFileState,MainPID,ExecMainStartTimestampMonotonic",
            "--",
            *units,
        ]
    )
    states = {unit: {"active": "", "enabled": ""} for unit in units}
    if rc != 0:
        return states, False
    try:
        switched = os.lstat(current).st_mtime
    except OSError:
        switched = None
    # systemd's monotonic clock is the kernel's CLOCK_MONOTONIC, as is time.monotonic() here.
    booted = time.time() - time.monotonic()
    serving_current = False
    # One block per unit, in the order asked, separated by a blank line.
    for unit, block in zip(units, out.strip().split("\n\n"), strict=False):
        values = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        states[unit] = {
            "active": values.get("ActiveState", ""),
            "enabled": values.get("UnitFileState", ""),
        }
        started = int(values.get("ExecMainStartTimestampMonotonic") or 0)
        if values.get("MainPID", "0") not in ("", "0") and started and switched is not None:
            serving_current = serving_current or booted + started / 1e6 > switched
    return states, serving_current


def as_wanted(expected: dict) -> bool:
    try:
        info = os.lstat(expected["path"])
        owner = pwd.getpwnam(expected["owner"]).pw_uid
        group = grp.getgrnam(expected["group"]).gr_gid
    except (OSError, KeyError):
        return False
    if (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) != (
        owner,
        group,
        int(expected["mode"], 8),
    ):
        return False
    if "checksum" not in expected:
        return stat.S_ISDIR(info.st_mode)
    if not stat.S_ISREG(info.st_mode):
        return False
    digest = hashlib.sha1()  # noqa: S324 -- the checksum Ansible's own file modules compare
    with open(expected["path"], "rb") as f:
        for chunk in iter(lambda: f.read(65536), b""):
            digest.update(chunk)
    return digest.hexdigest() == expected["checksum"]


def account_as_wanted(account: dict) -> bool:
    if not account:
        return False
    try:
        group = grp.getgrnam(account["group"])
        user = pwd.getpwnam(account["user"])
    except KeyError:
        return False
    wanted = (group.gr_gid, account["home"], account["shell"])
    return (user.pw_gid, user.pw_dir, user.pw_shell) == wanted


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "install_dir": {"type": "path", "required": True},
            "release": {"type": "str", "default": ""},
            "release_marker": {"type": "str", "required": True},
            "python": {"type": "str", "default": ""},
            "uv": {"type": "path", "required": True},
            "env_file": {"type": "path", "required": True},
            "wheelhouses_dir": {"type": "path", "required": True},
            "requirements": {"type": "str", "required": True},
            "units": {"type": "list", "elements": "str", "default": []},
            "expect": {"type": "list", "elements": "dict", "default": []},
            "keep": {"type": "int", "default": 0},
            "release_wheelhouse": {"type": "str", "default": ""},
            "account": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    p = module.params
    releases_dir = os.path.join(p["install_dir"], "releases")
    current_link = os.path.join(p["install_dir"], "current")
    platform, platform_error = platform_of(p["python"])
    units, serving_current = unit_states(p["units"], current_link)
    current = link_target(current_link)
    previous = link_target(os.path.join(p["install_dir"], "previous"))
    prunable = p["keep"] > 0 and any(
        plan(
            releases_dir,
            p["keep"],
            [current, previous],
            wheelhouses_dir=p["wheelhouses_dir"],
            release_wheelhouse=p["release_wheelhouse"],
            shipped="",
        )
    )
    module.exit_json(
        changed=False,
        current=current,
        previous=previous,
        prunable=prunable,
        release_built=bool(p["release"])
        and os.path.isfile(os.path.join(releases_dir, p["release"], p["release_marker"])),
        platform=platform,
        platform_error=platform_error,
        uv_version=uv_version(p["uv"]),
        env_sets_secret_key=env_sets_secret_key(p["env_file"]),
        wheelhouses=wheelhouses(p["wheelhouses_dir"], p["requirements"]),
        units=units,
        serving_current=serving_current,
        as_wanted=[e["path"] for e in p["expect"] if as_wanted(e)],
        account_as_wanted=account_as_wanted(p["account"]),
    )


if __name__ == "__main__":
    main()
