"""The README's variable table and the role's defaults agree with meta/argument_specs.yml."""

import subprocess

import yaml

from conftest import ROLE, ROOT

SPECS = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"][
    "main"
]["options"]
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def test_readme_table_is_generated_from_the_argument_specs():
    table = subprocess.run(
        [str(ROOT / "tools" / "role-variables-table")], check=True, capture_output=True, text=True
    ).stdout
    assert table in (ROOT / "README.md").read_text(), (
        "README's variable table is stale: tools/role-variables-table --write"
    )


def test_every_default_is_documented_and_every_documented_variable_has_a_default():
    assert set(DEFAULTS) == set(SPECS)


def test_documented_defaults_equal_the_real_ones():
    for name, value in DEFAULTS.items():
        if isinstance(value, str) and "{{" in value and name != "agented_backend_src":
            continue  # per-platform defaults are described in prose
        assert SPECS[name]["default"] == value, name
