# agented: `just --list` shows every recipe.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Tools from tools/bootstrap come first, so `.venv/bin/just <recipe>` works without activating anything.
export PATH := justfile_directory() / ".venv/bin" + ":" + env("PATH")

# Molecule frames each command's output and wraps it at 80 columns, which breaks the tables of
# measured restart times apart, in a terminal and in a CI log alike.
export MOLECULE_COMMAND_BORDERS := "false"

backend := justfile_directory() / "backend"

# List the recipes.
default:
    @just --list

# Run the backend under Gunicorn (gevent workers) in the background, from backend/.
deploy: kill ensure-backend
    #!/usr/bin/env bash
    set -euo pipefail
    cd "{{ backend }}"
    nohup uv run --frozen gunicorn -c gunicorn.conf.py >> gunicorn.log 2>&1 &
    bind=$(uv run --frozen python -m app.settings get GUNICORN_BIND)
    url=$(uv run --frozen python -m app.settings local-url)
    for _ in $(seq 100); do
      if curl -fsS "${url}/health/readiness" > /dev/null 2>&1; then
        echo "agented backend listening on ${bind} (readiness: ${url}/health/readiness)"
        echo "log: backend/gunicorn.log, stop: just kill"
        exit 0
      fi
      sleep 0.1
    done
    echo "the backend did not become ready within 10 s; last lines of backend/gunicorn.log:" >&2
    tail -n 20 gunicorn.log >&2
    exit 1

# Run Flask's debug server with the reloader.
dev-backend: ensure-backend
    cd "{{ backend }}" && uv run --frozen python run.py --debug

# Stop the Gunicorn that `just deploy` started (gracefully, then by force after 15 s).
kill:
    #!/usr/bin/env bash
    set -uo pipefail
    pattern="{{ backend }}/.venv/bin/gunicorn"
    pkill -TERM -f "$pattern" || exit 0
    for _ in $(seq 150); do pgrep -f "$pattern" > /dev/null || exit 0; sleep 0.1; done
    pkill -KILL -f "$pattern" || true

# Install the backend's dependencies and create backend/.env from .env.example unless it exists. The backend
# generates its SECRET_KEY itself, once, into backend/.secret_key beside the database.
ensure-backend:
    #!/usr/bin/env bash
    set -euo pipefail
    cd "{{ backend }}"
    uv sync --frozen
    if [ ! -e .env ]; then
      (umask 077 && cp .env.example .env)
      echo "created backend/.env from .env.example"
    fi

# Deploy with playbooks/site.yml to an inventory, e.g. `just provision inventory/hosts.yml --ask-vault-pass`.
provision inventory *args:
    ansible-playbook -i "{{ inventory }}" playbooks/site.yml {{ args }}

# Switch the hosts of an inventory back to their previous release.
rollback inventory *args:
    ansible-playbook -i "{{ inventory }}" playbooks/rollback.yml {{ args }}

# Remove the backend from the hosts of an inventory; the data stays unless `-e agented_backend_purge=true`.
uninstall inventory *args:
    ansible-playbook -i "{{ inventory }}" playbooks/uninstall.yml {{ args }}

# The last deploy records of each host of an inventory (`-e agented_history_lines=N`, default 10).
history inventory *args:
    ansible-playbook -i "{{ inventory }}" playbooks/history.yml {{ args }}
# Snapshot the database of every host into its backups/ directory, online.
backup inventory *args:
    ansible-playbook -i "{{ inventory }}" playbooks/backup.yml {{ args }}

# Replace the database of every host with snapshot NAME of its backups/ directory (the current one is kept aside).
restore inventory name *args:
    ansible-playbook -i "{{ inventory }}" playbooks/restore.yml -e agented_backend_restore={{ quote(name) }} {{ args }}

# ansible-lint (production profile), playbook syntax, and ruff over all Python (ruff.toml; the backend pins it).
lint:
    ansible-lint --profile production
    for playbook in playbooks/*.yml; do ansible-playbook --syntax-check -i inventory/hosts.example.yml "$playbook"; done
    uv run --frozen --project backend ruff check .
    uv run --frozen --project backend ruff format --check .

# Regenerate the role's README and the README's variable table from the role's argument specs.
docs:
    tools/docs/generate

# The backend's tests.
test-backend:
    cd "{{ backend }}" && uv run --frozen pytest

# The repository's own tests: reference configs in deploy/, role plugins, documentation tables.
test-repo:
    pytest tests

# Build the Debian test images that molecule's hosts run (only the missing ones).
images:
    molecule/images/build bookworm trixie bookworm-ssh trixie-ssh

# Converge, check idempotence and verify on real systemd hosts (Debian 12 and 13 containers); then
# the same over SSH as a non-root user, on hosts without internet (molecule/field).
molecule: images
    molecule test
    molecule test -s field

# Everything: backend tests, lint, repository tests, molecule.
test: test-backend lint test-repo molecule

# Benchmarks of docs/BENCHMARKS.md, not part of `test` (minutes each): all, or e.g. `just bench crash streams`.
bench *names: images ensure-backend
    #!/usr/bin/env bash
    set -euo pipefail
    names="{{ names }}"
    for name in ${names:-crash coldstart reload streams deploy_speed rolling hostile fleet backup}; do
      echo "== bench/${name}.py (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
      uv run --quiet bench/${name}.py
    done
    python3 bench/report.py

# Render deploy/ from the role's templates with the role's defaults.
reference:
    ansible-playbook tools/reference/render.yml
