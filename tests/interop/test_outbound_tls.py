"""Interop: tether's outbound https, against servers Python's own TLS stack runs.

A test CA (made with `cryptography`) signs a certificate for 127.0.0.1. Python's `ssl` serves a
JWKS and a webhook receiver with it. A tether started with `--tls-ca-file <the CA>` fetches the
JWKS over https to verify a pushed SET and delivers a webhook over https; a tether without it
refuses the same certificate, so the push fails with RFC 8935's `invalid_key` and no webhook
arrives. That is rustls verifying, not a plain-text fallback.
"""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import RSAKey

from conftest import Tether, api

ISSUER = "https://idp.tls.example"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"


def certificate_authority(tmp_path):
    """(CA PEM path, server cert PEM path, server key PEM path), the server's for 127.0.0.1."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tether interop CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class HttpsServer:
    """An https server on 127.0.0.1 that answers GET with `document` and records POST bodies."""

    def __init__(self, cert, key, document: dict):
        self.posts: list[bytes] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                outer.posts.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()


def push(base: str, path: str, authorization: str, body: str) -> tuple[int, dict | None]:
    headers = {"Content-Type": "application/secevent+jwt", "Accept": "application/json",
               "Authorization": authorization}
    request = urllib.request.Request(base + path, data=body.encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, (json.loads(raw) if raw else None)


def verification_set(key: RSAKey) -> str:
    claims = {"iss": ISSUER, "iat": int(time.time()), "jti": str(uuid.uuid4()),
              "sub_id": {"format": "opaque", "id": "stream-1"}, "events": {VERIFICATION: {"state": "s"}}}
    return jwt.encode({"alg": "RS256", "typ": "secevent+jwt", "kid": key.kid}, claims, key)


def pushed_through(t: Tether, jwks_url: str, key: RSAKey) -> tuple[int, dict | None]:
    source = api(t.base, "POST", "/v1/signal-sources", t.admin, {"issuer": ISSUER, "jwks_uri": jwks_url})
    return push(t.base, source["push_url"].removeprefix(t.base), source["push_authorization"], verification_set(key))


def webhook_arrives(t: Tether, receiver: HttpsServer, within: float = 8.0) -> bool:
    api(t.base, "POST", "/v1/webhooks", t.admin, {"url": receiver.url + "/hook", "events": ["platform.created"]})
    api(t.base, "POST", "/v1/platforms", t.admin, {"name": "over tls"})
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and not receiver.posts:
        time.sleep(0.1)
    return bool(receiver.posts)


@pytest.fixture
def tls(tmp_path):
    ca, cert, key = certificate_authority(tmp_path)
    signing = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig", "alg": "RS256"})
    jwks = HttpsServer(cert, key, {"keys": [signing.as_dict(private=False)]})
    hooks = HttpsServer(cert, key, {})
    try:
        yield ca, signing, jwks, hooks
    finally:
        jwks.close()
        hooks.close()


def test_with_the_ca_trusted_tether_fetches_keys_and_delivers_webhooks_over_https(tmp_path, tls):
    ca, signing, jwks, hooks = tls
    t = Tether(tmp_path / "data", ("--webhooks-allow-private", "--tls-ca-file", str(ca)))
    try:
        status, body = pushed_through(t, jwks.url + "/jwks", signing)
        assert status == 202, body
        assert webhook_arrives(t, hooks), "the https webhook receiver got the delivery"
        delivered = json.loads(hooks.posts[0])
        assert delivered["type"] == "platform.created" or "platform.created" in json.dumps(delivered)
    finally:
        t.stop()


def test_without_the_ca_the_same_certificate_is_refused(tmp_path, tls):
    _, signing, jwks, hooks = tls
    t = Tether(tmp_path / "data", ("--webhooks-allow-private",))
    try:
        status, body = pushed_through(t, jwks.url + "/jwks", signing)
        assert (status, body and body["err"]) == (400, "invalid_key"), body
        assert not webhook_arrives(t, hooks, within=3.0), "no delivery over an untrusted certificate"
    finally:
        t.stop()
