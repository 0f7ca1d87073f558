//! The tailer: applies every node's committed changes to this node's views, in seq order. Woken
//! by `NOTIFY tether_audit` and, in any case, every [`POLL`]; it reads by seq after what it has
//! applied, so a lost notification, a dropped connection or a restart loses nothing.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::params;

use super::{NodeState, OwnBatch};
use crate::domain::{CredentialId, Error, Result, SessionId, Timestamp};
use crate::store::conn::{Conn, PgConn};
use crate::store::postgres::PgTarget;
use crate::store::writer::EffectSink;
use crate::store::{rows, Effect};

/// The longest a committed change waits for this node when a notification is lost.
const POLL: Duration = Duration::from_millis(100);
/// Most events read at once.
const BATCH: i64 = 10_000;

pub(super) fn start(
    target: PgTarget,
    node_id: String,
    state: Arc<NodeState>,
    sink: Arc<dyn EffectSink>,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tether-tail".into())
        .spawn(move || run(&target, &node_id, &state, sink.as_ref()))
        .map_err(|e| Error::internal(format!("spawn tail thread: {e}")))
}

fn run(target: &PgTarget, node_id: &str, state: &NodeState, sink: &dyn EffectSink) {
    let mut conn: Option<Conn> = None;
    let mut failing = false;
    while !state.is_stopping() {
        let step = match conn.as_ref() {
            Some(c) => catch_up(c, node_id, state, sink),
            None => target.connect().and_then(|c| {
                let c = conn.insert(c);
                listen(c)?;
                catch_up(c, node_id, state, sink)
            }),
        };
        match step {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(node = node_id, error = %e, "tailing the audit log failed; retrying");
                    failing = true;
                }
                conn = None;
                std::thread::sleep(POLL);
                continue;
            }
        }
        if let Some(Conn::Postgres(pg)) = conn.as_ref() {
            wait_for_notification(pg);
        }
    }
}

fn listen(conn: &Conn) -> Result<()> {
    // A plan made per execution: a generic plan cached while the log was nearly empty (a scan
    // and a sort) would otherwise read the whole log for each batch once it is large.
    // The only writes on this connection are the node's `applied_seq` reports, and losing one to
    // a database crash only makes a revoker wait longer for this node (the report would have
    // said less than the node has applied), so they need not wait for the WAL's flush: a
    // 100,000-session cascade is reported page by page, about 5 ms a page when each waited.
    conn.execute_batch("SET plan_cache_mode = force_custom_plan; SET synchronous_commit = off; LISTEN tether_audit")
        .map_err(crate::store::db_error)
}

/// Blocks until a notification arrives or [`POLL`] passes, then drains any others.
fn wait_for_notification(pg: &PgConn) {
    if let Err(e) = pg.client().wait_for_notification(POLL) {
        tracing::debug!(error = %e, "waiting for a notification");
    }
}

/// Applies every committed event after the last applied one.
fn catch_up(conn: &Conn, node_id: &str, state: &NodeState, sink: &dyn EffectSink) -> Result<()> {
    loop {
        let after = state.applied();
        // Everything up to the committed head is committed (appends commit in seq order), and
        // reading no further than it never walks a transaction in progress's new entries.
        let head: i64 = conn
            .query_row("SELECT head FROM audit_chain_lock WHERE id = 1", params![], |r| r.get(0))
            .map_err(crate::store::db_error)?;
        if head <= after {
            return Ok(());
        }
        // This node's own batches are in its views already; only a listener (the event stream,
        // which this thread feeds in seq order) needs them read.
        let mut until = head;
        if !sink.wants_events() {
            match state.own_batch(after) {
                OwnBatch::Through(end) => {
                    state.applied_through(end.min(head));
                    continue;
                }
                OwnBatch::Before(start) => until = start.min(head),
                OwnBatch::None => {}
            }
        }
        // Whole events only for a listener; otherwise only the ids of what was revoked, which
        // spares reading every event's details after a large cascade.
        let Page { end, sessions, credentials, events } = match sink.wants_events() {
            true => read_events(conn, after, head)?,
            false => read_revoked(conn, after, until.min(after.saturating_add(BATCH)))?,
        };
        let mut effects = revoked_sessions(conn, sink, &sessions)?;
        effects.extend(revoked_credentials(conn, &credentials)?);
        let revoked_any = !effects.is_empty();
        effects.extend(events.into_iter().map(|e| Effect::Audited(Arc::new(e))));
        // Another node's batch may have queued webhook deliveries or SETs, which the leader's
        // workers send: a look for what is due costs them one read.
        effects.push(Effect::OutboxWritten);
        sink.apply(&effects);
        state.applied_through(end);
        if revoked_any {
            // A revoker may be waiting for this node (confirm.rs): report at once rather than
            // at the next renewal.
            let Conn::Postgres(pg) = conn else { return Err(Error::internal("tailing SQLite")) };
            pg.client()
                .execute(
                    "UPDATE tether_nodes SET applied_seq = greatest(applied_seq, $2) WHERE id = $1",
                    &[&node_id, &end],
                )
                .map_err(crate::store::db_error)?;
        }
        if end == head {
            return Ok(());
        }
    }
}

/// What one read of the log brought: the seq it was read through, the sessions and credentials
/// revoked in it, and its whole events when a listener wants them.
struct Page {
    end: i64,
    sessions: Vec<String>,
    credentials: Vec<String>,
    events: Vec<crate::audit::AuditEvent>,
}

/// The next [`BATCH`] events after `after`, up to `head`, whole; read through the last of them,
/// or through `head` if there is none.
fn read_events(conn: &Conn, after: i64, head: i64) -> Result<Page> {
    let sql =
        format!("SELECT {} FROM audit_events WHERE seq > ?1 AND seq <= ?3 ORDER BY seq LIMIT ?2", rows::AUDIT_COLUMNS);
    let events = conn
        .prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_map(params![after, BATCH, head], rows::audit_event)?
                .collect::<crate::store::conn::DbResult<Vec<_>>>()
        })
        .map_err(crate::store::db_error)?;
    let revoked = |action: &str, kind: &str| -> Vec<String> {
        events.iter().filter(|e| e.action == action && e.subject.kind == kind).map(|e| e.subject.id.clone()).collect()
    };
    Ok(Page {
        end: events.last().map_or(head, |e| e.seq),
        sessions: revoked("session.revoked", "session"),
        credentials: revoked("credential.revoked", "credential"),
        events,
    })
}

/// The sessions and credentials revoked by the events after `after` through `end`, as two
/// arrays in one row: a row per event cost the reader more than PostgreSQL's scan (a 100,000
/// session cascade is ten such reads on every other node before the revoker can answer).
fn read_revoked(conn: &Conn, after: i64, end: i64) -> Result<Page> {
    let Conn::Postgres(pg) = conn else { return Err(Error::internal("tailing SQLite")) };
    let row = pg
        .client()
        .query_one(
            "SELECT coalesce(array_agg(subject_id) FILTER (WHERE action = 'session.revoked' AND subject_kind = 'session'), '{}'),
                    coalesce(array_agg(subject_id) FILTER (WHERE action = 'credential.revoked' AND subject_kind = 'credential'), '{}')
             FROM audit_events WHERE seq > $1 AND seq <= $2",
            &[&after, &end],
        )
        .map_err(crate::store::db_error)?;
    Ok(Page { end, sessions: row.get(0), credentials: row.get(1), events: Vec::new() })
}

/// The revocations of `ids`: each with its expiry, from the views when they hold the session,
/// else read from the database.
fn revoked_sessions(conn: &Conn, sink: &dyn EffectSink, ids: &[String]) -> Result<Vec<Effect>> {
    let mut effects = Vec::with_capacity(ids.len());
    let mut unknown = Vec::new();
    for text in ids {
        let id = SessionId::parse(text).map_err(|_| Error::internal("a revoked session's id is malformed"))?;
        match sink.session_expiry(id) {
            Some(expires_at) => effects.push(Effect::SessionRevoked { id, expires_at }),
            None => unknown.push(text.as_str()),
        }
    }
    if unknown.is_empty() {
        return Ok(effects);
    }
    let Conn::Postgres(pg) = conn else { return Err(Error::internal("tailing SQLite")) };
    let rows = pg
        .client()
        .query("SELECT id, expires_at FROM sessions WHERE id = ANY($1)", &[&unknown])
        .map_err(crate::store::db_error)?;
    for r in &rows {
        let id =
            SessionId::parse(r.get::<_, &str>(0)).map_err(|_| Error::internal("a stored session id is malformed"))?;
        effects.push(Effect::SessionRevoked { id, expires_at: Timestamp(r.get(1)) });
    }
    Ok(effects)
}

fn revoked_credentials(conn: &Conn, ids: &[String]) -> Result<Vec<Effect>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let Conn::Postgres(pg) = conn else { return Err(Error::internal("tailing SQLite")) };
    let rows = pg
        .client()
        .query("SELECT id, expires_at FROM credentials WHERE id = ANY($1)", &[&ids])
        .map_err(crate::store::db_error)?;
    rows.iter()
        .map(|r| {
            let id = CredentialId::parse(r.get::<_, &str>(0))
                .map_err(|_| Error::internal("a stored credential id is malformed"))?;
            Ok(Effect::Credential { id, revoked: true, expires_at: r.get::<_, Option<i64>>(1).map(Timestamp) })
        })
        .collect()
}
