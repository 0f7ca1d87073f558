"""Interop: tether as a Shared Signals receiver, fed by an independent JOSE implementation.

joserfc (Python, written apart from the Rust `jsonwebtoken` crate tether verifies with) plays the
transmitter: it generates RSA, EC P-256 and Ed25519 keys, publishes them as a JWKS on a local
HTTP server (127.0.0.1, port 0), and signs Security Event Tokens that are pushed to tether as
RFC 8935 says. The test registers the source through tether's API, pushes RISC and CAEP events
and checks their effects through the API only: users disabled, sessions revoked, the audit
events and their causes, the chain verifying. It pushes what must be refused too (a forged
signature, HS256 keyed with the public key, `alg: none`, the wrong issuer or audience, a stale
`iat`, an oversized body, garbage) and checks the RFC 8935 answer of each, and that a rotated key
is picked up while made-up `kid`s do not make tether fetch the JWKS more than once per 30 s (the
test waits out that window once: about 30 s of its run).
Last, Global Token Revocation with a JWT joserfc signed.

Run from the repository root after `cargo build --bin tether` (see conftest.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from conftest import Tether, api

RISC = "https://schemas.openid.net/secevent/risc/event-type/"
CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
ISSUER = "https://idp.interop.example"
AUDIENCE = "https://tether.interop.example"
# joserfc refuses algorithms outside its recommended set unless they are named.
ALGORITHMS = ["RS256", "ES256", "EdDSA"]


class Jwks:
    """The transmitter's JWKS endpoint: serves the public keys it holds, counts the fetches."""

    def __init__(self, keys: list):
        self.keys = list(keys)
        self.fetches = 0
        self.last_fetch = 0.0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                outer.fetches += 1
                outer.last_fetch = time.monotonic()
                body = json.dumps({"keys": [k.as_dict(private=False) for k in outer.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/jwk-set+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver(tmp_path):
    # The JWKS is served on loopback, which tether refuses to fetch unless told (the webhooks'
    # private-address guard).
    server = Tether(tmp_path / "data", ("--webhooks-allow-private",))
    try:
        yield server
    finally:
        server.stop()


def sign(key, claims: dict, alg: str, typ: str = "secevent+jwt", kid: str | None = None) -> str:
    header = {"alg": alg, "typ": typ, "kid": kid or key.kid}
    return jwt.encode(header, claims, key, algorithms=ALGORITHMS)


def set_claims(event_type: str, event: dict, sub_id: dict, **overrides) -> dict:
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": int(time.time()),
        "jti": str(uuid.uuid4()),
        "sub_id": sub_id,
        "events": {event_type: event},
    }
    claims.update(overrides)
    return claims


def b64(part: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")


def email(address: str) -> dict:
    return {"format": "email", "email": address}


def push(base: str, path: str, authorization: str | None, body: bytes | str) -> tuple[int, dict | None]:
    """POSTs a SET as RFC 8935 says: (status, JSON body or None when empty)."""
    data = body.encode() if isinstance(body, str) else body
    headers = {"Content-Type": "application/secevent+jwt", "Accept": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    request = urllib.request.Request(base + path, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            return response.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, (json.loads(raw) if raw else None)


def post_status(base: str, path: str, bearer: str, body: dict) -> int:
    headers = {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"}
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def audit(t: Tether, query: str) -> list[dict]:
    return api(t.base, "GET", f"/v1/audit?{query}&limit=1000", t.admin)["items"]


def user_with_sessions(t: Tether, platform: dict, address: str, count: int = 2) -> tuple[str, list[str]]:
    """A user known by `address`, delegating to the platform's agent, with `count` sessions."""
    user = api(t.base, "POST", "/v1/users", t.admin,
               {"external_id": f"ext|{address}", "email": address, "permissions": ["mail:read"]})["id"]
    delegation = api(t.base, "POST", "/v1/delegations", platform["credential"],
                     {"user_id": user, "agent_id": platform["agent"], "integration_id": platform["integration"],
                      "scopes": ["mail:read"]})["id"]
    sessions = [
        api(t.base, "POST", "/v1/sessions", platform["credential"],
            {"delegation_id": delegation, "scopes": ["mail:read"]})["session"]["id"]
        for _ in range(count)
    ]
    return user, sessions


def session_status(t: Tether, session: str) -> str:
    return api(t.base, "GET", f"/v1/sessions/{session}", t.admin)["status"]


# RFC 9864 prefers the fully-specified `Ed25519`; SSF transmitters send `EdDSA`, which tether reads.
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
def test_sets_signed_by_joserfc_have_their_effects_and_bad_ones_are_refused_per_rfc_8935(receiver):
    t = receiver
    rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    ec = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
    okp = OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1"})
    jwks = Jwks([rsa, ec, okp])
    try:
        # The source, registered as an operator would: the JWKS by URL, an audience.
        source = api(t.base, "POST", "/v1/signal-sources", t.admin,
                     {"issuer": ISSUER, "jwks_uri": jwks.url, "audience": AUDIENCE, "label": "interop"})
        path = f"/ssf/push/{source['id']}"
        assert source["push_url"].endswith(path)
        auth = source["push_authorization"]

        # A platform whose agent acts for three users.
        plt = api(t.base, "POST", "/v1/platforms", t.admin, {"name": "interop"})
        cred = api(t.base, "POST", "/v1/credentials", t.admin, {"role": "platform", "platform_id": plt["id"]})
        platform = {"credential": cred["credential"]}
        platform["agent"] = api(t.base, "POST", "/v1/agents", platform["credential"],
                                {"name": "agent", "scopes": ["mail:read"]})["id"]
        platform["integration"] = api(t.base, "POST", "/v1/integrations", platform["credential"],
                                      {"name": "mail", "scopes": ["mail:read"]})["id"]
        ada, ada_sessions = user_with_sessions(t, platform, "ada@interop.example")
        bo, bo_sessions = user_with_sessions(t, platform, "bo@interop.example")
        cy, cy_sessions = user_with_sessions(t, platform, "cy@interop.example")

        # RISC account-disabled, RS256: Ada is disabled, her sessions end, caused by the signal.
        disabled = sign(rsa, set_claims(f"{RISC}account-disabled", {}, email("ada@interop.example")), "RS256")
        assert push(t.base, path, auth, disabled) == (202, None)
        assert api(t.base, "GET", f"/v1/users/{ada}", t.admin)["status"] == "disabled"
        assert [session_status(t, s) for s in ada_sessions] == ["revoked", "revoked"]
        signal = audit(t, f"subject={ada}&action=signal.received")[0]
        assert signal["actor"] == {"kind": "idp", "id": source["id"]}
        assert signal["details"]["effect"] == "disable"
        trigger = audit(t, f"cause_seq={signal['seq']}")
        assert [e["action"] for e in trigger] == ["user.disabled"]
        assert len(audit(t, f"cause_seq={trigger[0]['seq']}&action=session.revoked")) == 2

        # The same SET again: accepted, nothing more happens.
        head = api(t.base, "GET", "/v1/audit/verify", t.admin)["head_seq"]
        assert push(t.base, path, auth, disabled) == (202, None)
        assert api(t.base, "GET", "/v1/audit/verify", t.admin)["head_seq"] == head

        # CAEP session-revoked by an admin, ES256, iss_sub subject: Bo's agents are signed out.
        revoked = set_claims(f"{CAEP}session-revoked", {"initiating_entity": "admin",
                                                      "reason_admin": {"en": "offboarding"}},
                             {"format": "iss_sub", "iss": ISSUER, "sub": "ext|bo@interop.example"})
        assert push(t.base, path, auth, sign(ec, revoked, "ES256")) == (202, None)
        assert [session_status(t, s) for s in bo_sessions] == ["revoked", "revoked"]
        assert api(t.base, "GET", f"/v1/users/{bo}", t.admin)["status"] == "active"

        # CAEP session-revoked by the user themself, EdDSA: recorded only.
        logout = set_claims(f"{CAEP}session-revoked", {"initiating_entity": "user"}, email("cy@interop.example"))
        assert push(t.base, path, auth, sign(okp, logout, "EdDSA")) == (202, None)
        assert [session_status(t, s) for s in cy_sessions] == ["active", "active"]

        # CAEP credential-change, EdDSA, a complex subject: the password_reset lifecycle event.
        change = set_claims(f"{CAEP}credential-change", {"credential_type": "password", "change_type": "update"},
                            {"format": "complex", "user": email("cy@interop.example"),
                             "session": {"format": "opaque", "id": "s-1"}})
        assert push(t.base, path, auth, sign(okp, change, "EdDSA")) == (202, None)
        assert [session_status(t, s) for s in cy_sessions] == ["revoked", "revoked"]
        assert len(audit(t, f"subject={cy}&action=user.password_reset")) == 1

        # A subject nobody has: accepted, recorded as unmatched.
        stranger = set_claims(f"{RISC}account-disabled", {}, email("nobody@interop.example"))
        assert push(t.base, path, auth, sign(rsa, stranger, "RS256")) == (202, None)
        assert audit(t, "action=signal.received")[-1]["details"]["unmatched"]

        # What must be refused, with RFC 8935's code, and change nothing.
        target = email("bo@interop.example")
        good = set_claims(f"{RISC}account-disabled", {}, target)
        forger = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
        # joserfc itself refuses to key HMAC with a public key; the attacker does it by hand.
        confused = f"{b64({'alg': 'HS256', 'typ': 'secevent+jwt', 'kid': 'rsa-1'})}.{b64(good)}"
        mac = hmac.new(rsa.as_pem(private=False), confused.encode(), hashlib.sha256).digest()
        confused += "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")
        unsigned = f"{b64({'alg': 'none', 'typ': 'secevent+jwt'})}.{b64(good)}."
        cases = [
            (sign(forger, good, "RS256"), 400, "invalid_key"),
            (confused, 400, "invalid_request"),
            (unsigned, 400, "invalid_request"),
            (sign(rsa, good, "RS256", typ="JWT"), 400, "invalid_request"),
            (sign(rsa, {**good, "iss": "https://evil.example"}, "RS256"), 400, "invalid_issuer"),
            (sign(rsa, {**good, "aud": "https://elsewhere.example"}, "RS256"), 400, "invalid_audience"),
            (sign(rsa, {**good, "iat": int(time.time()) - 3600}, "RS256"), 400, "invalid_request"),
            (sign(rsa, {**good, "iat": int(time.time()) + 3600}, "RS256"), 400, "invalid_request"),
            ("not a jwt", 400, "invalid_request"),
            ("x" * (64 * 1024 + 1), 413, "invalid_request"),
        ]
        for body, status, err in cases:
            answer = push(t.base, path, auth, body)
            assert answer[0] == status and answer[1]["err"] == err, (err, answer)
        assert push(t.base, path, "Bearer ssfp_wrong", sign(rsa, good, "RS256"))[1]["err"] == "authentication_failed"
        assert push(t.base, path, None, sign(rsa, good, "RS256"))[1]["err"] == "authentication_failed"
        assert api(t.base, "GET", f"/v1/users/{bo}", t.admin)["status"] == "active"

        # Made-up kids: refused, and tether does not fetch the JWKS again within 30 s of the
        # last fetch (the first push fetched it).
        fetched = jwks.fetches
        assert fetched == 1
        for i in range(5):
            status, body = push(t.base, path, auth, sign(forger, good, "RS256", kid=f"made-up-{i}"))
            assert (status, body["err"]) == (400, "invalid_key")
        assert jwks.fetches == fetched
        # A rotated key, 30 s on: its new kid makes tether fetch the JWKS again, and it verifies.
        rotated = RSAKey.generate_key(2048, parameters={"kid": "rsa-2"})
        jwks.keys.append(rotated)
        time.sleep(max(0.0, jwks.last_fetch + 30.5 - time.monotonic()))
        credential_event = set_claims(f"{RISC}credential-compromise", {"credential_type": "password"}, target)
        assert push(t.base, path, auth, sign(rotated, credential_event, "RS256")) == (202, None)
        assert jwks.fetches == fetched + 1
        assert len(audit(t, f"subject={bo}&action=user.credential_compromised")) == 1
        status, body = push(t.base, path, auth, sign(forger, good, "RS256", kid="made-up-again"))
        assert (status, body["err"], jwks.fetches) == (400, "invalid_key", fetched + 1)

        # Global Token Revocation with a JWT joserfc signed (Okta's signed-JWT mode).
        dee, dee_sessions = user_with_sessions(t, platform, "dee@interop.example")
        now = int(time.time())
        bearer = jwt.encode({"alg": "ES256", "typ": "JWT", "kid": "ec-1"},
                            {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())},
                            ec, algorithms=ALGORITHMS)
        gtr = "/oauth2/global-token-revocation"
        assert post_status(t.base, gtr, bearer, {"sub_id": email("nobody@interop.example")}) == 404
        assert post_status(t.base, gtr, bearer, {"sub_id": email("dee@interop.example")}) == 204
        assert [session_status(t, s) for s in dee_sessions] == ["revoked", "revoked"]
        assert post_status(t.base, gtr, sign(ec, good, "ES256"), {"sub_id": email("dee@interop.example")}) == 401

        verify = api(t.base, "GET", "/v1/audit/verify", t.admin)
        assert verify["ok"] is True, verify
    finally:
        jwks.close()
