//! Agent capability tokens: minted at session creation, verified on every authorize.

use std::collections::HashMap;

use biscuit_auth::builder::{Fact, Term};
use biscuit_auth::{Biscuit, BiscuitBuilder};

use super::{date, fact, parse_bounded, string, KeyRing, TokenError};
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

#[cfg(test)]
impl AgentClaims {
    /// Claims of a new session on fresh ids, for tests: `scopes`, `depth` ancestors, issued at
    /// `issued_at` and valid for an hour.
    pub(crate) fn for_test(scopes: &[&str], depth: usize, issued_at: Timestamp) -> AgentClaims {
        AgentClaims {
            session: SessionId::generate(),
            user: UserId::generate(),
            agent: AgentId::generate(),
            integration: IntegrationId::generate(),
            delegation: DelegationId::generate(),
            platform: PlatformId::generate(),
            scopes: scopes.iter().map(|s| Scope::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))).collect(),
            issued_at,
            expires_at: issued_at.plus_seconds(3600),
            chain: (0..depth).map(|_| (SessionId::generate(), AgentId::generate())).collect(),
        }
    }
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

/// The authority block's facts for `claims`: what [`mint`] signs into a token, and what the
/// authorizer adds in their place when it decides a token without appended blocks from its
/// claims (src/authorize), so the two cannot drift apart.
pub fn authority_facts(claims: &AgentClaims) -> Vec<Fact> {
    let mut facts = vec![
        fact("session", vec![string(claims.session)]),
        fact("user", vec![string(claims.user)]),
        fact("agent", vec![string(claims.agent)]),
        fact("integration", vec![string(claims.integration)]),
        fact("delegation", vec![string(claims.delegation)]),
        fact("platform", vec![string(claims.platform)]),
        fact("issued_at", vec![date(claims.issued_at)]),
        fact("expires_at", vec![date(claims.expires_at)]),
    ];
    facts.extend(claims.scopes.iter().map(|scope| fact("scope", vec![string(scope)])));
    for (level, (session, agent)) in claims.chain.iter().enumerate() {
        facts.push(fact("ancestor", vec![Term::Integer(level as i64 + 1), string(session), string(agent)]));
    }
    facts
}

/// Mints a token whose facts are built as terms, never by formatting datalog text. Its authority
/// block holds [`authority_facts`], the claims as JSON context, and one check: the expiry.
pub fn mint(ring: &KeyRing, claims: &AgentClaims) -> Result<MintedToken> {
    let build =
        |kid: u32, keypair: &biscuit_auth::KeyPair| -> std::result::Result<Biscuit, biscuit_auth::error::Token> {
            let mut b = BiscuitBuilder::new();
            for fact in authority_facts(claims) {
                b = b.fact(fact)?;
            }
            let context = ContextClaims {
                v: 1,
                session: claims.session,
                user: claims.user,
                agent: claims.agent,
                integration: claims.integration,
                delegation: claims.delegation,
                platform: claims.platform,
                scopes: claims.scopes.clone(),
                iat: claims.issued_at.seconds(),
                exp: claims.expires_at.seconds(),
                chain: claims.chain.clone(),
            };
            let context = serde_json::to_string(&context)
                .map_err(|e| biscuit_auth::error::Token::ConversionError(e.to_string()))?;
            let params = HashMap::from([("expiry".to_owned(), date(claims.expires_at))]);
            b.code_with_params("check if time($t), $t < {expiry};", params, HashMap::new())?
                .context(context)
                .root_key_id(kid)
                .build(keypair)
        };
    let (kid, biscuit) = ring
        .with_signing_key(|kid, keypair| build(kid, keypair).map(|b| (kid, b)))?
        .map_err(|e| Error::internal(format!("mint agent token: {e}")))?;
    let token = biscuit.to_base64().map_err(|e| Error::internal(format!("encode agent token: {e}")))?;
    // Each scope is in the token twice (a fact and the context), so enough long scopes make a
    // token no relying service would accept: refuse to open such a session instead.
    if token.len() > super::MAX_MINTED_CHARS {
        return Err(Error::invalid(format!(
            "`scopes`: {} scopes make a token of {} characters, over the {} an agent token may have \
             (room is kept for narrowing blocks under the {}-character limit); ask for fewer or shorter scopes",
            claims.scopes.len(),
            token.len(),
            super::MAX_MINTED_CHARS,
            super::MAX_TOKEN_CHARS
        )));
    }
    let revocation_id = biscuit.revocation_identifiers().first().map(hex::encode).unwrap_or_default();
    Ok(MintedToken { token, kid, revocation_id })
}

/// A token whose signatures verified, with its authority claims read out once.
pub struct VerifiedToken {
    /// The parsed token, while something may still need it: the authorizer drops it for a token
    /// it decides from the claims (src/authorize), as it is most of a cached token's memory.
    /// Boxed: `Biscuit` itself is hundreds of bytes, which an `Option` would keep inline.
    pub biscuit: Option<Box<Biscuit>>,
    /// Authority block plus the blocks holders appended.
    pub blocks: usize,
    pub kid: u32,
    pub claims: AgentClaims,
    /// The HTTP allow answer for this token (src/api/authorize.rs), serialized the first time
    /// the token is allowed. It depends on the claims alone, and a verified token is cached by
    /// its exact text, so later allows share these bytes instead of serializing again.
    pub allow_answer: std::sync::OnceLock<axum::body::Bytes>,
}

impl VerifiedToken {
    /// What verifying a token tether has just minted from `claims` under key `kid` would find,
    /// without verifying it: its authority block is those claims (dates in whole seconds, as
    /// [`verify`] reads them back) and it has no other block.
    pub fn minted(kid: u32, claims: &AgentClaims) -> VerifiedToken {
        let whole_seconds = |t: Timestamp| Timestamp(t.seconds().saturating_mul(1000));
        let claims = AgentClaims {
            issued_at: whole_seconds(claims.issued_at),
            expires_at: whole_seconds(claims.expires_at),
            ..claims.clone()
        };
        VerifiedToken { biscuit: None, blocks: 1, kid, claims, allow_answer: std::sync::OnceLock::new() }
    }

    /// Whether a holder appended blocks (attenuation): their checks need the parsed token.
    pub fn attenuated(&self) -> bool {
        self.blocks > 1
    }
}

/// Verifies signatures and reads the authority block's claims (facts of later blocks are not
/// trusted by these queries, so an attenuation cannot add a scope or change an id).
pub fn verify(ring: &KeyRing, token: &str) -> std::result::Result<VerifiedToken, TokenError> {
    let biscuit = parse_bounded(token, ring)?;
    let kid = biscuit.root_key_id().ok_or(TokenError::UnknownKey)?;
    let shape = TokenError::Invalid("not an agent token");
    // The claims ride in the authority block's context (signed like its facts, and only tether
    // writes authority blocks): reading them is a JSON parse, not a datalog evaluation.
    let context = biscuit.context().into_iter().next().flatten().ok_or(shape)?;
    let claims: ContextClaims = serde_json::from_str(&context).map_err(|_| shape)?;
    if claims.v != 1 {
        return Err(shape);
    }
    let claims = AgentClaims {
        session: claims.session,
        user: claims.user,
        agent: claims.agent,
        integration: claims.integration,
        delegation: claims.delegation,
        platform: claims.platform,
        scopes: claims.scopes,
        issued_at: Timestamp(claims.iat.saturating_mul(1000)),
        expires_at: Timestamp(claims.exp.saturating_mul(1000)),
        chain: claims.chain,
    };
    let blocks = biscuit.block_count();
    Ok(VerifiedToken {
        biscuit: Some(Box::new(biscuit)),
        blocks,
        kid,
        claims,
        allow_answer: std::sync::OnceLock::new(),
    })
}

/// The authority block's claims as JSON in its context string, for a cheap read at
/// verification. The same values are the block's datalog facts, which the policy (and any
/// offline verifier) uses; the two are written together by [`mint`].
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextClaims {
    v: u8,
    session: SessionId,
    user: UserId,
    agent: AgentId,
    integration: IntegrationId,
    delegation: DelegationId,
    platform: PlatformId,
    scopes: ScopeSet,
    /// Seconds since the epoch, as in the `issued_at` fact.
    iat: i64,
    /// Seconds since the epoch, as in the `expires_at` fact and the expiry check.
    exp: i64,
    chain: Vec<(SessionId, AgentId)>,
}

/// Term for a request fact (kept here so request values also never become datalog text).
pub fn request_fact(name: &str, value: &str) -> biscuit_auth::builder::Fact {
    fact(name, vec![Term::Str(value.to_owned())])
}
