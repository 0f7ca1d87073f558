//! Connections: the pragmas every tether connection uses, the pool of read connections, and how
//! a database fault becomes a domain error.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

use super::conn::{Conn, DbError};

use crate::domain::{Error, Result};

/// The page size of a new database. Twice SQLite's default: a large cascade writes half as many
/// WAL frames and splits half as many B-tree pages, and session creation does not pay for it.
/// Larger pages cost creation more than they save a cascade, and a revocation of scattered
/// sessions writes a whole page per session, so they would make that case write more too
/// (docs/performance.md has the measurements).
pub const PAGE_SIZE: u32 = 8192;

/// Opens a connection with the pragmas every tether connection uses.
pub fn open_connection(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(db_error)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db_error)?;
    // Takes effect only when this connection creates the database; an existing one keeps its
    // page size (changing it means rewriting the file: VACUUM outside WAL mode).
    conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE}")).map_err(db_error)?;
    // WAL lets readers run beside the writer; synchronous=FULL makes an acknowledged commit
    // survive a power cut, not only a crash (group commit pays for the fsync).
    // temp_store=MEMORY keeps savepoint (statement) journals off the disk; a 64 MiB page cache
    // holds the indexes a large cascade walks.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY; PRAGMA cache_size = -65536;",
    )
    .map_err(db_error)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Maps a database fault: a violation of a constraint tether knows by name becomes the error it
/// stands for (a client error, mostly); anything else is internal and keeps the fault as its cause.
pub fn db_error(e: impl Into<DbError>) -> Error {
    let e = match e.into() {
        DbError::WrittenAhead(e) => return *e,
        e => e,
    };
    if let DbError::Postgres(pg) = &e {
        if super::postgres::is_unreachable(pg) {
            UNREACHABLE_SEEN.fetch_add(1, Ordering::AcqRel);
            return Error::Unavailable("the database is unreachable".into());
        }
    }
    let known = match &e {
        DbError::Sqlite(e) => violated_constraint(e)
            .and_then(|(kind, name)| KNOWN_CONSTRAINTS.iter().find(|(k, n, _)| *k == kind && *n == name))
            .map(|(_, _, known)| known),
        DbError::Postgres(e) => super::postgres::violated_constraint(e)
            .and_then(|name| KNOWN_CONSTRAINTS.iter().find(|(_, n, _)| *n == name))
            .map(|(_, _, known)| known),
        DbError::WrittenAhead(_) => None,
    };
    match known {
        Some(known) => known(),
        None => Error::internal_from("database", e),
    }
}

/// The constraints [`db_error`] maps, by kind (SQLite's extended result code) and name: the
/// `table.column` of a UNIQUE constraint, the message a trigger raises.
const KNOWN_CONSTRAINTS: &[KnownConstraint] = &[
    (rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE, "users.external_id", || {
        Error::conflict("a user with this external_id already exists")
    }),
    (rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE, "users.user_name", || {
        Error::conflict("a user with this user_name already exists")
    }),
    (rusqlite::ffi::SQLITE_CONSTRAINT_TRIGGER, "audit_events is append-only", || {
        Error::internal("audit_events is append-only")
    }),
];

/// A constraint's kind, its name, and the error its violation stands for.
type KnownConstraint = (std::ffi::c_int, &'static str, fn() -> Error);

/// The kind and name of the constraint a failed statement violated. SQLite reports the name only
/// inside its message, after a fixed prefix for UNIQUE (`UNIQUE constraint failed: users.external_id`)
/// and as the whole message for a trigger's `RAISE`; the name is taken from there whole, never
/// searched for.
fn violated_constraint(e: &rusqlite::Error) -> Option<(std::ffi::c_int, &str)> {
    let rusqlite::Error::SqliteFailure(failure, Some(message)) = e else { return None };
    let kind = failure.extended_code;
    let name = match kind {
        rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE => message.strip_prefix("UNIQUE constraint failed: ")?,
        rusqlite::ffi::SQLITE_CONSTRAINT_TRIGGER => message.as_str(),
        _ => return None,
    };
    Some((kind, name))
}

/// How many times a statement has found the database unreachable, in this process. A pooled
/// reader connection made before the latest is replaced before its next use: once the server
/// restarts (or fails over), every connection made before is closed, and each would otherwise
/// fail one request to find out. The lease and tail threads, which talk to the database every
/// 250 ms, count an outage before requests meet it.
static UNREACHABLE_SEEN: AtomicU64 = AtomicU64::new(0);

/// A pooled connection, and how many times the database had been found unreachable when it was
/// made ([`UNREACHABLE_SEEN`]).
type Pooled = (Conn, u64);

/// A few read-only connections, handed out round-robin to blocking tasks.
pub struct ReadPool {
    conns: Vec<Mutex<Pooled>>,
    next: AtomicUsize,
    database: Database,
    /// Whole-log reads at once: each holds a connection, its cache and a blocking thread.
    long_reads: tokio::sync::Semaphore,
}

/// How many whole-log reads (verify) may run at once; more wait their turn.
const LONG_READS: usize = 2;

impl ReadPool {
    /// Opens `size` connections. Blocking (PostgreSQL connects here): not on an async worker.
    pub fn open(database: &Database, size: usize) -> Result<Self> {
        let conns = (0..size.max(1))
            .map(|_| Ok(Mutex::new((database.reader()?, UNREACHABLE_SEEN.load(Ordering::Acquire)))))
            .collect::<Result<Vec<_>>>()?;
        Ok(ReadPool {
            conns,
            next: AtomicUsize::new(0),
            database: database.clone(),
            long_reads: tokio::sync::Semaphore::new(LONG_READS),
        })
    }

    /// Runs a read on a connection of its own, opened for it and closed after, on the calling
    /// thread: for a read whose pace a client sets (an export streamed to a slow reader), which
    /// must never hold a pooled connection that every other request may be waiting for.
    pub fn read_own<T>(&self, f: impl FnOnce(&Conn) -> Result<T>) -> Result<T> {
        let conn = self.database.reader()?;
        f(&conn)
    }

    /// Runs a read that walks the whole audit log (verify) on a connection of its own, on a
    /// blocking thread: seconds on a large log, which would stall every request queued behind
    /// the pooled connection it drew.
    pub async fn read_long<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T> + Send + 'static,
    {
        let _turn = self.long_reads.acquire().await.map_err(|_| Error::internal("read pool closed"))?;
        self.blocking(move |pool| pool.read_own(f)).await
    }

    /// Runs a read on a pooled connection, on a blocking thread.
    pub async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Conn) -> Result<T> + Send + 'static,
    {
        self.blocking(move |pool| pool.read_here(f)).await
    }

    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&ReadPool) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&pool)).await.map_err(|e| Error::internal(format!("read task: {e}")))?
    }

    /// Runs a read now, blocking the caller (for CLI commands and start-up). PostgreSQL's client
    /// blocks on a runtime of its own, which cannot start on an async worker: where a tokio
    /// runtime is current (start-up runs on one) the read runs on a thread of its own, waited for.
    pub fn read_now<T: Send>(&self, f: impl FnOnce(&Conn) -> Result<T> + Send) -> Result<T> {
        if matches!(self.database, Database::Postgres(_)) && tokio::runtime::Handle::try_current().is_ok() {
            return std::thread::scope(|s| {
                s.spawn(|| self.read_here(f)).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
        }
        self.read_here(f)
    }

    /// Runs a read on a pooled connection, on the calling thread.
    fn read_here<T>(&self, f: impl FnOnce(&Conn) -> Result<T>) -> Result<T> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        let mut pooled = self.conns[i].lock().map_err(|_| Error::internal("read connection poisoned"))?;
        // A PostgreSQL connection the server closed (a restart, a failover), or made before the
        // database was last found unreachable, is replaced.
        let seen = UNREACHABLE_SEEN.load(Ordering::Acquire);
        let (conn, made_at) = &*pooled;
        if conn.postgres().is_some_and(|pg| pg.is_closed() || *made_at < seen) {
            *pooled = (self.database.reader()?, seen);
        }
        f(&pooled.0)
    }
}

/// The database tether runs on: a SQLite file (one node) or PostgreSQL (several).
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(super::postgres::PgTarget),
}

impl Database {
    /// A connection for reads (read-only on SQLite).
    pub fn reader(&self) -> Result<Conn> {
        match self {
            Database::Sqlite(path) => open_connection(path, true).map(Conn::Sqlite),
            Database::Postgres(target) => target.connect(),
        }
    }

    /// The writer's connection.
    pub fn writer(&self) -> Result<Conn> {
        match self {
            Database::Sqlite(path) => open_connection(path, false).map(Conn::Sqlite),
            Database::Postgres(target) => {
                let conn = target.connect()?;
                // This connection's batches set the committed head themselves (migration 0003).
                conn.execute_batch("SET tether.keeps_head = on").map_err(db_error)?;
                Ok(conn)
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Database::Postgres(_))
    }
}

/// The database file inside a data directory.
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tether.db")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::store::migrate;

    fn page_size(conn: &Connection) -> u32 {
        conn.query_row("PRAGMA page_size", rusqlite::params![], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_new_database_gets_the_page_size_and_an_existing_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.db");
        let mut conn = open_connection(&fresh, false).unwrap();
        migrate::run(&mut conn).unwrap();
        assert_eq!(page_size(&conn), PAGE_SIZE);

        let older = dir.path().join("older.db");
        let made_before = Connection::open(&older).unwrap();
        made_before.execute_batch("PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; CREATE TABLE t (x);").unwrap();
        drop(made_before);
        let mut conn = open_connection(&older, false).unwrap();
        migrate::run(&mut conn).unwrap();
        assert_eq!(page_size(&conn), 4096, "an existing database is not rewritten");
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
        assert_eq!(page_size(&open_connection(&older, true).unwrap()), 4096);
    }

    #[test]
    fn a_known_constraint_maps_by_kind_and_name_and_anything_else_keeps_its_cause() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate::run(&mut conn).unwrap();
        let user = |id: &str, external: &str| {
            conn.execute(
                "INSERT INTO users (id, external_id, permissions, status, created_at) VALUES (?1, ?2, '[]', 'active', 0)",
                [id, external],
            )
            .map_err(db_error)
        };
        user("usr_1", "alice").unwrap();
        assert!(matches!(user("usr_2", "alice"), Err(Error::Conflict(_))), "the external_id's UNIQUE constraint");
        // The primary key is another constraint: a fault, not the client's conflict.
        let Err(Error::Internal(fault)) = user("usr_1", "bob") else { panic!("a primary key violation is internal") };
        assert!(fault.cause().is_some(), "the database error is kept: {fault}");
        assert_eq!(
            fault.to_string(),
            "database: UNIQUE constraint failed: users.id: Error code 1555: A PRIMARY KEY constraint failed",
            "the log shows the whole chain"
        );

        conn.execute(
            "INSERT INTO audit_events (seq, id, at, actor_kind, actor_id, action, subject_kind, subject_id, details, prev_hash, hash)
             VALUES (1, 'e', 0, 'system', 's', 'a', 'k', 'i', '{}', 'p', 'h')",
            [],
        )
        .unwrap();
        let refused = conn.execute("DELETE FROM audit_events", []).map_err(db_error).unwrap_err();
        assert_eq!(refused.to_string(), "internal error: audit_events is append-only");
    }
}
