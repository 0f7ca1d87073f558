//! The hot path: may this agent token do this now? No database read happens here.
//!
//! 1. bound the token, then find what its verification found, or verify it once ([`cache`]);
//! 2. look the session up in the live view (kept current by the writer before any revoking call
//!    returns);
//! 3. decide the policy: for a token without appended blocks, from its claims, remembered by
//!    the facts the policy reads ([`memo`]); for an attenuated token, on the parsed token,
//!    remembered per token for the same second; always under explicit run limits;
//! 4. answer allow/deny with a stable reason.

mod cache;
mod denials;
mod memo;

use std::sync::{Arc, RwLock};

use biscuit_auth::builder::{Fact, Term};
use serde::Serialize;

use crate::clock::Clock;
use crate::domain::*;
use crate::tokens::{self, KeyRing, Policy, TokenError, VerifiedToken};
use crate::views::Views;

pub use cache::TokenKey;
pub use denials::DenialLog;

use cache::{HasRecent, Recent, Resident, TokenCache};
use memo::{DecisionMemo, RequestFacts};

/// The verified-token cache's default memory bound.
pub const DEFAULT_TOKEN_CACHE_BYTES: usize = 128 << 20;

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
    cache: TokenCache<Entry>,
    memo: DecisionMemo,
}

impl Authorizer {
    /// An authorizer whose token cache holds at most `cache_bytes` (see [`Entry::resident_bytes`]).
    pub fn new(keys: Arc<KeyRing>, policy: Policy, views: Arc<Views>, clock: Arc<Clock>, cache_bytes: usize) -> Self {
        Authorizer { keys, policy, views, clock, cache: TokenCache::new(cache_bytes), memo: DecisionMemo::default() }
    }

    /// Verifies a token, from the cache when this exact token was verified before.
    pub fn verified(&self, token: &str) -> Result<Arc<VerifiedToken>, TokenError> {
        self.entry(token, self.clock.now()).map(|e| e.token.clone())
    }

    fn entry(&self, token: &str, now: Timestamp) -> Result<Arc<Entry>, TokenError> {
        let token = token.trim();
        if token.len() > tokens::MAX_TOKEN_CHARS {
            return Err(TokenError::Invalid("token too large"));
        }
        if let Some(hit) = self.cache.get(token, now.seconds()) {
            // A retired key invalidates cached tokens at once.
            return if self.keys.is_active(hit.token.kid) { Ok(hit) } else { Err(TokenError::UnknownKey) };
        }
        let mut verified = tokens::agent::verify(&self.keys, token)?;
        // The parsed token is most of an entry's memory: kept only where a policy run needs it.
        let from_claims = !verified.attenuated() && self.policy.claims_inputs().is_some();
        let full = if from_claims {
            verified.biscuit = None;
            None
        } else {
            Some(Box::new(FullRuns { memo: RwLock::new(Vec::new()), reads_resource: std::sync::OnceLock::new() }))
        };
        let entry =
            Arc::new(Entry { token: Arc::new(verified), full, token_chars: token.len(), recent: Recent::default() });
        self.cache.insert(token, Arc::clone(&entry), now.seconds());
        Ok(entry)
    }

    /// Caches a token this process has just minted and committed, so that its first authorize
    /// skips the signature check: tether signed it, so `minted` (see
    /// [`VerifiedToken::minted`]) is what verifying it would find. Only under a policy decided
    /// from claims; otherwise the token is verified, and parsed, at its first use as usual.
    pub fn remember_minted(&self, token: &str, minted: Arc<VerifiedToken>) {
        if self.policy.claims_inputs().is_none() || minted.attenuated() || minted.biscuit.is_some() {
            return;
        }
        let token = token.trim();
        let entry = Entry { token: minted, full: None, token_chars: token.len(), recent: Recent::default() };
        self.cache.insert(token, Arc::new(entry), self.clock.now().seconds());
    }

    pub fn authorize(&self, request: &Request<'_>) -> Decision {
        let now = self.clock.now();
        let entry = match self.entry(request.token, now) {
            Ok(e) => e,
            Err(TokenError::UnknownKey) => return Decision::deny(Reason::UnknownKey, None),
            Err(TokenError::Invalid(_)) => return Decision::deny(Reason::InvalidToken, None),
        };
        let token = entry.token.clone();
        match self.views.sessions.get(token.claims.session) {
            None => return Decision::deny(Reason::SessionUnknown, Some(token)),
            Some(s) if s.revoked => return Decision::deny(Reason::SessionRevoked, Some(token)),
            Some(s) if s.expires_at <= now => return Decision::deny(Reason::SessionExpired, Some(token)),
            Some(_) => {}
        }
        // Also what makes the authority block's own check (`time($t), $t < expiry`) hold, which
        // a decision from the claims does not run: now < expiry in milliseconds implies it in
        // the seconds that check compares.
        if token.claims.expires_at <= now {
            return Decision::deny(Reason::TokenExpired, Some(token));
        }
        let outcome = match &entry.full {
            None => self.decide_from_claims(&token, request, now),
            Some(full) => self.decide_on_token(&token, full, request, now),
        };
        match outcome {
            PolicyOutcome::Allow => Decision { reason: Reason::Allowed, token: Some(token) },
            _ if !token.claims.scopes.contains(request.scope) => Decision::deny(Reason::ScopeNotGranted, Some(token)),
            PolicyOutcome::Reauthenticate => Decision::deny(Reason::ReauthenticationRequired, Some(token)),
            PolicyOutcome::Deny => Decision::deny(Reason::PolicyDenied, Some(token)),
        }
    }

    /// The policy's outcome for a token without appended blocks: the same run as on the parsed
    /// token, with the authority facts rebuilt from the claims as authorizer facts (what the
    /// policy's rules see is the same: no rule of a policy decided this way names the origins
    /// it trusts), remembered by the values of the facts the policy reads.
    fn decide_from_claims(&self, token: &VerifiedToken, request: &Request<'_>, now: Timestamp) -> PolicyOutcome {
        let Some(inputs) = self.policy.claims_inputs() else { return PolicyOutcome::Deny };
        let facts = RequestFacts {
            requested_scope: request.scope.as_str(),
            resource: request.resource,
            now,
            token_age: token_age(token, now),
        };
        let key = memo::key(inputs, &token.claims, &facts);
        if let Some(outcome) = self.memo.recall(&key) {
            return outcome;
        }
        let mut builder = self.request_builder(request, now, facts.token_age);
        for fact in tokens::agent::authority_facts(&token.claims) {
            builder = builder.and_then(|b| b.fact(fact));
        }
        let (outcome, repeatable) = match builder.and_then(|b| b.build_unauthenticated()) {
            Ok(mut authorizer) => run(&mut authorizer),
            Err(_) => (PolicyOutcome::Deny, false),
        };
        if repeatable {
            self.memo.remember(key.into_boxed_slice(), outcome);
        }
        outcome
    }

    /// The policy's outcome on the parsed token (an attenuated token, or a policy that cannot
    /// be decided from claims), remembered per token for the same second.
    fn decide_on_token(
        &self,
        token: &VerifiedToken,
        full: &FullRuns,
        request: &Request<'_>,
        now: Timestamp,
    ) -> PolicyOutcome {
        let Some(biscuit) = &token.biscuit else { return PolicyOutcome::Deny };
        // When neither the policy nor the token names `resource`, the outcome cannot depend on
        // it: requests that differ only in their resource share one remembered outcome.
        let memo_resource = match request.resource {
            Some(resource) if self.reads_resource(biscuit, full) => Some(resource),
            _ => None,
        };
        if let Some(outcome) = full.recall(now.seconds(), request.scope, memo_resource) {
            return outcome;
        }
        let built = self.request_builder(request, now, token_age(token, now)).and_then(|b| b.build(biscuit));
        let (outcome, repeatable) = match built {
            Ok(mut authorizer) => run(&mut authorizer),
            Err(_) => (PolicyOutcome::Deny, false),
        };
        if repeatable {
            full.remember(now.seconds(), request.scope, memo_resource, outcome);
        }
        outcome
    }

    /// Whether the policy or any block of this token may read the `resource` request fact;
    /// worked out once per cached token, the first time a request carries a resource.
    fn reads_resource(&self, biscuit: &biscuit_auth::Biscuit, full: &FullRuns) -> bool {
        *full
            .reads_resource
            .get_or_init(|| self.policy.may_read_resource() || tokens::policy::token_may_read_resource(biscuit))
    }

    /// The policy with the request's facts.
    fn request_builder(
        &self,
        request: &Request<'_>,
        now: Timestamp,
        age: i64,
    ) -> Result<biscuit_auth::AuthorizerBuilder, biscuit_auth::error::Token> {
        self.policy
            .builder()
            .fact(tokens::agent::request_fact("requested_scope", request.scope.as_str()))
            .and_then(|b| {
                b.fact(Fact::new("time".to_owned(), vec![Term::Date(u64::try_from(now.seconds()).unwrap_or(0))]))
            })
            .and_then(|b| b.fact(Fact::new("token_age".to_owned(), vec![Term::Integer(age)])))
            .and_then(|b| match request.resource {
                Some(resource) => b.fact(tokens::agent::request_fact(tokens::policy::RESOURCE, resource)),
                None => Ok(b),
            })
    }

    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// What the cached tokens cost against the cache's memory bound.
    pub fn cached_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Drops every cached verification and remembered outcome.
    pub fn clear_cache(&self) {
        self.cache.clear();
        self.memo.clear();
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }
}

/// Seconds since the token was issued (never negative), as the policy's `token_age` fact.
fn token_age(token: &VerifiedToken, now: Timestamp) -> i64 {
    (now.seconds() - token.claims.issued_at.seconds()).max(0)
}

/// Runs an authorizer. The second value says whether the outcome is a pure function of the
/// inputs (true unless a run limit cut the evaluation short), so it may be remembered.
fn run(authorizer: &mut biscuit_auth::Authorizer) -> (PolicyOutcome, bool) {
    // Any failure, a run limit included, is a deny: never an error to the caller.
    match authorizer.authorize() {
        Ok(_) => (PolicyOutcome::Allow, true),
        Err(biscuit_auth::error::Token::RunLimit(_)) => (PolicyOutcome::Deny, false),
        Err(_) if wants_reauthentication(authorizer) => (PolicyOutcome::Reauthenticate, true),
        Err(_) => (PolicyOutcome::Deny, true),
    }
}

/// What the policy said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PolicyOutcome {
    Allow,
    Deny,
    Reauthenticate,
}

/// A cached token.
struct Entry {
    token: Arc<VerifiedToken>,
    /// For a token decided on its parsed form: the outcomes remembered for it.
    full: Option<Box<FullRuns>>,
    token_chars: usize,
    recent: Recent,
}

/// Resident bytes of an entry decided from its claims, allocator included, measured by
/// `cargo bench --bench authorize` (docs/performance.md) with a little room: the entry, its
/// claims and scopes, its table slot, and the allow answer the HTTP layer keeps in it.
const CLAIMS_ENTRY_BYTES: usize = 1024;
/// Resident bytes per character of token text of a parsed biscuit-auth token, rounded up from
/// the measurement in docs/performance.md.
const PARSED_BYTES_PER_CHAR: usize = 6;

impl Resident for Entry {
    fn resident_bytes(&self) -> usize {
        match self.full {
            None => CLAIMS_ENTRY_BYTES,
            Some(_) => CLAIMS_ENTRY_BYTES + self.token_chars * PARSED_BYTES_PER_CHAR,
        }
    }
}

impl HasRecent for Entry {
    fn recent(&self) -> &Recent {
        &self.recent
    }
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

/// The outcomes recently computed for a token decided on its parsed form.
struct FullRuns {
    memo: RwLock<Vec<Memo>>,
    /// Whether the policy or the token may read `resource` (unknown until a request has one).
    reads_resource: std::sync::OnceLock<bool>,
}

impl FullRuns {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use proptest::prelude::*;

    use super::*;
    use crate::tokens::{AgentClaims, KeyPurpose};

    /// Policies of every kind a decision from claims must agree on: the shipped one, and ones
    /// reading the resource, ids, ancestors, time and the token's own dates.
    const POLICIES: &[&str] = &[
        tokens::policy::DEFAULT_AGENT_POLICY,
        r#"allow if requested_scope($s), scope($s), resource($r), $r.starts_with("inbox/");"#,
        r#"allow if requested_scope($s), scope($s), user($u), $u.starts_with("usr_"), platform($p);"#,
        "deny if ancestor(1, $p, $a);\nallow if requested_scope($s), scope($s);",
        "allow if requested_scope($s), scope($s), time($t), expires_at($e), issued_at($i), $t < $e, $t >= $i;",
        "deny if requested_scope(\"mail:send\"), token_age($a), $a > 100;\nallow if requested_scope($s), scope($s);",
        "sub_agent(true) <- ancestor($l, $s, $a);\nallow if requested_scope($s), scope($s), sub_agent(true);",
    ];

    const SCOPES: &[&str] = &["mail:read", "mail:send", "repo:admin", "calendar:read"];

    struct Fixture {
        ring: Arc<KeyRing>,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ring = Arc::new(KeyRing::load_or_create(dir.path(), KeyPurpose::Agent).unwrap());
        Fixture { ring, _dir: dir }
    }

    fn claims(granted: &[usize], depth: usize, issued_at: i64) -> AgentClaims {
        let scopes: Vec<&str> = granted.iter().map(|i| SCOPES[*i]).collect();
        AgentClaims::for_test(&scopes, depth, Timestamp(issued_at * 1000))
    }

    fn authorizer(fixture: &Fixture, policy: &str) -> Authorizer {
        let policy = Policy::parse(policy, "test").unwrap();
        Authorizer::new(fixture.ring.clone(), policy, Arc::default(), Arc::default(), 1 << 20)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// A decision from claims (and the memo it fills) equals the policy run on the parsed
        /// token, for every policy above, whatever the claims and the request.
        #[test]
        fn deciding_from_claims_agrees_with_running_the_policy_on_the_token(
            tokens in proptest::collection::vec(
                (proptest::sample::subsequence((0..SCOPES.len()).collect::<Vec<_>>(), 0..=SCOPES.len()), 0..3usize, 0..400i64),
                1..4,
            ),
            requests in proptest::collection::vec(
                (0..SCOPES.len(), proptest::option::of(prop_oneof![Just("inbox/1"), Just("sent/2")]), 0..400i64),
                1..6,
            ),
        ) {
            let fixture = fixture();
            let minted: Vec<(String, AgentClaims)> = tokens
                .iter()
                .map(|(granted, depth, issued)| {
                    let claims = claims(granted, *depth, 1_700_000_000 + issued);
                    (tokens::agent::mint(&fixture.ring, &claims).unwrap().token, claims)
                })
                .collect();
            for policy in POLICIES {
                let authorizer = authorizer(&fixture, policy);
                for (token, claims) in &minted {
                    let verified = tokens::agent::verify(&fixture.ring, token).unwrap();
                    prop_assert!(!verified.attenuated());
                    let full = FullRuns { memo: RwLock::new(Vec::new()), reads_resource: std::sync::OnceLock::new() };
                    for (scope, resource, after) in &requests {
                        let scope = Scope::parse(SCOPES[*scope]).unwrap();
                        let request = Request { token, scope: &scope, resource: *resource };
                        let now = claims.issued_at.plus_seconds(*after);
                        let on_token = authorizer.decide_on_token(&verified, &full, &request, now);
                        let from_claims = authorizer.decide_from_claims(&verified, &request, now);
                        prop_assert_eq!(from_claims, on_token, "policy {}, scope {}, resource {:?}, +{}s", policy, scope.as_str(), resource, after);
                    }
                }
            }
        }
    }

    #[test]
    fn a_token_decided_from_claims_is_cached_without_its_parsed_form_and_an_attenuated_one_with_it() {
        let fixture = fixture();
        let authorizer = authorizer(&fixture, tokens::policy::DEFAULT_AGENT_POLICY);
        let now = Clock::default().now();
        let token = tokens::agent::mint(&fixture.ring, &claims(&[0], 0, now.seconds())).unwrap().token;
        let narrowed = biscuit_auth::UnverifiedBiscuit::from_base64(&token)
            .unwrap()
            .append(
                biscuit_auth::builder::BlockBuilder::new().code("check if requested_scope(\"mail:read\");").unwrap(),
            )
            .unwrap()
            .to_base64()
            .unwrap();

        let plain = authorizer.entry(&token, now).unwrap();
        let attenuated = authorizer.entry(&narrowed, now).unwrap();

        assert!(plain.token.biscuit.is_none() && plain.full.is_none());
        assert!(attenuated.token.biscuit.is_some() && attenuated.full.is_some());
        assert_eq!(authorizer.cached_bytes(), plain.resident_bytes() + attenuated.resident_bytes());
        assert!(attenuated.resident_bytes() > 4 * plain.resident_bytes());
    }

    #[test]
    fn a_minted_token_remembered_is_what_verifying_it_finds() {
        let fixture = fixture();
        let authorizer = authorizer(&fixture, tokens::policy::DEFAULT_AGENT_POLICY);
        let now = Clock::default().now();
        let claims = AgentClaims::for_test(&["mail:read"], 1, Timestamp(now.millis() - 1234));
        let minted = tokens::agent::mint(&fixture.ring, &claims).unwrap();
        let verified = tokens::agent::verify(&fixture.ring, &minted.token).unwrap();

        let remembered = VerifiedToken::minted(minted.kid, &claims);
        authorizer.remember_minted(&minted.token, Arc::new(remembered));

        let cached = authorizer.entry(&minted.token, now).unwrap();
        assert_eq!(authorizer.cached_tokens(), 1);
        assert_eq!(format!("{:?}", cached.token.claims), format!("{:?}", verified.claims));
        assert_eq!((cached.token.kid, cached.token.blocks), (verified.kid, verified.blocks));
        assert!(cached.full.is_none());
    }

    #[test]
    fn a_policy_naming_trusted_origins_keeps_every_token_parsed_and_still_decides() {
        let fixture = fixture();
        let authorizer = authorizer(&fixture, "allow if requested_scope($s), scope($s) trusting authority;");
        let now = Clock::default().now();
        let token = tokens::agent::mint(&fixture.ring, &claims(&[0], 0, now.seconds())).unwrap().token;

        let entry = authorizer.entry(&token, now).unwrap();

        assert!(entry.token.biscuit.is_some() && entry.full.is_some());
        let scope = Scope::parse("mail:read").unwrap();
        let full = entry.full.as_ref().unwrap();
        let request = Request { token: &token, scope: &scope, resource: None };
        assert_eq!(authorizer.decide_on_token(&entry.token, full, &request, now), PolicyOutcome::Allow);
    }

    #[test]
    fn the_cache_stays_within_its_memory_bound() {
        let fixture = fixture();
        let policy = Policy::parse(tokens::policy::DEFAULT_AGENT_POLICY, "test").unwrap();
        let budget = 64 * CLAIMS_ENTRY_BYTES * 4;
        let authorizer = Authorizer::new(fixture.ring.clone(), policy, Arc::default(), Arc::default(), budget);
        let now = Clock::default().now();
        for _ in 0..600 {
            let token = tokens::agent::mint(&fixture.ring, &claims(&[0], 0, now.seconds())).unwrap().token;
            authorizer.entry(&token, now).unwrap();
            assert!(authorizer.cached_bytes() <= budget);
        }
        assert!(authorizer.cached_tokens() >= 64, "{}", authorizer.cached_tokens());
    }
}
