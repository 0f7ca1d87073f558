//! The revocation feed: revoked sessions' token revocation ids for offline verifiers, and its purge.

use super::conn::Conn;
use rusqlite::params;

use super::db::db_error;
use super::query::{exec, Page};
use super::tx::Tx;
use crate::domain::*;

/// One page of the revocation feed after `after`: (cursor, revocation id, session, expiry).
pub type FeedRow = (i64, String, SessionId, Timestamp);

pub fn revocation_feed(conn: &Conn, after: i64, limit: usize, now: Timestamp) -> Result<Page<FeedRow>> {
    let mut st = conn
        .prepare_cached(
            "SELECT cursor, revocation_id, session_id, expires_at FROM revocation_feed
             WHERE cursor > ?1 AND expires_at > ?2 ORDER BY cursor LIMIT ?3",
        )
        .map_err(db_error)?;
    let rows = st
        .query_map(rusqlite::params![after, now.millis(), (limit + 1) as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .map_err(db_error)?;
    let mut items = rows.collect::<super::conn::DbResult<Vec<FeedRow>>>().map_err(db_error)?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|r| r.0.to_string())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// Puts the revocation ids of a revoked session's unexpired access tokens on the feed.
pub fn feed_revoked_session(tx: &Tx<'_>, session: SessionId) -> Result<()> {
    exec(
        tx,
        "INSERT INTO revocation_feed (revocation_id, session_id, expires_at)
         SELECT revocation_id, session_id, expires_at FROM access_tokens WHERE session_id = ?1 AND expires_at > ?2",
        params![session.to_string(), tx.now().millis()],
    )
    .map(drop)
}

pub(super) const FEED_REVOKED_BETWEEN: &str = "INSERT INTO revocation_feed (revocation_id, session_id, expires_at)
     SELECT a.revocation_id, a.session_id, a.expires_at
     FROM audit_events e JOIN access_tokens a ON a.session_id = e.subject_id
     WHERE e.seq BETWEEN ?1 AND ?2 AND e.action = 'session.revoked' AND a.expires_at > ?3
     ORDER BY e.seq, a.expires_at";

/// Puts on the feed the revocation ids of the live tokens of every session revoked by an event in
/// `from_seq..=to_seq` (the sessions those events name, as for [`active_children_of_revoked`]),
/// each session's in expiry order: the order `access_tokens_by_session` reads them in, so the
/// statement sorts nothing.
pub fn feed_revoked_between(tx: &Tx<'_>, from_seq: i64, to_seq: i64) -> Result<()> {
    exec(tx, FEED_REVOKED_BETWEEN, params![from_seq, to_seq, tx.now().millis()]).map(drop)
}

/// Forgets feed entries and access-token records whose token has expired: they can no longer
/// verify, so no one needs them.
pub fn purge_expired_tokens(tx: &Tx<'_>) -> Result<usize> {
    let now = tx.now().millis();
    let feed = exec(tx, "DELETE FROM revocation_feed WHERE expires_at <= ?1", params![now])?;
    let tokens = exec(tx, "DELETE FROM access_tokens WHERE expires_at <= ?1", params![now])?;
    Ok(feed + tokens)
}
