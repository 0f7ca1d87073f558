//! How held rows reach PostgreSQL: the statement inserting a chunk of every kind of new row
//! (arrays through `unnest`, one data-modifying `WITH` part per kind), a `COPY` for many audit
//! rows, the revocations by primary key, and the batch's end, where a batch of openings' rows go
//! with its COMMIT.

use postgres::types::ToSql;

use crate::domain::{Error, Result};
use crate::store::conn::{Conn, DbError, DbResult, PgClient};
use crate::store::db::db_error;
use crate::store::deferred::{Deferred, CHUNK};

/// From how many audit rows in a statement they are written by `COPY` ([`Deferred::copy_audit`]).
pub(crate) const COPY_AUDIT_FROM: usize = 1_000;

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
