//! The single writer: one thread owns the write connection and commits commands in batches.
//!
//! Group commit: the writer takes every command waiting in its queue (up to a bound), runs each
//! inside a savepoint of one IMMEDIATE transaction, commits once (one fsync for the batch), applies
//! the batch's effects to the in-memory views, and only then answers each caller. A command that
//! fails rolls back its own savepoint and leaves the rest of the batch alone (a command alone in
//! its batch runs without a savepoint; its failure rolls back the transaction).
//!
//! Checkpoints (copying the WAL into the database file) run after a batch's callers are
//! answered, so a commit costs its callers only the WAL append and one fsync.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::audit::load_chain_head;
use super::conn::Conn;
use super::db::Database;
use super::migrate;
use super::tx::{Batch, ChainHead, CommandScope, Effect, Memo, Tx, Withdrawn};
use crate::clock::Clock;
use crate::domain::{Caller, CredentialId, DelegationId, Error, Result, Visibility};

/// Most commands folded into one transaction.
const MAX_BATCH: usize = 512;

/// A queued command: run inside the batch, then told whether the batch committed.
trait Command: Send {
    /// Runs the command; false means it failed and its savepoint must be rolled back.
    fn run(&mut self, tx: &mut Tx<'_>) -> bool;
    /// Whether the command only appends (see [`Writer::execute_appending_as`]).
    fn appending(&self) -> bool;
    /// The delegation an appending command will read, and through which visibility, if known
    /// before it runs: the batch reads those of its commands in one statement ([`super::memo`]).
    fn delegation(&self) -> Option<DelegationRead>;
    /// The credential whose liveness it checks first, if any ([`Writer::execute_as`]).
    fn credential(&self) -> Option<CredentialId>;
    /// Answers the caller once the batch's fate is known.
    fn complete(self: Box<Self>, committed: Result<()>, revoked_at: Option<i64>);
}

/// A delegation a command will read, and through which visibility ([`Command::delegation`]).
pub type DelegationRead = (Visibility, DelegationId);

/// What the writer knows of a command before running it.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    /// It only appends ([`Writer::execute_appending_as`]).
    appending: bool,
    /// The delegation it reads, through which visibility ([`Command::delegation`]).
    delegation: Option<DelegationRead>,
    /// The caller's credential, checked before it runs ([`Command::credential`]).
    credential: Option<CredentialId>,
}

struct Pending<T, F> {
    command: Option<F>,
    shape: Shape,
    result: Option<Result<T>>,
    answer: oneshot::Sender<(Result<T>, Option<i64>)>,
}

impl<T, F> Command for Pending<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
{
    fn run(&mut self, tx: &mut Tx<'_>) -> bool {
        let Some(command) = self.command.take() else {
            return false;
        };
        let result = catch_unwind(AssertUnwindSafe(|| command(tx)))
            .unwrap_or_else(|_| Err(Error::internal("a write command panicked")));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn appending(&self) -> bool {
        self.shape.appending
    }

    fn delegation(&self) -> Option<DelegationRead> {
        self.shape.delegation
    }

    fn credential(&self) -> Option<CredentialId> {
        self.shape.credential
    }

    fn complete(self: Box<Self>, committed: Result<()>, revoked_at: Option<i64>) {
        let result = match (committed, self.result) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(Error::internal("a write command was not run")),
        };
        let _ = self.answer.send((result, revoked_at));
    }
}

type Job = Box<dyn Command>;

/// Receives the effects of each committed batch (the live view, the event bus).
pub trait EffectSink: Send + Sync {
    fn apply(&self, effects: &[Effect]);

    /// Called just before COMMIT: applies at once the effects that only take access away (a
    /// revoked session or credential), so nobody who reads the committed database can see a
    /// revocation the hot path does not enforce yet. Denying early is safe; what it replaced
    /// comes back through [`EffectSink::restore`] if the COMMIT fails.
    fn withdraw(&self, _effects: &[Effect]) -> Withdrawn {
        Withdrawn::default()
    }

    /// Puts back what [`EffectSink::withdraw`] replaced, after a failed COMMIT.
    fn restore(&self, _withdrawn: Withdrawn) {}

    /// Whether anyone listens for [`Effect::Audited`] now. A node's tailer reads whole events
    /// only then; a listener that joins later finds what it missed by the gap in seqs.
    fn wants_events(&self) -> bool {
        true
    }

    /// When a session this sink already holds expires (a session's expiry never changes), so a
    /// node's tailer applying its revocation need not read it from the database.
    fn session_expiry(&self, _id: crate::domain::SessionId) -> Option<crate::domain::Timestamp> {
        None
    }
}

/// Handle to the writer thread; cheap to clone.
///
/// The thread ends when the last handle is dropped and the queue has drained: every command
/// already queued is still committed and answered.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
    stats: Arc<Counters>,
    /// On a node of several: the wait a revoking write does for every other node before it
    /// answers (`cluster::confirm`); set once the node has joined.
    confirm: Arc<std::sync::OnceLock<ConfirmRevocation>>,
}

/// Resolves once every other node with a live lease has applied the revocation at the seq given.
pub type ConfirmRevocation = Arc<dyn Fn(i64) -> oneshot::Receiver<Result<()>> + Send + Sync>;

/// The writer's running totals (see [`WriterStats`]).
#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    failed_batches: AtomicU64,
    commands: AtomicU64,
    running_nanos: AtomicU64,
    commit_nanos: AtomicU64,
    locked_nanos: AtomicU64,
    reads_ahead_kept: AtomicU64,
    reads_ahead_dropped: AtomicU64,
}

/// What the writer has done since it started, for `/metrics` and the benches: where a write's
/// time goes, running commands or committing them (COMMIT writes the WAL and waits for fsync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Batches that ran to their end: committed, or rolled back because their only command
    /// failed (that command's caller got its own error).
    pub batches: u64,
    /// Transactions that failed to commit (every command in them was answered with an error).
    pub failed_batches: u64,
    /// Commands run, committed or not.
    pub commands: u64,
    /// Time spent running commands, from BEGIN to just before COMMIT.
    pub running: Duration,
    /// Time spent in COMMIT. On PostgreSQL it includes writing the rows the batch still held,
    /// which a batch of openings sends with its COMMIT ([`super::deferred::Deferred::write_then`]).
    pub committing: Duration,
    /// Time the write lock was held: from BEGIN's return (SQLite's write lock, or the chain lock
    /// all nodes share on PostgreSQL) to the end of COMMIT or ROLLBACK. On several nodes, what
    /// bounds the cluster's writes: one batch holds it at a time.
    pub locked: Duration,
    /// PostgreSQL batches that took the lock with what the writer remembered of its openings'
    /// reads (made before the lock, by this batch or earlier ones) still true under it
    /// ([`Memo::under_lock`]).
    pub reads_ahead_kept: u64,
    /// Those whose remembered reads were dropped under the lock, because something they were
    /// read from had changed (or a credential they found live had expired).
    pub reads_ahead_dropped: u64,
}

fn add_time(counter: &AtomicU64, since: Instant) {
    counter.fetch_add(u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// Adds the time from its start to its drop to a counter.
struct Timed<'a>(&'a AtomicU64, Instant);

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        add_time(self.0, self.1);
    }
}

impl Writer {
    /// Opens the write connection, runs migrations and starts the writer thread.
    pub fn start(path: &Path, clock: Arc<Clock>, sink: Arc<dyn EffectSink>) -> Result<Writer> {
        Writer::start_on(&Database::Sqlite(path.to_owned()), clock, sink)
    }

    /// Opens the write connection to `database`, runs migrations and starts the writer thread.
    /// Blocking (PostgreSQL connects here): not on an async worker.
    pub fn start_on(database: &Database, clock: Arc<Clock>, sink: Arc<dyn EffectSink>) -> Result<Writer> {
        let mut conn = database.writer()?;
        // The writer keeps the connection's page cache size. SQLite scans the cache's whole hash
        // table at the end of every transaction, so a larger cache taxes every small commit, and
        // the large cascade it was once raised for was no faster with it (docs/performance.md).
        match &mut conn {
            Conn::Sqlite(c) => {
                migrate::run(c)?;
            }
            Conn::Postgres(_) => {
                super::postgres::migrate(&conn)?;
            }
        }
        let head = load_chain_head(&conn)?;
        let database = database.clone();
        let (queue, jobs) = mpsc::channel::<Job>(8192);
        let stats = Arc::new(Counters::default());
        let counters = stats.clone();
        std::thread::Builder::new()
            .name("tether-writer".into())
            .spawn(move || {
                // Replaces SQLite's automatic checkpoint (see `checkpoint_if_due`).
                if let Some(c) = conn.sqlite() {
                    c.wal_hook(Some(record_wal_frames));
                }
                run(conn, &database, head, jobs, clock, sink, &counters)
            })
            .map_err(|e| Error::internal(format!("spawn writer: {e}")))?;
        Ok(Writer { queue, stats, confirm: Arc::new(std::sync::OnceLock::new()) })
    }

    /// [`Writer::execute`] on behalf of an API credential: the command runs only if the
    /// credential is still live when its turn comes in the writer. The request checked it on
    /// arrival, but a request can outlive that check (a slow body, a queue), and a revocation
    /// must stop every write that commits after it.
    pub async fn execute_as<T, F>(&self, caller: &Caller, command: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        self.queue_as(caller, Shape::default(), command, |answer| answer).await
    }

    /// [`Writer::execute_as`], with `prepare` run on the answer while the other nodes confirm a
    /// revocation rather than after (serializing a large receipt).
    pub async fn execute_as_then<T, U, F>(&self, caller: &Caller, command: F, prepare: impl FnOnce(T) -> U) -> Result<U>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        self.queue_as(caller, Shape::default(), command, prepare).await
    }

    /// [`Writer::execute_as`] for a command that only appends: it adds rows and changes nothing
    /// that any command's reads depend on (opening a session). On PostgreSQL, consecutive such
    /// commands in a batch share their reads and write their rows together ([`super::memo`]);
    /// `delegation` names the delegation the command reads, if any, for the batch to read with
    /// the others'.
    pub async fn execute_appending_as<T, F>(
        &self,
        caller: &Caller,
        delegation: Option<DelegationRead>,
        command: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        self.queue_as(caller, Shape { appending: true, delegation, credential: None }, command, |answer| answer).await
    }

    async fn queue_as<T, U, F>(
        &self,
        caller: &Caller,
        shape: Shape,
        command: F,
        prepare: impl FnOnce(T) -> U,
    ) -> Result<U>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        let credential = caller.credential;
        let checked = move |tx: &mut Tx<'_>| {
            if !tx.credential_is_live(credential)? {
                return Err(Error::Unauthenticated("credential has been revoked or has expired".into()));
            }
            command(tx)
        };
        self.queue_then(Shape { credential: Some(credential), ..shape }, checked, prepare).await
    }

    pub fn stats(&self) -> WriterStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WriterStats {
            batches: load(&self.stats.batches),
            failed_batches: load(&self.stats.failed_batches),
            commands: load(&self.stats.commands),
            running: Duration::from_nanos(load(&self.stats.running_nanos)),
            committing: Duration::from_nanos(load(&self.stats.commit_nanos)),
            locked: Duration::from_nanos(load(&self.stats.locked_nanos)),
            reads_ahead_kept: load(&self.stats.reads_ahead_kept),
            reads_ahead_dropped: load(&self.stats.reads_ahead_dropped),
        }
    }

    /// Runs `command` in the next batch and answers once that batch has committed and its
    /// effects are visible. An `Err` from the command rolls back only this command.
    pub async fn execute<T, F>(&self, command: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        self.queue(false, command).await
    }

    async fn queue<T, F>(&self, appending: bool, command: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        self.queue_then(Shape { appending, ..Shape::default() }, command, |answer| answer).await
    }

    /// Queues `command`; once its batch committed, asks the other nodes to confirm what it
    /// revoked (if anything), runs `prepare` on the command's answer meanwhile, and answers once
    /// they did.
    async fn queue_then<T, U, F>(&self, shape: Shape, command: F, prepare: impl FnOnce(T) -> U) -> Result<U>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<(Result<T>, Option<i64>)>();
        let job: Job = Box::new(Pending { command: Some(command), shape, result: None, answer });
        self.queue.send(job).await.map_err(|_| Error::Unavailable("the writer has stopped".into()))?;
        let (result, revoked_at) =
            answered.await.map_err(|_| Error::Unavailable("the writer stopped before answering".into()))?;
        let confirmed = match (revoked_at, self.confirm.get()) {
            (Some(seq), Some(confirm)) => Some(confirm(seq)),
            _ => None,
        };
        let prepared = result.map(prepare);
        if let Some(confirmed) = confirmed {
            confirmed
                .await
                .map_err(|_| Error::Unavailable("this node stopped before every node confirmed".into()))??;
        }
        prepared
    }

    /// Makes every revoking write wait for the other nodes before it answers (set once).
    pub fn confirm_revocations_with(&self, confirm: ConfirmRevocation) {
        let _ = self.confirm.set(confirm);
    }
}

/// WAL frames at a size worth checkpointing (SQLite's own default threshold).
const CHECKPOINT_AT_FRAMES: i32 = 1000;

thread_local! {
    /// Frames in the WAL after the writer thread's last commit, as SQLite reports them.
    static WAL_FRAMES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

fn record_wal_frames(_: &rusqlite::hooks::Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|f| f.set(frames));
    Ok(())
}

/// Copies the WAL into the database file once it has grown past the threshold. Run after the
/// batch's callers are answered, so no caller waits for it (SQLite's automatic checkpoint would
/// run inside COMMIT). PASSIVE never waits for readers; what it cannot copy now it copies later.
fn checkpoint_if_due(conn: &Conn) {
    if WAL_FRAMES.with(|f| f.get()) < CHECKPOINT_AT_FRAMES {
        return;
    }
    WAL_FRAMES.with(|f| f.set(0));
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", rusqlite::params![], |_| Ok(())) {
        tracing::warn!(error = %e, "WAL checkpoint failed; retried after a later commit");
    }
}

fn run(
    mut conn: Conn,
    database: &Database,
    head: ChainHead,
    mut jobs: mpsc::Receiver<Job>,
    clock: Arc<Clock>,
    sink: Arc<dyn EffectSink>,
    stats: &Counters,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut carried = Carried { head, memo: None };
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if conn.postgres().is_some_and(|pg| pg.is_closed()) {
            // The server closed the connection (a restart, a failover): a new one, or the batch
            // is answered `unavailable` and the next batch tries again.
            // What was remembered is forgotten: the database may now be another server (a
            // failover to a replica that had not received every change).
            carried.memo = None;
            match database.writer() {
                Ok(fresh) => conn = fresh,
                Err(e) => {
                    tracing::error!(error = %e, "the writer cannot reach the database");
                    stats.commands.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    for job in batch.drain(..) {
                        job.complete(Err(Error::Unavailable("the database is unreachable".into())), None);
                    }
                    continue;
                }
            }
        }
        let committed = commit_batch(&conn, &mut carried, &mut batch, &mut jobs, &clock, stats, sink.as_ref());
        stats.commands.fetch_add(batch.len() as u64, Ordering::Relaxed);
        match committed {
            Ok(effects) => {
                stats.batches.fetch_add(1, Ordering::Relaxed);
                sink.apply(&effects);
                let revoked = effects
                    .iter()
                    .any(|e| matches!(e, Effect::SessionRevoked { .. } | Effect::Credential { revoked: true, .. }));
                let revoked_at = revoked.then_some(carried.head.seq);
                for job in batch.drain(..) {
                    job.complete(Ok(()), revoked_at);
                }
                checkpoint_if_due(&conn);
            }
            Err(error) => {
                stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                // Its transaction has been rolled back (`Batch`).
                tracing::error!(error = %error, "write batch failed to commit");
                if let Ok(reloaded) = load_chain_head(&conn) {
                    carried.head = reloaded;
                }
                let unreachable = matches!(error, Error::Unavailable(_));
                for job in batch.drain(..) {
                    job.complete(
                        Err(if unreachable {
                            Error::Unavailable("the database is unreachable".into())
                        } else {
                            Error::internal("the write could not be committed")
                        }),
                        None,
                    );
                }
            }
        }
    }
}

/// What the writer carries from one batch to the next.
pub(super) struct Carried {
    /// The chain's head as the last batch left it.
    pub(super) head: ChainHead,
    /// PostgreSQL: what appending commands read, while it stays true ([`super::memo`]).
    pub(super) memo: Option<Memo>,
}

/// Runs every job of the batch in one transaction; on success returns the effects to apply.
fn commit_batch(
    conn: &Conn,
    carried: &mut Carried,
    batch: &mut Vec<Job>,
    jobs: &mut mpsc::Receiver<Job>,
    clock: &Clock,
    stats: &Counters,
    sink: &dyn EffectSink,
) -> Result<Vec<Effect>> {
    let started = Instant::now();
    if conn.postgres().is_some() {
        let leading = batch.iter().take_while(|job| job.appending());
        let credentials: Vec<_> = leading.clone().filter_map(|job| job.credential()).collect();
        let delegations: Vec<_> = leading.filter_map(|job| job.delegation()).collect();
        if !credentials.is_empty() || !delegations.is_empty() {
            Memo::read_ahead(&mut carried.memo, conn, clock.now(), &credentials, &delegations)?;
        }
    }
    let (transaction, locked) = Batch::begin(conn)?;
    // Counts until this function returns: the COMMIT, or the early return that rolls back.
    let _locked = Timed(&stats.locked_nanos, Instant::now());
    // On PostgreSQL, BEGIN waited for the cluster's chain lock while other nodes committed:
    // what was queued meanwhile joins this batch instead of waiting for the lock again.
    while batch.len() < MAX_BATCH {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    // Another process (`tether credential mint`) may have appended to the chain since our last
    // batch; under the write lock we now hold, the database's head is the truth.
    let current = match &locked {
        Some(locked) => locked.head.clone(),
        None => load_chain_head(conn)?,
    };
    if current != carried.head {
        carried.head = current;
    }
    let mut tx = Tx::new(conn, clock.now(), carried.head.clone());
    // Taken out: an early return (a failed statement) leaves the writer none for the next batch.
    let remembered = carried.memo.take();
    if let Some(locked) = &locked {
        let had = remembered.is_some();
        let (start, kept) = Memo::under_lock(remembered, locked.changes, tx.now());
        if had {
            let counter = if kept { &stats.reads_ahead_kept } else { &stats.reads_ahead_dropped };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        tx.start_memo(start);
    }
    // The delegations the leading appending commands read and the memo lacks (those of commands
    // that joined under the lock, or all of them if what was read ahead changed), in one
    // statement rather than one round trip each (the memo ends at the first command of another
    // kind).
    let delegations: Vec<_> =
        batch.iter().take_while(|job| job.appending()).filter_map(|job| job.delegation()).collect();
    tx.read_delegations_ahead(&delegations)?;
    // Alone in its batch, a command runs without a savepoint: if it fails, the whole transaction
    // is rolled back.
    let alone = batch.len() == 1;
    for job in batch.iter_mut() {
        let mut command = CommandScope::begin(&mut tx, !alone, job.appending())?;
        if job.run(command.tx()) {
            command.keep()?;
        } else if alone {
            command.undo()?;
            transaction.rollback()?;
            add_time(&stats.running_nanos, started);
            // Read under the lock, before any command changed anything: still true.
            carried.memo = tx.take_memo();
            return Ok(Vec::new());
        } else {
            command.undo()?;
        }
    }
    add_time(&stats.running_nanos, started);
    let withdrawn = sink.withdraw(tx.effects());
    let committing = Instant::now();
    // With what the batch's commands still hold (PostgreSQL): a batch of openings' rows go with
    // the COMMIT.
    let committed = transaction.commit(&tx, tx.head().seq);
    add_time(&stats.commit_nanos, committing);
    if let Err(e) = committed {
        sink.restore(withdrawn);
        return Err(e);
    }
    carried.memo = tx.take_memo();
    let (new_head, effects) = tx.finish();
    carried.head = new_head;
    Ok(effects)
}

#[cfg(test)]
mod pg_listing_tests;
#[cfg(test)]
mod pg_opening_tests;
#[cfg(test)]
mod pg_tests;
#[cfg(test)]
mod test_batches;
#[cfg(test)]
mod tests;
