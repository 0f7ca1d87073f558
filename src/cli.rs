//! The `tether` command: dispatch to each subcommand, and those that need no HTTP server (audit,
//! keys, credential mint, console-link).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use tether::domain::{Error, Role, RoleKind};
use tether::tokens::{KeyPurpose, KeyRing};
use tether::{App, Config};

mod args;
mod demo;
mod serve;

use args::{AuditCommand, Cli, ClusterDatabase, Command, CredentialCommand, KeysCommand};
use serve::{lock_data_dir, serve, DATA_DIR_IN_USE};

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tether::install_log_subscriber(colour_logs());
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve { workers: Some(n), .. } = &cli.command {
        builder.worker_threads(usize::from(*n));
    }
    if let Command::Serve { database: Some(_), .. } = &cli.command {
        // A node of several: its lease renewal must not wait behind the requests it vouches for.
        tether::priority::remember_base_priority();
        builder.on_thread_start(tether::priority::lower_this_request_thread);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Colour in log lines only on a terminal, and not when `NO_COLOR` is set (no-color.org): a log
/// file or journal gets plain text.
fn colour_logs() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn purpose(text: &str) -> Result<KeyPurpose, Error> {
    match text {
        "agent" => Ok(KeyPurpose::Agent),
        "api" => Ok(KeyPurpose::Api),
        _ => Err(Error::invalid("--purpose must be `agent`, `api` or `sets`")),
    }
}

async fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Serve {
            data_dir,
            listen,
            public_url,
            tls_ca_file,
            database,
            read_database,
            policy_dir,
            default_session_ttl,
            max_session_depth,
            token_ttl,
            webhooks_allow_private,
            workers: _,
            wait_for_lock,
            token_cache_mib,
        } => {
            let mut config = Config::new(data_dir);
            config.tls_ca_file = tls_ca_file;
            config.webhooks.allow_private_addresses = webhooks_allow_private;
            config.policy_dir = policy_dir;
            config.limits.default_session_ttl_seconds = default_session_ttl;
            config.limits.max_session_depth = max_session_depth;
            config.limits.access_token_ttl_seconds = token_ttl;
            config.token_cache_bytes = token_cache_mib as usize * 1024 * 1024;
            config.database_url = database;
            config.read_database_url = read_database;
            // The lock keeps two processes off one SQLite file. On PostgreSQL nodes share the
            // data directory's keys by design, and the database keeps them consistent.
            let lock = match config.database_url {
                Some(_) => None,
                None => match lock_data_dir(&config.data_dir, Duration::from_secs(wait_for_lock)).await {
                    Ok(lock) => Some(lock),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return Ok(ExitCode::from(DATA_DIR_IN_USE));
                    }
                },
            };
            serve(config, &listen, public_url, lock).await
        }
        // Blocking reads (PostgreSQL's client runs a runtime of its own): off the async workers.
        Command::Audit { command } => tokio::task::spawn_blocking(move || audit(command))
            .await
            .map_err(|e| Error::internal(format!("audit task: {e}")))?,
        Command::Keys { command: KeysCommand::Rotate { data_dir, purpose: p } } if p == "sets" => {
            existing_instance(&data_dir)?;
            let kid = tether::tokens::SetKeyRing::open(&data_dir.join("keys"))?.rotate()?;
            println!(
                "added SET key set-{kid}; a running instance publishes it and signs new SETs with it within a second"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { command: KeysCommand::Retire { kid, data_dir, purpose: p } } if p == "sets" => {
            existing_instance(&data_dir)?;
            tether::tokens::SetKeyRing::open(&data_dir.join("keys"))?.retire(kid)?;
            println!("retired SET key set-{kid}; a running instance drops it from its JWKS within a second");
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { command: KeysCommand::Rotate { data_dir, purpose: p } } => {
            existing_instance(&data_dir)?;
            let ring = KeyRing::load_or_create(&data_dir.join("keys"), purpose(&p)?)?;
            let kid = ring.rotate()?;
            println!(
                "added {p} key {kid}; a running instance picks it up within a second, and signs new tokens with it"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { command: KeysCommand::Retire { kid, data_dir, purpose: p } } => {
            existing_instance(&data_dir)?;
            let ring = KeyRing::load_or_create(&data_dir.join("keys"), purpose(&p)?)?;
            ring.retire(kid)?;
            println!("retired {p} key {kid}; a running instance refuses tokens under it within a second");
            Ok(ExitCode::SUCCESS)
        }
        Command::Credential {
            command: CredentialCommand::Mint { data_dir, cluster, role, platform_id, user_id, label },
        } => {
            let role = RoleKind::parse(&role).ok_or_else(|| {
                Error::invalid("--role must be admin, platform, user, auditor, verifier, provisioner or receiver")
            })?;
            let role = match role {
                RoleKind::Admin => Role::Admin,
                RoleKind::Auditor => Role::Auditor,
                RoleKind::Verifier => Role::Verifier,
                RoleKind::Provisioner => Role::Provisioner,
                RoleKind::Platform => Role::Platform(
                    tether::domain::PlatformId::parse(platform_id.as_deref().unwrap_or_default())
                        .map_err(|e| Error::invalid(format!("--platform-id: {e}")))?,
                ),
                RoleKind::User => Role::User(
                    tether::domain::UserId::parse(user_id.as_deref().unwrap_or_default())
                        .map_err(|e| Error::invalid(format!("--user-id: {e}")))?,
                ),
                // Optionally bound to one platform.
                RoleKind::Receiver => Role::Receiver(
                    platform_id
                        .as_deref()
                        .map(tether::domain::PlatformId::parse)
                        .transpose()
                        .map_err(|e| Error::invalid(format!("--platform-id: {e}")))?,
                ),
            };
            let app = one_shot_app(data_dir, cluster).await?;
            let env = app.services.env.clone();
            let created = app
                .services
                .writer
                .execute(move |tx| {
                    let actor = tether::domain::Actor::new(tether::domain::ActorKind::Admin, "cli");
                    tether::ops::credentials::issue_credential(tx, &env, actor, role, label, None)
                })
                .await?;
            println!("{}", created.secret);
            Ok(ExitCode::SUCCESS)
        }
        Command::ConsoleLink { data_dir, cluster, role, public_url } => {
            let role = match role.as_str() {
                "admin" => tether::store::console::ConsoleRole::Admin,
                "auditor" => tether::store::console::ConsoleRole::Auditor,
                _ => return Err(Error::invalid("--role must be `admin` or `auditor`")),
            };
            let app = one_shot_app(data_dir, cluster).await?;
            let minted = app
                .services
                .writer
                .execute(move |tx| {
                    let actor = tether::domain::Actor::new(tether::domain::ActorKind::Admin, "cli");
                    tether::ops::console::issue_link(tx, actor, role, None)
                })
                .await?;
            let public_url = public_url.unwrap_or_default();
            println!("{}", tether::api::console::link_url(&public_url, &minted.secret));
            eprintln!("opens once, until {}", minted.expires_at.rfc3339());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => demo::run().await.map(|_| ExitCode::SUCCESS),
    }
}

/// Commands that act on an instance (`keys`, `credential mint`) refuse a directory that holds
/// none: a mistyped `--data-dir` would otherwise create a new instance and a key or credential
/// that works nowhere. The nodes of a cluster keep only their keys in the data directory.
fn existing_instance(data_dir: &std::path::Path) -> Result<(), Error> {
    let db = tether::store::database_path(data_dir);
    if db.exists() || data_dir.join("keys").is_dir() {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "no tether instance at {} (no {} and no keys/); start one with `tether serve --data-dir {}` first",
            data_dir.display(),
            db.display(),
            data_dir.display()
        )))
    }
}

/// Opens the instance a one-shot command writes to: the data directory's SQLite database, or
/// the cluster's PostgreSQL database with the data directory's keys. It does not join the
/// cluster: it holds no lease, so no revoker waits for it.
async fn one_shot_app(data_dir: PathBuf, cluster: ClusterDatabase) -> Result<App, Error> {
    let ClusterDatabase { database, tls_ca_file } = cluster;
    match &database {
        None if !tether::store::database_path(&data_dir).exists() => {
            existing_instance(&data_dir)?;
            return Err(Error::invalid(format!(
                "{} holds keys but no database: name the cluster's with --database (TETHER_DATABASE_URL)",
                data_dir.display()
            )));
        }
        None => {}
        Some(_) if !data_dir.join("keys").is_dir() => {
            return Err(Error::invalid(format!(
                "no keys at {}: --data-dir must name the directory the nodes share",
                data_dir.join("keys").display()
            )));
        }
        Some(_) => {}
    }
    let mut config = Config::new(data_dir);
    config.database_url = database;
    config.tls_ca_file = tls_ca_file;
    config.join_cluster = false;
    App::open(&config).await
}

/// `tether audit …`: blocking (reads the database on the calling thread).
fn audit(command: AuditCommand) -> Result<ExitCode, Error> {
    match command {
        AuditCommand::Verify { data_dir, database } => {
            let readers = open_readers(&data_dir, database.as_deref())?;
            let report = readers.read_now(tether::store::audit::verify_audit)?;
            let text = serde_json::to_string_pretty(&report).unwrap_or_default();
            match writeln!(std::io::stdout(), "{text}") {
                // A closed pipe (`| head`) is not a failure of verify: the exit code still says it.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("audit verify could not print its report: {e}");
                    return Ok(ExitCode::FAILURE);
                }
                _ => {}
            }
            if report.ok {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("audit chain broken at seq {}", report.first_broken_seq.unwrap_or_default());
                Ok(ExitCode::from(2))
            }
        }
        AuditCommand::Export { data_dir, database } => {
            let readers = open_readers(&data_dir, database.as_deref())?;
            // Unlocked: a PostgreSQL read may run on a thread of its own (ReadPool::read_now).
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
            let mut failed: Option<std::io::Error> = None;
            readers.read_now(|conn| {
                tether::store::audit::each_stored_record(conn, |record| {
                    let written = serde_json::to_writer(&mut out, &record)
                        .map_err(std::io::Error::from)
                        .and_then(|()| out.write_all(b"\n"));
                    written.map_err(|e| failed = Some(e)).is_ok()
                })
            })?;
            let outcome = match failed {
                Some(e) => Err(e),
                None => out.flush(),
            };
            match outcome {
                Ok(()) => Ok(ExitCode::SUCCESS),
                // A closed pipe (`| head`) ends the export quietly: the reader asked for no more.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
                // Anything else (a full disk) leaves a cut-off export: say so and fail.
                Err(e) => {
                    eprintln!("audit export failed: {e}; the output is incomplete");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// A reader of the data directory's SQLite database, or of the PostgreSQL database at `url`.
/// Blocking (PostgreSQL connects here).
fn open_readers(data_dir: &std::path::Path, url: Option<&str>) -> Result<tether::store::ReadPool, Error> {
    if let Some(url) = url {
        let target = tether::store::postgres::PgTarget::new(url, None)?;
        return tether::store::ReadPool::open(&tether::store::Database::Postgres(target), 1);
    }
    let db = tether::store::database_path(data_dir);
    if !db.exists() {
        return Err(Error::invalid(format!("no tether database at {}", db.display())));
    }
    tether::store::ReadPool::open(&tether::store::Database::Sqlite(db), 1)
}
