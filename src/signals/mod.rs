//! Shared Signals in: Security Event Tokens from registered transmitters (OpenID SSF 1.0, CAEP,
//! RISC; RFC 8417, RFC 8935), verified against the transmitter's keys, their subjects (RFC 9493)
//! and the effect each event has in tether.
//!
//! Nothing here writes: [`set`] turns a pushed body into a [`set::VerifiedSet`] or a
//! [`Rejection`] in RFC 8935's terms, [`jwks`] holds each source's keys (inline or fetched through
//! the webhook client's private-address guard), [`subject`] reads `sub_id`, [`effects`] maps an
//! event type to what it does. `ops::signals` applies the effect in one write transaction.

pub mod effects;
pub mod jwks;
pub mod set;
pub mod subject;

use serde::Serialize;

/// RFC 8935 §2.4's error codes (the `err` member of a push's 400 answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PushErrorCode {
    /// The body is not a SET, or its event does not follow its definition.
    InvalidRequest,
    /// The key that signed the SET is unknown or unacceptable, or the signature does not verify.
    InvalidKey,
    /// `iss` is not the source's issuer.
    InvalidIssuer,
    /// `aud` does not name the source's configured audience.
    InvalidAudience,
    /// The push did not carry the source's push authorization (or names no source).
    AuthenticationFailed,
    /// The source is disabled.
    AccessDenied,
}

impl PushErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            PushErrorCode::InvalidRequest => "invalid_request",
            PushErrorCode::InvalidKey => "invalid_key",
            PushErrorCode::InvalidIssuer => "invalid_issuer",
            PushErrorCode::InvalidAudience => "invalid_audience",
            PushErrorCode::AuthenticationFailed => "authentication_failed",
            PushErrorCode::AccessDenied => "access_denied",
        }
    }
}

/// Why a pushed SET was refused: the code and a description for the transmitter's operator
/// (never a key, a token or anything of the source's secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: PushErrorCode,
    pub description: String,
}

impl Rejection {
    pub fn new(code: PushErrorCode, description: impl Into<String>) -> Rejection {
        Rejection { code, description: description.into() }
    }

    pub fn invalid(description: impl Into<String>) -> Rejection {
        Rejection::new(PushErrorCode::InvalidRequest, description)
    }
}
