//! What the writer's SQLite and PostgreSQL tests share: a batch of commands run straight through
//! `commit_batch`, on a connection the test opened.
//!
//! Its imports name their modules: this is not a `*_tests.rs` file, so tests/module_graph.rs reads
//! it, and `super::*` there would count as an edge from `store::writer` to `store`, a cycle.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tokio::sync::{mpsc, oneshot};

use crate::audit::NewEvent;
use crate::clock::Clock;
use crate::domain::{Actor, Result, Subject};
use crate::store::audit::load_chain_head;
use crate::store::conn::Conn;
use crate::store::tx::{ChainHead, Effect, Tx};
use crate::store::writer::{commit_batch, Carried, Counters, DelegationRead, EffectSink, Job, Pending, Shape};

/// Takes a batch's effects and applies none.
pub(super) struct NoViews;
impl EffectSink for NoViews {
    fn apply(&self, _: &[Effect]) {}
}

pub(super) type Boxed = Box<dyn FnOnce(&mut Tx<'_>) -> Result<i64> + Send>;

/// Runs `commands` (each with whether it only appends) as one batch, straight through
/// `commit_batch` so they surely share it: each command's answer and the effects the batch
/// would apply, or the batch's own failure.
pub(super) fn try_batch(conn: &Conn, commands: Vec<(bool, Boxed)>) -> Result<(Vec<Result<i64>>, Vec<Effect>)> {
    try_batch_reading(conn, commands.into_iter().map(|(appending, command)| (appending, None, command)).collect())
}

/// [`try_batch`] with the delegation each command will read, if it says.
pub(super) fn try_batch_reading(
    conn: &Conn,
    commands: Vec<(bool, Option<DelegationRead>, Boxed)>,
) -> Result<(Vec<Result<i64>>, Vec<Effect>)> {
    let head = load_chain_head(conn).unwrap();
    let mut answers = Vec::new();
    let mut batch: Vec<Job> = commands
        .into_iter()
        .map(|(appending, delegation, command)| {
            let (answer, answered) = oneshot::channel();
            answers.push(answered);
            let shape = Shape { appending, delegation, credential: None };
            Box::new(Pending { command: Some(command), shape, result: None, answer }) as Job
        })
        .collect();
    let (_queue, mut jobs) = mpsc::channel::<Job>(1);
    let effects = commit_from(conn, head, &mut batch, &mut jobs)?;
    for job in batch {
        job.complete(Ok(()), None);
    }
    Ok((answers.into_iter().map(|mut a| a.try_recv().unwrap().0).collect(), effects))
}

/// Audits an event about `what`; its seq.
pub(super) fn audited(tx: &mut Tx<'_>, what: &str) -> Result<i64> {
    tx.audit(NewEvent::new(Actor::system(), "test.event", Subject::new("test", what))).map(|e| e.seq)
}

/// `commit_batch` with the chain at `head`, nothing remembered, the service clock and no views.
pub(super) fn commit_from(
    conn: &Conn,
    head: ChainHead,
    batch: &mut Vec<Job>,
    jobs: &mut mpsc::Receiver<Job>,
) -> Result<Vec<Effect>> {
    commit_batch(
        conn,
        &mut Carried { head, memo: None },
        batch,
        jobs,
        &Clock::default(),
        &Counters::default(),
        &NoViews,
    )
}
