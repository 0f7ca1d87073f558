//! Webhooks, their deliveries and the transactional outbox that queues a delivery with each event.

use super::conn::{Conn, OptionalExtension, Row};
use rusqlite::params;
use rusqlite::types::Value;
use serde::Serialize;

use super::db::db_error;
use super::query::{exec, Page, PageRequest, Select};
use super::rows;
use super::tx::{Subscriber, Tx};
use crate::audit::AuditEvent;
use crate::domain::*;

/// What one delivery attempt came to.
#[derive(Debug, Clone)]
pub enum Attempt {
    Acknowledged { status: u16 },
    Failed { status: Option<u16>, error: String },
}

/// A webhook as its owner sees it (never with its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Webhook {
    pub id: WebhookId,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: Timestamp,
}

/// A webhook's delivery of one event.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub event_id: String,
    pub seq: i64,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub last_attempt_at: Option<Timestamp>,
    /// When the receiver answered 2xx: when it learned of the event.
    pub acknowledged_at: Option<Timestamp>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

fn webhook_row(r: &Row<'_>) -> rusqlite::Result<Webhook> {
    let events: String = r.get(2)?;
    Ok(Webhook {
        id: r.get(0)?,
        url: r.get(1)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        created_at: r.get(3)?,
    })
}

/// A webhook visible to its owner (same role and binding), not deleted.
pub fn get_webhook(conn: &Conn, owner_role: &str, owner_id: &str, id: WebhookId) -> Result<Webhook> {
    conn.prepare_cached(
        "SELECT id, url, events, created_at FROM webhooks
         WHERE id = ?1 AND owner_role = ?2 AND owner_id = ?3 AND deleted_at IS NULL",
    )
    .and_then(|mut st| st.query_row(rusqlite::params![id.to_string(), owner_role, owner_id], webhook_row).optional())
    .map_err(db_error)?
    .ok_or(Error::NotFound("webhook"))
}

pub fn list_webhooks(conn: &Conn, owner_role: &str, owner_id: &str, page: &PageRequest) -> Result<Page<Webhook>> {
    let mut q = Select::new("id, url, events, created_at", "webhooks");
    q.and("owner_role = ?", Value::Text(owner_role.to_owned()))
        .and("owner_id = ?", Value::Text(owner_id.to_owned()))
        .and_static("deleted_at IS NULL");
    q.page(conn, page, webhook_row, |w| w.id.to_string())
}

pub fn insert_webhook(tx: &Tx<'_>, webhook: &Webhook, owner_role: &str, owner_id: &str) -> Result<()> {
    exec(
        tx,
        "INSERT INTO webhooks (id, url, events, owner_role, owner_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            webhook.id.to_string(),
            webhook.url,
            serde_json::to_string(&webhook.events).unwrap_or_else(|_| "[]".into()),
            owner_role,
            owner_id,
            webhook.created_at.millis()
        ],
    )
    .map(drop)
}

/// The live webhooks owned by `owner_role`/`owner_id`, as `(id, url)`.
pub fn webhooks_owned_by(conn: &Conn, owner_role: &str, owner_id: &str) -> Result<Vec<(WebhookId, String)>> {
    let mut st = conn
        .prepare_cached("SELECT id, url FROM webhooks WHERE owner_role = ?1 AND owner_id = ?2 AND deleted_at IS NULL")
        .map_err(db_error)?;
    let rows = st
        .query_map(params![owner_role, owner_id], |r| Ok((r.get::<_, WebhookId>(0)?, r.get::<_, String>(1)?)))
        .map_err(db_error)?;
    rows.collect::<super::conn::DbResult<Vec<_>>>().map_err(db_error)
}

pub fn delete_webhook(tx: &Tx<'_>, id: WebhookId) -> Result<()> {
    exec(tx, "UPDATE webhooks SET deleted_at = ?2 WHERE id = ?1", params![id.to_string(), tx.now().millis()])?;
    // Nothing more will be attempted for a deleted webhook.
    exec(
        tx,
        "UPDATE webhook_deliveries SET status = 'failed', last_error = 'webhook deleted' WHERE webhook_id = ?1 AND status = 'pending'",
        params![id.to_string()],
    )
    .map(drop)
}

pub fn list_deliveries(conn: &Conn, webhook: WebhookId, after_seq: i64, limit: usize) -> Result<Page<Delivery>> {
    let mut st = conn
        .prepare_cached(
            "SELECT event_id, event_seq, status, attempts, last_attempt_at, acknowledged_at, last_status, last_error
             FROM webhook_deliveries WHERE webhook_id = ?1 AND event_seq > ?2 ORDER BY event_seq LIMIT ?3",
        )
        .map_err(db_error)?;
    let rows = st
        .query_map(rusqlite::params![webhook.to_string(), after_seq, (limit + 1) as i64], |r| {
            Ok(Delivery {
                event_id: r.get(0)?,
                seq: r.get(1)?,
                status: r.get(2)?,
                attempts: r.get(3)?,
                last_attempt_at: r.get(4)?,
                acknowledged_at: r.get(5)?,
                last_status: r.get(6)?,
                last_error: r.get(7)?,
            })
        })
        .map_err(db_error)?;
    let mut items = rows.collect::<super::conn::DbResult<Vec<_>>>().map_err(db_error)?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|d| d.seq.to_string())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// A delivery whose next attempt is due, with what it carries.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: i64,
    pub webhook_id: WebhookId,
    pub url: String,
    pub attempts: u32,
    pub event: AuditEvent,
}

/// Pending deliveries due at `now`: for each live webhook, its oldest due ones, as many as it has
/// free attempts (`per_webhook` less its `busy` count), and at most `total` in all. The walk over
/// webhooks starts at the `rotate`-th, so when `total` runs out it is not always the same
/// webhooks that wait. Each webhook's rows come from an index seek: a receiver's backlog costs
/// nothing to the others.
pub fn due_deliveries(
    conn: &Conn,
    now: Timestamp,
    total: usize,
    per_webhook: usize,
    busy: &std::collections::HashMap<WebhookId, usize>,
    rotate: usize,
) -> Result<Vec<DueDelivery>> {
    let hooks: Vec<WebhookId> = conn
        .prepare_cached("SELECT id FROM webhooks WHERE deleted_at IS NULL ORDER BY id")
        .and_then(|mut st| st.query_map(rusqlite::params![], |r| r.get(0))?.collect())
        .map_err(db_error)?;
    let mut due = Vec::new();
    for i in 0..hooks.len() {
        let hook = hooks[(i + rotate) % hooks.len()];
        let free = per_webhook.saturating_sub(busy.get(&hook).copied().unwrap_or(0)).min(total - due.len());
        if free > 0 {
            due.extend(due_for_webhook(conn, now, hook, free)?);
        }
        if due.len() >= total {
            break;
        }
    }
    Ok(due)
}

fn due_for_webhook(conn: &Conn, now: Timestamp, webhook: WebhookId, limit: usize) -> Result<Vec<DueDelivery>> {
    let sql = format!(
        "SELECT d.id, d.webhook_id, w.url, d.attempts, {} FROM webhook_deliveries d
         JOIN webhooks w ON w.id = d.webhook_id
         JOIN audit_events e ON e.seq = d.event_seq
         WHERE d.webhook_id = ?3 AND d.status = 'pending' AND d.next_attempt_at <= ?1
         ORDER BY d.next_attempt_at, d.id LIMIT ?2",
        rows::AUDIT_COLUMNS_OF_E
    );
    let mut st = conn.prepare_cached(&sql).map_err(db_error)?;
    let rows = st
        .query_map(rusqlite::params![now.millis(), limit as i64, webhook.to_string()], |r| {
            let event = AuditEvent {
                seq: r.get(4)?,
                id: r.get(5)?,
                at: r.get(6)?,
                actor: crate::audit::Actor { kind: r.get(7)?, id: r.get(8)? },
                action: r.get(9)?,
                subject: crate::audit::Subject { kind: r.get(10)?, id: r.get(11)? },
                cause_seq: r.get(12)?,
                reason: r.get(13)?,
                details: std::sync::Arc::new(serde_json::from_str(&r.get::<_, String>(14)?).unwrap_or_default()),
                prev_hash: r.get(15)?,
                hash: r.get(16)?,
            };
            Ok(DueDelivery { id: r.get(0)?, webhook_id: r.get(1)?, url: r.get(2)?, attempts: r.get(3)?, event })
        })
        .map_err(db_error)?;
    rows.collect::<super::conn::DbResult<Vec<_>>>().map_err(db_error)
}

/// Claims a due delivery for one attempt: true only if it is still pending, due, and has had
/// exactly `attempts` attempts (so a stale read cannot cause a second, concurrent attempt).
pub fn claim_delivery(tx: &Tx<'_>, id: i64, attempts: u32, lease_until: Timestamp) -> Result<bool> {
    exec(
        tx,
        "UPDATE webhook_deliveries SET next_attempt_at = ?3
         WHERE id = ?1 AND attempts = ?2 AND status = 'pending' AND next_attempt_at <= ?4",
        params![id, attempts, lease_until.millis(), tx.now().millis()],
    )
    .map(|changed| changed == 1)
}

/// Records one delivery attempt: acknowledged, retried later, or failed for good.
pub fn record_delivery_attempt(
    tx: &Tx<'_>,
    id: i64,
    attempts: u32,
    outcome: &Attempt,
    retry_at: Timestamp,
    give_up: bool,
) -> Result<()> {
    let now = tx.now().millis();
    match outcome {
        Attempt::Acknowledged { status } => exec(
            tx,
            "UPDATE webhook_deliveries SET status = 'delivered', attempts = ?2, last_attempt_at = ?3, acknowledged_at = ?3,
                                           last_status = ?4, last_error = NULL
             WHERE id = ?1 AND status = 'pending'",
            params![id, attempts, now, status],
        ),
        Attempt::Failed { status, error } => exec(
            tx,
            "UPDATE webhook_deliveries SET status = CASE WHEN ?6 THEN 'failed' ELSE 'pending' END, attempts = ?2,
                                           last_attempt_at = ?3, next_attempt_at = ?4, last_status = ?5, last_error = ?7
             WHERE id = ?1 AND status = 'pending'",
            params![id, attempts, now, retry_at.millis(), status, give_up, error],
        ),
    }
    .map(drop)
}

impl<'c> Tx<'c> {
    /// Runs `f` with the live webhooks read once rather than once per event. `f` must not change
    /// webhooks or their owners' credentials: a cascade, which writes one event per revoked
    /// session and nothing else of the kind.
    pub fn holding_subscribers<T>(&mut self, f: impl FnOnce(&mut Tx<'c>) -> Result<T>) -> Result<T> {
        self.subscribers = Some(self.current_subscribers()?);
        let outcome = f(self);
        self.subscribers = None;
        outcome
    }

    /// The live webhooks an event is matched against: those a cascade holds, else the batch's
    /// ([`Tx::remembered_subscribers`]).
    fn current_subscribers(&self) -> Result<std::sync::Arc<Vec<Subscriber>>> {
        match &self.subscribers {
            Some(held) => Ok(held.clone()),
            None => self.remembered_subscribers(),
        }
    }

    /// The transactional outbox: one pending delivery per webhook that subscribed to this event
    /// and whose owner may see it, written with the event itself.
    pub(super) fn enqueue_webhooks(&mut self, record: &AuditEvent) -> Result<()> {
        let subscribers = self.current_subscribers()?;
        for hook in subscribers.iter() {
            if !hook.wanted.is_empty() && !hook.wanted.contains(&record.action) {
                continue;
            }
            if !crate::audit::visible_to(&hook.owner, record) {
                continue;
            }
            self.write_conn()
                .prepare_cached(
                    "INSERT INTO webhook_deliveries (webhook_id, event_seq, event_id, status, next_attempt_at)
                     VALUES (?1, ?2, ?3, 'pending', ?4)",
                )
                .and_then(|mut st| st.execute(params![hook.id, record.seq, record.id, self.now.millis()]))
                .map_err(db_error)?;
            self.outbox_written = true;
        }
        Ok(())
    }
}

/// The webhooks that may receive events at `now`, and the first time after `now` at which one of
/// them stops (its owning credential expires), if any does.
pub(super) fn live_subscribers_until(conn: &Conn, now: Timestamp) -> Result<(Vec<Subscriber>, Option<Timestamp>)> {
    let mut st = conn
        // A webhook owned by a credential (admin, auditor, verifier) stops once that
        // credential has expired or its API key is retired. Revoking a credential deletes its
        // webhooks; the liveness test also covers those revoked before that rule existed.
        .prepare_cached(conn.dialect().pick(&LIVE_WEBHOOKS, &LIVE_WEBHOOKS_PG))
        .map_err(db_error)?;
    let rows = st
        .query_map([now.millis()], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?),
                r.get::<_, Option<i64>>(4)?,
            ))
        })
        .map_err(db_error)?
        .collect::<super::conn::DbResult<Vec<_>>>()
        .map_err(db_error)?;
    let until = rows.iter().filter_map(|(_, expires)| *expires).min().map(Timestamp);
    let live = rows
        .into_iter()
        .filter_map(|((id, events, owner_role, owner_id), _)| {
            let owner = crate::domain::Role::from_parts(&owner_role, &owner_id)?;
            Some(Subscriber { id, wanted: serde_json::from_str(&events).unwrap_or_default(), owner })
        })
        .collect();
    Ok((live, until))
}

/// Webhooks not deleted whose owner may still act (see [`live_subscribers_until`]).
static LIVE_WEBHOOKS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| live_webhooks(super::credentials::CREDENTIAL_IS_LIVE));

/// [`LIVE_WEBHOOKS`] for PostgreSQL.
static LIVE_WEBHOOKS_PG: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| live_webhooks(super::credentials::CREDENTIAL_IS_LIVE_PG));

fn live_webhooks(credential_is_live: &str) -> String {
    format!(
        "SELECT w.id, w.events, w.owner_role, w.owner_id, c.expires_at FROM webhooks w
         LEFT JOIN credentials c ON c.id = w.owner_id {}
         WHERE w.deleted_at IS NULL AND (c.id IS NULL OR {credential_is_live})",
        super::credentials::CREDENTIAL_KEY_JOIN,
    )
}
