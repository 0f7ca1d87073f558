"""Interop: an independent biscuit implementation verifies a tether agent token offline.

biscuit-python (module `biscuit_auth`, a binding of the Rust reference implementation built and
released separately from the biscuit-auth crate tether links) plays a relying service that never
calls POST /v1/authorize: it takes the public keys from GET /v1/keys, verifies the token's
signatures itself, runs the same `policies/agent.datalog` that tether runs, and consults the
revocation feed GET /v1/revocations. DESIGN.md, "Propagation", asks for exactly this test.

Run from the repository root after `cargo build --bin tether`:

    python3 -m venv .venv && .venv/bin/pip install -r tests/interop/requirements.txt
    .venv/bin/python -m pytest -q tests/interop

TETHER_BIN overrides the binary (default: target/debug/tether).
"""

from __future__ import annotations

import datetime
import urllib.parse

import biscuit_auth as ba
import pytest

from conftest import POLICY_DIR, Tether, api

POLICY_FILE = POLICY_DIR / "agent.datalog"


# ---------------------------------------------------------------------------------------------
# The relying service's side: everything below uses only /v1/keys, /v1/revocations and the
# policy file. It is the code docs/relying-services.md shows.
# ---------------------------------------------------------------------------------------------


def authorizer_builder(source: str | None = None, parameters: dict | None = None) -> ba.AuthorizerBuilder:
    """An authorizer builder with tether's run limits (src/tokens/mod.rs): biscuit's default
    1 ms time limit can deny valid requests on a loaded machine."""
    builder = ba.AuthorizerBuilder(source, parameters)
    limits = builder.limits()
    limits.max_facts, limits.max_iterations = 1000, 100
    limits.max_time = datetime.timedelta(milliseconds=25)
    builder.set_limits(limits)
    return builder


class OfflineVerifier:
    """Decides "may this token do this now?" without asking tether."""

    def __init__(self, base: str, credential: str, policy_source: str):
        self.base, self.credential, self.policy_source = base, credential, policy_source
        self.keys: dict[int, ba.PublicKey] = {}
        self.revoked: dict[str, dict] = {}  # revocation id (hex) -> feed entry
        self.cursor = 0

    def refresh_keys(self) -> None:
        """Active agent-token keys by kid (retired keys verify nothing; API keys are not for tokens)."""
        keys = {}
        for k in api(self.base, "GET", "/v1/keys", self.credential)["keys"]:
            if k["purpose"] == "agent" and k["status"] == "active" and k["algorithm"] == "ed25519":
                keys[k["kid"]] = ba.PublicKey.from_bytes(bytes.fromhex(k["public_key"]), ba.Algorithm.Ed25519)
        self.keys = keys

    def poll_revocations(self) -> None:
        """Reads the feed from the last cursor seen to its end."""
        while True:
            query = urllib.parse.urlencode({"after": self.cursor, "limit": 1000})
            page = api(self.base, "GET", f"/v1/revocations?{query}", self.credential)
            for item in page["items"]:
                self.revoked[item["revocation_id"]] = item
                self.cursor = item["cursor"]
            if page["next_cursor"] is None:
                return

    def root_key(self, kid: int | None) -> ba.PublicKey:
        """Called by biscuit-python with the token's root key id."""
        if kid is None or kid not in self.keys:
            raise ValueError(f"unknown key id {kid!r}")
        return self.keys[kid]

    def check(self, token: str, scope: str, now: datetime.datetime | None = None) -> tuple[bool, str]:
        """(allowed, reason). The reasons mirror tether's where an offline verifier can tell."""
        now = now or datetime.datetime.now(datetime.timezone.utc)
        try:
            biscuit = ba.Biscuit.from_base64(token, self.root_key)
        except Exception as e:  # unknown kid, bad signature, not a biscuit
            return False, f"invalid_token: {e}"
        # Attenuated tokens keep the authority block's revocation id, which is the one on the feed.
        if any(rid in self.revoked for rid in biscuit.revocation_ids):
            return False, "session_revoked"
        # token_age, as tether computes it: seconds since the token's own issued_at.
        issued = authorizer_builder().build(biscuit).query(ba.Rule("issued($t) <- issued_at($t)"))
        age = max(0, int((now - issued[0].terms[0]).total_seconds())) if issued else 0
        builder = authorizer_builder(self.policy_source)
        # Request facts as parameters, never formatted into datalog text.
        builder.add_code(
            "requested_scope({scope}); time({now}); token_age({age});",
            {"scope": scope, "now": now, "age": age},
        )
        try:
            builder.build(biscuit).authorize()
        except ba.AuthorizationError as e:
            return False, f"denied: {e}"
        return True, "allowed"


def online(t: Tether, verifier: str, token: str, scope: str) -> dict:
    return api(t.base, "POST", "/v1/authorize", verifier, {"token": token, "scope": scope})


def test_an_independent_biscuit_implementation_verifies_offline_and_honours_the_revocation_feed(tether):
    t, admin = tether, tether.admin

    # 1. The world: a user who may read and send mail; a platform with an agent and a mail
    #    integration; the user's consent to reading only; a session; a relying service.
    user = api(t.base, "POST", "/v1/users", admin,
               {"external_id": "idp|ada", "display_name": "Ada", "permissions": ["mail:read", "mail:send"]})
    platform = api(t.base, "POST", "/v1/platforms", admin, {"name": "Acme Agents"})
    platform_cred = api(t.base, "POST", "/v1/credentials", admin,
                        {"role": "platform", "platform_id": platform["id"], "label": "acme"})["credential"]
    agent = api(t.base, "POST", "/v1/agents", platform_cred,
                {"name": "inbox-assistant", "scopes": ["mail:read", "mail:send"]})
    integration = api(t.base, "POST", "/v1/integrations", platform_cred,
                      {"name": "mail", "scopes": ["mail:read", "mail:send"]})
    delegation = api(t.base, "POST", "/v1/delegations", platform_cred,
                     {"user_id": user["id"], "agent_id": agent["id"], "integration_id": integration["id"],
                      "scopes": ["mail:read"]})
    opened = api(t.base, "POST", "/v1/sessions", platform_cred,
                 {"delegation_id": delegation["id"], "scopes": ["mail:read"], "ttl_seconds": 3600})
    session, token = opened["session"], opened["token"]
    verifier_cred = api(t.base, "POST", "/v1/credentials", admin,
                        {"role": "verifier", "label": "mail-service"})["credential"]

    # 2. Keys: the token's root key id selects the key, and only that key verifies it.
    offline = OfflineVerifier(t.base, verifier_cred, POLICY_FILE.read_text())
    offline.refresh_keys()
    kid = ba.UnverifiedBiscuit.from_base64(token).root_key_id()
    assert kid in offline.keys, f"token kid {kid} not among the active agent keys {sorted(offline.keys)}"
    biscuit = ba.Biscuit.from_base64(token, offline.root_key)
    assert ba.Biscuit.from_base64(token, offline.keys[kid]).revocation_ids == biscuit.revocation_ids
    with pytest.raises(ba.BiscuitValidationError):
        ba.Biscuit.from_base64(token, ba.KeyPair().public_key)  # any other key: refused

    # The authority block reads back, through the other implementation, as tether wrote it.
    facts = authorizer_builder().build(biscuit)

    def values(rule: str) -> list[list]:
        return sorted((f.terms for f in facts.query(ba.Rule(rule))), key=repr)

    assert values("q($s, $u, $a, $i, $d, $p) <- session($s), user($u), agent($a), integration($i), "
                  "delegation($d), platform($p)") == [[session["id"], user["id"], agent["id"], integration["id"],
                                                       delegation["id"], platform["id"]]]
    assert values("q($s) <- scope($s)") == [["mail:read"]]
    [[issued_at, expires_at]] = values("q($i, $e) <- issued_at($i), expires_at($e)")
    token_expiry = datetime.datetime.fromisoformat(opened["token_expires_at"].replace("Z", "+00:00"))
    # A biscuit date has whole seconds: the token carries the API's token_expires_at (which has
    # milliseconds) truncated to the second, and tether enforces the token's value.
    assert expires_at == token_expiry.replace(microsecond=0)
    assert issued_at <= datetime.datetime.now(datetime.timezone.utc) < expires_at
    assert values("q($l, $s, $a) <- ancestor($l, $s, $a)") == []

    # 3. Offline decisions: the granted scope is allowed, one the token lacks is denied, and so is
    #    the granted scope once the token's own expiry check (`time($t), $t < expiry`) fails.
    assert offline.check(token, "mail:read") == (True, "allowed")
    allowed, reason = offline.check(token, "mail:send")
    assert not allowed, reason
    allowed, reason = offline.check(token, "mail:read", now=expires_at + datetime.timedelta(seconds=1))
    assert not allowed, reason
    # tether says the same online.
    assert online(t, verifier_cred, token, "mail:read")["decision"] == "allow"
    assert online(t, verifier_cred, token, "mail:send")["reason"] == "scope_not_granted"

    # A holder attenuates with biscuit-python; tether accepts the narrowed token and keeps the
    # authority block's revocation id first.
    narrowed = biscuit.append(ba.BlockBuilder(
        "check if requested_scope($s), {allowed}.contains($s);", {"allowed": {"mail:read"}})).to_base64()
    assert online(t, verifier_cred, narrowed, "mail:read")["decision"] == "allow"
    narrowed_biscuit = ba.Biscuit.from_base64(narrowed, offline.root_key)
    assert narrowed_biscuit.revocation_ids[0] == biscuit.revocation_ids[0]
    assert offline.check(narrowed, "mail:read") == (True, "allowed")

    # 4. Before revocation the feed does not name the token.
    revocation_id = biscuit.revocation_ids[0]
    offline.poll_revocations()
    assert revocation_id not in offline.revoked

    receipt = api(t.base, "POST", f"/v1/sessions/{session['id']}/revoke", platform_cred, {"reason": "interop test"})
    assert [r["session_id"] for r in receipt["revoked"]] == [session["id"]]

    offline.poll_revocations()
    assert revocation_id in offline.revoked, f"{revocation_id} not on the feed: {list(offline.revoked)}"
    entry = offline.revoked[revocation_id]
    assert entry["session_id"] == session["id"]
    assert datetime.datetime.fromisoformat(entry["expires_at"].replace("Z", "+00:00")).replace(microsecond=0) == expires_at

    # The offline check that consults the feed now rejects the token and its attenuation, while
    # its signatures still verify: only the feed tells an offline verifier.
    ba.Biscuit.from_base64(token, offline.root_key)
    assert offline.check(token, "mail:read") == (False, "session_revoked")
    assert offline.check(narrowed, "mail:read") == (False, "session_revoked")
    assert online(t, verifier_cred, token, "mail:read")["reason"] == "session_revoked"
