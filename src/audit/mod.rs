//! The audit log's records and its hash chain: canonical encoding, hashing, verification.
//!
//! Each event's `hash` is SHA-256 over a length-prefixed encoding of every field and the previous
//! event's hash, so changing, inserting, removing or reordering a record breaks the chain at that
//! record. Storage (append inside the change's transaction, triggers refusing UPDATE/DELETE) lives
//! in `store`; this module is pure.

use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::domain::Timestamp;
pub use crate::domain::{Actor, ActorKind, Subject};

/// `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One immutable audit record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEvent {
    pub seq: i64,
    pub id: String,
    pub at: Timestamp,
    pub actor: Actor,
    pub action: String,
    pub subject: Subject,
    pub cause_seq: Option<i64>,
    pub reason: Option<String>,
    /// Shared with the event stream and, in a cascade, with every revocation under the same
    /// delegation: they carry the same details.
    #[schema(value_type = Object)]
    pub details: Arc<serde_json::Value>,
    pub prev_hash: String,
    pub hash: String,
}

/// An event before it takes its place in the chain.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub actor: Actor,
    pub action: &'static str,
    pub subject: Subject,
    pub cause_seq: Option<i64>,
    pub reason: Option<String>,
    pub details: Details,
}

/// An event's `details` with their compact JSON text (what is stored and hashed), encoded once:
/// a cascade gives the same details to every session it revokes under one delegation.
#[derive(Debug, Clone)]
pub struct Details {
    pub value: Arc<serde_json::Value>,
    pub text: Arc<str>,
}

/// `{}`, shared by every event that has no details of its own.
static NO_DETAILS: std::sync::LazyLock<Details> =
    std::sync::LazyLock::new(|| Details::new(serde_json::Value::Object(Default::default())));

impl Details {
    pub fn new(value: serde_json::Value) -> Details {
        let text = value.to_string().into();
        Details { value: Arc::new(value), text }
    }
}

impl NewEvent {
    pub fn new(actor: Actor, action: &'static str, subject: Subject) -> Self {
        NewEvent { actor, action, subject, cause_seq: None, reason: None, details: NO_DETAILS.clone() }
    }

    pub fn reason(mut self, reason: Option<String>) -> Self {
        self.reason = reason;
        self
    }

    pub fn cause(mut self, cause_seq: i64) -> Self {
        self.cause_seq = Some(cause_seq);
        self
    }

    pub fn details(self, details: serde_json::Value) -> Self {
        self.shared_details(Details::new(details))
    }

    pub fn shared_details(mut self, details: Details) -> Self {
        self.details = details;
        self
    }
}

fn put(hasher: &mut Sha256, field: &[u8]) {
    hasher.update((field.len() as u64).to_be_bytes());
    hasher.update(field);
}

/// SHA-256 (hex) of the canonical encoding of an event's fields and `prev_hash`.
///
/// `details` is hashed as serde_json's compact text of the value, whose object keys are sorted
/// (serde_json's default map is ordered), so the same record always hashes the same.
pub fn event_hash(event: &AuditEvent) -> String {
    event_hash_with_details(event, &event.details.to_string())
}

/// [`event_hash`] with `details` already encoded (`event.details.to_string()`), so a writer that
/// stores that text too encodes it once.
pub fn event_hash_with_details(event: &AuditEvent, details: &str) -> String {
    let mut h = Sha256::new();
    put(&mut h, b"tether-audit-v1");
    put(&mut h, event.seq.to_string().as_bytes());
    put(&mut h, event.id.as_bytes());
    put(&mut h, event.at.millis().to_string().as_bytes());
    put(&mut h, event.actor.kind.as_str().as_bytes());
    put(&mut h, event.actor.id.as_bytes());
    put(&mut h, event.action.as_bytes());
    put(&mut h, event.subject.kind.as_bytes());
    put(&mut h, event.subject.id.as_bytes());
    put(&mut h, event.cause_seq.map(|c| c.to_string()).unwrap_or_default().as_bytes());
    match &event.reason {
        Some(r) => {
            put(&mut h, b"1");
            put(&mut h, r.as_bytes());
        }
        None => put(&mut h, b"0"),
    }
    put(&mut h, details.as_bytes());
    put(&mut h, event.prev_hash.as_bytes());
    hex::encode(h.finalize())
}

/// The outcome of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct VerifyReport {
    pub ok: bool,
    pub checked: i64,
    pub head_seq: i64,
    pub head_hash: String,
    pub first_broken_seq: Option<i64>,
    /// Why the first broken link is broken (absent when `ok`).
    pub problem: Option<String>,
}

/// Walks events in seq order and reports the first link that does not hold.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: String,
    checked: i64,
    broken: Option<(i64, String)>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier { expected_seq: 1, prev_hash: GENESIS_HASH.to_owned(), checked: 0, broken: None }
    }
}

impl ChainVerifier {
    /// Feeds the next event; returns false once the chain is broken (later events need no look).
    pub fn push(&mut self, event: &AuditEvent) -> bool {
        if self.broken.is_some() {
            return false;
        }
        self.checked += 1;
        let problem = if event.seq != self.expected_seq {
            Some(format!("expected seq {}, found {}", self.expected_seq, event.seq))
        } else if event.prev_hash != self.prev_hash {
            Some("prev_hash does not match the previous event's hash".to_owned())
        } else if event_hash(event) != event.hash {
            Some("hash does not match the record's contents".to_owned())
        } else {
            None
        };
        if let Some(problem) = problem {
            self.broken = Some((self.expected_seq.min(event.seq), problem));
            return false;
        }
        self.expected_seq += 1;
        self.prev_hash = event.hash.clone();
        true
    }

    pub fn finish(self) -> VerifyReport {
        let head_seq = self.expected_seq - 1;
        match self.broken {
            None => VerifyReport {
                ok: true,
                checked: self.checked,
                head_seq,
                head_hash: self.prev_hash,
                first_broken_seq: None,
                problem: None,
            },
            Some((seq, problem)) => VerifyReport {
                ok: false,
                checked: self.checked,
                head_seq,
                head_hash: self.prev_hash,
                first_broken_seq: Some(seq),
                problem: Some(problem),
            },
        }
    }
}

/// Who may see an event on the stream or through a webhook: admins and auditors everything; a
/// verifier revocations and key changes; a platform the events about its own objects; a user the
/// events about themselves.
pub fn visible_to(role: &crate::domain::Role, event: &AuditEvent) -> bool {
    use crate::domain::Role;
    let detail = |key: &str| event.details.get(key).and_then(|v| v.as_str());
    match role {
        Role::Admin | Role::Auditor => true,
        Role::Verifier => {
            matches!(
                event.action.as_str(),
                "session.revoked" | "token.revoked_reuse" | "key.retired" | "key.added" | "key.reactivated"
            )
        }
        Role::Platform(p) => {
            let id = p.to_string();
            detail("platform_id") == Some(id.as_str()) || (event.subject.kind == "platform" && event.subject.id == id)
        }
        Role::User(u) => {
            let id = u.to_string();
            detail("user_id") == Some(id.as_str()) || (event.subject.kind == "user" && event.subject.id == id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let mut e = AuditEvent {
                    seq,
                    id: format!("evt_{seq}"),
                    at: Timestamp(1_700_000_000_000 + seq),
                    actor: Actor::system(),
                    action: "user.created".into(),
                    subject: Subject::new("user", format!("usr_{seq}")),
                    cause_seq: None,
                    reason: None,
                    details: Arc::new(serde_json::json!({"b": 1, "a": [seq]})),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                e.hash = event_hash(&e);
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    fn verify(events: &[AuditEvent]) -> VerifyReport {
        let mut v = ChainVerifier::default();
        for e in events {
            v.push(e);
        }
        v.finish()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let report = verify(&chain(5));
        assert!(report.ok);
        assert_eq!(report.checked, 5);
        assert_eq!(report.head_seq, 5);
    }

    #[test]
    fn a_changed_record_is_reported_at_its_seq() {
        let mut events = chain(5);
        events[2].reason = Some("rewritten".into());
        let report = verify(&events);
        assert!(!report.ok);
        assert_eq!(report.first_broken_seq, Some(3));
    }

    #[test]
    fn a_removed_record_is_reported_where_the_gap_is() {
        let mut events = chain(5);
        events.remove(1);
        assert_eq!(verify(&events).first_broken_seq, Some(2));
    }

    #[test]
    fn reason_none_and_empty_reason_hash_differently() {
        let mut events = chain(1);
        let original = event_hash(&events[0]);
        events[0].reason = Some(String::new());
        assert_ne!(event_hash(&events[0]), original);
    }
}
