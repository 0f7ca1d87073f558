//! Policy outcomes remembered by the facts the policy reads, shared by every token.
//!
//! A policy run is a pure function of its input facts (datalog has no other input; a run cut
//! short by a limit is not remembered). For a token without appended blocks, those facts are the
//! authority facts rebuilt from its claims plus the request facts, and of them only the ones
//! whose names appear in a rule, check or policy body can change the outcome
//! ([`Policy::claims_inputs`](crate::tokens::Policy::claims_inputs)). The key here is exactly
//! those facts' values, encoded without ambiguity: two requests with the same key would run the
//! same derivation. Under the shipped policy (scopes, requested scope, token age) thousands of
//! sessions share a handful of keys, so a policy run is rare even when each token is seen once.

use crate::domain::Timestamp;
use crate::tokens::agent::AgentClaims;
use crate::tokens::policy::{Input, Inputs};
use crate::views::Sharded;

use super::PolicyOutcome;

/// Remembered outcomes per shard; past it an arbitrary one is dropped.
const PER_SHARD: usize = 1024;
const SHARDS: usize = 16;

pub struct DecisionMemo {
    outcomes: Sharded<Box<[u8]>, PolicyOutcome>,
}

impl Default for DecisionMemo {
    fn default() -> Self {
        DecisionMemo { outcomes: Sharded::new(SHARDS) }
    }
}

/// What one policy run reads besides the token.
pub struct RequestFacts<'a> {
    pub requested_scope: &'a str,
    pub resource: Option<&'a str>,
    pub now: Timestamp,
    pub token_age: i64,
}

impl DecisionMemo {
    pub fn recall(&self, key: &[u8]) -> Option<PolicyOutcome> {
        self.outcomes.get(key)
    }

    pub fn remember(&self, key: Box<[u8]>, outcome: PolicyOutcome) {
        self.outcomes.insert_bounded(key, outcome, PER_SHARD);
    }

    pub fn clear(&self) {
        self.outcomes.retain(|_, _| false);
    }
}

/// The values of the facts in `inputs`, each behind its input's tag and with every variable
/// part length-prefixed, so that no two different sets of facts share a key.
pub fn key(inputs: Inputs, claims: &AgentClaims, request: &RequestFacts<'_>) -> Vec<u8> {
    let mut key = Vec::with_capacity(64);
    for input in inputs.iter() {
        key.push(input as u8);
        match input {
            Input::Session => key.extend_from_slice(claims.session.uuid().as_bytes()),
            Input::User => key.extend_from_slice(claims.user.uuid().as_bytes()),
            Input::Agent => key.extend_from_slice(claims.agent.uuid().as_bytes()),
            Input::Integration => key.extend_from_slice(claims.integration.uuid().as_bytes()),
            Input::Delegation => key.extend_from_slice(claims.delegation.uuid().as_bytes()),
            Input::Platform => key.extend_from_slice(claims.platform.uuid().as_bytes()),
            Input::Scope => {
                key.extend_from_slice(&(claims.scopes.len() as u32).to_le_bytes());
                for scope in claims.scopes.iter() {
                    text(&mut key, scope.as_str());
                }
            }
            Input::IssuedAt => key.extend_from_slice(&claims.issued_at.seconds().to_le_bytes()),
            Input::ExpiresAt => key.extend_from_slice(&claims.expires_at.seconds().to_le_bytes()),
            Input::Ancestor => {
                key.extend_from_slice(&(claims.chain.len() as u32).to_le_bytes());
                for (session, agent) in &claims.chain {
                    key.extend_from_slice(session.uuid().as_bytes());
                    key.extend_from_slice(agent.uuid().as_bytes());
                }
            }
            Input::RequestedScope => text(&mut key, request.requested_scope),
            Input::Resource => match request.resource {
                Some(resource) => {
                    key.push(1);
                    text(&mut key, resource);
                }
                None => key.push(0),
            },
            Input::Time => key.extend_from_slice(&request.now.seconds().to_le_bytes()),
            Input::TokenAge => key.extend_from_slice(&request.token_age.to_le_bytes()),
        }
    }
    key
}

fn text(key: &mut Vec<u8>, text: &str) {
    key.extend_from_slice(&(text.len() as u32).to_le_bytes());
    key.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::*;

    fn claims(scopes: &[&str]) -> AgentClaims {
        AgentClaims::for_test(scopes, 0, Timestamp(1_000_000))
    }

    fn request(scope: &str, age: i64) -> RequestFacts<'_> {
        RequestFacts { requested_scope: scope, resource: None, now: Timestamp(1_500_000), token_age: age }
    }

    fn inputs(list: &[Input]) -> Inputs {
        let mut inputs = Inputs::default();
        for input in list {
            inputs = inputs.with(*input);
        }
        inputs
    }

    #[test]
    fn tokens_that_differ_only_in_facts_the_policy_does_not_read_share_a_key() {
        let read = inputs(&[Input::Scope, Input::RequestedScope, Input::TokenAge]);
        let (a, b) = (claims(&["mail:read"]), claims(&["mail:read"]));
        assert_ne!(a.session, b.session);
        assert_eq!(key(read, &a, &request("mail:read", 10)), key(read, &b, &request("mail:read", 10)));
    }

    #[test]
    fn any_difference_in_a_fact_the_policy_reads_is_another_key() {
        let read = inputs(&[Input::Session, Input::Scope, Input::RequestedScope, Input::TokenAge, Input::Resource]);
        let a = claims(&["mail:read"]);
        let base = key(read, &a, &request("mail:read", 10));
        assert_ne!(base, key(read, &a, &request("mail:read", 11)), "token age");
        assert_ne!(base, key(read, &a, &request("mail:send", 10)), "requested scope");
        assert_ne!(base, key(read, &claims(&["mail:read"]), &request("mail:read", 10)), "session");
        assert_ne!(base, key(read, &claims(&["mail:read", "mail:send"]), &request("mail:read", 10)), "scopes");
        let with_resource = RequestFacts { resource: Some(""), ..request("mail:read", 10) };
        assert_ne!(base, key(read, &a, &with_resource), "an empty resource is not no resource");
    }

    #[test]
    fn the_encoding_keeps_scope_boundaries() {
        let read = inputs(&[Input::Scope]);
        let joined = key(read, &claims(&["ab"]), &request("x", 0));
        let split = key(read, &claims(&["a", "b"]), &request("x", 0));
        assert_ne!(joined, split);
    }

    #[test]
    fn the_memo_keeps_what_it_was_told_and_forgets_on_clear() {
        let memo = DecisionMemo::default();
        memo.remember(b"k".to_vec().into_boxed_slice(), PolicyOutcome::Allow);
        assert_eq!(memo.recall(b"k"), Some(PolicyOutcome::Allow));
        assert_eq!(memo.recall(b"j"), None);
        memo.clear();
        assert_eq!(memo.recall(b"k"), None);
    }
}
