//! SQLite storage: migrations, the single group-commit writer, read connections, one module per
//! thing stored.
//!
//! Only this module talks to the database. Writes are closures over a [`Tx`] run by the writer
//! thread; reads run on a small pool of read-only connections off the async executor.
//!
//! Each module of a thing reads on a `&Conn` (a read inside the write transaction passes
//! `tx.conn()`) and writes on a `&Tx`; appending to the audit log, which moves the transaction's
//! chain head, takes `&mut Tx`. Modules refer to each other by their own paths, never through the
//! re-exports below, so the module graph has no cycle (tests/module_graph.rs).

pub mod audit;
pub mod audit_listing;
pub mod conn;
pub mod console;
pub mod coverage;
pub mod credentials;
pub mod db;
pub mod deferred;
pub mod delegations;
pub mod feed;
pub mod groups;
pub mod keys;
pub mod matching;
mod memo;
pub mod migrate;
pub mod platforms;
pub mod postgres;
pub mod query;
pub mod replica;
pub mod rows;
pub mod sessions;
pub mod signals;
pub mod streams;
pub mod tx;
pub mod users;
pub mod webhooks;
pub mod writer;

pub use conn::{Conn, DbError, Dialect};
pub use db::{database_path, db_error, open_connection, Database, ReadPool, PAGE_SIZE};
pub use query::{Page, PageRequest};
pub use tx::{Effect, Tx, Withdrawn};
pub use writer::{Writer, WriterStats};

/// Query-plan checks for tests: which index a statement searches on a fully migrated database.
#[cfg(test)]
pub(crate) mod query_plan {
    use super::conn::Conn;
    use rusqlite::Connection;

    pub fn migrated() -> Conn {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        super::migrate::run(&mut conn).expect("migrate");
        Conn::Sqlite(conn)
    }

    /// SQLite's plan steps for `sql` bound to `params`.
    pub fn plan(conn: &Conn, sql: &str, params: &[rusqlite::types::Value]) -> Vec<String> {
        let conn = conn.sqlite().expect("query plans are SQLite's");
        conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .and_then(|mut st| st.query_map(rusqlite::params_from_iter(params), |r| r.get::<_, String>(3))?.collect())
            .expect("plan")
    }

    /// Whether a step searches (not scans) through `index`.
    pub fn seeks(plan: &[String], index: &str) -> bool {
        plan.iter().any(|step| step.starts_with("SEARCH") && step.contains(index))
    }

    /// Every `audit_causes` row: (cause, last event), by cause.
    pub fn audit_causes(conn: &Conn) -> Vec<(i64, i64)> {
        let conn = conn.sqlite().expect("a SQLite test database");
        conn.prepare("SELECT cause_seq, last_seq FROM audit_causes ORDER BY cause_seq")
            .and_then(|mut st| st.query_map(rusqlite::params![], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .expect("audit_causes rows")
    }
}
