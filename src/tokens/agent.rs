//! Agent capability tokens: minted at session creation, verified on every authorize.

use std::collections::HashMap;

use biscuit_auth::builder::Term;
use biscuit_auth::{Biscuit, BiscuitBuilder};

use super::{date, fact, parse_bounded, run_limits, string, KeyRing, TokenError};
use crate::domain::*;

/// What the authority block of an agent token says, all of it signed by tether.
#[derive(Debug, Clone)]
pub struct AgentClaims {
    pub session: SessionId,
    pub user: UserId,
    pub agent: AgentId,
    pub integration: IntegrationId,
    pub delegation: DelegationId,
    pub platform: PlatformId,
    pub scopes: ScopeSet,
    /// When this token was minted.
    pub issued_at: Timestamp,
    /// When this token stops verifying (never after its session's expiry).
    pub expires_at: Timestamp,
    /// For a sub-agent session, its ancestors, parent first: (session, agent), like RFC 8693's
    /// nested `act`.
    pub chain: Vec<(SessionId, AgentId)>,
}

/// A freshly minted token. `Debug` never prints the token itself.
pub struct MintedToken {
    pub token: String,
    pub kid: u32,
    /// Hex of the authority block's revocation id (kept by every attenuation of the token).
    pub revocation_id: String,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("kid", &self.kid)
            .field("revocation_id", &self.revocation_id)
            .finish_non_exhaustive()
    }
}

/// Mints a token whose facts are built as terms, never by formatting datalog text.
pub fn mint(ring: &KeyRing, claims: &AgentClaims) -> Result<MintedToken> {
    let build = |kid: u32,
                 keypair: &biscuit_auth::KeyPair|
     -> std::result::Result<Biscuit, biscuit_auth::error::Token> {
        let mut b = BiscuitBuilder::new()
            .fact(fact("session", vec![string(claims.session)]))?
            .fact(fact("user", vec![string(claims.user)]))?
            .fact(fact("agent", vec![string(claims.agent)]))?
            .fact(fact("integration", vec![string(claims.integration)]))?
            .fact(fact("delegation", vec![string(claims.delegation)]))?
            .fact(fact("platform", vec![string(claims.platform)]))?
            .fact(fact("issued_at", vec![date(claims.issued_at)]))?
            .fact(fact("expires_at", vec![date(claims.expires_at)]))?;
        for scope in claims.scopes.iter() {
            b = b.fact(fact("scope", vec![string(scope)]))?;
        }
        for (level, (session, agent)) in claims.chain.iter().enumerate() {
            b = b.fact(fact("ancestor", vec![Term::Integer(level as i64 + 1), string(session), string(agent)]))?;
        }
        let params = HashMap::from([("expiry".to_owned(), date(claims.expires_at))]);
        b.code_with_params("check if time($t), $t < {expiry};", params, HashMap::new())?.root_key_id(kid).build(keypair)
    };
    let (kid, biscuit) = ring
        .with_signing_key(|kid, keypair| build(kid, keypair).map(|b| (kid, b)))?
        .map_err(|e| Error::internal(format!("mint agent token: {e}")))?;
    let token = biscuit.to_base64().map_err(|e| Error::internal(format!("encode agent token: {e}")))?;
    let revocation_id = biscuit.revocation_identifiers().first().map(hex::encode).unwrap_or_default();
    Ok(MintedToken { token, kid, revocation_id })
}

/// A token whose signatures verified, with its authority claims read out once.
pub struct VerifiedToken {
    pub biscuit: Biscuit,
    pub kid: u32,
    pub claims: AgentClaims,
    pub revocation_id: String,
}

type ClaimRow = (String, String, String, String, String, String);

/// Verifies signatures and reads the authority block's claims (facts of later blocks are not
/// trusted by these queries, so an attenuation cannot add a scope or change an id).
pub fn verify(ring: &KeyRing, token: &str) -> std::result::Result<VerifiedToken, TokenError> {
    let biscuit = parse_bounded(token, ring)?;
    let kid = biscuit.root_key_id().ok_or(TokenError::UnknownKey)?;
    let shape = TokenError::Invalid("not an agent token");
    let mut authorizer =
        biscuit_auth::AuthorizerBuilder::new().set_limits(run_limits()).build(&biscuit).map_err(|_| shape)?;
    let ids: Vec<ClaimRow> = authorizer
        .query(
            "claims($s, $u, $a, $i, $d, $p) <- session($s), user($u), agent($a), integration($i), delegation($d), platform($p)",
        )
        .map_err(|_| shape)?;
    let [(s, u, a, i, d, p)] = <[ClaimRow; 1]>::try_from(ids).map_err(|_| shape)?;
    let times: Vec<(std::time::SystemTime, std::time::SystemTime)> =
        authorizer.query("times($i, $e) <- issued_at($i), expires_at($e)").map_err(|_| shape)?;
    let [(issued, expires)] = <[_; 1]>::try_from(times).map_err(|_| shape)?;
    let scopes: Vec<(String,)> = authorizer.query("scopes($s) <- scope($s)").map_err(|_| shape)?;
    let mut ancestors: Vec<(i64, String, String)> =
        authorizer.query("ancestors($l, $s, $a) <- ancestor($l, $s, $a)").map_err(|_| shape)?;
    ancestors.sort_by_key(|(level, _, _)| *level);
    let chain = ancestors
        .iter()
        .map(|(_, s, a)| Ok((SessionId::parse(s).map_err(|_| shape)?, AgentId::parse(a).map_err(|_| shape)?)))
        .collect::<std::result::Result<Vec<_>, TokenError>>()?;
    let millis = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).map(|d| Timestamp(d.as_millis() as i64)).unwrap_or_default()
    };
    let claims = AgentClaims {
        session: SessionId::parse(&s).map_err(|_| shape)?,
        user: UserId::parse(&u).map_err(|_| shape)?,
        agent: AgentId::parse(&a).map_err(|_| shape)?,
        integration: IntegrationId::parse(&i).map_err(|_| shape)?,
        delegation: DelegationId::parse(&d).map_err(|_| shape)?,
        platform: PlatformId::parse(&p).map_err(|_| shape)?,
        scopes: scopes
            .into_iter()
            .map(|(s,)| Scope::parse(&s))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| shape)?,
        issued_at: millis(issued),
        expires_at: millis(expires),
        chain,
    };
    let revocation_id = biscuit.revocation_identifiers().first().map(hex::encode).unwrap_or_default();
    Ok(VerifiedToken { biscuit, kid, claims, revocation_id })
}

/// Term for a request fact (kept here so request values also never become datalog text).
pub fn request_fact(name: &str, value: &str) -> biscuit_auth::builder::Fact {
    fact(name, vec![Term::Str(value.to_owned())])
}
