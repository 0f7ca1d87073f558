//! Several nodes on one PostgreSQL database (docs/architecture.md, "Running several nodes"):
//! the lease that lets this node answer allow ([`lease`]), the tailer that applies every node's
//! commits to the live view ([`tail`]), and the wait of a revoking write for every node that
//! holds a live lease ([`confirm`]), and which node runs the background work ([`leader`]).

pub mod confirm;
pub mod leader;
pub mod lease;
pub mod tail;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::postgres::PgTarget;
use crate::store::writer::EffectSink;
use crate::store::{Effect, Withdrawn};

/// How long a renewed lease lasts in the database: the most a revoking call waits for a node
/// that stopped answering.
pub const LEASE: Duration = Duration::from_secs(2);
/// How often a node renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_millis(250);
/// Taken off the node's own count of its lease, for clocks that run at slightly different
/// rates: the node stops allowing before PostgreSQL's record of its lease ends.
pub const DRIFT_MARGIN: Duration = Duration::from_millis(100);

/// What this node knows of its standing: the audit seq it has applied, its leases, and from
/// them until when it may answer allow. Read on every request without a lock (atomic loads).
pub struct NodeState {
    base: Instant,
    applied: AtomicI64,
    /// Leases obtained and not yet over: (deadline, in nanoseconds after `base`; the chain head
    /// the renewal read).
    leases: Mutex<Vec<(u64, i64)>>,
    /// The latest deadline among leases whose head has been applied (0: none).
    allow_until: AtomicU64,
    /// The latest deadline among all leases (0: none): whether a node that may not allow is
    /// behind or without a lease, read without the lock. Once a node's lease lapsed, every
    /// request took the lock to tell, and the renewal that would end the lapse queued behind
    /// them for it.
    lease_until: AtomicU64,
    /// Set once the node is stopping: its threads end and it allows nothing more.
    stopping: AtomicBool,
    /// Seq ranges `(after, through]` this node's writer committed and applied to its views, in
    /// order: the tailer need not read them again ([`NodeState::own_batch`]).
    own: Mutex<std::collections::VecDeque<(i64, i64)>>,
}

/// Where the next events after a seq stand with respect to this node's own commits.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OwnBatch {
    /// They are this node's own, through this seq: applied already.
    Through(i64),
    /// This node's next own batch starts after this seq: read no further than it.
    Before(i64),
    None,
}

/// Why a node cannot vouch for an allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It holds a live lease and has applied everything up to it.
    Current,
    /// Its leases have run out: it cannot reach the database, or it was paused.
    NoLease,
    /// It holds a lease but has not yet applied the log up to the head that lease was granted at.
    Behind,
    Stopping,
}

impl Standing {
    pub fn explain(self) -> &'static str {
        match self {
            Standing::Current => "current",
            Standing::NoLease => "this node holds no live lease on the database, so it cannot vouch for an allow",
            Standing::Behind => "this node has not yet applied every committed change, so it cannot vouch for an allow",
            Standing::Stopping => "this node is stopping",
        }
    }
}

impl NodeState {
    pub fn new(applied: i64) -> Self {
        NodeState {
            base: Instant::now(),
            applied: AtomicI64::new(applied),
            leases: Mutex::new(Vec::new()),
            allow_until: AtomicU64::new(0),
            lease_until: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            own: Mutex::new(Default::default()),
        }
    }

    /// Records that this node's writer committed `(after, through]` and applied it to the views.
    pub(crate) fn committed_here(&self, after: i64, through: i64) {
        let applied = self.applied();
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        own.retain(|(_, end)| *end > applied);
        own.push_back((after, through));
    }

    /// What follows `after` ([`OwnBatch`]); forgets the own batches already passed.
    pub(crate) fn own_batch(&self, after: i64) -> OwnBatch {
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        while own.front().is_some_and(|(_, end)| *end <= after) {
            own.pop_front();
        }
        match own.front() {
            Some((start, end)) if *start <= after => OwnBatch::Through(*end),
            Some((start, _)) => OwnBatch::Before(*start),
            None => OwnBatch::None,
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn applied(&self) -> i64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Whether this node may answer allow now.
    pub fn standing(&self) -> Standing {
        if self.stopping.load(Ordering::Acquire) {
            return Standing::Stopping;
        }
        let now = self.nanos(Instant::now());
        if now < self.allow_until.load(Ordering::Acquire) {
            return Standing::Current;
        }
        if now < self.lease_until.load(Ordering::Acquire) {
            Standing::Behind
        } else {
            Standing::NoLease
        }
    }

    /// Records a lease granted at `head`, counted from `sent` (when the renewal was sent).
    pub(crate) fn granted(&self, sent: Instant, head: i64) {
        let deadline = self.nanos(sent + LEASE - DRIFT_MARGIN);
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        leases.push((deadline, head));
        self.recompute(&mut leases);
    }

    /// Records that every event up to `seq` has been applied.
    pub(crate) fn applied_through(&self, seq: i64) {
        self.applied.fetch_max(seq, Ordering::AcqRel);
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        self.recompute(&mut leases);
    }

    fn recompute(&self, leases: &mut Vec<(u64, i64)>) {
        let now = self.nanos(Instant::now());
        leases.retain(|(deadline, _)| *deadline > now);
        let applied = self.applied.load(Ordering::Acquire);
        let until = leases.iter().filter(|(_, head)| *head <= applied).map(|(d, _)| *d).max().unwrap_or(0);
        self.lease_until.store(leases.iter().map(|(d, _)| *d).max().unwrap_or(0), Ordering::Release);
        self.allow_until.store(until, Ordering::Release);
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// This node's part in a cluster: its id, its standing, and the threads that keep it.
pub struct Cluster {
    pub node_id: String,
    pub state: Arc<NodeState>,
    pub confirmer: confirm::Confirmer,
    /// Whether this node runs webhook deliveries and Shared Signals pushes ([`leader`]).
    pub leading: Arc<AtomicBool>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Cluster {
    /// Joins the cluster: registers the node and starts its lease, tailer and confirmation
    /// threads. `applied`: the chain head the node's views were loaded at. Blocking.
    pub fn join(
        target: &PgTarget,
        applied: i64,
        address: String,
        sink: Arc<dyn EffectSink>,
    ) -> crate::domain::Result<Cluster> {
        let node_id = format!("node_{}", uuid::Uuid::now_v7().simple());
        let state = Arc::new(NodeState::new(applied));
        let mut threads = Vec::new();
        threads.push(lease::start(target.clone(), node_id.clone(), address, state.clone())?);
        threads.push(tail::start(target.clone(), node_id.clone(), state.clone(), sink)?);
        let (confirmer, thread) = confirm::start(target.clone(), node_id.clone(), state.clone())?;
        threads.push(thread);
        let leading = Arc::new(AtomicBool::new(false));
        threads.push(leader::start(target.clone(), node_id.clone(), state.clone(), leading.clone())?);
        // A node starts listening able to vouch for an allow: its first lease granted and the log
        // applied up to it. Bounded: a node that cannot renew still starts, answering 503.
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.standing() != Standing::Current && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if state.standing() != Standing::Current {
            tracing::warn!(node = %node_id, "no current lease at start-up; allows answer 503 until there is one");
        }
        Ok(Cluster { node_id, state, confirmer, leading, threads: Mutex::new(threads) })
    }

    /// Leaves the cluster: stops allowing, ends the threads (the lease thread deletes the
    /// node's row, so revokers stop waiting for it). Blocking.
    pub fn leave(&self) {
        self.state.stop();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // An App dropped without `serve` ending (tests): the threads see this and end.
        self.state.stop();
    }
}

/// The writer's effects on a cluster node: everything goes to the views at once, except the
/// committed events, which the tailer publishes for every node's commits alike, in seq order.
/// Once the node has joined, each batch's seq range is recorded as applied here
/// ([`NodeState::committed_here`]).
pub struct LocalEffects {
    pub views: Arc<dyn EffectSink>,
    pub node: Arc<std::sync::OnceLock<Arc<NodeState>>>,
}

impl EffectSink for LocalEffects {
    fn apply(&self, effects: &[Effect]) {
        let local: Vec<Effect> = effects.iter().filter(|e| !matches!(e, Effect::Audited(_))).cloned().collect();
        self.views.apply(&local);
        // A batch's events are consecutive: it appended them under the chain lock.
        let mut seqs = effects.iter().filter_map(|e| if let Effect::Audited(a) = e { Some(a.seq) } else { None });
        if let (Some(node), Some(first)) = (self.node.get(), seqs.next()) {
            node.committed_here(first - 1, seqs.next_back().unwrap_or(first));
        }
    }

    fn withdraw(&self, effects: &[Effect]) -> Withdrawn {
        self.views.withdraw(effects)
    }

    fn restore(&self, withdrawn: Withdrawn) {
        self.views.restore(withdrawn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tailer_skips_this_nodes_own_batches_and_reads_up_to_the_next() {
        let state = NodeState::new(10);
        assert_eq!(state.own_batch(10), OwnBatch::None);
        state.committed_here(12, 15);
        state.committed_here(15, 16);
        assert_eq!(state.own_batch(10), OwnBatch::Before(12), "events 11 and 12 are another node's");
        assert_eq!(state.own_batch(12), OwnBatch::Through(15));
        assert_eq!(state.own_batch(13), OwnBatch::Through(15), "a read that stopped inside one skips the rest");
        assert_eq!(state.own_batch(15), OwnBatch::Through(16));
        assert_eq!(state.own_batch(16), OwnBatch::None, "passed batches are forgotten");
        state.applied_through(16);
        state.committed_here(20, 21);
        assert_eq!(state.own.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_node_allows_only_under_a_live_lease_whose_head_it_has_applied() {
        let state = NodeState::new(10);
        assert_eq!(state.standing(), Standing::NoLease, "no lease yet");
        state.granted(Instant::now(), 12);
        assert_eq!(state.standing(), Standing::Behind, "the lease was granted at a head not yet applied");
        state.applied_through(12);
        assert_eq!(state.standing(), Standing::Current);
        state.granted(Instant::now(), 20);
        assert_eq!(state.standing(), Standing::Current, "the earlier lease still vouches while the node catches up");
    }

    #[test]
    fn a_lease_counted_from_long_ago_has_run_out() {
        let state = NodeState::new(0);
        let long_ago = Instant::now().checked_sub(LEASE).unwrap_or_else(Instant::now);
        state.granted(long_ago, 0);
        assert_eq!(state.standing(), Standing::NoLease);
        state.stop();
        assert_eq!(state.standing(), Standing::Stopping);
    }
}
