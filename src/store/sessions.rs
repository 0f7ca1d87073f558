//! Sessions: rows, reads by visibility, the active ones a cascade revokes, ancestry, last-seen,
//! the live rows loaded at start-up, and their access- and refresh-token rows.

use super::conn::{Conn, Dialect, OptionalExtension};
use rusqlite::params;
use rusqlite::types::Value;

use super::db::db_error;
use super::query::{exec, scope_tenant, text, Page, PageRequest, Select};
use super::rows;
use super::tx::Tx;
use crate::domain::*;

#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub user_id: Option<UserId>,
    pub agent_id: Option<AgentId>,
    pub integration_id: Option<IntegrationId>,
    pub delegation_id: Option<DelegationId>,
    pub status: Option<SessionStatus>,
}

pub fn get_session(conn: &Conn, vis: Visibility, id: SessionId, now: Timestamp) -> Result<Session> {
    let mut q = Select::new(rows::SESSION_COLUMNS, "sessions");
    q.and("id = ?", text(id));
    scope_tenant(&mut q, vis);
    q.one(conn, |r| rows::session(r, now))?.ok_or(Error::NotFound("session"))
}

pub fn list_sessions(
    conn: &Conn,
    vis: Visibility,
    filter: &SessionFilter,
    page: &PageRequest,
    now: Timestamp,
) -> Result<Page<Session>> {
    sessions_listing(vis, filter, now).page(conn, page, |r| rows::session(r, now), |s| s.id.to_string())
}

fn sessions_listing(vis: Visibility, filter: &SessionFilter, now: Timestamp) -> Select {
    let mut q = Select::new(rows::SESSION_COLUMNS, "sessions");
    scope_tenant(&mut q, vis);
    // The narrowest filter leads the index search; a `+` keeps SQLite (which has no statistics)
    // from walking, say, every user's sessions of an agent to find one user's.
    let by_delegation = filter.delegation_id.is_some();
    let by_user = !by_delegation && (filter.user_id.is_some() || matches!(vis.reach(), Reach::User(_)));
    let by_agent = !by_delegation && !by_user && filter.agent_id.is_some();
    q.and_if("delegation_id = ?", filter.delegation_id.map(text))
        .and_if(if by_delegation { "+user_id = ?" } else { "user_id = ?" }, filter.user_id.map(text))
        .and_if(if by_delegation || by_user { "+agent_id = ?" } else { "agent_id = ?" }, filter.agent_id.map(text))
        .and_if(
            if by_delegation || by_user || by_agent { "+integration_id = ?" } else { "integration_id = ?" },
            filter.integration_id.map(text),
        );
    match filter.status {
        None => {}
        Some(SessionStatus::Revoked) => {
            q.and_static("status = 'revoked'");
        }
        Some(SessionStatus::Active) => {
            q.and_static("status = 'active'").and("expires_at > ?", Value::Integer(now.millis()));
        }
        Some(SessionStatus::Expired) => {
            q.and_static("status = 'active'").and("expires_at <= ?", Value::Integer(now.millis()));
        }
    }
    q
}

pub fn insert_session(tx: &Tx<'_>, s: &Session, depth: i64, created_seq: i64) -> Result<()> {
    if tx.conn.dialect() == Dialect::Postgres {
        // Held back and written with the command's other rows in one statement (store::deferred).
        tx.deferred.borrow_mut().session_created(super::deferred::SessionRow {
            id: s.id.to_string(),
            delegation_id: s.delegation_id.to_string(),
            user_id: s.user_id.to_string(),
            agent_id: s.agent_id.to_string(),
            integration_id: s.integration_id.to_string(),
            platform_id: s.platform_id.to_string(),
            parent_id: s.parent_session_id.map(|p| p.to_string()),
            depth,
            created_seq,
            scopes: s.scopes.to_json(),
            created_at: s.created_at.millis(),
            expires_at: s.expires_at.millis(),
            ip: s.metadata.ip.clone(),
            user_agent: s.metadata.user_agent.clone(),
            device: s.metadata.device.clone(),
        });
        return Ok(());
    }
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

pub fn mark_session_revoked(tx: &Tx<'_>, session: &ActiveSession, reason: &str, by_seq: i64) -> Result<()> {
    let (now, id) = (tx.now().millis(), session.id.to_string());
    match tx.conn.dialect() {
        Dialect::Sqlite => exec(
            tx,
            "UPDATE sessions SET status = 'revoked', revoked_at = ?2, revoked_reason = ?3, revoked_by_seq = ?4
             WHERE rowid = ?1 AND id = ?5",
            params![session.row, now, reason, by_seq, id],
        )
        .and_then(|changed| match changed {
            1 => Ok(()),
            _ => Err(Error::internal(format!("session {} was not at the row read for it", session.id))),
        }),
        // No rowid; held back and written with the cascade's other revocations in one statement
        // (store::deferred), which checks that every session was found.
        Dialect::Postgres => {
            tx.deferred.borrow_mut().session_revoked(now, id, reason, by_seq);
            Ok(())
        }
    }
}

/// What a cascade needs of an active session.
#[derive(Debug, Clone)]
pub struct ActiveSession {
    /// The row's rowid, valid only inside the write transaction that read it: the revocation
    /// updates the row through it instead of seeking the id index again (0 on PostgreSQL, which
    /// updates by id).
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

/// [`ACTIVE_SESSION_COLUMNS`] on PostgreSQL, which has no rowid.
const ACTIVE_SESSION_COLUMNS_PG: &str =
    "0, s.id, s.user_id, s.agent_id, s.integration_id, s.delegation_id, s.scopes, s.expires_at, s.platform_id";

fn active_session_row(r: &super::conn::Row<'_>) -> rusqlite::Result<ActiveSession> {
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
pub fn active_sessions(conn: &Conn, now: Timestamp, of: SessionsOf) -> Result<Vec<ActiveSession>> {
    let (column, key) = match of {
        SessionsOf::User(user) => return active_sessions_of_user(conn, now, user),
        SessionsOf::Delegation(d) => ("delegation_id", d.to_string()),
        SessionsOf::Parent(p) => ("parent_id", p.to_string()),
        SessionsOf::One(s) => ("id", s.to_string()),
    };
    let mut st = conn.prepare_cached(&active_sessions_query(conn.dialect(), column)).map_err(db_error)?;
    let found = st.query_map(params![key, now.millis()], active_session_row).map_err(db_error)?;
    found.collect::<super::conn::DbResult<Vec<_>>>().map_err(db_error)
}

/// A session's user is its delegation's: the user's delegations lead to every one of them
/// through the only "active" index a revocation has to update (migration 0009).
fn active_sessions_of_user(conn: &Conn, now: Timestamp, user: UserId) -> Result<Vec<ActiveSession>> {
    let delegations: Vec<DelegationId> = conn
        .prepare_cached("SELECT id FROM delegations WHERE user_id = ?1 ORDER BY id")
        .and_then(|mut st| st.query_map([user.to_string()], |r| r.get(0))?.collect())
        .map_err(db_error)?;
    let mut sessions = Vec::new();
    for delegation in delegations {
        sessions.extend(active_sessions(conn, now, SessionsOf::Delegation(delegation))?);
    }
    Ok(sessions)
}

/// The SQL of [`active_sessions`] by `column` = `?1` at time `?2`. Rows come in rowid (creation)
/// order straight from the index: no sort. PostgreSQL orders by the seq of each one's creation.
pub(super) fn active_sessions_query(dialect: Dialect, column: &'static str) -> String {
    match dialect {
        Dialect::Sqlite => format!(
            "SELECT {ACTIVE_SESSION_COLUMNS} FROM sessions s
             WHERE s.{column} = ?1 AND s.status = 'active' AND s.expires_at > ?2 ORDER BY s.rowid"
        ),
        Dialect::Postgres => format!(
            "SELECT {ACTIVE_SESSION_COLUMNS_PG} FROM sessions s
             WHERE s.{column} = ?1 AND s.status = 'active' AND s.expires_at > ?2 ORDER BY s.created_seq, s.id"
        ),
    }
}

/// Active, unexpired sessions whose parent was revoked by an event in `from_seq..=to_seq`. A
/// `session.revoked` event revokes its own subject in the same transaction, so the events of the
/// range name the sessions it revoked: read in seq order, no index on `revoked_by_seq` needed.
pub fn active_children_of_revoked(
    conn: &Conn,
    now: Timestamp,
    from_seq: i64,
    to_seq: i64,
) -> Result<Vec<ActiveSession>> {
    let mut st =
        conn.prepare_cached(conn.dialect().pick(&CHILDREN_OF_REVOKED, &CHILDREN_OF_REVOKED_PG)).map_err(db_error)?;
    let found = st.query_map(params![from_seq, to_seq, now.millis()], active_session_row).map_err(db_error)?;
    found.collect::<super::conn::DbResult<Vec<_>>>().map_err(db_error)
}

pub(super) static CHILDREN_OF_REVOKED: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| children_of_revoked(ACTIVE_SESSION_COLUMNS));

/// [`CHILDREN_OF_REVOKED`] on PostgreSQL.
static CHILDREN_OF_REVOKED_PG: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| children_of_revoked(ACTIVE_SESSION_COLUMNS_PG));

fn children_of_revoked(columns: &str) -> String {
    format!(
        "SELECT {columns} FROM sessions s
         WHERE s.status = 'active' AND s.expires_at > ?3 AND s.parent_id IS NOT NULL AND s.parent_id IN
               (SELECT subject_id FROM audit_events WHERE seq BETWEEN ?1 AND ?2 AND action = 'session.revoked')
         ORDER BY s.id"
    )
}

/// Depth of a session in its sub-agent tree (0 for a top-level session).
pub fn session_depth(conn: &Conn, id: SessionId) -> Result<i64> {
    conn.prepare_cached("SELECT depth FROM sessions WHERE id = ?1")
        .and_then(|mut st| st.query_row([id.to_string()], |r| r.get(0)))
        .map_err(db_error)
}

/// A session and its ancestors, nearest first: (session, agent) pairs for a token's chain.
pub fn session_ancestry(conn: &Conn, id: SessionId) -> Result<Vec<(SessionId, AgentId)>> {
    let mut chain = Vec::new();
    let mut next = Some(id);
    let mut st = conn.prepare_cached("SELECT agent_id, parent_id FROM sessions WHERE id = ?1").map_err(db_error)?;
    // Depth is bounded at creation; the bound here only guards against a corrupted cycle.
    while let Some(current) = next.take() {
        if chain.len() > 64 {
            break;
        }
        let (agent, parent): (AgentId, Option<SessionId>) =
            st.query_row([current.to_string()], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db_error)?;
        chain.push((current, agent));
        next = parent;
    }
    Ok(chain)
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
        tx.conn().dialect().pick(
            "UPDATE sessions SET last_seen_at = max(coalesce(last_seen_at, 0), ?2),
                             last_ip = coalesce(?3, last_ip), last_user_agent = coalesce(?4, last_user_agent)
         WHERE id = ?1",
            "UPDATE sessions SET last_seen_at = greatest(coalesce(last_seen_at, 0), ?2),
                             last_ip = coalesce(?3, last_ip), last_user_agent = coalesce(?4, last_user_agent)
         WHERE id = ?1",
        ),
        params![id.to_string(), at.millis(), ip, user_agent],
    )
    .map(drop)
}

/// A session's entry in the live view, as loaded at start-up.
#[derive(Debug, Clone, Copy)]
pub struct LiveRow {
    pub id: SessionId,
    pub revoked: bool,
    pub expires_at: Timestamp,
}

/// Every session whose tokens could still verify: unexpired ones, revoked or not.
pub fn live_sessions(conn: &Conn, now: Timestamp, mut each: impl FnMut(LiveRow)) -> Result<()> {
    let mut st = conn.prepare("SELECT id, status, expires_at FROM sessions WHERE expires_at > ?1").map_err(db_error)?;
    let mut rows = st.query([now.millis()]).map_err(db_error)?;
    while let Some(r) = rows.next().map_err(db_error)? {
        let status: String = r.get(1).map_err(db_error)?;
        each(LiveRow {
            id: r.get(0).map_err(db_error)?,
            revoked: status == "revoked",
            expires_at: r.get(2).map_err(db_error)?,
        });
    }
    Ok(())
}

/// One session's live-view entry, read for a node that has not seen it (created elsewhere).
pub fn live_row(conn: &Conn, id: SessionId) -> Result<Option<LiveRow>> {
    conn.prepare_cached("SELECT id, status, expires_at FROM sessions WHERE id = ?1")
        .and_then(|mut st| {
            st.query_row(params![id.to_string()], |r| {
                let status: String = r.get(1)?;
                Ok(LiveRow { id: r.get(0)?, revoked: status == "revoked", expires_at: r.get(2)? })
            })
            .optional()
        })
        .map_err(db_error)
}

pub fn insert_access_token(
    tx: &Tx<'_>,
    session: SessionId,
    revocation_id: &str,
    kid: u32,
    issued_at: Timestamp,
    expires_at: Timestamp,
) -> Result<()> {
    if tx.conn.dialect() == Dialect::Postgres {
        // Held back (store::deferred).
        let (issued_at, expires_at) = (issued_at.millis(), expires_at.millis());
        tx.deferred.borrow_mut().access_token(revocation_id, session.to_string(), kid, issued_at, expires_at);
        return Ok(());
    }
    exec(
        tx,
        "INSERT INTO access_tokens (revocation_id, session_id, kid, issued_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![revocation_id, session.to_string(), kid, issued_at.millis(), expires_at.millis()],
    )
    .map(drop)
}

pub fn insert_refresh_token(tx: &Tx<'_>, session: SessionId, hash: &str) -> Result<()> {
    if tx.conn.dialect() == Dialect::Postgres {
        // Held back (store::deferred).
        tx.deferred.borrow_mut().refresh_token(hash, session.to_string(), tx.now().millis());
        return Ok(());
    }
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

pub fn find_refresh_token(conn: &Conn, hash: &str) -> Result<Option<StoredRefreshToken>> {
    conn.prepare_cached("SELECT session_id, used_at IS NOT NULL FROM refresh_tokens WHERE hash = ?1")
        .and_then(|mut st| {
            st.query_row([hash], |r| Ok(StoredRefreshToken { session_id: r.get(0)?, used: r.get(1)? })).optional()
        })
        .map_err(db_error)
}

pub fn mark_refresh_used(tx: &Tx<'_>, hash: &str) -> Result<()> {
    exec(tx, "UPDATE refresh_tokens SET used_at = ?2 WHERE hash = ?1", params![hash, tx.now().millis()]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgentId, DelegationId, IntegrationId, PlatformId};
    use crate::store::query_plan::{migrated, plan, seeks};

    /// The index the first page of a session listing searches.
    fn listing_plan(vis: Visibility, filter: SessionFilter) -> Vec<String> {
        let mut q = sessions_listing(vis, &filter, Timestamp(0));
        q.sql.push_str(" ORDER BY id LIMIT 100");
        plan(&migrated(), &q.sql, &q.params)
    }

    #[test]
    fn a_session_listing_searches_the_index_of_its_narrowest_filter() {
        let (user, agent, integration, delegation) =
            (UserId::generate(), AgentId::generate(), IntegrationId::generate(), DelegationId::generate());
        let platform = Visibility::for_test(Reach::Platform(PlatformId::generate()));
        let cases = [
            (
                Visibility::for_test(Reach::All),
                SessionFilter { user_id: Some(user), agent_id: Some(agent), ..Default::default() },
                "sessions_by_user",
            ),
            (
                Visibility::for_test(Reach::User(user)),
                SessionFilter { integration_id: Some(integration), ..Default::default() },
                "sessions_by_user",
            ),
            (
                platform,
                SessionFilter { delegation_id: Some(delegation), user_id: Some(user), ..Default::default() },
                "sessions_by_delegation",
            ),
            (
                platform,
                SessionFilter { agent_id: Some(agent), integration_id: Some(integration), ..Default::default() },
                "sessions_by_agent",
            ),
            (
                Visibility::for_test(Reach::All),
                SessionFilter { integration_id: Some(integration), ..Default::default() },
                "sessions_by_integration",
            ),
        ];
        for (vis, filter, index) in cases {
            let plan = listing_plan(vis, filter.clone());
            assert!(seeks(&plan, index), "{filter:?} under {vis:?}: {plan:?}");
            assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "no sort: {plan:?}");
        }
    }

    #[test]
    fn start_up_finds_unexpired_sessions_through_the_expiry_index() {
        let steps = plan(
            &migrated(),
            "SELECT id, status, expires_at FROM sessions WHERE expires_at > ?1",
            &[Value::Integer(0)],
        );
        assert!(seeks(&steps, "sessions_by_expiry"), "{steps:?}");
    }
}
