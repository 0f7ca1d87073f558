//! Shared Signals streams (SSF §8), the subjects added to or removed from them, and their SET
//! outbox: one row per SET per stream, written in the transaction of the change it tells of.

use super::conn::{Conn, OptionalExtension, Row};
use rusqlite::params;
use serde::Serialize;

use super::db::db_error;
use super::query::exec;
use super::tx::Tx;
use crate::domain::*;

/// A stream's stored configuration (the sealed authorization header stays sealed here).
#[derive(Debug, Clone)]
pub struct StoredStream {
    pub id: String,
    pub receiver_id: CredentialId,
    pub platform_id: Option<PlatformId>,
    pub aud: serde_json::Value,
    pub events_requested: Vec<String>,
    pub delivery_method: String,
    pub endpoint_url: Option<String>,
    pub authorization_sealed: Option<String>,
    pub description: Option<String>,
    pub status: String,
    pub status_reason: Option<String>,
    pub min_verification_interval: i64,
    pub last_verification_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

const STREAM_COLUMNS: &str = "id, receiver_id, platform_id, aud, events_requested, delivery_method, endpoint_url, \
     authorization_sealed, description, status, status_reason, min_verification_interval, last_verification_at, created_at";

fn stream_row(r: &Row<'_>) -> rusqlite::Result<StoredStream> {
    let aud: String = r.get(3)?;
    let events: String = r.get(4)?;
    let platform: Option<String> = r.get(2)?;
    Ok(StoredStream {
        id: r.get(0)?,
        receiver_id: r.get(1)?,
        platform_id: platform.and_then(|p| PlatformId::parse(&p).ok()),
        aud: serde_json::from_str(&aud).unwrap_or(serde_json::Value::Null),
        events_requested: serde_json::from_str(&events).unwrap_or_default(),
        delivery_method: r.get(5)?,
        endpoint_url: r.get(6)?,
        authorization_sealed: r.get(7)?,
        description: r.get(8)?,
        status: r.get(9)?,
        status_reason: r.get(10)?,
        min_verification_interval: r.get(11)?,
        last_verification_at: r.get(12)?,
        created_at: r.get(13)?,
    })
}

/// A stream of this receiver, not deleted; another receiver's stream is "not found".
pub fn get_stream(conn: &Conn, receiver: CredentialId, id: &str) -> Result<StoredStream> {
    conn.prepare_cached(&format!(
        "SELECT {STREAM_COLUMNS} FROM ssf_streams WHERE id = ?1 AND receiver_id = ?2 AND deleted_at IS NULL"
    ))
    .and_then(|mut st| st.query_row(params![id, receiver.to_string()], stream_row).optional())
    .map_err(db_error)?
    .ok_or(Error::NotFound("stream"))
}

/// Every live stream of this receiver, oldest first.
pub fn list_streams(conn: &Conn, receiver: CredentialId) -> Result<Vec<StoredStream>> {
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {STREAM_COLUMNS} FROM ssf_streams WHERE receiver_id = ?1 AND deleted_at IS NULL ORDER BY id"
        ))
        .map_err(db_error)?;
    let rows = st.query_map(params![receiver.to_string()], stream_row).map_err(db_error)?;
    rows.collect::<super::conn::DbResult<Vec<_>>>().map_err(db_error)
}

pub fn insert_stream(tx: &Tx<'_>, s: &StoredStream) -> Result<()> {
    exec(
        tx,
        &format!("INSERT INTO ssf_streams ({STREAM_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"),
        params![
            s.id,
            s.receiver_id.to_string(),
            s.platform_id.map(|p| p.to_string()),
            s.aud.to_string(),
            serde_json::to_string(&s.events_requested).unwrap_or_else(|_| "[]".into()),
            s.delivery_method,
            s.endpoint_url,
            s.authorization_sealed,
            s.description,
            s.status,
            s.status_reason,
            s.min_verification_interval,
            s.last_verification_at.map(Timestamp::millis),
            s.created_at.millis(),
        ],
    )
    .map(drop)
}

/// Writes a stream's receiver-settable configuration (PATCH and PUT both end here).
pub fn update_stream(tx: &Tx<'_>, s: &StoredStream) -> Result<()> {
    exec(
        tx,
        "UPDATE ssf_streams SET aud = ?2, events_requested = ?3, delivery_method = ?4, endpoint_url = ?5,
                authorization_sealed = ?6, description = ?7, min_verification_interval = ?8
         WHERE id = ?1 AND deleted_at IS NULL",
        params![
            s.id,
            s.aud.to_string(),
            serde_json::to_string(&s.events_requested).unwrap_or_else(|_| "[]".into()),
            s.delivery_method,
            s.endpoint_url,
            s.authorization_sealed,
            s.description,
            s.min_verification_interval,
        ],
    )
    .map(drop)
}

/// Deletes a stream: nothing more is queued or delivered for it.
pub fn delete_stream(tx: &Tx<'_>, id: &str) -> Result<()> {
    exec(tx, "UPDATE ssf_streams SET deleted_at = ?2 WHERE id = ?1", params![id, tx.now().millis()])?;
    drop_pending(tx, id, "stream deleted")
}

/// Sets a stream's status. Disabling drops what is queued (SSF: a disabled stream's events are
/// not kept); pausing keeps it for replay in order.
pub fn set_status(tx: &Tx<'_>, id: &str, status: &str, reason: Option<&str>) -> Result<()> {
    exec(tx, "UPDATE ssf_streams SET status = ?2, status_reason = ?3 WHERE id = ?1", params![id, status, reason])?;
    if status == "disabled" {
        drop_pending(tx, id, "stream disabled")?;
    }
    Ok(())
}

fn drop_pending(tx: &Tx<'_>, id: &str, why: &str) -> Result<()> {
    exec(
        tx,
        "UPDATE ssf_outbox SET status = 'dropped', last_error = ?2 WHERE stream_id = ?1 AND status = 'pending'",
        params![id, why],
    )
    .map(drop)
}

pub fn set_last_verification(tx: &Tx<'_>, id: &str) -> Result<()> {
    exec(tx, "UPDATE ssf_streams SET last_verification_at = ?2 WHERE id = ?1", params![id, tx.now().millis()]).map(drop)
}

/// Records a subject as added (`excluded` false) or removed (true) for a stream.
pub fn set_subject(tx: &Tx<'_>, stream: &str, key: &str, excluded: bool) -> Result<()> {
    exec(
        tx,
        "INSERT INTO ssf_stream_subjects (stream_id, subject_key, excluded) VALUES (?1, ?2, ?3)
         ON CONFLICT (stream_id, subject_key) DO UPDATE SET excluded = excluded.excluded",
        params![stream, key, excluded],
    )
    .map(drop)
}

/// A live stream as the outbox matches SETs against it.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    pub platform_id: Option<PlatformId>,
    pub events_requested: Vec<String>,
    /// Subject keys removed from the stream: a SET naming any of them is not queued.
    pub excluded: Vec<String>,
}

/// Streams that take new SETs (enabled or paused, not deleted), read once per command.
pub fn live_targets(conn: &Conn) -> Result<Vec<Target>> {
    let mut st = conn
        .prepare_cached(conn.dialect().pick(
            "SELECT s.id, s.platform_id, s.events_requested,
                    (SELECT json_group_array(subject_key) FROM ssf_stream_subjects x
                      WHERE x.stream_id = s.id AND x.excluded = 1)
             FROM ssf_streams s WHERE s.deleted_at IS NULL AND s.status <> 'disabled'",
            "SELECT s.id, s.platform_id, s.events_requested,
                    (SELECT coalesce(json_agg(subject_key), '[]')::text FROM ssf_stream_subjects x
                      WHERE x.stream_id = s.id AND x.excluded = 1)
             FROM ssf_streams s WHERE s.deleted_at IS NULL AND s.status <> 'disabled'",
        ))
        .map_err(db_error)?;
    let rows = st
        .query_map(rusqlite::params![], |r| {
            let platform: Option<String> = r.get(1)?;
            let events: String = r.get(2)?;
            let excluded: String = r.get(3)?;
            Ok(Target {
                id: r.get(0)?,
                platform_id: platform.and_then(|p| PlatformId::parse(&p).ok()),
                events_requested: serde_json::from_str(&events).unwrap_or_default(),
                excluded: serde_json::from_str(&excluded).unwrap_or_default(),
            })
        })
        .map_err(db_error)?;
    rows.collect::<super::conn::DbResult<Vec<_>>>().map_err(db_error)
}

/// One SET to queue for one stream.
pub struct NewSet<'a> {
    pub stream_id: &'a str,
    pub txn: &'a str,
    pub trigger_seq: Option<i64>,
    pub event_type: &'a str,
    pub payload: &'a str,
}

/// Queues a SET: pending, due now (the push worker is woken once the batch commits). Answers
/// its `jti`.
pub fn insert_set(tx: &mut Tx<'_>, set: &NewSet<'_>) -> Result<String> {
    let jti = uuid::Uuid::now_v7().simple().to_string();
    exec(
        tx,
        "INSERT INTO ssf_outbox (stream_id, jti, txn, trigger_seq, event_type, payload, iat, status, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?7)",
        params![set.stream_id, jti, set.txn, set.trigger_seq, set.event_type, set.payload, tx.now().millis()],
    )?;
    tx.outbox_written = true;
    Ok(jti)
}

/// A queued SET with what signing it needs.
#[derive(Debug, Clone)]
pub struct QueuedSet {
    pub id: i64,
    pub stream_id: String,
    pub jti: String,
    pub txn: String,
    pub payload: String,
    pub iat: Timestamp,
    pub attempts: u32,
    pub aud: serde_json::Value,
    pub endpoint_url: Option<String>,
    pub authorization_sealed: Option<String>,
}

const QUEUED_COLUMNS: &str = "o.id, o.stream_id, o.jti, o.txn, o.payload, o.iat, o.attempts, s.aud, s.endpoint_url, \
     s.authorization_sealed, o.next_attempt_at FROM ssf_outbox o JOIN ssf_streams s ON s.id = o.stream_id";

fn queued_row(r: &Row<'_>) -> rusqlite::Result<QueuedSet> {
    let aud: String = r.get(7)?;
    Ok(QueuedSet {
        id: r.get(0)?,
        stream_id: r.get(1)?,
        jti: r.get(2)?,
        txn: r.get(3)?,
        payload: r.get(4)?,
        iat: r.get(5)?,
        attempts: r.get(6)?,
        aud: serde_json::from_str(&aud).unwrap_or(serde_json::Value::Null),
        endpoint_url: r.get(8)?,
        authorization_sealed: r.get(9)?,
    })
}

/// Push streams that are enabled and have a SET pending.
/// Push streams that are enabled and whose oldest pending SET is due at `now` (a stream waiting
/// for a retry is not listed until then).
pub fn push_streams_due(conn: &Conn, now: Timestamp) -> Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT s.id FROM ssf_streams s
         WHERE s.deleted_at IS NULL AND s.status = 'enabled' AND s.delivery_method = 'urn:ietf:rfc:8935'
           AND (SELECT o.next_attempt_at FROM ssf_outbox o WHERE o.stream_id = s.id AND o.status = 'pending'
                ORDER BY o.id LIMIT 1) <= ?1",
    )
    .and_then(|mut st| st.query_map([now.millis()], |r| r.get(0))?.collect())
    .map_err(db_error)
}

/// A stream's oldest pending SETs, up to `max`, stopping at the first that is not due: push
/// delivers a stream's SETs in the order they were queued (a paused stream resumes in order, and
/// a SET waiting for its retry holds back those after it).
///
/// Only SETs after `after` (a row id) are read: a batch being posted is pending too.
pub fn due_batch(conn: &Conn, stream: &str, now: Timestamp, after: i64, max: usize) -> Result<Vec<QueuedSet>> {
    let sql = format!(
        "SELECT {QUEUED_COLUMNS} WHERE o.stream_id = ?1 AND o.status = 'pending' AND o.id > ?3 ORDER BY o.id LIMIT ?2"
    );
    let mut st = conn.prepare_cached(&sql).map_err(db_error)?;
    let rows = st
        .query_map(params![stream, max as i64, after], |r| Ok((queued_row(r)?, r.get::<_, i64>(10)?)))
        .map_err(db_error)?
        .collect::<super::conn::DbResult<Vec<_>>>()
        .map_err(db_error)?;
    Ok(rows.into_iter().take_while(|(_, due)| *due <= now.millis()).map(|(set, _)| set).collect())
}

/// Gives back a claimed SET that was not attempted (an earlier one in its batch failed): due
/// again with that one's retry.
pub fn release(tx: &Tx<'_>, id: i64, due: Timestamp) -> Result<()> {
    exec(
        tx,
        "UPDATE ssf_outbox SET next_attempt_at = ?2 WHERE id = ?1 AND status = 'pending'",
        params![id, due.millis()],
    )
    .map(drop)
}

/// Claims a SET for one push attempt (a conditional write: a stale read cannot start a second
/// attempt); the lease makes it due again if this process dies mid-attempt.
pub fn claim(tx: &Tx<'_>, id: i64, attempts: u32, lease_until: Timestamp) -> Result<bool> {
    exec(
        tx,
        "UPDATE ssf_outbox SET next_attempt_at = ?3
         WHERE id = ?1 AND attempts = ?2 AND status = 'pending' AND next_attempt_at <= ?4",
        params![id, attempts, lease_until.millis(), tx.now().millis()],
    )
    .map(|changed| changed == 1)
}

/// What one push attempt came to.
#[derive(Debug, Clone)]
pub enum PushOutcome {
    /// 202: the receiver has it.
    Accepted { status: u16 },
    /// A 400 with an RFC 8935 `err`: the receiver refuses this SET; retrying would not help.
    Refused { status: u16, error: String },
    /// Anything else (5xx, timeout, connection): retried with backoff.
    Failed { status: Option<u16>, error: String },
}

pub fn record_push(
    tx: &Tx<'_>,
    id: i64,
    attempts: u32,
    outcome: &PushOutcome,
    retry_at: Timestamp,
    give_up: bool,
) -> Result<()> {
    let now = tx.now().millis();
    match outcome {
        PushOutcome::Accepted { status } => exec(
            tx,
            "UPDATE ssf_outbox SET status = 'acknowledged', attempts = ?2, last_attempt_at = ?3, acknowledged_at = ?3,
                    last_status = ?4, last_error = NULL
             WHERE id = ?1 AND status = 'pending'",
            params![id, attempts, now, status],
        ),
        PushOutcome::Refused { status, error } => exec(
            tx,
            "UPDATE ssf_outbox SET status = 'failed', attempts = ?2, last_attempt_at = ?3, last_status = ?4, last_error = ?5
             WHERE id = ?1 AND status = 'pending'",
            params![id, attempts, now, status, error],
        ),
        PushOutcome::Failed { status, error } => exec(
            tx,
            "UPDATE ssf_outbox SET status = CASE WHEN ?6 THEN 'failed' ELSE 'pending' END, attempts = ?2,
                    last_attempt_at = ?3, next_attempt_at = ?4, last_status = ?5, last_error = ?7
             WHERE id = ?1 AND status = 'pending'",
            params![id, attempts, now, retry_at.millis(), status, give_up, error],
        ),
    }
    .map(drop)
}

/// Up to `max` pending SETs of a poll stream, oldest first, and whether more are pending.
pub fn pending_for_poll(conn: &Conn, stream: &str, max: usize) -> Result<(Vec<QueuedSet>, bool)> {
    let sql = format!("SELECT {QUEUED_COLUMNS} WHERE o.stream_id = ?1 AND o.status = 'pending' ORDER BY o.id LIMIT ?2");
    let mut st = conn.prepare_cached(&sql).map_err(db_error)?;
    let mut sets = st
        .query_map(params![stream, (max + 1) as i64], queued_row)
        .map_err(db_error)?
        .collect::<super::conn::DbResult<Vec<_>>>()
        .map_err(db_error)?;
    let more = sets.len() > max;
    sets.truncate(max);
    Ok((sets, more))
}

/// Records a poll: `ack`ed SETs acknowledged, `errs` failed with their error. Only SETs queued
/// for this stream are touched: a jti of another stream (or none) is ignored. Answers how many
/// rows changed.
pub fn record_poll(tx: &Tx<'_>, stream: &str, acks: &[String], errs: &[(String, String)]) -> Result<usize> {
    let now = tx.now().millis();
    let mut changed = 0;
    for jti in acks {
        changed += exec(
            tx,
            "UPDATE ssf_outbox SET status = 'acknowledged', acknowledged_at = ?3, last_error = NULL
             WHERE jti = ?1 AND stream_id = ?2 AND status = 'pending'",
            params![jti, stream, now],
        )?;
    }
    for (jti, error) in errs {
        changed += exec(
            tx,
            "UPDATE ssf_outbox SET status = 'failed', last_attempt_at = ?3, last_error = ?4
             WHERE jti = ?1 AND stream_id = ?2 AND status = 'pending'",
            params![jti, stream, now, error],
        )?;
    }
    Ok(changed)
}

/// One receiver's acknowledgement of a revocation: an SSF stream (its SETs for the trigger) or
/// a webhook (its deliveries of the trigger and the events it caused).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReceiverAck {
    /// `ssf_stream` or `webhook`.
    pub kind: String,
    /// The stream or webhook id.
    pub id: String,
    /// SETs (stream) or deliveries (webhook) queued for this revocation.
    pub queued: i64,
    pub acknowledged: i64,
    /// Refused by the receiver or given up on.
    pub failed: i64,
    /// Dropped unsent: the stream was disabled or deleted first.
    pub dropped: i64,
    /// When the receiver acknowledged the last of them (push 202, poll ack, webhook 2xx); absent
    /// while any is not acknowledged.
    pub acknowledged_at: Option<Timestamp>,
}

/// Every receiver told of the trigger `seq`, and whether and when it acknowledged.
pub fn receivers_of(conn: &Conn, seq: i64) -> Result<Vec<ReceiverAck>> {
    let row = |kind: &'static str| {
        move |r: &Row<'_>| -> rusqlite::Result<ReceiverAck> {
            let (queued, acknowledged): (i64, i64) = (r.get(1)?, r.get(2)?);
            let last: Option<Timestamp> = r.get(5)?;
            Ok(ReceiverAck {
                kind: kind.to_owned(),
                id: r.get(0)?,
                queued,
                acknowledged,
                failed: r.get(3)?,
                dropped: r.get(4)?,
                acknowledged_at: if queued == acknowledged { last } else { None },
            })
        }
    };
    // PostgreSQL sums no booleans: it counts the rows of each status instead.
    let mut out = conn
        .prepare_cached(conn.dialect().pick(
            "SELECT stream_id, count(*), sum(status = 'acknowledged'), sum(status = 'failed'), sum(status = 'dropped'),
                    max(acknowledged_at)
             FROM ssf_outbox WHERE trigger_seq = ?1 GROUP BY stream_id ORDER BY stream_id",
            "SELECT stream_id, count(*), count(*) FILTER (WHERE status = 'acknowledged'),
                    count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'dropped'),
                    max(acknowledged_at)
             FROM ssf_outbox WHERE trigger_seq = ?1 GROUP BY stream_id ORDER BY stream_id",
        ))
        .and_then(|mut st| st.query_map(params![seq], row("ssf_stream"))?.collect::<super::conn::DbResult<Vec<_>>>())
        .map_err(db_error)?;
    // A trigger's caused events lie between it and the last it led to (`audit_causes`).
    let webhooks = conn
        .prepare_cached(conn.dialect().pick(
            "SELECT webhook_id, count(*), sum(status = 'delivered'), sum(status = 'failed'), 0, max(acknowledged_at)
             FROM webhook_deliveries
             WHERE event_seq BETWEEN ?1 AND coalesce((SELECT last_seq FROM audit_causes WHERE cause_seq = ?1), ?1)
             GROUP BY webhook_id ORDER BY webhook_id",
            "SELECT webhook_id, count(*), count(*) FILTER (WHERE status = 'delivered'),
                    count(*) FILTER (WHERE status = 'failed'), 0, max(acknowledged_at)
             FROM webhook_deliveries
             WHERE event_seq BETWEEN ?1 AND coalesce((SELECT last_seq FROM audit_causes WHERE cause_seq = ?1), ?1)
             GROUP BY webhook_id ORDER BY webhook_id",
        ))
        .and_then(|mut st| st.query_map(params![seq], row("webhook"))?.collect::<super::conn::DbResult<Vec<_>>>())
        .map_err(db_error)?;
    out.extend(webhooks);
    Ok(out)
}

/// Whether the user has ever had a delegation on the platform: what makes them one of that
/// platform's users for a platform-bound receiver.
pub fn user_on_platform(conn: &Conn, user: UserId, platform: PlatformId) -> Result<bool> {
    conn.prepare_cached("SELECT EXISTS(SELECT 1 FROM delegations WHERE user_id = ?1 AND platform_id = ?2)")
        .and_then(|mut st| st.query_row(params![user.to_string(), platform.to_string()], |r| r.get(0)))
        .map_err(db_error)
}

/// The user with this email, if any.
pub fn user_by_email(conn: &Conn, email: &str) -> Result<Option<UserId>> {
    // SQLite's column compares with NOCASE; PostgreSQL's index holds lower(email).
    let sql = conn.dialect().pick(
        "SELECT id FROM users WHERE email = ?1",
        "SELECT id FROM users WHERE lower(email) = lower(?1 COLLATE \"C\")",
    );
    conn.prepare_cached(sql).and_then(|mut st| st.query_row(params![email], |r| r.get(0)).optional()).map_err(db_error)
}

/// A user's email, where known.
pub fn email_of(conn: &Conn, user: UserId) -> Result<Option<String>> {
    conn.prepare_cached("SELECT email FROM users WHERE id = ?1")
        .and_then(|mut st| st.query_row(params![user.to_string()], |r| r.get::<_, Option<String>>(0)).optional())
        .map(Option::flatten)
        .map_err(db_error)
}

/// The user and platform of a session, if it exists.
pub fn session_owner(conn: &Conn, session: SessionId) -> Result<Option<(UserId, PlatformId)>> {
    conn.prepare_cached("SELECT user_id, platform_id FROM sessions WHERE id = ?1")
        .and_then(|mut st| st.query_row(params![session.to_string()], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(db_error)
}

/// The platform of an integration, if it exists.
pub fn integration_platform(conn: &Conn, integration: IntegrationId) -> Result<Option<PlatformId>> {
    conn.prepare_cached("SELECT platform_id FROM integrations WHERE id = ?1")
        .and_then(|mut st| st.query_row(params![integration.to_string()], |r| r.get(0)).optional())
        .map_err(db_error)
}

/// Whether the user exists.
pub fn user_exists(conn: &Conn, user: UserId) -> Result<bool> {
    conn.prepare_cached("SELECT EXISTS(SELECT 1 FROM users WHERE id = ?1)")
        .and_then(|mut st| st.query_row(params![user.to_string()], |r| r.get(0)))
        .map_err(db_error)
}
