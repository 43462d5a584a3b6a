"""Shared helpers of the benchmarks: results, statistics, charts, systemd test hosts, converges.

Every benchmark writes into bench/results/<name>/: results.json (every figure and the machine it
was taken on), tables.md (the tables docs/BENCHMARKS.md shows; bench/report.py copies them in)
and its PNG charts.

Test hosts, ansible-playbook runs and copies of the backend come from the harness molecule's
suites use (molecule/harness/harness.py): the hosts are Docker containers booting systemd, from
the images molecule uses (molecule/images/build), started by molecule's own create playbook
with the settings of .config/molecule/systemd-container.yml. All traffic a benchmark sends to a
host comes from inside that host, to its own 127.0.0.1 (`docker exec`).
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
BACKEND = ROOT / "backend"
TOOLS = ROOT / ".venv" / "bin"
# ansible-playbook, molecule and uv from tools/bootstrap, for the harness and every subprocess.
os.environ["PATH"] = f"{TOOLS}:{os.environ['PATH']}"
sys.path.insert(0, str(ROOT / "molecule" / "harness"))
import harness  # noqa: E402 -- found through the line above

# The test hosts reach PyPI through a proxy that only this machine's CA bundle trusts.
BUILD_ENVIRONMENT = {
    "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
    "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
}
_LOAD_AT_START = [round(x, 2) for x in os.getloadavg()]
WEBHOOK_SECRET = "bench-webhook-secret"
# Fixed, so that every converge of a bench host renders the same .env.
SECRET_KEY = "bench-secret-key-not-for-production"
# Every /api/ read needs it as a bearer token (the webhook keeps its signature instead).
API_TOKEN = "bench-api-token-not-for-production"
PORT = 20000
# The multiplication sign of "5 times faster" in the tables, named so that no one mistakes it for
# an x in the source.
TIMES = "\N{MULTIPLICATION SIGN}"


# --- results ----------------------------------------------------------------------------------


def results_dir(name: str) -> Path:
    path = RESULTS / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    """Cores, memory and load of this machine, as nproc, free and uptime would report them."""
    memory = (
        subprocess.run(["free", "-m"], capture_output=True, text=True, check=True)
        .stdout.split("\n")[1]
        .split()
    )
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    # git may be missing, or this may not be a checkout: the results then name no commit.
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "backend", "roles", "playbooks"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "commit": commit + (" (backend/roles/playbooks modified)" if dirty else ""),
        "cores": len(os.sched_getaffinity(0)),  # what nproc reports
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
        return "\N{EN DASH}"
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
        cmd, capture_output=capture, text=True, env=env, timeout=timeout, cwd=cwd, check=False
    )
    if check and result.returncode != 0:
        output = ((result.stdout or "") + (result.stderr or ""))[-4000:]
        raise SystemExit(f"{shlex.join(map(str, cmd))} failed ({result.returncode}):\n{output}")
    return result


# --- systemd test hosts -----------------------------------------------------------------------


class Host(harness.SystemdHost):
    """A test host of the harness, removed on leaving `with`, unless keep: then it stays, and a
    later run with keep starts from it instead of a fresh one."""

    def __init__(self, name: str, keep: bool = False):
        # AGENTED_BENCH_PREFIX=w1 names the host w1-NAME, so that checkouts benchmarking at the
        # same time on one machine do not share (and remove) each other's hosts.
        prefix = os.environ.get("AGENTED_BENCH_PREFIX")
        super().__init__(f"{prefix}-{name}" if prefix else name)
        self.keep = keep

    def __enter__(self) -> Host:
        if not (self.keep and self.running()):
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        if not self.keep:
            self.remove()

    def put_inhost(self, script: str) -> None:
        """Copy bench/inhost/<script> into /root, beside the molecule suites' in-host checks,
        which it may import."""
        self.put(harness.IN_HOST_CHECKS, "/root/in_host_checks.py")
        self.put(BENCH / "inhost" / script, f"/root/{script}")

    def inhost(self, script: str, *args: str, timeout=None) -> dict:
        """Run bench/inhost/<script> with the host's python3 and return the JSON it prints."""
        self.put_inhost(script)
        out = self.exec("python3", f"/root/{script}", *args, timeout=timeout).stdout
        return harness.last_json_line(out)


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
    *,
    check=True,
    profile=False,
) -> tuple[float, int]:
    """ansible-playbook playbooks/site.yml as users run it; returns (wall seconds, return code).
    profile: add ansible.posix's profile_tasks callback (the slowest tasks at the end of the
    log)."""
    env = {}
    if profile:
        env["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.profile_tasks"
    run = harness.ansible_playbook(
        ROOT / "playbooks" / "site.yml",
        inventory=inventory,
        extra_vars=extra_vars,
        env=env,
        log=log,
    )
    if check and run.rc != 0:
        tail = "".join(run.output.splitlines(keepends=True)[-40:])
        raise SystemExit(f"converge failed ({run.rc}), log {log}:\n{tail}")
    return run.seconds, run.rc


def play_recap(log: Path) -> dict[str, dict[str, int]]:
    """ok/changed/failed counts per host from the PLAY RECAP of a converge log."""
    return harness.play_recap(log.read_text())


def backend_copy(change: str | None = None) -> Path:
    """backend/ as a release ships it, in a temporary directory, optionally with one line
    appended to app/__init__.py, so it hashes to a new release."""
    scratch = Path(tempfile.mkdtemp(prefix="agented-bench-backend-"))
    atexit.register(shutil.rmtree, scratch, True)
    return harness.copy_release(scratch / "backend", change)


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
        "API_TOKEN": API_TOKEN,
        **extra,
    }


def start_gunicorn(src: Path, port: int, state: Path, log: Path) -> subprocess.Popen:
    """Gunicorn from backend/'s virtualenv, run from the copy ``src`` with local_env(), its
    stderr in ``log``."""
    gunicorn = BACKEND / ".venv" / "bin" / "gunicorn"
    if not gunicorn.exists():
        raise SystemExit("backend/.venv has no gunicorn: run `just ensure-backend` first")
    with open(log, "w") as stderr:
        return subprocess.Popen(
            [str(gunicorn), "-c", "gunicorn.conf.py"],
            cwd=src,
            stdout=subprocess.DEVNULL,
            env=local_env(port, state),
            stderr=stderr,
        )


def stop_gunicorn(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not left within 60 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


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


def signed_webhook(n: int, padding: int = 0) -> tuple[bytes, dict]:
    """Body and headers of an `issues` delivery number ``n``, signed as GitHub signs it with the
    bench's secret; ``padding`` bytes more make its event as large as a real one."""
    payload = {
        "action": "opened",
        "repository": {"full_name": "agented/bench"},
        "issue": {"number": n},
        "bench": n,
    }
    if padding:
        payload["padding"] = "x" * padding
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256="
        + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest(),
    }
    return body, headers


def scatter_outcomes(ax, answered, failed, *, label="answered", size=4, failed_size=8):
    """Scatter (x, y) points on ax: the answered requests, and the failed ones as red crosses
    (labelled "failed", or "LABEL: failed" for a label of its own)."""
    ax.scatter([x for x, _ in answered], [y for _, y in answered], s=size, label=label)
    if failed:
        prefix = "" if label == "answered" else f"{label}: "
        ax.scatter(
            [x for x, _ in failed],
            [y for _, y in failed],
            s=failed_size,
            color="red",
            marker="x",
            label=f"{prefix}failed ({len(failed)})",
        )


def plot_requests(ax, records):
    """Scatter the load client's records (sent at, seconds, status) on ax: answered ones, and
    failures in red."""
    ok = [(r[0], r[1]) for r in records if isinstance(r[2], int) and r[2] < 400]
    bad = [(r[0], max(r[1], 0.001)) for r in records if not (isinstance(r[2], int) and r[2] < 400)]
    scatter_outcomes(ax, ok, bad)
