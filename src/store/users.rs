//! Users: rows, reads by visibility, permissions (a user's status changes through `platforms::set_status`).

use super::conn::{Conn, OptionalExtension};
use rusqlite::params;

use super::db::db_error;
use super::matching::{Column, Match};
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
            q.and_static("1 = 0");
        }
    }
}

pub fn get_user(conn: &Conn, vis: Visibility, id: UserId) -> Result<User> {
    let mut q = Select::new(rows::USER_COLUMNS, "users");
    q.and("id = ?", text(id));
    scope_users(&mut q, vis);
    let mut user = q.one(conn, rows::user)?.ok_or(Error::NotFound("user"))?;
    super::groups::fill_membership(conn, &mut user)?;
    Ok(user)
}

pub fn list_users(conn: &Conn, vis: Visibility, page: &PageRequest) -> Result<Page<User>> {
    let mut q = Select::new(rows::USER_COLUMNS, "users");
    scope_users(&mut q, vis);
    let mut page = q.page(conn, page, rows::user, |u| u.id.to_string())?;
    for user in &mut page.items {
        super::groups::fill_membership(conn, user)?;
    }
    Ok(page)
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
pub fn find_user(conn: &Conn, key: UserKey<'_>) -> Result<Option<User>> {
    let mut q = Select::new(rows::USER_COLUMNS, "users");
    match key {
        UserKey::ExternalId(v) => q.and("external_id = ?", v.to_owned()),
        // SQLite's columns compare with NOCASE; PostgreSQL's indexes hold lower() of them.
        UserKey::UserName(v) => {
            q.and(conn.dialect().pick("user_name = ?", "lower(user_name) = lower(? COLLATE \"C\")"), v.to_owned())
        }
        UserKey::Email(v) => {
            q.and(conn.dialect().pick("email = ?", "lower(email) = lower(? COLLATE \"C\")"), v.to_owned())
        }
    };
    q.sql.push_str(" LIMIT 2");
    let mut found = q.rows(conn, rows::user)?;
    let Some(mut user) = found.pop().filter(|_| found.is_empty()) else { return Ok(None) };
    super::groups::fill_membership(conn, &mut user)?;
    Ok(Some(user))
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

/// The columns a SCIM filter on users compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserColumn {
    Id,
    UserName,
    ExternalId,
    DisplayName,
    Email,
    /// `active`: compared with `active` or `disabled`.
    Status,
}

impl Column for UserColumn {
    fn sql(self) -> &'static str {
        match self {
            UserColumn::Id => "id",
            UserColumn::UserName => "user_name",
            UserColumn::ExternalId => "external_id",
            UserColumn::DisplayName => "display_name",
            UserColumn::Email => "email",
            UserColumn::Status => "status",
        }
    }

    fn case_exact(self) -> bool {
        // RFC 7643 §4.1: userName, displayName and emails.value are not case-exact; id and
        // externalId are (§3.1).
        matches!(self, UserColumn::Id | UserColumn::ExternalId | UserColumn::Status)
    }
}

/// One window of the users a filter matches (ended users never), oldest first, and how many
/// match in all.
pub fn find_users(conn: &Conn, filter: &Match<UserColumn>, offset: usize, count: usize) -> Result<(usize, Vec<User>)> {
    let mut clause = String::new();
    let mut values = Vec::new();
    filter.write(conn.dialect(), &mut clause, &mut values);
    let total: i64 = conn
        .prepare(&format!("SELECT count(*) FROM users WHERE ended_at IS NULL AND {clause}"))
        .and_then(|mut st| st.query_row(&values, |r| r.get(0)))
        .map_err(db_error)?;
    values.push(rusqlite::types::Value::Integer(count as i64));
    values.push(rusqlite::types::Value::Integer(i64::try_from(offset).unwrap_or(i64::MAX)));
    let mut found = conn
        .prepare(&format!(
            "SELECT {} FROM users WHERE ended_at IS NULL AND {clause} ORDER BY id LIMIT ? OFFSET ?",
            rows::USER_COLUMNS
        ))
        .and_then(|mut st| st.query_map(&values, rows::user)?.collect::<super::conn::DbResult<Vec<_>>>())
        .map_err(db_error)?;
    for user in &mut found {
        super::groups::fill_membership(conn, user)?;
    }
    Ok((usize::try_from(total).unwrap_or(0), found))
}

/// The SCIM attributes kept for a user only to give them back (JSON text), and when SCIM last
/// changed the user.
pub fn scim_attributes(conn: &Conn, id: UserId) -> Result<Option<(String, Timestamp)>> {
    conn.prepare_cached("SELECT attributes, modified_at FROM user_scim_attributes WHERE user_id = ?1")
        .and_then(|mut st| st.query_row([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(db_error)
}

pub fn set_scim_attributes(tx: &Tx<'_>, id: UserId, attributes: &str) -> Result<()> {
    exec(
        tx,
        "INSERT INTO user_scim_attributes (user_id, attributes, modified_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (user_id) DO UPDATE SET attributes = excluded.attributes, modified_at = excluded.modified_at",
        params![id.to_string(), attributes, tx.now().millis()],
    )
    .map(drop)
}
