//! Writes a PostgreSQL transaction holds back and sends together at the next statement of a
//! command or the batch's end, instead of a round trip per row: the new rows (audit events,
//! sessions and their tokens) by one statement (arrays through `unnest`, one data-modifying `WITH`
//! part per kind), then the session revocations by another. A batch of session openings is one
//! round trip for all of their rows, and its COMMIT goes with them ([`Deferred::write_then`]).
//! A cascade's audit events, many to a write, go by a binary `COPY` instead, then its
//! revocations (per 10,000). SQLite writes them at once, as a statement there costs no round
//! trip. This module holds the rows; `deferred/write.rs` sends them.
//!
//! Every statement a command issues through [`super::Tx::conn`] writes what is held first, so
//! nothing it reads can miss a held row. A command that fails drops the rows it held since its
//! [`Mark`] ([`super::Tx`]'s rewind); those it had written already go with its savepoint, which
//! it opened before writing them.

/// What a PostgreSQL transaction holds back, in the order it was written.
#[derive(Debug, Default)]
pub struct Deferred {
    audit: AuditRows,
    sessions: SessionRows,
    access_tokens: AccessTokenRows,
    refresh_tokens: RefreshTokenRows,
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

/// Where each actor's cascaded revocations among some audit rows lie (migration 0006), column by
/// column.
#[derive(Debug, Default, PartialEq, Eq)]
struct RevocationRuns {
    actor_id: Vec<String>,
    first_seq: Vec<i64>,
    last_seq: Vec<i64>,
}

impl AuditRows {
    /// One run per actor, from its first cascaded revocation here to its last. The rows one
    /// write holds have seqs no other write's surviving rows have (an undone command's written
    /// rows go with its savepoint, its held ones are dropped before any later write), so one
    /// actor's runs never overlap, as listings by actor need.
    fn revocation_runs(&self) -> RevocationRuns {
        let mut runs = std::collections::BTreeMap::<&str, (i64, i64)>::new();
        for i in 0..self.len() {
            if self.cause_seq[i].is_some() && self.action[i] == "session.revoked" {
                let seq = self.seq[i];
                let run = runs.entry(&self.actor_id[i]).or_insert((seq, seq));
                *run = (run.0.min(seq), run.1.max(seq));
            }
        }
        let mut columns = RevocationRuns::default();
        for (actor, (first, last)) in runs {
            columns.actor_id.push(actor.to_owned());
            columns.first_seq.push(first);
            columns.last_seq.push(last);
        }
        columns
    }
}

/// New `sessions` rows (status `active`), column by column.
#[derive(Debug, Default)]
struct SessionRows {
    id: Vec<String>,
    delegation_id: Vec<String>,
    user_id: Vec<String>,
    agent_id: Vec<String>,
    integration_id: Vec<String>,
    platform_id: Vec<String>,
    parent_id: Vec<Option<String>>,
    depth: Vec<i64>,
    created_seq: Vec<i64>,
    scopes: Vec<String>,
    created_at: Vec<i64>,
    expires_at: Vec<i64>,
    ip: Vec<Option<String>>,
    user_agent: Vec<Option<String>>,
    device: Vec<Option<String>>,
}

/// New `access_tokens` rows.
#[derive(Debug, Default)]
struct AccessTokenRows {
    revocation_id: Vec<String>,
    session_id: Vec<String>,
    kid: Vec<i64>,
    issued_at: Vec<i64>,
    expires_at: Vec<i64>,
}

/// New `refresh_tokens` rows.
#[derive(Debug, Default)]
struct RefreshTokenRows {
    hash: Vec<String>,
    session_id: Vec<String>,
    created_at: Vec<i64>,
}

/// Sessions to mark revoked: id, reason, the seq of the event that revoked each.
#[derive(Debug, Default)]
struct RevokedRows {
    at: i64,
    id: Vec<String>,
    reason: Vec<String>,
    by_seq: Vec<i64>,
}

/// Row counts of what a [`Deferred`] held at a point: where a command's own rows begin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark([usize; 5]);

/// `len`, `truncate` and `split_off` over every column of a columnar row set.
macro_rules! columns {
    ($rows:ident: $first:ident $(, $column:ident)*) => {
        impl $rows {
            fn len(&self) -> usize {
                self.$first.len()
            }

            fn truncate(&mut self, len: usize) {
                self.$first.truncate(len);
                $(self.$column.truncate(len);)*
            }

            // `..Default::default()` fills what is not a column (the revocations' time).
            #[allow(clippy::needless_update)]
            fn split_off(&mut self, at: usize) -> Self {
                Self { $first: self.$first.split_off(at), $($column: self.$column.split_off(at),)* ..Default::default() }
            }
        }
    };
}

columns!(AuditRows: seq, id, at, actor_kind, actor_id, action, subject_kind, subject_id, cause_seq, reason, details,
    prev_hash, hash, details_id);
columns!(SessionRows: id, delegation_id, user_id, agent_id, integration_id, platform_id, parent_id, depth, created_seq,
    scopes, created_at, expires_at, ip, user_agent, device);
columns!(AccessTokenRows: revocation_id, session_id, kid, issued_at, expires_at);
columns!(RefreshTokenRows: hash, session_id, created_at);
columns!(RevokedRows: id, reason, by_seq);

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

/// One new session row, as `sessions::insert_session` writes it.
pub struct SessionRow {
    pub id: String,
    pub delegation_id: String,
    pub user_id: String,
    pub agent_id: String,
    pub integration_id: String,
    pub platform_id: String,
    pub parent_id: Option<String>,
    pub depth: i64,
    pub created_seq: i64,
    pub scopes: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub device: Option<String>,
}

/// Rows of a kind written per statement: bounds a statement's size without costing round trips.
pub const CHUNK: usize = 10_000;

impl Deferred {
    pub fn is_empty(&self) -> bool {
        self.audit.seq.is_empty()
            && self.sessions.id.is_empty()
            && self.access_tokens.revocation_id.is_empty()
            && self.refresh_tokens.hash.is_empty()
            && self.revoked.id.is_empty()
    }

    /// Where the rows held now end.
    pub fn mark(&self) -> Mark {
        Mark([
            self.audit.len(),
            self.sessions.len(),
            self.access_tokens.len(),
            self.refresh_tokens.len(),
            self.revoked.len(),
        ])
    }

    /// Drops the rows held since `mark` (a failed command's).
    pub fn truncate(&mut self, mark: Mark) {
        let [audit, sessions, access, refresh, revoked] = mark.0;
        self.audit.truncate(audit);
        self.sessions.truncate(sessions);
        self.access_tokens.truncate(access);
        self.refresh_tokens.truncate(refresh);
        self.revoked.truncate(revoked);
    }

    /// Takes out the rows held since `mark`, leaving those before it.
    pub fn split_off(&mut self, mark: Mark) -> Deferred {
        let [audit, sessions, access, refresh, revoked] = mark.0;
        let mut later = Deferred {
            audit: self.audit.split_off(audit),
            sessions: self.sessions.split_off(sessions),
            access_tokens: self.access_tokens.split_off(access),
            refresh_tokens: self.refresh_tokens.split_off(refresh),
            revoked: self.revoked.split_off(revoked),
        };
        later.revoked.at = self.revoked.at;
        later
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

    pub fn session_created(&mut self, row: SessionRow) {
        let s = &mut self.sessions;
        s.id.push(row.id);
        s.delegation_id.push(row.delegation_id);
        s.user_id.push(row.user_id);
        s.agent_id.push(row.agent_id);
        s.integration_id.push(row.integration_id);
        s.platform_id.push(row.platform_id);
        s.parent_id.push(row.parent_id);
        s.depth.push(row.depth);
        s.created_seq.push(row.created_seq);
        s.scopes.push(row.scopes);
        s.created_at.push(row.created_at);
        s.expires_at.push(row.expires_at);
        s.ip.push(row.ip);
        s.user_agent.push(row.user_agent);
        s.device.push(row.device);
    }

    pub fn access_token(&mut self, revocation_id: &str, session_id: String, kid: u32, issued_at: i64, expires_at: i64) {
        let t = &mut self.access_tokens;
        t.revocation_id.push(revocation_id.to_owned());
        t.session_id.push(session_id);
        t.kid.push(i64::from(kid));
        t.issued_at.push(issued_at);
        t.expires_at.push(expires_at);
    }

    pub fn refresh_token(&mut self, hash: &str, session_id: String, created_at: i64) {
        let t = &mut self.refresh_tokens;
        t.hash.push(hash.to_owned());
        t.session_id.push(session_id);
        t.created_at.push(created_at);
    }

    /// A session marked revoked at `at` (the batch's time: the same for every session).
    pub fn session_revoked(&mut self, at: i64, id: String, reason: &str, by_seq: i64) {
        self.revoked.at = at;
        self.revoked.id.push(id);
        self.revoked.reason.push(reason.to_owned());
        self.revoked.by_seq.push(by_seq);
    }

    /// Held audit rows: a command holding many sends them ahead ([`super::Tx::audit`]).
    pub fn audit_rows(&self) -> usize {
        self.audit.len()
    }
}

mod write;
#[cfg(test)]
pub(super) use write::COPY_AUDIT_FROM;
