//! The console's rows (sign-in links, browser sessions) and the joined reads its pages show.

use super::conn::{Conn, OptionalExtension};
use rusqlite::params;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, Value, ValueRef};

use super::db::db_error;
use super::query::exec;
use super::rows;
use super::tx::Tx;
use crate::domain::*;

impl FromSql for ConsoleLinkId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        ConsoleLinkId::parse(value.as_str()?).map_err(|e| FromSqlError::Other(e.into()))
    }
}

impl FromSql for ConsoleSessionId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        ConsoleSessionId::parse(value.as_str()?).map_err(|e| FromSqlError::Other(e.into()))
    }
}

/// Who a console link or session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleRole {
    /// A person: their own connected agents.
    User(UserId),
    Auditor,
    Admin,
}

impl ConsoleRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleRole::User(_) => "user",
            ConsoleRole::Auditor => "auditor",
            ConsoleRole::Admin => "admin",
        }
    }

    fn user_id(self) -> Option<UserId> {
        match self {
            ConsoleRole::User(u) => Some(u),
            _ => None,
        }
    }

    fn from_parts(kind: &str, user: Option<UserId>) -> Option<ConsoleRole> {
        match (kind, user) {
            ("user", Some(u)) => Some(ConsoleRole::User(u)),
            ("auditor", None) => Some(ConsoleRole::Auditor),
            ("admin", None) => Some(ConsoleRole::Admin),
            _ => None,
        }
    }
}

/// A sign-in link as stored (its secret only as a hash).
#[derive(Debug, Clone)]
pub struct ConsoleLink {
    pub id: ConsoleLinkId,
    pub secret_hash: String,
    pub role: ConsoleRole,
    /// Set when a platform minted the link: the console shows that platform's delegations only.
    pub platform_id: Option<PlatformId>,
    pub created_seq: i64,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
}

pub fn insert_link(tx: &Tx<'_>, link: &ConsoleLink) -> Result<()> {
    exec(
        tx,
        "INSERT INTO console_links (id, secret_hash, role, user_id, platform_id, created_seq, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            link.id.to_string(),
            link.secret_hash,
            link.role.as_str(),
            link.role.user_id().map(|u| u.to_string()),
            link.platform_id.map(|p| p.to_string()),
            link.created_seq,
            link.created_at.millis(),
            link.expires_at.millis(),
        ],
    )
    .map(drop)
}

pub fn find_link(conn: &Conn, secret_hash: &str) -> Result<Option<ConsoleLink>> {
    conn.prepare_cached(
        "SELECT id, secret_hash, role, user_id, platform_id, created_seq, created_at, expires_at, used_at
         FROM console_links WHERE secret_hash = ?1",
    )
    .and_then(|mut st| {
        st.query_row([secret_hash], |r| {
            let kind: String = r.get(2)?;
            let role = ConsoleRole::from_parts(&kind, r.get(3)?)
                .ok_or_else(|| FromSqlError::Other("stored console role is malformed".into()))
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into()))?;
            Ok(ConsoleLink {
                id: r.get(0)?,
                secret_hash: r.get(1)?,
                role,
                platform_id: r.get(4)?,
                created_seq: r.get(5)?,
                created_at: r.get(6)?,
                expires_at: r.get(7)?,
                used_at: r.get(8)?,
            })
        })
        .optional()
    })
    .map_err(db_error)
}

/// Marks a link used; false when it already was (the single use is decided here, in the writer).
pub fn mark_link_used(tx: &Tx<'_>, id: ConsoleLinkId, at: Timestamp) -> Result<bool> {
    exec(
        tx,
        "UPDATE console_links SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL",
        params![id.to_string(), at.millis()],
    )
    .map(|n| n == 1)
}

/// A console session as stored (its cookie secret only as a hash).
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    pub id: ConsoleSessionId,
    pub link_id: ConsoleLinkId,
    pub credential_id: CredentialId,
    pub role: ConsoleRole,
    pub platform_id: Option<PlatformId>,
    pub created_at: Timestamp,
    pub last_used_at: Timestamp,
    pub expires_at: Timestamp,
    pub ended_at: Option<Timestamp>,
}

pub fn insert_session(tx: &Tx<'_>, s: &ConsoleSession, secret_hash: &str) -> Result<()> {
    exec(
        tx,
        "INSERT INTO console_sessions (id, secret_hash, link_id, credential_id, role, user_id, platform_id,
             created_at, last_used_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            s.id.to_string(),
            secret_hash,
            s.link_id.to_string(),
            s.credential_id.to_string(),
            s.role.as_str(),
            s.role.user_id().map(|u| u.to_string()),
            s.platform_id.map(|p| p.to_string()),
            s.created_at.millis(),
            s.last_used_at.millis(),
            s.expires_at.millis(),
        ],
    )
    .map(drop)
}

pub fn find_session(conn: &Conn, secret_hash: &str) -> Result<Option<ConsoleSession>> {
    conn.prepare_cached(
        "SELECT id, link_id, credential_id, role, user_id, platform_id, created_at, last_used_at, expires_at, ended_at
         FROM console_sessions WHERE secret_hash = ?1",
    )
    .and_then(|mut st| {
        st.query_row([secret_hash], |r| {
            let kind: String = r.get(3)?;
            let role = ConsoleRole::from_parts(&kind, r.get(4)?)
                .ok_or_else(|| FromSqlError::Other("stored console role is malformed".into()))
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into()))?;
            Ok(ConsoleSession {
                id: r.get(0)?,
                link_id: r.get(1)?,
                credential_id: r.get(2)?,
                role,
                platform_id: r.get(5)?,
                created_at: r.get(6)?,
                last_used_at: r.get(7)?,
                expires_at: r.get(8)?,
                ended_at: r.get(9)?,
            })
        })
        .optional()
    })
    .map_err(db_error)
}

pub fn touch_session(tx: &Tx<'_>, id: ConsoleSessionId, at: Timestamp) -> Result<()> {
    exec(
        tx,
        tx.conn().dialect().pick(
            "UPDATE console_sessions SET last_used_at = max(last_used_at, ?2) WHERE id = ?1 AND ended_at IS NULL",
            "UPDATE console_sessions SET last_used_at = greatest(last_used_at, ?2) WHERE id = ?1 AND ended_at IS NULL",
        ),
        params![id.to_string(), at.millis()],
    )
    .map(drop)
}

/// Ends a session; false when it had already ended.
pub fn end_session(tx: &Tx<'_>, id: ConsoleSessionId, at: Timestamp, reason: &str) -> Result<bool> {
    exec(
        tx,
        "UPDATE console_sessions SET ended_at = ?2, ended_reason = ?3 WHERE id = ?1 AND ended_at IS NULL",
        params![id.to_string(), at.millis(), reason],
    )
    .map(|n| n == 1)
}

/// Whether a platform has ever had a delegation from this user: the condition for the platform
/// to mint the user a console link.
pub fn platform_knows_user(conn: &Conn, platform: PlatformId, user: UserId) -> Result<bool> {
    conn.prepare_cached("SELECT EXISTS(SELECT 1 FROM delegations WHERE user_id = ?1 AND +platform_id = ?2)")
        .and_then(|mut st| st.query_row(params![user.to_string(), platform.to_string()], |r| r.get(0)))
        .map_err(db_error)
}

/// One delegation of the person, with the names the page shows.
#[derive(Debug, Clone)]
pub struct ConnectedDelegation {
    pub delegation: Delegation,
    pub agent_name: String,
    pub agent_status: AgentStatus,
    pub integration_name: String,
    pub platform_name: String,
}

/// The user's delegations (every status, newest first), limited to one platform when asked: the
/// person's own rows only, whatever `vis` reaches beyond them.
pub fn connected(
    conn: &Conn,
    vis: Visibility,
    user: UserId,
    platform: Option<PlatformId>,
) -> Result<Vec<ConnectedDelegation>> {
    if let Reach::User(u) = vis.reach() {
        if u != user {
            return Ok(Vec::new());
        }
    } else if vis.reach() != Reach::All {
        return Ok(Vec::new());
    }
    // PostgreSQL infers no type for a parameter only tested for NULL: the cast gives it one.
    let sql = conn.dialect().pick(
        CONNECTED,
        "SELECT d.id, d.user_id, d.agent_id, d.integration_id, d.platform_id, d.scopes, d.status, d.created_at,
                d.revoked_at, d.revoked_reason, a.name, a.status, i.name, p.name
         FROM delegations d
         JOIN agents a ON a.id = d.agent_id
         JOIN integrations i ON i.id = d.integration_id
         JOIN platforms p ON p.id = d.platform_id
         WHERE d.user_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR d.platform_id = ?2)
         ORDER BY d.status = 'active' DESC, d.id DESC LIMIT 500",
    );
    let mut st = conn.prepare_cached(sql).map_err(db_error)?;
    let found = st
        .query_map(params![user.to_string(), platform.map(|p| p.to_string())], |r| {
            Ok(ConnectedDelegation {
                delegation: rows::delegation(r)?,
                agent_name: r.get(10)?,
                agent_status: r.get(11)?,
                integration_name: r.get(12)?,
                platform_name: r.get(13)?,
            })
        })
        .map_err(db_error)?;
    found.collect::<super::conn::DbResult<Vec<_>>>().map_err(db_error)
}

/// [`connected`]'s statement on SQLite.
const CONNECTED: &str =
    "SELECT d.id, d.user_id, d.agent_id, d.integration_id, d.platform_id, d.scopes, d.status, d.created_at,
                      d.revoked_at, d.revoked_reason, a.name, a.status, i.name, p.name
               FROM delegations d
               JOIN agents a ON a.id = d.agent_id
               JOIN integrations i ON i.id = d.integration_id
               JOIN platforms p ON p.id = d.platform_id
               WHERE d.user_id = ?1 AND (?2 IS NULL OR d.platform_id = ?2)
               ORDER BY d.status = 'active' DESC, d.id DESC LIMIT 500";

/// Per delegation of the user: active sessions in all, top-level ones, and the distinct scope sets
/// they hold (as stored) — the page's counts and "scopes in use" without reading every row.
pub struct SessionSummary {
    pub delegation: DelegationId,
    pub active: i64,
    pub top_level: i64,
    pub scope_sets: Vec<ScopeSet>,
}

pub fn session_summary(
    conn: &Conn,
    vis: Visibility,
    user: UserId,
    platform: Option<PlatformId>,
    now: Timestamp,
) -> Result<Vec<SessionSummary>> {
    if !matches!(vis.reach(), Reach::All) && vis.reach() != Reach::User(user) {
        return Ok(Vec::new());
    }
    let mut st = conn
        .prepare_cached(conn.dialect().pick(
            "SELECT delegation_id, count(*), sum(parent_id IS NULL), json_group_array(DISTINCT scopes)
             FROM sessions WHERE user_id = ?1 AND status = 'active' AND expires_at > ?2
             AND (?3 IS NULL OR +platform_id = ?3) GROUP BY delegation_id",
            "SELECT delegation_id, count(*), count(*) FILTER (WHERE parent_id IS NULL), json_agg(DISTINCT scopes)::text
             FROM sessions WHERE user_id = ?1 AND status = 'active' AND expires_at > ?2
             AND (CAST(?3 AS TEXT) IS NULL OR platform_id = ?3) GROUP BY delegation_id",
        ))
        .map_err(db_error)?;
    let found = st
        .query_map(params![user.to_string(), now.millis(), platform.map(|p| p.to_string())], |r| {
            let sets: String = r.get(3)?;
            Ok((r.get::<_, DelegationId>(0)?, r.get(1)?, r.get(2)?, sets))
        })
        .map_err(db_error)?;
    let mut out = Vec::new();
    for row in found {
        let (delegation, active, top_level, sets) = row.map_err(db_error)?;
        let texts: Vec<String> = serde_json::from_str(&sets).map_err(Error::internal)?;
        let scope_sets = texts
            .iter()
            .map(|t| ScopeSet::from_json(t).map_err(|_| Error::internal("stored scope set")))
            .collect::<Result<_>>()?;
        out.push(SessionSummary { delegation, active, top_level, scope_sets });
    }
    Ok(out)
}

/// A delegation's newest active top-level sessions, at most `limit` (the user's own only).
pub fn top_sessions(
    conn: &Conn,
    vis: Visibility,
    user: UserId,
    delegation: DelegationId,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Session>> {
    if !matches!(vis.reach(), Reach::All) && vis.reach() != Reach::User(user) {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {} FROM sessions WHERE delegation_id = ?1 AND +user_id = ?2 AND status = 'active' AND expires_at > ?3
         AND parent_id IS NULL ORDER BY id DESC LIMIT ?4",
        rows::SESSION_COLUMNS
    );
    let mut st = conn.prepare_cached(&sql).map_err(db_error)?;
    let found = st
        .query_map(params![delegation.to_string(), user.to_string(), now.millis(), limit as i64], |r| {
            rows::session(r, now)
        })
        .map_err(db_error)?;
    found.collect::<super::conn::DbResult<Vec<_>>>().map_err(db_error)
}

/// A session's active sub-agent sessions (the user's own only).
pub fn child_sessions(
    conn: &Conn,
    vis: Visibility,
    user: UserId,
    parent: SessionId,
    now: Timestamp,
) -> Result<Vec<Session>> {
    if !matches!(vis.reach(), Reach::All) && vis.reach() != Reach::User(user) {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {} FROM sessions WHERE parent_id = ?1 AND +user_id = ?2 AND status = 'active' AND expires_at > ?3
         ORDER BY id",
        rows::SESSION_COLUMNS
    );
    let mut st = conn.prepare_cached(&sql).map_err(db_error)?;
    let found = st
        .query_map(params![parent.to_string(), user.to_string(), now.millis()], |r| rows::session(r, now))
        .map_err(db_error)?;
    found.collect::<super::conn::DbResult<Vec<_>>>().map_err(db_error)
}

/// Sessions by id, as `vis` may see them (ids outside it are left out).
pub fn sessions_by_id(conn: &Conn, vis: Visibility, ids: &[SessionId], now: Timestamp) -> Result<Vec<Session>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        match super::sessions::get_session(conn, vis, *id, now) {
            Ok(s) => out.push(s),
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// One webhook delivery of an event, for "which relying services were told, and when".
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub webhook_id: WebhookId,
    pub url: String,
    pub event_seq: i64,
    pub status: String,
    pub attempts: i64,
    pub last_attempt_at: Option<Timestamp>,
    pub acknowledged_at: Option<Timestamp>,
    pub last_status: Option<i64>,
}

/// The webhook deliveries of the events with seq in `from..=to` (at most `limit`). Webhooks are
/// few and deliveries many: `CROSS JOIN` keeps SQLite walking webhooks first, each one's
/// deliveries found by the (webhook_id, event_seq) index.
pub fn deliveries_between(conn: &Conn, from: i64, to: i64, limit: usize) -> Result<Vec<DeliveryRow>> {
    let mut st = conn
        .prepare_cached(conn.dialect().pick(
            "SELECT d.webhook_id, w.url, d.event_seq, d.status, d.attempts, d.last_attempt_at, d.acknowledged_at,
                    d.last_status
             FROM webhooks w CROSS JOIN webhook_deliveries d
             ON d.webhook_id = w.id AND d.event_seq BETWEEN ?1 AND ?2
             ORDER BY d.event_seq, d.webhook_id LIMIT ?3",
            // PostgreSQL's CROSS JOIN takes no ON; its planner orders the join itself.
            "SELECT d.webhook_id, w.url, d.event_seq, d.status, d.attempts, d.last_attempt_at, d.acknowledged_at,
                    d.last_status
             FROM webhooks w JOIN webhook_deliveries d
             ON d.webhook_id = w.id AND d.event_seq BETWEEN ?1 AND ?2
             ORDER BY d.event_seq, d.webhook_id LIMIT ?3",
        ))
        .map_err(db_error)?;
    let found = st
        .query_map(params![from, to, limit as i64], |r| {
            Ok(DeliveryRow {
                webhook_id: r.get(0)?,
                url: r.get(1)?,
                event_seq: r.get(2)?,
                status: r.get(3)?,
                attempts: r.get(4)?,
                last_attempt_at: r.get(5)?,
                acknowledged_at: r.get(6)?,
                last_status: r.get(7)?,
            })
        })
        .map_err(db_error)?;
    found.collect::<super::conn::DbResult<Vec<_>>>().map_err(db_error)
}

/// The last event a trigger led to (its cascade's end), or the trigger itself.
pub fn cascade_end(conn: &Conn, trigger: i64) -> Result<i64> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT max(seq) FROM audit_events WHERE seq >= ?1 AND (seq = ?1 OR cause_seq = ?1)")
        .and_then(|mut st| st.query_row([trigger], |r| r.get(0)))
        .map_err(db_error)?;
    Ok(last.unwrap_or(trigger))
}

/// The admin overview's figures.
#[derive(Debug, Clone, Default)]
pub struct Overview {
    pub users: i64,
    pub platforms: Vec<(PlatformId, String, PlatformStatus, i64)>,
    pub failing_webhooks: Vec<(WebhookId, String, i64, Option<String>)>,
}

pub fn overview(conn: &Conn, now: Timestamp) -> Result<Overview> {
    let users: i64 =
        conn.query_row("SELECT count(*) FROM users", rusqlite::params![], |r| r.get(0)).map_err(db_error)?;
    let mut st = conn
        .prepare_cached(
            "SELECT p.id, p.name, p.status,
                    (SELECT count(*) FROM sessions s WHERE s.platform_id = p.id AND s.status = 'active'
                        AND s.expires_at > ?1)
             FROM platforms p ORDER BY p.id LIMIT 200",
        )
        .map_err(db_error)?;
    let platforms = st
        .query_map([now.millis()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .map_err(db_error)?
        .collect::<super::conn::DbResult<Vec<_>>>()
        .map_err(db_error)?;
    // A webhook is failing when a delivery gave up, or one is still being retried.
    let mut st = conn
        .prepare_cached(
            "SELECT w.id, w.url, count(*), max(d.last_error)
             FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
             WHERE w.deleted_at IS NULL AND (d.status = 'failed' OR (d.status = 'pending' AND d.attempts > 0))
             GROUP BY w.id ORDER BY w.id LIMIT 100",
        )
        .map_err(db_error)?;
    let failing_webhooks = st
        .query_map(rusqlite::params![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .map_err(db_error)?
        .collect::<super::conn::DbResult<Vec<_>>>()
        .map_err(db_error)?;
    Ok(Overview { users, platforms, failing_webhooks })
}

/// The newest revocation triggers (events that start a cascade), newest first.
pub fn recent_triggers(conn: &Conn, limit: usize) -> Result<Vec<crate::audit::AuditEvent>> {
    let sql = format!(
        "SELECT {} FROM audit_events WHERE seq IN (
             SELECT seq FROM audit_events WHERE cause_seq IS NULL AND action IN ({}) ORDER BY seq DESC LIMIT ?1)
         ORDER BY seq DESC",
        rows::AUDIT_COLUMNS,
        TRIGGER_ACTIONS.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(", ")
    );
    let mut st = conn.prepare_cached(&sql).map_err(db_error)?;
    let found = st.query_map([Value::Integer(limit as i64)], rows::audit_event).map_err(db_error)?;
    found.collect::<super::conn::DbResult<Vec<_>>>().map_err(db_error)
}

/// The actions a coverage report accepts as a trigger (see `store::coverage`).
pub const TRIGGER_ACTIONS: &[&str] = &[
    "user.disabled",
    "user.password_reset",
    "user.credential_compromised",
    "user.mfa_reset",
    "user.signed_out_all",
    "user.permissions_changed",
    "user.agent_disconnected",
    "user.integration_disconnected",
    "delegation.revoked",
    "session.revoked",
    "token.revoked_reuse",
    "integration.disabled",
    "agent.suspended",
    "agent.deregistered",
    "platform.disabled",
];
