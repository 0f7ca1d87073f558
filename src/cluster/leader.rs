//! One runner for the background work that must not run twice (webhook deliveries, Shared
//! Signals pushes): the node holding a PostgreSQL advisory lock on a connection of its own. The
//! lock ends with that connection, so a node that dies or is cut off hands it over within
//! [`TRY_EVERY`] plus the server noticing the lost connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::NodeState;
use crate::domain::{Error, Result};
use crate::store::postgres::PgTarget;

/// The advisory lock's key ("tether" and 2; migrations use 1).
const LEADER_LOCK: i64 = 0x7465_7468_6572_0002;
/// How often a node that does not hold the lock tries to take it, and one that holds it checks
/// its connection.
const TRY_EVERY: Duration = Duration::from_millis(500);

pub(super) fn start(
    target: PgTarget,
    node_id: String,
    state: Arc<NodeState>,
    leading: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tether-leader".into())
        .spawn(move || run(&target, &node_id, &state, &leading))
        .map_err(|e| Error::internal(format!("spawn leader thread: {e}")))
}

fn run(target: &PgTarget, node_id: &str, state: &NodeState, leading: &AtomicBool) {
    let mut client: Option<postgres::Client> = None;
    while !state.is_stopping() {
        let held = match client.as_mut() {
            Some(c) => check(c, leading.load(Ordering::Acquire)),
            None => target.client().map_err(|e| e.to_string()).and_then(|c| check(client.insert(c), false)),
        };
        let now_leading = held.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "background-work lock");
            client = None;
            false
        });
        if now_leading != leading.swap(now_leading, Ordering::AcqRel) {
            tracing::info!(node = node_id, leading = now_leading, "background work (deliveries, pushes) moved");
        }
        std::thread::sleep(TRY_EVERY);
    }
    // Dropping the connection releases the lock.
    leading.store(false, Ordering::Release);
}

/// Takes the lock when not holding it; when holding it, checks the connection still works (the
/// lock lives as long as the connection does).
fn check(client: &mut postgres::Client, holding: bool) -> std::result::Result<bool, String> {
    if holding {
        client.simple_query("SELECT 1").map_err(|e| e.to_string())?;
        return Ok(true);
    }
    client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
        .map(|r| r.get::<_, bool>(0))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs a PostgreSQL server (`source tests/pg/start.sh`); says so and passes without one,
    /// except in CI.
    #[test]
    fn one_node_of_two_holds_the_background_work_and_the_other_takes_over_when_it_leaves() {
        let Ok(url) = std::env::var("TETHER_TEST_DATABASE_URL") else {
            assert!(std::env::var("CI").is_err(), "CI must run this test: TETHER_TEST_DATABASE_URL is not set");
            eprintln!("skipped: TETHER_TEST_DATABASE_URL is not set");
            return;
        };
        // Advisory locks are per database: both nodes use the server's default one, which no
        // other test leads in.
        let target = PgTarget::new(&url, None).expect("target");
        let node = || {
            let (state, leading) = (Arc::new(NodeState::new(0)), Arc::new(AtomicBool::new(false)));
            let thread = start(target.clone(), "test".into(), state.clone(), leading.clone()).expect("start");
            (state, leading, thread)
        };
        let (a, b) = (node(), node());
        let leaders = || [&a.1, &b.1].iter().filter(|l| l.load(Ordering::Acquire)).count();
        let waited = wait_until(|| leaders() == 1);
        assert!(waited, "exactly one of two nodes leads");
        std::thread::sleep(TRY_EVERY * 3);
        assert_eq!(leaders(), 1, "and stays the only one");
        let (leader, follower) = if a.1.load(Ordering::Acquire) { (a, b) } else { (b, a) };
        leader.0.stop();
        leader.2.join().expect("leader thread");
        assert!(wait_until(|| follower.1.load(Ordering::Acquire)), "the other node takes over once the leader leaves");
        follower.0.stop();
        follower.2.join().expect("follower thread");
    }

    fn wait_until(done: impl Fn() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}
