//! The read replica (`--read-database`): a pool of connections to a PostgreSQL streaming standby
//! of the primary, for the reads whose staleness is harmless (docs/architecture.md, "Read replica").

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::db::{Database, ReadPool};
use super::postgres::PgTarget;
use crate::domain::{Error, Result};

/// Refuses a read replica without a PostgreSQL primary: on SQLite every read is already local to
/// the one node, and a replica of nothing tether writes to would serve another database's rows.
pub fn check(primary_url: Option<&str>, replica_url: Option<&str>) -> Result<()> {
    match (primary_url, replica_url) {
        (None, Some(_)) => Err(Error::invalid(
            "--read-database needs --database: a read replica is a standby of the PostgreSQL primary",
        )),
        _ => Ok(()),
    }
}

/// Opens `size` connections to the replica at `url`, with the primary's TLS trust (`ca_file`).
/// Blocking (PostgreSQL connects here): not on an async worker. A replica out of reach stops
/// start-up, as the primary does: a mistyped URL shows at once rather than as slow listings.
pub fn open(url: &str, ca_file: Option<&Path>, size: usize) -> Result<ReadPool> {
    // Checked here first so the message names the replica's flag, not the primary's.
    url.parse::<postgres::Config>()
        .map_err(|e| Error::invalid(format!("--read-database: not a PostgreSQL URL: {e}")))?;
    let target = PgTarget::new(url, ca_file)?;
    ReadPool::open(&Database::Postgres(target), size).map_err(|e| match e {
        Error::Unavailable(why) => Error::Unavailable(format!("the read replica (--read-database): {why}")),
        other => other,
    })
}

/// How long listings skip a replica a read found out of reach: a host that does not answer
/// would otherwise cost each listing the connect timeout before it falls back to the primary.
const REST_AFTER_UNREACHABLE: Duration = Duration::from_secs(5);

/// The replica's pool, and when a read last found it out of reach.
pub struct Replica {
    pool: std::sync::Arc<ReadPool>,
    resting_until: Mutex<Option<Instant>>,
}

impl Replica {
    pub fn new(pool: ReadPool) -> Self {
        Replica { pool: std::sync::Arc::new(pool), resting_until: Mutex::new(None) }
    }

    /// The pool, unless a read found the replica out of reach in the last
    /// [`REST_AFTER_UNREACHABLE`].
    pub fn usable(&self) -> Option<&std::sync::Arc<ReadPool>> {
        let resting = self.resting_until.lock().unwrap_or_else(|p| p.into_inner());
        match *resting {
            Some(until) if Instant::now() < until => None,
            _ => Some(&self.pool),
        }
    }

    /// A read found the replica out of reach: the primary answers listings for a while.
    pub fn unreachable(&self) {
        *self.resting_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + REST_AFTER_UNREACHABLE);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn listings_skip_a_replica_a_read_found_out_of_reach_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replica.db");
        crate::store::open_connection(&path, false).unwrap();
        let replica = Replica::new(ReadPool::open(&Database::Sqlite(path), 1).unwrap());
        assert!(replica.usable().is_some(), "a replica is used until a read finds it out of reach");
        replica.unreachable();
        assert!(replica.usable().is_none(), "then the primary answers listings for {REST_AFTER_UNREACHABLE:?}");
    }

    #[test]
    fn a_replica_needs_a_postgresql_primary() {
        let refused = check(None, Some("postgres://r/db")).unwrap_err();
        assert!(refused.to_string().contains("--read-database needs --database"), "{refused}");
        check(Some("postgres://p/db"), Some("postgres://r/db")).unwrap();
        check(Some("postgres://p/db"), None).unwrap();
        check(None, None).unwrap();
    }

    #[test]
    fn a_bad_replica_url_names_the_replica_flag() {
        let Err(refused) = open("postgres://[", None, 1) else { panic!("not a URL") };
        assert!(refused.to_string().starts_with("--read-database: not a PostgreSQL URL"), "{refused}");
    }
}
