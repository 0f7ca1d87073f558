//! Delegations: rows, reads by visibility, the active ones a cascade ends, revocation and narrowing.

use super::conn::{Conn, OptionalExtension};
use rusqlite::params;

use super::db::db_error;
use super::query::{exec, scope_tenant, text, Page, PageRequest, Select};
use super::rows;
use super::tx::Tx;
use crate::domain::*;

#[derive(Debug, Clone, Default)]
pub struct DelegationFilter {
    pub user_id: Option<UserId>,
    pub agent_id: Option<AgentId>,
    pub integration_id: Option<IntegrationId>,
    pub status: Option<DelegationStatus>,
}

pub fn get_delegation(conn: &Conn, vis: Visibility, id: DelegationId) -> Result<Delegation> {
    let mut q = Select::new(rows::DELEGATION_COLUMNS, "delegations");
    q.and("id = ?", text(id));
    scope_tenant(&mut q, vis);
    q.one(conn, rows::delegation)?.ok_or(Error::NotFound("delegation"))
}

pub fn list_delegations(
    conn: &Conn,
    vis: Visibility,
    filter: &DelegationFilter,
    page: &PageRequest,
) -> Result<Page<Delegation>> {
    let mut q = Select::new(rows::DELEGATION_COLUMNS, "delegations");
    scope_tenant(&mut q, vis);
    q.and_if("user_id = ?", filter.user_id.map(text))
        .and_if("agent_id = ?", filter.agent_id.map(text))
        .and_if("integration_id = ?", filter.integration_id.map(text))
        .and_if("status = ?", filter.status.map(|s| text(s.as_str())));
    q.page(conn, page, rows::delegation, |d| d.id.to_string())
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

pub fn active_delegations(conn: &Conn, of: DelegationsOf) -> Result<Vec<Delegation>> {
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
    let mut st = conn.prepare_cached(&sql).map_err(db_error)?;
    let found = match b {
        None => st.query_map(params![a], rows::delegation),
        Some(b) => st.query_map(params![a, b], rows::delegation),
    }
    .map_err(db_error)?;
    found.collect::<super::conn::DbResult<Vec<_>>>().map_err(db_error)
}

/// Whether the user ever delegated to this agent or through this integration (any status).
pub fn ever_delegated(conn: &Conn, of: DelegationsOf) -> Result<bool> {
    let (sql, user, other) = match of {
        DelegationsOf::UserAgent(u, a) => {
            ("SELECT EXISTS(SELECT 1 FROM delegations WHERE user_id = ?1 AND agent_id = ?2)", u, a.to_string())
        }
        DelegationsOf::UserIntegration(u, i) => {
            ("SELECT EXISTS(SELECT 1 FROM delegations WHERE user_id = ?1 AND integration_id = ?2)", u, i.to_string())
        }
        _ => return Err(Error::internal("ever_delegated takes a user and an agent or integration")),
    };
    conn.prepare_cached(sql)
        .and_then(|mut st| st.query_row(params![user.to_string(), other], |r| r.get(0)))
        .map_err(db_error)
}

/// `columns` (a row function's list) qualified by `alias`.
fn qualified(alias: &str, columns: &str) -> String {
    columns.split(',').map(|c| format!("{alias}.{}", c.trim())).collect::<Vec<_>>().join(", ")
}

/// One statement for the user, agent, integration and the agent's platform, read past any
/// caller's visibility (the chain check must see what the caller cannot), plus the user's
/// groups when the user is in any: each link a statement apart cost a round trip on PostgreSQL,
/// inside the write batch's lock.
///
/// `unscoped` is the proof that the caller may read past visibility (`Unscoped::for_system`).
pub fn chain_rows(
    conn: &Conn,
    unscoped: Visibility,
    user: UserId,
    agent: AgentId,
    integration: IntegrationId,
) -> Result<ChainLinks> {
    if !matches!(unscoped.reach(), Reach::All) {
        return Err(Error::internal("the chain check must read past the caller's visibility"));
    }
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {} FROM users u, agents a, integrations i, platforms p
             WHERE u.id = ?1 AND a.id = ?2 AND i.id = ?3 AND p.id = a.platform_id",
            *CHAIN_COLUMNS
        )
    });
    let read = conn
        .prepare_cached(&SQL)
        .and_then(|mut st| {
            st.query_row(params![user.to_string(), agent.to_string(), integration.to_string()], chain_links)
        })
        .optional()
        .map_err(db_error)?;
    let Some((mut chain, in_groups)) = read else { return Err(missing_link(conn, user, agent, integration)) };
    if in_groups {
        super::groups::fill_membership(conn, &mut chain.user)?;
    }
    Ok(chain)
}

/// The delegations of `ids` the caller's visibility sees, each with the chain it stands on read
/// past every visibility as [`chain_rows`] reads it, in one statement (an `IN` list of
/// placeholders: the ids are parameters). For the writer's memo only, whose commands ask for a
/// chain through [`chain_rows`]'s door. A delegation whose chain does not read whole is left out
/// (its command's own reads say what is missing).
pub(super) fn delegations_with_chains(
    conn: &Conn,
    vis: Visibility,
    ids: &[DelegationId],
) -> Result<Vec<(Delegation, ChainLinks)>> {
    let mut visible = Select::new(rows::DELEGATION_COLUMNS, "delegations");
    visible.sql.push_str(&format!(" AND id IN ({})", vec!["?"; ids.len()].join(", ")));
    visible.params.extend(ids.iter().map(|id| text(*id)));
    scope_tenant(&mut visible, vis);
    let q = Select {
        sql: format!(
            "SELECT {}, {} FROM ({}) d, users u, agents a, integrations i, platforms p
             WHERE u.id = d.user_id AND a.id = d.agent_id AND i.id = d.integration_id AND p.id = a.platform_id",
            qualified("d", rows::DELEGATION_COLUMNS),
            *CHAIN_COLUMNS,
            visible.sql
        ),
        params: visible.params,
    };
    let at_chain = rows::DELEGATION_COLUMNS.split(',').count();
    let read = q.rows(conn, |r| Ok((rows::delegation(r)?, chain_links(&r.from_column(at_chain))?)))?;
    let mut found = Vec::with_capacity(read.len());
    for (delegation, (mut chain, in_groups)) in read {
        if in_groups {
            super::groups::fill_membership(conn, &mut chain.user)?;
        }
        found.push((delegation, chain));
    }
    Ok(found)
}

/// The columns of a chain's four rows (`u`, `a`, `i`, `p`), then whether its user is in a group.
static CHAIN_COLUMNS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{}, {}, {}, {}, EXISTS (SELECT 1 FROM group_members m WHERE m.user_id = u.id)",
        qualified("u", rows::USER_COLUMNS),
        qualified("a", rows::AGENT_COLUMNS),
        qualified("i", rows::INTEGRATION_COLUMNS),
        qualified("p", rows::PLATFORM_COLUMNS),
    )
});

/// A chain read as [`CHAIN_COLUMNS`]: its links, and whether its user's groups are to be read.
fn chain_links(r: &super::conn::Row<'_>) -> rusqlite::Result<(ChainLinks, bool)> {
    let width = |columns: &str| columns.split(',').count();
    let at_agent = width(rows::USER_COLUMNS);
    let at_integration = at_agent + width(rows::AGENT_COLUMNS);
    let at_platform = at_integration + width(rows::INTEGRATION_COLUMNS);
    let at_groups = at_platform + width(rows::PLATFORM_COLUMNS);
    Ok((
        ChainLinks {
            user: rows::user(r)?,
            agent: rows::agent(&r.from_column(at_agent))?,
            integration: rows::integration(&r.from_column(at_integration))?,
            platform: rows::platform(&r.from_column(at_platform))?,
        },
        r.get::<_, bool>(at_groups)?,
    ))
}

/// Which link of a chain that did not read is missing, as the reads one by one would have said.
fn missing_link(conn: &Conn, user: UserId, agent: AgentId, integration: IntegrationId) -> Error {
    let found = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM users WHERE id = ?1), EXISTS (SELECT 1 FROM agents WHERE id = ?2),
                    EXISTS (SELECT 1 FROM integrations WHERE id = ?3)",
            params![user.to_string(), agent.to_string(), integration.to_string()],
            |r| Ok((r.get::<_, bool>(0)?, r.get::<_, bool>(1)?, r.get::<_, bool>(2)?)),
        )
        .map_err(db_error);
    match found {
        Err(e) => e,
        Ok((false, _, _)) => Error::NotFound("user"),
        Ok((_, false, _)) => Error::NotFound("agent"),
        Ok((_, _, false)) => Error::NotFound("integration"),
        // Every link is there but the agent's platform, which its foreign key forbids.
        Ok(_) => Error::NotFound("platform"),
    }
}
