//! Users: rows, reads by visibility, permissions (a user's status changes through `platforms::set_status`).

use rusqlite::params;
use rusqlite::Connection;

use super::query::{exec, text, Page, PageRequest, Select};
use super::rows;
use super::tx::Tx;
use crate::domain::*;

fn scope_users(q: &mut Select, vis: Visibility) {
    match vis.reach() {
        Reach::All => {}
        Reach::User(u) => {
            q.and("id = ?", text(u));
        }
        Reach::Platform(_) | Reach::Nothing => {
            q.and_static("0");
        }
    }
}

pub fn get_user(conn: &Connection, vis: Visibility, id: UserId) -> Result<User> {
    let mut q = Select::new(rows::USER_COLUMNS, "users");
    q.and("id = ?", text(id));
    scope_users(&mut q, vis);
    q.one(conn, rows::user)?.ok_or(Error::NotFound("user"))
}

pub fn list_users(conn: &Connection, vis: Visibility, page: &PageRequest) -> Result<Page<User>> {
    let mut q = Select::new(rows::USER_COLUMNS, "users");
    scope_users(&mut q, vis);
    q.page(conn, page, rows::user, |u| u.id.to_string())
}

pub fn insert_user(tx: &Tx<'_>, u: &User) -> Result<()> {
    exec(
        tx,
        "INSERT INTO users (id, external_id, user_name, email, display_name, permissions, status, created_at, ended_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            u.id.to_string(),
            u.external_id,
            u.user_name,
            u.email,
            u.display_name,
            u.permissions.to_json(),
            u.status.as_str(),
            u.created_at.millis(),
            u.ended_at.map(Timestamp::millis),
        ],
    )
    .map(drop)
}

/// An identifier an identity provider knows a user by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKey<'a> {
    /// Compared exactly.
    ExternalId(&'a str),
    /// Compared case-insensitively (SCIM's `userName` is not case-exact).
    UserName(&'a str),
    /// Compared case-insensitively; a name more than one user shares names nobody.
    Email(&'a str),
}

/// The user an identity provider's identifier names, ended users included (the caller decides
/// what an ended user means to it); `None` when no user, or more than one, has it.
pub fn find_user(conn: &Connection, key: UserKey<'_>) -> Result<Option<User>> {
    let mut q = Select::new(rows::USER_COLUMNS, "users");
    match key {
        UserKey::ExternalId(v) => q.and("external_id = ?", v.to_owned()),
        UserKey::UserName(v) => q.and("user_name = ?", v.to_owned()),
        UserKey::Email(v) => q.and("email = ?", v.to_owned()),
    };
    q.sql.push_str(" LIMIT 2");
    let mut found = q.rows(conn, rows::user)?;
    Ok(if found.len() == 1 { found.pop() } else { None })
}

/// What an identity provider says of a user besides its status and permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserProfile {
    pub external_id: Option<String>,
    pub user_name: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
}

/// Replaces what an identity provider says of a user: its identifiers and display name.
pub fn set_user_profile(tx: &Tx<'_>, id: UserId, profile: &UserProfile) -> Result<()> {
    exec(
        tx,
        "UPDATE users SET external_id = ?2, user_name = ?3, email = ?4, display_name = ?5 WHERE id = ?1",
        params![id.to_string(), profile.external_id, profile.user_name, profile.email, profile.display_name],
    )
    .map(drop)
}

/// Marks a user ended for good (it stays, for the audit trail).
pub fn set_user_ended(tx: &Tx<'_>, id: UserId, at: Timestamp) -> Result<()> {
    exec(tx, "UPDATE users SET ended_at = ?2 WHERE id = ?1 AND ended_at IS NULL", params![id.to_string(), at.millis()])
        .map(drop)
}

pub fn set_user_permissions(tx: &Tx<'_>, id: UserId, permissions: &ScopeSet) -> Result<()> {
    exec(tx, "UPDATE users SET permissions = ?2 WHERE id = ?1", params![id.to_string(), permissions.to_json()])
        .map(drop)
}
