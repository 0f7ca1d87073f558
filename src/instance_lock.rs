//! One `tether serve` per data directory: an exclusive lock on `DIR/serve.lock`, held for as
//! long as the process runs and released by the OS when it ends, however it ends.
//!
//! Two processes on one directory would each answer authorize from their own in-memory view,
//! which learns only of that process's writes: a session revoked through one would stay allowed
//! by the other. The lock is `flock(2)` (through `std::fs::File::lock`), so `kill -9` never
//! leaves it behind. The file also names its holder (pid, start time, listen address) so the
//! refusal can say who holds it; that text is a courtesy, the lock is what counts.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "serve.lock";

/// Who holds a data directory, as the holder wrote it into the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// Where it listens, once it does.
    pub listen: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {}", self.pid)?;
        match &self.listen {
            Some(listen) => write!(f, ", listening on {listen}")?,
            None => f.write_str(", not listening yet")?,
        }
        write!(f, ", started {}", self.started_at)
    }
}

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another tether is serving {dir} ({holder}). Two processes on one data directory would each \
         answer from their own view of sessions, so a revocation made through one would not reach \
         the other. Stop it first (SIGTERM lets it finish its requests), or start this one with \
         --wait-for-lock SECONDS to take over as soon as it exits",
        dir = .dir.display(),
        holder = describe(.holder)
    )]
    Held { dir: PathBuf, holder: Option<Holder> },
    #[error(
        "gave up after waiting {waited:?} for {dir} ({holder}) to be released; it is still \
         serving. Stop it (SIGTERM), or wait longer with --wait-for-lock",
        dir = .dir.display(),
        holder = describe(.holder)
    )]
    TimedOut { dir: PathBuf, waited: Duration, holder: Option<Holder> },
    #[error("cannot lock {path}: {source}", path = .path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn describe(holder: &Option<Holder>) -> String {
    match holder {
        Some(holder) => holder.to_string(),
        // Between taking the lock and writing its details, or a file edited by hand.
        None => "its holder has not written its details yet".to_owned(),
    }
}

/// What a waiting [`InstanceLock::acquire_waiting`] reports while it waits.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub dir: PathBuf,
    pub waited: Duration,
    pub limit: Duration,
    pub holder: Option<Holder>,
}

/// The held lock: dropping it (or the process ending) releases the directory.
#[derive(Debug)]
pub struct InstanceLock {
    file: File,
    path: PathBuf,
    holder: Holder,
}

impl InstanceLock {
    /// Takes the lock on `dir` (created, owner only, if missing), or says who holds it.
    pub fn acquire(dir: &Path) -> Result<InstanceLock, LockError> {
        let (file, path) = open(dir)?;
        match file.try_lock() {
            Ok(()) => Self::held(file, path),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(LockError::Held { dir: dir.to_owned(), holder: holder(&file) })
            }
            Err(std::fs::TryLockError::Error(source)) => Err(LockError::Io { path, source }),
        }
    }

    /// Like [`acquire`](Self::acquire), but while another process holds the lock, waits for it
    /// up to `limit`, calling `progress` about every `every`. The lock is taken the moment the
    /// holder releases it (a blocking `flock`, not a poll).
    pub fn acquire_waiting(
        dir: &Path,
        limit: Duration,
        every: Duration,
        mut progress: impl FnMut(&Waiting),
    ) -> Result<InstanceLock, LockError> {
        match Self::acquire(dir) {
            Err(LockError::Held { .. }) => {}
            taken_or_failed => return taken_or_failed,
        }
        let (file, path) = open(dir)?;
        let peek = file.try_clone().map_err(|source| LockError::Io { path: path.clone(), source })?;
        let (sender, taken) = mpsc::channel();
        // A thread blocked in flock cannot be cancelled: on time-out it is left behind, and the
        // process that gave up exits.
        std::thread::Builder::new()
            .name("tether-lock-wait".into())
            .spawn(move || {
                let _ = sender.send(file.lock().map(|()| file));
            })
            .map_err(|source| LockError::Io { path: path.clone(), source })?;
        let start = Instant::now();
        loop {
            let waited = start.elapsed();
            if waited >= limit {
                return Err(LockError::TimedOut { dir: dir.to_owned(), waited, holder: holder(&peek) });
            }
            progress(&Waiting { dir: dir.to_owned(), waited, limit, holder: holder(&peek) });
            match taken.recv_timeout(every.min(limit - waited)) {
                Ok(Ok(file)) => return Self::held(file, path),
                Ok(Err(source)) => return Err(LockError::Io { path, source }),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let source = io::Error::other("the thread waiting for the lock ended");
                    return Err(LockError::Io { path, source });
                }
            }
        }
    }

    fn held(file: File, path: PathBuf) -> Result<InstanceLock, LockError> {
        let holder = Holder {
            pid: std::process::id(),
            started_at: crate::clock::Clock::default().now().rfc3339(),
            listen: None,
        };
        let lock = InstanceLock { file, path, holder };
        lock.write_holder()?;
        Ok(lock)
    }

    /// Records where this process listens, for the message a refused second process prints.
    pub fn set_listening(&mut self, address: &str) -> Result<(), LockError> {
        self.holder.listen = Some(address.to_owned());
        self.write_holder()
    }

    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    fn write_holder(&self) -> Result<(), LockError> {
        let mut text = serde_json::to_vec(&self.holder).unwrap_or_default();
        text.push(b'\n');
        let written = self.file.set_len(0).and_then(|()| self.file.write_all_at(&text, 0));
        written.map_err(|source| LockError::Io { path: self.path.clone(), source })
    }
}

/// Reads who holds `dir`'s lock, whether or not anyone does (the file outlives its holder).
pub fn recorded_holder(dir: &Path) -> Option<Holder> {
    let file = File::open(dir.join(LOCK_FILE)).ok()?;
    holder(&file)
}

fn holder(file: &File) -> Option<Holder> {
    let mut text = vec![0; 1024];
    let read = file.read_at(&mut text, 0).ok()?;
    serde_json::from_slice(text.get(..read)?.trim_ascii()).ok()
}

/// Opens (creating) the lock file, and the data directory with it: owner only, as the directory
/// holds the database, the keys and the first admin credential.
fn open(dir: &Path) -> Result<(File, PathBuf), LockError> {
    let path = dir.join(LOCK_FILE);
    crate::create_private_dir(dir).map_err(|source| LockError::Io { path: dir.to_owned(), source })?;
    // Never truncated on open: the text is the holder's, rewritten only under the lock.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|source| LockError::Io { path: path.clone(), source })?;
    Ok((file, path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = InstanceLock::acquire(dir.path()).unwrap();
        first.set_listening("127.0.0.1:8700").unwrap();

        let refused = InstanceLock::acquire(dir.path()).unwrap_err();

        let LockError::Held { holder: Some(holder), .. } = &refused else { panic!("{refused:?}") };
        assert_eq!(holder, first.holder());
        let message = refused.to_string();
        assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
        assert!(message.contains("listening on 127.0.0.1:8700"), "{message}");
        assert!(message.contains("--wait-for-lock"), "{message}");
    }

    #[test]
    fn dropping_the_lock_releases_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        drop(InstanceLock::acquire(dir.path()).unwrap());
        assert!(InstanceLock::acquire(dir.path()).is_ok());
    }

    #[test]
    fn a_waiting_lock_is_taken_when_the_holder_lets_go_and_reports_progress_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let first = InstanceLock::acquire(dir.path()).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        let mut reports = 0;

        let second =
            InstanceLock::acquire_waiting(dir.path(), Duration::from_secs(60), Duration::from_millis(50), |w| {
                assert_eq!(w.holder.as_ref().map(|h| h.pid), Some(std::process::id()));
                reports += 1;
            });

        releaser.join().unwrap();
        assert!(second.is_ok(), "{second:?}");
        assert!(reports >= 2, "progress was reported while waiting ({reports} reports)");
        assert_eq!(recorded_holder(dir.path()).map(|h| h.listen), Some(None), "the new holder's details");
    }

    #[test]
    fn a_waiting_lock_gives_up_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let _first = InstanceLock::acquire(dir.path()).unwrap();

        let outcome =
            InstanceLock::acquire_waiting(dir.path(), Duration::from_millis(200), Duration::from_millis(50), |_| {});

        assert!(matches!(outcome, Err(LockError::TimedOut { .. })), "{outcome:?}");
    }

    #[test]
    fn the_lock_creates_a_missing_directory_for_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("new");

        let _lock = InstanceLock::acquire(&dir).unwrap();

        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
