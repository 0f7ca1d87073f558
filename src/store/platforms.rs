//! Platforms and what they own, agents and integrations: rows, reads by visibility, status changes.

use super::conn::Conn;
use rusqlite::params;

use super::query::{exec, scope_platform_owned, text, Page, PageRequest, Select};
use super::rows;
use super::tx::Tx;
use crate::domain::*;

pub fn get_platform(conn: &Conn, vis: Visibility, id: PlatformId) -> Result<Platform> {
    let mut q = Select::new(rows::PLATFORM_COLUMNS, "platforms");
    q.and("id = ?", text(id));
    match vis.reach() {
        Reach::All => {}
        Reach::Platform(p) => {
            q.and("id = ?", text(p));
        }
        Reach::User(_) | Reach::Nothing => {
            q.and_static("1 = 0");
        }
    }
    q.one(conn, rows::platform)?.ok_or(Error::NotFound("platform"))
}

pub fn list_platforms(conn: &Conn, vis: Visibility, page: &PageRequest) -> Result<Page<Platform>> {
    let mut q = Select::new(rows::PLATFORM_COLUMNS, "platforms");
    match vis.reach() {
        Reach::All => {}
        Reach::Platform(p) => {
            q.and("id = ?", text(p));
        }
        Reach::User(_) | Reach::Nothing => {
            q.and_static("1 = 0");
        }
    }
    q.page(conn, page, rows::platform, |p| p.id.to_string())
}

pub fn insert_platform(tx: &Tx<'_>, p: &Platform) -> Result<()> {
    exec(
        tx,
        "INSERT INTO platforms (id, name, status, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![p.id.to_string(), p.name, p.status.as_str(), p.created_at.millis()],
    )
    .map(drop)
}

pub fn get_agent(conn: &Conn, vis: Visibility, id: AgentId) -> Result<Agent> {
    let mut q = Select::new(rows::AGENT_COLUMNS, "agents");
    q.and("id = ?", text(id));
    scope_platform_owned(&mut q, vis);
    q.one(conn, rows::agent)?.ok_or(Error::NotFound("agent"))
}

pub fn list_agents(conn: &Conn, vis: Visibility, page: &PageRequest) -> Result<Page<Agent>> {
    let mut q = Select::new(rows::AGENT_COLUMNS, "agents");
    scope_platform_owned(&mut q, vis);
    q.page(conn, page, rows::agent, |a| a.id.to_string())
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

pub fn get_integration(conn: &Conn, vis: Visibility, id: IntegrationId) -> Result<Integration> {
    let mut q = Select::new(rows::INTEGRATION_COLUMNS, "integrations");
    q.and("id = ?", text(id));
    scope_platform_owned(&mut q, vis);
    q.one(conn, rows::integration)?.ok_or(Error::NotFound("integration"))
}

pub fn list_integrations(conn: &Conn, vis: Visibility, page: &PageRequest) -> Result<Page<Integration>> {
    let mut q = Select::new(rows::INTEGRATION_COLUMNS, "integrations");
    scope_platform_owned(&mut q, vis);
    q.page(conn, page, rows::integration, |i| i.id.to_string())
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
