"""Interop: scim2-tester (python-scim), an independent SCIM 2.0 conformance checker, against a
running tether's /scim/v2 with a provisioner credential.

It reads the discovery documents, then creates, reads, queries, replaces, patches and deletes
Users and Groups as those documents describe them, and checks a random URL's 404. The test
asserts no ERROR or CRITICAL result and prints every result, DEVIATIONs included (docs/api.md,
"SCIM 2.0 at /scim/v2", names each deviation and why).

Run from the repository root after `cargo build --bin tether` (the harness is conftest.py):

    .venv/bin/python -m pytest -q -s tests/interop/test_scim2_tester.py
"""

from __future__ import annotations

import collections

import httpx2
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

from conftest import api


def test_scim2_tester_finds_no_error(tether):
    credential = api(tether.base, "POST", "/v1/credentials", tether.admin,
                     {"role": "provisioner", "label": "scim2-tester"})["credential"]
    http = httpx2.Client(base_url=f"{tether.base}/scim/v2",
                         headers={"Authorization": f"Bearer {credential}"}, timeout=30)
    client = SyncSCIMClient(http)
    results = check_server(client)
    counts = collections.Counter(r.status.name for r in results)
    print(f"\nscim2-tester: {len(results)} checks: {dict(sorted(counts.items()))}")
    for r in results:
        if r.status not in (Status.SUCCESS, Status.COMPLIANT):
            print(f"  {r.status.name:10} [{r.resource_type or '-'}] {r.title}: {r.reason}")
    failed = [r for r in results if r.status in (Status.ERROR, Status.CRITICAL)]
    assert not failed, "\n".join(f"{r.status.name} [{r.resource_type}] {r.title}: {r.reason}" for r in failed) + \
        f"\n\ntether stderr:\n{tether.log()}"
    assert counts["SUCCESS"] > 0
