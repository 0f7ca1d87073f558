"""The browser test's harness: the interop tests' `tether serve` (tests/interop/conftest.py), run
twice: one node on a temporary data dir and port 0, and three nodes on a fresh PostgreSQL
database behind a proxy that sends each request to the next node (`cluster_behind_proxy`), so
every page, form post and API call of the test may land on another node than the one before."""

from __future__ import annotations

import importlib.util
import pathlib
from dataclasses import dataclass, field

import pytest

_spec = importlib.util.spec_from_file_location(
    "interop_harness", pathlib.Path(__file__).resolve().parents[1] / "interop" / "conftest.py"
)
_harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_harness)

REPO = _harness.REPO
TETHER_BIN = _harness.TETHER_BIN
api = _harness.api


@dataclass
class Deployment:
    """Where the test finds tether: `base` (a node, or the proxy), the first admin credential,
    the arguments that point a CLI command at its data (`--data-dir`, and `--database` on the
    cluster), and the prefix of its screenshots."""

    base: str
    admin: str
    cli_args: list[str]
    artifact_prefix: str
    servers: list = field(default_factory=list)


@pytest.fixture(params=["one-node", "three-nodes"])
def tether(request, tmp_path):
    data_dir = tmp_path / "data"
    if request.param == "one-node":
        server = _harness.Tether(data_dir)
        try:
            yield Deployment(server.base, server.admin, ["--data-dir", str(data_dir)], "", [server])
        finally:
            server.stop()
    else:
        # Without TETHER_TEST_DATABASE_URL: skipped, except under CI, where it fails.
        with _harness.cluster_behind_proxy(data_dir) as (cluster, proxy):
            yield Deployment(proxy.url, cluster.admin, ["--database", cluster.database, "--data-dir", str(data_dir)],
                             "three-nodes-", cluster.nodes)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report ends with the stderr of every tether it ran."""
    report = yield
    deployment = getattr(item, "funcargs", {}).get("tether")
    if report.failed and isinstance(deployment, Deployment):
        for server in deployment.servers:
            report.sections.append((f"{server.name} stderr ({server.base})", server.log()))
    return report
