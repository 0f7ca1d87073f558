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
    value: Arc<serde_json::Value>,
    text: Arc<str>,
    /// For details many events share ([`Details::shared`]): the row of `audit_details` that holds
    /// their text once the first of them is written, which the others then point to.
    pub(crate) stored: Option<Arc<std::sync::OnceLock<i64>>>,
}

/// `{}`, shared by every event that has no details of its own.
static NO_DETAILS: std::sync::LazyLock<Details> =
    std::sync::LazyLock::new(|| Details::new(serde_json::Value::Object(Default::default())));

impl Details {
    pub fn new(value: serde_json::Value) -> Details {
        let text = value.to_string().into();
        Details { value: Arc::new(value), text, stored: None }
    }

    /// Details that many events of one command will carry: their text is stored once, in
    /// `audit_details`, and each event's row points to it (what each event hashes is the same).
    /// The stored row belongs to the command's transaction: keep these details within the one
    /// command (a rolled-back row's id can be given to another).
    pub fn shared(value: serde_json::Value) -> Details {
        Details { stored: Some(Arc::default()), ..Details::new(value) }
    }

    /// The stored and hashed text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value and the text it encodes to, always made together by [`Details::new`].
    pub fn into_parts(self) -> (Arc<serde_json::Value>, Arc<str>) {
        (self.value, self.text)
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

/// An audit row exactly as stored: what verification hashes and the export writes. Nothing is
/// parsed, so a row changed behind tether's back (details that are not JSON, or JSON spelled
/// differently, an actor kind tether does not know) still reads, and fails its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub seq: i64,
    pub id: String,
    pub at: i64,
    pub actor_kind: String,
    pub actor_id: String,
    pub action: String,
    pub subject_kind: String,
    pub subject_id: String,
    pub cause_seq: Option<i64>,
    pub reason: Option<String>,
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
    /// False when a text column held bytes that are not UTF-8 (read lossily above): such a row
    /// was not written by tether, and verification reports it as broken.
    pub utf8: bool,
}

impl StoredRecord {
    /// The hash this row's contents and `prev_hash` call for.
    pub fn computed_hash(&self) -> String {
        chain_hash(&Hashed {
            seq: self.seq,
            id: &self.id,
            at: self.at,
            actor_kind: &self.actor_kind,
            actor_id: &self.actor_id,
            action: &self.action,
            subject_kind: &self.subject_kind,
            subject_id: &self.subject_id,
            cause_seq: self.cause_seq,
            reason: self.reason.as_deref(),
            details: &self.details,
            prev_hash: &self.prev_hash,
        })
    }
}

/// The export's line for a row: the shape of [`AuditEvent`], with `details` written as the stored
/// text itself (not re-encoded), so whoever re-verifies the export hashes the bytes tether hashed.
impl Serialize for StoredRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        #[derive(Serialize)]
        struct Party<'a> {
            kind: &'a str,
            id: &'a str,
        }
        let mut out = s.serialize_struct("AuditEvent", 11)?;
        out.serialize_field("seq", &self.seq)?;
        out.serialize_field("id", &self.id)?;
        out.serialize_field("at", &Timestamp(self.at))?;
        out.serialize_field("actor", &Party { kind: &self.actor_kind, id: &self.actor_id })?;
        out.serialize_field("action", &self.action)?;
        out.serialize_field("subject", &Party { kind: &self.subject_kind, id: &self.subject_id })?;
        out.serialize_field("cause_seq", &self.cause_seq)?;
        out.serialize_field("reason", &self.reason)?;
        // The stored text itself when it is one JSON value and nothing else (not even whitespace,
        // which the raw value would drop); otherwise - only a tampered row - as a string.
        match serde_json::from_str::<&serde_json::value::RawValue>(&self.details) {
            Ok(raw) if raw.get().len() == self.details.len() => out.serialize_field("details", raw)?,
            _ => out.serialize_field("details", &self.details)?,
        }
        out.serialize_field("prev_hash", &self.prev_hash)?;
        out.serialize_field("hash", &self.hash)?;
        out.end()
    }
}

/// The fields one link of the chain commits to.
struct Hashed<'a> {
    seq: i64,
    id: &'a str,
    at: i64,
    actor_kind: &'a str,
    actor_id: &'a str,
    action: &'a str,
    subject_kind: &'a str,
    subject_id: &'a str,
    cause_seq: Option<i64>,
    reason: Option<&'a str>,
    details: &'a str,
    prev_hash: &'a str,
}

/// SHA-256 (hex) of the canonical encoding of a record's fields and `prev_hash`: each field
/// length-prefixed, `details` as the stored text.
fn chain_hash(f: &Hashed<'_>) -> String {
    let mut h = Sha256::new();
    put(&mut h, b"tether-audit-v1");
    put(&mut h, f.seq.to_string().as_bytes());
    put(&mut h, f.id.as_bytes());
    put(&mut h, f.at.to_string().as_bytes());
    put(&mut h, f.actor_kind.as_bytes());
    put(&mut h, f.actor_id.as_bytes());
    put(&mut h, f.action.as_bytes());
    put(&mut h, f.subject_kind.as_bytes());
    put(&mut h, f.subject_id.as_bytes());
    put(&mut h, f.cause_seq.map(|c| c.to_string()).unwrap_or_default().as_bytes());
    match f.reason {
        Some(r) => {
            put(&mut h, b"1");
            put(&mut h, r.as_bytes());
        }
        None => put(&mut h, b"0"),
    }
    put(&mut h, f.details.as_bytes());
    put(&mut h, f.prev_hash.as_bytes());
    hex::encode(h.finalize())
}

/// The hash of `event` whose details are stored as `details` (the writer encodes them once, for
/// the row and the hash). The writer's details text is serde_json's compact encoding, whose
/// object keys are sorted (serde_json's default map is ordered).
pub fn event_hash_with_details(event: &AuditEvent, details: &str) -> String {
    chain_hash(&Hashed {
        seq: event.seq,
        id: &event.id,
        at: event.at.millis(),
        actor_kind: event.actor.kind.as_str(),
        actor_id: &event.actor.id,
        action: &event.action,
        subject_kind: &event.subject.kind,
        subject_id: &event.subject.id,
        cause_seq: event.cause_seq,
        reason: event.reason.as_deref(),
        details,
        prev_hash: &event.prev_hash,
    })
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
    /// Feeds the next row; returns false once the chain is broken (later rows need no look).
    pub fn push(&mut self, event: &StoredRecord) -> bool {
        if self.broken.is_some() {
            return false;
        }
        self.checked += 1;
        let problem = if event.seq != self.expected_seq {
            Some(format!("expected seq {}, found {}", self.expected_seq, event.seq))
        } else if !event.utf8 {
            Some("a text field is not valid UTF-8".to_owned())
        } else if event.prev_hash != self.prev_hash {
            Some("prev_hash does not match the previous event's hash".to_owned())
        } else if event.computed_hash() != event.hash {
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
        // A provisioner holds no capability that reads events.
        Role::Provisioner => false,
        // A receiver learns of revocations through its SSF streams, not the audit events.
        Role::Receiver(_) => false,
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

    /// The row the writer stores for `event` (its details as compact JSON).
    fn stored(event: &AuditEvent) -> StoredRecord {
        StoredRecord {
            seq: event.seq,
            id: event.id.clone(),
            at: event.at.millis(),
            actor_kind: event.actor.kind.as_str().to_owned(),
            actor_id: event.actor.id.clone(),
            action: event.action.clone(),
            subject_kind: event.subject.kind.clone(),
            subject_id: event.subject.id.clone(),
            cause_seq: event.cause_seq,
            reason: event.reason.clone(),
            details: event.details.to_string(),
            prev_hash: event.prev_hash.clone(),
            hash: event.hash.clone(),
            utf8: true,
        }
    }

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
                e.hash = stored(&e).computed_hash();
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    fn verify(events: &[AuditEvent]) -> VerifyReport {
        let mut v = ChainVerifier::default();
        for e in events {
            v.push(&stored(e));
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
        let original = stored(&events[0]).computed_hash();
        events[0].reason = Some(String::new());
        assert_ne!(stored(&events[0]).computed_hash(), original);
    }

    #[test]
    fn details_spelled_differently_break_the_link_even_when_they_parse_the_same() {
        let events = chain(3);
        let stored: Vec<StoredRecord> = events.iter().map(stored).collect();
        assert_eq!(stored[1].details, r#"{"a":[2],"b":1}"#);
        for respelled in [r#"{"a": [2], "b": 1}"#, r#"{"b":1,"a":[2]}"#, r#"{"a":[2],"b":0,"b":1}"#] {
            let mut tampered = stored.clone();
            tampered[1].details = respelled.to_owned();
            let mut v = ChainVerifier::default();
            for record in &tampered {
                v.push(record);
            }
            assert_eq!(v.finish().first_broken_seq, Some(2), "{respelled}");
        }
    }

    #[test]
    fn the_export_line_carries_the_stored_details_text_byte_for_byte() {
        let mut record = stored(&chain(1)[0]);
        record.details = r#"{"b":1,"a":[1],"a":[2]}"#.to_owned();
        let line = serde_json::to_string(&record).expect("serialize");
        assert!(line.contains(r#""details":{"b":1,"a":[1],"a":[2]}"#), "{line}");
        for padded in [" {\"a\":1}", "{\"a\":1}\n"] {
            record.details = padded.to_owned();
            let line = serde_json::to_string(&record).expect("serialize");
            let exported: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
            assert_eq!(exported["details"], padded, "whitespace kept: {line}");
        }
        record.details = "not json".to_owned();
        let line = serde_json::to_string(&record).expect("serialize");
        assert!(line.contains(r#""details":"not json""#), "{line}");
    }
}
