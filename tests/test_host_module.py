"""library/agented_backend_host.py run for real (`ansible` on this machine, in a temporary install
tree): the one round trip that tells a deploy what is on the host."""

import hashlib
import json
import pwd
import shutil
import stat
import sys
from pathlib import Path

from conftest import ROLE, run_ansible


def read_host(tmp_path: Path, **overrides) -> dict:
    arguments = {
        "install_dir": str(tmp_path / "backend"),
        "release": "r2",
        "release_marker": ".agented-release",
        "python": sys.executable,
        "uv": str(tmp_path / "uv" / "bin" / "uv"),
        "env_file": str(tmp_path / "agented.env"),
        "wheelhouses_dir": str(tmp_path / "wheelhouse"),
        "requirements": "requirements.txt",
        **overrides,
    }
    result = run_ansible(
        "ansible",
        "localhost",
        "--connection",
        "local",
        "--extra-vars",
        f"ansible_python_interpreter={sys.executable}",
        "--module-name",
        "agented_backend_host",
        "--args",
        json.dumps(arguments),
        ANSIBLE_LIBRARY=str(ROLE / "library"),
        ANSIBLE_MODULE_UTILS=str(ROLE / "module_utils"),
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="json",
    )
    return json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def make_host(tmp_path: Path) -> None:
    releases = tmp_path / "backend" / "releases"
    for name in ("r1", "r2", "r3"):
        (releases / name).mkdir(parents=True)
    (releases / "r2" / ".agented-release").write_text("r2\n")
    (tmp_path / "backend" / "current").symlink_to("releases/r2")
    (tmp_path / "backend" / "previous").symlink_to("releases/r1")
    uv = tmp_path / "uv" / "bin" / "uv"
    uv.parent.mkdir(parents=True)
    uv.write_text("#!/bin/sh\necho 'uv 0.9.7 (0adb44480 2025-10-30)'\n")
    uv.chmod(uv.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "wheelhouse" / "complete").mkdir(parents=True)
    (tmp_path / "wheelhouse" / "complete" / "requirements.txt").write_text("")
    # An interrupted unpack: the requirements come last.
    (tmp_path / "wheelhouse" / "partial").mkdir()
    (tmp_path / "agented.env").write_text("# SECRET_KEY=documented, not set\nLOG_LEVEL=info\n")


def test_a_deployed_host_is_read_in_one_task(tmp_path):
    make_host(tmp_path)
    state = read_host(tmp_path)
    assert state["changed"] is False
    assert (state["current"], state["previous"]) == ("r2", "r1")
    assert state["release_built"] is True
    assert state["uv_version"] == "0.9.7"
    assert state["wheelhouses"] == ["complete"]
    assert state["env_sets_secret_key"] is False
    assert state["platform"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert state["platform"]["system"] == "Linux"
    assert state["platform_error"] == ""


def test_an_interrupted_build_is_not_a_built_release(tmp_path):
    make_host(tmp_path)
    assert read_host(tmp_path, release="r3")["release_built"] is False


def test_a_secret_key_written_into_env_by_an_earlier_role_is_seen(tmp_path):
    make_host(tmp_path)
    (tmp_path / "agented.env").write_text("LOG_LEVEL=info\nexport SECRET_KEY='old'\n")
    assert read_host(tmp_path)["env_sets_secret_key"] is True


def test_a_bare_host_reads_as_empty(tmp_path):
    state = read_host(tmp_path)
    assert (state["current"], state["previous"], state["serving_current"]) == ("", "", False)
    assert state["release_built"] is False
    assert state["uv_version"] == ""
    assert state["wheelhouses"] == []
    assert state["env_sets_secret_key"] is False


def test_an_interpreter_that_cannot_run_is_reported_not_fatal(tmp_path):
    # An uninstall needs no interpreter for the backend: only the wheelhouse step refuses it.
    state = read_host(tmp_path, python=str(tmp_path / "no-python3"))
    assert state["platform"] == {}
    assert "no-python3" in state["platform_error"]


def test_prunable_says_whether_a_prune_would_remove_anything(tmp_path):
    make_host(tmp_path)
    marker = {"release_wheelhouse": ".agented-wheelhouse"}
    # r1 (previous), r2 (current), r3: nothing beyond three, and a stray wheelhouse to prune.
    assert read_host(tmp_path, keep=3, **marker)["prunable"] is True
    (tmp_path / "backend" / "releases" / "r2" / ".agented-wheelhouse").write_text("complete\n")
    shutil.rmtree(tmp_path / "wheelhouse" / "partial")
    assert read_host(tmp_path, keep=3, **marker)["prunable"] is False
    # Keeping one: r3 goes (r1 and r2 are previous and current).
    assert read_host(tmp_path, keep=1, **marker)["prunable"] is True


def test_as_wanted_lists_the_paths_whose_content_owner_and_mode_match(tmp_path):
    make_host(tmp_path)
    env = tmp_path / "agented.env"
    env.chmod(0o640)
    checksum = hashlib.sha1(env.read_bytes()).hexdigest()  # noqa: S324
    owner = {"owner": "root", "group": "root"}
    expect = [
        {"path": str(env), "mode": "0640", "checksum": checksum, **owner},
        {
            "path": str(tmp_path / "wheelhouse"),
            "mode": oct(tmp_path.joinpath("wheelhouse").stat().st_mode & 0o7777)[2:],
            **owner,
        },
        {"path": str(tmp_path / "backend" / "current"), "mode": "0755", **owner},
        {"path": str(tmp_path / "missing"), "mode": "0700", **owner},
    ]
    state = read_host(tmp_path, expect=expect)
    assert state["as_wanted"] == [str(env), str(tmp_path / "wheelhouse")]
    # Another mode, or another content, is not as wanted.
    env.chmod(0o644)
    assert read_host(tmp_path, expect=expect)["as_wanted"] == [str(tmp_path / "wheelhouse")]
    env.chmod(0o640)
    env.write_text("LOG_LEVEL=debug\n")
    assert read_host(tmp_path, expect=expect)["as_wanted"] == [str(tmp_path / "wheelhouse")]


def test_account_as_wanted_needs_the_group_home_and_shell(tmp_path):
    root = pwd.getpwnam("root")
    account = {"user": "root", "group": "root", "home": root.pw_dir, "shell": root.pw_shell}
    assert read_host(tmp_path, account=account)["account_as_wanted"] is True
    assert (
        read_host(tmp_path, account={**account, "shell": "/bin/false"})["account_as_wanted"]
        is False
    )
    assert (
        read_host(tmp_path, account={**account, "user": "no-such-user"})["account_as_wanted"]
        is False
    )
