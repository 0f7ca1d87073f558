//! Denials of revoked sessions' tokens, counted so that replaying a dead token is audited in
//! aggregate rather than once per request.

use std::sync::Mutex;

use crate::domain::{SessionId, Timestamp};

/// Denials of revoked sessions' tokens, audited in aggregate: the first per session per minute
/// writes an event (with how many were denied since the last one), so replaying a dead token
/// cannot flood the log.
#[derive(Default)]
pub struct DenialLog {
    seen: Mutex<Denials>,
}

#[derive(Default)]
struct Denials {
    /// session → (minute of the last audited denial, denials since then)
    sessions: std::collections::HashMap<SessionId, (i64, u64)>,
    /// The minute of the last pruning: at most one per minute, so a minute with more sessions
    /// than the bound costs one pass, not one pass per call.
    pruned: i64,
}

/// Sessions remembered before older minutes are forgotten.
const DENIAL_LOG_BOUND: usize = 100_000;

impl DenialLog {
    /// Counts a denial; returns the count to audit when this is the first of its minute.
    pub fn count(&self, session: SessionId, now: Timestamp) -> Option<u64> {
        let minute = now.seconds().div_euclid(60);
        let mut seen = self.seen.lock().ok()?;
        let Denials { sessions, pruned } = &mut *seen;
        if sessions.len() > DENIAL_LOG_BOUND && *pruned != minute {
            // Forget sessions not denied this minute. Their denials since their last event are
            // lost with them: that count is only ever written at the session's next denial.
            sessions.retain(|_, (m, _)| *m >= minute);
            *pruned = minute;
        }
        let entry = sessions.entry(session).or_insert((i64::MIN, 0));
        entry.1 += 1;
        if entry.0 == minute {
            return None;
        }
        let count = entry.1;
        *entry = (minute, 0);
        Some(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_denial_of_a_minute_is_audited_with_the_count_since_the_last() {
        let log = DenialLog::default();
        let session = SessionId::generate();
        let minute = |m: i64| Timestamp(m * 60_000);
        assert_eq!(log.count(session, minute(1)), Some(1));
        assert_eq!(log.count(session, minute(1)), None);
        assert_eq!(log.count(session, minute(1)), None);
        assert_eq!(log.count(session, minute(2)), Some(3), "two counted in minute 1, plus this one");
        assert_eq!(log.count(SessionId::generate(), minute(2)), Some(1), "sessions are counted apart");
    }

    #[test]
    fn past_its_bound_the_log_forgets_older_minutes_once_per_minute() {
        let log = DenialLog::default();
        let minute = |m: i64| Timestamp(m * 60_000);
        let old = SessionId::generate();
        log.count(old, minute(1));
        for _ in 0..DENIAL_LOG_BOUND {
            log.count(SessionId::generate(), minute(2));
        }
        let recent = SessionId::generate();
        log.count(recent, minute(2));
        let seen = log.seen.lock().expect("lock");
        assert!(!seen.sessions.contains_key(&old), "a session of an older minute is forgotten");
        assert!(seen.sessions.contains_key(&recent));
        assert_eq!(seen.pruned, 2);
        assert_eq!(seen.sessions.len(), DENIAL_LOG_BOUND + 1, "this minute's sessions are all kept");
    }
}
