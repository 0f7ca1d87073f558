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
        Ok(Policy { builder, mentions_resource })
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
