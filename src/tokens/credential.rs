//! API credentials: biscuits under their own root key, carrying a role and its binding.

use std::collections::HashMap;

use biscuit_auth::BiscuitBuilder;

use super::{date, fact, parse_bounded, run_limits, string, KeyRing, TokenError};
use crate::domain::*;

/// What a credential says about its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialClaims {
    pub id: CredentialId,
    pub role: Role,
    pub expires_at: Option<Timestamp>,
}

/// Mints a credential; facts are terms, never formatted datalog.
/// Mints a credential under the newest active API key: (the credential, that key's id).
pub fn mint(ring: &KeyRing, claims: &CredentialClaims) -> Result<(String, u32)> {
    let build =
        |kid: u32, keypair: &biscuit_auth::KeyPair| -> std::result::Result<(String, u32), biscuit_auth::error::Token> {
            let mut b = BiscuitBuilder::new()
                .fact(fact("credential", vec![string(claims.id)]))?
                .fact(fact("role", vec![string(claims.role.kind().as_str())]))?;
            match claims.role {
                Role::Platform(p) => b = b.fact(fact("platform", vec![string(p)]))?,
                Role::User(u) => b = b.fact(fact("user", vec![string(u)]))?,
                Role::Receiver(Some(p)) => b = b.fact(fact("platform", vec![string(p)]))?,
                _ => {}
            }
            if let Some(expires_at) = claims.expires_at {
                let params = HashMap::from([("expiry".to_owned(), date(expires_at))]);
                b = b.code_with_params("check if time($t), $t < {expiry};", params, HashMap::new())?;
            }
            Ok((b.root_key_id(kid).build(keypair)?.to_base64()?, kid))
        };
    ring.with_signing_key(build)?.map_err(|e| Error::internal(format!("mint credential: {e}")))
}

/// Verifies a credential's signature and reads its claims. Expiry and revocation are checked by
/// the caller against the credential view (the record is the authority, not the token alone).
/// Also returns the id of the key that signed it.
pub fn verify(ring: &KeyRing, token: &str) -> std::result::Result<(CredentialClaims, u32), TokenError> {
    let biscuit = parse_bounded(token, ring)?;
    if biscuit.block_count() != 1 {
        // Credentials are not attenuable: the role is all or nothing.
        return Err(TokenError::Invalid("credentials cannot be attenuated"));
    }
    let shape = TokenError::Invalid("not an API credential");
    let mut authorizer =
        biscuit_auth::AuthorizerBuilder::new().set_limits(run_limits()).build(&biscuit).map_err(|_| shape)?;
    let rows: Vec<(String, String)> =
        authorizer.query("cred($c, $r) <- credential($c), role($r)").map_err(|_| shape)?;
    let [(id, role)] = <[_; 1]>::try_from(rows).map_err(|_| shape)?;
    let id = CredentialId::parse(&id).map_err(|_| shape)?;
    let one = |authorizer: &mut biscuit_auth::Authorizer, rule: &str| -> std::result::Result<String, TokenError> {
        let rows: Vec<(String,)> = authorizer.query(rule).map_err(|_| shape)?;
        let [(value,)] = <[_; 1]>::try_from(rows).map_err(|_| shape)?;
        Ok(value)
    };
    let role = match RoleKind::parse(&role).ok_or(shape)? {
        RoleKind::Admin => Role::Admin,
        RoleKind::Auditor => Role::Auditor,
        RoleKind::Verifier => Role::Verifier,
        RoleKind::Provisioner => Role::Provisioner,
        RoleKind::Platform => {
            Role::Platform(PlatformId::parse(&one(&mut authorizer, "p($p) <- platform($p)")?).map_err(|_| shape)?)
        }
        RoleKind::User => Role::User(UserId::parse(&one(&mut authorizer, "u($u) <- user($u)")?).map_err(|_| shape)?),
        RoleKind::Receiver => {
            let rows: Vec<(String,)> = authorizer.query("p($p) <- platform($p)").map_err(|_| shape)?;
            match rows.as_slice() {
                [] => Role::Receiver(None),
                [(p,)] => Role::Receiver(Some(PlatformId::parse(p).map_err(|_| shape)?)),
                _ => return Err(shape),
            }
        }
    };
    let kid = biscuit.root_key_id().ok_or(TokenError::UnknownKey)?;
    Ok((CredentialClaims { id, role, expires_at: None }, kid))
}
