//! The write transaction: the batch's `BEGIN IMMEDIATE`/`COMMIT` and each command's savepoint as
//! guards that roll back unless kept, and the [`Tx`] handed to each command (the connection, the
//! time, the audit chain head, the effects to apply to in-memory views once the batch commits).
//!
//! This is the only module that writes transaction control statements.

use std::cell::Cell;

use super::conn::{Conn, Dialect};

use super::db::db_error;
use crate::audit::AuditEvent;
use crate::domain::{CredentialId, Result, SessionId, Timestamp};

/// A change to apply to the in-memory views after commit, before the caller is answered.
#[derive(Debug, Clone)]
pub enum Effect {
    /// A session became active (created).
    SessionActive { id: SessionId, expires_at: Timestamp },
    /// A session was revoked; its tokens must be denied from now on.
    SessionRevoked { id: SessionId, expires_at: Timestamp },
    /// A credential was created or revoked.
    Credential { id: CredentialId, revoked: bool, expires_at: Option<Timestamp> },
    /// Webhook deliveries or Shared Signals SETs were queued, here or (from a node's tailer) on
    /// another node: wakes the delivery and push workers, which look for what is due.
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
    /// not decrease along the chain and a time bound is a seq bound ([`super::audit_listing::list_audit`]).
    pub at: Timestamp,
}

impl ChainHead {
    /// The head of an empty log.
    pub fn genesis() -> ChainHead {
        ChainHead { seq: 0, hash: crate::audit::GENESIS_HASH.to_owned(), at: Timestamp(i64::MIN) }
    }
}

/// The head from a simple query's text columns (seq, hash, at).
fn chain_head_from_text(seq: Option<&str>, hash: Option<&str>, at: Option<&str>) -> Result<ChainHead> {
    let number = |text: Option<&str>| text.and_then(|t| t.parse::<i64>().ok());
    match (number(seq), hash, number(at)) {
        (Some(seq), Some(hash), Some(at)) => Ok(ChainHead { seq, hash: hash.to_owned(), at: Timestamp(at) }),
        _ => Err(crate::domain::Error::internal("the chain's head row is malformed")),
    }
}

/// One command's view of the open write transaction.
pub struct Tx<'c> {
    pub(super) conn: &'c Conn,
    pub(super) now: Timestamp,
    pub(super) head: ChainHead,
    effects: Vec<Effect>,
    /// Whether this batch queued webhook deliveries (the delivery worker is woken after commit).
    pub(super) outbox_written: bool,
    /// The webhooks that may receive events, held while a cascade writes many events and changes
    /// no webhook ([`Tx::holding_subscribers`]). Kept apart from the memo's list
    /// ([`Memo::subscribers`]) because each ends at its own point (this one with the cascade or
    /// its failed command, the memo's when a command of another kind begins): one slot for both
    /// would need clearing at both, and a missed clearing would match later events against a
    /// webhook deleted since.
    pub(super) subscribers: Option<std::sync::Arc<Vec<Subscriber>>>,
    /// The last event each cause led to in the running command, written to `audit_causes` when
    /// the command ends ([`Tx::record_causes`]): one row per trigger instead of one index entry
    /// per caused event.
    pub(super) last_caused: std::collections::BTreeMap<i64, i64>,
    /// PostgreSQL: audit rows and session revocations held back and written together at the
    /// next statement or at the batch's end ([`super::deferred`]).
    pub(super) deferred: std::cell::RefCell<super::deferred::Deferred>,
    /// A failed write of the held rows, or of a savepoint, reported when the command ends
    /// ([`Tx::conn`] cannot return it; the transaction fails its next statement anyway).
    deferred_failed: std::cell::RefCell<Option<crate::domain::Error>>,
    /// Where the running command's held rows begin: those before are earlier commands'.
    command_rows: Cell<super::deferred::Mark>,
    /// The running command's savepoint.
    savepoint: Cell<Savepoint>,
    /// A kept command's savepoint not yet released: released by the same round trip that opens
    /// the next one ([`Tx::open_savepoint`]), or by COMMIT. Batch state, not a command's.
    savepoint_to_release: Cell<bool>,
    /// PostgreSQL: reads the batch's commands share while every command so far only appended
    /// ([`super::memo`]); `None` once any other command has run.
    pub(super) memo: std::cell::RefCell<Option<Memo>>,
}

/// What the writer has read for appending commands (read and kept by `store/memo.rs`): true for
/// as long as the lock row's count of changes is `changes` and the time is before `live_until`.
#[derive(Default)]
pub(super) struct Memo {
    /// The lock row's count of changes (migration 0007) read before anything in the memo was.
    pub(super) changes: i64,
    /// The first expiry of a credential found live (a caller's, a webhook owner's): from then
    /// on, what was read is no longer what a read would find.
    pub(super) live_until: Option<Timestamp>,
    pub(super) credentials: std::collections::HashMap<CredentialId, bool>,
    /// Each delegation as each visibility it was read through found it.
    pub(super) delegations:
        std::collections::HashMap<(crate::domain::DelegationId, crate::domain::Visibility), crate::domain::Delegation>,
    pub(super) chains: std::collections::HashMap<
        (crate::domain::UserId, crate::domain::AgentId, crate::domain::IntegrationId),
        crate::domain::ChainLinks,
    >,
    pub(super) subscribers: Option<std::sync::Arc<Vec<Subscriber>>>,
}

/// A command's savepoint. On PostgreSQL it is opened at the command's first statement, not at
/// its start: a command that only holds rows back ([`super::deferred`]) and reads what the batch
/// remembered ([`super::memo`]) sends nothing and needs none, and its rows are written with the
/// rest of the batch's. On SQLite, where a statement costs no round trip, it opens at the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Savepoint {
    /// Alone in its batch (its failure rolls the transaction back), or between commands.
    None,
    /// To be opened before the command's first statement.
    Wanted,
    Open,
}

/// A live webhook as the outbox matches events against it.
#[derive(Debug)]
pub(super) struct Subscriber {
    pub(super) id: String,
    /// Actions it asked for; empty means every event its owner may see.
    pub(super) wanted: Vec<String>,
    pub(super) owner: crate::domain::Role,
}

impl<'c> Tx<'c> {
    pub(super) fn new(conn: &'c Conn, now: Timestamp, head: ChainHead) -> Self {
        Tx {
            conn,
            now,
            effects: Vec::new(),
            outbox_written: false,
            subscribers: None,
            last_caused: Default::default(),
            deferred: Default::default(),
            deferred_failed: Default::default(),
            command_rows: Default::default(),
            savepoint: Cell::new(Savepoint::None),
            savepoint_to_release: Cell::new(false),
            memo: std::cell::RefCell::new((conn.dialect() == Dialect::Postgres).then(Default::default)),
            head,
        }
    }

    /// The connection, for a statement of the command: its savepoint is opened and the rows
    /// held back are written first, so the statement sees them.
    pub fn conn(&self) -> &Conn {
        self.open_savepoint();
        self.write_deferred_or_remember();
        self.conn
    }

    /// The connection for a write the store makes for the command and that must not write the
    /// rows held back first (an outbox row per event of a cascade): the savepoint is opened.
    pub(super) fn write_conn(&self) -> &Conn {
        self.open_savepoint();
        self.conn
    }

    /// The connection for a read of tables no row is held back for (credentials, delegations,
    /// users, agents, integrations, platforms, webhooks): neither a savepoint nor a write.
    pub(super) fn read_conn(&self) -> &Conn {
        self.conn
    }

    /// Opens the command's savepoint if it wants one and has none yet. The rows earlier commands
    /// of the batch hold are theirs: they are written first, outside it, so that undoing this
    /// command cannot undo them.
    fn open_savepoint(&self) {
        if self.savepoint.get() != Savepoint::Wanted {
            return;
        }
        self.savepoint.set(Savepoint::Open);
        let opened = (|| {
            let mut deferred = self.deferred.borrow_mut();
            let own = deferred.split_off(self.command_rows.get());
            let written = deferred.write(self.conn);
            *deferred = own;
            self.command_rows.set(Default::default());
            written?;
            let sql = match self.savepoint_to_release.replace(false) {
                true => "RELEASE SAVEPOINT command; SAVEPOINT command",
                false => "SAVEPOINT command",
            };
            self.conn.execute_batch(sql).map_err(db_error)
        })();
        if let Err(e) = opened {
            self.deferred_failed.borrow_mut().get_or_insert(e);
        }
    }

    /// Sends the rows held ahead, to be written on a thread of their own while the command
    /// builds the next ones ([`super::conn::PgConn::send_ahead`]): for a command holding many (a cascade). Its
    /// savepoint is opened first, so that undoing the command undoes them.
    pub(super) fn send_ahead(&self) {
        self.open_savepoint();
        if self.deferred_failed.borrow().is_some() {
            return;
        }
        let sent = self.deferred.borrow_mut().send_ahead(self.conn);
        // Every row held was the command's (its savepoint's opening wrote the others').
        self.command_rows.set(Default::default());
        if let Err(e) = sent {
            self.deferred_failed.borrow_mut().get_or_insert(e);
        }
    }

    /// The first failure of a write made for the command since the last call, a write sent
    /// ahead included (waited for here).
    pub(super) fn take_failure(&self) -> Result<()> {
        if let Err(e) = settle(self.conn) {
            self.deferred_failed.borrow_mut().get_or_insert(e);
        }
        match self.deferred_failed.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn write_deferred_or_remember(&self) {
        let mut deferred = self.deferred.borrow_mut();
        if deferred.is_empty() {
            return;
        }
        if let Err(e) = deferred.write(self.conn) {
            self.deferred_failed.borrow_mut().get_or_insert(e);
        }
    }

    /// Writes every row the batch still holds, then runs `commit` (PostgreSQL), in one round trip
    /// when they are one statement's ([`super::deferred::Deferred::write_then`]). The first
    /// failure of any earlier write is the error, and then nothing is sent.
    fn write_deferred_then(&self, commit: &str) -> Result<()> {
        self.take_failure()?;
        self.deferred.borrow_mut().write_then(self.conn, commit)
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
        let Tx {
            conn,
            now: _,
            head,
            effects,
            outbox_written,
            subscribers,
            last_caused,
            deferred,
            deferred_failed,
            command_rows,
            savepoint: _,
            savepoint_to_release: _,
            memo: _,
        } = self;
        // A write sent ahead is the command's: its failure goes with the command.
        let _ = settle(conn);
        deferred.get_mut().truncate(command_rows.get());
        *deferred_failed.get_mut() = None;
        *head = mark.head;
        effects.truncate(mark.effects);
        *outbox_written = mark.outbox_written;
        *subscribers = None;
        last_caused.clear();
    }
}

/// Where a command found the transaction: what [`Tx::rewind`] puts back if it fails.
struct Mark {
    head: ChainHead,
    effects: usize,
    pub(super) outbox_written: bool,
}

/// What a PostgreSQL batch found as it took the chain lock ([`Batch::begin`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Locked {
    /// The chain's head: every append committed before the lock was granted.
    pub(super) head: ChainHead,
    /// How many changes to what openings read had committed by then (migration 0007).
    pub(super) changes: i64,
}

/// The one write transaction of a batch, from `BEGIN IMMEDIATE` to `COMMIT`. Dropped without
/// [`Batch::commit`] (a command alone in its batch failed, a step of the batch failed, the COMMIT
/// failed), it rolls back.
pub(super) struct Batch<'c> {
    conn: &'c Conn,
    open: bool,
}

impl<'c> Batch<'c> {
    /// Begins the transaction. On SQLite, IMMEDIATE takes the write lock now, so the writer never
    /// fails with `SQLITE_BUSY` upgrading a read transaction. On PostgreSQL, the audit chain's
    /// lock row is taken now, for the same reason and one more: every node's appends then commit
    /// one at a time, so seq order is commit order and a node tailing the log by seq never
    /// passes a gap that a slower transaction fills later (docs/architecture.md).
    /// On PostgreSQL the chain's head is read in the same round trip, by a statement of its own
    /// after the lock's (so its snapshot is taken once the lock is held, and sees every append
    /// committed before), and returned with the lock row's count of changes (migration 0007,
    /// [`Memo::under_lock`]); on SQLite the head is read by the caller, as a statement there
    /// costs no round trip.
    pub(super) fn begin(conn: &'c Conn) -> Result<(Self, Option<Locked>)> {
        let head = match conn.postgres() {
            None => {
                conn.execute_batch("BEGIN IMMEDIATE").map_err(db_error)?;
                None
            }
            Some(pg) => {
                // FOR UPDATE answers the row as the transaction that last held the lock left it,
                // even when this one waited for it: `changes` counts every change committed
                // before the lock was granted.
                let sql = format!(
                    "BEGIN; SELECT changes FROM audit_chain_lock WHERE id = 1 FOR UPDATE; {}",
                    super::rows::CHAIN_HEAD
                );
                // A failure from here on rolls back whatever began (`Drop`).
                let batch = Batch { conn, open: true };
                let answers = pg.settled_client().and_then(|mut c| Ok(c.simple_query(&sql)?)).map_err(db_error)?;
                let rows = || {
                    answers.iter().filter_map(|m| match m {
                        postgres::SimpleQueryMessage::Row(row) => Some(row),
                        _ => None,
                    })
                };
                let changes = rows()
                    .find(|row| row.len() == 1)
                    .and_then(|row| row.get(0)?.parse::<i64>().ok())
                    .ok_or_else(|| crate::domain::Error::internal("the chain lock's row is missing"))?;
                let head = match rows().find(|row| row.len() == 3) {
                    Some(row) => chain_head_from_text(row.get(0), row.get(1), row.get(2))?,
                    None => ChainHead::genesis(),
                };
                return Ok((batch, Some(Locked { head, changes })));
            }
        };
        Ok((Batch { conn, open: true }, head))
    }

    /// Writes what `tx` still holds and commits, with the chain's head now at `head`. A failure
    /// of the held rows' write fails the whole batch, as a failed COMMIT does (the rows were
    /// checked by the commands that made them, so only the database fails it). If the COMMIT
    /// fails, the transaction is rolled back before this returns.
    pub(super) fn commit(mut self, tx: &Tx<'_>, head: i64) -> Result<()> {
        if self.conn.dialect() == Dialect::Postgres {
            // The committed head for the nodes' tailers and leases (migration 0003), and the
            // notification, delivered when (and only if) the transaction commits, that wakes
            // every node's tailer: one round trip for all three, and for a batch of openings
            // its rows too.
            let commit = format!(
                "UPDATE audit_chain_lock SET head = {head} WHERE id = 1 AND head < {head}; NOTIFY tether_audit; COMMIT"
            );
            tx.write_deferred_then(&commit)?;
        } else {
            self.conn.execute_batch("COMMIT").map_err(db_error)?;
        }
        self.open = false;
        Ok(())
    }

    /// Rolls the whole transaction back.
    pub(super) fn rollback(mut self) -> Result<()> {
        self.open = false;
        let _ = settle(self.conn);
        self.conn.execute_batch("ROLLBACK").map_err(db_error)
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = settle(self.conn);
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
}

impl<'t, 'c> CommandScope<'t, 'c> {
    /// `appending`: the command only adds rows and changes nothing another command's reads
    /// depend on (opening a session), so the reads the batch remembered stay true for it.
    pub(super) fn begin(tx: &'t mut Tx<'c>, savepoint: bool, appending: bool) -> Result<Self> {
        if !appending {
            *tx.memo.get_mut() = None;
        }
        tx.command_rows.set(tx.deferred.get_mut().mark());
        tx.savepoint.set(if savepoint { Savepoint::Wanted } else { Savepoint::None });
        if savepoint && tx.conn.dialect() == Dialect::Sqlite {
            tx.open_savepoint();
            tx.take_failure()?;
        }
        let mark = Mark { head: tx.head.clone(), effects: tx.effects.len(), outbox_written: tx.outbox_written };
        Ok(CommandScope { tx, mark: Some(mark) })
    }

    /// The transaction, for the command to run on.
    pub(super) fn tx(&mut self) -> &mut Tx<'c> {
        self.tx
    }

    /// Keeps what the command did: records its causes' ranges; the rows it held stay held for
    /// the batch's next statement or its end. Its savepoint, if it opened one, is released with
    /// the next one's opening or by COMMIT, which saves a round trip per command on PostgreSQL.
    /// If a write made for it failed, the command is undone as it drops.
    pub(super) fn keep(mut self) -> Result<()> {
        self.tx.take_failure()?;
        self.tx.record_causes()?;
        self.tx.take_failure()?;
        if self.tx.savepoint.replace(Savepoint::None) == Savepoint::Open {
            self.tx.savepoint_to_release.set(true);
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
        let opened = self.tx.savepoint.replace(Savepoint::None) == Savepoint::Open;
        self.tx.rewind(mark);
        if opened {
            self.tx.conn.execute_batch("ROLLBACK TO SAVEPOINT command; RELEASE SAVEPOINT command").map_err(db_error)?;
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

/// Waits for a write sent ahead on `conn` ([`super::conn::PgConn::send_ahead`]); its failure is the error. A
/// statement does the same, but fails without running when the write failed: a ROLLBACK must run.
fn settle(conn: &Conn) -> Result<()> {
    match conn.postgres() {
        Some(pg) => pg.settle().map_err(db_error),
        None => Ok(()),
    }
}
