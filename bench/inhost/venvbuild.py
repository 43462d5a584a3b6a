"""Times virtualenv builds for the same lock inside a test host (system python3, stdlib only).

    venvbuild.py UV PROJECT_DIR REQUIREMENTS ROUNDS

PROJECT_DIR holds pyproject.toml and uv.lock; REQUIREMENTS is `uv export --no-dev --frozen` of the
same lock (pinned, with hashes). Each round builds, in alternation so that network conditions
hit both alike:
  uv-cold   uv sync --frozen --no-dev, empty cache
  uv-cold-bytecode   the same with --compile-bytecode, as the role builds releases
  pip-cold  python3 -m venv + pip install -r REQUIREMENTS, no cache (pip compiles bytecode itself)
  uv-warm, pip-warm  the same again with the cache the cold build left
Prints one JSON line: {variant: [seconds, ...]}.
"""

import json
import os
import shutil
import subprocess
import sys
import time

WORK = "/root/venvbuild"


def timed(cmd, env, cwd=None):
    start = time.monotonic()
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"{cmd} failed: {(result.stdout + result.stderr)[-2000:]}")
    return time.monotonic() - start


def uv_build(uv, project, cache, env, bytecode=False):
    target = f"{WORK}/uv-project"
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(target)
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(os.path.join(project, name), target)
    cmd = [uv, "sync", "--frozen", "--no-dev"] + (["--compile-bytecode"] if bytecode else [])
    env = {
        **env,
        "UV_CACHE_DIR": cache,
        "UV_PYTHON": "python3",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_PROGRESS": "1",
    }
    return timed(cmd, env, cwd=target)


def pip_build(requirements, cache, env):
    venv = f"{WORK}/pip-venv"
    shutil.rmtree(venv, ignore_errors=True)
    start = time.monotonic()
    timed(["python3", "-m", "venv", venv], env)
    cache_args = ["--cache-dir", cache] if cache else ["--no-cache-dir"]
    timed(
        [
            f"{venv}/bin/pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *cache_args,
            "-r",
            requirements,
        ],
        env,
    )
    return time.monotonic() - start


def main(uv, project, requirements, rounds):
    env = dict(os.environ)
    times = {
        name: [] for name in ("uv-cold", "uv-cold-bytecode", "pip-cold", "uv-warm", "pip-warm")
    }
    for _ in range(int(rounds)):
        for name in ("uv-cache", "pip-cache"):
            shutil.rmtree(f"{WORK}/{name}", ignore_errors=True)
        times["uv-cold"].append(uv_build(uv, project, f"{WORK}/uv-cache-nobc", env))
        shutil.rmtree(f"{WORK}/uv-cache-nobc", ignore_errors=True)
        times["uv-cold-bytecode"].append(
            uv_build(uv, project, f"{WORK}/uv-cache", env, bytecode=True)
        )
        times["pip-cold"].append(pip_build(requirements, None, env))
        pip_build(requirements, f"{WORK}/pip-cache", env)  # fills pip's cache
        times["uv-warm"].append(uv_build(uv, project, f"{WORK}/uv-cache", env, bytecode=True))
        times["pip-warm"].append(pip_build(requirements, f"{WORK}/pip-cache", env))
    shutil.rmtree(WORK, ignore_errors=True)
    print(json.dumps(times))


if __name__ == "__main__":
    main(*sys.argv[1:])
