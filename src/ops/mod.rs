//! The commands tether runs inside a write transaction: creation, chain checks, revocation and
//! every cascade. Each command is one atomic change with its audit events; the writer commits it.
//!
//! Commands take the capability they need (`domain::access`: `Admin`, `PlatformScope`, …), so
//! one cannot be called without the role check having run, and read tenant data through the
//! capability's [`Visibility`], so a command on another tenant's object fails with `not_found`
//! before it can change anything.

pub mod cascade;
pub mod console;
pub mod credentials;
pub mod delegations;
pub mod groups;
pub mod keys;
pub mod platforms;
pub mod sessions;
pub mod signals;
pub mod streams;
pub mod users;
pub mod webhooks;

use std::sync::Arc;

use serde::Deserialize;
use utoipa::ToSchema;

use crate::domain::*;
use crate::tokens::KeyRing;

/// `{reason}` for state changes; required where API.md says so, optional elsewhere. Request
/// bodies are typed, with unknown fields refused, so a parsed command is a valid one; each lives
/// beside its command, this one is shared by every state change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithReason {
    pub reason: Option<Reason>,
}

/// What commands need besides the transaction: the signing keys and the limits.
pub struct Env {
    pub agent_keys: Arc<KeyRing>,
    pub api_keys: Arc<KeyRing>,
    pub limits: Limits,
    /// Master key from which each webhook's signing secret is derived (never printed).
    pub webhook_master: [u8; 32],
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// Bounds on what a request may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Session lifetime when the request names none.
    pub default_session_ttl_seconds: i64,
    /// Longest session lifetime a request may ask for.
    pub max_session_ttl_seconds: i64,
    /// Deepest chain of sub-agent sessions (a top-level session has depth 0).
    pub max_session_depth: i64,
    /// Lifetime of an access token (never beyond its session's expiry).
    pub access_token_ttl_seconds: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            default_session_ttl_seconds: 3600,
            max_session_ttl_seconds: 30 * 24 * 3600,
            max_session_depth: 4,
            access_token_ttl_seconds: 15 * 60,
        }
    }
}

/// CAEP's `initiating_entity` for an actor.
pub fn initiating_entity(actor: &Actor) -> &'static str {
    match actor.kind {
        ActorKind::User => "user",
        ActorKind::Policy => "policy",
        ActorKind::System | ActorKind::Idp => "system",
        ActorKind::Admin | ActorKind::Platform | ActorKind::Auditor | ActorKind::Verifier => "admin",
    }
}
