//! The query builder and what every listing shares: `Select`, `Page`/`PageRequest`, the tenancy
//! filters that turn a caller's `Visibility` into a `WHERE` clause, and the statement helper of writes.

use super::conn::{Conn, OptionalExtension, Row};
use rusqlite::types::Value;
use serde::Serialize;

use super::db::db_error;
use super::tx::Tx;
use crate::domain::*;

/// One page of a list, with the cursor of the next page (absent on the last).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// `?limit=&cursor=` after validation: the cursor is the last id (or seq) of the previous page.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: usize,
    pub cursor: Option<String>,
}

/// A SELECT under construction: fixed SQL fragments from this file, values only as parameters.
pub struct Select {
    pub(super) sql: String,
    pub(super) params: Vec<Value>,
}

impl Select {
    pub(super) fn new(columns: &str, table: &str) -> Self {
        Select { sql: format!("SELECT {columns} FROM {table} WHERE 1 = 1"), params: Vec::new() }
    }

    pub(super) fn and(&mut self, clause: &'static str, value: impl Into<Value>) -> &mut Self {
        self.sql.push_str(" AND ");
        self.sql.push_str(clause);
        self.params.push(value.into());
        self
    }

    pub(super) fn and_if<V: Into<Value>>(&mut self, clause: &'static str, value: Option<V>) -> &mut Self {
        if let Some(v) = value {
            self.and(clause, v);
        }
        self
    }

    pub(super) fn and_static(&mut self, clause: &'static str) -> &mut Self {
        self.sql.push_str(" AND ");
        self.sql.push_str(clause);
        self
    }

    pub(super) fn rows<T>(&self, conn: &Conn, map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>) -> Result<Vec<T>> {
        let mut st = conn.prepare_cached(&self.sql).map_err(db_error)?;
        let rows = st.query_map(&self.params, map).map_err(db_error)?;
        rows.collect::<super::conn::DbResult<Vec<T>>>().map_err(db_error)
    }

    /// Pages by the text primary key `id` (UUIDv7 ids sort by creation time).
    pub(super) fn page<T>(
        mut self,
        conn: &Conn,
        page: &PageRequest,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
        id_of: impl Fn(&T) -> String,
    ) -> Result<Page<T>> {
        if let Some(cursor) = &page.cursor {
            self.and("id > ?", cursor.clone());
        }
        self.sql.push_str(" ORDER BY id LIMIT ?");
        self.params.push(Value::Integer((page.limit + 1) as i64));
        let mut items = self.rows(conn, map)?;
        let next_cursor = if items.len() > page.limit {
            items.truncate(page.limit);
            items.last().map(&id_of)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    pub(super) fn one<T>(&self, conn: &Conn, map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>) -> Result<Option<T>> {
        let mut st = conn.prepare_cached(&self.sql).map_err(db_error)?;
        st.query_row(&self.params, map).optional().map_err(db_error)
    }
}

pub(super) fn text(id: impl ToString) -> Value {
    Value::Text(id.to_string())
}

/// Restricts a query on a table that has `platform_id` and `user_id` columns.
pub(super) fn scope_tenant(q: &mut Select, vis: Visibility) {
    match vis.reach() {
        Reach::All => {}
        Reach::Platform(p) => {
            q.and("platform_id = ?", text(p));
        }
        Reach::User(u) => {
            q.and("user_id = ?", text(u));
        }
        Reach::Nothing => {
            q.and_static("1 = 0");
        }
    }
}

/// Restricts a query on a platform-owned table (agents, integrations).
pub(super) fn scope_platform_owned(q: &mut Select, vis: Visibility) {
    match vis.reach() {
        Reach::All => {}
        Reach::Platform(p) => {
            q.and("platform_id = ?", text(p));
        }
        Reach::User(_) | Reach::Nothing => {
            q.and_static("1 = 0");
        }
    }
}

pub(super) fn exec(tx: &Tx<'_>, sql: &str, params: impl super::conn::Params) -> Result<usize> {
    tx.conn().prepare_cached(sql).and_then(|mut st| st.execute(params)).map_err(db_error)
}
