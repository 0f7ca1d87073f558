//! Shared Signals transmitter (OpenID SSF 1.0, CAEP interoperability profile): event types,
//! SET claims and signing, the transmitter configuration, sealed push credentials, push delivery.

pub mod push;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use hmac::Mac;
use serde_json::{json, Value};

use crate::domain::{Error, PublicUrl, Result};
use crate::store::streams::QueuedSet;
use crate::tokens::SetKeyRing;

/// CAEP: the sessions named by the subject were revoked.
pub const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// RISC: the account was disabled.
pub const ACCOUNT_DISABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-disabled";
/// RISC: the account was enabled again.
pub const ACCOUNT_ENABLED: &str = "https://schemas.openid.net/secevent/risc/event-type/account-enabled";
/// SSF §8.1.4: the answer to a verification request.
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
/// SSF §8.1.5: the transmitter changed a stream's status.
pub const STREAM_UPDATED: &str = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated";

/// RFC 8935 push delivery.
pub const PUSH: &str = "urn:ietf:rfc:8935";
/// RFC 8936 poll delivery.
pub const POLL: &str = "urn:ietf:rfc:8936";

/// The JWS `typ` of a SET (SSF §4.1).
pub const SET_TYP: &str = "secevent+jwt";

/// What tether sends: a stream's `events_supported`. Verification and stream-updated are sent
/// whatever a stream asked for (SSF §8.1.4, §8.1.5).
pub const EVENTS_SUPPORTED: [&str; 3] = [SESSION_REVOKED, ACCOUNT_DISABLED, ACCOUNT_ENABLED];

/// Paths of the transmitter's endpoints (docs/api.md, "Shared Signals").
pub const JWKS_PATH: &str = "/ssf/jwks.json";
pub const STREAMS_PATH: &str = "/ssf/streams";
pub const STATUS_PATH: &str = "/ssf/status";
pub const ADD_SUBJECT_PATH: &str = "/ssf/subjects:add";
pub const REMOVE_SUBJECT_PATH: &str = "/ssf/subjects:remove";
pub const VERIFY_PATH: &str = "/ssf/verify";
pub const POLL_PATH: &str = "/ssf/poll";
pub const TOKEN_PATH: &str = "/oauth2/token";

/// `GET /.well-known/ssf-configuration` (SSF §7.1), every URL built from the public URL.
pub fn configuration(public_url: &PublicUrl) -> Value {
    json!({
        "issuer": public_url.as_str(),
        "spec_version": "1_0",
        "jwks_uri": public_url.join(JWKS_PATH),
        "delivery_methods_supported": [PUSH, POLL],
        "configuration_endpoint": public_url.join(STREAMS_PATH),
        "status_endpoint": public_url.join(STATUS_PATH),
        "add_subject_endpoint": public_url.join(ADD_SUBJECT_PATH),
        "remove_subject_endpoint": public_url.join(REMOVE_SUBJECT_PATH),
        "verification_endpoint": public_url.join(VERIFY_PATH),
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6749"}],
        "default_subjects": "ALL",
    })
}

/// Fills the issuer into every `iss_sub` subject that has none: the outbox stores subjects
/// without it, so a changed `--public-url` is what the next SET says.
fn fill_issuer(value: &mut Value, issuer: &str) {
    match value {
        Value::Object(map) => {
            if map.get("format").and_then(Value::as_str) == Some("iss_sub") && !map.contains_key("iss") {
                map.insert("iss".into(), Value::String(issuer.to_owned()));
            }
            for (_, v) in map.iter_mut() {
                fill_issuer(v, issuer);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| fill_issuer(v, issuer)),
        _ => {}
    }
}

/// A queued SET's claims (SSF §4): `iss`, `aud`, `iat`, `jti`, `txn`, `sub_id` and exactly one
/// event; never `sub` nor `exp`.
pub fn claims(issuer: &str, set: &QueuedSet) -> Value {
    let mut payload: Value = serde_json::from_str(&set.payload).unwrap_or_else(|_| json!({}));
    fill_issuer(&mut payload, issuer);
    json!({
        "iss": issuer,
        "aud": set.aud,
        "iat": set.iat.seconds(),
        "jti": set.jti,
        "txn": set.txn,
        "sub_id": payload.get("sub_id").cloned().unwrap_or(Value::Null),
        "events": payload.get("events").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Signs a queued SET with the newest active SET key.
pub fn sign(keys: &SetKeyRing, issuer: &str, set: &QueuedSet) -> Result<String> {
    keys.sign(SET_TYP, &claims(issuer, set))
}

/// The key sealing push `authorization_header`s: derived from the data directory's master key,
/// so the database alone does not reveal them.
#[allow(clippy::expect_used)]
fn sealing_key(master: &[u8; 32]) -> chacha20poly1305::Key {
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(master).expect("HMAC accepts any key length");
    mac.update(b"tether-ssf-authorization-header-v1");
    chacha20poly1305::Key::from(<[u8; 32]>::from(mac.finalize().into_bytes()))
}

/// Seals a push `authorization_header` for storage: ChaCha20-Poly1305, a random nonce, the
/// stream id as associated data (a sealed value moved to another stream does not open).
pub fn seal(master: &[u8; 32], stream_id: &str, secret: &str) -> Result<String> {
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(&sealing_key(master));
    let mut nonce = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let sealed = cipher
        .encrypt(&nonce.into(), Payload { msg: secret.as_bytes(), aad: stream_id.as_bytes() })
        .map_err(|_| Error::internal("sealing the authorization header failed"))?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(base64::engine::general_purpose::STANDARD.encode(out))
}

/// Opens a value [`seal`]ed for this stream.
pub fn unseal(master: &[u8; 32], stream_id: &str, sealed: &str) -> Result<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|_| Error::internal("stored authorization header is malformed"))?;
    if bytes.len() < 12 {
        return Err(Error::internal("stored authorization header is malformed"));
    }
    let (nonce, sealed) = bytes.split_at(12);
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(&sealing_key(master));
    let nonce = <[u8; 12]>::try_from(nonce).map_err(|_| Error::internal("stored authorization header is malformed"))?;
    let plain = cipher
        .decrypt(&nonce.into(), Payload { msg: sealed, aad: stream_id.as_bytes() })
        .map_err(|_| Error::internal("stored authorization header does not open with this data directory's key"))?;
    String::from_utf8(plain).map_err(|_| Error::internal("stored authorization header is not text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_header_opens_for_its_stream_only() {
        let master = [7u8; 32];
        let sealed = seal(&master, "sst_a", "Bearer s3cret").expect("seal");
        assert!(!sealed.contains("s3cret"));
        assert_eq!(unseal(&master, "sst_a", &sealed).expect("open"), "Bearer s3cret");
        assert!(unseal(&master, "sst_b", &sealed).is_err(), "moved to another stream");
        assert!(unseal(&[8u8; 32], "sst_a", &sealed).is_err(), "another data directory");
    }

    #[test]
    fn claims_fill_the_issuer_and_carry_neither_sub_nor_exp() {
        let set = QueuedSet {
            id: 1,
            stream_id: "sst_a".into(),
            jti: "j".into(),
            txn: "t".into(),
            payload: json!({"sub_id": {"format": "complex", "user": {"format": "iss_sub", "sub": "usr_1"}},
                            "events": {SESSION_REVOKED: {}}})
            .to_string(),
            iat: crate::domain::Timestamp(5_000),
            attempts: 0,
            aud: json!("https://rp.example"),
            endpoint_url: None,
            authorization_sealed: None,
        };
        let c = claims("https://tether.example", &set);
        assert_eq!(c["sub_id"]["user"]["iss"], "https://tether.example");
        assert_eq!((c["iat"].as_i64(), c["jti"].as_str(), c["txn"].as_str()), (Some(5), Some("j"), Some("t")));
        assert!(c.get("sub").is_none() && c.get("exp").is_none());
        assert_eq!(c["events"].as_object().map(|m| m.len()), Some(1));
    }
}
