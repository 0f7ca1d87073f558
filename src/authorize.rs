//! The hot path: may this agent token do this now? No database read happens here.
//!
//! 1. bound the token, then verify it once and cache the result by its exact text;
//! 2. look the session up in the live view (kept current by the writer before any revoking call
//!    returns);
//! 3. run the policy with the request facts, under explicit run limits;
//! 4. answer allow/deny with a stable reason.

use std::sync::{Arc, Mutex, RwLock};

use biscuit_auth::builder::{Fact, Term};
use serde::Serialize;

use crate::clock::Clock;
use crate::domain::*;
use crate::tokens::{self, KeyRing, Policy, TokenError, VerifiedToken};
use crate::views::{Sharded, Views};

/// Shards of the verified-token cache: readers of different tokens rarely share a lock.
const CACHE_SHARDS: usize = 64;

/// Verified tokens kept per cache shard.
const CACHE_PER_SHARD: usize = 256;

/// Most verified tokens cached at once (16,384). A cached token holds its parsed biscuit: about
/// 10 KiB resident each, so a full cache is about 160 MiB (docs/performance.md). Four times
/// this measured 11% slower on first-seen tokens (allocator and memory traffic of the churn) and
/// would hold about 640 MiB.
pub const TOKEN_CACHE_CAPACITY: usize = CACHE_SHARDS * CACHE_PER_SHARD;

/// The stable reasons of API.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Allowed,
    InvalidToken,
    UnknownKey,
    SessionRevoked,
    SessionExpired,
    SessionUnknown,
    ScopeNotGranted,
    PolicyDenied,
    /// The access token is past its own (short) lifetime; the session may be fine: refresh.
    TokenExpired,
    /// The policy wants a freshly issued token for this scope (step-up).
    ReauthenticationRequired,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::InvalidToken => "invalid_token",
            Reason::UnknownKey => "unknown_key",
            Reason::SessionRevoked => "session_revoked",
            Reason::SessionExpired => "session_expired",
            Reason::SessionUnknown => "session_unknown",
            Reason::ScopeNotGranted => "scope_not_granted",
            Reason::PolicyDenied => "policy_denied",
            Reason::TokenExpired => "token_expired",
            Reason::ReauthenticationRequired => "reauthentication_required",
        }
    }
}

/// The answer to one authorize call.
#[derive(Clone)]
pub struct Decision {
    pub reason: Reason,
    /// The verified token, when it verified (its claims identify the session).
    pub token: Option<Arc<VerifiedToken>>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.reason == Reason::Allowed
    }

    fn deny(reason: Reason, token: Option<Arc<VerifiedToken>>) -> Decision {
        Decision { reason, token }
    }
}

/// A request to authorize.
pub struct Request<'a> {
    pub token: &'a str,
    pub scope: &'a Scope,
    pub resource: Option<&'a str>,
}

pub struct Authorizer {
    keys: Arc<KeyRing>,
    policy: Policy,
    views: Arc<Views>,
    clock: Arc<Clock>,
    cache: Sharded<Box<str>, Arc<CachedToken>>,
}

impl Authorizer {
    pub fn new(keys: Arc<KeyRing>, policy: Policy, views: Arc<Views>, clock: Arc<Clock>) -> Self {
        Authorizer { keys, policy, views, clock, cache: Sharded::new(CACHE_SHARDS) }
    }

    /// Verifies a token, from the cache when this exact token was verified before.
    pub fn verified(&self, token: &str) -> Result<Arc<VerifiedToken>, TokenError> {
        self.entry(token).map(|e| e.token.clone())
    }

    fn entry(&self, token: &str) -> Result<Arc<CachedToken>, TokenError> {
        let token = token.trim();
        if token.len() > tokens::MAX_TOKEN_CHARS {
            return Err(TokenError::Invalid("token too large"));
        }
        if let Some(hit) = self.cache.get(token) {
            // A retired key invalidates cached tokens at once.
            return if self.keys.is_active(hit.token.kid) { Ok(hit) } else { Err(TokenError::UnknownKey) };
        }
        let verified = Arc::new(tokens::agent::verify(&self.keys, token)?);
        let entry = Arc::new(CachedToken {
            token: verified,
            memo: RwLock::new(Vec::new()),
            reads_resource: std::sync::OnceLock::new(),
        });
        self.cache.insert_bounded(token.into(), Arc::clone(&entry), CACHE_PER_SHARD);
        Ok(entry)
    }

    pub fn authorize(&self, request: &Request<'_>) -> Decision {
        let entry = match self.entry(request.token) {
            Ok(e) => e,
            Err(TokenError::UnknownKey) => return Decision::deny(Reason::UnknownKey, None),
            Err(TokenError::Invalid(_)) => return Decision::deny(Reason::InvalidToken, None),
        };
        let token = entry.token.clone();
        let now = self.clock.now();
        match self.views.sessions.get(token.claims.session) {
            None => return Decision::deny(Reason::SessionUnknown, Some(token)),
            Some(s) if s.revoked => return Decision::deny(Reason::SessionRevoked, Some(token)),
            Some(s) if s.expires_at <= now => return Decision::deny(Reason::SessionExpired, Some(token)),
            Some(_) => {}
        }
        if token.claims.expires_at <= now {
            return Decision::deny(Reason::TokenExpired, Some(token));
        }
        // When neither the policy nor the token names `resource`, the outcome cannot depend on
        // it: requests that differ only in their resource share one remembered outcome.
        let memo_resource = match request.resource {
            Some(resource) if self.reads_resource(&entry) => Some(resource),
            _ => None,
        };
        let outcome = match entry.recall(now.seconds(), request.scope, memo_resource) {
            Some(outcome) => outcome,
            None => {
                let (outcome, repeatable) = self.run_policy(&token, request, now);
                if repeatable {
                    entry.remember(now.seconds(), request.scope, memo_resource, outcome);
                }
                outcome
            }
        };
        match outcome {
            PolicyOutcome::Allow => Decision { reason: Reason::Allowed, token: Some(token) },
            _ if !token.claims.scopes.contains(request.scope) => Decision::deny(Reason::ScopeNotGranted, Some(token)),
            PolicyOutcome::Reauthenticate => Decision::deny(Reason::ReauthenticationRequired, Some(token)),
            PolicyOutcome::Deny => Decision::deny(Reason::PolicyDenied, Some(token)),
        }
    }

    /// Whether the policy or any block of this token may read the `resource` request fact;
    /// worked out once per cached token, the first time a request carries a resource.
    fn reads_resource(&self, entry: &CachedToken) -> bool {
        *entry.reads_resource.get_or_init(|| {
            self.policy.may_read_resource() || tokens::policy::token_may_read_resource(&entry.token.biscuit)
        })
    }

    /// Runs the policy. The second value says whether the outcome is a pure function of the
    /// inputs (true unless a run limit cut the evaluation short), so it may be remembered.
    fn run_policy(&self, token: &VerifiedToken, request: &Request<'_>, now: Timestamp) -> (PolicyOutcome, bool) {
        let age = (now.seconds() - token.claims.issued_at.seconds()).max(0);
        let builder = self
            .policy
            .builder()
            .fact(tokens::agent::request_fact("requested_scope", request.scope.as_str()))
            .and_then(|b| {
                b.fact(Fact::new("time".to_owned(), vec![Term::Date(u64::try_from(now.seconds()).unwrap_or(0))]))
            })
            .and_then(|b| b.fact(Fact::new("token_age".to_owned(), vec![Term::Integer(age)])))
            .and_then(|b| match request.resource {
                Some(resource) => b.fact(tokens::agent::request_fact(tokens::policy::RESOURCE, resource)),
                None => Ok(b),
            });
        let Ok(mut authorizer) = builder.and_then(|b| b.build(&token.biscuit)) else {
            return (PolicyOutcome::Deny, false);
        };
        // Any failure, a run limit included, is a deny: never an error to the caller.
        match authorizer.authorize() {
            Ok(_) => (PolicyOutcome::Allow, true),
            Err(biscuit_auth::error::Token::RunLimit(_)) => (PolicyOutcome::Deny, false),
            Err(_) if wants_reauthentication(&mut authorizer) => (PolicyOutcome::Reauthenticate, true),
            Err(_) => (PolicyOutcome::Deny, true),
        }
    }

    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// Drops every cached verification (after a key is retired, say).
    pub fn clear_cache(&self) {
        self.cache.retain(|_, _| false);
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }
}

/// What the policy said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PolicyOutcome {
    Allow,
    Deny,
    Reauthenticate,
}

/// Most policy outcomes remembered per token.
const MEMO_PER_TOKEN: usize = 8;

/// One remembered outcome. The policy's inputs are the token, the requested scope and resource,
/// and the time in whole seconds (biscuit dates; `token_age` derives from them), so within the
/// same second the same request has the same outcome: remembering it is exact, not a guess.
/// `resource` is `None` when neither the policy nor the token names it, since it then cannot
/// change the outcome.
#[derive(Debug, Clone)]
struct Memo {
    second: i64,
    scope: Scope,
    resource: Option<Box<str>>,
    outcome: PolicyOutcome,
}

/// A verified token and the policy outcomes recently computed for it.
struct CachedToken {
    token: Arc<VerifiedToken>,
    memo: RwLock<Vec<Memo>>,
    /// Whether the policy or the token may read `resource` (unknown until a request has one).
    reads_resource: std::sync::OnceLock<bool>,
}

impl CachedToken {
    /// `resource` is the request's resource when the outcome may depend on it, else `None`.
    fn recall(&self, second: i64, scope: &Scope, resource: Option<&str>) -> Option<PolicyOutcome> {
        let memo = self.memo.read().ok()?;
        memo.iter()
            .find(|m| m.second == second && m.scope == *scope && m.resource.as_deref() == resource)
            .map(|m| m.outcome)
    }

    fn remember(&self, second: i64, scope: &Scope, resource: Option<&str>, outcome: PolicyOutcome) {
        let Ok(mut memo) = self.memo.write() else { return };
        memo.retain(|m| m.second == second);
        if memo.len() >= MEMO_PER_TOKEN {
            memo.remove(0);
        }
        memo.push(Memo { second, scope: scope.clone(), resource: resource.map(Box::from), outcome });
    }
}

/// Whether the policy derived `reauthentication_required(true)` (step-up) for this request.
fn wants_reauthentication(authorizer: &mut biscuit_auth::Authorizer) -> bool {
    let found: Result<Vec<(bool,)>, _> = authorizer.query("r(true) <- reauthentication_required(true)");
    found.map(|rows| !rows.is_empty()).unwrap_or(false)
}

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
