//! The SET signing keys: an RSA ring beside the Ed25519 ones, in the same directory and under
//! the same lock, published as a JWKS.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::Serialize;

use super::{write_secret, Changing, KeyStatus};
use crate::domain::{Error, Result};

/// Bits of a SET signing key: the CAEP interoperability profile requires RS256 with at least 2048.
pub const SET_KEY_BITS: usize = 2048;

struct RsaEntry {
    kid: u32,
    /// The signing key as jsonwebtoken takes it (PKCS#1 DER), derived once.
    encoding: jsonwebtoken::EncodingKey,
    /// The public key's modulus and exponent, big-endian, for the JWKS.
    n: Vec<u8>,
    e: Vec<u8>,
    status: KeyStatus,
}

/// The SET signing keys (purpose `sets`): RSA, because the CAEP interoperability profile requires
/// RS256. Files `sets-<kid>.pem` (PKCS#1, mode 0600) and `sets-<kid>.retired`, beside the
/// Ed25519 rings, sharing their directory lock. The first key is generated at first use, not at
/// start: an RSA key takes a while to generate and most instances (and tests) never send a SET.
pub struct SetKeyRing {
    dir: PathBuf,
    entries: RwLock<Vec<RsaEntry>>,
    changes: std::sync::Mutex<()>,
}

impl std::fmt::Debug for SetKeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SetKeyRing").finish_non_exhaustive()
    }
}

/// A SET signing key as the JWKS and the key listing show it.
#[derive(Debug, Clone, Serialize)]
pub struct SetKeyInfo {
    pub kid: String,
    pub status: KeyStatus,
}

const SET_PREFIX: &str = "sets-";

/// The `kid` a SET header and the JWKS carry for key number `n`.
pub fn set_kid(n: u32) -> String {
    format!("set-{n}")
}

impl SetKeyRing {
    /// Reads the SET keys in `dir` (none yet is fine: see [`SetKeyRing::ensure_key`]).
    pub fn open(dir: &Path) -> Result<SetKeyRing> {
        fs::create_dir_all(dir).map_err(|e| Error::internal(format!("create {}: {e}", dir.display())))?;
        let ring = SetKeyRing { dir: dir.to_owned(), entries: RwLock::new(Vec::new()), changes: Default::default() };
        ring.reload()?;
        Ok(ring)
    }

    fn change(&self) -> Result<Changing<'_>> {
        Changing::begin(&self.changes, &self.dir)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<RsaEntry>> {
        self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Re-reads the key files (a running instance does so every second, so `tether keys rotate
    /// --purpose sets` run beside it takes effect at once). Keys already loaded are not parsed
    /// again: only their retired marker is looked at.
    pub fn reload(&self) -> Result<()> {
        let _change = self.change()?;
        self.scan()
    }

    fn scan(&self) -> Result<()> {
        let listing =
            fs::read_dir(&self.dir).map_err(|e| Error::internal(format!("read {}: {e}", self.dir.display())))?;
        let mut kids: Vec<u32> = listing
            .flatten()
            .filter_map(|item| {
                let name = item.file_name().to_string_lossy().into_owned();
                name.strip_prefix(SET_PREFIX)?.strip_suffix(".pem")?.parse::<u32>().ok()
            })
            .collect();
        kids.sort_unstable();
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let mut next = Vec::with_capacity(kids.len());
        for kid in kids {
            let status = if self.dir.join(format!("{SET_PREFIX}{kid}.retired")).exists() {
                KeyStatus::Retired
            } else {
                KeyStatus::Active
            };
            if let Some(at) = entries.iter().position(|e| e.kid == kid) {
                let mut known = entries.swap_remove(at);
                known.status = status;
                next.push(known);
                continue;
            }
            let path = self.dir.join(format!("{SET_PREFIX}{kid}.pem"));
            let text =
                fs::read_to_string(&path).map_err(|e| Error::internal(format!("read {}: {e}", path.display())))?;
            let private = <rsa::RsaPrivateKey as rsa::pkcs1::DecodeRsaPrivateKey>::from_pkcs1_pem(&text)
                .map_err(|_| Error::internal(format!("{} is not an RSA private key (PKCS#1 PEM)", path.display())))?;
            next.push(rsa_entry(kid, &private, status)?);
        }
        next.sort_by_key(|e| e.kid);
        *entries = next;
        Ok(())
    }

    /// Adds a new signing key with the next key id; older keys stay in the JWKS until retired.
    pub fn rotate(&self) -> Result<u32> {
        let _change = self.change()?;
        self.scan()?;
        self.add_key()
    }

    fn add_key(&self) -> Result<u32> {
        let kid = self.read().iter().map(|e| e.kid).max().unwrap_or(0) + 1;
        let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, SET_KEY_BITS)
            .map_err(|e| Error::internal(format!("generate RSA key: {e}")))?;
        let pem = rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_pem(&private, rsa::pkcs1::LineEnding::LF)
            .map_err(|e| Error::internal(format!("encode RSA key: {e}")))?;
        write_secret(&self.dir.join(format!("{SET_PREFIX}{kid}.pem")), pem.as_bytes())?;
        let entry = rsa_entry(kid, &private, KeyStatus::Active)?;
        self.entries.write().unwrap_or_else(|p| p.into_inner()).push(entry);
        Ok(kid)
    }

    /// Makes sure there is an active key, generating the first one if needed.
    pub fn ensure_key(&self) -> Result<()> {
        if self.read().iter().any(|e| e.status == KeyStatus::Active) {
            return Ok(());
        }
        let _change = self.change()?;
        self.scan()?;
        if self.read().iter().any(|e| e.status == KeyStatus::Active) {
            return Ok(());
        }
        self.add_key().map(drop)
    }

    /// Retires a key: it signs nothing more and leaves the JWKS. The last active key cannot be
    /// retired.
    pub fn retire(&self, kid: u32) -> Result<()> {
        let _change = self.change()?;
        self.scan()?;
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let active = entries.iter().filter(|e| e.status == KeyStatus::Active).count();
        let entry = entries.iter_mut().find(|e| e.kid == kid).ok_or(Error::NotFound("key"))?;
        if entry.status == KeyStatus::Retired {
            return Ok(());
        }
        if active <= 1 {
            return Err(Error::conflict("cannot retire the only active key: rotate first"));
        }
        fs::write(self.dir.join(format!("{SET_PREFIX}{kid}.retired")), b"retired\n")
            .map_err(|e| Error::internal(format!("mark key retired: {e}")))?;
        entry.status = KeyStatus::Retired;
        Ok(())
    }

    /// Signs `claims` as a compact JWS with the newest active key, header `typ`, `alg: RS256`
    /// and that key's `kid`.
    pub fn sign<T: Serialize>(&self, typ: &str, claims: &T) -> Result<String> {
        self.ensure_key()?;
        let entries = self.read();
        let entry = entries
            .iter()
            .rev()
            .find(|e| e.status == KeyStatus::Active)
            .ok_or_else(|| Error::internal("no active SET signing key"))?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.typ = Some(typ.to_owned());
        header.kid = Some(set_kid(entry.kid));
        jsonwebtoken::encode(&header, claims, &entry.encoding).map_err(|e| Error::internal(format!("sign SET: {e}")))
    }

    /// Whether key `kid` (as in a SET header) is active.
    pub fn is_active(&self, kid: &str) -> bool {
        self.read().iter().any(|e| set_kid(e.kid) == kid && e.status == KeyStatus::Active)
    }

    /// The JWKS (RFC 7517) of the active keys.
    pub fn jwks(&self) -> Result<serde_json::Value> {
        self.ensure_key()?;
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let keys: Vec<serde_json::Value> = self
            .read()
            .iter()
            .filter(|e| e.status == KeyStatus::Active)
            .map(|e| {
                serde_json::json!({
                    "kty": "RSA", "use": "sig", "alg": "RS256", "kid": set_kid(e.kid), "n": b64(&e.n), "e": b64(&e.e),
                })
            })
            .collect();
        Ok(serde_json::json!({ "keys": keys }))
    }

    /// Each key as the audit log records it: (number, status, the JWK modulus `n`).
    pub fn audit_view(&self) -> Vec<(u32, KeyStatus, String)> {
        use base64::Engine;
        self.read()
            .iter()
            .map(|e| (e.kid, e.status, base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&e.n)))
            .collect()
    }

    pub fn keys(&self) -> Vec<SetKeyInfo> {
        self.read().iter().map(|e| SetKeyInfo { kid: set_kid(e.kid), status: e.status }).collect()
    }
}

fn rsa_entry(kid: u32, private: &rsa::RsaPrivateKey, status: KeyStatus) -> Result<RsaEntry> {
    use rsa::traits::PublicKeyParts;
    let der = rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_der(private)
        .map_err(|e| Error::internal(format!("encode RSA key: {e}")))?;
    if private.size() * 8 < SET_KEY_BITS {
        return Err(Error::internal(format!("SET key {kid} is shorter than {SET_KEY_BITS} bits")));
    }
    Ok(RsaEntry {
        kid,
        encoding: jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()),
        n: private.n().to_bytes_be(),
        e: private.e().to_bytes_be(),
        status,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_set_key_is_made_at_first_use_signs_rs256_and_rotates_and_retires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ring = SetKeyRing::open(dir.path()).expect("ring");
        assert!(ring.keys().is_empty(), "no key before first use");
        let jws = ring.sign("secevent+jwt", &serde_json::json!({"jti": "a"})).expect("sign");
        let header = jsonwebtoken::decode_header(&jws).expect("header");
        assert_eq!(
            (header.alg, header.typ.as_deref(), header.kid.as_deref()),
            (jsonwebtoken::Algorithm::RS256, Some("secevent+jwt"), Some("set-1"))
        );
        let mode = fs::metadata(dir.path().join("sets-1.pem")).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let jwks = ring.jwks().expect("jwks");
        let key = &jwks["keys"][0];
        let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
            key["n"].as_str().expect("n"),
            key["e"].as_str().expect("e"),
        )
        .expect("key");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        jsonwebtoken::decode::<serde_json::Value>(&jws, &decoding, &validation).expect("verifies with the JWKS");

        assert!(matches!(ring.retire(1), Err(Error::Conflict(_))));
        assert_eq!(ring.rotate().expect("rotate"), 2);
        // Another process (the CLI) sees both and retires the first.
        let cli = SetKeyRing::open(dir.path()).expect("cli");
        cli.retire(1).expect("retire");
        ring.reload().expect("reload");
        assert!(!ring.is_active("set-1") && ring.is_active("set-2"));
        assert_eq!(ring.jwks().expect("jwks")["keys"].as_array().map(Vec::len), Some(1));
    }
}
