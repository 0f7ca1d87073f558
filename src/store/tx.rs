//! The write transaction: the batch's `BEGIN IMMEDIATE`/`COMMIT` and each command's savepoint as
//! guards that roll back unless kept, and the [`Tx`] handed to each command (the connection, the
//! time, the audit chain head, the effects to apply to in-memory views once the batch commits).
//!
//! This is the only module that writes transaction control statements.

use rusqlite::{params, Connection};

use super::db_error;
use crate::audit::{event_hash_with_details, AuditEvent, NewEvent};
use crate::domain::{CredentialId, Error, EventId, Result, SessionId, Timestamp};

/// A change to apply to the in-memory views after commit, before the caller is answered.
#[derive(Debug, Clone)]
pub enum Effect {
    /// A session became active (created).
    SessionActive { id: SessionId, expires_at: Timestamp },
    /// A session was revoked; its tokens must be denied from now on.
    SessionRevoked { id: SessionId, expires_at: Timestamp },
    /// A credential was created or revoked.
    Credential { id: CredentialId, revoked: bool, expires_at: Option<Timestamp> },
    /// Webhook deliveries were queued (wakes the delivery worker).
    OutboxWritten,
    /// An audit event was committed (for the event stream).
    Audited(std::sync::Arc<AuditEvent>),
}

/// What [`EffectSink::withdraw`](super::writer::EffectSink::withdraw) replaced before a COMMIT, to
/// put back if the COMMIT fails: each entry's previous state, `None` where there was none.
#[derive(Debug, Default)]
pub struct Withdrawn {
    pub sessions: Vec<(SessionId, Option<(bool, Timestamp)>)>,
    pub credentials: Vec<(CredentialId, Option<CredentialBefore>)>,
}

/// A credential's view entry before it was withdrawn: (revoked, expires_at).
pub type CredentialBefore = (bool, Option<Timestamp>);

/// The end of the audit chain as seen inside the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: String,
    /// When the last event happened. No event is stamped earlier ([`Tx::audit`]), so `at` does
    /// not decrease along the chain and a time bound is a seq bound ([`super::reads::list_audit`]).
    pub at: Timestamp,
}

impl ChainHead {
    pub fn load(conn: &Connection) -> Result<ChainHead> {
        let head = conn
            .query_row("SELECT seq, hash, at FROM audit_events ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok(ChainHead { seq: r.get(0)?, hash: r.get(1)?, at: r.get(2)? })
            })
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(db_error)?;
        Ok(head.unwrap_or(ChainHead { seq: 0, hash: crate::audit::GENESIS_HASH.to_owned(), at: Timestamp(i64::MIN) }))
    }
}

/// One command's view of the open write transaction.
pub struct Tx<'c> {
    conn: &'c Connection,
    now: Timestamp,
    head: ChainHead,
    effects: Vec<Effect>,
    /// Whether this batch queued webhook deliveries (the delivery worker is woken after commit).
    outbox_written: bool,
    /// The webhooks that may receive events, held while a cascade writes many events and changes
    /// no webhook ([`Tx::holding_subscribers`]); read per event otherwise.
    subscribers: Option<std::sync::Arc<Vec<Subscriber>>>,
    /// The last event each cause led to in the running command, written to `audit_causes` when
    /// the command ends ([`Tx::record_causes`]): one row per trigger instead of one index entry
    /// per caused event.
    last_caused: std::collections::BTreeMap<i64, i64>,
}

/// A live webhook as the outbox matches events against it.
#[derive(Debug)]
struct Subscriber {
    id: String,
    /// Actions it asked for; empty means every event its owner may see.
    wanted: Vec<String>,
    owner: crate::domain::Role,
}

impl<'c> Tx<'c> {
    pub(super) fn new(conn: &'c Connection, now: Timestamp, head: ChainHead) -> Self {
        Tx {
            conn,
            now,
            effects: Vec::new(),
            outbox_written: false,
            subscribers: None,
            last_caused: Default::default(),
            head,
        }
    }

    pub fn conn(&self) -> &Connection {
        self.conn
    }

    /// The effects of the batch so far.
    pub(super) fn effects(&self) -> &[Effect] {
        &self.effects
    }

    /// Ends the batch once it has committed: the new chain head and the effects to apply.
    pub(super) fn finish(mut self) -> (ChainHead, Vec<Effect>) {
        if self.outbox_written {
            self.effects.push(Effect::OutboxWritten);
        }
        (self.head, self.effects)
    }

    /// Puts the transaction's state back to `mark`, taken when the command that failed began,
    /// and forgets what only that command held. Every field a command can change is named here,
    /// and only here: a new one must be added (the compiler asks for it).
    fn rewind(&mut self, mark: Mark) {
        let Tx { conn: _, now: _, head, effects, outbox_written, subscribers, last_caused } = self;
        *head = mark.head;
        effects.truncate(mark.effects);
        *outbox_written = mark.outbox_written;
        *subscribers = None;
        last_caused.clear();
    }

    /// The time of this batch: every change in it is stamped with the same instant.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    pub fn head(&self) -> &ChainHead {
        &self.head
    }

    pub fn effect(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    /// Appends an event to the audit chain in this transaction. The record is shared with the
    /// event stream's effect rather than copied: a cascade writes one per revoked session.
    pub fn audit(&mut self, event: NewEvent) -> Result<std::sync::Arc<AuditEvent>> {
        let details_id = match &event.details.stored {
            Some(slot) => Some(self.shared_details_id(slot, event.details.text())?),
            None => None,
        };
        let (details, text) = event.details.into_parts();
        let mut record = AuditEvent {
            seq: self.head.seq + 1,
            id: EventId::generate().to_string(),
            // A clock set back does not set the log back: time queries rely on `at` never
            // decreasing along the chain. Only the record's stamp waits for the clock; the
            // batch's own time (expiry, lifetimes) stays the clock's.
            at: self.now.max(self.head.at),
            actor: event.actor,
            action: event.action.to_owned(),
            subject: event.subject,
            cause_seq: event.cause_seq,
            reason: event.reason,
            details,
            prev_hash: self.head.hash.clone(),
            hash: String::new(),
        };
        if let Some(cause) = record.cause_seq {
            // A query by cause reads the seq range after its cause (migration 0010): an event
            // that names a later one, or itself, would never be found. A command doing so is a bug.
            if cause >= record.seq {
                return Err(Error::internal(format!(
                    "event {} names a later event ({cause}) as its cause",
                    record.seq
                )));
            }
        }
        record.hash = event_hash_with_details(&record, &text);
        self.conn
            .prepare_cached(
                "INSERT INTO audit_events (seq, id, at, actor_kind, actor_id, action, subject_kind, subject_id,
                                           cause_seq, reason, details, prev_hash, hash, details_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    record.seq,
                    record.id,
                    record.at.millis(),
                    record.actor.kind.as_str(),
                    record.actor.id,
                    record.action,
                    record.subject.kind,
                    record.subject.id,
                    record.cause_seq,
                    record.reason,
                    // Shared details are read through `details_id` (rows::AUDIT_DETAILS).
                    if details_id.is_some() { "" } else { &*text },
                    record.prev_hash,
                    record.hash,
                    details_id,
                ])
            })
            .map_err(db_error)?;
        if let Some(cause) = record.cause_seq {
            self.last_caused.insert(cause, record.seq);
        }
        self.enqueue_webhooks(&record)?;
        self.head = ChainHead { seq: record.seq, hash: record.hash.clone(), at: record.at };
        let record = std::sync::Arc::new(record);
        self.effects.push(Effect::Audited(record.clone()));
        Ok(record)
    }

    /// Records, for each cause of the command that just ran, the last event it led to: the
    /// events a trigger caused all lie between it and that seq, which is how queries by cause
    /// find them (there is no index on `cause_seq`, migration 0010).
    pub(super) fn record_causes(&mut self) -> Result<()> {
        for (cause, last) in std::mem::take(&mut self.last_caused) {
            self.conn
                .prepare_cached(
                    "INSERT INTO audit_causes (cause_seq, last_seq) VALUES (?1, ?2)
                     ON CONFLICT (cause_seq) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
                )
                .and_then(|mut st| st.execute([cause, last]))
                .map_err(db_error)?;
        }
        Ok(())
    }

    /// The `audit_details` row holding the text of details many events share: stored by the first
    /// of them, remembered in `slot` for the others.
    fn shared_details_id(&self, slot: &std::sync::OnceLock<i64>, text: &str) -> Result<i64> {
        if let Some(id) = slot.get() {
            return Ok(*id);
        }
        let id = self
            .conn
            .prepare_cached("INSERT INTO audit_details (text) VALUES (?1)")
            .and_then(|mut st| st.insert([text]))
            .map_err(db_error)?;
        Ok(*slot.get_or_init(|| id))
    }

    /// Runs `f` with the live webhooks read once rather than once per event. `f` must not change
    /// webhooks or their owners' credentials: a cascade, which writes one event per revoked
    /// session and nothing else of the kind.
    pub fn holding_subscribers<T>(&mut self, f: impl FnOnce(&mut Tx<'c>) -> Result<T>) -> Result<T> {
        self.subscribers = Some(std::sync::Arc::new(self.live_subscribers()?));
        let outcome = f(self);
        self.subscribers = None;
        outcome
    }

    fn live_subscribers(&self) -> Result<Vec<Subscriber>> {
        let mut st = self
            .conn
            // A webhook owned by a credential (admin, auditor, verifier) stops once that
            // credential has expired or its API key is retired. Revoking a credential deletes its
            // webhooks; the liveness test also covers those revoked before that rule existed.
            .prepare_cached(&LIVE_WEBHOOKS)
            .map_err(db_error)?;
        let rows = st
            .query_map([self.now.millis()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
            })
            .map_err(db_error)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, events, owner_role, owner_id)| {
                let owner = crate::domain::Role::from_parts(&owner_role, &owner_id)?;
                Some(Subscriber { id, wanted: serde_json::from_str(&events).unwrap_or_default(), owner })
            })
            .collect())
    }

    /// The transactional outbox: one pending delivery per webhook that subscribed to this event
    /// and whose owner may see it, written with the event itself.
    fn enqueue_webhooks(&mut self, record: &AuditEvent) -> Result<()> {
        let subscribers = match &self.subscribers {
            Some(held) => held.clone(),
            None => std::sync::Arc::new(self.live_subscribers()?),
        };
        for hook in subscribers.iter() {
            if !hook.wanted.is_empty() && !hook.wanted.contains(&record.action) {
                continue;
            }
            if !crate::audit::visible_to(&hook.owner, record) {
                continue;
            }
            self.conn
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

/// Webhooks not deleted whose owner may still act (see [`Tx::live_subscribers`]).
static LIVE_WEBHOOKS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT w.id, w.events, w.owner_role, w.owner_id FROM webhooks w
         LEFT JOIN credentials c ON c.id = w.owner_id {}
         WHERE w.deleted_at IS NULL AND (c.id IS NULL OR {})",
        super::reads::CREDENTIAL_KEY_JOIN,
        super::reads::CREDENTIAL_IS_LIVE
    )
});

/// Where a command found the transaction: what [`Tx::rewind`] puts back if it fails.
struct Mark {
    head: ChainHead,
    effects: usize,
    outbox_written: bool,
}

/// The one write transaction of a batch, from `BEGIN IMMEDIATE` to `COMMIT`. Dropped without
/// [`Batch::commit`] (a command alone in its batch failed, a step of the batch failed, the COMMIT
/// failed), it rolls back.
pub(super) struct Batch<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> Batch<'c> {
    /// Begins the transaction. IMMEDIATE takes the write lock now, so the writer never fails with
    /// `SQLITE_BUSY` upgrading a read transaction.
    pub(super) fn begin(conn: &'c Connection) -> Result<Self> {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(db_error)?;
        Ok(Batch { conn, open: true })
    }

    /// Commits. If the COMMIT fails, the transaction is rolled back before this returns.
    pub(super) fn commit(mut self) -> Result<()> {
        self.conn.execute_batch("COMMIT").map_err(db_error)?;
        self.open = false;
        Ok(())
    }

    /// Rolls the whole transaction back.
    pub(super) fn rollback(mut self) -> Result<()> {
        self.open = false;
        self.conn.execute_batch("ROLLBACK").map_err(db_error)
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if self.open {
            // Fails only when SQLite has already rolled back (some COMMIT failures do).
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::debug!(error = %e, "rollback of a failed write batch");
            }
        }
    }
}

/// One command of a batch. Its writes sit in a savepoint, unless it runs alone in its batch
/// (then its failure rolls back the [`Batch`], which spares a large cascade from journaling every
/// page it touches a second time). [`CommandScope::keep`] releases them; anything else
/// ([`CommandScope::undo`], an early return, a panic) rolls them back and rewinds the [`Tx`] to
/// where the command found it.
pub(super) struct CommandScope<'t, 'c> {
    tx: &'t mut Tx<'c>,
    /// Present until the command is kept or undone.
    mark: Option<Mark>,
    savepoint: bool,
}

impl<'t, 'c> CommandScope<'t, 'c> {
    pub(super) fn begin(tx: &'t mut Tx<'c>, savepoint: bool) -> Result<Self> {
        if savepoint {
            tx.conn.execute_batch("SAVEPOINT command").map_err(db_error)?;
        }
        let mark = Mark { head: tx.head.clone(), effects: tx.effects.len(), outbox_written: tx.outbox_written };
        Ok(CommandScope { tx, mark: Some(mark), savepoint })
    }

    /// The transaction, for the command to run on.
    pub(super) fn tx(&mut self) -> &mut Tx<'c> {
        self.tx
    }

    /// Keeps what the command did: records its causes' ranges and releases its savepoint. If
    /// either fails, the command is undone as it drops.
    pub(super) fn keep(mut self) -> Result<()> {
        self.tx.record_causes()?;
        if self.savepoint {
            self.tx.conn.execute_batch("RELEASE command").map_err(db_error)?;
        }
        self.mark = None;
        Ok(())
    }

    /// Undoes what the command did.
    pub(super) fn undo(mut self) -> Result<()> {
        self.rewind()
    }

    fn rewind(&mut self) -> Result<()> {
        let Some(mark) = self.mark.take() else { return Ok(()) };
        self.tx.rewind(mark);
        if self.savepoint {
            self.tx.conn.execute_batch("ROLLBACK TO command; RELEASE command").map_err(db_error)?;
        }
        Ok(())
    }
}

impl Drop for CommandScope<'_, '_> {
    fn drop(&mut self) {
        if let Err(e) = self.rewind() {
            // The batch fails with the error that dropped this scope; its Batch then rolls back.
            tracing::error!(error = %e, "rolling back a failed write command");
        }
    }
}
