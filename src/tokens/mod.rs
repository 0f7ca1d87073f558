//! Biscuit tokens: the key rings, agent capability tokens, API credentials and the policy.

pub mod agent;
pub mod credential;
pub mod keys;
pub mod policy;
pub mod refresh;

use std::time::Duration;

use biscuit_auth::AuthorizerLimits;

pub use agent::{AgentClaims, MintedToken, VerifiedToken};
pub use credential::CredentialClaims;
pub use keys::{KeyPurpose, KeyRing, KeyStatus, SetKeyRing};
pub use policy::Policy;

/// Largest token accepted, in base64 characters, checked before any decoding.
pub const MAX_TOKEN_CHARS: usize = 8 * 1024;
/// Largest agent token tether mints: the rest of [`MAX_TOKEN_CHARS`] is room for the blocks a
/// holder may append to narrow it.
pub const MAX_MINTED_CHARS: usize = MAX_TOKEN_CHARS - 2 * 1024;
/// Most blocks accepted (authority + attenuations), checked before any signature.
pub const MAX_BLOCKS: usize = 8;

/// Explicit run limits: a hostile token hits them and is denied; biscuit's 1 ms default time
/// limit denied valid requests under load.
pub fn run_limits() -> AuthorizerLimits {
    AuthorizerLimits { max_facts: 1000, max_iterations: 100, max_time: Duration::from_millis(25) }
}

/// Why a token was refused before any policy ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Signed by a key tether does not know, or one that was retired.
    #[error("unknown signing key")]
    UnknownKey,
    /// Not a biscuit, bad signature, too large, too many blocks, or not the expected shape.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
}

/// Seconds since the epoch as a biscuit date.
fn date(t: crate::domain::Timestamp) -> biscuit_auth::builder::Term {
    biscuit_auth::builder::Term::Date(u64::try_from(t.seconds()).unwrap_or(0))
}

fn string(s: impl ToString) -> biscuit_auth::builder::Term {
    biscuit_auth::builder::Term::Str(s.to_string())
}

fn fact(name: &str, terms: Vec<biscuit_auth::builder::Term>) -> biscuit_auth::builder::Fact {
    biscuit_auth::builder::Fact::new(name.to_owned(), terms)
}

/// Decodes without verifying (cheap) to bound size and block count, then verifies signatures.
fn parse_bounded(token: &str, ring: &KeyRing) -> Result<biscuit_auth::Biscuit, TokenError> {
    if token.len() > MAX_TOKEN_CHARS {
        return Err(TokenError::Invalid("token too large"));
    }
    let unverified = biscuit_auth::UnverifiedBiscuit::from_base64(token.trim())
        .map_err(|_| TokenError::Invalid("not a biscuit token"))?;
    if unverified.block_count() > MAX_BLOCKS {
        return Err(TokenError::Invalid("too many blocks"));
    }
    unverified.verify(ring).map_err(|e| match e {
        biscuit_auth::error::Format::UnknownPublicKey => TokenError::UnknownKey,
        _ => TokenError::Invalid("signature does not verify"),
    })
}
