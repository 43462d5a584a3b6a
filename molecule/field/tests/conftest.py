"""The field hosts are checked with molecule/default's helpers and suites, not copies of them.

This loads molecule/default/tests/conftest.py and re-exports all of it (fixtures, the figure
table and its summary hook included), so that the default scenario's test modules, linked or
imported here, find what they import from `conftest`. Added here: every test first checks that
the host cannot reach the package index, the reason the scenario exists.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

DEFAULT_TESTS = Path(__file__).resolve().parents[2] / "default" / "tests"
_spec = importlib.util.spec_from_file_location("default_conftest", DEFAULT_TESTS / "conftest.py")
_default = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_default)
globals().update({k: v for k, v in vars(_default).items() if not k.startswith("__")})
# The default scenario's suites, for the modules here that import some of their tests.
sys.path.append(str(DEFAULT_TESTS))

PACKAGE_INDEX = "https://pypi.org/simple/"


@pytest.fixture(autouse=True)
def no_egress(host):
    """The host has no way out: the package index is unreachable from inside it."""
    result = host.run(f"curl --silent --show-error --max-time 5 --output /dev/null {PACKAGE_INDEX}")
    assert result.rc != 0, f"{_default.name_of(host)} reaches {PACKAGE_INDEX}: it is not offline"
