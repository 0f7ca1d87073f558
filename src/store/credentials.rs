//! API credentials: rows, whether one may still act, the view's load at start-up, revocation.

use super::conn::{Conn, OptionalExtension};
use rusqlite::params;

use super::db::db_error;
use super::query::{exec, text, Page, PageRequest, Select};
use super::rows;
use super::tx::Tx;
use crate::domain::*;

pub fn get_credential(conn: &Conn, id: CredentialId) -> Result<Credential> {
    let mut q = Select::new(rows::CREDENTIAL_COLUMNS, "credentials");
    q.and("id = ?", text(id));
    q.one(conn, rows::credential)?.ok_or(Error::NotFound("credential"))
}

pub fn list_credentials(conn: &Conn, page: &PageRequest) -> Result<Page<Credential>> {
    Select::new(rows::CREDENTIAL_COLUMNS, "credentials").page(conn, page, rows::credential, |c| c.id.to_string())
}

/// Joins a credential `c` to the API key that signed it (`k`, absent for credentials minted
/// before keys were recorded) for [`CREDENTIAL_IS_LIVE`].
pub(super) const CREDENTIAL_KEY_JOIN: &str = "LEFT JOIN signing_keys k ON k.purpose = 'api' AND k.kid = c.kid";

/// A credential `c` that may still act at `?1` (milliseconds): not revoked, not expired, its
/// signing key not retired. Shared by the writer's re-check of an API write and webhook fan-out.
pub(super) const CREDENTIAL_IS_LIVE: &str = "(c.revoked_at IS NULL AND (c.expires_at IS NULL OR c.expires_at > ?1) \
     AND k.status IS DISTINCT FROM 'retired')";

/// [`CREDENTIAL_IS_LIVE`] for PostgreSQL, whose `IS NOT` takes only NULL and truth values.
pub(super) const CREDENTIAL_IS_LIVE_PG: &str = "(c.revoked_at IS NULL AND (c.expires_at IS NULL OR c.expires_at > ?1) \
     AND k.status IS DISTINCT FROM 'retired')";

/// [`CREDENTIAL_IS_LIVE`] in the connection's dialect.
pub(super) fn credential_is_live_sql(conn: &Conn) -> &'static str {
    conn.dialect().pick(CREDENTIAL_IS_LIVE, CREDENTIAL_IS_LIVE_PG)
}

/// Whether the credential may still act at `now`, and if so until when: its expiry, if it has
/// one. Not live (or unknown): `None`.
pub(super) fn credential_live_until(
    conn: &Conn,
    id: CredentialId,
    now: Timestamp,
) -> Result<Option<Option<Timestamp>>> {
    let live = credential_is_live_sql(conn);
    let sql = format!("SELECT c.expires_at FROM credentials c {CREDENTIAL_KEY_JOIN} WHERE c.id = ?2 AND {live}");
    conn.prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_row(rusqlite::params![now.millis(), id.to_string()], |r| r.get::<_, Option<i64>>(0)).optional()
        })
        .map(|found| found.map(|expires| expires.map(Timestamp)))
        .map_err(db_error)
}

/// Whether the credential may still act at `now` (`CREDENTIAL_IS_LIVE`); false if unknown.
pub fn credential_is_live(conn: &Conn, id: CredentialId, now: Timestamp) -> Result<bool> {
    credential_live_until(conn, id, now).map(|until| until.is_some())
}

/// Every credential, for the in-memory credential view at start-up.
pub fn all_credentials(conn: &Conn) -> Result<Vec<Credential>> {
    Select::new(rows::CREDENTIAL_COLUMNS, "credentials").rows(conn, rows::credential)
}

/// How many credentials exist (zero only before the first start's bootstrap).
pub fn credential_count(conn: &Conn) -> Result<i64> {
    conn.query_row("SELECT count(*) FROM credentials", rusqlite::params![], |r| r.get(0)).map_err(db_error)
}

/// Records a credential and the API key (`kid`) that signed it.
pub fn insert_credential(tx: &Tx<'_>, c: &Credential, kid: u32) -> Result<()> {
    exec(
        tx,
        "INSERT INTO credentials (id, role, platform_id, user_id, label, created_at, expires_at, kid)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            c.id.to_string(),
            c.role.as_str(),
            c.platform_id.map(|p| p.to_string()),
            c.user_id.map(|u| u.to_string()),
            c.label,
            c.created_at.millis(),
            c.expires_at.map(|t| t.millis()),
            kid
        ],
    )
    .map(drop)
}

pub fn revoke_credential(tx: &Tx<'_>, id: CredentialId) -> Result<()> {
    exec(
        tx,
        "UPDATE credentials SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id.to_string(), tx.now().millis()],
    )
    .map(drop)
}

/// A platform's credentials not revoked yet, with their expiry.
pub fn live_credentials_of_platform(
    conn: &Conn,
    platform: PlatformId,
) -> Result<Vec<(CredentialId, Option<Timestamp>)>> {
    let mut st = conn
        .prepare_cached(
            "SELECT id, expires_at FROM credentials WHERE platform_id = ?1 AND revoked_at IS NULL ORDER BY id",
        )
        .map_err(db_error)?;
    let rows = st
        .query_map(params![platform.to_string()], |r| {
            Ok((r.get::<_, CredentialId>(0)?, r.get::<_, Option<Timestamp>>(1)?))
        })
        .map_err(db_error)?;
    rows.collect::<super::conn::DbResult<Vec<_>>>().map_err(db_error)
}
