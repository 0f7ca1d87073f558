//! The audit log's storage: the chain head, the append inside the write transaction, reading one
//! event, the writer's lookups of earlier events, export (every stored row) and verification.

use super::conn::{Conn, Dialect, OptionalExtension};
use rusqlite::params;

use super::db::db_error;
use super::delegations::DelegationsOf;
use super::query::Select;
use super::rows;
use super::tx::{ChainHead, Effect, Tx};
use crate::audit::{event_hash_with_details, AuditEvent, ChainVerifier, NewEvent, StoredRecord, VerifyReport};
use crate::domain::*;

/// The end of the audit chain as the database holds it (seq 0 and the genesis hash when empty).
pub fn load_chain_head(conn: &Conn) -> Result<ChainHead> {
    let head = conn
        .query_row(rows::CHAIN_HEAD, rusqlite::params![], |r| {
            Ok(ChainHead { seq: r.get(0)?, hash: r.get(1)?, at: r.get(2)? })
        })
        .map(Some)
        .or_else(|e| match e {
            super::conn::DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
            e => Err(e),
        })
        .map_err(db_error)?;
    Ok(head.unwrap_or_else(ChainHead::genesis))
}

/// The newest event's seq and hash (seq 0 and the genesis hash for an empty log).
pub fn chain_head(conn: &Conn) -> Result<(i64, String)> {
    let head = load_chain_head(conn)?;
    Ok((head.seq, head.hash))
}

impl<'c> Tx<'c> {
    /// Appends an event to the audit chain in this transaction. The record is shared with the
    /// event stream's effect rather than copied: a cascade writes one per revoked session.
    pub fn audit(&mut self, event: NewEvent) -> Result<std::sync::Arc<AuditEvent>> {
        if self.deferred.get_mut().audit_rows() >= super::deferred::CHUNK {
            self.send_ahead();
        }
        let details_id = match &event.details.stored {
            Some(slot) => Some(self.shared_details_id(slot, event.details.text())?),
            None => None,
        };
        let (details, text) = event.details.into_parts();
        let mut record = AuditEvent {
            seq: self.head.seq + 1,
            id: EventId::generate().to_string(),
            // A clock set back does not set the log back: time queries rely on `at` never
            // decreasing along the chain. Only the record's stamp waits for the clock; the
            // batch's own time (expiry, lifetimes) stays the clock's.
            at: self.now.max(self.head.at),
            actor: event.actor,
            action: event.action.to_owned(),
            subject: event.subject,
            cause_seq: event.cause_seq,
            reason: event.reason,
            details,
            prev_hash: self.head.hash.clone(),
            hash: String::new(),
        };
        if let Some(cause) = record.cause_seq {
            // A query by cause reads the seq range after its cause (migration 0010): an event
            // that names a later one, or itself, would never be found. A command doing so is a bug.
            if cause >= record.seq {
                return Err(Error::internal(format!(
                    "event {} names a later event ({cause}) as its cause",
                    record.seq
                )));
            }
        }
        record.hash = event_hash_with_details(&record, &text);
        // Shared details are read through `details_id` (rows::AUDIT_DETAILS).
        let stored_details = if details_id.is_some() { "" } else { &*text };
        if self.conn.dialect() == super::conn::Dialect::Postgres {
            // Held back and written with the next statement or at the batch's end (store::deferred).
            self.deferred.get_mut().audit(super::deferred::AuditRow {
                seq: record.seq,
                id: &record.id,
                at: record.at.millis(),
                actor_kind: record.actor.kind.as_str(),
                actor_id: &record.actor.id,
                action: &record.action,
                subject_kind: &record.subject.kind,
                subject_id: &record.subject.id,
                cause_seq: record.cause_seq,
                reason: record.reason.as_deref(),
                details: stored_details,
                prev_hash: &record.prev_hash,
                hash: &record.hash,
                details_id,
            });
        } else {
            self.write_conn()
                .prepare_cached(
                    "INSERT INTO audit_events (seq, id, at, actor_kind, actor_id, action, subject_kind, subject_id,
                                           cause_seq, reason, details, prev_hash, hash, details_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        record.seq,
                        record.id,
                        record.at.millis(),
                        record.actor.kind.as_str(),
                        record.actor.id,
                        record.action,
                        record.subject.kind,
                        record.subject.id,
                        record.cause_seq,
                        record.reason,
                        stored_details,
                        record.prev_hash,
                        record.hash,
                        details_id,
                    ])
                })
                .map_err(db_error)?;
        }
        if let Some(cause) = record.cause_seq {
            self.last_caused.insert(cause, record.seq);
        }
        self.enqueue_webhooks(&record)?;
        self.head = ChainHead { seq: record.seq, hash: record.hash.clone(), at: record.at };
        let record = std::sync::Arc::new(record);
        self.effect(Effect::Audited(record.clone()));
        Ok(record)
    }

    /// Records, for each cause of the command that just ran, the last event it led to: the
    /// events a trigger caused all lie between it and that seq, which is how queries by cause
    /// find them (there is no index on `cause_seq`, migration 0010).
    pub(super) fn record_causes(&mut self) -> Result<()> {
        for (cause, last) in std::mem::take(&mut self.last_caused) {
            self.write_conn()
                .prepare_cached(self.conn.dialect().pick(
                    "INSERT INTO audit_causes (cause_seq, last_seq) VALUES (?1, ?2)
                     ON CONFLICT (cause_seq) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
                    "INSERT INTO audit_causes (cause_seq, last_seq) VALUES (?1, ?2)
                     ON CONFLICT (cause_seq) DO UPDATE SET last_seq = greatest(audit_causes.last_seq, excluded.last_seq)",
                ))
                .and_then(|mut st| st.execute([cause, last]))
                .map_err(db_error)?;
        }
        Ok(())
    }

    /// The `audit_details` row holding the text of details many events share: stored by the first
    /// of them, remembered in `slot` for the others.
    fn shared_details_id(&self, slot: &std::sync::OnceLock<i64>, text: &str) -> Result<i64> {
        if let Some(id) = slot.get() {
            return Ok(*id);
        }
        let id = self
            .write_conn()
            .prepare_cached("INSERT INTO audit_details (text) VALUES (?1) RETURNING id")
            .and_then(|mut st| st.query_row([text], |r| r.get(0)))
            .map_err(db_error)?;
        Ok(*slot.get_or_init(|| id))
    }
}

pub fn get_audit_event(conn: &Conn, seq: i64) -> Result<AuditEvent> {
    let mut q = Select::new(rows::AUDIT_COLUMNS, "audit_events");
    q.and("seq = ?", seq);
    q.one(conn, rows::audit_event)?.ok_or(Error::NotFound("audit event"))
}

/// A subject's latest event of an action. `+action`: SQLite, which has no statistics, could pick
/// the action index and read every event of that action from the newest back; the subject's own
/// are a handful.
pub(super) static LAST_EVENT_FOR: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {} FROM audit_events WHERE subject_id = ?1 AND {} AND +action = ?2 ORDER BY seq DESC LIMIT 1",
        rows::AUDIT_COLUMNS,
        rows::INDEXED_EVENT
    )
});

/// The latest event with one of `actions` on `subject`: what an idempotent repeat points back to.
/// A session a cascade revoked is not found here: its revoking event is its `revoked_by_seq`
/// ([`audit_event_at`]).
pub fn last_event_for(conn: &Conn, subject_id: &str, actions: &[&str]) -> Result<Option<crate::audit::AuditEvent>> {
    let mut st = conn.prepare_cached(&LAST_EVENT_FOR).map_err(db_error)?;
    let mut latest: Option<crate::audit::AuditEvent> = None;
    for action in actions {
        let found = st.query_row(params![subject_id, action], rows::audit_event).optional().map_err(db_error)?;
        if let Some(event) = found {
            if latest.as_ref().is_none_or(|l| event.seq > l.seq) {
                latest = Some(event);
            }
        }
    }
    Ok(latest)
}

/// The audit event at `seq`, if there is one.
pub fn audit_event_at(conn: &Conn, seq: i64) -> Result<Option<crate::audit::AuditEvent>> {
    let sql = format!("SELECT {} FROM audit_events WHERE seq = ?1", rows::AUDIT_COLUMNS);
    conn.prepare_cached(&sql).and_then(|mut st| st.query_row([seq], rows::audit_event).optional()).map_err(db_error)
}

/// A user's latest disconnect event of an action (`?2`) whose details name `?4` at `?3`; the
/// subject index drives it, as in [`LAST_EVENT_FOR`].
pub(super) static LAST_DISCONNECT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {} FROM audit_events WHERE subject_id = ?1 AND {} AND +action = ?2 AND json_extract({}, ?3) = ?4
         ORDER BY seq DESC LIMIT 1",
        rows::AUDIT_COLUMNS,
        rows::INDEXED_EVENT,
        rows::AUDIT_DETAILS
    )
});

/// [`LAST_DISCONNECT`] for PostgreSQL: the details read as `jsonb`, the key (`$.agent_id`) as the
/// JSON path it is.
pub(super) static LAST_DISCONNECT_PG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {} FROM audit_events WHERE subject_id = ?1 AND {} AND action = ?2
           AND jsonb_path_query_first(CAST({} AS jsonb), CAST(CAST(?3 AS TEXT) AS jsonpath)) #>> '{{}}' = ?4
         ORDER BY seq DESC LIMIT 1",
        rows::AUDIT_COLUMNS,
        rows::INDEXED_EVENT,
        rows::AUDIT_DETAILS
    )
});

/// The latest disconnect of this very agent or integration by this user.
pub fn last_disconnect_event(conn: &Conn, of: DelegationsOf) -> Result<Option<crate::audit::AuditEvent>> {
    let (action, key, user, other) = match of {
        DelegationsOf::UserAgent(u, a) => ("user.agent_disconnected", "$.agent_id", u, a.to_string()),
        DelegationsOf::UserIntegration(u, i) => ("user.integration_disconnected", "$.integration_id", u, i.to_string()),
        _ => return Ok(None),
    };
    conn.prepare_cached(conn.dialect().pick(&LAST_DISCONNECT, &LAST_DISCONNECT_PG))
        .and_then(|mut st| st.query_row(params![user.to_string(), action, key, other], rows::audit_event).optional())
        .map_err(db_error)
}

/// Streams every audit row as stored, in seq order, to `each`; stops early when it returns false.
/// Verification and export read rows this way: a row changed behind tether's back still reads.
pub fn each_stored_record(conn: &Conn, mut each: impl FnMut(StoredRecord) -> bool) -> Result<()> {
    if conn.dialect() == Dialect::Postgres {
        return each_stored_record_paged(conn, each);
    }
    let sql = format!("SELECT {} FROM audit_events ORDER BY seq", rows::AUDIT_COLUMNS);
    let mut st = conn.prepare(&sql).map_err(db_error)?;
    let mut rows = st.query(params![]).map_err(db_error)?;
    while let Some(r) = rows.next().map_err(db_error)? {
        if !each(rows::stored_record(&r).map_err(db_error)?) {
            break;
        }
    }
    Ok(())
}

/// [`each_stored_record`] on PostgreSQL, whose rows arrive whole: the log is read a page at a
/// time by seq. Seq order is commit order there (the chain lock), so a page read after another
/// finds every event after the last one read, and no hole.
fn each_stored_record_paged(conn: &Conn, mut each: impl FnMut(StoredRecord) -> bool) -> Result<()> {
    const PAGE: i64 = 5_000;
    let sql = format!("SELECT {} FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2", rows::AUDIT_COLUMNS);
    let mut after = i64::MIN;
    loop {
        let mut st = conn.prepare_cached(&sql).map_err(db_error)?;
        let mut rows = st.query(params![after, PAGE]).map_err(db_error)?;
        let mut read = 0;
        while let Some(r) = rows.next().map_err(db_error)? {
            let record = rows::stored_record(&r).map_err(db_error)?;
            after = record.seq;
            read += 1;
            if !each(record) {
                return Ok(());
            }
        }
        if read < PAGE {
            return Ok(());
        }
    }
}

/// Recomputes the chain from the stored rows, up to `through_seq` if given.
pub fn verify_audit_through(conn: &Conn, through_seq: Option<i64>) -> Result<VerifyReport> {
    let mut verifier = ChainVerifier::default();
    each_stored_record(conn, |r| through_seq.is_none_or(|last| r.seq <= last) && verifier.push(&r))?;
    Ok(verifier.finish())
}

/// Recomputes the whole chain.
pub fn verify_audit(conn: &Conn) -> Result<VerifyReport> {
    verify_audit_through(conn, None)
}
