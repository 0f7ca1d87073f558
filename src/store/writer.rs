//! The single writer: one thread owns the write connection and commits commands in batches.
//!
//! Group commit: the writer takes every command waiting in its queue (up to a bound), runs each
//! inside a savepoint of one IMMEDIATE transaction, commits once (one fsync for the batch), applies
//! the batch's effects to the in-memory views, and only then answers each caller. A command that
//! fails rolls back its own savepoint and leaves the rest of the batch alone.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::tx::{ChainHead, Effect, Tx};
use super::{db_error, migrate, open_connection};
use crate::clock::Clock;
use crate::domain::{Error, Result};

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
}

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
///
/// The thread ends when the last handle is dropped and the queue has drained: every command
/// already queued is still committed and answered.
pub struct Writer {
    queue: mpsc::Sender<Job>,
}

impl Writer {
    /// Opens the write connection, runs migrations and starts the writer thread.
    pub fn start(path: &Path, clock: Arc<Clock>, sink: Arc<dyn EffectSink>) -> Result<Writer> {
        let mut conn = open_connection(path, false)?;
        migrate::run(&mut conn)?;
        let head = ChainHead::load(&conn)?;
        let (queue, jobs) = mpsc::channel::<Job>(8192);
        std::thread::Builder::new()
            .name("tether-writer".into())
            .spawn(move || run(conn, head, jobs, clock, sink))
            .map_err(|e| Error::internal(format!("spawn writer: {e}")))?;
        Ok(Writer { queue })
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

fn run(
    conn: Connection,
    mut head: ChainHead,
    mut jobs: mpsc::Receiver<Job>,
    clock: Arc<Clock>,
    sink: Arc<dyn EffectSink>,
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
        match commit_batch(&conn, &mut head, &mut batch, &clock) {
            Ok(effects) => {
                sink.apply(&effects);
                for job in batch.drain(..) {
                    job.complete(Ok(()));
                }
            }
            Err(error) => {
                tracing::error!(error = %error, "write batch failed to commit");
                let _ = conn.execute_batch("ROLLBACK");
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
fn commit_batch(conn: &Connection, head: &mut ChainHead, batch: &mut [Job], clock: &Clock) -> Result<Vec<Effect>> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db_error)?;
    // Another process (`tether credential mint`) may have appended to the chain since our last
    // batch; under the write lock we now hold, the database's head is the truth.
    let current = ChainHead::load(conn)?;
    if current != *head {
        *head = current;
    }
    let mut tx = Tx::new(conn, clock.now(), head.clone());
    for job in batch.iter_mut() {
        let saved_head = tx.head.clone();
        let saved_effects = tx.effects.len();
        conn.execute_batch("SAVEPOINT command").map_err(db_error)?;
        if job.run(&mut tx) {
            conn.execute_batch("RELEASE command").map_err(db_error)?;
        } else {
            tx.head = saved_head;
            tx.effects.truncate(saved_effects);
            conn.execute_batch("ROLLBACK TO command; RELEASE command").map_err(db_error)?;
        }
    }
    conn.execute_batch("COMMIT").map_err(db_error)?;
    if tx.outbox_written {
        tx.effects.push(Effect::OutboxWritten);
    }
    *head = tx.head.clone();
    Ok(std::mem::take(&mut tx.effects))
}
