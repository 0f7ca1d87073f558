"""Interop: authlib, an OAuth library no one here wrote, uses tether unadapted.

- Discovery: authlib's RFC 8414 metadata validators accept tether's authorization-server
  metadata, and a 401's `WWW-Authenticate` leads to the RFC 9728 protected-resource metadata.
- A resource server: authlib's `ResourceProtector` with an `IntrospectTokenValidator` (the code
  authlib's documentation shows, authenticating with `client_secret_basic`) accepts a live agent
  token for its scope, refuses another scope, and refuses the token once revoked.
- A client: authlib's `OAuth2Session` introspects with `client_secret_post` and revokes with
  `client_secret_basic`, as RFC 7662 and RFC 7009 clients do.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc6749 import ResourceProtector
from authlib.oauth2.rfc6750.errors import InsufficientScopeError, InvalidTokenError
from authlib.oauth2.rfc6749.requests import JsonRequest
from authlib.oauth2.rfc7662 import IntrospectTokenValidator
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from conftest import api


def discover(base: str) -> dict:
    return requests.get(base + "/.well-known/oauth-authorization-server", timeout=10).json()


def a_session(t, admin: str) -> tuple[str, str, str]:
    """A user's session on a mail integration: (session id, token, platform credential)."""
    user = api(t.base, "POST", "/v1/users", admin, {"external_id": "idp|ada", "permissions": ["mail:read"]})
    platform = api(t.base, "POST", "/v1/platforms", admin, {"name": "Acme"})
    platform_cred = api(t.base, "POST", "/v1/credentials", admin,
                        {"role": "platform", "platform_id": platform["id"]})["credential"]
    agent = api(t.base, "POST", "/v1/agents", platform_cred, {"name": "assistant", "scopes": ["mail:read"]})
    integration = api(t.base, "POST", "/v1/integrations", platform_cred, {"name": "mail", "scopes": ["mail:read"]})
    delegation = api(t.base, "POST", "/v1/delegations", platform_cred,
                     {"user_id": user["id"], "agent_id": agent["id"], "integration_id": integration["id"],
                      "scopes": ["mail:read"]})
    opened = api(t.base, "POST", "/v1/sessions", platform_cred, {"delegation_id": delegation["id"], "scopes": ["mail:read"]})
    return opened["session"]["id"], opened["token"], platform_cred


def a_client(t, admin: str, role: str) -> tuple[str, str]:
    created = api(t.base, "POST", "/v1/credentials", admin, {"role": role, "label": f"{role} client"})
    return created["id"], created["credential"]


def test_authlib_validates_the_authorization_server_metadata(tether):
    metadata = AuthorizationServerMetadata(discover(tether.base))
    assert metadata["issuer"] == tether.base
    for key in AuthorizationServerMetadata.REGISTRY_KEYS:
        if key == "response_types_supported":
            continue
        getattr(metadata, f"validate_{key}")()
    # The one departure (docs/api.md, "Discovery"): tether has no authorization endpoint, so it
    # supports no response type, and authlib's validator wants a non-empty list.
    assert metadata["response_types_supported"] == []
    with pytest.raises(ValueError, match="response_types_supported"):
        metadata.validate_response_types_supported()
    assert metadata["grant_types_supported"] == ["client_credentials"]
    assert "client_secret_basic" in metadata["introspection_endpoint_auth_methods_supported"]
    assert "client_secret_post" in metadata["revocation_endpoint_auth_methods_supported"]


def test_a_401_leads_to_the_protected_resource_metadata(tether):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(tether.base + "/v1/users", timeout=10)
    assert refused.value.code == 401
    challenge = refused.value.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    url = challenge.split('resource_metadata="', 1)[1].split('"', 1)[0]
    resource = requests.get(url, timeout=10).json()
    assert resource["resource"] == tether.base
    assert resource["authorization_servers"] == [tether.base]
    server = requests.get(resource["authorization_servers"][0] + "/.well-known/oauth-authorization-server", timeout=10)
    assert server.json()["issuer"] == tether.base


class TetherIntrospection(IntrospectTokenValidator):
    """As authlib's documentation writes it: POST the token to the introspection endpoint with the
    resource server's client credentials."""

    def __init__(self, endpoint: str, client_id: str, client_secret: str):
        super().__init__()
        self.endpoint, self.auth = endpoint, (client_id, client_secret)

    def introspect_token(self, token_string):
        answer = requests.post(self.endpoint, data={"token": token_string, "token_type_hint": "access_token"},
                               auth=self.auth, timeout=10)
        answer.raise_for_status()
        return answer.json()


def test_authlibs_resource_protector_accepts_a_live_token_and_refuses_it_once_revoked(tether):
    t, admin = tether, tether.admin
    _, token, _ = a_session(t, admin)
    verifier_id, verifier_secret = a_client(t, admin, "verifier")
    metadata = discover(t.base)
    protector = ResourceProtector()
    protector.register_token_validator(
        TetherIntrospection(metadata["introspection_endpoint"], verifier_id, verifier_secret))

    def request() -> JsonRequest:
        return JsonRequest("GET", "https://mail.example/inbox", {"Authorization": f"Bearer {token}"})

    claims = protector.validate_request(["mail:read"], request())
    assert claims["active"] is True and claims["scope"] == "mail:read"
    with pytest.raises(InsufficientScopeError):
        protector.validate_request(["mail:send"], request())

    # Revoked through authlib's own RFC 7009 client, with client_secret_basic.
    revoker = OAuth2Session(verifier_id, verifier_secret, revocation_endpoint_auth_method="client_secret_basic")
    answer = revoker.revoke_token(metadata["revocation_endpoint"], token=token, token_type_hint="access_token")
    assert answer.status_code == 200, answer.text
    with pytest.raises(InvalidTokenError):
        protector.validate_request(["mail:read"], request())


def test_authlibs_client_introspects_with_client_secret_post_and_a_wrong_secret_is_invalid_client(tether):
    t, admin = tether, tether.admin
    session, token, _ = a_session(t, admin)
    verifier_id, verifier_secret = a_client(t, admin, "verifier")
    endpoint = discover(t.base)["introspection_endpoint"]

    client = OAuth2Session(verifier_id, verifier_secret, token_endpoint_auth_method="client_secret_post")
    answer = client.introspect_token(endpoint, token=token, token_type_hint="access_token")
    assert answer.status_code == 200, answer.text
    assert answer.json()["sid"] == session

    impostor = OAuth2Session(verifier_id, "not-the-secret", token_endpoint_auth_method="client_secret_basic")
    refused = impostor.introspect_token(endpoint, token=token)
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"
    assert refused.headers["WWW-Authenticate"].startswith("Basic")


def test_authlibs_client_gets_a_token_by_client_credentials_from_the_advertised_endpoint(tether):
    t, admin = tether, tether.admin
    receiver_id, receiver_secret = a_client(t, admin, "receiver")
    metadata = discover(t.base)
    for method in ("client_secret_basic", "client_secret_post"):
        client = OAuth2Session(receiver_id, receiver_secret, scope="ssf.read", token_endpoint_auth_method=method)
        token = client.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")
        assert token["token_type"].lower() == "bearer" and token["scope"] == "ssf.read", token
        streams = requests.get(t.base + "/ssf/streams", headers={"Authorization": f"Bearer {token['access_token']}"},
                               timeout=10)
        assert streams.status_code == 200, streams.text
