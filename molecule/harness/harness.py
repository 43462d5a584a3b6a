"""The test harness that molecule's suites and the benchmarks share: test hosts, in-host checks,
ansible-playbook runs and their PLAY RECAP, and copies of the backend as a release ships it.

Standard library only: the benchmarks run as uv scripts whose environments hold matplotlib and
little else. The suites add testinfra on top (molecule/default/tests/conftest.py).

    sys.path.insert(0, str(ROOT / "molecule" / "harness")); import harness
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BACKEND = ROOT / "backend"
# How a test host runs (a container booting systemd) is written once, in .config/molecule/:
# create.yml starts containers with the settings of systemd-container.yml. molecule's create
# step and SystemdHost.start() below both run it.
CREATE_PLAYBOOK = ROOT / ".config" / "molecule" / "create.yml"
IN_HOST_CHECKS = Path(__file__).with_name("in_host_checks.py")
RELEASE_LOOKUP = (
    ROOT / "roles" / "agented_backend" / "lookup_plugins" / "agented_backend_release.py"
)


# --- the backend, as a release ships it -------------------------------------------------------


def _release_lookup():
    """The role's lookup plugin, which imports without Ansible: its list of what ships is the
    only one (no venv, caches, .env, databases, logs or tests)."""
    spec = importlib.util.spec_from_file_location("agented_backend_release", RELEASE_LOOKUP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_release(destination: Path, change: str | None = None, src: Path = BACKEND) -> Path:
    """Copy what a release of `src` ships into `destination` (a new directory), optionally with
    one line appended to app/__init__.py, so that it hashes to a new release."""
    _release_lookup().copy(str(src), str(destination))
    if change is not None:
        with open(destination / "app" / "__init__.py", "a") as stream:
            stream.write(change + "\n")
    return destination


def release_id(src: Path) -> str:
    """The id the role gives a release of `src` (its directory under releases/)."""
    return _release_lookup().release(str(src))["id"]


# --- ansible-playbook -------------------------------------------------------------------------


def play_recap(output: str) -> dict[str, dict[str, int]]:
    """ok/changed/failed/... counts per host from the last PLAY RECAP of ansible-playbook's
    output."""
    start = output.rfind("PLAY RECAP")
    if start < 0:
        return {}
    return {
        host: {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", counts)}
        for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output[start:], re.MULTILINE)
    }


class PlaybookRun:
    """One finished ansible-playbook run: its command, exit code, output, wall time and recap."""

    def __init__(self, command: list[str], rc: int, output: str, started: float, ended: float):
        self.command = command
        self.rc = rc
        self.output = output
        self.started = started  # unix seconds, to line the run up with in-host measurements
        self.ended = ended
        self.seconds = ended - started
        self.recap = play_recap(output)

    def changed(self, host: str) -> int:
        return self.recap.get(host, {}).get("changed", 0)

    def __str__(self) -> str:
        tail = "\n".join(self.output.splitlines()[-60:])
        return f"$ {shlex.join(self.command)}\n(rc={self.rc})\n{tail}"


def ansible_playbook(
    playbook: str | Path,
    *args: str,
    inventory: str | Path,
    extra_vars: dict | None = None,
    env: dict | None = None,
    log: Path | None = None,
    timeout: float = 1200,
) -> PlaybookRun:
    """ansible-playbook (from PATH) from the repository root, as users run it; the output is kept
    (and written to `log`, if given). Extra variables go in a file, not on the command line:
    the values stay out of `ps` and need no shell quoting."""
    command = ["ansible-playbook", "-i", str(inventory)]
    with tempfile.TemporaryDirectory(prefix="agented-playbook-") as scratch:
        if extra_vars is not None:
            path = Path(scratch) / "extra-vars.json"
            path.write_text(json.dumps(extra_vars))
            command += ["--extra-vars", f"@{path}"]
        command += [*args, str(playbook)]
        started = time.time()
        completed = subprocess.run(
            command,
            env={**os.environ, **(env or {}), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,  # the caller looks at rc: some runs are meant to fail
        )
    run = PlaybookRun(command, completed.returncode, completed.stdout, started, time.time())
    if log is not None:
        log.write_text(completed.stdout)
    return run


# --- checks that run inside a test host -------------------------------------------------------


def in_host_checks_command(*args: str, env: dict | None = None, user: str | None = None) -> str:
    """The shell command that runs in_host_checks.py with the host's python3, the file itself
    shipped inline (nothing is left on the host)."""
    shipped = base64.b64encode(IN_HOST_CHECKS.read_bytes()).decode()
    code = f"import base64; exec(base64.b64decode({shipped!r}))"
    command = "env " + " ".join(shlex.quote(f"{k}={v}") for k, v in (env or {}).items())
    command += " python3 -c " + shlex.quote(code) + " " + shlex.join(args)
    if user:
        command = f"runuser -u {user} -- {command}"
    return command


def last_json_line(output: str) -> dict:
    """The one JSON object in_host_checks.py prints (after anything else on stdout)."""
    return json.loads(output.strip().splitlines()[-1])


# --- test hosts -------------------------------------------------------------------------------


def _run(cmd: list[str], *, check: bool = True, timeout: float | None = None):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise RuntimeError(f"{shlex.join(cmd)} failed ({result.returncode}):\n{output}")
    return result


class SystemdHost:
    """A Docker container booting systemd, reached with `docker exec` and `docker cp`.

    For a host molecule created, only name it. start() creates one as molecule does (create.yml)
    for hosts outside molecule (the benchmarks); remove() removes it."""

    def __init__(self, name: str, image: str = "agented-molecule/debian:bookworm"):
        self.name = name
        self.image = image

    def running(self) -> bool:
        state = _run(["docker", "inspect", "-f", "{{.State.Running}}", self.name], check=False)
        return state.stdout.strip() == "true"

    def start(self) -> None:
        """Create and boot the container (a new one: an old one of that name is removed first),
        and wait until systemd has started every unit."""
        self.remove()
        _run(["docker", "image", "inspect", self.image])  # molecule/images/build makes it
        platforms = [{"name": self.name, "image": self.image}]
        extra_vars = {
            "molecule_yml": {"platforms": platforms},
            # An inventory that names localhost makes Ansible look for a python3 of its own; the
            # docker modules need the one that runs ansible-playbook (as the implicit localhost).
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        }
        run = ansible_playbook(CREATE_PLAYBOOK, inventory="localhost,", extra_vars=extra_vars)
        if run.rc != 0:
            raise RuntimeError(f"could not create {self.name}:\n{run}")
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"{self.name}: systemd did not finish booting ({state})")

    def remove(self) -> None:
        _run(["docker", "rm", "-f", self.name], check=False)

    def exec(
        self, *cmd: str, check=True, timeout=None, detach=False
    ) -> subprocess.CompletedProcess:
        return _run(
            ["docker", "exec", *(["-d"] if detach else []), self.name, *cmd],
            check=check,
            timeout=timeout,
        )

    def sh(self, script: str, check=True, timeout=None) -> subprocess.CompletedProcess:
        return self.exec("sh", "-c", script, check=check, timeout=timeout)

    def put(self, local: Path, remote: str) -> None:
        """Copy a file or directory into the host (under /root: /tmp is a tmpfs that docker cp
        misses)."""
        _run(["docker", "cp", str(local), f"{self.name}:{remote}"])

    def get(self, remote: str, local: Path) -> None:
        _run(["docker", "cp", f"{self.name}:{remote}", str(local)])
