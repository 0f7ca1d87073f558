//! A source's signing keys: a JWKS given inline or fetched from its `jwks_uri`, cached per source
//! and fetched again at most once per [`REFETCH_INTERVAL`] when a SET names an unknown `kid`.
//!
//! Only asymmetric keys are kept (RSA of at least 2048 bits, EC P-256/P-384, OKP Ed25519): a
//! symmetric key in a source's JWKS could otherwise verify an HMAC-signed SET made by anyone who
//! read the (public) JWKS. Fetches go through the webhook client's resolver, which drops private,
//! loopback and link-local addresses unless the operator allows them, with a timeout and a size cap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::domain::SignalSourceId;
use crate::events::destinations::{is_public, Resolver};

/// Largest JWKS document read from a `jwks_uri` (or accepted inline).
pub const MAX_JWKS_BYTES: usize = 64 * 1024;
/// Most keys kept from one JWKS.
pub const MAX_KEYS: usize = 32;
/// How long a fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A SET naming a `kid` the cached keys lack fetches the JWKS again, at most this often per source,
/// so a stream of SETs with made-up `kid`s cannot turn tether into a load generator.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Fetched keys are used this long before they are fetched again (rotation without a new `kid`).
pub const MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// One verification key.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    /// The JWK's `alg`, when it names one: the key is then used for that algorithm only.
    pub alg: Option<Algorithm>,
    /// The algorithms this key can verify.
    pub kind: KeyKind,
    pub decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).field("alg", &self.alg).field("kind", &self.kind).finish()
    }
}

/// What a key is, which decides the algorithms it verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    /// Whether a SET signed with `alg` may be verified with a key of this kind.
    pub fn verifies(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::P256 => alg == ES256,
            KeyKind::P384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }
}

/// The usable keys of one JWKS.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

impl KeySet {
    /// The keys that may verify a SET with this header: by `kid` when it names one, else every
    /// key of a kind that verifies `alg`.
    pub fn candidates<'a>(&'a self, kid: Option<&'a str>, alg: Algorithm) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys.iter().filter(move |k| {
            kid.is_none_or(|kid| k.kid.as_deref() == Some(kid))
                && k.kind.verifies(alg)
                && k.alg.is_none_or(|a| a == alg)
        })
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

fn b64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

fn str_member<'a>(jwk: &'a Value, name: &str) -> Option<&'a str> {
    jwk.get(name).and_then(Value::as_str)
}

/// The algorithm a JOSE `alg` names, among the asymmetric ones tether accepts.
pub fn asymmetric_algorithm(alg: &str) -> Option<Algorithm> {
    Some(match alg {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// One JWK as a key, or why it cannot be one.
fn key(jwk: &Value) -> Result<Key, String> {
    let kid = str_member(jwk, "kid").map(str::to_owned);
    let alg = match str_member(jwk, "alg") {
        None => None,
        Some(a) => Some(asymmetric_algorithm(a).ok_or_else(|| format!("`alg` {a:?} is not an asymmetric algorithm"))?),
    };
    if str_member(jwk, "use").is_some_and(|u| u != "sig") {
        return Err("`use` is not `sig`".into());
    }
    let bad = |what: &str| format!("malformed {what}");
    let (kind, decoding) = match str_member(jwk, "kty") {
        Some("RSA") => {
            let (n, e) =
                (str_member(jwk, "n").ok_or_else(|| bad("`n`"))?, str_member(jwk, "e").ok_or_else(|| bad("`e`"))?);
            let modulus = b64(n).ok_or_else(|| bad("`n`"))?;
            let significant = modulus.iter().skip_while(|b| **b == 0).count();
            // The interop profile asks for at least 2048 bits; smaller RSA keys are forgeable.
            if significant < 256 {
                return Err("RSA keys must have at least 2048 bits".into());
            }
            b64(e).ok_or_else(|| bad("`e`"))?;
            (KeyKind::Rsa, DecodingKey::from_rsa_components(n, e).map_err(|_| bad("RSA key"))?)
        }
        Some("EC") => {
            let kind = match str_member(jwk, "crv") {
                Some("P-256") => KeyKind::P256,
                Some("P-384") => KeyKind::P384,
                other => return Err(format!("EC curve {other:?} is not supported (P-256, P-384)")),
            };
            let (x, y) =
                (str_member(jwk, "x").ok_or_else(|| bad("`x`"))?, str_member(jwk, "y").ok_or_else(|| bad("`y`"))?);
            let width = if kind == KeyKind::P256 { 32 } else { 48 };
            if b64(x).map(|v| v.len()) != Some(width) || b64(y).map(|v| v.len()) != Some(width) {
                return Err(bad("EC point"));
            }
            (kind, DecodingKey::from_ec_components(x, y).map_err(|_| bad("EC key"))?)
        }
        Some("OKP") => {
            if str_member(jwk, "crv") != Some("Ed25519") {
                return Err("OKP keys must be Ed25519".into());
            }
            let x = str_member(jwk, "x").ok_or_else(|| bad("`x`"))?;
            if b64(x).map(|v| v.len()) != Some(32) {
                return Err(bad("`x`"));
            }
            (KeyKind::Ed25519, DecodingKey::from_ed_components(x).map_err(|_| bad("Ed25519 key"))?)
        }
        Some("oct") => {
            return Err("symmetric (`oct`) keys are refused: SETs must be signed with an asymmetric key".into())
        }
        other => return Err(format!("key type {other:?} is not supported (RSA, EC, OKP)")),
    };
    if let Some(a) = alg {
        if !kind.verifies(a) {
            return Err(format!("`alg` {a:?} does not fit the key type"));
        }
    }
    Ok(Key { kid, alg, kind, decoding })
}

/// Parses a JWKS. `strict` (a JWKS an admin gives inline) refuses any key it cannot use;
/// otherwise (a fetched JWKS, which may list keys for other uses) such keys are skipped. Either
/// way at least one usable key is required.
pub fn parse_jwks(jwks: &Value, strict: bool) -> Result<KeySet, String> {
    let keys = jwks.get("keys").and_then(Value::as_array).ok_or("a JWKS is an object with a `keys` array")?;
    if keys.len() > MAX_KEYS {
        return Err(format!("a JWKS may hold at most {MAX_KEYS} keys"));
    }
    let mut usable = Vec::new();
    for (i, jwk) in keys.iter().enumerate() {
        match key(jwk) {
            Ok(k) => usable.push(k),
            Err(why) if strict => return Err(format!("key {i}: {why}")),
            Err(_) => {}
        }
    }
    if usable.is_empty() {
        return Err("the JWKS holds no usable signing key (RSA ≥ 2048 bits, EC P-256/P-384, Ed25519)".into());
    }
    Ok(KeySet { keys: usable })
}

type HttpClient = Client<HttpConnector<Resolver>, Empty<Bytes>>;

/// Why a `jwks_uri` is refused at registration, if it is: not an absolute `http://` URL (this
/// build has no TLS client), or a literal private address or `localhost` when those are not
/// allowed. Names are checked again, resolved, at each fetch.
pub fn refused_uri(uri: &str, allow_private: bool) -> Option<String> {
    let parsed: hyper::Uri = match uri.parse() {
        Ok(u) => u,
        Err(_) => return Some("`jwks_uri` is not a valid URL".into()),
    };
    match parsed.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Some(
                "`jwks_uri`: https is not supported by this build (no TLS client); give the keys inline as `jwks`"
                    .into(),
            )
        }
        _ => return Some("`jwks_uri` must be an absolute http:// URL".into()),
    }
    let host = parsed.host()?.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
    let private = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => !is_public(ip),
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    };
    (private && !allow_private).then(|| {
        format!("`jwks_uri`: {host} is a private, loopback or link-local address (an operator can allow private ones with --webhooks-allow-private)")
    })
}

/// Where a source's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    Inline(Value),
    Uri(String),
}

#[derive(Clone, Default)]
struct Entry {
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// The keys of every source, by source id.
pub struct KeyCache {
    client: HttpClient,
    allow_private: bool,
    entries: Mutex<HashMap<SignalSourceId, Entry>>,
    /// One fetch at a time: fetches are rare (a new source, a rotation), and this keeps a burst
    /// of SETs from a new source from fetching its JWKS once each.
    fetching: tokio::sync::Mutex<()>,
}

impl KeyCache {
    pub fn new(allow_private: bool) -> KeyCache {
        let connector = HttpConnector::new_with_resolver(Resolver { allow_private });
        KeyCache {
            client: Client::builder(TokioExecutor::new()).build(connector),
            allow_private,
            entries: Mutex::default(),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, source: SignalSourceId) -> Entry {
        let entries = self.entries.lock();
        entries.ok().and_then(|e| e.get(&source).cloned()).unwrap_or_default()
    }

    /// The keys of a source, for a SET whose header names `kid` (if any). Inline keys are parsed
    /// once; fetched keys are fetched when absent, older than [`MAX_AGE`], or lacking `kid` (at
    /// most once per [`REFETCH_INTERVAL`] each). Errors describe the failure for the transmitter.
    pub async fn keys(
        &self,
        source: SignalSourceId,
        from: &KeySource,
        kid: Option<&str>,
    ) -> Result<Arc<KeySet>, String> {
        let Entry { keys, fetched_at, last_attempt } = self.cached(source);
        let uri = match from {
            KeySource::Inline(jwks) => {
                if let Some(keys) = keys {
                    return Ok(keys);
                }
                let keys = Arc::new(parse_jwks(jwks, false)?);
                self.store(source, Some(keys.clone()), None);
                return Ok(keys);
            }
            KeySource::Uri(uri) => uri,
        };
        let fresh = fetched_at.is_some_and(|t| t.elapsed() < MAX_AGE);
        let has_kid = match (&keys, kid) {
            (Some(k), Some(kid)) => k.has_kid(kid),
            (Some(_), None) => true,
            (None, _) => false,
        };
        let may_fetch = last_attempt.is_none_or(|t| t.elapsed() >= REFETCH_INTERVAL);
        if (fresh && has_kid) || !may_fetch {
            return keys.ok_or_else(|| "the source's JWKS could not be fetched; retry later".to_owned());
        }
        let _one_at_a_time = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if let Entry { keys: Some(k), last_attempt: Some(t), .. } = self.cached(source) {
            if t.elapsed() < REFETCH_INTERVAL && kid.is_none_or(|kid| k.has_kid(kid)) {
                return Ok(k);
            }
        }
        self.mark_attempt(source);
        match self.fetch(uri).await {
            Ok(fetched) => {
                let fetched = Arc::new(fetched);
                self.store(source, Some(fetched.clone()), Some(Instant::now()));
                Ok(fetched)
            }
            Err(why) => {
                tracing::warn!(source = %source, error = %why, "fetching a signal source's JWKS failed");
                // Keys fetched before still verify SETs signed with them.
                keys.ok_or(why)
            }
        }
    }

    fn store(&self, source: SignalSourceId, keys: Option<Arc<KeySet>>, fetched_at: Option<Instant>) {
        if let Ok(mut entries) = self.entries.lock() {
            let entry = entries.entry(source).or_default();
            entry.keys = keys;
            if fetched_at.is_some() {
                entry.fetched_at = fetched_at;
            }
        }
    }

    fn mark_attempt(&self, source: SignalSourceId) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.entry(source).or_default().last_attempt = Some(Instant::now());
        }
    }

    /// Forgets a source's keys (it was disabled).
    pub fn forget(&self, source: SignalSourceId) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(&source);
        }
    }

    async fn fetch(&self, uri: &str) -> Result<KeySet, String> {
        if let Some(why) = refused_uri(uri, self.allow_private) {
            return Err(why);
        }
        let request = hyper::Request::get(uri)
            .header("accept", "application/jwk-set+json, application/json")
            .header("user-agent", "tether-signals")
            .body(Empty::new())
            .map_err(|e| format!("bad jwks_uri: {e}"))?;
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, async {
            let response = self.client.request(request).await.map_err(|e| format!("fetching the JWKS: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("the jwks_uri answered {}", response.status().as_u16()));
            }
            Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|_| format!("the JWKS is larger than {MAX_JWKS_BYTES} bytes or was cut short"))
        })
        .await
        .map_err(|_| "fetching the JWKS timed out".to_owned())??;
        let jwks: Value =
            serde_json::from_slice(&fetched).map_err(|_| "the jwks_uri did not answer JSON".to_owned())?;
        parse_jwks(&jwks, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn okp(x: &str) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1"})
    }

    #[test]
    fn symmetric_small_rsa_and_unknown_keys_are_refused_inline_and_skipped_when_fetched() {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]);
        let small_rsa = json!({"kty": "RSA", "n": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xc5u8; 128]), "e": "AQAB"});
        let oct = json!({"kty": "oct", "k": "c2VjcmV0"});
        for bad in [oct.clone(), small_rsa.clone(), json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"})] {
            let jwks = json!({"keys": [okp(&x), bad]});
            assert!(parse_jwks(&jwks, true).is_err(), "{jwks}");
            assert_eq!(parse_jwks(&jwks, false).expect("skipped").keys.len(), 1);
        }
        assert!(parse_jwks(&json!({"keys": [oct]}), false).is_err(), "no usable key left");
        assert!(parse_jwks(&json!({"keys": "no"}), false).is_err());
    }

    #[test]
    fn a_key_verifies_only_the_algorithms_of_its_kind_and_its_own_alg() {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]);
        let set = parse_jwks(&json!({"keys": [okp(&x)]}), true).expect("jwks");
        assert_eq!(set.candidates(Some("k1"), Algorithm::EdDSA).count(), 1);
        assert_eq!(set.candidates(None, Algorithm::EdDSA).count(), 1);
        assert_eq!(set.candidates(Some("k2"), Algorithm::EdDSA).count(), 0);
        assert_eq!(set.candidates(Some("k1"), Algorithm::RS256).count(), 0);
        assert_eq!(set.candidates(Some("k1"), Algorithm::HS256).count(), 0);
        let mut pinned = okp(&x);
        pinned["alg"] = json!("RS256");
        assert!(parse_jwks(&json!({"keys": [pinned]}), true).is_err(), "alg must fit the key type");
    }

    #[test]
    fn jwks_uris_are_http_and_public_unless_private_addresses_are_allowed() {
        assert!(refused_uri("http://idp.example.com/jwks", false).is_none());
        assert!(refused_uri("https://idp.example.com/jwks", false).is_some());
        assert!(refused_uri("http://127.0.0.1:8080/jwks", false).is_some());
        assert!(refused_uri("http://localhost/jwks", false).is_some());
        assert!(refused_uri("http://127.0.0.1:8080/jwks", true).is_none());
        assert!(refused_uri("ftp://idp.example.com/jwks", true).is_some());
    }
}
