//! Writes a PostgreSQL transaction holds back and sends together at the next statement of a
//! command or the batch's end, instead of a round trip per row: the new rows (audit events,
//! sessions and their tokens) by one statement (arrays through `unnest`, one data-modifying `WITH`
//! part per kind), then the session revocations by another. A batch of session openings is one
//! round trip for all of their rows, and its COMMIT goes with them ([`Deferred::write_then`]).
//! A cascade's audit events, many to a write, go by a binary
//! `COPY` instead (`Deferred::copy_audit`), then its revocations (per 10,000). SQLite writes
//! them at once, as a statement there costs no round trip.
//!
//! Every statement a command issues through [`super::Tx::conn`] writes what is held first, so
//! nothing it reads can miss a held row. A command that fails drops the rows it held since its
//! [`Mark`] ([`super::Tx`]'s rewind); those it had written already go with its savepoint, which
//! it opened before writing them.

use postgres::types::ToSql;

use super::conn::{Conn, DbError, DbResult, PgClient};
use super::db::db_error;
use crate::domain::{Error, Result};

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

/// From how many audit rows in a statement they are written by `COPY` ([`Deferred::copy_audit`]).
pub(super) const COPY_AUDIT_FROM: usize = 1_000;

/// A column's values for one statement, bound as a PostgreSQL array.
type Column<'a> = Box<dyn ToSql + Sync + 'a>;

fn column<'a, T>(values: &'a [T], rows: &std::ops::Range<usize>) -> Column<'a>
where
    &'a [T]: ToSql + Sync,
{
    Box::new(&values[rows.clone()])
}

/// One kind's part of the statement: the `WITH` entry (its parameters numbered from `$first`)
/// and its columns.
struct Part<'a> {
    name: &'static str,
    sql: fn(first: usize) -> String,
    columns: Vec<Column<'a>>,
}

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

    /// Writes what is held and empties it: one statement of every kind of new row for each
    /// `CHUNK` rows of a kind, then the revocations. The parts of one statement see none of each
    /// other's rows, so a session inserted and revoked while held is revoked by a later one.
    pub fn write(&mut self, conn: &Conn) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let Some(pg) = conn.postgres() else { return Err(Error::internal("deferred writes on SQLite")) };
        let taken = std::mem::take(self);
        let mut client = pg.settled_client().map_err(db_error)?;
        taken.write_to(&mut client, |client, sql| pg.prepare_on(client, sql))
    }

    /// Writes what is held and empties it, then runs `then` (a simple query: the batch's
    /// COMMIT). When what is held is new rows for one statement (a batch of openings), the
    /// statement and `then` go together, in one round trip ([`PgClient::execute_then`]): if the
    /// statement fails, the COMMIT behind it runs in a failed transaction and commits nothing.
    /// Otherwise the rows are written first, as [`Deferred::write`] does.
    pub fn write_then(&mut self, conn: &Conn, then: &str) -> Result<()> {
        let Some(pg) = conn.postgres() else { return Err(Error::internal("deferred writes on SQLite")) };
        let taken = std::mem::take(self);
        let mut client = pg.settled_client().map_err(db_error)?;
        if taken.is_one_statement() {
            if let Some((sql, params)) = statement(&taken.insert_parts(&(0..CHUNK), true)) {
                let statement = pg.prepare_on(&mut client, &sql).map_err(db_error)?;
                client.execute_then(&statement, &params, then).map_err(db_error)?;
                return Ok(());
            }
        }
        taken.write_to(&mut client, |client, sql| pg.prepare_on(client, sql))?;
        client.batch_execute(then).map_err(db_error)
    }

    /// Whether everything held is new rows that [`Deferred::write_to`] writes with one
    /// statement: no revocations, no cascade's runs of them, no kind past a chunk, too few
    /// audit rows for `COPY`.
    fn is_one_statement(&self) -> bool {
        let inserted = [
            self.audit.seq.len(),
            self.sessions.id.len(),
            self.access_tokens.revocation_id.len(),
            self.refresh_tokens.hash.len(),
        ];
        self.revoked.id.is_empty()
            && self.audit.len() < COPY_AUDIT_FROM
            && inserted.iter().all(|&n| n <= CHUNK)
            && self.audit.revocation_runs().actor_id.is_empty()
    }

    /// Writes what is held on a thread of its own ([`super::conn::PgConn::send_ahead`]) and empties it: the
    /// next statement on `conn` waits for the write and fails if it did.
    pub fn send_ahead(&mut self, conn: &Conn) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let Some(pg) = conn.postgres() else { return Err(Error::internal("deferred writes on SQLite")) };
        let rows = std::mem::take(self);
        pg.send_ahead(Box::new(move |client: &mut PgClient| {
            rows.write_to(client, |client, sql| client.prepare(sql).map_err(DbError::from))
        }))
        .map_err(db_error)
    }

    /// Held audit rows: a command holding many sends them ahead ([`super::Tx::audit`]).
    pub fn audit_rows(&self) -> usize {
        self.audit.len()
    }

    /// [`Deferred::write`] with a client and a way to prepare statements on it.
    pub(super) fn write_to(
        &self,
        client: &mut PgClient,
        mut prepare: impl FnMut(&mut PgClient, &str) -> DbResult<postgres::Statement>,
    ) -> Result<()> {
        let inserted = [
            self.audit.seq.len(),
            self.sessions.id.len(),
            self.access_tokens.revocation_id.len(),
            self.refresh_tokens.hash.len(),
        ];
        for start in (0..inserted.into_iter().max().unwrap_or(0)).step_by(CHUNK) {
            self.insert_chunk(client, &mut prepare, &(start..start + CHUNK))?;
        }
        let runs = self.audit.revocation_runs();
        if !runs.actor_id.is_empty() {
            let statement = prepare(
                client,
                "INSERT INTO audit_revocation_runs (actor_id, first_seq, last_seq)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])",
            )
            .map_err(db_error)?;
            client.execute(&statement, &[&runs.actor_id, &runs.first_seq, &runs.last_seq]).map_err(db_error)?;
        }
        for start in (0..self.revoked.id.len()).step_by(CHUNK) {
            self.revoke_chunk(client, &mut prepare, start..(start + CHUNK).min(self.revoked.id.len()))?;
        }
        Ok(())
    }

    /// Inserts the new rows of each kind in `chunk` (clipped to what the kind holds) with one
    /// statement.
    fn insert_chunk(
        &self,
        client: &mut PgClient,
        prepare: &mut impl FnMut(&mut PgClient, &str) -> DbResult<postgres::Statement>,
        chunk: &std::ops::Range<usize>,
    ) -> Result<()> {
        let audit = chunk.start.min(self.audit.len())..chunk.end.min(self.audit.len());
        let copied = audit.len() >= COPY_AUDIT_FROM;
        if copied {
            self.copy_audit(client, prepare, audit)?;
        }
        let parts = self.insert_parts(chunk, !copied);
        let Some((sql, params)) = statement(&parts) else { return Ok(()) };
        let statement = prepare(client, &sql).map_err(db_error)?;
        client.execute(&statement, &params).map_err(db_error)?;
        Ok(())
    }

    /// The `WITH` parts inserting the new rows of each kind in `chunk` (clipped to what the kind
    /// holds), the audit rows only if `with_audit`.
    fn insert_parts(&self, chunk: &std::ops::Range<usize>, with_audit: bool) -> Vec<Part<'_>> {
        let clip = |len: usize| chunk.start.min(len)..chunk.end.min(len);
        let mut parts: Vec<Part<'_>> = Vec::new();
        let a = &self.audit;
        let r = clip(a.seq.len());
        if with_audit && !r.is_empty() {
            parts.push(Part {
                name: "audit",
                sql: |n| {
                    format!(
                        "INSERT INTO audit_events (seq, id, at, actor_kind, actor_id, action, subject_kind, subject_id,
                                                   cause_seq, reason, details, prev_hash, hash, details_id)
                         SELECT * FROM unnest(${}::bigint[], ${}::text[], ${}::bigint[], ${}::text[], ${}::text[],
                                              ${}::text[], ${}::text[], ${}::text[], ${}::bigint[], ${}::text[],
                                              ${}::text[], ${}::text[], ${}::text[], ${}::bigint[])",
                        n,
                        n + 1,
                        n + 2,
                        n + 3,
                        n + 4,
                        n + 5,
                        n + 6,
                        n + 7,
                        n + 8,
                        n + 9,
                        n + 10,
                        n + 11,
                        n + 12,
                        n + 13
                    )
                },
                columns: vec![
                    column(&a.seq, &r),
                    column(&a.id, &r),
                    column(&a.at, &r),
                    column(&a.actor_kind, &r),
                    column(&a.actor_id, &r),
                    column(&a.action, &r),
                    column(&a.subject_kind, &r),
                    column(&a.subject_id, &r),
                    column(&a.cause_seq, &r),
                    column(&a.reason, &r),
                    column(&a.details, &r),
                    column(&a.prev_hash, &r),
                    column(&a.hash, &r),
                    column(&a.details_id, &r),
                ],
            });
        }
        let s = &self.sessions;
        let r = clip(s.id.len());
        if !r.is_empty() {
            parts.push(Part {
                name: "opened",
                sql: |n| {
                    let p: Vec<String> = (n..n + 15).map(|i| format!("${i}")).collect();
                    format!(
                        "INSERT INTO sessions (id, delegation_id, user_id, agent_id, integration_id, platform_id,
                                               parent_id, depth, created_seq, scopes, status, created_at, expires_at,
                                               ip, user_agent, device)
                         SELECT id, delegation_id, user_id, agent_id, integration_id, platform_id, parent_id, depth,
                                created_seq, scopes, 'active', created_at, expires_at, ip, user_agent, device
                         FROM unnest({}::text[], {}::text[], {}::text[], {}::text[], {}::text[], {}::text[],
                                     {}::text[], {}::bigint[], {}::bigint[], {}::text[], {}::bigint[], {}::bigint[],
                                     {}::text[], {}::text[], {}::text[])
                              AS r(id, delegation_id, user_id, agent_id, integration_id, platform_id, parent_id,
                                   depth, created_seq, scopes, created_at, expires_at, ip, user_agent, device)",
                        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13], p[14]
                    )
                },
                columns: vec![
                    column(&s.id, &r),
                    column(&s.delegation_id, &r),
                    column(&s.user_id, &r),
                    column(&s.agent_id, &r),
                    column(&s.integration_id, &r),
                    column(&s.platform_id, &r),
                    column(&s.parent_id, &r),
                    column(&s.depth, &r),
                    column(&s.created_seq, &r),
                    column(&s.scopes, &r),
                    column(&s.created_at, &r),
                    column(&s.expires_at, &r),
                    column(&s.ip, &r),
                    column(&s.user_agent, &r),
                    column(&s.device, &r),
                ],
            });
        }
        let t = &self.access_tokens;
        let r = clip(t.revocation_id.len());
        if !r.is_empty() {
            parts.push(Part {
                name: "access",
                sql: |n| {
                    format!(
                        "INSERT INTO access_tokens (revocation_id, session_id, kid, issued_at, expires_at)
                         SELECT * FROM unnest(${}::text[], ${}::text[], ${}::bigint[], ${}::bigint[], ${}::bigint[])",
                        n,
                        n + 1,
                        n + 2,
                        n + 3,
                        n + 4
                    )
                },
                columns: vec![
                    column(&t.revocation_id, &r),
                    column(&t.session_id, &r),
                    column(&t.kid, &r),
                    column(&t.issued_at, &r),
                    column(&t.expires_at, &r),
                ],
            });
        }
        let t = &self.refresh_tokens;
        let r = clip(t.hash.len());
        if !r.is_empty() {
            parts.push(Part {
                name: "refresh",
                sql: |n| {
                    format!(
                        "INSERT INTO refresh_tokens (hash, session_id, created_at)
                         SELECT * FROM unnest(${}::text[], ${}::text[], ${}::bigint[])",
                        n,
                        n + 1,
                        n + 2
                    )
                },
                columns: vec![column(&t.hash, &r), column(&t.session_id, &r), column(&t.created_at, &r)],
            });
        }
        parts
    }

    /// Writes the audit rows in `rows` with one binary `COPY`: PostgreSQL inserts them into the
    /// table's pages in batches and parses no arrays. For a cascade's 100,000 events, 360 ms
    /// against 540–620 ms from arrays, before the arrays' parsing (an experiment on one server,
    /// docs/performance.md). A `COPY` costs a round trip more than a statement, so a few rows go
    /// with the batch's other rows ([`Deferred::insert_chunk`]).
    fn copy_audit(
        &self,
        client: &mut PgClient,
        prepare: &mut impl FnMut(&mut PgClient, &str) -> DbResult<postgres::Statement>,
        rows: std::ops::Range<usize>,
    ) -> Result<()> {
        use postgres::types::Type;
        let statement = prepare(
            client,
            "COPY audit_events (seq, id, at, actor_kind, actor_id, action, subject_kind, subject_id, cause_seq, reason,
                                details, prev_hash, hash, details_id)
             FROM STDIN (FORMAT binary)",
        )
        .map_err(db_error)?;
        let a = &self.audit;
        let rows = rows.map(|i| -> [&(dyn ToSql + Sync); 14] {
            [
                &a.seq[i],
                &a.id[i],
                &a.at[i],
                &a.actor_kind[i],
                &a.actor_id[i],
                &a.action[i],
                &a.subject_kind[i],
                &a.subject_id[i],
                &a.cause_seq[i],
                &a.reason[i],
                &a.details[i],
                &a.prev_hash[i],
                &a.hash[i],
                &a.details_id[i],
            ]
        });
        client
            .copy_in(
                &statement,
                &[
                    Type::INT8,
                    Type::TEXT,
                    Type::INT8,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INT8,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INT8,
                ],
                rows,
            )
            .map_err(db_error)?;
        Ok(())
    }

    /// Marks the sessions in `rows` revoked, checking that each was found. `id = ANY` has
    /// PostgreSQL find them by the primary key: joined on `id` alone, a chunk's custom plan
    /// hashed the whole table, chunk after chunk.
    fn revoke_chunk(
        &self,
        client: &mut PgClient,
        prepare: &mut impl FnMut(&mut PgClient, &str) -> DbResult<postgres::Statement>,
        rows: std::ops::Range<usize>,
    ) -> Result<()> {
        let v = &self.revoked;
        let statement = prepare(
            client,
            "UPDATE sessions SET status = 'revoked', revoked_at = $1, revoked_reason = r.reason,
                                     revoked_by_seq = r.by_seq
                 FROM unnest($2::text[], $3::text[], $4::bigint[]) AS r(id, reason, by_seq)
                 WHERE sessions.id = r.id AND sessions.id = ANY($2)",
        )
        .map_err(db_error)?;
        let changed = client
            .execute(&statement, &[&v.at, &&v.id[rows.clone()], &&v.reason[rows.clone()], &&v.by_seq[rows.clone()]])
            .map_err(db_error)?;
        if changed != rows.len() as u64 {
            return Err(Error::internal(format!(
                "{} of {} sessions marked revoked were not found",
                rows.len() as u64 - changed.min(rows.len() as u64),
                rows.len()
            )));
        }
        Ok(())
    }
}

/// One statement of `parts`: all but the last as `WITH` entries (PostgreSQL runs every
/// data-modifying one, read or not), the last as the statement itself.
/// `None` without parts.
fn statement<'p>(parts: &'p [Part<'_>]) -> Option<(String, Vec<&'p (dyn ToSql + Sync)>)> {
    let mut sql = String::new();
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    let (last, with) = parts.split_last()?;
    for (i, part) in with.iter().enumerate() {
        sql.push_str(if i == 0 { "WITH " } else { ", " });
        sql.push_str(&format!("{} AS ({})", part.name, (part.sql)(params.len() + 1)));
        params.extend(part.columns.iter().map(|c| c.as_ref() as &(dyn ToSql + Sync)));
    }
    sql.push(' ');
    sql.push_str(&(last.sql)(params.len() + 1));
    params.extend(last.columns.iter().map(|c| c.as_ref() as &(dyn ToSql + Sync)));
    Some((sql, params))
}
