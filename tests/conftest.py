import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
ROLE = ROOT / "roles" / "agented_backend"
BACKEND = ROOT / "backend"

sys.path.insert(0, str(ROLE / "filter_plugins"))
sys.path.insert(0, str(ROLE / "lookup_plugins"))


@pytest.fixture(scope="session")
def root():
    return ROOT
