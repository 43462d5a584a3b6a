"""The field hosts are checked with molecule/default's helpers and suites, not copies of them.

This loads molecule/default/tests/conftest.py and re-exports all of it (fixtures, the figure
table and its summary hook included), so that the default scenario's test modules, linked or
imported here, find what they import from `conftest`. Added here: every test first checks that
the host cannot reach the package index, the reason the scenario exists.
"""

import importlib.util
import socket
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

PACKAGE_INDEX = "pypi.org"


@pytest.fixture(scope="session")
def package_index_address() -> str:
    """The index's address as the controller resolves it: the hosts then try that address itself,
    instead of waiting on a DNS lookup that cannot leave their network."""
    return socket.getaddrinfo(PACKAGE_INDEX, 443, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]


@pytest.fixture(autouse=True)
def no_egress(host, package_index_address):
    """The host has no way out: a TCP connection to the package index fails from inside it. A
    reachable index answers a SYN within a second even on a loaded machine; an answer of any kind
    (a TLS or HTTP error included) would mean the host got out."""
    result = host.run(
        f"curl --silent --show-error --connect-timeout 1 --max-time 3 --output /dev/null"
        f" --resolve {PACKAGE_INDEX}:443:{package_index_address} https://{PACKAGE_INDEX}/simple/"
    )
    # curl: 7 could not connect, 28 timed out; anything else got further than that.
    assert result.rc in (7, 28), (
        f"{_default.name_of(host)} reached https://{PACKAGE_INDEX} (curl exit {result.rc}:"
        f" {result.stderr.strip()}): it is not offline"
    )
