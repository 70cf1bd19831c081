"""Fixtures for the integration tests: they run the real tools from the build.

NETPROXY_BUILD names the build directory (``make integration`` sets it to an
absolute path); it defaults to <repo>/build. The byte-level vectors come from
tests/data/vectors-peers.json (see tests/data/vectors-README.md).

A test that takes a ``vector`` argument runs once per vector; one that takes
``ok_vector`` once per vector whose ``expect`` is "ok".
"""

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VECTORS_PATH = REPO / "tests" / "data" / "vectors-peers.json"


def build_dir():
    return Path(os.environ.get("NETPROXY_BUILD") or REPO / "build")


def load_vectors():
    with open(VECTORS_PATH, encoding="utf-8") as f:
        vectors = json.load(f)
    names = [v["name"] for v in vectors]
    assert len(names) == len(set(names)), "vector names must be unique"
    return vectors


_VECTORS = load_vectors()


def pytest_generate_tests(metafunc):
    if "vector" in metafunc.fixturenames:
        metafunc.parametrize("vector", _VECTORS, ids=[v["name"] for v in _VECTORS])
    if "ok_vector" in metafunc.fixturenames:
        ok = [v for v in _VECTORS if v["expect"] == "ok"]
        metafunc.parametrize("ok_vector", ok, ids=[v["name"] for v in ok])


@pytest.fixture(scope="session")
def vectors():
    """All vectors, as a list of dicts in file order."""
    return _VECTORS


@pytest.fixture(scope="session")
def vectors_by_name(vectors):
    return {v["name"]: v for v in vectors}


@pytest.fixture(scope="session")
def dump_path():
    """The netproxy-dump binary under test."""
    path = build_dir() / "netproxy-dump"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} is not an executable: build it first "
                    f"(make, or set NETPROXY_BUILD)", pytrace=False)
    return path
