//! Signal sources (registered Shared Signals transmitters) and the SETs received from them.

use super::conn::{Conn, OptionalExtension, Row};
use rusqlite::params;

use super::db::db_error;
use super::query::{exec, Page, PageRequest, Select};
use super::tx::Tx;
use crate::domain::*;

/// A source as stored, without its push authorization hash.
#[derive(Debug, Clone)]
pub struct SourceRow {
    pub id: SignalSourceId,
    pub issuer: String,
    pub audience: Option<String>,
    pub label: Option<String>,
    pub jwks_uri: Option<String>,
    /// The inline JWKS, as JSON text.
    pub jwks: Option<String>,
    /// The source's effect overrides, as a JSON object's text.
    pub effects: String,
    /// `active` or `disabled`.
    pub status: String,
    pub created_at: Timestamp,
    pub disabled_at: Option<Timestamp>,
}

const COLUMNS: &str = "id, issuer, audience, label, jwks_uri, jwks, effects, status, created_at, disabled_at";

fn source_row(r: &Row<'_>) -> rusqlite::Result<SourceRow> {
    let id: String = r.get(0)?;
    let id = SignalSourceId::parse(&id)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))?;
    Ok(SourceRow {
        id,
        issuer: r.get(1)?,
        audience: r.get(2)?,
        label: r.get(3)?,
        jwks_uri: r.get(4)?,
        jwks: r.get(5)?,
        effects: r.get(6)?,
        status: r.get(7)?,
        created_at: r.get(8)?,
        disabled_at: r.get(9)?,
    })
}

pub fn insert_source(tx: &Tx<'_>, s: &SourceRow, push_auth_hash: &str) -> Result<()> {
    exec(
        tx,
        "INSERT INTO signal_sources (id, issuer, audience, label, jwks_uri, jwks, push_auth_hash, effects, status, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            s.id.to_string(),
            s.issuer,
            s.audience,
            s.label,
            s.jwks_uri,
            s.jwks,
            push_auth_hash,
            s.effects,
            s.status,
            s.created_at.millis()
        ],
    )
    .map(drop)
}

pub fn get_source(conn: &Conn, id: SignalSourceId) -> Result<SourceRow> {
    let mut q = Select::new(COLUMNS, "signal_sources");
    q.and("id = ?", id.to_string());
    q.one(conn, source_row)?.ok_or(Error::NotFound("signal source"))
}

/// A source with the hash of its push authorization, for the push endpoint; `None` if absent.
pub fn get_source_for_push(conn: &Conn, id: SignalSourceId) -> Result<Option<(SourceRow, String)>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS}, push_auth_hash FROM signal_sources WHERE id = ?1"))
        .and_then(|mut st| st.query_row(params![id.to_string()], |r| Ok((source_row(r)?, r.get(10)?))).optional())
        .map_err(db_error)
}

pub fn list_sources(conn: &Conn, page: &PageRequest) -> Result<Page<SourceRow>> {
    Select::new(COLUMNS, "signal_sources").page(conn, page, source_row, |s| s.id.to_string())
}

/// Every active source, for checking a JWT signed by one of them (Global Token Revocation).
pub fn active_sources(conn: &Conn) -> Result<Vec<SourceRow>> {
    let mut q = Select::new(COLUMNS, "signal_sources");
    q.and_static("status = 'active'");
    q.rows(conn, source_row)
}

pub fn disable_source(tx: &Tx<'_>, id: SignalSourceId) -> Result<()> {
    exec(
        tx,
        "UPDATE signal_sources SET status = 'disabled', disabled_at = ?2 WHERE id = ?1",
        params![id.to_string(), tx.now().millis()],
    )
    .map(drop)
}

/// The audit seq that recorded this SET if it was received before.
pub fn received_before(conn: &Conn, source: SignalSourceId, jti: &str) -> Result<Option<i64>> {
    conn.prepare_cached("SELECT event_seq FROM signals_received WHERE source_id = ?1 AND jti = ?2")
        .and_then(|mut st| st.query_row(params![source.to_string(), jti], |r| r.get(0)).optional())
        .map_err(db_error)
}

pub fn insert_received(tx: &Tx<'_>, source: SignalSourceId, jti: &str, event_seq: i64) -> Result<()> {
    exec(
        tx,
        "INSERT INTO signals_received (source_id, jti, event_seq, received_at) VALUES (?1, ?2, ?3, ?4)",
        params![source.to_string(), jti, event_seq, tx.now().millis()],
    )
    .map(drop)
}
