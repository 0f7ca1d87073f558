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

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::tx::{Batch, ChainHead, CommandScope, Effect, Tx, Withdrawn};
use super::{db_error, migrate, open_connection};
use crate::clock::Clock;
use crate::domain::{Caller, Error, Result};

/// Most commands folded into one transaction.
const MAX_BATCH: usize = 512;

/// A queued command: run inside the batch, then told whether the batch committed.
trait Command: Send {
    /// Runs the command; false means it failed and its savepoint must be rolled back.
    fn run(&mut self, tx: &mut Tx<'_>) -> bool;
    /// Answers the caller once the batch's fate is known.
    fn complete(self: Box<Self>, committed: Result<()>);
}

struct Pending<T, F> {
    command: Option<F>,
    result: Option<Result<T>>,
    answer: oneshot::Sender<Result<T>>,
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

    fn complete(self: Box<Self>, committed: Result<()>) {
        let result = match (committed, self.result) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(Error::internal("a write command was not run")),
        };
        let _ = self.answer.send(result);
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
}

/// Handle to the writer thread; cheap to clone.
///
/// The thread ends when the last handle is dropped and the queue has drained: every command
/// already queued is still committed and answered.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
    stats: Arc<Counters>,
}

/// The writer's running totals (see [`WriterStats`]).
#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    failed_batches: AtomicU64,
    commands: AtomicU64,
    running_nanos: AtomicU64,
    commit_nanos: AtomicU64,
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
    /// Time spent in COMMIT.
    pub committing: Duration,
}

fn add_time(counter: &AtomicU64, since: Instant) {
    counter.fetch_add(u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl Writer {
    /// Opens the write connection, runs migrations and starts the writer thread.
    pub fn start(path: &Path, clock: Arc<Clock>, sink: Arc<dyn EffectSink>) -> Result<Writer> {
        let mut conn = open_connection(path, false)?;
        // A cascade over a large tenant dirties every page of the sessions it revokes, their
        // indexes and its audit rows in one transaction. A cache that cannot hold them spills
        // dirty pages to the WAL mid-transaction (with 64 MiB: 13% of a 100k-session cascade's
        // profile). The cache only grows as far as a transaction uses it.
        conn.execute_batch("PRAGMA cache_size = -524288;").map_err(db_error)?;
        migrate::run(&mut conn)?;
        let head = ChainHead::load(&conn)?;
        let (queue, jobs) = mpsc::channel::<Job>(8192);
        let stats = Arc::new(Counters::default());
        let counters = stats.clone();
        std::thread::Builder::new()
            .name("tether-writer".into())
            .spawn(move || {
                // Replaces SQLite's automatic checkpoint (see `checkpoint_if_due`).
                conn.wal_hook(Some(record_wal_frames));
                run(conn, head, jobs, clock, sink, &counters)
            })
            .map_err(|e| Error::internal(format!("spawn writer: {e}")))?;
        Ok(Writer { queue, stats })
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
        let credential = caller.credential;
        self.execute(move |tx| {
            if !super::reads::credential_is_live(tx.conn(), credential, tx.now())? {
                return Err(Error::Unauthenticated("credential has been revoked or has expired".into()));
            }
            command(tx)
        })
        .await
    }

    pub fn stats(&self) -> WriterStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WriterStats {
            batches: load(&self.stats.batches),
            failed_batches: load(&self.stats.failed_batches),
            commands: load(&self.stats.commands),
            running: Duration::from_nanos(load(&self.stats.running_nanos)),
            committing: Duration::from_nanos(load(&self.stats.commit_nanos)),
        }
    }

    /// Runs `command` in the next batch and answers once that batch has committed and its
    /// effects are visible. An `Err` from the command rolls back only this command.
    pub async fn execute<T, F>(&self, command: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(Pending { command: Some(command), result: None, answer });
        self.queue.send(job).await.map_err(|_| Error::Unavailable("the writer has stopped".into()))?;
        answered.await.map_err(|_| Error::Unavailable("the writer stopped before answering".into()))?
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
fn checkpoint_if_due(conn: &Connection) {
    if WAL_FRAMES.with(|f| f.get()) < CHECKPOINT_AT_FRAMES {
        return;
    }
    WAL_FRAMES.with(|f| f.set(0));
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "WAL checkpoint failed; retried after a later commit");
    }
}

fn run(
    conn: Connection,
    mut head: ChainHead,
    mut jobs: mpsc::Receiver<Job>,
    clock: Arc<Clock>,
    sink: Arc<dyn EffectSink>,
    stats: &Counters,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        stats.commands.fetch_add(batch.len() as u64, Ordering::Relaxed);
        match commit_batch(&conn, &mut head, &mut batch, &clock, stats, sink.as_ref()) {
            Ok(effects) => {
                stats.batches.fetch_add(1, Ordering::Relaxed);
                sink.apply(&effects);
                for job in batch.drain(..) {
                    job.complete(Ok(()));
                }
                checkpoint_if_due(&conn);
            }
            Err(error) => {
                stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                // Its transaction has been rolled back (`Batch`).
                tracing::error!(error = %error, "write batch failed to commit");
                if let Ok(reloaded) = ChainHead::load(&conn) {
                    head = reloaded;
                }
                for job in batch.drain(..) {
                    job.complete(Err(Error::internal("the write could not be committed")));
                }
            }
        }
    }
}

/// Runs every job of the batch in one transaction; on success returns the effects to apply.
fn commit_batch(
    conn: &Connection,
    head: &mut ChainHead,
    batch: &mut [Job],
    clock: &Clock,
    stats: &Counters,
    sink: &dyn EffectSink,
) -> Result<Vec<Effect>> {
    let started = Instant::now();
    let transaction = Batch::begin(conn)?;
    // Another process (`tether credential mint`) may have appended to the chain since our last
    // batch; under the write lock we now hold, the database's head is the truth.
    let current = ChainHead::load(conn)?;
    if current != *head {
        *head = current;
    }
    let mut tx = Tx::new(conn, clock.now(), head.clone());
    // Alone in its batch, a command runs without a savepoint: if it fails, the whole transaction
    // is rolled back.
    let alone = batch.len() == 1;
    for job in batch.iter_mut() {
        let mut command = CommandScope::begin(&mut tx, !alone)?;
        if job.run(command.tx()) {
            command.keep()?;
        } else if alone {
            command.undo()?;
            transaction.rollback()?;
            add_time(&stats.running_nanos, started);
            return Ok(Vec::new());
        } else {
            command.undo()?;
        }
    }
    add_time(&stats.running_nanos, started);
    let withdrawn = sink.withdraw(tx.effects());
    let committing = Instant::now();
    let committed = transaction.commit();
    add_time(&stats.commit_nanos, committing);
    if let Err(e) = committed {
        sink.restore(withdrawn);
        return Err(e);
    }
    let (new_head, effects) = tx.finish();
    *head = new_head;
    Ok(effects)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::audit::NewEvent;
    use crate::domain::{Actor, Subject};

    struct NoViews;
    impl EffectSink for NoViews {
        fn apply(&self, _: &[Effect]) {}
    }

    fn audited(tx: &mut Tx<'_>, what: &str) -> Result<i64> {
        tx.audit(NewEvent::new(Actor::system(), "test.event", Subject::new("test", what))).map(|e| e.seq)
    }

    fn count_events(path: &Path) -> i64 {
        let conn = open_connection(path, true).unwrap();
        conn.query_row("SELECT count(*) FROM audit_events", [], |r| r.get(0)).unwrap()
    }

    #[tokio::test]
    async fn a_clock_set_back_does_not_set_the_audit_log_back() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(Clock::default());
        let writer = Writer::start(&dir.path().join("tether.db"), clock.clone(), Arc::new(NoViews)).unwrap();
        let at = |tx: &mut Tx<'_>| {
            let event = tx.audit(NewEvent::new(Actor::system(), "test.event", Subject::new("test", "x")))?;
            Ok((event.at, tx.now()))
        };
        let (first, _) = writer.execute(at).await.unwrap();
        clock.advance_seconds(-3600);
        let (second, now) = writer.execute(at).await.unwrap();
        assert_eq!(second, first, "the event keeps the last event's time");
        // Everything else (expiry, lifetimes, delivery times) still follows the clock.
        assert!(now.millis() <= first.millis() - 3_500_000, "the batch's own time is the clock's: {now:?}");
        clock.advance_seconds(7200);
        let (third, _) = writer.execute(at).await.unwrap();
        assert!(third.millis() >= first.millis() + 3_600_000, "time moves on once the clock has caught up");
    }

    #[tokio::test]
    async fn a_command_records_the_last_event_each_of_its_causes_led_to_and_a_failed_one_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether.db");
        let writer = Writer::start(&path, Arc::new(Clock::default()), Arc::new(NoViews)).unwrap();
        let cascade = |fail: bool| {
            move |tx: &mut Tx<'_>| {
                let trigger = audited(tx, "trigger")?;
                for what in ["one", "two"] {
                    let caused =
                        NewEvent::new(Actor::system(), "test.caused", Subject::new("test", what)).cause(trigger);
                    tx.audit(caused)?;
                }
                audited(tx, "unrelated")?;
                if fail {
                    return Err(Error::conflict("changed its mind"));
                }
                Ok(trigger)
            }
        };
        let trigger = writer.execute(cascade(false)).await.unwrap();
        assert!(writer.execute(cascade(true)).await.is_err());
        let conn = open_connection(&path, true).unwrap();
        let rows: Vec<(i64, i64)> = conn
            .prepare("SELECT cause_seq, last_seq FROM audit_causes")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows, [(trigger, trigger + 2)], "the failed command left no row");
        let conn = open_connection(&path, false).unwrap();
        for refused in ["DELETE FROM audit_causes", "UPDATE audit_causes SET last_seq = last_seq - 1"] {
            assert!(conn.execute(refused, []).is_err(), "a range only grows: {refused}");
        }
    }

    /// A query by cause reads the seq range after its cause (migration 0010): a command that
    /// names a later event as a cause is a bug, and fails whole.
    #[tokio::test]
    async fn a_caused_event_must_follow_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether.db");
        let writer = Writer::start(&path, Arc::new(Clock::default()), Arc::new(NoViews)).unwrap();
        let earlier = writer.execute(|tx| audited(tx, "earlier command")).await.unwrap();
        let before = count_events(&path);
        let refused = writer
            .execute(|tx| {
                let seq = audited(tx, "trigger")?;
                tx.audit(NewEvent::new(Actor::system(), "session.revoked", Subject::new("session", "s")).cause(seq + 1))
            })
            .await;
        assert!(matches!(refused, Err(Error::Internal(_))), "{refused:?}");
        assert_eq!(count_events(&path), before, "nothing written");

        // A cause from an earlier command, or by another actor, is found by its range all the same.
        writer
            .execute(move |tx| {
                let admin = Actor::new(crate::domain::ActorKind::Admin, "cred_admin");
                tx.audit(NewEvent::new(admin, "session.revoked", Subject::new("session", "s")).cause(earlier)).map(drop)
            })
            .await
            .unwrap();
        let conn = open_connection(&path, true).unwrap();
        assert_eq!(crate::store::query_plan::audit_causes(&conn), [(earlier, before + 1)]);
        let filter = crate::store::reads::AuditFilter { cause_seq: Some(earlier), ..Default::default() };
        let caused = crate::store::reads::list_audit(&conn, &filter, 10).unwrap();
        assert_eq!(caused.items.iter().map(|e| e.seq).collect::<Vec<_>>(), [before + 1]);
    }

    #[tokio::test]
    async fn a_failing_command_alone_in_its_batch_leaves_nothing_and_the_chain_continues() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether.db");
        let writer = Writer::start(&path, Arc::new(Clock::default()), Arc::new(NoViews)).unwrap();
        let first = writer.execute(|tx| audited(tx, "one")).await.unwrap();

        let failed = writer
            .execute(|tx| {
                audited(tx, "half")?;
                Err::<(), _>(Error::conflict("changed its mind after writing"))
            })
            .await;
        assert!(matches!(failed, Err(Error::Conflict(_))), "the command's own error is answered: {failed:?}");
        assert_eq!(count_events(&path), 1, "the failed command's event was rolled back");

        let next = writer.execute(|tx| audited(tx, "two")).await.unwrap();
        assert_eq!(next, first + 1, "the chain continues from the last committed event");
        let report = crate::store::reads::verify_audit(&open_connection(&path, true).unwrap()).unwrap();
        assert!(report.ok, "{report:?}");
    }

    #[tokio::test]
    async fn a_commit_that_fails_puts_back_the_revocations_applied_before_it() {
        use crate::domain::{SessionId, Timestamp};
        use crate::views::{LiveSession, Views};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether.db");
        let views = Arc::new(Views::default());
        let writer = Writer::start(&path, Arc::new(Clock::default()), views.clone()).unwrap();
        // A deferred foreign key is checked only at COMMIT: a dangling row makes COMMIT fail.
        writer
            .execute(|tx| {
                tx.conn()
                    .execute_batch(
                        "CREATE TABLE parent (id TEXT PRIMARY KEY);
                         CREATE TABLE child (parent_id TEXT REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);",
                    )
                    .map_err(db_error)
            })
            .await
            .unwrap();
        let (known, unknown) = (SessionId::generate(), SessionId::generate());
        let live = LiveSession { revoked: false, expires_at: Timestamp(i64::MAX) };
        views.sessions.set(known, live);

        let failed = writer
            .execute(move |tx| {
                for id in [known, unknown] {
                    tx.effect(Effect::SessionRevoked { id, expires_at: Timestamp(i64::MAX) });
                }
                tx.conn().execute("INSERT INTO child VALUES ('nobody')", []).map_err(db_error)?;
                Ok(())
            })
            .await;
        assert!(failed.is_err(), "COMMIT should have failed on the dangling foreign key");
        assert_eq!(views.sessions.get(known), Some(live), "the uncommitted revocation was put back");
        assert_eq!(views.sessions.get(unknown), None, "a session the view did not hold is gone again");

        writer
            .execute(move |tx| {
                tx.effect(Effect::SessionRevoked { id: known, expires_at: Timestamp(i64::MAX) });
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(views.sessions.get(known).map(|s| s.revoked), Some(true), "a committed revocation holds");
    }

    #[tokio::test]
    async fn the_writer_checkpoints_the_wal_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether.db");
        let writer = Writer::start(&path, Arc::new(Clock::default()), Arc::new(NoViews)).unwrap();
        let size = || std::fs::metadata(&path).unwrap().len();
        let before = size();
        // Well over the 1000-frame threshold: ~4 MiB of audit rows across many commits.
        for batch in 0..40 {
            writer
                .execute(move |tx| {
                    for i in 0..100 {
                        tx.audit(
                            NewEvent::new(Actor::system(), "test.event", Subject::new("test", i))
                                .details(serde_json::json!({"batch": batch, "padding": "x".repeat(1000)})),
                        )?;
                    }
                    Ok(())
                })
                .await
                .unwrap();
        }
        assert!(
            size() > before + 1024 * 1024,
            "the database file grew from {before} to only {} bytes: the WAL is not being checkpointed",
            size()
        );
    }

    #[tokio::test]
    async fn a_failing_command_in_a_batch_rolls_back_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether.db");
        let writer = Writer::start(&path, Arc::new(Clock::default()), Arc::new(NoViews)).unwrap();
        // Queued together, they usually share one batch (the writer takes everything waiting);
        // alone or together, the outcome must be the same.
        let good = writer.execute(|tx| audited(tx, "good"));
        let bad = writer.execute(|tx| {
            audited(tx, "bad")?;
            Err::<i64, _>(Error::conflict("no"))
        });
        let also_good = writer.execute(|tx| audited(tx, "also good"));
        let (good, bad, also_good) = tokio::join!(good, bad, also_good);
        assert!(bad.is_err());
        assert_eq!(also_good.unwrap(), good.unwrap() + 1, "the failed command left no gap in the chain");
        assert_eq!(count_events(&path), 2);
    }

    type Boxed = Box<dyn FnOnce(&mut Tx<'_>) -> Result<i64> + Send>;

    /// Runs `commands` as one batch, straight through `commit_batch` (so they surely share it), on
    /// the database at `path`: each command's answer and the effects the batch would apply.
    fn one_batch(path: &Path, commands: Vec<Boxed>) -> (Vec<Result<i64>>, Vec<Effect>) {
        let mut conn = open_connection(path, false).unwrap();
        migrate::run(&mut conn).unwrap();
        let mut head = ChainHead::load(&conn).unwrap();
        let mut answers = Vec::new();
        let mut batch: Vec<Job> = commands
            .into_iter()
            .map(|command| {
                let (answer, answered) = oneshot::channel();
                answers.push(answered);
                Box::new(Pending { command: Some(command), result: None, answer }) as Job
            })
            .collect();
        let effects =
            commit_batch(&conn, &mut head, &mut batch, &Clock::default(), &Counters::default(), &NoViews).unwrap();
        for job in batch {
            job.complete(Ok(()));
        }
        (answers.into_iter().map(|mut a| a.try_recv().unwrap()).collect(), effects)
    }

    /// The seqs of the events a batch's effects would publish, and the sessions it would revoke.
    fn published(effects: &[Effect]) -> (Vec<i64>, usize) {
        let seqs = effects.iter().filter_map(|e| if let Effect::Audited(a) = e { Some(a.seq) } else { None });
        let revoked = effects.iter().filter(|e| matches!(e, Effect::SessionRevoked { .. })).count();
        (seqs.collect(), revoked)
    }

    fn revokes_and_audits(tx: &mut Tx<'_>, what: &str) -> Result<i64> {
        let id = crate::domain::SessionId::generate();
        tx.effect(Effect::SessionRevoked { id, expires_at: crate::domain::Timestamp(i64::MAX) });
        audited(tx, what)
    }

    #[test]
    fn a_failing_command_in_a_shared_batch_rolls_back_its_rows_effects_and_chain_head_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether.db");
        let (answers, effects) = one_batch(
            &path,
            vec![
                Box::new(|tx| revokes_and_audits(tx, "good")),
                Box::new(|tx| {
                    revokes_and_audits(tx, "bad")?;
                    revokes_and_audits(tx, "bad again")?;
                    Err(Error::conflict("changed its mind"))
                }),
                Box::new(|tx| revokes_and_audits(tx, "also good")),
            ],
        );
        assert!(matches!(answers[1], Err(Error::Conflict(_))), "{answers:?}");
        assert_eq!((answers[0].as_ref().ok(), answers[2].as_ref().ok()), (Some(&1), Some(&2)), "no gap in the chain");
        assert_eq!(published(&effects), (vec![1, 2], 2), "the failed command's effects are gone");
        assert_eq!(count_events(&path), 2);
        let report = crate::store::reads::verify_audit(&open_connection(&path, true).unwrap()).unwrap();
        assert!(report.ok, "{report:?}");
    }

    #[test]
    fn a_panicking_command_in_a_shared_batch_rolls_back_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether.db");
        let (answers, effects) = one_batch(
            &path,
            vec![
                Box::new(|tx| revokes_and_audits(tx, "good")),
                Box::new(|tx| {
                    // Inside a held subscriber list, which the failed command must not leave held.
                    tx.holding_subscribers(|tx| {
                        let trigger = revokes_and_audits(tx, "trigger")?;
                        tx.audit(NewEvent::new(Actor::system(), "t.caused", Subject::new("t", "c")).cause(trigger))?;
                        panic!("a bug in a command")
                    })
                }),
                Box::new(|tx| revokes_and_audits(tx, "also good")),
            ],
        );
        assert!(matches!(answers[1], Err(Error::Internal(_))), "{answers:?}");
        assert_eq!((answers[0].as_ref().ok(), answers[2].as_ref().ok()), (Some(&1), Some(&2)));
        assert_eq!(published(&effects), (vec![1, 2], 2));
        assert_eq!(count_events(&path), 2);
        let conn = open_connection(&path, true).unwrap();
        assert!(
            crate::store::query_plan::audit_causes(&conn).is_empty(),
            "the panicked command's cause is not recorded"
        );
    }

    #[test]
    fn a_failing_command_alone_in_its_batch_rolls_back_the_batch_and_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tether.db");
        let (answers, effects) = one_batch(
            &path,
            vec![Box::new(|tx| {
                revokes_and_audits(tx, "half")?;
                Err(Error::conflict("no"))
            })],
        );
        assert!(matches!(answers[0], Err(Error::Conflict(_))));
        assert!(effects.is_empty());
        assert_eq!(count_events(&path), 0);
        // The connection is usable again: no transaction was left open.
        let (answers, _) = one_batch(&path, vec![Box::new(|tx| audited(tx, "next"))]);
        assert_eq!(answers[0].as_ref().ok(), Some(&1));
    }
}
