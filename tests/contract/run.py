#!/usr/bin/env python3
"""The OpenAPI contract, checked by independent tools against the real server.

Starts `target/debug/tether serve` on a loopback port 0 with a throw-away data directory, reads
the address from its `tether listening on http://ADDR` line and the admin credential from
`DATA_DIR/admin.credential`, creates a platform and a platform credential through the API, then:

1. `openapi-spec-validator` validates the served `/openapi.json`;
2. `schemathesis` runs every operation with `--checks all`, as the platform and as admin, a
   bounded number of examples per operation; the operations that can end the credential they
   run with (credential revocation, key rotation and retirement) run last, each pass with a
   fresh admin credential.

With `--cluster`, the same against three nodes on one PostgreSQL database instead: a fresh
database on the server at TETHER_TEST_DATABASE_URL (`source tests/pg/start.sh`), three
`tether serve --database URL` sharing one data dir (the interop harness's `Cluster`,
tests/interop/conftest.py), and in front of them a proxy that sends each request to the next
node (tests/interop/round_robin.py), so schemathesis's reads after its writes, and its checks
that a created resource can be read and a deleted one cannot, cross nodes all the time.

Exits non-zero on any failure. Usage:
`python tests/contract/run.py [--max-examples N] [--cluster]`, with the tools installed from
tests/contract/requirements.txt (and, for `--cluster`, tests/interop/requirements.txt, for the
harness's pytest) in the same Python environment.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(sys.executable).parent

# Operations schemathesis cannot check, each for a reason documented in docs/api.md
# ("The OpenAPI contract"):
# - GET /v1/events is a Server-Sent Events stream that stays open until the client leaves: a
#   request/response tester can only time out on it.
EXCLUDED_PATH_REGEX = "/v1/events"
# Passes that can end the credential they run with come last, each with a fresh admin
# credential minted by `tether credential mint`: schemathesis reuses ids it has seen in answers,
# so it revokes credentials it listed (its own too), and retiring an API key ends the
# credentials that key signed.
CREDENTIAL_REVOKE_REGEX = "/v1/credentials/[^/]+/revoke"
KEYS_PATH_REGEX = "/v1/keys/(rotate|[^/]+/retire)"
HERE = Path(__file__).resolve().parent


def request(base, method, path, credential, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {credential}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as answer:
        return json.load(answer)


def start_server(data_dir):
    binary = ROOT / "target" / "debug" / "tether"
    server = subprocess.Popen(
        [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 60
    for line in server.stdout:
        if line.startswith("tether listening on "):
            base = line.split("tether listening on ", 1)[1].strip()
            break
        if time.monotonic() > deadline:
            break
    else:
        base = None
    if base is None:
        server.kill()
        sys.exit("tether did not print its listening line")
    # Keep draining stdout so the server never blocks on a full pipe.
    subprocess.Popen(["cat"], stdin=server.stdout, stdout=subprocess.DEVNULL)
    return server, base


def schemathesis(base, credential, max_examples, extra, report, config=None):
    command = [
        str(BIN_DIR / "schemathesis"),
        *(["--config-file", str(config)] if config else []),
        "run",
        f"{base}/openapi.json",
        # Every check. With a configuration file the checks are left to it (all of them, its
        # default): `--checks all` on the command line would override its per-operation
        # exceptions.
        *([] if config else ["--checks", "all"]),
        "--max-examples",
        str(max_examples),
        "--phases",
        "examples,coverage,fuzzing",
        "--header",
        f"Authorization: Bearer {credential}",
        "--request-timeout",
        "10",
        "--workers",
        "2",
        "--seed",
        "1",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
        *extra,
    ]
    print("+", " ".join(c if "Bearer" not in c else "Authorization: Bearer …" for c in command), flush=True)
    # In the reports directory: schemathesis keeps a cache where it runs. hooks.py teaches it
    # the SET media type of the push endpoint.
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "hooks", "PYTHONPATH": str(HERE)}
    for attempt in (1, 2):
        run = subprocess.Popen(command, cwd=report.parent, env=env, stdout=subprocess.PIPE, text=True)
        output = []
        for line in run.stdout:
            print(line, end="", flush=True)
            output.append(line)
        status = run.wait()
        text = "".join(output)
        # CPython 3.11's parser can raise "AST constructor recursion depth mismatch" inside
        # hypothesis while it describes a strategy (a crash of the tool, not a finding about
        # tether), when two worker threads parse at once; hooks.py now parses one at a time. A
        # run whose only problems are such crashes is still run once more; any real failure, or
        # the crash twice, fails.
        tool_crash_only = "AST constructor recursion depth mismatch" in text and "= FAILURES =" not in text
        if status == 0 or not tool_crash_only or attempt == 2:
            return status
        print("+ schemathesis crashed inside CPython's parser; running it once more", flush=True)
    return status


def interop_harness():
    """tests/interop/conftest.py, loaded by its path (as tests/browser/conftest.py loads it)."""
    spec = importlib.util.spec_from_file_location("interop_harness", ROOT / "tests" / "interop" / "conftest.py")
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    return harness


@contextlib.contextmanager
def single_node(work):
    """One `tether serve` on SQLite in WORK/data: (base URL, admin credential, `--data-dir` args)."""
    data_dir = work / "data"
    server, base = start_server(data_dir)
    try:
        yield base, (data_dir / "admin.credential").read_text().strip(), ["--data-dir", str(data_dir)]
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


@contextlib.contextmanager
def three_nodes(work, reports):
    """Three nodes on a fresh PostgreSQL database behind the round-robin proxy: (the proxy's URL,
    the admin credential, the `--database --data-dir` args of the CLI). Each node's stderr is
    copied to the reports directory."""
    harness = interop_harness()
    with harness.cluster_behind_proxy(work / "data") as (cluster, proxy):
        print(f"+ three nodes ({', '.join(n.base for n in cluster.nodes)}) behind {proxy.url}", flush=True)
        try:
            yield proxy.url, cluster.admin, ["--database", cluster.database, "--data-dir", str(cluster.data_dir)]
        finally:
            spread = ", ".join(f"{n.name} {proxy.counts.get(n.base, 0)}" for n in cluster.nodes)
            print(f"+ requests per node: {spread}", flush=True)
            for node in cluster.nodes:
                shutil.copyfile(node.stderr_path, reports / node.stderr_path.name)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-examples", type=int, default=20)
    parser.add_argument("--only", choices=["platform", "admin", "credentials", "keys"], action="append")
    parser.add_argument("--cluster", action="store_true",
                        help="three PostgreSQL nodes behind a per-request round-robin proxy")
    args = parser.parse_args()
    passes = args.only or ["platform", "admin", "credentials", "keys"]
    if args.cluster and not os.environ.get("TETHER_TEST_DATABASE_URL"):
        sys.exit("--cluster needs a PostgreSQL server: source tests/pg/start.sh (TETHER_TEST_DATABASE_URL)")

    work = Path(tempfile.mkdtemp(prefix="tether-contract-"))
    reports = Path(tempfile.mkdtemp(prefix="tether-contract-reports-"))
    deployment = three_nodes(work, reports) if args.cluster else single_node(work)
    failed = []
    try:
        with deployment as (base, admin, cli_args):
            platform = request(base, "POST", "/v1/platforms", admin, {"name": "contract"})
            platform_credential = request(
                base, "POST", "/v1/credentials", admin, {"role": "platform", "platform_id": platform["id"]}
            )["credential"]

            document = work / "openapi.json"
            with urllib.request.urlopen(f"{base}/openapi.json", timeout=30) as answer:
                document.write_bytes(answer.read())
            print("+ openapi-spec-validator openapi.json", flush=True)
            if subprocess.run([str(BIN_DIR / "openapi-spec-validator"), str(document)]).returncode != 0:
                failed.append("openapi-spec-validator")

            binary = ROOT / "target" / "debug" / "tether"

            def fresh_admin():
                minted = subprocess.run(
                    [str(binary), "credential", "mint", "--role", "admin", *cli_args],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                return minted.stdout.strip().splitlines()[-1]

            # One regex per option: schemathesis keeps only the last of a repeated option.
            everyday = f"^({EXCLUDED_PATH_REGEX}|{KEYS_PATH_REGEX}|{CREDENTIAL_REVOKE_REGEX})$"
            runs = {
                "platform": (lambda: platform_credential, ["--exclude-path-regex", everyday], HERE / "platform.toml"),
                "admin": (lambda: admin, ["--exclude-path-regex", everyday], HERE / "admin.toml"),
                "credentials": (fresh_admin, ["--include-path-regex", f"^{CREDENTIAL_REVOKE_REGEX}$"], None),
                "keys": (fresh_admin, ["--include-path-regex", f"^{KEYS_PATH_REGEX}$"], None),
            }
            for name in [p for p in runs if p in passes]:
                credential, extra, config = runs[name]
                report = reports / f"{name}.ndjson"
                if schemathesis(base, credential(), args.max_examples, extra, report, config) != 0:
                    failed.append(f"schemathesis ({name})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    where = "three nodes" if args.cluster else "one node"
    if failed:
        print(f"contract ({where}): FAILED: {', '.join(failed)} (reports in {reports})", file=sys.stderr)
        return 1
    shutil.rmtree(reports, ignore_errors=True)
    print(f"contract ({where}): ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
