//! The lease thread: renews this node's row in `tether_nodes` every [`RENEW_EVERY`], reading the
//! chain head under its row lock, and deletes the row when the node leaves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{NodeState, LEASE, RENEW_EVERY};
use crate::domain::{Error, Result};
use crate::store::postgres::PgTarget;

/// A renewal that takes longer is logged: the node may have stopped allowing meanwhile.
const LATE: Duration = Duration::from_secs(1);

/// Rows of nodes whose lease ended this long ago are removed by whichever node renews.
const FORGET_AFTER_SECONDS: f64 = 3600.0;

pub(super) fn start(
    target: PgTarget,
    node_id: String,
    address: String,
    state: Arc<NodeState>,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tether-lease".into())
        .spawn(move || run(&target, &node_id, &address, &state))
        .map_err(|e| Error::internal(format!("spawn lease thread: {e}")))
}

fn run(target: &PgTarget, node_id: &str, address: &str, state: &NodeState) {
    let mut renewer: Option<Renewer> = None;
    let mut failing = false;
    while !state.is_stopping() {
        let sent = Instant::now();
        let renewed = match renewer.as_mut() {
            Some(r) => r.renew(node_id, address, state.applied()).map_err(|e| e.to_string()),
            None => match Renewer::connect(target) {
                Ok(r) => renewer.insert(r).renew(node_id, address, state.applied()).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            },
        };
        match renewed {
            Ok(head) => {
                let took = sent.elapsed();
                if took > LATE {
                    // The lease counts from when the renewal was sent: one this late leaves the
                    // node little or no time to allow before the next.
                    tracing::warn!(node = node_id, took_ms = took.as_millis() as u64, "a lease renewal was late");
                }
                state.granted(sent, head);
                if failing {
                    tracing::info!(node = node_id, "lease renewed again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(node = node_id, error = %e, "lease renewal failed; allows stop when the lease runs out");
                    failing = true;
                }
                renewer = None;
            }
        }
        std::thread::sleep(RENEW_EVERY.saturating_sub(sent.elapsed()).max(Duration::from_millis(10)));
    }
    // Leaving: revokers need not wait out this node's lease.
    let left = renewer
        .map_or_else(|| target.client().map_err(|e| e.to_string()), |r| Ok(r.client))
        .and_then(|mut c| c.execute("DELETE FROM tether_nodes WHERE id = $1", &[&node_id]).map_err(|e| e.to_string()));
    if let Err(e) = left {
        tracing::warn!(node = node_id, error = %e, "could not remove this node's lease row; it runs out by itself");
    }
}

/// The lease thread's connection and its renewal, prepared once.
struct Renewer {
    client: postgres::Client,
    renewal: postgres::Statement,
}

impl Renewer {
    fn connect(target: &PgTarget) -> std::result::Result<Renewer, String> {
        let mut client = target.client().map_err(|e| e.to_string())?;
        let renewal = client.prepare("SELECT tether_renew_lease($1, $2, $3, $4, $5)").map_err(|e| e.to_string())?;
        Ok(Renewer { client, renewal })
    }

    /// One renewal, as docs/architecture.md argues it: the node's row locked first, then the
    /// head read in a statement of its own (so it sees every commit before the lock was
    /// granted), then the lease written with the database's clock. One round trip: migration
    /// 0004's function runs those statements in that order. Returns the head.
    fn renew(&mut self, node_id: &str, address: &str, applied: i64) -> std::result::Result<i64, postgres::Error> {
        let lease = LEASE.as_secs_f64();
        let row =
            self.client.query_one(&self.renewal, &[&node_id, &address, &lease, &applied, &FORGET_AFTER_SECONDS])?;
        Ok(row.get(0))
    }
}
