//! Prometheus counters, kept as atomics: the hot path only increments.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::authorize::Reason;
use crate::store::WriterStats;

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

/// The gauges read when `/metrics` is rendered, taken from the views, the token cache and the
/// writer by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    pub live_sessions: usize,
    pub cached_tokens: usize,
    pub writer: WriterStats,
}

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

    pub fn render(&self, gauges: &Gauges) -> String {
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
        let _ = writeln!(out, "tether_live_sessions {}", gauges.live_sessions);
        let _ = writeln!(out, "# HELP tether_verified_tokens_cached Verified tokens in the cache.");
        let _ = writeln!(out, "# TYPE tether_verified_tokens_cached gauge");
        let _ = writeln!(out, "tether_verified_tokens_cached {}", gauges.cached_tokens);
        let writer = gauges.writer;
        let counters: [(&str, &str, String); 8] = [
            (
                "tether_writer_batches_total",
                "Write batches run to their end (one transaction each).",
                writer.batches.to_string(),
            ),
            (
                "tether_writer_failed_batches_total",
                "Write batches whose commit failed.",
                writer.failed_batches.to_string(),
            ),
            ("tether_writer_commands_total", "Write commands run.", writer.commands.to_string()),
            (
                "tether_writer_running_seconds_total",
                "Time the writer spent running commands (BEGIN to just before COMMIT).",
                writer.running.as_secs_f64().to_string(),
            ),
            (
                "tether_writer_commit_seconds_total",
                "Time the writer spent in COMMIT (WAL write and fsync; on PostgreSQL with the batch's last rows).",
                writer.committing.as_secs_f64().to_string(),
            ),
            (
                "tether_writer_locked_seconds_total",
                "Time the writer held the write lock (on PostgreSQL the chain lock all nodes share), BEGIN's return to the end of COMMIT.",
                writer.locked.as_secs_f64().to_string(),
            ),
            (
                "tether_writer_reads_ahead_kept_total",
                "PostgreSQL write batches that found what the writer remembered of session openings' reads still true under the chain lock.",
                writer.reads_ahead_kept.to_string(),
            ),
            (
                "tether_writer_reads_ahead_dropped_total",
                "PostgreSQL write batches that dropped what the writer remembered under the chain lock (a change or an expiry came first).",
                writer.reads_ahead_dropped.to_string(),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}
