"""The interop tests' harness: a real `tether serve` on a temporary data dir and port 0, and a
plain JSON client of its API (standard library only, so it proves nothing about tether itself).

TETHER_BIN overrides the binary (default: target/debug/tether).
"""

from __future__ import annotations

import json
import os
import pathlib
import queue
import subprocess
import threading
import urllib.error
import urllib.request

import pytest

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
    """`tether serve` with `extra_args`, until `stop()`."""

    def __init__(self, data_dir: pathlib.Path, extra_args: tuple[str, ...] = ()):
        if not TETHER_BIN.is_file():
            pytest.fail(f"no tether binary at {TETHER_BIN}: run `cargo build --bin tether` or set TETHER_BIN")
        self.stderr_path = data_dir.parent / "tether.stderr"
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
        self.base = None
        while self.base is None:
            try:
                line = lines.get(timeout=START_TIMEOUT)
            except queue.Empty:
                self.stop()
                pytest.fail(f"tether printed no address within {START_TIMEOUT}s; stderr: {self.log()}")
            if line is None:
                self.stop()
                pytest.fail(f"tether exited before listening (code {self.proc.returncode}); stderr: {self.log()}")
            if line.startswith(LISTENING):
                self.base = line[len(LISTENING):].strip()
        self.admin = (data_dir / "admin.credential").read_text().strip()

    def log(self) -> str:
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


