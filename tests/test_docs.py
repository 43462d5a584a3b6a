"""The role describes itself once, in meta/argument_specs.yml: the READMEs are generated from it and
defaults/main.yml holds exactly the values it documents."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import ROLE, ROOT

SPECS = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]
OPTIONS = SPECS["main"]["options"]
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
PLATFORMS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["__agented_backend_platform"]


def test_readmes_are_generated_from_the_argument_specs():
    # aar-doc beside this interpreter (.venv), whether or not .venv/bin is on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    subprocess.run(
        [str(ROOT / "tools" / "docs" / "generate"), "--check"],
        check=True,
        env={**os.environ, "PATH": path},
    )


def test_every_default_is_specified_and_every_specified_variable_has_a_default():
    assert set(DEFAULTS) == set(OPTIONS)


def test_specified_defaults_equal_the_real_ones():
    for name, value in DEFAULTS.items():
        if "default" in OPTIONS[name]:
            assert OPTIONS[name]["default"] == value, name
        else:
            # Defaults that follow the platform or another variable: the description names them.
            assert value.startswith("{{") and value.endswith("}}"), name
            assert "Default" in OPTIONS[name]["description"], name


def test_per_platform_defaults_are_described_with_their_values():
    for name in ("config_dir", "state_dir", "log_dir"):
        description = " ".join(OPTIONS[f"agented_backend_{name}"]["description"].split())
        platforms = ["Darwin"] if name == "log_dir" else ["Linux", "Darwin"]
        for platform in platforms:
            assert PLATFORMS[platform][name] in description, (name, platform)


def test_defaults_hold_values_only():
    text = (ROLE / "defaults" / "main.yml").read_text()
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#")]
    assert len(comments) <= 1, comments


def test_every_entry_point_specifies_every_variable_the_role_reads():
    from agented_backend import FilterModule  # noqa: PLC0415 -- the role's own filter plugin
    from agented_backend_lock import FilterModule as LockFilters  # noqa: PLC0415

    # Names that are not variables: the plugins, the modules and the role's tag.
    plugins = (
        set(FilterModule().filters())
        | set(LockFilters().filters())
        | {path.stem for path in (ROLE / "lookup_plugins").glob("*.py")}
        | {path.stem for path in (ROLE / "library").glob("*.py")}
        | {"agented_backend_validate"}
    )
    read = set()
    for folder in ("tasks", "handlers", "templates"):
        for path in (ROLE / folder).rglob("*"):
            if path.is_file():
                read |= set(re.findall(r"(?<![_A-Za-z])agented_backend_[a-z_]+", path.read_text()))
    assert read - plugins <= set(OPTIONS), sorted(read - plugins - set(OPTIONS))
    for entry_point, spec in SPECS.items():
        assert (ROLE / "tasks" / f"{entry_point}.yml").is_file(), entry_point
        assert set(spec["options"]) == set(OPTIONS), entry_point
