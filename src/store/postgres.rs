//! PostgreSQL: connecting (TLS as the URL's `sslmode` asks, verified like every outbound
//! connection), the schema's migrations, and a violated constraint's name in the form the SQLite
//! side reports it (`users.external_id`), so one table maps both onto domain errors.

use std::path::Path;

use super::conn::{Conn, PgConn};
use crate::domain::{Error, Result};

/// Where a PostgreSQL database is and how to reach it.
#[derive(Clone)]
pub struct PgTarget {
    url: String,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.write_str("PgTarget { .. }")
    }
}

impl PgTarget {
    /// `url`: a libpq-style URL (`postgres://user:pass@host:port/db?sslmode=require`).
    /// `ca_file`: PEM certificates trusted besides the Mozilla roots for the database's TLS.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<PgTarget> {
        url.parse::<postgres::Config>()
            .map_err(|e| Error::invalid(format!("--database: not a PostgreSQL URL: {e}")))?;
        let tls = crate::tls::client_config(ca_file).map_err(Error::invalid)?;
        Ok(PgTarget { url: url.to_owned(), tls: tokio_postgres_rustls::MakeRustlsConnect::new(tls) })
    }

    /// A new connection. Blocking: never call it on an async worker thread (the client runs
    /// its own small runtime, which cannot start inside another).
    pub fn connect(&self) -> Result<Conn> {
        let mut config =
            self.url.parse::<tokio_postgres::Config>().map_err(|e| Error::invalid(format!("--database: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        config.application_name("tether");
        // tokio-postgres's errors never echo the configuration, so the password stays out; the
        // causes say why (a refused connection, an unknown certificate).
        let client = super::conn::PgClient::connect(&config, self.tls.clone())
            .map_err(|e| Error::Unavailable(format!("cannot reach the database: {e}")))?;
        Ok(Conn::Postgres(PgConn::new(client)))
    }

    /// A client of the `postgres` crate, for a connection of the cluster's own (a lease, the
    /// leader's lock, a revoker's confirmations), which needs no pipelining.
    pub fn client(&self) -> Result<postgres::Client> {
        let mut config =
            self.url.parse::<postgres::Config>().map_err(|e| Error::invalid(format!("--database: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        config.application_name("tether");
        config
            .connect(self.tls.clone())
            // tokio-postgres's errors never echo the configuration, so the password stays out;
            // the causes say why (a refused connection, an unknown certificate).
            .map_err(|e| {
                Error::Unavailable(format!("cannot reach the database: {}", crate::domain::error::with_causes(&e)))
            })
    }
}

/// The PostgreSQL migrations, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "schema", include_str!("../../migrations/postgres/0001_schema.sql")),
    (
        2,
        "leases_and_revocation_updates",
        include_str!("../../migrations/postgres/0002_leases_and_revocation_updates.sql"),
    ),
    (3, "committed_head", include_str!("../../migrations/postgres/0003_committed_head.sql")),
    (4, "lease_renewal", include_str!("../../migrations/postgres/0004_lease_renewal.sql")),
    (5, "room_for_revocation", include_str!("../../migrations/postgres/0005_room_for_revocation.sql")),
    (
        6,
        "cascade_revocations_leave_actor_and_action_indexes",
        include_str!("../../migrations/postgres/0006_cascade_revocations_leave_actor_and_action_indexes.sql"),
    ),
    (
        7,
        "openings_read_ahead_of_the_chain_lock",
        include_str!("../../migrations/postgres/0007_openings_read_ahead_of_the_chain_lock.sql"),
    ),
    (
        8,
        "a_sessions_chain_is_its_delegations",
        include_str!("../../migrations/postgres/0008_a_sessions_chain_is_its_delegations.sql"),
    ),
];

/// Key of the advisory lock nodes take around migrations and first-start bootstrap, so nodes
/// started together migrate once.
pub const SETUP_LOCK: i64 = 0x7465_7468_6572_0001;

/// Applies the migrations this database lacks, each in its own transaction, under
/// [`SETUP_LOCK`]. A database migrated by a newer tether is refused, as on SQLite.
pub fn migrate(conn: &Conn) -> Result<Vec<i64>> {
    migrate_through(conn, i64::MAX)
}

/// [`migrate`], stopping after version `last`: a test's database as an older tether left it.
pub(crate) fn migrate_through(conn: &Conn, last: i64) -> Result<Vec<i64>> {
    let Conn::Postgres(pg) = conn else { return Err(Error::internal("PostgreSQL migrations on SQLite")) };
    let mut client = pg.client();
    let fail = |e: postgres::Error| Error::internal_from("database", e);
    client.execute("SELECT pg_advisory_lock($1)", &[&SETUP_LOCK]).map_err(fail)?;
    let applied = (|| {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
            )
            .map_err(fail)?;
        let newest: Option<i64> =
            client.query_one("SELECT max(version) FROM schema_migrations", &[]).map_err(fail)?.get(0);
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        if newest.is_some_and(|v| v > known) {
            return Err(Error::internal(format!(
                "the database was migrated by a newer tether (version {}, this one knows {known})",
                newest.unwrap_or_default()
            )));
        }
        let mut applied = Vec::new();
        for (version, name, sql) in MIGRATIONS.iter().filter(|m| newest.is_none_or(|v| m.0 > v) && m.0 <= last) {
            client.batch_execute("BEGIN").map_err(fail)?;
            let migrated = client.batch_execute(sql).and_then(|()| {
                client.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at)
                     VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)",
                    &[version, name],
                )
            });
            match migrated {
                Ok(_) => client.batch_execute("COMMIT").map_err(fail)?,
                Err(e) => {
                    let _ = client.batch_execute("ROLLBACK");
                    return Err(fail(e));
                }
            }
            applied.push(*version);
        }
        Ok(applied)
    })();
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&SETUP_LOCK]).map_err(fail);
    let applied = applied?;
    unlocked?;
    Ok(applied)
}

/// The name of the constraint a failed statement violated, as SQLite reports it: a UNIQUE
/// constraint or index `T_C_key` as `T.C`, a trigger's exception by its message.
pub(super) fn violated_constraint(e: &postgres::Error) -> Option<String> {
    let db = e.as_db_error()?;
    let code = db.code();
    if *code == postgres::error::SqlState::UNIQUE_VIOLATION {
        let table = db.table()?;
        let column = db.constraint()?.strip_prefix(table)?.strip_prefix('_')?.strip_suffix("_key")?;
        Some(format!("{table}.{column}"))
    } else if *code == postgres::error::SqlState::RAISE_EXCEPTION {
        Some(db.message().to_owned())
    } else {
        None
    }
}

/// Whether a failure is the database being out of reach (the connection closed, the server
/// shutting down or refusing connections) rather than a statement's fault: callers get 503.
pub fn is_unreachable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        // Class 08: connection exception; class 57: operator intervention (shutdown, crash).
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || code.starts_with("57")
        }
        // No server error: the client's kind of failure, which it shows only in its message.
        None => {
            let text = e.to_string();
            [
                "error communicating with the server",
                "connection closed",
                "error connecting to server",
                "timeout waiting for server",
            ]
            .iter()
            .any(|kind| text.starts_with(kind))
        }
    }
}
