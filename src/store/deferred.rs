//! Writes a PostgreSQL transaction holds back and sends together: a cascade's audit rows and
//! session revocations, one multi-row statement each (arrays through `unnest`) at the command's
//! next statement, instead of two round trips per revoked session. SQLite writes them at once,
//! as a statement there costs no round trip.
//!
//! Every statement the command issues through [`super::Tx::conn`] writes what is held first, so
//! nothing it reads can miss a held row; a command that fails drops what it held with its
//! savepoint ([`super::Tx`]'s rewind).

use super::conn::Conn;
use super::db::db_error;
use crate::domain::{Error, Result};

/// What a PostgreSQL transaction holds back, in the order it was written.
#[derive(Debug, Default)]
pub struct Deferred {
    audit: AuditRows,
    revoked: RevokedRows,
}

/// `audit_events` rows, column by column.
#[derive(Debug, Default)]
struct AuditRows {
    seq: Vec<i64>,
    id: Vec<String>,
    at: Vec<i64>,
    actor_kind: Vec<String>,
    actor_id: Vec<String>,
    action: Vec<String>,
    subject_kind: Vec<String>,
    subject_id: Vec<String>,
    cause_seq: Vec<Option<i64>>,
    reason: Vec<Option<String>>,
    details: Vec<String>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
    details_id: Vec<Option<i64>>,
}

/// Sessions to mark revoked: id, reason, the seq of the event that revoked each.
#[derive(Debug, Default)]
struct RevokedRows {
    at: i64,
    id: Vec<String>,
    reason: Vec<String>,
    by_seq: Vec<i64>,
}

/// One audit row, as `Tx::audit` writes it.
pub struct AuditRow<'a> {
    pub seq: i64,
    pub id: &'a str,
    pub at: i64,
    pub actor_kind: &'a str,
    pub actor_id: &'a str,
    pub action: &'a str,
    pub subject_kind: &'a str,
    pub subject_id: &'a str,
    pub cause_seq: Option<i64>,
    pub reason: Option<&'a str>,
    pub details: &'a str,
    pub prev_hash: &'a str,
    pub hash: &'a str,
    pub details_id: Option<i64>,
}

/// Rows written per statement: bounds a statement's size without costing round trips.
const CHUNK: usize = 10_000;

impl Deferred {
    pub fn is_empty(&self) -> bool {
        self.audit.seq.is_empty() && self.revoked.id.is_empty()
    }

    pub fn clear(&mut self) {
        *self = Deferred::default();
    }

    pub fn audit(&mut self, row: AuditRow<'_>) {
        let a = &mut self.audit;
        a.seq.push(row.seq);
        a.id.push(row.id.to_owned());
        a.at.push(row.at);
        a.actor_kind.push(row.actor_kind.to_owned());
        a.actor_id.push(row.actor_id.to_owned());
        a.action.push(row.action.to_owned());
        a.subject_kind.push(row.subject_kind.to_owned());
        a.subject_id.push(row.subject_id.to_owned());
        a.cause_seq.push(row.cause_seq);
        a.reason.push(row.reason.map(str::to_owned));
        a.details.push(row.details.to_owned());
        a.prev_hash.push(row.prev_hash.to_owned());
        a.hash.push(row.hash.to_owned());
        a.details_id.push(row.details_id);
    }

    /// A session marked revoked at `at` (the batch's time: the same for every session).
    pub fn session_revoked(&mut self, at: i64, id: String, reason: &str, by_seq: i64) {
        self.revoked.at = at;
        self.revoked.id.push(id);
        self.revoked.reason.push(reason.to_owned());
        self.revoked.by_seq.push(by_seq);
    }

    /// Writes what is held, audit rows first, and empties it.
    pub fn write(&mut self, conn: &Conn) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let Some(pg) = conn.postgres() else { return Err(Error::internal("deferred writes on SQLite")) };
        let taken = std::mem::take(self);
        let mut client = pg.client();
        let a = &taken.audit;
        for start in (0..a.seq.len()).step_by(CHUNK) {
            let r = start..(start + CHUNK).min(a.seq.len());
            client
                .execute(
                    "INSERT INTO audit_events (seq, id, at, actor_kind, actor_id, action, subject_kind, subject_id,
                                               cause_seq, reason, details, prev_hash, hash, details_id)
                     SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                                          $7::text[], $8::text[], $9::bigint[], $10::text[], $11::text[], $12::text[],
                                          $13::text[], $14::bigint[])",
                    &[
                        &&a.seq[r.clone()],
                        &&a.id[r.clone()],
                        &&a.at[r.clone()],
                        &&a.actor_kind[r.clone()],
                        &&a.actor_id[r.clone()],
                        &&a.action[r.clone()],
                        &&a.subject_kind[r.clone()],
                        &&a.subject_id[r.clone()],
                        &&a.cause_seq[r.clone()],
                        &&a.reason[r.clone()],
                        &&a.details[r.clone()],
                        &&a.prev_hash[r.clone()],
                        &&a.hash[r.clone()],
                        &&a.details_id[r.clone()],
                    ],
                )
                .map_err(db_error)?;
        }
        let s = &taken.revoked;
        for start in (0..s.id.len()).step_by(CHUNK) {
            let r = start..(start + CHUNK).min(s.id.len());
            let changed = client
                .execute(
                    "UPDATE sessions SET status = 'revoked', revoked_at = $1, revoked_reason = r.reason,
                                         revoked_by_seq = r.by_seq
                     FROM unnest($2::text[], $3::text[], $4::bigint[]) AS r(id, reason, by_seq)
                     WHERE sessions.id = r.id",
                    &[&s.at, &&s.id[r.clone()], &&s.reason[r.clone()], &&s.by_seq[r.clone()]],
                )
                .map_err(db_error)?;
            if changed != r.len() as u64 {
                return Err(Error::internal(format!(
                    "{} of {} sessions marked revoked were not found",
                    r.len() as u64 - changed.min(r.len() as u64),
                    r.len()
                )));
            }
        }
        Ok(())
    }
}
