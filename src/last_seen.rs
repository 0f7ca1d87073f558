//! Batched "last seen" updates: authorize records into memory, a task flushes through the writer.

use std::sync::Mutex;
use std::time::Duration;

use crate::domain::{SessionId, Timestamp};
use crate::store::{sessions, Writer};

#[derive(Debug, Clone)]
struct Seen {
    at: Timestamp,
    ip: Option<String>,
    user_agent: Option<String>,
}

/// Latest use of each session since the last flush.
#[derive(Default)]
pub struct LastSeen {
    pending: Mutex<std::collections::HashMap<SessionId, Seen>>,
}

impl LastSeen {
    pub fn record(&self, session: SessionId, at: Timestamp, ip: Option<String>, user_agent: Option<String>) {
        let bound = |v: Option<String>| v.filter(|s| s.len() <= 512 && !s.chars().any(char::is_control));
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(session, Seen { at, ip: bound(ip), user_agent: bound(user_agent) });
        }
    }

    /// Writes what was recorded since the last flush, in one command. If the write fails, the
    /// batch goes back to be written with the next one (a use recorded meanwhile wins).
    pub async fn flush(&self, writer: &Writer) {
        let batch = match self.pending.lock() {
            Ok(mut pending) if !pending.is_empty() => std::sync::Arc::new(std::mem::take(&mut *pending)),
            _ => return,
        };
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
