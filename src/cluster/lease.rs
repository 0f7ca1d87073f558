//! The lease thread: renews this node's row in `tether_nodes` every [`RENEW_EVERY`], reading the
//! chain head under its row lock, and deletes the row when the node leaves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{NodeState, LEASE, RENEW_EVERY};
use crate::domain::{Error, Result};
use crate::store::postgres::PgTarget;

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
    let mut client: Option<postgres::Client> = None;
    let mut failing = false;
    while !state.is_stopping() {
        let sent = Instant::now();
        let renewed = match client.as_mut() {
            Some(c) => renew(c, node_id, address, state.applied()).map_err(|e| e.to_string()),
            None => match target.client() {
                Ok(c) => {
                    let c = client.insert(c);
                    renew(c, node_id, address, state.applied()).map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            },
        };
        match renewed {
            Ok(head) => {
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
                client = None;
            }
        }
        std::thread::sleep(RENEW_EVERY.saturating_sub(sent.elapsed()).max(Duration::from_millis(10)));
    }
    // Leaving: revokers need not wait out this node's lease.
    let left = client
        .map_or_else(|| target.client().map_err(|e| e.to_string()), Ok)
        .and_then(|mut c| c.execute("DELETE FROM tether_nodes WHERE id = $1", &[&node_id]).map_err(|e| e.to_string()));
    if let Err(e) = left {
        tracing::warn!(node = node_id, error = %e, "could not remove this node's lease row; it runs out by itself");
    }
}

/// One renewal, as docs/architecture.md argues it: the node's row locked first, then the head
/// read in a statement of its own (so it sees every commit before the lock was granted), then
/// the lease written with the database's clock. Returns the head.
fn renew(
    client: &mut postgres::Client,
    node_id: &str,
    address: &str,
    applied: i64,
) -> std::result::Result<i64, postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute(
        "INSERT INTO tether_nodes (id, address, lease_until) VALUES ($1, $2, clock_timestamp())
         ON CONFLICT (id) DO NOTHING",
        &[&node_id, &address],
    )?;
    tx.query("SELECT id FROM tether_nodes WHERE id = $1 FOR UPDATE", &[&node_id])?;
    // The committed head (migration 0003): the same value as the committed `max(seq)`, without
    // walking the entries a transaction in progress is adding.
    let head: i64 = tx.query_one("SELECT head FROM audit_chain_lock WHERE id = 1", &[])?.get(0);
    // The new lease joins the node's live ones (those not yet run out), all by the database's clock.
    tx.execute(
        "WITH lease AS (SELECT clock_timestamp() + $2::float8 * interval '1 second' AS until),
              live AS (SELECT coalesce(array_agg(x.h ORDER BY x.u), '{}') AS heads,
                              coalesce(array_agg(x.u ORDER BY x.u), '{}') AS untils
                       FROM tether_nodes n, unnest(n.lease_heads, n.lease_untils) AS x(h, u)
                       WHERE n.id = $1 AND x.u > clock_timestamp())
         UPDATE tether_nodes
         SET lease_until = lease.until, renewed_head = $3, applied_seq = greatest(applied_seq, $4),
             lease_heads = live.heads || $3::bigint, lease_untils = live.untils || lease.until
         FROM lease, live
         WHERE id = $1",
        &[&node_id, &LEASE.as_secs_f64(), &head, &applied],
    )?;
    tx.execute(
        "DELETE FROM tether_nodes WHERE lease_until < clock_timestamp() - $1::float8 * interval '1 second'",
        &[&FORGET_AFTER_SECONDS],
    )?;
    tx.commit()?;
    Ok(head)
}
