"""The interop tests' harness: a real `tether serve` on a temporary data dir and port 0, and a
plain JSON client of its API (standard library only, so it proves nothing about tether itself).
For the multi-node tests, three nodes on a fresh PostgreSQL database (`cluster`); for the
contract and browser suites' second run, the same behind a per-request round-robin proxy
(`cluster_behind_proxy`, round_robin.py).

TETHER_BIN overrides the binary (default: target/debug/tether).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

# The proxy beside this file, also when another suite loads this harness by its path.
if str(pathlib.Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(pathlib.Path(__file__).resolve().parent))
from round_robin import RoundRobinProxy  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
POLICY_DIR = REPO / "policies"
TETHER_BIN = pathlib.Path(os.environ.get("TETHER_BIN") or REPO / "target" / "debug" / "tether")
LISTENING = "tether listening on "
START_TIMEOUT = 30.0


def api(base: str, method: str, path: str, credential: str, body: dict | None = None) -> dict:
    """One JSON call to tether with a bearer credential (standard library only)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {credential}", "Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{method} {path} answered {e.code}: {e.read().decode(errors='replace')}") from None


# ---------------------------------------------------------------------------------------------
# The test harness: a tether on a temporary data dir and port 0.
# ---------------------------------------------------------------------------------------------


class Tether:
    """`tether serve` with `extra_args`, until `stop()`. Waits until it listens unless `wait` is
    false (then call `wait_listening()`); `name` names its stderr file, beside `data_dir`."""

    def __init__(self, data_dir: pathlib.Path, extra_args: tuple[str, ...] = (), name: str = "tether",
                 wait: bool = True):
        if not TETHER_BIN.is_file():
            pytest.fail(f"no tether binary at {TETHER_BIN}: run `cargo build --bin tether` or set TETHER_BIN")
        self.name, self.data_dir = name, data_dir
        self.stderr_path = data_dir.parent / f"{name}.stderr"
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [
                str(TETHER_BIN), "serve",
                "--data-dir", str(data_dir),
                "--listen", "127.0.0.1:0",
                # The policy tether runs is the very file the offline verifier reads.
                "--policy-dir", str(POLICY_DIR),
                *extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:  # keeps draining stdout so tether never blocks on a full pipe
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        self.lines = lines
        self.base: str | None = None
        if wait:
            self.wait_listening()

    def wait_listening(self) -> Tether:
        """Waits for the `tether listening on …` line; then reads the first admin credential, which
        the first start on a data dir (or database) writes before it listens."""
        while self.base is None:
            try:
                line = self.lines.get(timeout=START_TIMEOUT)
            except queue.Empty:
                self.stop()
                pytest.fail(f"{self.name} printed no address within {START_TIMEOUT}s; stderr: {self.log()}")
            if line is None:
                self.stop()
                pytest.fail(f"{self.name} exited before listening (code {self.proc.returncode}); stderr: {self.log()}")
            if line.startswith(LISTENING):
                self.base = line[len(LISTENING):].strip()
        self.admin = (self.data_dir / "admin.credential").read_text().strip()
        return self

    def log(self) -> str:
        if not self.stderr.closed:
            self.stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


@pytest.fixture
def tether(tmp_path):
    server = Tether(tmp_path / "data")
    try:
        yield server
    finally:
        server.stop()



# ---------------------------------------------------------------------------------------------
# Several nodes: `tether serve --database URL` three times on one fresh PostgreSQL database.
# ---------------------------------------------------------------------------------------------

DATABASE_URL_VARIABLE = "TETHER_TEST_DATABASE_URL"  # exported by tests/pg/start.sh
READY_TIMEOUT = 30.0


def in_ci() -> bool:
    """CI sets CI (`true`); there the multi-node tests must run, never skip."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def psql(url: str, command: str) -> None:
    """One SQL command through psql (TETHER_TEST_PG_BIN's, else the one on PATH)."""
    pg_bin = os.environ.get("TETHER_TEST_PG_BIN")
    program = str(pathlib.Path(pg_bin) / "psql") if pg_bin else "psql"
    try:
        done = subprocess.run([program, url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", command],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        pytest.fail(f"no psql at {program}: set TETHER_TEST_PG_BIN (source tests/pg/start.sh)")
    if done.returncode != 0:
        pytest.fail(f"psql {command!r} failed: {done.stderr.strip()}")


def with_database(url: str, name: str) -> str:
    """`url` with its database (the path) replaced by `name`, its query kept."""
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path="/" + name))


def health(base: str) -> dict:
    """GET /healthz (no credential)."""
    with urllib.request.urlopen(base + "/healthz", timeout=10) as response:
        return json.load(response)


class Cluster:
    """Nodes A, B and C: `tether serve --database URL` sharing one data dir, hence one set of keys
    (docs/architecture.md, "Running several nodes"). A starts first and creates the schema, the
    keys and the first admin credential; B and C then start together. Ready once every node's
    /healthz says `standing: current`: it holds a lease and has applied the log up to it, so it
    may answer allow (before that, an active answer is 503). `extra_args` go to every node."""

    def __init__(self, data_dir: pathlib.Path, database: str, names: tuple[str, ...] = ("A", "B", "C"),
                 extra_args: tuple[str, ...] = ()):
        self.database, self.data_dir = database, data_dir
        self.nodes: list[Tether] = []
        args = ("--database", database, *extra_args)
        try:
            self.nodes.append(Tether(data_dir, args, name=f"node-{names[0]}"))
            others = [Tether(data_dir, args, name=f"node-{name}", wait=False) for name in names[1:]]
            self.nodes.extend(others)
            for node in others:
                node.wait_listening()
            self.wait_current()
        except BaseException:
            self.stop()
            raise
        self.admin = self.nodes[0].admin

    def wait_current(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            standings = {node.name: health(node.base).get("cluster", {}).get("standing") for node in self.nodes}
            if all(standing == "current" for standing in standings.values()):
                return
            if time.monotonic() > deadline:
                logs = "\n".join(f"{node.name}: {node.log()}" for node in self.nodes)
                pytest.fail(f"not every node current within {READY_TIMEOUT}s: {standings}\n{logs}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM to every node at once (each drains and leaves the cluster), then each is waited
        for and killed if it has not stopped within Tether.stop's timeout."""
        for node in self.nodes:
            if node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            node.stop()


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """The URL of a database of its own, created on the server at TETHER_TEST_DATABASE_URL and
    dropped afterwards. Without that server: skipped, except under CI, where it fails."""
    admin_url = os.environ.get(DATABASE_URL_VARIABLE)
    if not admin_url:
        why = f"{DATABASE_URL_VARIABLE} is not set: the multi-node tests need PostgreSQL (source tests/pg/start.sh)"
        if in_ci():
            pytest.fail(f"CI must run the multi-node tests, but {why}")
        pytest.skip(why)
    name = f"tether_interop_{uuid.uuid4().hex}"
    psql(admin_url, f"CREATE DATABASE {name}")
    try:
        yield with_database(admin_url, name)
    finally:
        psql(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def cluster(tmp_path):
    """Three nodes on a database of their own (`fresh_database`)."""
    with fresh_database() as database:
        nodes = Cluster(tmp_path / "data", database)
        try:
            yield nodes
        finally:
            nodes.stop()


@contextlib.contextmanager
def cluster_behind_proxy(data_dir: pathlib.Path) -> Iterator[tuple[Cluster, RoundRobinProxy]]:
    """Three nodes on a fresh database (`fresh_database`) behind one round-robin proxy
    (round_robin.py) that sends each request to the next node: the deployment the contract and
    browser suites run against a second time. Every node is given the proxy's URL as
    `--public-url`, as nodes behind a load balancer are, so the URLs they write (console links,
    metadata) and the console's same-origin check name the proxy."""
    proxy = RoundRobinProxy()
    try:
        with fresh_database() as database:
            nodes = Cluster(data_dir, database, extra_args=("--public-url", proxy.url))
            try:
                proxy.backends = [node.base for node in nodes.nodes]
                yield nodes, proxy
            finally:
                nodes.stop()
    finally:
        proxy.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report ends with the stderr of every tether it ran (`tether`, `cluster`)."""
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            servers = value.nodes if isinstance(value, Cluster) else [value] if isinstance(value, Tether) else []
            for server in servers:
                report.sections.append((f"{server.name} stderr ({server.base})", server.log()))
    return report
