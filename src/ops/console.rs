//! Console sign-in: minting single-use links, opening them into console sessions (each acting as
//! a short-lived API credential of its own), and ending those sessions.
//!
//! The link and cookie secrets are random 256-bit values; only their SHA-256 is stored, so the
//! database (or a backup of it) cannot be used to sign in.

use rand::RngCore;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::credentials::issue_credential;
use super::Env;
use crate::audit::NewEvent;
use crate::domain::access::{Capability, PlatformScope};
use crate::domain::*;
use crate::store::console::{self, ConsoleLink, ConsoleRole, ConsoleSession};
use crate::store::{credentials, users, Effect, Tx};

/// How long a link may wait to be opened (the issue's ceiling: five minutes).
pub const LINK_TTL_SECONDS: i64 = 5 * 60;
/// A console session ends after this long without a request (OWASP session management: 15 to
/// 30 minutes for low-risk applications; the console can revoke access, so the short end).
pub const IDLE_TIMEOUT_SECONDS: i64 = 15 * 60;
/// A console session ends this long after sign-in, however active (a working day's half).
pub const ABSOLUTE_LIFETIME_SECONDS: i64 = 4 * 3600;

/// `POST /v1/console-links`: `{user_id}` for a person, or `{role: "auditor"|"admin"}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConsoleLink {
    /// The person to sign in (a platform: only a user it has delegations with).
    pub user_id: Option<UserId>,
    /// `user` (the default with `user_id`), `auditor` or `admin` (an admin only).
    #[schema(value_type = Option<String>, example = "auditor")]
    pub role: Option<String>,
}

/// A link as minted: its id, the secret (shown once, inside the URL) and its expiry.
pub struct MintedLink {
    pub id: ConsoleLinkId,
    pub secret: String,
    pub expires_at: Timestamp,
}

/// A fresh 256-bit secret, URL-safe base64.
pub fn new_secret() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored of a secret.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Mints a link. A platform mints for a user it has (or had) a delegation with, and the console it
/// opens shows that platform's delegations only; an admin mints for any user, auditor or admin.
pub fn mint_link(tx: &mut Tx<'_>, caller: &PlatformScope, req: NewConsoleLink) -> Result<MintedLink> {
    let role = match (req.role.as_deref(), req.user_id) {
        (None | Some("user"), Some(u)) => ConsoleRole::User(u),
        (None | Some("user"), None) => return Err(Error::invalid("`user_id` is required for a person's console")),
        (Some("auditor" | "admin"), Some(_)) => {
            return Err(Error::invalid("`user_id` is only for a person's console (role `user`)"))
        }
        (Some("auditor"), None) => ConsoleRole::Auditor,
        (Some("admin"), None) => ConsoleRole::Admin,
        (Some(_), _) => return Err(Error::invalid("`role` must be `user`, `auditor` or `admin`")),
    };
    let platform = caller.platform();
    match (role, platform) {
        (ConsoleRole::User(u), Some(p)) => {
            // Another platform's user is "not found": a platform learns nothing of users it
            // was never delegated by.
            if !console::platform_knows_user(tx.conn(), p, u)? {
                return Err(Error::NotFound("user"));
            }
        }
        (ConsoleRole::User(u), None) => {
            users::get_user(tx.conn(), caller.visibility(), u)?;
        }
        (_, Some(_)) => return Err(Error::Forbidden("only an admin mints auditor and admin console links".into())),
        (_, None) => {}
    }
    issue_link(tx, caller.actor(), role, platform)
}

/// Records a link for `role` minted by `actor` (also `tether console-link`, as the CLI admin).
pub fn issue_link(
    tx: &mut Tx<'_>,
    actor: Actor,
    role: ConsoleRole,
    platform: Option<PlatformId>,
) -> Result<MintedLink> {
    let secret = new_secret();
    let id = ConsoleLinkId::generate();
    let now = tx.now();
    let expires_at = now.plus_seconds(LINK_TTL_SECONDS);
    let event =
        tx.audit(NewEvent::new(actor, "console.link_created", Subject::new("console_link", id)).details(json!({
            "role": role.as_str(),
            "user_id": match role { ConsoleRole::User(u) => Some(u), _ => None },
            "platform_id": platform,
            "expires_at": expires_at,
        })))?;
    console::insert_link(
        tx,
        &ConsoleLink {
            id,
            secret_hash: secret_hash(&secret),
            role,
            platform_id: platform,
            created_seq: event.seq,
            created_at: now,
            expires_at,
            used_at: None,
        },
    )?;
    Ok(MintedLink { id, secret, expires_at })
}

/// Why a link does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefused {
    Unknown,
    Used,
    Expired,
}

/// A console session as started: the stored row, the cookie secret (sent once, as the cookie)
/// and the caller it acts as.
pub struct OpenedSession {
    pub session: ConsoleSession,
    pub cookie_secret: String,
    pub caller: Caller,
}

/// Opens a link: marks it used, mints the credential the session acts as (expiring with the
/// session's absolute lifetime) and records the session. The person (or auditor, or admin) is
/// the actor of the session's events; the link's event is their cause.
pub fn open_link(
    tx: &mut Tx<'_>,
    env: &Env,
    link_secret: &str,
) -> Result<std::result::Result<OpenedSession, LinkRefused>> {
    let Some(link) = console::find_link(tx.conn(), &secret_hash(link_secret))? else {
        return Ok(Err(LinkRefused::Unknown));
    };
    let now = tx.now();
    if link.used_at.is_some() {
        return Ok(Err(LinkRefused::Used));
    }
    if link.expires_at <= now {
        return Ok(Err(LinkRefused::Expired));
    }
    if !console::mark_link_used(tx, link.id, now)? {
        return Ok(Err(LinkRefused::Used));
    }
    let role = match link.role {
        ConsoleRole::User(u) => Role::User(u),
        ConsoleRole::Auditor => Role::Auditor,
        ConsoleRole::Admin => Role::Admin,
    };
    let expires_at = now.plus_seconds(ABSOLUTE_LIFETIME_SECONDS);
    let id = ConsoleSessionId::generate();
    // The credential's own event names the system as its minter: the link (by its event, the
    // cause below) is the authority, not a caller of this request.
    let credential =
        issue_credential(tx, env, Actor::system(), role, Some(format!("console session {id}")), Some(expires_at))?;
    let caller = Caller { credential: credential.record.id, role };
    let session = ConsoleSession {
        id,
        link_id: link.id,
        credential_id: credential.record.id,
        role: link.role,
        platform_id: link.platform_id,
        created_at: now,
        last_used_at: now,
        expires_at,
        ended_at: None,
    };
    let cookie_secret = new_secret();
    console::insert_session(tx, &session, &secret_hash(&cookie_secret))?;
    tx.audit(
        NewEvent::new(caller.actor(), "console.session_started", Subject::new("console_session", id))
            .cause(link.created_seq)
            .details(json!({
                "link_id": link.id,
                "credential_id": credential.record.id,
                "role": link.role.as_str(),
                "user_id": match link.role { ConsoleRole::User(u) => Some(u), _ => None },
                "platform_id": link.platform_id,
                "expires_at": expires_at,
                "idle_timeout_seconds": IDLE_TIMEOUT_SECONDS,
            })),
    )?;
    Ok(Ok(OpenedSession { session, cookie_secret, caller }))
}

/// Why a console session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    SignedOut,
    IdleTimeout,
    Expired,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::SignedOut => "signed_out",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::Expired => "expired",
        }
    }
}

/// Ends a console session and revokes the credential it acted as. Idempotent.
pub fn end_session(tx: &mut Tx<'_>, session: &ConsoleSession, caller: &Caller, why: EndReason) -> Result<()> {
    let now = tx.now();
    if !console::end_session(tx, session.id, now, why.as_str())? {
        return Ok(());
    }
    let actor = match why {
        EndReason::SignedOut => caller.actor(),
        EndReason::IdleTimeout | EndReason::Expired => Actor::system(),
    };
    let ended = tx.audit(
        NewEvent::new(actor.clone(), "console.session_ended", Subject::new("console_session", session.id))
            .reason(Some(why.as_str().to_owned()))
            .details(json!({
                "credential_id": session.credential_id,
                "user_id": match session.role { ConsoleRole::User(u) => Some(u), _ => None },
                "platform_id": session.platform_id,
            })),
    )?;
    let record = credentials::get_credential(tx.conn(), session.credential_id)?;
    if record.revoked_at.is_none() {
        credentials::revoke_credential(tx, session.credential_id)?;
        tx.audit(
            NewEvent::new(actor, "credential.revoked", Subject::new("credential", session.credential_id))
                .cause(ended.seq)
                .reason(Some("console_session_ended".to_owned())),
        )?;
        tx.effect(Effect::Credential { id: session.credential_id, revoked: true, expires_at: record.expires_at });
    }
    Ok(())
}

/// Records that a console session was used now (the idle clock restarts).
pub fn touch(tx: &mut Tx<'_>, id: ConsoleSessionId) -> Result<()> {
    let now = tx.now();
    console::touch_session(tx, id, now)
}
