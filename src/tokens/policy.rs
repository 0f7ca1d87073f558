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
        Ok(Policy { builder })
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
