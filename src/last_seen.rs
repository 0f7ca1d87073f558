//! Batched "last seen" updates: authorize records into memory, a task flushes through the writer.

use std::sync::Mutex;
use std::time::Duration;

use crate::domain::{SessionId, Timestamp};
use crate::store::{writes, Writer};

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

    /// Writes what was recorded since the last flush, in one command.
    pub async fn flush(&self, writer: &Writer) {
        let batch = match self.pending.lock() {
            Ok(mut pending) if !pending.is_empty() => std::mem::take(&mut *pending),
            _ => return,
        };
        let result = writer
            .execute(move |tx| {
                for (id, seen) in &batch {
                    writes::touch_session(tx, *id, seen.at, seen.ip.as_deref(), seen.user_agent.as_deref())?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "last-seen flush failed");
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
