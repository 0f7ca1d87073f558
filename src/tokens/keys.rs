//! Key rings: Ed25519 (agent tokens, API credentials) and RSA (Shared Signals SETs), private keys
//! in files under the data directory (mode 0600), by key id.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use biscuit_auth::{Algorithm, KeyPair, PrivateKey, PublicKey};
use serde::Serialize;

use crate::domain::{Error, Result};

/// What a ring signs: agent capability tokens or the governor's own API credentials.
/// Separate roots, so that one is never accepted as the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPurpose {
    Agent,
    Api,
}

impl KeyPurpose {
    fn file_prefix(self) -> &'static str {
        match self {
            KeyPurpose::Agent => "agent",
            KeyPurpose::Api => "api",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Signs new tokens (the newest active key) and verifies.
    Active,
    /// Verifies nothing: every token under it is refused.
    Retired,
}

struct Entry {
    kid: u32,
    keypair: KeyPair,
    status: KeyStatus,
}

/// The keys of one purpose. The newest active key signs; every active key verifies.
pub struct KeyRing {
    purpose: KeyPurpose,
    dir: PathBuf,
    entries: RwLock<Vec<Entry>>,
    /// Held by every change (reload, rotate, retire) from its first file access to its last, so
    /// a reload's scan of the files cannot overwrite a rotation or retirement made meanwhile.
    /// Readers never take it: they only see `entries` swapped or updated under its own lock.
    changes: std::sync::Mutex<()>,
}

/// A change in progress: this process's lock, and an advisory lock on `DIR/.lock` that every
/// tether process on the directory takes (the service and `tether keys …`), so two processes
/// cannot both retire "the other" active key or pick the same new key id.
struct Changing<'a> {
    _here: std::sync::MutexGuard<'a, ()>,
    _everywhere: fs::File,
}

impl<'a> Changing<'a> {
    /// Takes `here` (this process) and then the lock on `dir/.lock` (every process).
    fn begin(here: &'a std::sync::Mutex<()>, dir: &Path) -> Result<Changing<'a>> {
        let here = here.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let path = dir.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::internal(format!("open {}: {e}", path.display())))?;
        file.lock().map_err(|e| Error::internal(format!("lock {}: {e}", path.display())))?;
        Ok(Changing { _here: here, _everywhere: file })
    }
}

/// A public view of one key.
#[derive(Debug, Clone, Serialize)]
pub struct PublicKeyInfo {
    pub kid: u32,
    pub public_key: String,
    pub status: KeyStatus,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("KeyRing").field("purpose", &self.purpose).finish_non_exhaustive()
    }
}

fn key_path(dir: &Path, purpose: KeyPurpose, kid: u32) -> PathBuf {
    dir.join(format!("{}-{kid}.key", purpose.file_prefix()))
}

fn retired_marker(dir: &Path, purpose: KeyPurpose, kid: u32) -> PathBuf {
    dir.join(format!("{}-{kid}.retired", purpose.file_prefix()))
}

fn write_secret(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::internal(format!("create {}: {e}", path.display())))?;
    file.write_all(contents)
        .and_then(|_| file.sync_all())
        .map_err(|e| Error::internal(format!("write {}: {e}", path.display())))?;
    Ok(())
}

impl KeyRing {
    /// Loads every key of `purpose` from `dir`, creating the first one if there is none.
    pub fn load_or_create(dir: &Path, purpose: KeyPurpose) -> Result<KeyRing> {
        fs::create_dir_all(dir).map_err(|e| Error::internal(format!("create {}: {e}", dir.display())))?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        let ring = KeyRing {
            purpose,
            dir: dir.to_owned(),
            entries: RwLock::new(Vec::new()),
            changes: std::sync::Mutex::new(()),
        };
        ring.reload()?;
        if ring.read().is_empty() {
            ring.rotate()?;
        }
        Ok(ring)
    }

    fn change(&self) -> Result<Changing<'_>> {
        Changing::begin(&self.changes, &self.dir)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Entry>> {
        self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Re-reads the key files (a running instance does so every second, so `tether keys …` run beside
    /// it takes effect at once).
    pub fn reload(&self) -> Result<()> {
        let _change = self.change()?;
        self.scan()
    }

    /// Reads the key files into `entries`; the caller holds the change lock.
    fn scan(&self) -> Result<()> {
        let prefix = format!("{}-", self.purpose.file_prefix());
        let mut entries = Vec::new();
        let listing =
            fs::read_dir(&self.dir).map_err(|e| Error::internal(format!("read {}: {e}", self.dir.display())))?;
        for item in listing.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let Some(kid) =
                name.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".key")).and_then(|k| k.parse::<u32>().ok())
            else {
                continue;
            };
            let text = fs::read_to_string(item.path()).map_err(|e| Error::internal(format!("read key {name}: {e}")))?;
            let private = PrivateKey::from_bytes_hex(text.trim(), Algorithm::Ed25519)
                .map_err(|_| Error::internal(format!("key file {name} is not an Ed25519 private key in hex")))?;
            let status = if retired_marker(&self.dir, self.purpose, kid).exists() {
                KeyStatus::Retired
            } else {
                KeyStatus::Active
            };
            entries.push(Entry { kid, keypair: KeyPair::from(&private), status });
        }
        entries.sort_by_key(|e| e.kid);
        *self.entries.write().unwrap_or_else(|p| p.into_inner()) = entries;
        Ok(())
    }

    /// Adds a new signing key with the next key id; older keys keep verifying.
    pub fn rotate(&self) -> Result<u32> {
        let _change = self.change()?;
        self.scan()?;
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let kid = entries.iter().map(|e| e.kid).max().unwrap_or(0) + 1;
        let keypair = KeyPair::new_with_algorithm(Algorithm::Ed25519);
        write_secret(&key_path(&self.dir, self.purpose, kid), keypair.private().to_bytes_hex().as_bytes())?;
        entries.push(Entry { kid, keypair, status: KeyStatus::Active });
        Ok(kid)
    }

    /// Retires a key: every token under it stops verifying. The last active key cannot be retired.
    pub fn retire(&self, kid: u32) -> Result<()> {
        let _change = self.change()?;
        // Another process may have retired a key since this one last looked.
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
        fs::write(retired_marker(&self.dir, self.purpose, kid), b"retired\n")
            .map_err(|e| Error::internal(format!("mark key retired: {e}")))?;
        entry.status = KeyStatus::Retired;
        Ok(())
    }

    /// The key id and keypair that sign new tokens.
    pub fn with_signing_key<T>(&self, f: impl FnOnce(u32, &KeyPair) -> T) -> Result<T> {
        let entries = self.read();
        let entry = entries
            .iter()
            .rev()
            .find(|e| e.status == KeyStatus::Active)
            .ok_or_else(|| Error::internal("no active signing key"))?;
        Ok(f(entry.kid, &entry.keypair))
    }

    pub fn is_active(&self, kid: u32) -> bool {
        self.read().iter().any(|e| e.kid == kid && e.status == KeyStatus::Active)
    }

    /// Signs `data` with the newest active key: (kid, Ed25519 signature).
    pub fn sign(&self, data: &[u8]) -> Result<(u32, Vec<u8>)> {
        self.with_signing_key(|kid, keypair| keypair.sign(data).map(|s| (kid, s.to_bytes().to_vec())))?
            .map_err(|e| Error::internal(format!("sign: {e}")))
    }

    /// Whether `signature` over `data` was made by key `kid` of this ring (retired keys included:
    /// a checkpoint signed before a rotation stays verifiable).
    pub fn verify_signature(&self, kid: u32, data: &[u8], signature: &[u8]) -> bool {
        let entries = self.read();
        let Some(entry) = entries.iter().find(|e| e.kid == kid) else { return false };
        // Ed25519 signing is deterministic (RFC 8032) and we hold the private key, so re-signing
        // and comparing is a verification (biscuit does not export its signature type). The
        // comparison takes the same time wherever the bytes differ: an early exit would tell a
        // caller how much of a guessed signature is right, byte by byte.
        use subtle::ConstantTimeEq;
        entry.keypair.sign(data).is_ok_and(|s| bool::from(s.to_bytes()[..].ct_eq(signature)))
    }

    pub fn public_keys(&self) -> Vec<PublicKeyInfo> {
        self.read()
            .iter()
            .map(|e| PublicKeyInfo { kid: e.kid, public_key: e.keypair.public().to_bytes_hex(), status: e.status })
            .collect()
    }
}

impl biscuit_auth::RootKeyProvider for &KeyRing {
    fn choose(&self, key_id: Option<u32>) -> std::result::Result<PublicKey, biscuit_auth::error::Format> {
        let entries = self.read();
        key_id
            .and_then(|kid| entries.iter().find(|e| e.kid == kid && e.status == KeyStatus::Active))
            .map(|e| e.keypair.public())
            .ok_or(biscuit_auth::error::Format::UnknownPublicKey)
    }
}

/// A 32-byte secret kept in `dir/name` (hex, mode 0600), created on first use. Used as the
/// webhook master key, from which each webhook's signing secret is derived.
pub fn load_or_create_secret(dir: &Path, name: &str) -> Result<[u8; 32]> {
    let path = dir.join(name);
    if !path.exists() {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        write_secret(&path, hex::encode(bytes).as_bytes())?;
    }
    let text = fs::read_to_string(&path).map_err(|e| Error::internal(format!("read {}: {e}", path.display())))?;
    let bytes = hex::decode(text.trim()).map_err(|_| Error::internal(format!("{} is not hex", path.display())))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| Error::internal(format!("{} is not 32 bytes", path.display())))
}

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
    use super::*;

    #[test]
    fn two_processes_changing_the_same_keys_never_leave_none_active_or_clash_on_an_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = KeyRing::load_or_create(dir.path(), KeyPurpose::Api).expect("ring");
        service.rotate().expect("second key");
        // The CLI opens the same directory while the service holds its own view.
        let cli = KeyRing::load_or_create(dir.path(), KeyPurpose::Api).expect("cli ring");
        service.retire(1).expect("retire 1");
        let refused = cli.retire(2);
        assert!(matches!(refused, Err(Error::Conflict(_))), "the last active key was retired: {refused:?}");
        assert!(cli.is_active(2));

        let (a, b) = (service.rotate().expect("rotate"), cli.rotate().expect("rotate again"));
        assert_ne!(a, b, "two processes picked the same key id");
    }

    #[test]
    fn a_reload_running_beside_rotations_and_retirements_never_undoes_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ring = std::sync::Arc::new(KeyRing::load_or_create(dir.path(), KeyPurpose::Api).expect("ring"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reloader = {
            let (ring, stop) = (ring.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    ring.reload().expect("reload");
                    // Back to back, but leaving the lock free now and then, as the 1 s reload does.
                    std::thread::sleep(std::time::Duration::from_micros(10));
                }
            })
        };
        let mut previous = 1;
        for _ in 0..200 {
            let kid = ring.rotate().expect("rotate");
            ring.retire(previous).expect("retire");
            for _ in 0..20 {
                assert!(ring.is_active(kid), "key {kid} vanished after rotate returned");
                assert!(!ring.is_active(previous), "key {previous} came back after retire returned");
            }
            previous = kid;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reloader.join().expect("reloader");
    }

    #[test]
    fn a_new_ring_creates_a_private_key_file_readable_only_by_its_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ring = KeyRing::load_or_create(dir.path(), KeyPurpose::Agent).expect("ring");
        let mode = fs::metadata(dir.path().join("agent-1.key")).expect("key file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(ring.is_active(1));
    }

    #[test]
    fn reloading_finds_the_same_keys_and_statuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ring = KeyRing::load_or_create(dir.path(), KeyPurpose::Api).expect("ring");
        ring.rotate().expect("rotate");
        ring.retire(1).expect("retire");
        let again = KeyRing::load_or_create(dir.path(), KeyPurpose::Api).expect("reload");
        let keys = again.public_keys();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].status, KeyStatus::Retired);
        assert_eq!(keys[1].status, KeyStatus::Active);
        assert_eq!(keys[0].public_key, ring.public_keys()[0].public_key);
    }

    #[test]
    fn the_only_active_key_cannot_be_retired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ring = KeyRing::load_or_create(dir.path(), KeyPurpose::Agent).expect("ring");
        assert!(matches!(ring.retire(1), Err(Error::Conflict(_))));
    }

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
