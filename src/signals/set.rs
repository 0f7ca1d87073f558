//! A pushed Security Event Token, checked as RFC 8417 and SSF 1.0 §4 profile it: the JOSE header
//! (`typ` `secevent+jwt`, an asymmetric `alg`), the signature (a key of the source's JWKS), then
//! the claims (`iss`, `aud`, `iat` within [`SKEW_SECONDS`], `exp` if present, `jti`, exactly one
//! event, no `sub`). The signature is checked by `jsonwebtoken`; nothing here is hand-written
//! cryptography.

use base64::Engine;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::jwks::{asymmetric_algorithm, KeySet};
use super::{PushErrorCode, Rejection};

/// Largest SET accepted (the push endpoint's body limit).
pub const MAX_SET_BYTES: usize = 64 * 1024;
/// How far a SET's `iat` may be from tether's clock, either way.
pub const SKEW_SECONDS: i64 = 300;
/// Longest `jti` kept (it is stored to refuse replays).
pub const MAX_JTI_CHARS: usize = 256;

/// The parts of the JOSE header that decide how a SET is verified.
#[derive(Debug, Clone)]
pub struct Header {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// What the receiver expects of a source's SETs.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub audience: Option<&'a str>,
    /// tether's clock, in seconds.
    pub now: i64,
}

/// A SET whose signature, issuer, audience and times were checked.
#[derive(Debug, Clone)]
pub struct VerifiedSet {
    pub jti: String,
    pub iat: i64,
    /// The event type URI (the one member of `events`).
    pub event_type: String,
    /// The event's payload.
    pub event: Map<String, Value>,
    /// The subject: `sub_id`, or for CAEP SETs from before SSF 1.0 the event's `subject`.
    pub subject: Option<Value>,
    pub txn: Option<String>,
}

fn b64_json(part: &str) -> Option<Value> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Reads the header of a compact JWS: the algorithm and key id, refusing what SETs may not be.
pub fn header(token: &str) -> Result<Header, Rejection> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        let why = if parts.len() == 5 {
            "encrypted SETs (JWE) are not supported; send a signed SET (compact JWS)"
        } else {
            "the body is not a compact JWS (three base64url parts)"
        };
        return Err(Rejection::invalid(why));
    }
    let header = b64_json(parts[0])
        .filter(Value::is_object)
        .ok_or_else(|| Rejection::invalid("the JOSE header is not base64url-encoded JSON"))?;
    let typ = header.get("typ").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
    if typ != "secevent+jwt" && typ != "application/secevent+jwt" {
        return Err(Rejection::invalid("the JOSE header's `typ` must be `secevent+jwt` (RFC 8417 §2.3)"));
    }
    if header.get("crit").is_some() {
        return Err(Rejection::invalid("the JOSE header's `crit` names extensions tether does not understand"));
    }
    let alg_text = header.get("alg").and_then(Value::as_str).unwrap_or_default();
    let alg = asymmetric_algorithm(alg_text).ok_or_else(|| {
        Rejection::invalid(format!(
            "`alg` {:?} is refused: SETs must be signed with an asymmetric algorithm (RS256, ES256, EdDSA, …); `none` and HMAC never verify",
            alg_text.chars().take(32).collect::<String>()
        ))
    })?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) if k.len() <= 256 => Some(k.clone()),
        Some(_) => {
            return Err(Rejection::invalid("the JOSE header's `kid` must be a string of at most 256 characters"))
        }
    };
    Ok(Header { alg, kid })
}

/// Verifies the signature with the source's keys and returns the claims.
pub fn verify_signature(token: &str, header: &Header, keys: &KeySet) -> Result<Map<String, Value>, Rejection> {
    let mut validation = Validation::new(header.alg);
    // Times, issuer and audience are checked below against tether's clock and the source, each
    // with RFC 8935's own error code; the library only verifies the signature.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.validate_nbf = false;
    let mut tried = false;
    for key in keys.candidates(header.kid.as_deref(), header.alg) {
        tried = true;
        if let Ok(data) = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation) {
            return Ok(data.claims);
        }
    }
    Err(Rejection::new(
        PushErrorCode::InvalidKey,
        if tried {
            "the signature does not verify with the source's keys"
        } else {
            "no key of the source's JWKS matches the SET's `kid` and `alg`"
        },
    ))
}

fn int_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, Rejection> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().filter(|f| f.is_finite() && f.fract() == 0.0).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| Rejection::invalid(format!("`{name}` must be a NumericDate (seconds)"))),
    }
}

/// Checks the claims of a verified SET against what the source's SETs must be.
pub fn check_claims(mut claims: Map<String, Value>, expected: Expected<'_>) -> Result<VerifiedSet, Rejection> {
    match claims.get("iss").and_then(Value::as_str) {
        Some(iss) if iss == expected.issuer => {}
        Some(_) => return Err(Rejection::new(PushErrorCode::InvalidIssuer, "`iss` is not this source's issuer")),
        None => return Err(Rejection::new(PushErrorCode::InvalidIssuer, "`iss` is required")),
    }
    if let Some(audience) = expected.audience {
        let named = match claims.get("aud") {
            Some(Value::String(a)) => a == audience,
            Some(Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        if !named {
            return Err(Rejection::new(PushErrorCode::InvalidAudience, "`aud` does not name this receiver's audience"));
        }
    }
    let iat = int_claim(&claims, "iat")?.ok_or_else(|| Rejection::invalid("`iat` is required"))?;
    if iat > expected.now + SKEW_SECONDS {
        return Err(Rejection::invalid(format!("`iat` is more than {SKEW_SECONDS} s in the future")));
    }
    if iat < expected.now - SKEW_SECONDS {
        return Err(Rejection::invalid(format!("`iat` is more than {SKEW_SECONDS} s in the past")));
    }
    if let Some(exp) = int_claim(&claims, "exp")? {
        if exp <= expected.now {
            return Err(Rejection::invalid("the SET has expired (`exp`)"));
        }
    }
    let jti = match claims.get("jti") {
        Some(Value::String(j)) if !j.is_empty() && j.chars().count() <= MAX_JTI_CHARS => j.clone(),
        _ => return Err(Rejection::invalid(format!("`jti` is required: a string of 1 to {MAX_JTI_CHARS} characters"))),
    };
    if claims.contains_key("sub") {
        return Err(Rejection::invalid("a SET carries its subject in `sub_id`, never `sub` (SSF 1.0 §4)"));
    }
    let Some(Value::Object(events)) = claims.remove("events") else {
        return Err(Rejection::invalid("`events` is required: an object with one event"));
    };
    if events.len() != 1 {
        return Err(Rejection::invalid("`events` must hold exactly one event"));
    }
    let Some((event_type, event)) = events.into_iter().next() else {
        return Err(Rejection::invalid("`events` must hold exactly one event"));
    };
    let Value::Object(event) = event else {
        return Err(Rejection::invalid("the event's payload must be a JSON object"));
    };
    let subject = match claims.remove("sub_id") {
        Some(s @ Value::Object(_)) => Some(s),
        Some(_) => return Err(Rejection::invalid("`sub_id` must be a subject identifier object (RFC 9493)")),
        None => event.get("subject").filter(|s| s.is_object()).cloned(),
    };
    let txn = claims.get("txn").and_then(Value::as_str).map(|t| t.chars().take(256).collect());
    Ok(VerifiedSet { jti, iat, event_type, event, subject, txn })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(header: Value) -> String {
        let enc = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.sig", enc(&header), enc(&json!({})))
    }

    #[test]
    fn the_header_must_be_a_secevent_jwt_signed_asymmetrically() {
        assert!(header(&token(json!({"typ": "secevent+jwt", "alg": "RS256", "kid": "a"}))).is_ok());
        assert!(header(&token(json!({"typ": "application/secevent+jwt", "alg": "EdDSA"}))).is_ok());
        for bad in [
            json!({"typ": "JWT", "alg": "RS256"}),
            json!({"alg": "RS256"}),
            json!({"typ": "secevent+jwt", "alg": "none"}),
            json!({"typ": "secevent+jwt", "alg": "HS256"}),
            json!({"typ": "secevent+jwt", "alg": "RS256", "crit": ["b64"]}),
            json!({"typ": "secevent+jwt", "alg": "RS256", "kid": 7}),
        ] {
            let refused = header(&token(bad.clone())).expect_err("refused");
            assert_eq!(refused.code, PushErrorCode::InvalidRequest, "{bad}");
        }
        assert!(header("not a token").is_err());
        assert!(header("a.b.c.d.e").expect_err("jwe").description.contains("JWE"));
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn claims_are_checked_with_rfc_8935_codes() {
        let expected = Expected { issuer: "https://idp", audience: Some("tether"), now: 1_000_000 };
        let good = json!({"iss": "https://idp", "aud": ["x", "tether"], "iat": 1_000_000, "jti": "j1",
            "sub_id": {"format": "email", "email": "a@b"}, "events": {"urn:e": {}}});
        let set = check_claims(claims(good.clone()), expected).expect("good");
        assert_eq!((set.jti.as_str(), set.event_type.as_str()), ("j1", "urn:e"));
        let code = |patch: Value| {
            let mut c = good.clone();
            for (k, v) in patch.as_object().cloned().unwrap_or_default() {
                if v.is_null() {
                    c.as_object_mut().map(|o| o.remove(&k));
                } else {
                    c[k] = v;
                }
            }
            check_claims(claims(c), expected).map(|_| ()).map_err(|r| r.code)
        };
        assert_eq!(code(json!({"iss": "https://other"})), Err(PushErrorCode::InvalidIssuer));
        assert_eq!(code(json!({"aud": "someone"})), Err(PushErrorCode::InvalidAudience));
        assert_eq!(code(json!({"aud": null})), Err(PushErrorCode::InvalidAudience));
        assert_eq!(code(json!({"iat": 1_000_000 - SKEW_SECONDS - 1})), Err(PushErrorCode::InvalidRequest));
        assert_eq!(code(json!({"iat": 1_000_000 + SKEW_SECONDS + 1})), Err(PushErrorCode::InvalidRequest));
        assert_eq!(code(json!({"iat": 1_000_000 - SKEW_SECONDS})), Ok(()));
        assert_eq!(code(json!({"exp": 1_000_000})), Err(PushErrorCode::InvalidRequest));
        assert_eq!(code(json!({"exp": 1_000_060})), Ok(()));
        assert_eq!(code(json!({"jti": null})), Err(PushErrorCode::InvalidRequest));
        assert_eq!(code(json!({"sub": "x"})), Err(PushErrorCode::InvalidRequest));
        assert_eq!(code(json!({"events": {"a": {}, "b": {}}})), Err(PushErrorCode::InvalidRequest));
        assert_eq!(code(json!({"events": {"a": 1}})), Err(PushErrorCode::InvalidRequest));
        assert_eq!(code(json!({"sub_id": "x"})), Err(PushErrorCode::InvalidRequest));
    }
}
