//! Prometheus counters, kept as atomics: the hot path only increments.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::authorize::Reason;

const REASONS: [Reason; 10] = [
    Reason::Allowed,
    Reason::InvalidToken,
    Reason::UnknownKey,
    Reason::SessionRevoked,
    Reason::SessionExpired,
    Reason::SessionUnknown,
    Reason::ScopeNotGranted,
    Reason::PolicyDenied,
    Reason::TokenExpired,
    Reason::ReauthenticationRequired,
];

#[derive(Default)]
pub struct Metrics {
    decisions: [AtomicU64; 10],
}

impl Metrics {
    pub fn count_decision(&self, reason: Reason) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.decisions[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn render(&self, services: &crate::Services) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP tether_authorize_decisions_total Authorize decisions by reason.");
        let _ = writeln!(out, "# TYPE tether_authorize_decisions_total counter");
        for (reason, count) in REASONS.iter().zip(&self.decisions) {
            let _ = writeln!(
                out,
                "tether_authorize_decisions_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP tether_live_sessions Sessions held in the live view.");
        let _ = writeln!(out, "# TYPE tether_live_sessions gauge");
        let _ = writeln!(out, "tether_live_sessions {}", services.views.sessions.len());
        let _ = writeln!(out, "# HELP tether_verified_tokens_cached Verified tokens in the cache.");
        let _ = writeln!(out, "# TYPE tether_verified_tokens_cached gauge");
        let _ = writeln!(out, "tether_verified_tokens_cached {}", services.authorizer.cached_tokens());
        out
    }
}
