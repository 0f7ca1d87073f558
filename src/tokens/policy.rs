//! The request policy (`policies/agent.datalog`), parsed once at start and cloned per request.

use std::path::Path;

use biscuit_auth::AuthorizerBuilder;

use super::run_limits;
use crate::domain::{Error, Result};

/// The policy shipped with tether, used when no policy directory is configured.
pub const DEFAULT_AGENT_POLICY: &str = include_str!("../../policies/agent.datalog");

/// A parsed policy, ready to be cloned into an authorizer for each request.
#[derive(Clone)]
pub struct Policy {
    builder: AuthorizerBuilder,
    /// Whether the policy's text mentions `resource` at all (see [`Policy::may_read_resource`]).
    mentions_resource: bool,
    /// The input facts the policy reads, when it can be decided from a token's claims.
    claims_inputs: Option<Inputs>,
}

/// The facts a request's policy run starts from: a token's authority facts (written by
/// `tokens::agent::authority_facts`) and the request facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Session,
    User,
    Agent,
    Integration,
    Delegation,
    Platform,
    Scope,
    IssuedAt,
    ExpiresAt,
    Ancestor,
    RequestedScope,
    Resource,
    Time,
    TokenAge,
}

impl Input {
    const ALL: [Input; 14] = [
        Input::Session,
        Input::User,
        Input::Agent,
        Input::Integration,
        Input::Delegation,
        Input::Platform,
        Input::Scope,
        Input::IssuedAt,
        Input::ExpiresAt,
        Input::Ancestor,
        Input::RequestedScope,
        Input::Resource,
        Input::Time,
        Input::TokenAge,
    ];

    /// The fact's name in datalog.
    pub fn name(self) -> &'static str {
        match self {
            Input::Session => "session",
            Input::User => "user",
            Input::Agent => "agent",
            Input::Integration => "integration",
            Input::Delegation => "delegation",
            Input::Platform => "platform",
            Input::Scope => "scope",
            Input::IssuedAt => "issued_at",
            Input::ExpiresAt => "expires_at",
            Input::Ancestor => "ancestor",
            Input::RequestedScope => "requested_scope",
            Input::Resource => RESOURCE,
            Input::Time => "time",
            Input::TokenAge => "token_age",
        }
    }
}

/// A set of [`Input`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inputs(u16);

impl Inputs {
    pub fn contains(self, input: Input) -> bool {
        self.0 & (1 << input as u16) != 0
    }

    pub fn with(self, input: Input) -> Inputs {
        Inputs(self.0 | 1 << input as u16)
    }

    pub fn iter(self) -> impl Iterator<Item = Input> {
        Input::ALL.into_iter().filter(move |i| self.contains(*i))
    }
}

/// Which input facts a policy reads: the names in the bodies of its rules, checks and policies.
/// A fact whose name no body mentions cannot match anything, so it cannot change an outcome.
/// `None` when any part of the policy names the origins it trusts (`trusting …`): moving a
/// token's authority facts into the authorizer would change what such a rule sees.
fn claims_inputs(source: &str) -> Option<Inputs> {
    let parsed = biscuit_auth::parser::parse_source(source).ok()?;
    let rules = parsed
        .rules
        .iter()
        .map(|(_, rule)| rule)
        .chain(parsed.checks.iter().flat_map(|(_, check)| check.queries.iter()))
        .chain(parsed.policies.iter().flat_map(|(_, policy)| policy.queries.iter()));
    if !parsed.scopes.is_empty() {
        return None;
    }
    let mut inputs = Inputs::default();
    for rule in rules {
        if !rule.scopes.is_empty() {
            return None;
        }
        for predicate in &rule.body {
            if let Some(input) = Input::ALL.into_iter().find(|i| i.name() == predicate.name) {
                inputs = inputs.with(input);
            }
        }
    }
    Some(inputs)
}

impl Policy {
    /// Parses policy source; an error names what is wrong so start-up can stop with it.
    pub fn parse(source: &str, origin: &str) -> Result<Policy> {
        let builder = AuthorizerBuilder::new()
            .code(source)
            .map_err(|e| Error::invalid(format!("policy {origin} does not parse: {e}")))?
            .set_limits(run_limits());
        if !source.contains("allow if") {
            return Err(Error::invalid(format!("policy {origin} has no `allow if` policy: it would deny everything")));
        }
        let mentions_resource = builder.dump_code().contains(RESOURCE);
        Ok(Policy { builder, mentions_resource, claims_inputs: claims_inputs(source) })
    }

    /// Loads `agent.datalog` from a policy directory.
    pub fn load_dir(dir: &Path) -> Result<Policy> {
        let path = dir.join("agent.datalog");
        let source = std::fs::read_to_string(&path)
            .map_err(|e| Error::invalid(format!("cannot read policy {}: {e}", path.display())))?;
        Policy::parse(&source, &path.display().to_string())
    }

    pub fn builder(&self) -> AuthorizerBuilder {
        self.builder.clone()
    }

    /// The input facts this policy reads, when its outcome for a token without appended blocks
    /// can be computed from the token's claims alone (the authority facts rebuilt from them), with
    /// no parsed token: `None` for a policy that names trusted origins (`trusting …`).
    pub fn claims_inputs(&self) -> Option<Inputs> {
        self.claims_inputs
    }

    /// False only when no fact, rule, check or policy of this policy names `resource`: then the
    /// `resource` request fact cannot take part in any derivation, so no outcome depends on it.
    /// (A textual test, conservative: any mention, even inside a string, counts.)
    pub fn may_read_resource(&self) -> bool {
        self.mentions_resource
    }
}

/// The request fact that carries the resource, as datalog names it.
pub const RESOURCE: &str = "resource";

/// Whether any block of `token` names `resource` (conservatively, as [`Policy::may_read_resource`]).
/// A block that cannot be printed counts as naming it.
pub fn token_may_read_resource(token: &biscuit_auth::Biscuit) -> bool {
    (0..token.block_count()).any(|i| token.print_block_source(i).map_or(true, |code| code.contains(RESOURCE)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_that_names_resource_is_known_to_read_it() {
        let shipped = Policy::parse(DEFAULT_AGENT_POLICY, "default").unwrap_or_else(|e| panic!("{e}"));
        assert!(!shipped.may_read_resource(), "the shipped policy does not look at the resource");
        let reads = Policy::parse(
            "allow if requested_scope($s), scope($s), resource($r), $r.starts_with(\"inbox/\");",
            "resource.datalog",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(reads.may_read_resource());
    }

    #[test]
    fn the_inputs_a_policy_reads_are_the_names_in_its_bodies() {
        let shipped = Policy::parse(DEFAULT_AGENT_POLICY, "default").unwrap_or_else(|e| panic!("{e}"));
        let read: Vec<Input> = shipped.claims_inputs().expect("decidable from claims").iter().collect();
        assert_eq!(read, [Input::Scope, Input::RequestedScope, Input::TokenAge]);

        let by_user = Policy::parse(
            "is_bot(true) <- user($u), $u.starts_with(\"usr_\");\nallow if is_bot(true), time($t);",
            "user.datalog",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let read: Vec<Input> = by_user.claims_inputs().expect("decidable from claims").iter().collect();
        assert_eq!(read, [Input::User, Input::Time], "a rule's head is derived, not read");
    }

    #[test]
    fn a_policy_that_names_trusted_origins_is_not_decided_from_claims() {
        for source in [
            "allow if scope($s) trusting authority;",
            "granted($s) <- scope($s) trusting authority;\nallow if granted($s);",
            "check if scope($s) trusting authority;\nallow if true;",
        ] {
            let policy = Policy::parse(source, "trusting.datalog").unwrap_or_else(|e| panic!("{source}: {e}"));
            assert_eq!(policy.claims_inputs(), None, "{source}");
        }
    }

    #[test]
    fn the_shipped_policy_parses() {
        assert!(Policy::parse(DEFAULT_AGENT_POLICY, "default").is_ok());
    }

    #[test]
    fn a_malformed_policy_is_refused_with_its_origin_named() {
        let Err(Error::InvalidRequest(message)) = Policy::parse("allow if scope($s", "bad.datalog") else {
            panic!("a malformed policy parsed");
        };
        assert!(message.contains("bad.datalog"), "{message}");
    }
}
