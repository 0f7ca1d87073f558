"""The browser test's harness: the interop tests' `tether serve` on a temporary data dir and
port 0 (tests/interop/conftest.py), with the data dir at hand for `tether console-link`."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

_spec = importlib.util.spec_from_file_location(
    "interop_harness", pathlib.Path(__file__).resolve().parents[1] / "interop" / "conftest.py"
)
_harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_harness)

REPO = _harness.REPO
TETHER_BIN = _harness.TETHER_BIN
api = _harness.api


@pytest.fixture
def tether(tmp_path):
    data_dir = tmp_path / "data"
    server = _harness.Tether(data_dir)
    server.data_dir = data_dir
    try:
        yield server
    finally:
        server.stop()
