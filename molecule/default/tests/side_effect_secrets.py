"""Secrets never show in Ansible's output, reach the service exactly, and SECRET_KEY is kept.

Two converges at -vvv with --diff (after molecule's converge and idempotence runs): one that
changes every secret, so the .env task has something to show, and one that restores the group
variables. No secret value may appear in their output: neither the test secrets (found by the
unique first word of each) nor the SECRET_KEY the backend generated on the hosts, which must
survive both. Then a host as earlier versions of the role left it, with a generated SECRET_KEY
in .env: a converge keeps that key, now in the backend's own key file.
"""

import hashlib
import json
import shlex

import pytest

from conftest import (
    CONVERGE,
    ENV_FILE,
    GROUP,
    GROUP_VARS,
    SECRET_KEY_FILE,
    SECRETS,
    SERVICE,
    SETTINGS,
    SOCKET,
    USER,
    VENV,
    ansible_playbook,
    effective_secret_key,
    env_with,
    name_of,
    on_all,
    post_webhook,
    read_env,
    sh,
    wait_ready,
    webhook_secret,
)

NEW_SECRETS = {
    "GITHUB_WEBHOOK_SECRET": "molecule-rotated-whsec-2a6f0b = with 'quotes' \"too\" #hash $VAR \\",
    "ANTHROPIC_API_KEY": "molecule-rotated-anthropic-c81d55 key",
}


def markers() -> set[str]:
    values = [
        GROUP_VARS["agented_backend_env"][name]
        for name in SECRETS
        if GROUP_VARS["agented_backend_env"].get(name)
    ]
    return {value.split()[0] for value in [*values, *NEW_SECRETS.values()]}


def loaded_digests(host) -> dict[str, str]:
    """sha256 of each secret as the service's own settings loader reads .env, run as the service
    user (digests, so the values stay out of the test log too)."""
    code = (
        "import hashlib, json\n"
        "from app import settings\n"
        f"values = settings.load(environ={{}}, env_file={ENV_FILE!r})\n"
        "print(json.dumps({k: hashlib.sha256(str(values[k]).encode()).hexdigest()\n"
        f"                 for k in {sorted(SECRETS)!r} if values[k]}}))\n"
    )
    out = sh(host, f"cd {VENV}/.. && runuser -u {USER} -- {VENV}/bin/python -c {shlex.quote(code)}")
    return json.loads(out)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture(scope="module")
def runs(all_hosts):
    keys_before = on_all(all_hosts, effective_secret_key)
    rotated = ansible_playbook(
        CONVERGE, "-vvv", "--diff", extra_vars={"agented_backend_env": env_with(**NEW_SECRETS)}
    )
    seen_rotated = on_all(all_hosts, loaded_digests)
    webhook_rotated = on_all(
        all_hosts,
        lambda h: post_webhook(
            h, f"molecule-rot-{name_of(h)}", NEW_SECRETS["GITHUB_WEBHOOK_SECRET"]
        ),
    )
    restored = ansible_playbook(CONVERGE, "-vvv", "--diff")
    return {
        "keys_before": keys_before,
        "keys_after": on_all(all_hosts, effective_secret_key),
        "runs": {"rotating secrets": rotated, "restoring": restored},
        "seen_rotated": seen_rotated,
        "seen_restored": on_all(all_hosts, loaded_digests),
        "webhook_rotated": webhook_rotated,
        "webhook_restored": on_all(
            all_hosts, lambda h: post_webhook(h, f"molecule-res-{name_of(h)}")
        ),
    }


@pytest.mark.parametrize("run_name", ["rotating secrets", "restoring"])
def test_no_secret_in_verbose_output_or_diff(runs, run_name):
    run = runs["runs"][run_name]
    assert run.rc == 0, str(run)
    leaked = sorted(m for m in markers() if m in run.output)
    keys = [k for k in runs["keys_before"].values() if k] + [
        k for k in runs["keys_after"].values() if k
    ]
    leaked += ["a generated SECRET_KEY" for key in set(keys) if key in run.output]
    assert not leaked, f"{run_name}: secrets in the output at -vvv --diff: {leaked}"


def test_secret_key_is_generated_once_and_kept(host, runs):
    before, after = runs["keys_before"][name_of(host)], runs["keys_after"][name_of(host)]
    assert before, "no SECRET_KEY in .env and no generated key file"
    assert after == before, "SECRET_KEY changed on a later converge"
    for name, run in runs["runs"].items():
        assert run.changed(name_of(host)) > 0, f"{name}: changed secrets changed nothing:\n{run}"


def test_secrets_reach_the_service_exactly(host, runs):
    name = name_of(host)
    rotated = runs["seen_rotated"][name]
    for key, value in NEW_SECRETS.items():
        assert rotated.get(key) == digest(value), f"{key} reads back differently after rotation"
    assert 200 <= runs["webhook_rotated"][name]["status"] < 300, runs["webhook_rotated"][name]
    restored = runs["seen_restored"][name]
    assert restored.get("GITHUB_WEBHOOK_SECRET") == digest(webhook_secret())
    assert 200 <= runs["webhook_restored"][name]["status"] < 300, runs["webhook_restored"][name]


def legacy_key(name: str) -> str:
    return f"molecule-legacy-key-5b3e9d-{name} with 'quotes' #hash"


def with_legacy_key(host) -> str:
    """The host as earlier versions of the role left it: their generated SECRET_KEY in .env, no
    key file of the backend's. Returns the key the service then runs with."""
    line = f"SECRET_KEY={SETTINGS.dotenv_quote(legacy_key(name_of(host)))}\n"
    code = (
        f"import pathlib; p = pathlib.Path({ENV_FILE!r}); t = p.read_text(); "
        f"assert '# SECRET_KEY=\\n' in t; p.write_text(t.replace('# SECRET_KEY=\\n', {line!r}, 1))"
    )
    sh(host, f"systemctl stop {SOCKET} {SERVICE} && rm -f {SECRET_KEY_FILE}")
    sh(host, f"python3 -c {shlex.quote(code)}")
    sh(host, f"systemctl start {SOCKET} {SERVICE}")
    assert wait_ready(host)["ready"], "not ready with the legacy .env"
    return effective_secret_key(host)


def test_a_secret_key_an_earlier_deploy_wrote_into_env_is_kept(all_hosts):
    running = on_all(all_hosts, with_legacy_key)
    assert running == {name: legacy_key(name) for name in all_hosts}, "the legacy key is not in use"
    run = ansible_playbook(CONVERGE, "-vvv", "--diff")
    assert run.rc == 0, str(run)
    leaked = [name for name in all_hosts if legacy_key(name).split()[0] in run.output]
    assert not leaked, f"the legacy SECRET_KEY shows in the output at -vvv --diff: {leaked}"
    for name, host in all_hosts.items():
        key_file = host.file(SECRET_KEY_FILE)
        assert (key_file.user, key_file.group, key_file.mode) == (USER, GROUP, 0o600), name
        assert sh(host, f"cat {SECRET_KEY_FILE}") == legacy_key(name) + "\n", name
        assert not read_env(host).get("SECRET_KEY"), f"{name}: .env still sets SECRET_KEY"
        assert effective_secret_key(host) == legacy_key(name), name
        assert wait_ready(host)["ready"], name
