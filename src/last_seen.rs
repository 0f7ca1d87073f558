//! Batched "last seen" updates: authorize records into memory, a task flushes through the writer.
//!
//! `last_seen_at` is kept to the minute: a use within [`RESOLUTION_SECONDS`] of the last one
//! recorded for the session, from the same address and user agent, is not recorded again. Each
//! recorded use becomes a row update, and with many sessions in use each update touches a page
//! of its own: per request, that write cost more than the rest of authorize (docs/performance.md).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::domain::{SessionId, Timestamp};
use crate::store::{sessions, Writer};
use crate::views::Sharded;

/// How stale `last_seen_at` may be, in seconds, while the address and user agent stay the same.
pub const RESOLUTION_SECONDS: i64 = 60;

#[derive(Debug, Clone)]
struct Seen {
    at: Timestamp,
    ip: Option<String>,
    user_agent: Option<String>,
}

/// Latest use of each session since the last flush.
pub struct LastSeen {
    pending: Mutex<std::collections::HashMap<SessionId, Seen>>,
    /// Per session: the second of the last use recorded, and a hash of its address and agent.
    recorded: Sharded<u128, (i64, u64)>,
    hasher: foldhash::fast::RandomState,
    /// The newest second when `recorded` was last pruned of entries past the resolution.
    pruned: AtomicI64,
}

impl Default for LastSeen {
    fn default() -> Self {
        LastSeen {
            pending: Mutex::default(),
            recorded: Sharded::new(16),
            hasher: foldhash::fast::RandomState::default(),
            pruned: AtomicI64::new(0),
        }
    }
}

impl LastSeen {
    pub fn record(&self, session: SessionId, at: Timestamp, ip: Option<String>, user_agent: Option<String>) {
        let bound = |v: Option<String>| v.filter(|s| s.len() <= 512 && !s.chars().any(char::is_control));
        let (ip, user_agent) = (bound(ip), bound(user_agent));
        let print = self.hasher.hash_one((&ip, &user_agent));
        let (key, second) = (session.uuid().as_u128(), at.seconds());
        if let Some((last, last_print)) = self.recorded.get(&key) {
            if last_print == print && (last..last + RESOLUTION_SECONDS).contains(&second) {
                return;
            }
        }
        self.recorded.insert(key, (second, print));
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(session, Seen { at, ip, user_agent });
        }
    }

    /// Forgets sessions whose last recorded use is past the resolution (their next use is
    /// recorded anyway), at most once per resolution.
    fn prune(&self, newest: i64) {
        let pruned = self.pruned.load(Ordering::Relaxed);
        if newest - pruned >= RESOLUTION_SECONDS && self.pruned.swap(newest, Ordering::Relaxed) == pruned {
            self.recorded.retain(|_, (second, _)| *second > newest - RESOLUTION_SECONDS);
        }
    }

    /// Writes what was recorded since the last flush, in one command. If the write fails, the
    /// batch goes back to be written with the next one (a use recorded meanwhile wins).
    pub async fn flush(&self, writer: &Writer) {
        let batch = match self.pending.lock() {
            Ok(mut pending) if !pending.is_empty() => std::sync::Arc::new(std::mem::take(&mut *pending)),
            _ => return,
        };
        if let Some(newest) = batch.values().map(|seen| seen.at.seconds()).max() {
            self.prune(newest);
        }
        let written = batch.clone();
        let result = writer
            .execute(move |tx| {
                for (id, seen) in written.iter() {
                    sessions::touch_session(tx, *id, seen.at, seen.ip.as_deref(), seen.user_agent.as_deref())?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "last-seen flush failed; retried with the next one");
            if let Ok(mut pending) = self.pending.lock() {
                for (id, seen) in batch.iter() {
                    pending.entry(*id).or_insert_with(|| seen.clone());
                }
            }
        }
    }

    /// Flushes every `period` until `stop` resolves, then once more.
    pub async fn run(
        self: std::sync::Arc<Self>,
        writer: Writer,
        period: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => self.flush(&writer).await,
                _ = &mut stop => break,
            }
        }
        self.flush(&writer).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use super::*;
    use crate::store::db_error;

    fn pending(log: &LastSeen) -> Vec<SessionId> {
        log.pending.lock().unwrap().keys().copied().collect()
    }

    #[test]
    fn a_use_within_the_resolution_from_the_same_place_is_not_recorded_again() {
        let log = LastSeen::default();
        let session = SessionId::generate();
        let at = |s: i64| Timestamp(s * 1000);
        let ip = || Some("10.0.0.1".to_owned());
        log.record(session, at(100), ip(), None);
        log.pending.lock().unwrap().clear();

        log.record(session, at(100 + RESOLUTION_SECONDS - 1), ip(), None);
        assert!(pending(&log).is_empty(), "same place, within the resolution");

        log.record(session, at(120), Some("10.0.0.2".into()), None);
        assert_eq!(pending(&log), vec![session], "another address is recorded at once");
        log.pending.lock().unwrap().clear();

        log.record(session, at(120), Some("10.0.0.2".into()), Some("agent/2".into()));
        assert_eq!(pending(&log), vec![session], "another user agent is recorded at once");
        log.pending.lock().unwrap().clear();

        log.record(session, at(120 + RESOLUTION_SECONDS), Some("10.0.0.2".into()), Some("agent/2".into()));
        assert_eq!(pending(&log), vec![session], "past the resolution");

        let other = SessionId::generate();
        log.record(other, at(121), None, None);
        assert!(pending(&log).contains(&other), "each session has its own");
    }

    #[test]
    fn pruning_forgets_only_sessions_past_the_resolution() {
        let log = LastSeen::default();
        let (old, recent) = (SessionId::generate(), SessionId::generate());
        log.record(old, Timestamp(1_000), None, None);
        log.record(recent, Timestamp(61_000), None, None);

        log.prune(61 + 1);

        assert!(log.recorded.get(&old.uuid().as_u128()).is_none());
        assert!(log.recorded.get(&recent.uuid().as_u128()).is_some());
    }

    #[tokio::test]
    async fn a_flush_that_fails_keeps_its_batch_for_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let views = Arc::new(crate::views::Views::default());
        let writer =
            Writer::start(&dir.path().join("tether.db"), Arc::new(crate::clock::Clock::default()), views).unwrap();
        let rename = |from: &'static str, to: &'static str| {
            let sql = format!("ALTER TABLE {from} RENAME TO {to}");
            writer.execute(move |tx| tx.conn().execute_batch(&sql).map_err(db_error))
        };
        let log = LastSeen::default();
        let session = SessionId::generate();
        log.record(session, Timestamp(5), Some("10.0.0.1".into()), None);

        rename("sessions", "sessions_away").await.unwrap();
        log.flush(&writer).await;
        assert_eq!(pending(&log), vec![session], "the failed batch is kept");

        rename("sessions_away", "sessions").await.unwrap();
        log.flush(&writer).await;
        assert!(pending(&log).is_empty(), "written with the next flush");
    }
}
