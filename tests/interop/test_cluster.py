"""Interop: three tether nodes on one PostgreSQL database, checked by clients no one here wrote.

docs/architecture.md, "Running several nodes (PostgreSQL)", promises: a session created on one
node is found by the others, and once a revoking call has returned on any node, no node answers
allow for what it revoked. tests/api/cluster.rs checks it with our own HTTP client; here the
callers are the independent ones of the single-node interop tests:

- authlib's RFC 7662 introspection client (client_secret_basic) asks nodes B and C about a token
  of a session opened on node A, before and right after A revoked it, through the REST API or
  authlib's own RFC 7009 revocation client, for ROUNDS rounds.
- biscuit-python, as the offline verifier of test_offline_verify.py, verifies a token minted on
  A with B's /v1/keys, and after a revocation on C finds it on B's /v1/revocations.

Needs a PostgreSQL server: `source tests/pg/start.sh` sets TETHER_TEST_DATABASE_URL (`.ci/run`
does). Without it these tests skip, except under CI, where they fail.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import biscuit_auth as ba
import requests
from authlib.integrations.requests_client import OAuth2Session

from conftest import Cluster, Tether, api, health
# The relying service's offline verifier, exactly as the single-node test runs it.
from test_offline_verify import POLICY_FILE, OfflineVerifier

ROUNDS = int(os.environ.get("TETHER_INTEROP_CLUSTER_ROUNDS", "100"))
# A node may answer 503 for a moment (a lease renewal late on a loaded machine); how long one may
# take to answer otherwise.
SETTLE_TIMEOUT = 5.0


@dataclass
class World:
    """What the tests need, made through node A: a platform with an agent and a mail integration,
    a user's delegation to them, and a verifier credential (an OAuth client: id and secret)."""

    platform: str
    delegation: str
    verifier_id: str
    verifier_secret: str


def a_world(a: Tether, admin: str) -> World:
    user = api(a.base, "POST", "/v1/users", admin, {"external_id": "idp|ada", "permissions": ["mail:read"]})
    platform = api(a.base, "POST", "/v1/platforms", admin, {"name": "Acme"})
    platform_cred = api(a.base, "POST", "/v1/credentials", admin,
                        {"role": "platform", "platform_id": platform["id"]})["credential"]
    agent = api(a.base, "POST", "/v1/agents", platform_cred, {"name": "assistant", "scopes": ["mail:read"]})
    integration = api(a.base, "POST", "/v1/integrations", platform_cred, {"name": "mail", "scopes": ["mail:read"]})
    delegation = api(a.base, "POST", "/v1/delegations", platform_cred,
                     {"user_id": user["id"], "agent_id": agent["id"], "integration_id": integration["id"],
                      "scopes": ["mail:read"]})
    verifier = api(a.base, "POST", "/v1/credentials", admin, {"role": "verifier", "label": "mail-service"})
    return World(platform_cred, delegation["id"], verifier["id"], verifier["credential"])


def open_session(node: Tether, world: World) -> tuple[str, str]:
    """A session of the world's delegation opened through `node`: (session id, token)."""
    opened = api(node.base, "POST", "/v1/sessions", world.platform,
                 {"delegation_id": world.delegation, "scopes": ["mail:read"]})
    return opened["session"]["id"], opened["token"]


def metadata(node: Tether) -> dict:
    """The node's RFC 8414 metadata: each node advertises its own endpoints."""
    return requests.get(node.base + "/.well-known/oauth-authorization-server", timeout=10).json()


class Introspector:
    """authlib's RFC 7662 client against one node, authenticating with client_secret_basic."""

    def __init__(self, node: Tether, world: World):
        self.node = node
        self.endpoint = metadata(node)["introspection_endpoint"]
        self.client = OAuth2Session(world.verifier_id, world.verifier_secret,
                                    token_endpoint_auth_method="client_secret_basic")

    def ask(self, token: str) -> requests.Response:
        return self.client.introspect_token(self.endpoint, token=token, token_type_hint="access_token")

    def settled(self, token: str) -> dict:
        """The answer once it is not 503 (the node cannot vouch for an active token for a moment:
        no current lease), waiting up to SETTLE_TIMEOUT."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            answer = self.ask(token)
            if answer.status_code != 503 or time.monotonic() > deadline:
                assert answer.status_code == 200, f"{self.node.name}: {answer.status_code} {answer.text}"
                return answer.json()
            time.sleep(0.02)


def test_a_session_revoked_on_one_node_is_inactive_to_authlib_on_every_node_once_the_revoke_returns(
        cluster: Cluster):
    """Per round: a session opened on node A is active to authlib's introspection on B and C at
    once (each node reads a session it did not make); A revokes it (REST revoke and authlib's
    RFC 7009 client, alternately); the very next introspection on each node is not active. A
    503 right after the revoke fails closed and is allowed; `active: true` never is."""
    a, b, c = cluster.nodes
    world = a_world(a, cluster.admin)
    introspectors = [Introspector(node, world) for node in (a, b, c)]
    revoker = OAuth2Session(world.verifier_id, world.verifier_secret,
                            revocation_endpoint_auth_method="client_secret_basic")
    revocation_endpoint = metadata(a)["revocation_endpoint"]
    stale: list[str] = []
    fail_closed = 0

    for round_ in range(ROUNDS):
        session, token = open_session(a, world)
        for introspector in introspectors[1:]:
            claims = introspector.settled(token)
            assert claims["active"] is True, f"round {round_}: {introspector.node.name} does not find {session}: {claims}"
            assert (claims["sid"], claims["scope"]) == (session, "mail:read"), claims

        if round_ % 2 == 0:
            receipt = api(a.base, "POST", f"/v1/sessions/{session}/revoke", world.platform, {"reason": "interop"})
            assert [r["session_id"] for r in receipt["revoked"]] == [session], receipt
        else:
            answer = revoker.revoke_token(revocation_endpoint, token=token, token_type_hint="access_token")
            assert answer.status_code == 200, answer.text

        # The revoking call has returned: from now on no node may say active.
        for introspector in introspectors:
            answer = introspector.ask(token)
            if answer.status_code == 503:
                fail_closed += 1
                assert introspector.settled(token) == {"active": False}, f"round {round_}: {introspector.node.name}"
                continue
            assert answer.status_code == 200, f"{introspector.node.name}: {answer.status_code} {answer.text}"
            claims = answer.json()
            if claims != {"active": False}:
                stale.append(f"round {round_}: {introspector.node.name} said active={claims.get('active')!r} "
                             f"for {claims.get('sid', session)}")

    print(f"{ROUNDS} rounds; {fail_closed} answers 503 right after a revoke (failed closed)")
    assert stale == [], f"not inactive after the revoke on A had returned ({fail_closed} 503s besides): {stale}"
    # Every node's commits went into one chain.
    assert api(b.base, "GET", "/v1/audit/verify", cluster.admin)["ok"] is True


def test_biscuit_python_verifies_a_token_from_one_node_with_anothers_keys_and_sees_a_third_nodes_revocation(
        cluster: Cluster):
    """biscuit-python verifies offline, with node B's /v1/keys, a token minted on node A (every
    node publishes the same keys), and allows it; once node C's revoke has returned, B's
    /v1/revocations names the token's revocation id and the offline check rejects it, its
    signature still valid."""
    a, b, c = cluster.nodes
    world = a_world(a, cluster.admin)
    session, token = open_session(a, world)

    key_lists = [api(node.base, "GET", "/v1/keys", world.verifier_secret)["keys"] for node in (a, b, c)]
    assert key_lists[0] == key_lists[1] == key_lists[2], key_lists
    offline = OfflineVerifier(b.base, world.verifier_secret, POLICY_FILE.read_text())
    offline.refresh_keys()
    biscuit = ba.Biscuit.from_base64(token, offline.root_key)
    assert offline.check(token, "mail:read") == (True, "allowed")
    revocation_id = biscuit.revocation_ids[0]
    offline.poll_revocations()
    assert revocation_id not in offline.revoked

    api(c.base, "POST", f"/v1/sessions/{session}/revoke", world.platform, {"reason": "interop"})

    offline.poll_revocations()
    assert revocation_id in offline.revoked, f"{revocation_id} not on B's feed: {list(offline.revoked)}"
    assert offline.revoked[revocation_id]["session_id"] == session
    ba.Biscuit.from_base64(token, offline.root_key)  # the signature alone still verifies
    assert offline.check(token, "mail:read") == (False, "session_revoked")


def test_every_node_reports_its_own_standing_and_exactly_one_sends_outgoing_work(cluster: Cluster):
    """/healthz on each node has a `cluster` object: a node id of its own, `standing: current`
    (the fixture waited for it) and an applied seq; exactly one node sends webhook deliveries and
    Shared Signals pushes, once a leader has been chosen (every node tries every 500 ms)."""
    deadline = time.monotonic() + 10
    while True:
        states = [health(node.base)["cluster"] for node in cluster.nodes]
        senders = [state["node"] for state in states if state["sends_outgoing"]]
        if len(senders) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(senders) == 1, states
    assert len({state["node"] for state in states}) == 3, states
    assert all(state["standing"] == "current" for state in states), states
    assert all(isinstance(state["applied_seq"], int) and state["applied_seq"] > 0 for state in states), states
