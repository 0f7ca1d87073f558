//! Signing keys as the audit log last recorded them (`signing_keys` rows).

use super::conn::{Conn, OptionalExtension};
use rusqlite::params;

use super::db::db_error;
use super::query::exec;
use super::tx::Tx;
use crate::domain::*;

/// The signing keys of `purpose` ("agent" or "api") as the audit log last recorded them:
/// (kid, "active" | "retired"), by kid.
pub fn recorded_signing_keys(conn: &Conn, purpose: &str) -> Result<Vec<(u32, String)>> {
    conn.prepare_cached("SELECT kid, status FROM signing_keys WHERE purpose = ?1 ORDER BY kid")
        .and_then(|mut st| st.query_map([purpose], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(db_error)
}

/// The last recorded status of a signing key, if it was ever recorded.
pub fn signing_key_status(conn: &Conn, purpose: &str, kid: u32) -> Result<Option<String>> {
    conn.prepare_cached("SELECT status FROM signing_keys WHERE purpose = ?1 AND kid = ?2")
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
