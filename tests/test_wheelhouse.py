"""The wheelhouse lookup against the real uv.lock: which packages each platform gets, and the
refusal of a platform some locked package has no wheel for. Nothing here downloads."""

import tomllib

import pytest
from agented_backend_wheelhouse import best_wheel, platform_key, runtime_packages, supported_tags

from conftest import BACKEND

LOCK = tomllib.loads((BACKEND / "uv.lock").read_text())
BOOKWORM = {"system": "Linux", "machine": "x86_64", "python": "3.11.2", "libc": "2.36"}
TRIXIE = {"system": "Linux", "machine": "aarch64", "python": "3.13.5", "libc": "2.41"}
MAC = {"system": "Darwin", "machine": "arm64", "python": "3.12.4", "libc": "14.5"}


@pytest.mark.parametrize("target", [BOOKWORM, TRIXIE, MAC], ids=platform_key)
def test_every_runtime_package_has_a_wheel_that_fits(target):
    names = {package["name"] for package in runtime_packages(LOCK, target)}
    assert {"flask", "gunicorn", "gevent", "greenlet", "packaging"} <= names
    # Development tools and Windows-only dependencies stay out.
    assert not names & {"pytest", "ruff", "hypothesis", "colorama", "cffi"}
    assert supported_tags(target)
    for package in runtime_packages(LOCK, target):
        filename, _ = best_wheel(package["name"], package["version"], package["wheels"], target)
        assert filename.endswith(".whl")


def test_a_platform_without_a_wheel_fails_naming_package_and_platform():
    riscv = dict(BOOKWORM, machine="riscv64")
    gevent = next(p for p in runtime_packages(LOCK, riscv) if p["name"] == "gevent")
    expected = r"gevent .* no wheel for platform linux-riscv64-cp311-2\.36"
    with pytest.raises(Exception, match=expected):
        best_wheel(gevent["name"], gevent["version"], gevent["wheels"], riscv)


def test_a_glibc_older_than_every_gevent_wheel_is_refused():
    old = dict(BOOKWORM, libc="2.17")
    gevent = next(p for p in runtime_packages(LOCK, old) if p["name"] == "gevent")
    with pytest.raises(Exception, match=r"no wheel for platform linux-x86_64-cp311-2\.17"):
        best_wheel(gevent["name"], gevent["version"], gevent["wheels"], old)
