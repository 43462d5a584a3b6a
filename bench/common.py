"""Shared helpers of the benchmarks: results, statistics, charts, systemd test hosts, converges.

Every benchmark writes into bench/results/<name>/: results.json (every figure and the machine it
was taken on), tables.md (the tables docs/BENCHMARKS.md shows; bench/report.py copies them in)
and its PNG charts.

Test hosts are Docker containers booting systemd, from the images molecule uses
(molecule/images/build), started with the same settings as molecule/default. All traffic a
benchmark sends to a host comes from inside that host, to its own 127.0.0.1 (`docker exec`).
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
BACKEND = ROOT / "backend"
TOOLS = ROOT / ".venv" / "bin"
IMAGE = "agented-molecule/debian:bookworm"

# The settings molecule/default gives its hosts: systemd as PID 1 without --privileged.
SYSTEMD_CONTAINER = [
    "--cap-add",
    "SYS_ADMIN",
    "--cgroupns",
    "host",
    "-v",
    "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs",
    "/run",
    "--tmpfs",
    "/run/lock",
    "--tmpfs",
    "/tmp",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "--stop-signal",
    "SIGRTMIN+3",
]
# The test hosts reach PyPI through a proxy that only this machine's CA bundle trusts.
BUILD_ENVIRONMENT = {
    "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
    "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
}
_LOAD_AT_START = [round(x, 2) for x in os.getloadavg()]
WEBHOOK_SECRET = "bench-webhook-secret"
# Fixed, so that every converge of a bench host renders the same .env.
SECRET_KEY = "bench-secret-key-not-for-production"
PORT = 20000


# --- results ----------------------------------------------------------------------------------


def results_dir(name: str) -> Path:
    path = RESULTS / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    """Cores, memory and load of this machine, as nproc, free and uptime report them."""
    memory = (
        subprocess.run(["free", "-m"], capture_output=True, text=True).stdout.split("\n")[1].split()
    )
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "backend", "roles", "playbooks"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "commit": commit + (" (backend/roles/playbooks modified)" if dirty else ""),
        "cores": int(subprocess.run(["nproc"], capture_output=True, text=True).stdout),
        "memory_mb": int(memory[1]),
        "cpu": model,
        "kernel": os.uname().release,
        "load_average_at_start": _LOAD_AT_START,
        "load_average": load_average(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def save(name: str, results: dict, tables: str) -> None:
    """Write results.json and tables.md of a benchmark and print the tables."""
    directory = results_dir(name)
    results = {"machine": machine(), **results}
    (directory / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    start = " / ".join(str(x) for x in results["machine"]["load_average_at_start"])
    load = " / ".join(str(x) for x in results["machine"]["load_average"])
    footer = (
        f"\n_Taken {results['machine']['date']}; load average (1/5/15 min) {start} at the start, "
        f"{load} at the end._\n"
    )
    (directory / "tables.md").write_text(tables.rstrip() + "\n" + footer)
    print(tables)
    print(footer)
    print(f"results: {directory.relative_to(ROOT)}/")


# --- statistics and tables --------------------------------------------------------------------


def percentile(values, p: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values) -> dict:
    values = list(values)
    return {
        "n": len(values),
        "median": statistics.median(values) if values else None,
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "min": min(values) if values else None,
        "max": max(values) if values else None,
    }


def fmt(value, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        value = f"{value:.{digits}f}"
    return f"{value}{unit}"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def goal(section: str, what: str, measured: str, met: bool | None) -> dict:
    """One line of the summary at the top of docs/BENCHMARKS.md (met None: a figure, no goal)."""
    return {"section": section, "goal": what, "measured": measured, "met": met}


# --- charts -----------------------------------------------------------------------------------


def pyplot():
    import matplotlib  # noqa: PLC0415 -- only the chart step needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    plt.rcParams.update(
        {
            "figure.figsize": (9, 4),
            "figure.dpi": 100,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "font.size": 9,
        }
    )
    return plt


# --- commands ---------------------------------------------------------------------------------


def run(
    cmd, *, check=True, capture=True, env=None, timeout=None, cwd=None
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        cmd, capture_output=capture, text=True, env=env, timeout=timeout, cwd=cwd
    )
    if check and result.returncode != 0:
        output = ((result.stdout or "") + (result.stderr or ""))[-4000:]
        raise SystemExit(f"{shlex.join(map(str, cmd))} failed ({result.returncode}):\n{output}")
    return result


# --- systemd test hosts -----------------------------------------------------------------------


class Host:
    """A Docker container booting systemd, like molecule's hosts. Removed on leaving `with`,
    unless keep: then it stays, and a later run with keep starts from it instead of a fresh one."""

    def __init__(self, name: str, image: str = IMAGE, keep: bool = False):
        self.name = name
        self.image = image
        self.keep = keep

    def __enter__(self) -> Host:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        if not self.keep:
            self.remove()

    def start(self) -> None:
        running = run(["docker", "inspect", "-f", "{{.State.Running}}", self.name], check=False)
        if self.keep and running.stdout.strip() == "true":
            return
        self.remove()
        run(["docker", "image", "inspect", self.image])  # molecule/images/build makes it
        run(
            [
                "docker",
                "run",
                "-d",
                "--name",
                self.name,
                "--hostname",
                self.name,
                *SYSTEMD_CONTAINER,
                self.image,
                "/lib/systemd/systemd",
            ]
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.5)
        raise SystemExit(f"{self.name}: systemd did not finish booting ({state})")

    def remove(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)

    def exec(
        self, *cmd: str, check=True, timeout=None, detach=False
    ) -> subprocess.CompletedProcess:
        return run(
            ["docker", "exec", *(["-d"] if detach else []), self.name, *cmd],
            check=check,
            timeout=timeout,
        )

    def sh(self, script: str, check=True, timeout=None) -> subprocess.CompletedProcess:
        return self.exec("sh", "-c", script, check=check, timeout=timeout)

    def put(self, local: Path, remote: str) -> None:
        """Copy a file or directory into the host (under /root: /tmp is a tmpfs docker cp misses)."""
        run(["docker", "cp", str(local), f"{self.name}:{remote}"])

    def get(self, remote: str, local: Path) -> None:
        run(["docker", "cp", f"{self.name}:{remote}", str(local)])

    def inhost(self, script: str, *args: str, timeout=None) -> dict:
        """Run bench/inhost/<script> with the host's python3 and return the JSON it prints."""
        self.put(BENCH / "inhost" / script, f"/root/{script}")
        out = self.exec("python3", f"/root/{script}", *args, timeout=timeout).stdout
        return json.loads(out.strip().splitlines()[-1])


# --- converging with the role -----------------------------------------------------------------


def write_inventory(path: Path, hosts: list[str], extra: dict | None = None) -> Path:
    """An inventory of the `agented` group reached with `docker exec`, with the bench's settings."""
    inventory = {
        "agented": {
            "hosts": {name: {"ansible_connection": "community.docker.docker"} for name in hosts},
            "vars": {
                "agented_backend_build_environment": BUILD_ENVIRONMENT,
                "agented_backend_env": {
                    "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
                    "SECRET_KEY": SECRET_KEY,
                },
                **(extra or {}),
            },
        }
    }
    path.write_text(json.dumps(inventory, indent=2))  # JSON is YAML
    return path


def converge(
    inventory: Path,
    log: Path,
    extra_vars: dict | None = None,
    check=True,
    profile=False,
    pipelining=False,
) -> tuple[float, int]:
    """ansible-playbook playbooks/site.yml as users run it; returns (wall seconds, return code).
    profile: add ansible.posix's profile_tasks callback (the slowest tasks at the end of the log).
    pipelining: ANSIBLE_PIPELINING=1 (ansible.cfg pipelines only the ssh connection, not docker's)."""
    cmd = [str(TOOLS / "ansible-playbook"), "-i", str(inventory), "playbooks/site.yml"]
    if extra_vars:
        cmd += ["--extra-vars", json.dumps(extra_vars)]
    env = {
        **os.environ,
        "PATH": f"{TOOLS}:{os.environ['PATH']}",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
    }
    if profile:
        env["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.profile_tasks"
    if pipelining:
        env["ANSIBLE_PIPELINING"] = "1"
    start = time.monotonic()
    with open(log, "w") as stream:
        code = subprocess.run(
            cmd, cwd=ROOT, env=env, stdout=stream, stderr=subprocess.STDOUT
        ).returncode
    seconds = time.monotonic() - start
    if check and code != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-40:])
        raise SystemExit(f"converge failed ({code}), log {log}:\n{tail}")
    return seconds, code


def play_recap(log: Path) -> dict[str, dict[str, int]]:
    """ok/changed/failed counts per host from the PLAY RECAP of a converge log."""
    recap = {}
    lines = log.read_text().splitlines()
    if "PLAY RECAP" not in "\n".join(lines):
        return recap
    for line in lines[[i for i, x in enumerate(lines) if x.startswith("PLAY RECAP")][-1] + 1 :]:
        if ":" not in line or "=" not in line:
            continue
        host, counts = line.split(":", 1)
        recap[host.strip()] = {k: int(v) for k, v in (x.split("=") for x in counts.split())}
    return recap


def backend_copy(change: str | None = None) -> Path:
    """A copy of backend/ (source and lock only) in a temporary directory, optionally with one
    line appended to app/__init__.py, so it hashes to a new release."""
    target = Path(tempfile.mkdtemp(prefix="agented-bench-backend-")) / "backend"
    atexit.register(shutil.rmtree, target.parent, True)
    shutil.copytree(
        BACKEND,
        target,
        ignore=shutil.ignore_patterns(
            ".venv",
            "__pycache__",
            ".pytest_cache",
            ".hypothesis",
            ".ruff_cache",
            ".env",
            "*.db*",
            ".secret_key",
            "gunicorn.log",
            "tests",
        ),
    )
    if change is not None:
        with open(target / "app" / "__init__.py", "a") as stream:
            stream.write(change + "\n")
    return target


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- a local Gunicorn on loopback -------------------------------------------------------------


def local_env(port: int, state: Path, **extra: str) -> dict:
    """The environment of a local Gunicorn: loopback only, its own database, no control socket.
    Run it from a backend_copy(), which has no .env, so only these values and the defaults count."""
    return {
        "PATH": os.environ["PATH"],
        "LANG": "C.UTF-8",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_CONTROL_SOCKET": "off",
        "AGENTED_DB_PATH": str(state / "agented.db"),
        "LOG_LEVEL": "warning",
        "CORS_ALLOWED_ORIGINS": "http://127.0.0.1",
        "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
        **extra,
    }


def wait_http(
    port: int, path: str = "/health/readiness", timeout: float = 30.0, process=None
) -> float:
    """Seconds until GET path on 127.0.0.1:port answers 200."""
    import http.client  # noqa: PLC0415

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return time.monotonic() - start
        except OSError:
            pass
        finally:
            connection.close()
        if process is not None and process.poll() is not None:
            raise SystemExit(f"gunicorn exited with {process.returncode}")
        time.sleep(0.005)
    raise SystemExit(f"127.0.0.1:{port}{path} did not answer 200 within {timeout} s")


def plot_requests(ax, records):
    """Scatter the load client's records (sent at, seconds, status) on ax: answered ones, failures in red."""
    ok = [(r[0], r[1]) for r in records if isinstance(r[2], int) and r[2] < 400]
    bad = [(r[0], max(r[1], 0.001)) for r in records if not (isinstance(r[2], int) and r[2] < 400)]
    ax.scatter([x for x, _ in ok], [y for _, y in ok], s=4, label="answered")
    if bad:
        ax.scatter(
            [x for x, _ in bad],
            [y for _, y in bad],
            s=8,
            color="red",
            marker="x",
            label=f"failed ({len(bad)})",
        )
