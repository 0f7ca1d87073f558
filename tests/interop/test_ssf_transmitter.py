"""tether as an OpenID Shared Signals transmitter, checked by an independent SSF receiver.

The receiver here is built from libraries that know nothing of tether: authlib fetches the
OAuth access token (client_credentials, client_secret_basic), joserfc verifies every SET's RS256
signature with keys fetched from the advertised `jwks_uri`, and a standard-library http.server on
loopback is the RFC 8935 push endpoint. Everything is discovered from
`/.well-known/ssf-configuration`. It mirrors the OpenID conformance suite's SSF transmitter plan:
stream create/read/update/delete, verification, each kind of revocation, the SET profile (typ,
no sub/exp, sub_id, one event, txn), poll with ack and setErrs, pause and resume, and a signing
key rotated mid-stream.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jws
from joserfc.jwk import KeySet

from conftest import TETHER_BIN, Tether, api

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
ACCOUNT_DISABLED = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"
ACCOUNT_ENABLED = "https://schemas.openid.net/secevent/risc/event-type/account-enabled"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
STREAM_UPDATED = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated"
PUSH = "urn:ietf:rfc:8935"
POLL = "urn:ietf:rfc:8936"


class PushEndpoint:
    """An RFC 8935 push endpoint on loopback: keeps each SET (with its request headers), answers 202."""

    def __init__(self):
        self.received: list[tuple[dict, str]] = []
        self.lock = threading.Lock()
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the standard library's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                with endpoint.lock:
                    endpoint.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ssf/events"

    def wait_for(self, n: int, timeout: float = 10.0) -> list[tuple[dict, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= n:
                    return list(self.received)
            time.sleep(0.02)
        with self.lock:
            return list(self.received)

    def stop(self):
        self.server.shutdown()


class Receiver:
    """What a receiver learns and holds: the configuration, its token, the JWKS."""

    def __init__(self, base: str, client_id: str, client_secret: str):
        self.config = requests.get(base + "/.well-known/ssf-configuration", timeout=10).json()
        self.issuer = self.config["issuer"]
        self.client_id = client_id
        # The SSF configuration names OAuth (RFC 6749) as the scheme; the token endpoint comes
        # from the RFC 8414 metadata of the same issuer.
        metadata = requests.get(base + "/.well-known/oauth-authorization-server", timeout=10).json()
        assert metadata["issuer"] == self.issuer
        token_endpoint = metadata["token_endpoint"]
        self.oauth = OAuth2Session(client_id, client_secret, token_endpoint_auth_method="client_secret_basic",
                                   scope="ssf.manage ssf.read")
        token = self.oauth.fetch_token(token_endpoint, grant_type="client_credentials")
        assert token["token_type"] == "Bearer" and set(token["scope"].split()) == {"ssf.manage", "ssf.read"}
        self.keys = self.fetch_keys()

    def fetch_keys(self) -> KeySet:
        return KeySet.import_key_set(requests.get(self.config["jwks_uri"], timeout=10).json())

    def call(self, method: str, url: str, body=None, expect: int = 200):
        answer = self.oauth.request(method, url, json=body, timeout=20)
        assert answer.status_code == expect, f"{method} {url}: {answer.status_code} {answer.text}"
        return answer.json() if answer.content else None

    def verify(self, token: str, aud: str) -> tuple[dict, dict]:
        """Verifies a SET's signature (refetching the JWKS for a kid it has not seen) and its profile."""
        try:
            obj = jws.deserialize_compact(token, self.keys, algorithms=["RS256"])
        except Exception:  # a kid our copy lacks: the key was rotated, so fetch the JWKS again
            self.keys = self.fetch_keys()
            obj = jws.deserialize_compact(token, self.keys, algorithms=["RS256"])
        header = obj.protected
        claims = json.loads(obj.payload)
        assert header["typ"] == "secevent+jwt", header
        assert header["alg"] == "RS256" and header["kid"], header
        assert claims["iss"] == self.issuer
        assert claims["aud"] == aud
        assert "sub" not in claims and "exp" not in claims, claims
        assert isinstance(claims["iat"], int) and claims["jti"] and claims["txn"], claims
        assert isinstance(claims["sub_id"], dict) and claims["sub_id"]["format"], claims
        assert len(claims["events"]) == 1, claims
        return header, claims


def event_of(claims: dict) -> str:
    return next(iter(claims["events"]))


@pytest.fixture
def tether_ssf(tmp_path):
    server = Tether(tmp_path / "data", ("--webhooks-allow-private",))
    try:
        yield server, tmp_path / "data"
    finally:
        server.stop()


def test_an_independent_ssf_receiver_gets_verified_sets_for_every_kind_of_revocation(tether_ssf):
    tether, data_dir = tether_ssf
    base, admin = tether.base, tether.admin
    minted = api(base, "POST", "/v1/credentials", admin, {"role": "receiver", "label": "interop receiver"})
    rx = Receiver(base, minted["id"], minted["credential"])
    c = rx.config
    assert c["spec_version"] == "1_0"
    assert set(c["delivery_methods_supported"]) == {PUSH, POLL}
    assert {"spec_urn": "urn:ietf:rfc:6749"} in c["authorization_schemes"]
    for member in ("configuration_endpoint", "status_endpoint", "add_subject_endpoint",
                   "remove_subject_endpoint", "verification_endpoint"):
        assert c[member].startswith(rx.issuer), member

    push = PushEndpoint()
    try:
        # Streams: a push stream to our loopback endpoint, and a poll stream.
        pushed = rx.call("POST", c["configuration_endpoint"], {
            "events_requested": [SESSION_REVOKED, ACCOUNT_DISABLED, ACCOUNT_ENABLED],
            "delivery": {"method": PUSH, "endpoint_url": push.url, "authorization_header": "Bearer rx-secret"},
            "description": "interop push",
        }, expect=201)
        polled = rx.call("POST", c["configuration_endpoint"], {"description": "interop poll"}, expect=201)
        assert polled["delivery"]["method"] == POLL
        aud = pushed["aud"]
        assert rx.call("GET", c["configuration_endpoint"] + "?stream_id=" + pushed["stream_id"])["stream_id"] \
            == pushed["stream_id"]
        assert len(rx.call("GET", c["configuration_endpoint"])) == 2
        patched = rx.call("PATCH", c["configuration_endpoint"], {"stream_id": polled["stream_id"], "description": "p"})
        assert patched["description"] == "p" and patched["events_requested"] == polled["events_requested"]
        poll_url = polled["delivery"]["endpoint_url"]

        def poll(ack=(), errs=None, max_events=100):
            body = {"maxEvents": max_events, "returnImmediately": True, "ack": list(ack)}
            if errs:
                body["setErrs"] = errs
            answer = rx.call("POST", poll_url, body)
            return {jti: rx.verify(token, aud)[1] for jti, token in answer["sets"].items()}, answer["moreAvailable"]

        # Verification, both streams.
        assert rx.call("POST", c["verification_endpoint"], {"stream_id": pushed["stream_id"], "state": "s-push"},
                       expect=204) is None
        rx.call("POST", c["verification_endpoint"], {"stream_id": polled["stream_id"], "state": "s-poll"}, expect=204)
        headers, token = push.wait_for(1)[0]
        assert headers["content-type"] == "application/secevent+jwt"
        assert headers["authorization"] == "Bearer rx-secret"
        _, claims = rx.verify(token, aud)
        assert claims["events"] == {VERIFICATION: {"state": "s-push"}}
        assert claims["sub_id"] == {"format": "opaque", "id": pushed["stream_id"]}
        sets, _ = poll()
        (jti, claims), = sets.items()
        assert claims["events"] == {VERIFICATION: {"state": "s-poll"}}
        poll(ack=[jti])

        # The world: a platform, its agent and integration, two users with two sessions each.
        platform = api(base, "POST", "/v1/platforms", admin, {"name": "interop"})
        pcred = api(base, "POST", "/v1/credentials", admin, {"role": "platform", "platform_id": platform["id"]})["credential"]
        agent = api(base, "POST", "/v1/agents", pcred, {"name": "a", "scopes": ["mail:read"]})["id"]
        integration = api(base, "POST", "/v1/integrations", pcred, {"name": "i", "scopes": ["mail:read"]})["id"]
        users, sessions = [], {}
        for i in range(2):
            user = api(base, "POST", "/v1/users", admin, {"external_id": f"idp|ssf-{i}", "permissions": ["mail:read"]})["id"]
            d = api(base, "POST", "/v1/delegations", pcred,
                    {"user_id": user, "agent_id": agent, "integration_id": integration, "scopes": ["mail:read"]})["id"]
            sessions[user] = [api(base, "POST", "/v1/sessions", pcred, {"delegation_id": d, "scopes": ["mail:read"]})
                              ["session"]["id"] for _ in range(2)]
            users.append(user)
            sessions.setdefault("delegation:" + user, d)

        pushed_so_far = 1

        def pushed_sets(n_new: int) -> list[dict]:
            nonlocal pushed_so_far
            got = push.wait_for(pushed_so_far + n_new)
            assert len(got) == pushed_so_far + n_new, f"expected {n_new} new SETs, got {len(got) - pushed_so_far}"
            new = [rx.verify(token, aud)[1] for _, token in got[pushed_so_far:]]
            pushed_so_far += n_new
            return new

        # 1. One session revoked: one SET naming the session.
        s = sessions[users[0]][0]
        api(base, "POST", f"/v1/sessions/{s}/revoke", pcred, {})
        (one,) = pushed_sets(1)
        assert event_of(one) == SESSION_REVOKED
        assert one["sub_id"]["format"] == "complex" and one["sub_id"]["session"] == {"format": "opaque", "id": s}
        assert one["sub_id"]["user"] == {"format": "iss_sub", "iss": rx.issuer, "sub": users[0]}
        assert one["events"][SESSION_REVOKED]["reason_admin"]["en"]

        # 2. A password reset: one SET about the user, whatever the number of sessions.
        api(base, "POST", f"/v1/users/{users[1]}/lifecycle-events", admin, {"type": "password_reset"})
        (reset,) = pushed_sets(1)
        assert reset["sub_id"] == {"format": "complex", "user": {"format": "iss_sub", "iss": rx.issuer, "sub": users[1]}}

        # 3. Pause: nothing arrives; resume: what was held arrives in order.
        rx.call("POST", c["status_endpoint"], {"stream_id": pushed["stream_id"], "status": "paused"})
        assert rx.call("GET", c["status_endpoint"] + "?stream_id=" + pushed["stream_id"])["status"] == "paused"
        held = []
        for user in users:
            d = sessions["delegation:" + user]
            for _ in range(2):
                held.append(api(base, "POST", "/v1/sessions", pcred, {"delegation_id": d, "scopes": ["mail:read"]})
                            ["session"]["id"])
        for s in held[:2]:
            api(base, "POST", f"/v1/sessions/{s}/revoke", pcred, {})
        time.sleep(0.5)
        assert len(push.received) == pushed_so_far, "nothing is pushed while paused"

        # 4. The signing key rotated mid-stream (by the CLI beside the running instance).
        subprocess.run([str(TETHER_BIN), "keys", "rotate", "--purpose", "sets", "--data-dir", str(data_dir)],
                       check=True, capture_output=True, timeout=30)
        time.sleep(1.5)
        rx.call("POST", c["status_endpoint"], {"stream_id": pushed["stream_id"], "status": "enabled"})
        # Held in order: the stream-updated of the pause, the two revocations; then the resume's.
        replay = pushed_sets(4)
        assert [event_of(r) for r in replay] == [STREAM_UPDATED, SESSION_REVOKED, SESSION_REVOKED, STREAM_UPDATED]
        assert replay[0]["events"][STREAM_UPDATED]["status"] == "paused"
        assert replay[3]["events"][STREAM_UPDATED]["status"] == "enabled"
        assert [r["sub_id"]["session"]["id"] for r in replay[1:3]] == held[:2], "held SETs replayed in order"
        kids = {jws.extract_compact(t.encode()).protected["kid"] for _, t in push.received}
        assert len(kids) == 2, f"SETs before and after the rotation name two keys: {kids}"

        # 5. An integration disabled: one SET per user, with the application member.
        api(base, "POST", f"/v1/integrations/{integration}/disable", pcred, {})
        per_user = pushed_sets(2)
        assert sorted(r["sub_id"]["user"]["sub"] for r in per_user) == sorted(users)
        assert all(r["sub_id"]["application"] == {"format": "opaque", "id": integration} for r in per_user)
        assert len({r["txn"] for r in per_user}) == 1, "one txn per trigger"

        # 6. A user disabled and enabled: RISC account-disabled, account-enabled.
        api(base, "POST", f"/v1/users/{users[0]}/disable", admin, {})
        api(base, "POST", f"/v1/users/{users[0]}/enable", admin, {})
        account = pushed_sets(2)
        assert [event_of(a) for a in account] == [ACCOUNT_DISABLED, ACCOUNT_ENABLED]
        assert account[0]["sub_id"] == {"format": "iss_sub", "iss": rx.issuer, "sub": users[0]}

        # Poll mode saw the same revocations: ack some, refuse one with setErrs, both stay answered.
        sets, more = poll(max_events=3)
        assert more and len(sets) == 3
        everything, _ = poll(max_events=1000)
        kinds = [event_of(cl) for cl in everything.values()]
        assert kinds.count(SESSION_REVOKED) >= 5 and ACCOUNT_DISABLED in kinds and ACCOUNT_ENABLED in kinds
        jtis = sorted(everything)
        refused = jtis[0]
        poll(ack=jtis[1:], errs={refused: {"err": "invalid_request", "description": "interop refusal"}})
        left, more = poll()
        assert left == {} and not more, "acked and refused SETs are not answered again"
        # An ack of a jti this stream never had is ignored, not an error.
        poll(ack=["0" * 32])

        # Delete the streams: 204, then gone.
        rx.call("DELETE", c["configuration_endpoint"] + "?stream_id=" + polled["stream_id"], expect=204)
        answer = rx.oauth.request("GET", c["configuration_endpoint"] + "?stream_id=" + polled["stream_id"], timeout=10)
        assert answer.status_code == 404
    finally:
        push.stop()
