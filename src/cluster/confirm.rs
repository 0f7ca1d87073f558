//! The revoker's wait: a write that revoked something at seq `S` answers only once every other
//! node with a live lease has applied `S` (docs/architecture.md, "A revoking call waits for the
//! nodes"). One thread asks PostgreSQL for every waiting write at once, every [`POLL`].

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::NodeState;
use crate::domain::{Error, Result};
use crate::store::postgres::PgTarget;

const POLL: Duration = Duration::from_millis(2);
/// A revoker that cannot read the nodes' standing (the database is out of reach) gives up after
/// this long: its revocation is committed, but it cannot say every node has it.
const GIVE_UP_AFTER: Duration = Duration::from_secs(4);

struct Waiting {
    seq: i64,
    since: Instant,
    answer: oneshot::Sender<Result<()>>,
}

/// Hands out waits; cheap to clone.
#[derive(Clone)]
pub struct Confirmer {
    queue: Arc<(Mutex<Vec<Waiting>>, Condvar)>,
}

impl Confirmer {
    /// Resolves once every other node with a live lease has applied `seq`.
    pub fn confirm(&self, seq: i64) -> oneshot::Receiver<Result<()>> {
        let (answer, answered) = oneshot::channel();
        let (queue, wake) = &*self.queue;
        queue.lock().unwrap_or_else(|p| p.into_inner()).push(Waiting { seq, since: Instant::now(), answer });
        wake.notify_one();
        answered
    }
}

pub(super) fn start(
    target: PgTarget,
    node_id: String,
    state: Arc<NodeState>,
) -> Result<(Confirmer, std::thread::JoinHandle<()>)> {
    let confirmer = Confirmer { queue: Arc::new((Mutex::new(Vec::new()), Condvar::new())) };
    let queue = confirmer.queue.clone();
    let thread = std::thread::Builder::new()
        .name("tether-confirm".into())
        .spawn(move || run(&target, &node_id, &state, &queue))
        .map_err(|e| Error::internal(format!("spawn confirm thread: {e}")))?;
    Ok((confirmer, thread))
}

fn run(target: &PgTarget, node_id: &str, state: &NodeState, queue: &(Mutex<Vec<Waiting>>, Condvar)) {
    let (waiting, wake) = queue;
    let mut client: Option<postgres::Client> = None;
    loop {
        {
            let mut pending = waiting.lock().unwrap_or_else(|p| p.into_inner());
            while pending.is_empty() {
                if state.is_stopping() {
                    return;
                }
                pending = wake.wait_timeout(pending, Duration::from_millis(200)).unwrap_or_else(|p| p.into_inner()).0;
            }
        }
        let confirmed = match client.as_mut() {
            Some(c) => confirmed_through(c, node_id),
            None => {
                target.client().map_err(|e| e.to_string()).and_then(|c| confirmed_through(client.insert(c), node_id))
            }
        };
        let mut pending = waiting.lock().unwrap_or_else(|p| p.into_inner());
        match confirmed {
            Ok(through) => {
                for done in extract(&mut pending, |w| w.seq <= through) {
                    let _ = done.answer.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the nodes' standing");
                client = None;
            }
        }
        for late in extract(&mut pending, |w| w.since.elapsed() >= GIVE_UP_AFTER) {
            let _ = late.answer.send(Err(Error::Unavailable(
                "the revocation is committed, but this node cannot confirm that every node has applied it".into(),
            )));
        }
        if state.is_stopping() {
            for left in pending.drain(..) {
                let _ = left.answer.send(Err(Error::Unavailable("this node is stopping".into())));
            }
            return;
        }
        let more = !pending.is_empty();
        drop(pending);
        if more {
            std::thread::sleep(POLL);
        }
    }
}

fn extract(pending: &mut Vec<Waiting>, take: impl Fn(&Waiting) -> bool) -> Vec<Waiting> {
    let (out, keep): (Vec<_>, Vec<_>) = pending.drain(..).partition(|w| take(w));
    *pending = keep;
    out
}

/// The highest seq no other node can still allow against. A node allows only under a live lease
/// whose head it has applied, so it vouches for every seq up to the seq it has applied, or up to
/// the lowest head among its live leases, whichever is higher (without bound once none is live).
/// `FOR SHARE` waits for a renewal that holds a node's row, and the leases are read from the row
/// the renewal left (they are in the row itself, so the read sees them).
fn confirmed_through(client: &mut postgres::Client, node_id: &str) -> std::result::Result<i64, String> {
    let rows = client
        .query(
            "SELECT applied_seq,
                    (SELECT min(x.h) FROM unnest(lease_heads, lease_untils) AS x(h, u) WHERE x.u > clock_timestamp())
             FROM tether_nodes WHERE id <> $1 FOR SHARE",
            &[&node_id],
        )
        .map_err(|e| e.to_string())?;
    Ok(rows
        .iter()
        .map(|r| match r.get::<_, Option<i64>>(1) {
            None => i64::MAX,
            Some(lowest_live_head) => r.get::<_, i64>(0).max(lowest_live_head),
        })
        .min()
        .unwrap_or(i64::MAX))
}
