//! Sessions: opening one on the whole chain, refreshing its tokens, revoking it (also by a held token).

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::cascade::{noop_receipt, Cascade};
use super::delegations::{active_chain, refuse_ungrantable};
use super::{Env, WithReason};
use crate::audit::NewEvent;
use crate::domain::access::{Capability, Held, HeldToken, Owner, PlatformScope};
use crate::domain::*;
use crate::store::sessions::{self, SessionsOf};
use crate::store::{audit, delegations};
use crate::store::{Effect, Tx};
use crate::tokens::{self, AgentClaims};

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSessionMetadata {
    #[schema(max_length = 512, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub ip: Option<String>,
    #[schema(max_length = 512, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub user_agent: Option<String>,
    #[schema(max_length = 512, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub device: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    pub delegation_id: DelegationId,
    pub scopes: ScopeSet,
    pub ttl_seconds: Option<SessionTtl>,
    pub parent_session_id: Option<SessionId>,
    #[serde(default, deserialize_with = "crate::domain::text::object_only")]
    pub metadata: Option<NewSessionMetadata>,
}

/// The answer to opening a session. `Debug` leaves the token out.
#[derive(Clone, Serialize, ToSchema)]
pub struct SessionCreated {
    pub session: Session,
    pub token: String,
    pub token_expires_at: Timestamp,
    /// Single-use; exchange at POST /v1/sessions/{id}/refresh for new tokens.
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for SessionCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCreated").field("session", &self.session.id).finish_non_exhaustive()
    }
}

fn optional_text(field: &str, value: &Option<String>) -> Result<Option<String>> {
    value.as_deref().map(|v| clean_text(field, v, 512)).transpose()
}

/// Opens a session: the whole chain is checked inside this transaction, so a session can never
/// be opened for a user being disabled at the same moment.
pub fn create_session(
    tx: &mut Tx<'_>,
    env: &Env,
    caller: &PlatformScope,
    req: NewSession,
    preminted: Option<PreMinted>,
) -> Result<SessionCreated> {
    if req.scopes.is_empty() {
        return Err(Error::invalid("`scopes` must list at least one scope"));
    }
    let limits = env.limits;
    let ttl = req.ttl_seconds.map_or(limits.default_session_ttl_seconds, SessionTtl::seconds);
    if !(1..=limits.max_session_ttl_seconds).contains(&ttl) {
        return Err(Error::invalid(format!("`ttl_seconds` must be between 1 and {}", limits.max_session_ttl_seconds)));
    }
    let metadata = req.metadata.unwrap_or_default();
    let metadata = SessionMetadata {
        ip: optional_text("metadata.ip", &metadata.ip)?,
        user_agent: optional_text("metadata.user_agent", &metadata.user_agent)?,
        device: optional_text("metadata.device", &metadata.device)?,
        last_ip: None,
        last_user_agent: None,
    };
    let vis = caller.visibility();
    let now = tx.now();
    let delegation = tx.delegation(vis, req.delegation_id)?;
    if delegation.status != DelegationStatus::Active {
        return Err(Error::conflict(format!("delegation {} is revoked", delegation.id)));
    }
    // The delegation was read through the caller's visibility; what it stands on is read past
    // it: the chain check must see a disabled user or platform the caller cannot read.
    let chain = active_chain(tx, delegation.user_id, delegation.agent_id, delegation.integration_id)?;
    let (agent, integration) = (&chain.agent, &chain.integration);
    let mut grantable = chain
        .user
        .effective_permissions
        .intersection(&delegation.scopes)
        .intersection(&agent.scopes)
        .intersection(&integration.scopes);
    // Whole seconds, like every expiry a token carries.
    let mut expires_at = Timestamp(now.plus_seconds(ttl).seconds() * 1000);
    let mut depth = 0;
    if let Some(parent_id) = req.parent_session_id {
        let parent =
            sessions::get_session(tx.conn(), vis, parent_id, now).map_err(|_| Error::NotFound("parent session"))?;
        if parent.status != SessionStatus::Active {
            return Err(Error::conflict(format!("parent session {parent_id} is {}", parent.status.as_str())));
        }
        if parent.user_id != delegation.user_id {
            return Err(Error::conflict("a sub-agent session must act for the same user as its parent"));
        }
        depth = sessions::session_depth(tx.conn(), parent_id)? + 1;
        if depth > limits.max_session_depth {
            return Err(Error::conflict(format!(
                "sub-agent sessions may nest at most {} deep",
                limits.max_session_depth
            )));
        }
        grantable = grantable.intersection(&parent.scopes);
        expires_at = expires_at.min(parent.expires_at);
    }
    refuse_ungrantable(&req.scopes, &grantable)?;
    let chain = match req.parent_session_id {
        Some(parent) => sessions::session_ancestry(tx.conn(), parent)?,
        None => Vec::new(),
    };
    // Tokens minted before the transaction are used only if every claim they carry is what this
    // transaction decided; otherwise they are discarded and minted here.
    let preminted = preminted.filter(|p| {
        let c = &p.claims;
        c.user == delegation.user_id
            && c.agent == agent.id
            && c.integration == integration.id
            && c.delegation == delegation.id
            && c.platform == delegation.platform_id
            && c.scopes == req.scopes
            && c.chain == chain
            && p.session_expires_at <= expires_at
            // A premint older than a very short session's lifetime would open it already expired.
            && p.session_expires_at > now
            && c.issued_at <= now
            // A key retired since the premint: its token would be refused at once.
            && env.agent_keys.is_active(p.tokens.kid)
    });
    if let Some(p) = &preminted {
        expires_at = p.session_expires_at;
    }

    let mut session = Session {
        id: preminted.as_ref().map(|p| p.claims.session).unwrap_or_else(SessionId::generate),
        user_id: delegation.user_id,
        agent_id: agent.id,
        integration_id: integration.id,
        delegation_id: delegation.id,
        platform_id: delegation.platform_id,
        parent_session_id: req.parent_session_id,
        scopes: req.scopes,
        status: SessionStatus::Active,
        created_at: now,
        expires_at,
        last_seen_at: None,
        metadata,
        revoked_at: None,
        revoked_reason: None,
        revoked_by_seq: None,
    };
    let created = tx.audit(
        NewEvent::new(caller.actor(), "session.created", Subject::new("session", session.id)).details(json!({
            "user_id": session.user_id, "agent_id": session.agent_id, "integration_id": session.integration_id,
            "delegation_id": session.delegation_id, "parent_session_id": session.parent_session_id,
            "platform_id": session.platform_id,
            "scopes": session.scopes, "expires_at": session.expires_at,
        })),
    )?;
    let tokens = match preminted {
        Some(p) => p.tokens,
        None => issue_tokens(tx, env, &session, chain)?,
    };
    sessions::insert_session(tx, &session, depth, created.seq)?;
    sessions::insert_access_token(
        tx,
        session.id,
        &tokens.revocation_id,
        tokens.kid,
        tokens.issued_at,
        tokens.token_expires_at,
    )?;
    sessions::insert_refresh_token(tx, session.id, &tokens.refresh_hash)?;
    tx.effect(Effect::SessionActive { id: session.id, expires_at });
    session.status = SessionStatus::Active;
    Ok(SessionCreated {
        session,
        token: tokens.token,
        token_expires_at: tokens.token_expires_at,
        refresh_token: Some(tokens.refresh_token),
    })
}

/// A fresh access token and refresh token for a session.
struct IssuedTokens {
    token: String,
    /// What verifying `token` would find.
    verified: tokens::VerifiedToken,
    kid: u32,
    revocation_id: String,
    issued_at: Timestamp,
    token_expires_at: Timestamp,
    refresh_token: String,
    refresh_hash: String,
}

/// Mints a short-lived access token (never past the session's expiry) and a new refresh token.
fn issue_tokens(tx: &Tx<'_>, env: &Env, session: &Session, chain: Vec<(SessionId, AgentId)>) -> Result<IssuedTokens> {
    let claims = AgentClaims {
        session: session.id,
        user: session.user_id,
        agent: session.agent_id,
        integration: session.integration_id,
        delegation: session.delegation_id,
        platform: session.platform_id,
        scopes: session.scopes.clone(),
        issued_at: tx.now(),
        expires_at: token_expiry(env, tx.now(), session.expires_at),
        chain,
    };
    mint_tokens(env, &claims)
}

/// When an access token issued at `now` stops verifying: its TTL, never past the session, in
/// whole seconds (biscuit dates have no fraction, and the answer must say exactly when).
fn token_expiry(env: &Env, now: Timestamp, session_expires_at: Timestamp) -> Timestamp {
    let until = now.plus_seconds(env.limits.access_token_ttl_seconds).min(session_expires_at);
    Timestamp(until.seconds() * 1000)
}

fn mint_tokens(env: &Env, claims: &AgentClaims) -> Result<IssuedTokens> {
    let minted = tokens::agent::mint(&env.agent_keys, claims)?;
    let refresh_token = tokens::refresh::generate();
    Ok(IssuedTokens {
        token: minted.token,
        verified: tokens::VerifiedToken::minted(minted.kid, claims),
        kid: minted.kid,
        revocation_id: minted.revocation_id,
        issued_at: claims.issued_at,
        token_expires_at: claims.expires_at,
        refresh_hash: tokens::refresh::hash(&refresh_token),
        refresh_token,
    })
}

/// Tokens for a session about to be opened, minted from a read of its chain before the write
/// transaction so the single writer does not spend its time on signatures. The transaction
/// checks every claim again and discards these if anything differs.
pub struct PreMinted {
    claims: AgentClaims,
    session_expires_at: Timestamp,
    tokens: IssuedTokens,
}

/// What a session's tokens name of its delegation: fixed for the delegation's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Links {
    pub user: UserId,
    pub agent: AgentId,
    pub integration: IntegrationId,
    pub platform: PlatformId,
}

impl PreMinted {
    /// The delegation the tokens were minted on, and what they name of it.
    pub fn links(&self) -> (DelegationId, Links) {
        let c = &self.claims;
        (c.delegation, Links { user: c.user, agent: c.agent, integration: c.integration, platform: c.platform })
    }
}

/// Best effort: `None` whenever the read cannot say (the transaction then reports the problem).
pub fn premint(
    conn: &crate::store::Conn,
    env: &Env,
    caller: &PlatformScope,
    req: &NewSession,
    now: Timestamp,
) -> Option<PreMinted> {
    let vis = caller.visibility();
    let delegation = delegations::get_delegation(conn, vis, req.delegation_id).ok()?;
    let links = Links {
        user: delegation.user_id,
        agent: delegation.agent_id,
        integration: delegation.integration_id,
        platform: delegation.platform_id,
    };
    let mut chain = Vec::new();
    let mut parent_expires_at = None;
    if let Some(parent) = req.parent_session_id {
        let parent = sessions::get_session(conn, vis, parent, now).ok()?;
        parent_expires_at = Some(parent.expires_at);
        chain = sessions::session_ancestry(conn, parent.id).ok()?;
    }
    premint_on(env, req, links, chain, parent_expires_at, now)
}

/// [`premint`] for a session with no parent on a delegation whose links the node remembers: no
/// read at all.
pub fn premint_known(env: &Env, req: &NewSession, links: Links, now: Timestamp) -> Option<PreMinted> {
    if req.parent_session_id.is_some() {
        return None;
    }
    premint_on(env, req, links, Vec::new(), None, now)
}

fn premint_on(
    env: &Env,
    req: &NewSession,
    links: Links,
    chain: Vec<(SessionId, AgentId)>,
    parent_expires_at: Option<Timestamp>,
    now: Timestamp,
) -> Option<PreMinted> {
    let ttl = req.ttl_seconds.map_or(env.limits.default_session_ttl_seconds, SessionTtl::seconds);
    if req.scopes.is_empty() || !(1..=env.limits.max_session_ttl_seconds).contains(&ttl) {
        return None;
    }
    let mut session_expires_at = Timestamp(now.plus_seconds(ttl).seconds() * 1000);
    if let Some(parent) = parent_expires_at {
        session_expires_at = session_expires_at.min(parent);
    }
    let claims = AgentClaims {
        session: SessionId::generate(),
        user: links.user,
        agent: links.agent,
        integration: links.integration,
        delegation: req.delegation_id,
        platform: links.platform,
        scopes: req.scopes.clone(),
        issued_at: now,
        expires_at: token_expiry(env, now, session_expires_at),
        chain,
    };
    let tokens = mint_tokens(env, &claims).ok()?;
    Some(PreMinted { claims, session_expires_at, tokens })
}

/// New tokens for a session. `Debug` leaves the secrets out.
#[derive(Clone, Serialize, ToSchema)]
pub struct Refreshed {
    pub token: String,
    pub token_expires_at: Timestamp,
    pub refresh_token: String,
    /// What the new token says, for the authorizer's cache (never part of the answer).
    #[serde(skip)]
    #[schema(ignore)]
    pub minted: Option<std::sync::Arc<tokens::VerifiedToken>>,
}

impl std::fmt::Debug for Refreshed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refreshed").field("token_expires_at", &self.token_expires_at).finish_non_exhaustive()
    }
}

/// What a refresh did: rotated the tokens, or caught a replayed refresh token and revoked the
/// session (committed, but answered to the caller as an error).
#[derive(Debug)]
pub enum RefreshOutcome {
    Rotated(Refreshed),
    ReuseDetected(Receipt),
}

/// Rotates a session's tokens. A refresh token is single-use: presenting one that was already
/// used is treated as theft (OAuth 2.0 Security BCP): the session is revoked.
pub fn refresh_session(
    tx: &mut Tx<'_>,
    env: &Env,
    caller: &PlatformScope,
    id: SessionId,
    refresh_token: &str,
) -> Result<RefreshOutcome> {
    let session = sessions::get_session(tx.conn(), caller.visibility(), id, tx.now())?;
    let hash = tokens::refresh::hash(refresh_token);
    let stored = sessions::find_refresh_token(tx.conn(), &hash)?
        .filter(|t| t.session_id == id)
        .ok_or_else(|| Error::InvalidGrant("the refresh token is not valid for this session".into()))?;
    if stored.used {
        if session.status != SessionStatus::Active {
            return Err(Error::InvalidGrant(
                "the refresh token was already used; the session is no longer active".into(),
            ));
        }
        let trigger = NewEvent::new(caller.actor(), "token.revoked_reuse", Subject::new("session", id))
            .reason(Some("refresh_token_reused".into()))
            .details(json!({
                "signal": "compromise", "user_id": session.user_id, "agent_id": session.agent_id,
                "integration_id": session.integration_id, "delegation_id": session.delegation_id,
                "platform_id": session.platform_id,
            }));
        let mut cascade = Cascade::start(tx, trigger)?;
        let sessions = sessions::active_sessions(tx.conn(), tx.now(), SessionsOf::One(id))?;
        cascade.revoke_sessions(tx, sessions, "refresh_token_reused")?;
        return Ok(RefreshOutcome::ReuseDetected(cascade.receipt(tx)?));
    }
    if session.status != SessionStatus::Active {
        return Err(Error::conflict(format!("session {id} is {}", session.status.as_str())));
    }
    sessions::mark_refresh_used(tx, &hash)?;
    let chain = match session.parent_session_id {
        Some(parent) => sessions::session_ancestry(tx.conn(), parent)?,
        None => Vec::new(),
    };
    let issued = issue_tokens(tx, env, &session, chain)?;
    sessions::insert_access_token(tx, id, &issued.revocation_id, issued.kid, tx.now(), issued.token_expires_at)?;
    sessions::insert_refresh_token(tx, id, &issued.refresh_hash)?;
    tx.audit(NewEvent::new(caller.actor(), "session.refreshed", Subject::new("session", id)).details(json!({
        "kid": issued.kid, "token_expires_at": issued.token_expires_at,
        "user_id": session.user_id, "agent_id": session.agent_id, "integration_id": session.integration_id,
        "delegation_id": session.delegation_id, "platform_id": session.platform_id,
    })))?;
    Ok(RefreshOutcome::Rotated(Refreshed {
        token: issued.token,
        token_expires_at: issued.token_expires_at,
        refresh_token: issued.refresh_token,
        minted: Some(std::sync::Arc::new(issued.verified)),
    }))
}

/// Revokes one session (its own trigger) and its sub-agent sessions.
pub fn revoke_session(tx: &mut Tx<'_>, caller: &Owner, id: SessionId, req: WithReason) -> Result<Receipt> {
    let session = sessions::get_session(tx.conn(), caller.visibility(), id, tx.now())?;
    revoke_loaded(tx, caller.actor(), session, req)
}

/// Revokes the session of a token the caller holds (RFC 7009): possession of the token is the
/// authority, checked when the [`HeldToken`] was made.
pub fn revoke_held(tx: &mut Tx<'_>, held: &HeldToken, req: WithReason) -> Result<Receipt> {
    let id = match held.token() {
        Held::Session(id) => *id,
        Held::RefreshToken(hash) => {
            sessions::find_refresh_token(tx.conn(), hash)?.ok_or(Error::NotFound("refresh token"))?.session_id
        }
    };
    let session = sessions::get_session(tx.conn(), held.visibility(), id, tx.now())?;
    revoke_loaded(tx, held.actor(), session, req)
}

fn revoke_loaded(tx: &mut Tx<'_>, actor: Actor, session: Session, req: WithReason) -> Result<Receipt> {
    let reason = req.reason.map(Reason::into_string);
    let id = session.id;
    let subject = Subject::new("session", id);
    let Some(active) = sessions::active_sessions(tx.conn(), tx.now(), SessionsOf::One(id))?.into_iter().next() else {
        let earlier = match session.revoked_by_seq {
            Some(seq) => audit::audit_event_at(tx.conn(), seq)?,
            None => audit::last_event_for(tx.conn(), &id.to_string(), &["session.created"])?,
        };
        return Ok(noop_receipt(tx, earlier, subject));
    };
    let why = reason.clone().unwrap_or_else(|| "session_revoked".to_owned());
    let trigger =
        tx.audit(NewEvent::new(actor.clone(), "session.revoked", subject).reason(Some(why.clone())).details(json!({
            "user_id": session.user_id, "agent_id": session.agent_id, "integration_id": session.integration_id,
            "delegation_id": session.delegation_id,
            "platform_id": session.platform_id,
            "initiating_entity": super::initiating_entity(&actor),
        })))?;
    let seq = trigger.seq;
    let mut cascade = Cascade::from_event(trigger);
    cascade.mark(tx, &active, &why, seq)?;
    // Its sub-agent sessions follow as the cascade finishes.
    cascade.receipt(tx)
}
