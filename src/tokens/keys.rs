//! Key rings: Ed25519 (agent tokens, API credentials) and RSA (Shared Signals SETs), private keys
//! in files under the data directory (mode 0600), by key id.

mod sets;

pub use sets::{set_kid, SetKeyInfo, SetKeyRing, SET_KEY_BITS};

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
}
