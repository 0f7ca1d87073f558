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
        "INSERT INTO users (id, external_id, display_name, permissions, status, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![u.id.to_string(), u.external_id, u.display_name, u.permissions.to_json(), u.status.as_str(), u.created_at.millis()],
    )
    .map(drop)
}

pub fn set_user_permissions(tx: &Tx<'_>, id: UserId, permissions: &ScopeSet) -> Result<()> {
    exec(tx, "UPDATE users SET permissions = ?2 WHERE id = ?1", params![id.to_string(), permissions.to_json()])
        .map(drop)
}
