//! Capabilities: what a verified caller may do, granted once from its role.
//!
//! The credential extractor turns a [`Caller`] into the capability a route needs with
//! [`Capability::grant`], the one constructor: each capability's fields are private to this
//! module, so a command that takes `&Admin` cannot be called without the role check having run,
//! and a missing check does not compile. Which roles hold which capability is declared once,
//! below (`capabilities!`); `api::auth::ROUTE_ROLES` maps each route to one of them and a test
//! compares that table with docs/api.md.
//!
//! A [`Visibility`] (the slice of tenant data a read may return) comes only from a capability,
//! from a [`HeldToken`], or from [`Unscoped::for_system`], the named door of the few commands
//! that must look past the caller's tenancy.

use super::caller::{Caller, Role, RoleKind};
use super::error::Error;
use super::ids::{PlatformId, SessionId, SignalSourceId, UserId};
use super::model::{Actor, ActorKind};

/// The slice of tenant data a caller may see. Store reads take it as an argument, so an object
/// outside it is "not found" by construction, never by a check a handler could forget. Built
/// only in this module; the store reads it through [`Visibility::reach`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Visibility(Reach);

/// What a [`Visibility`] reaches: the store turns it into a `WHERE` clause. A `Reach` cannot be
/// turned back into a `Visibility`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reach {
    /// Admin and auditor (and the system, through [`Unscoped`]): everything.
    All,
    /// A platform: its own platform, agents, integrations and the delegations and sessions on them.
    Platform(PlatformId),
    /// A user: their own user record, delegations and sessions.
    User(UserId),
    /// A verifier sees no tenant data.
    Nothing,
}

impl Visibility {
    pub fn reach(self) -> Reach {
        self.0
    }

    /// What a role sees of tenant data.
    fn of(caller: &Caller) -> Visibility {
        Visibility(match caller.role {
            Role::Admin | Role::Auditor => Reach::All,
            Role::Platform(p) => Reach::Platform(p),
            Role::User(u) => Reach::User(u),
            Role::Verifier => Reach::Nothing,
            // A provisioner manages users, all of them; it holds no capability that reads
            // anything else.
            Role::Provisioner => Reach::All,
            // A receiver reads no tenant data through the API: its streams tell it what it may know.
            Role::Receiver(_) => Reach::Nothing,
        })
    }

    /// Any visibility, for the store's own tests of its tenancy filters.
    #[cfg(test)]
    pub(crate) fn for_test(reach: Reach) -> Visibility {
        Visibility(reach)
    }
}

/// A capability: proof that a caller's role passed the check of an operation.
pub trait Capability: Copy + Send + Sync + 'static {
    /// The roles granted this capability: the role column of every route that takes it.
    const ROLES: &'static [RoleKind];

    /// The role check, the only way to obtain the capability (403 `forbidden` otherwise).
    fn grant(caller: &Caller) -> Result<Self, Error>;

    /// The caller it was granted to.
    fn caller(&self) -> &Caller;

    /// How the caller appears as the actor of an audit event.
    fn actor(&self) -> Actor {
        self.caller().actor()
    }
}

fn refused(caller: &Caller) -> Error {
    Error::Forbidden(format!("the {} role may not do this", caller.role.kind().as_str()))
}

/// Declares each capability with the roles that hold it: the role × operation table.
macro_rules! capabilities {
    ($($(#[$doc:meta])* $name:ident = [$($role:ident),+] $(, refused = $why:literal)?;)+) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name {
            caller: Caller,
        }

        impl Capability for $name {
            const ROLES: &'static [RoleKind] = &[$(RoleKind::$role),+];

            fn grant(caller: &Caller) -> Result<Self, Error> {
                if Self::ROLES.contains(&caller.role.kind()) {
                    Ok($name { caller: *caller })
                } else {
                    #[allow(unused_mut, unused_assignments)]
                    let mut error = refused(caller);
                    $(error = Error::Forbidden($why.into());)?
                    Err(error)
                }
            }

            fn caller(&self) -> &Caller {
                &self.caller
            }
        }
    )+};
}

capabilities! {
    /// Administration: credentials, platforms, users' administration, keys.
    Admin = [Admin];
    /// The audit log and the list of users: an admin or an auditor, seeing everything.
    Auditor = [Admin, Auditor];
    /// What a platform does on its own tenant (an admin on any): registering and ending agents and
    /// integrations, delegations, opening and refreshing sessions.
    PlatformScope = [Admin, Platform];
    /// What a user does about their own sessions (an admin for any user): signing out,
    /// disconnecting.
    UserScope = [Admin, User];
    /// Revoking a delegation or a session: its owner platform, its user, an admin.
    Owner = [Admin, Platform, User];
    /// Reading tenant data, each role within its own visibility: every role but the verifier.
    TenantReader = [Admin, Platform, User, Auditor], refused = "the verifier role reads no tenant data";
    /// Creating webhooks: every role but the user.
    WebhookOwner = [Admin, Platform, Verifier, Auditor];
    /// Checking tokens: `POST /v1/authorize`, introspection.
    Verifier = [Verifier, Admin];
    /// The revocation feed.
    FeedReader = [Verifier, Admin, Auditor];
    /// Token revocation (RFC 7009): revoking the session of a token the caller holds.
    TokenRevoker = [Verifier, Platform, Admin];
    /// Any live credential: the webhooks it owns, the keys, the event stream (a provisioner or a
    /// receiver sees no events on it).
    AnyRole = [Admin, Platform, User, Auditor, Verifier, Provisioner, Receiver];
    /// An identity provider's connection (SCIM, Global Token Revocation), or an admin.
    Provisioner = [Admin, Provisioner];
    /// A Shared Signals receiver managing its own streams (SSF §8); no other role has streams.
    Receiver = [Receiver];
}

impl Receiver {
    /// The platform the receiver is bound to: its streams tell of that platform's sessions only.
    pub fn platform(&self) -> Option<PlatformId> {
        match self.caller.role {
            Role::Receiver(p) => p,
            _ => None,
        }
    }
}

/// Who may create, end, enable and disable users and change their permissions: an admin, an
/// identity provider through its provisioner credential, or a verified signal source. The user
/// commands take it, so each path is audited as its own actor.
pub trait ManagesUsers {
    /// How the one acting appears in the audit log.
    fn acting_actor(&self) -> Actor;

    /// Users are read unscoped: managing users is not tenant-bound.
    fn visibility(&self) -> Visibility {
        Visibility(Reach::All)
    }
}

impl ManagesUsers for Admin {
    fn acting_actor(&self) -> Actor {
        self.actor()
    }
}

impl ManagesUsers for Provisioner {
    fn acting_actor(&self) -> Actor {
        self.actor()
    }
}

impl ManagesUsers for SignalAuthority {
    fn acting_actor(&self) -> Actor {
        self.actor()
    }
}

impl Admin {
    pub fn visibility(&self) -> Visibility {
        Visibility::of(&self.caller)
    }
}

impl Auditor {
    pub fn visibility(&self) -> Visibility {
        Visibility::of(&self.caller)
    }
}

impl PlatformScope {
    pub fn visibility(&self) -> Visibility {
        Visibility::of(&self.caller)
    }

    /// The caller's own platform; `None` for an admin.
    pub fn platform(&self) -> Option<PlatformId> {
        match self.caller.role {
            Role::Platform(p) => Some(p),
            _ => None,
        }
    }
}

impl UserScope {
    pub fn visibility(&self) -> Visibility {
        Visibility::of(&self.caller)
    }
}

impl Owner {
    pub fn visibility(&self) -> Visibility {
        Visibility::of(&self.caller)
    }
}

impl TenantReader {
    pub fn visibility(&self) -> Visibility {
        Visibility::of(&self.caller)
    }
}

/// What a webhook is owned by: the role and the id bound to it (the platform, the user, else the
/// credential).
pub trait WebhookOwnerOf: Capability {
    fn owner(&self) -> (&'static str, String) {
        let caller = self.caller();
        (caller.role.kind().as_str(), caller.role.bound_id(caller.credential))
    }
}

impl WebhookOwnerOf for WebhookOwner {}
impl WebhookOwnerOf for AnyRole {}

/// The authority of the OAuth revocation path: a caller allowed to revoke tokens who presented
/// one. Possession of the token is the authority, within one limit: a platform holds only its
/// own platform's tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldToken {
    revoker: TokenRevoker,
    token: Held,
}

/// Which token was presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// A verified access token, by its session.
    Session(SessionId),
    /// A refresh token, by its hash (its session is looked up in the transaction).
    RefreshToken(String),
}

impl TokenRevoker {
    /// An access token the caller presented, whose signature verified, with the session and the
    /// platform its claims name; `None` when a platform presents another platform's token.
    pub fn holding_session(&self, session: SessionId, token_platform: PlatformId) -> Option<HeldToken> {
        match self.caller.role {
            Role::Platform(p) if p != token_platform => None,
            _ => Some(HeldToken { revoker: *self, token: Held::Session(session) }),
        }
    }

    /// A refresh token the caller presented, by its hash.
    pub fn holding_refresh_token(&self, hash: String) -> HeldToken {
        HeldToken { revoker: *self, token: Held::RefreshToken(hash) }
    }
}

impl HeldToken {
    pub fn token(&self) -> &Held {
        &self.token
    }

    pub fn actor(&self) -> Actor {
        self.revoker.actor()
    }

    /// Where the held token's session is looked for: a platform's own sessions; for a verifier or
    /// an admin every session (a verifier sees no tenant data otherwise).
    pub fn visibility(&self) -> Visibility {
        match self.revoker.caller.role {
            Role::Platform(p) => Visibility(Reach::Platform(p)),
            _ => Visibility(Reach::All),
        }
    }
}

/// The authority of a registered signal source, from a signature that verified with its keys (a
/// Security Event Token pushed to it, or a Global Token Revocation request signed as a JWT). It is
/// no credential caller: its actor is the source (`idp`, `src_…`); the users a signal names are
/// found by the identifiers an identity provider knows them by, not through a tenancy. Only the
/// two handlers that verify such a signature construct it (the test below holds them to that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalAuthority {
    source: SignalSourceId,
}

impl SignalAuthority {
    /// For a source whose signature has just verified; callers are listed in the test below.
    pub fn for_verified_source(source: SignalSourceId) -> SignalAuthority {
        SignalAuthority { source }
    }

    pub fn source(&self) -> SignalSourceId {
        self.source
    }

    pub fn actor(&self) -> Actor {
        Actor::new(ActorKind::Idp, self.source.to_string())
    }
}

/// The named door to reads beyond any caller's visibility, for system paths: the chain checks of
/// delegation and session creation (a platform must not open a session for a disabled user it
/// cannot read), and minting a credential bound to a platform or user. Only the modules listed
/// in the test below call [`Unscoped::for_system`].
#[derive(Debug, Clone, Copy)]
pub struct Unscoped(());

impl Unscoped {
    pub(crate) fn for_system() -> Unscoped {
        Unscoped(())
    }

    pub fn visibility(self) -> Visibility {
        Visibility(Reach::All)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CredentialId;

    fn caller(role: Role) -> Caller {
        Caller { credential: CredentialId::generate(), role }
    }

    #[test]
    fn a_capability_is_granted_to_its_roles_only_with_the_403_messages_of_before() {
        let platform = caller(Role::Platform(PlatformId::generate()));
        assert!(PlatformScope::grant(&platform).is_ok());
        let Err(Error::Forbidden(why)) = Admin::grant(&platform) else { panic!("a platform is no admin") };
        assert_eq!(why, "the platform role may not do this");
        let Err(Error::Forbidden(why)) = TenantReader::grant(&caller(Role::Verifier)) else { panic!("verifier") };
        assert_eq!(why, "the verifier role reads no tenant data");
    }

    #[test]
    fn a_platform_holds_only_its_own_platforms_tokens() {
        let own = PlatformId::generate();
        let revoker = TokenRevoker::grant(&caller(Role::Platform(own))).expect("platform revokes");
        let session = SessionId::generate();
        assert!(revoker.holding_session(session, PlatformId::generate()).is_none());
        let held = revoker.holding_session(session, own).expect("its own");
        assert_eq!(held.visibility().reach(), Reach::Platform(own));
        let verifier = TokenRevoker::grant(&caller(Role::Verifier)).expect("verifier revokes");
        assert_eq!(verifier.holding_refresh_token("h".into()).visibility().reach(), Reach::All);
    }

    #[test]
    fn only_the_system_paths_open_the_unscoped_door() {
        let door = ["Unscoped", "::for_system()"].concat();
        let mut callers = Vec::new();
        let mut stack = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read src") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if std::fs::read_to_string(&path).expect("read").contains(&door) {
                    let name = path.to_string_lossy().replace('\\', "/");
                    callers.push(name[name.find("src/").expect("under src")..].to_owned());
                }
            }
        }
        callers.sort();
        // ops/delegations.rs: the chain check (`active_chain`), which opening a session uses too.
        assert_eq!(callers, ["src/ops/credentials.rs", "src/ops/delegations.rs"]);
    }

    #[test]
    fn only_the_handlers_that_verify_a_sources_signature_grant_its_authority() {
        let door = ["SignalAuthority", "::for_verified_source("].concat();
        let mut callers = Vec::new();
        let mut stack = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read src") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if std::fs::read_to_string(&path).expect("read").contains(&door) {
                    let name = path.to_string_lossy().replace('\\', "/");
                    callers.push(name[name.find("src/").expect("under src")..].to_owned());
                }
            }
        }
        callers.sort();
        assert_eq!(callers, ["src/api/global_revocation.rs", "src/api/signals.rs"]);
    }
}
