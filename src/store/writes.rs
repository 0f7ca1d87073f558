//! Inserts and updates, each a small function over the open write transaction.

use rusqlite::params;

use super::{db_error, rows, Tx};
use crate::domain::*;

fn exec(tx: &Tx<'_>, sql: &str, params: impl rusqlite::Params) -> Result<usize> {
    tx.conn().prepare_cached(sql).and_then(|mut st| st.execute(params)).map_err(db_error)
}

pub fn insert_platform(tx: &Tx<'_>, p: &Platform) -> Result<()> {
    exec(
        tx,
        "INSERT INTO platforms (id, name, status, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![p.id.to_string(), p.name, p.status.as_str(), p.created_at.millis()],
    )
    .map(drop)
}

pub fn insert_agent(tx: &Tx<'_>, a: &Agent) -> Result<()> {
    exec(
        tx,
        "INSERT INTO agents (id, platform_id, name, scopes, status, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            a.id.to_string(),
            a.platform_id.to_string(),
            a.name,
            a.scopes.to_json(),
            a.status.as_str(),
            a.created_at.millis()
        ],
    )
    .map(drop)
}

pub fn insert_integration(tx: &Tx<'_>, i: &Integration) -> Result<()> {
    exec(
        tx,
        "INSERT INTO integrations (id, platform_id, name, scopes, status, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            i.id.to_string(),
            i.platform_id.to_string(),
            i.name,
            i.scopes.to_json(),
            i.status.as_str(),
            i.created_at.millis()
        ],
    )
    .map(drop)
}

pub fn insert_user(tx: &Tx<'_>, u: &User) -> Result<()> {
    exec(
        tx,
        "INSERT INTO users (id, external_id, display_name, permissions, status, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![u.id.to_string(), u.external_id, u.display_name, u.permissions.to_json(), u.status.as_str(), u.created_at.millis()],
    )
    .map(drop)
}

pub fn insert_delegation(tx: &Tx<'_>, d: &Delegation) -> Result<()> {
    exec(
        tx,
        "INSERT INTO delegations (id, user_id, agent_id, integration_id, platform_id, scopes, status, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            d.id.to_string(),
            d.user_id.to_string(),
            d.agent_id.to_string(),
            d.integration_id.to_string(),
            d.platform_id.to_string(),
            d.scopes.to_json(),
            d.status.as_str(),
            d.created_at.millis()
        ],
    )
    .map(drop)
}

pub fn insert_session(tx: &Tx<'_>, s: &Session, depth: i64, created_seq: i64) -> Result<()> {
    exec(
        tx,
        "INSERT INTO sessions (id, delegation_id, user_id, agent_id, integration_id, platform_id, parent_id, depth,
                               created_seq, scopes, status, created_at, expires_at, ip, user_agent, device)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'active', ?11, ?12, ?13, ?14, ?15)",
        params![
            s.id.to_string(),
            s.delegation_id.to_string(),
            s.user_id.to_string(),
            s.agent_id.to_string(),
            s.integration_id.to_string(),
            s.platform_id.to_string(),
            s.parent_session_id.map(|p| p.to_string()),
            depth,
            created_seq,
            s.scopes.to_json(),
            s.created_at.millis(),
            s.expires_at.millis(),
            s.metadata.ip,
            s.metadata.user_agent,
            s.metadata.device,
        ],
    )
    .map(drop)
}

/// Records a credential and the API key (`kid`) that signed it.
pub fn insert_credential(tx: &Tx<'_>, c: &Credential, kid: u32) -> Result<()> {
    exec(
        tx,
        "INSERT INTO credentials (id, role, platform_id, user_id, label, created_at, expires_at, kid)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            c.id.to_string(),
            c.role.as_str(),
            c.platform_id.map(|p| p.to_string()),
            c.user_id.map(|u| u.to_string()),
            c.label,
            c.created_at.millis(),
            c.expires_at.map(|t| t.millis()),
            kid
        ],
    )
    .map(drop)
}

pub fn revoke_credential(tx: &Tx<'_>, id: CredentialId) -> Result<()> {
    exec(
        tx,
        "UPDATE credentials SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id.to_string(), tx.now().millis()],
    )
    .map(drop)
}

/// Tables whose rows carry a `status` the cascades change.
#[derive(Debug, Clone, Copy)]
pub enum StatusTable {
    Platforms,
    Agents,
    Integrations,
    Users,
}

pub fn set_status(tx: &Tx<'_>, table: StatusTable, id: &str, status: &str) -> Result<()> {
    let sql = match table {
        StatusTable::Platforms => "UPDATE platforms SET status = ?2 WHERE id = ?1",
        StatusTable::Agents => "UPDATE agents SET status = ?2 WHERE id = ?1",
        StatusTable::Integrations => "UPDATE integrations SET status = ?2 WHERE id = ?1",
        StatusTable::Users => "UPDATE users SET status = ?2 WHERE id = ?1",
    };
    exec(tx, sql, params![id, status]).map(drop)
}

pub fn set_user_permissions(tx: &Tx<'_>, id: UserId, permissions: &ScopeSet) -> Result<()> {
    exec(tx, "UPDATE users SET permissions = ?2 WHERE id = ?1", params![id.to_string(), permissions.to_json()])
        .map(drop)
}

pub fn set_delegation_scopes(tx: &Tx<'_>, id: DelegationId, scopes: &ScopeSet) -> Result<()> {
    exec(tx, "UPDATE delegations SET scopes = ?2 WHERE id = ?1", params![id.to_string(), scopes.to_json()]).map(drop)
}

pub fn mark_delegation_revoked(tx: &Tx<'_>, id: DelegationId, reason: &str) -> Result<()> {
    exec(
        tx,
        "UPDATE delegations SET status = 'revoked', revoked_at = ?2, revoked_reason = ?3 WHERE id = ?1",
        params![id.to_string(), tx.now().millis(), reason],
    )
    .map(drop)
}

pub fn mark_session_revoked(tx: &Tx<'_>, session: &ActiveSession, reason: &str, by_seq: i64) -> Result<()> {
    exec(
        tx,
        "UPDATE sessions SET status = 'revoked', revoked_at = ?2, revoked_reason = ?3, revoked_by_seq = ?4
         WHERE rowid = ?1 AND id = ?5",
        params![session.row, tx.now().millis(), reason, by_seq, session.id.to_string()],
    )
    .and_then(|changed| match changed {
        1 => Ok(()),
        _ => Err(Error::internal(format!("session {} was not at the row read for it", session.id))),
    })
}

/// Which active delegations a trigger ends.
#[derive(Debug, Clone, Copy)]
pub enum DelegationsOf {
    User(UserId),
    Agent(AgentId),
    Integration(IntegrationId),
    Platform(PlatformId),
    UserAgent(UserId, AgentId),
    UserIntegration(UserId, IntegrationId),
}

pub fn active_delegations(tx: &Tx<'_>, of: DelegationsOf) -> Result<Vec<Delegation>> {
    let (clause, a, b) = match of {
        DelegationsOf::User(u) => ("user_id = ?1", u.to_string(), None),
        DelegationsOf::Agent(a) => ("agent_id = ?1", a.to_string(), None),
        DelegationsOf::Integration(i) => ("integration_id = ?1", i.to_string(), None),
        DelegationsOf::Platform(p) => ("platform_id = ?1", p.to_string(), None),
        DelegationsOf::UserAgent(u, a) => ("user_id = ?1 AND agent_id = ?2", u.to_string(), Some(a.to_string())),
        DelegationsOf::UserIntegration(u, i) => {
            ("user_id = ?1 AND integration_id = ?2", u.to_string(), Some(i.to_string()))
        }
    };
    let sql = format!(
        "SELECT {} FROM delegations WHERE status = 'active' AND {clause} ORDER BY id",
        rows::DELEGATION_COLUMNS
    );
    let mut st = tx.conn().prepare_cached(&sql).map_err(db_error)?;
    let found = match b {
        None => st.query_map(params![a], rows::delegation),
        Some(b) => st.query_map(params![a, b], rows::delegation),
    }
    .map_err(db_error)?;
    found.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
}

/// What a cascade needs of an active session.
#[derive(Debug, Clone)]
pub struct ActiveSession {
    /// The row's rowid, valid only inside the write transaction that read it: the revocation
    /// updates the row through it instead of seeking the id index again.
    row: i64,
    pub id: SessionId,
    pub user_id: UserId,
    pub agent_id: AgentId,
    pub integration_id: IntegrationId,
    pub delegation_id: DelegationId,
    pub platform_id: PlatformId,
    /// The stored JSON text: only a permissions change reads it, so a cascade does not parse
    /// 100k scope sets it never looks at.
    scopes: String,
    pub expires_at: Timestamp,
}

impl ActiveSession {
    pub fn scopes(&self) -> Result<ScopeSet> {
        ScopeSet::from_json(&self.scopes)
            .map_err(|e| Error::internal(format!("session {} has unreadable scopes: {e}", self.id)))
    }
}

/// The columns [`active_session_row`] maps, from a `sessions` table aliased `s`.
const ACTIVE_SESSION_COLUMNS: &str =
    "s.rowid, s.id, s.user_id, s.agent_id, s.integration_id, s.delegation_id, s.scopes, s.expires_at, s.platform_id";

fn active_session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ActiveSession> {
    Ok(ActiveSession {
        row: r.get(0)?,
        id: r.get(1)?,
        user_id: r.get(2)?,
        agent_id: r.get(3)?,
        integration_id: r.get(4)?,
        delegation_id: r.get(5)?,
        scopes: r.get(6)?,
        expires_at: r.get(7)?,
        platform_id: r.get(8)?,
    })
}

/// Which active sessions a trigger reaches, each through an index.
#[derive(Debug, Clone, Copy)]
pub enum SessionsOf {
    User(UserId),
    Delegation(DelegationId),
    Parent(SessionId),
    One(SessionId),
}

/// Active, unexpired sessions (an expired session is already not active; revoking it would
/// write an event that changes nothing), oldest first; a user's delegation by delegation.
pub fn active_sessions(tx: &Tx<'_>, of: SessionsOf) -> Result<Vec<ActiveSession>> {
    let (column, key) = match of {
        SessionsOf::User(user) => return active_sessions_of_user(tx, user),
        SessionsOf::Delegation(d) => ("delegation_id", d.to_string()),
        SessionsOf::Parent(p) => ("parent_id", p.to_string()),
        SessionsOf::One(s) => ("id", s.to_string()),
    };
    let mut st = tx.conn().prepare_cached(&active_sessions_query(column)).map_err(db_error)?;
    let found = st.query_map(params![key, tx.now().millis()], active_session_row).map_err(db_error)?;
    found.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
}

/// A session's user is its delegation's: the user's delegations lead to every one of them
/// through the only "active" index a revocation has to update (migration 0009).
fn active_sessions_of_user(tx: &Tx<'_>, user: UserId) -> Result<Vec<ActiveSession>> {
    let delegations: Vec<DelegationId> = tx
        .conn()
        .prepare_cached("SELECT id FROM delegations WHERE user_id = ?1 ORDER BY id")
        .and_then(|mut st| st.query_map([user.to_string()], |r| r.get(0))?.collect())
        .map_err(db_error)?;
    let mut sessions = Vec::new();
    for delegation in delegations {
        sessions.extend(active_sessions(tx, SessionsOf::Delegation(delegation))?);
    }
    Ok(sessions)
}

/// The SQL of [`active_sessions`] by `column` = `?1` at time `?2`. Rows come in rowid (creation)
/// order straight from the index: no sort.
pub(super) fn active_sessions_query(column: &'static str) -> String {
    format!(
        "SELECT {ACTIVE_SESSION_COLUMNS} FROM sessions s
         WHERE s.{column} = ?1 AND s.status = 'active' AND s.expires_at > ?2 ORDER BY s.rowid"
    )
}

/// Depth of a session in its sub-agent tree (0 for a top-level session).
pub fn session_depth(tx: &Tx<'_>, id: SessionId) -> Result<i64> {
    tx.conn()
        .prepare_cached("SELECT depth FROM sessions WHERE id = ?1")
        .and_then(|mut st| st.query_row([id.to_string()], |r| r.get(0)))
        .map_err(db_error)
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
pub fn last_event_for(tx: &Tx<'_>, subject_id: &str, actions: &[&str]) -> Result<Option<crate::audit::AuditEvent>> {
    use rusqlite::OptionalExtension;
    let mut st = tx.conn().prepare_cached(&LAST_EVENT_FOR).map_err(db_error)?;
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
pub fn audit_event_at(tx: &Tx<'_>, seq: i64) -> Result<Option<crate::audit::AuditEvent>> {
    use rusqlite::OptionalExtension;
    let sql = format!("SELECT {} FROM audit_events WHERE seq = ?1", rows::AUDIT_COLUMNS);
    tx.conn()
        .prepare_cached(&sql)
        .and_then(|mut st| st.query_row([seq], rows::audit_event).optional())
        .map_err(db_error)
}

/// Records when sessions were last used (batched from authorize; not a state change, not audited).
pub fn touch_session(
    tx: &Tx<'_>,
    id: SessionId,
    at: Timestamp,
    ip: Option<&str>,
    user_agent: Option<&str>,
) -> Result<()> {
    exec(
        tx,
        "UPDATE sessions SET last_seen_at = max(coalesce(last_seen_at, 0), ?2),
                             last_ip = coalesce(?3, last_ip), last_user_agent = coalesce(?4, last_user_agent)
         WHERE id = ?1",
        params![id.to_string(), at.millis(), ip, user_agent],
    )
    .map(drop)
}

/// A session and its ancestors, nearest first: (session, agent) pairs for the token's chain.
pub fn session_ancestry(tx: &Tx<'_>, id: SessionId) -> Result<Vec<(SessionId, AgentId)>> {
    super::reads::session_ancestry(tx.conn(), id)
}

pub fn insert_access_token(
    tx: &Tx<'_>,
    session: SessionId,
    revocation_id: &str,
    kid: u32,
    issued_at: Timestamp,
    expires_at: Timestamp,
) -> Result<()> {
    exec(
        tx,
        "INSERT INTO access_tokens (revocation_id, session_id, kid, issued_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![revocation_id, session.to_string(), kid, issued_at.millis(), expires_at.millis()],
    )
    .map(drop)
}

pub fn insert_refresh_token(tx: &Tx<'_>, session: SessionId, hash: &str) -> Result<()> {
    exec(
        tx,
        "INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES (?1, ?2, ?3)",
        params![hash, session.to_string(), tx.now().millis()],
    )
    .map(drop)
}

/// A stored refresh token (by hash).
#[derive(Debug, Clone)]
pub struct StoredRefreshToken {
    pub session_id: SessionId,
    pub used: bool,
}

pub fn find_refresh_token(tx: &Tx<'_>, hash: &str) -> Result<Option<StoredRefreshToken>> {
    use rusqlite::OptionalExtension;
    tx.conn()
        .prepare_cached("SELECT session_id, used_at IS NOT NULL FROM refresh_tokens WHERE hash = ?1")
        .and_then(|mut st| {
            st.query_row([hash], |r| Ok(StoredRefreshToken { session_id: r.get(0)?, used: r.get(1)? })).optional()
        })
        .map_err(db_error)
}

pub fn mark_refresh_used(tx: &Tx<'_>, hash: &str) -> Result<()> {
    exec(tx, "UPDATE refresh_tokens SET used_at = ?2 WHERE hash = ?1", params![hash, tx.now().millis()]).map(drop)
}

/// Puts the revocation ids of a revoked session's unexpired access tokens on the feed.
pub fn feed_revoked_session(tx: &Tx<'_>, session: SessionId) -> Result<()> {
    exec(
        tx,
        "INSERT INTO revocation_feed (revocation_id, session_id, expires_at)
         SELECT revocation_id, session_id, expires_at FROM access_tokens WHERE session_id = ?1 AND expires_at > ?2",
        params![session.to_string(), tx.now().millis()],
    )
    .map(drop)
}

/// Forgets feed entries and access-token records whose token has expired: they can no longer
/// verify, so no one needs them.
pub fn purge_expired_tokens(tx: &Tx<'_>) -> Result<usize> {
    let now = tx.now().millis();
    let feed = exec(tx, "DELETE FROM revocation_feed WHERE expires_at <= ?1", params![now])?;
    let tokens = exec(tx, "DELETE FROM access_tokens WHERE expires_at <= ?1", params![now])?;
    Ok(feed + tokens)
}

pub fn insert_webhook(tx: &Tx<'_>, webhook: &super::reads::Webhook, owner_role: &str, owner_id: &str) -> Result<()> {
    exec(
        tx,
        "INSERT INTO webhooks (id, url, events, owner_role, owner_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            webhook.id.to_string(),
            webhook.url,
            serde_json::to_string(&webhook.events).unwrap_or_else(|_| "[]".into()),
            owner_role,
            owner_id,
            webhook.created_at.millis()
        ],
    )
    .map(drop)
}

/// A platform's credentials not revoked yet, with their expiry.
pub fn live_credentials_of_platform(
    tx: &Tx<'_>,
    platform: PlatformId,
) -> Result<Vec<(CredentialId, Option<Timestamp>)>> {
    let mut st = tx
        .conn()
        .prepare_cached(
            "SELECT id, expires_at FROM credentials WHERE platform_id = ?1 AND revoked_at IS NULL ORDER BY id",
        )
        .map_err(db_error)?;
    let rows = st
        .query_map(params![platform.to_string()], |r| {
            Ok((r.get::<_, CredentialId>(0)?, r.get::<_, Option<Timestamp>>(1)?))
        })
        .map_err(db_error)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
}

/// The live webhooks owned by `owner_role`/`owner_id`, as `(id, url)`.
pub fn webhooks_owned_by(tx: &Tx<'_>, owner_role: &str, owner_id: &str) -> Result<Vec<(WebhookId, String)>> {
    let mut st = tx
        .conn()
        .prepare_cached("SELECT id, url FROM webhooks WHERE owner_role = ?1 AND owner_id = ?2 AND deleted_at IS NULL")
        .map_err(db_error)?;
    let rows = st
        .query_map(params![owner_role, owner_id], |r| Ok((r.get::<_, WebhookId>(0)?, r.get::<_, String>(1)?)))
        .map_err(db_error)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
}

pub fn delete_webhook(tx: &Tx<'_>, id: WebhookId) -> Result<()> {
    exec(tx, "UPDATE webhooks SET deleted_at = ?2 WHERE id = ?1", params![id.to_string(), tx.now().millis()])?;
    // Nothing more will be attempted for a deleted webhook.
    exec(
        tx,
        "UPDATE webhook_deliveries SET status = 'failed', last_error = 'webhook deleted' WHERE webhook_id = ?1 AND status = 'pending'",
        params![id.to_string()],
    )
    .map(drop)
}

/// Records one delivery attempt: acknowledged, retried later, or failed for good.
pub fn record_delivery_attempt(
    tx: &Tx<'_>,
    id: i64,
    attempts: u32,
    outcome: &crate::events::webhooks::Attempt,
    retry_at: Timestamp,
    give_up: bool,
) -> Result<()> {
    use crate::events::webhooks::Attempt;
    let now = tx.now().millis();
    match outcome {
        Attempt::Acknowledged { status } => exec(
            tx,
            "UPDATE webhook_deliveries SET status = 'delivered', attempts = ?2, last_attempt_at = ?3, acknowledged_at = ?3,
                                           last_status = ?4, last_error = NULL
             WHERE id = ?1 AND status = 'pending'",
            params![id, attempts, now, status],
        ),
        Attempt::Failed { status, error } => exec(
            tx,
            "UPDATE webhook_deliveries SET status = CASE WHEN ?6 THEN 'failed' ELSE 'pending' END, attempts = ?2,
                                           last_attempt_at = ?3, next_attempt_at = ?4, last_status = ?5, last_error = ?7
             WHERE id = ?1 AND status = 'pending'",
            params![id, attempts, now, retry_at.millis(), status, give_up, error],
        ),
    }
    .map(drop)
}

/// The last recorded status of a signing key, if it was ever recorded.
pub fn signing_key_status(tx: &Tx<'_>, purpose: &str, kid: u32) -> Result<Option<String>> {
    use rusqlite::OptionalExtension;
    tx.conn()
        .prepare_cached("SELECT status FROM signing_keys WHERE purpose = ?1 AND kid = ?2")
        .and_then(|mut st| st.query_row(params![purpose, kid], |r| r.get(0)).optional())
        .map_err(db_error)
}

pub fn upsert_signing_key(tx: &Tx<'_>, purpose: &str, kid: u32, status: &str, public_key: &str) -> Result<()> {
    exec(
        tx,
        "INSERT INTO signing_keys (purpose, kid, status, public_key) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (purpose, kid) DO UPDATE SET status = excluded.status",
        params![purpose, kid, status, public_key],
    )
    .map(drop)
}

/// Whether the user ever delegated to this agent or through this integration (any status).
pub fn ever_delegated(tx: &Tx<'_>, of: DelegationsOf) -> Result<bool> {
    let (sql, user, other) = match of {
        DelegationsOf::UserAgent(u, a) => {
            ("SELECT EXISTS(SELECT 1 FROM delegations WHERE user_id = ?1 AND agent_id = ?2)", u, a.to_string())
        }
        DelegationsOf::UserIntegration(u, i) => {
            ("SELECT EXISTS(SELECT 1 FROM delegations WHERE user_id = ?1 AND integration_id = ?2)", u, i.to_string())
        }
        _ => return Err(Error::internal("ever_delegated takes a user and an agent or integration")),
    };
    tx.conn()
        .prepare_cached(sql)
        .and_then(|mut st| st.query_row(params![user.to_string(), other], |r| r.get(0)))
        .map_err(db_error)
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

/// The latest disconnect of this very agent or integration by this user.
pub fn last_disconnect_event(tx: &Tx<'_>, of: DelegationsOf) -> Result<Option<crate::audit::AuditEvent>> {
    use rusqlite::OptionalExtension;
    let (action, key, user, other) = match of {
        DelegationsOf::UserAgent(u, a) => ("user.agent_disconnected", "$.agent_id", u, a.to_string()),
        DelegationsOf::UserIntegration(u, i) => ("user.integration_disconnected", "$.integration_id", u, i.to_string()),
        _ => return Ok(None),
    };
    tx.conn()
        .prepare_cached(&LAST_DISCONNECT)
        .and_then(|mut st| st.query_row(params![user.to_string(), action, key, other], rows::audit_event).optional())
        .map_err(db_error)
}

/// Active, unexpired sessions whose parent was revoked by an event in `from_seq..=to_seq`. A
/// `session.revoked` event revokes its own subject in the same transaction, so the events of the
/// range name the sessions it revoked: read in seq order, no index on `revoked_by_seq` needed.
pub fn active_children_of_revoked(tx: &Tx<'_>, from_seq: i64, to_seq: i64) -> Result<Vec<ActiveSession>> {
    let mut st = tx.conn().prepare_cached(&CHILDREN_OF_REVOKED).map_err(db_error)?;
    let found = st.query_map(params![from_seq, to_seq, tx.now().millis()], active_session_row).map_err(db_error)?;
    found.collect::<rusqlite::Result<Vec<_>>>().map_err(db_error)
}

pub(super) static CHILDREN_OF_REVOKED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {ACTIVE_SESSION_COLUMNS} FROM sessions s
         WHERE s.status = 'active' AND s.expires_at > ?3 AND s.parent_id IS NOT NULL AND s.parent_id IN
               (SELECT subject_id FROM audit_events WHERE seq BETWEEN ?1 AND ?2 AND action = 'session.revoked')
         ORDER BY s.id"
    )
});

pub(super) const FEED_REVOKED_BETWEEN: &str = "INSERT INTO revocation_feed (revocation_id, session_id, expires_at)
     SELECT a.revocation_id, a.session_id, a.expires_at
     FROM audit_events e JOIN access_tokens a ON a.session_id = e.subject_id
     WHERE e.seq BETWEEN ?1 AND ?2 AND e.action = 'session.revoked' AND a.expires_at > ?3
     ORDER BY e.seq, a.expires_at";

/// Puts on the feed the revocation ids of the live tokens of every session revoked by an event in
/// `from_seq..=to_seq` (the sessions those events name, as for [`active_children_of_revoked`]),
/// each session's in expiry order: the order `access_tokens_by_session` reads them in, so the
/// statement sorts nothing.
pub fn feed_revoked_between(tx: &Tx<'_>, from_seq: i64, to_seq: i64) -> Result<()> {
    exec(tx, FEED_REVOKED_BETWEEN, params![from_seq, to_seq, tx.now().millis()]).map(drop)
}

/// Claims a due delivery for one attempt: true only if it is still pending, due, and has had
/// exactly `attempts` attempts (so a stale read cannot cause a second, concurrent attempt).
pub fn claim_delivery(tx: &Tx<'_>, id: i64, attempts: u32, lease_until: Timestamp) -> Result<bool> {
    exec(
        tx,
        "UPDATE webhook_deliveries SET next_attempt_at = ?3
         WHERE id = ?1 AND attempts = ?2 AND status = 'pending' AND next_attempt_at <= ?4",
        params![id, attempts, lease_until.millis(), tx.now().millis()],
    )
    .map(|changed| changed == 1)
}
