//! Command-line parsing and the commands that do not need the HTTP server.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use tether::domain::{Error, PublicUrl, Role, RoleKind};
use tether::instance_lock::{InstanceLock, LockError};
use tether::tokens::{KeyPurpose, KeyRing};
use tether::{App, Config};

mod demo;

#[derive(Parser)]
#[command(name = "tether", version, about = "Delegated-session governor for AI agents")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (creates the data directory, keys and first admin credential on first start).
    Serve {
        #[arg(long, default_value = "./tether-data", env = "TETHER_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8700", env = "TETHER_LISTEN")]
        listen: String,
        /// The URL clients reach tether at (behind a proxy, or on another host than the
        /// listening address names): every advertised URL is built from it. Default: the
        /// listening address, as http.
        #[arg(long, env = "TETHER_PUBLIC_URL", value_parser = parse_public_url)]
        public_url: Option<PublicUrl>,
        /// PEM certificates that outbound https (webhooks, Shared Signals pushes, JWKS fetches)
        /// trusts besides the Mozilla roots built into tether: an internal CA.
        #[arg(long, env = "TETHER_TLS_CA_FILE")]
        tls_ca_file: Option<PathBuf>,
        /// A PostgreSQL URL (`postgres://user:password@host:5432/db?sslmode=require`): several
        /// nodes share it (docs/architecture.md, "Running several nodes"). Default: SQLite in
        /// the data directory. The data directory then holds the keys only, which every node
        /// must share.
        #[arg(long, env = "TETHER_DATABASE_URL", hide_env_values = true)]
        database: Option<String>,
        /// A PostgreSQL streaming replica of `--database` (`postgres://…`, same TLS options):
        /// listings may be answered from it, a replay delay old; everything that decides
        /// access or follows a write stays on the primary (docs/architecture.md, "Read replica").
        #[arg(long, env = "TETHER_READ_DATABASE_URL", hide_env_values = true, requires = "database")]
        read_database: Option<String>,
        /// Directory holding agent.datalog (default: the policy built into the binary).
        #[arg(long, env = "TETHER_POLICY_DIR")]
        policy_dir: Option<PathBuf>,
        /// Session lifetime when a request names none, in seconds.
        #[arg(long, default_value_t = 3600)]
        default_session_ttl: i64,
        /// Deepest chain of sub-agent sessions.
        #[arg(long, default_value_t = 4)]
        max_session_depth: i64,
        /// Lifetime of an access token, in seconds (never beyond its session's expiry).
        #[arg(long, default_value_t = 900)]
        token_ttl: i64,
        /// Let webhooks deliver to private, loopback and link-local addresses (refused by default,
        /// so a tenant cannot aim tether at the internal network).
        #[arg(long, env = "TETHER_WEBHOOKS_ALLOW_PRIVATE")]
        webhooks_allow_private: bool,
        /// Threads answering requests (default: one per CPU). Fewer leaves cores to processes
        /// sharing the host, which keeps them from preempting tether mid-request.
        #[arg(long, env = "TETHER_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: Option<u16>,
        /// Memory for verified tokens, in MiB: about 1 KiB per token decided from its claims
        /// (1,000 tokens per MiB), more for tokens a holder attenuated.
        #[arg(long, env = "TETHER_TOKEN_CACHE_MIB", default_value_t = 128,
              value_parser = clap::value_parser!(u32).range(1..=65_536))]
        token_cache_mib: u32,
        /// When another `tether serve` holds the data directory, wait up to this many seconds
        /// for it to exit and take over at once (for deploys: start the new process, then
        /// SIGTERM the old one). Without it, a held directory stops this process.
        #[arg(long, env = "TETHER_WAIT_FOR_LOCK", value_name = "SECONDS", default_value_t = 0,
              value_parser = clap::value_parser!(u64).range(0..=86_400))]
        wait_for_lock: u64,
    },
    /// Read and check the audit log of a (possibly stopped) instance.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Mint API credentials.
    Credential {
        #[command(subcommand)]
        command: CredentialCommand,
    },
    /// Print a single-use console sign-in link (five minutes) for an admin or an auditor.
    ConsoleLink {
        #[arg(long, default_value = "./tether-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        cluster: ClusterDatabase,
        /// `admin` or `auditor`.
        #[arg(long)]
        role: String,
        /// The URL the running tether is reached at (as given to `serve --public-url`).
        #[arg(long, env = "TETHER_PUBLIC_URL", value_parser = parse_public_url)]
        public_url: Option<PublicUrl>,
    },
    /// Walk through the whole story on a throw-away data directory.
    Demo,
}

/// Where a one-shot command finds a cluster's database (by default, the data directory's SQLite).
#[derive(Args)]
struct ClusterDatabase {
    /// The PostgreSQL database of a cluster (`postgres://…`) instead of the data directory's;
    /// the data directory then names the keys the nodes share.
    #[arg(long, env = "TETHER_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    database: Option<String>,
    /// PEM certificates trusted for TLS to the database besides the Mozilla roots.
    #[arg(long, env = "TETHER_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain; exits non-zero naming the first broken seq.
    Verify {
        #[arg(long, default_value = "./tether-data")]
        data_dir: PathBuf,
        /// The PostgreSQL database of a cluster (`postgres://…`) instead of the data directory's.
        #[arg(long, env = "TETHER_DATABASE_URL", value_name = "URL")]
        database: Option<String>,
    },
    /// Print every event as one JSON line, in seq order.
    Export {
        #[arg(long, default_value = "./tether-data")]
        data_dir: PathBuf,
        /// The PostgreSQL database of a cluster (`postgres://…`) instead of the data directory's.
        #[arg(long, env = "TETHER_DATABASE_URL", value_name = "URL")]
        database: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a new signing key (new tokens use it; old tokens stay valid). A running instance picks it up within a second.
    Rotate {
        #[arg(long, default_value = "./tether-data")]
        data_dir: PathBuf,
        /// `agent` (agent tokens), `api` (API credentials) or `sets` (Shared Signals SETs, RSA).
        #[arg(long, default_value = "agent")]
        purpose: String,
    },
    /// Retire a key: every token under it is refused. A running instance picks it up within a second.
    Retire {
        kid: u32,
        #[arg(long, default_value = "./tether-data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "agent")]
        purpose: String,
    },
}

#[derive(Subcommand)]
enum CredentialCommand {
    /// Mint a credential and print it once.
    Mint {
        #[arg(long, default_value = "./tether-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        cluster: ClusterDatabase,
        #[arg(long)]
        role: String,
        #[arg(long)]
        platform_id: Option<String>,
        #[arg(long)]
        user_id: Option<String>,
        #[arg(long)]
        label: Option<String>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tether::install_log_subscriber(colour_logs());
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve { workers: Some(n), .. } = &cli.command {
        builder.worker_threads(usize::from(*n));
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

fn parse_public_url(text: &str) -> Result<PublicUrl, String> {
    PublicUrl::parse(text)
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

/// The exit code of a `serve` that did not get its data directory (another instance holds it).
const DATA_DIR_IN_USE: u8 = 3;

/// Takes the data directory for this process, waiting up to `wait` for a running instance to
/// exit, with progress on stderr.
async fn lock_data_dir(dir: &std::path::Path, wait: Duration) -> Result<InstanceLock, LockError> {
    let dir = dir.to_owned();
    let waiting = move || {
        if wait.is_zero() {
            return InstanceLock::acquire(&dir);
        }
        let mut told = false;
        let lock = InstanceLock::acquire_waiting(&dir, wait, Duration::from_secs(5), |w| {
            let holder = w.holder.as_ref().map_or_else(|| "its holder".to_owned(), |h| h.to_string());
            if told {
                eprintln!("still waiting for {} ({:.0?} of {:.0?})", w.dir.display(), w.waited, w.limit);
            } else {
                eprintln!("waiting up to {:.0?} for {} to be released by {holder}", w.limit, w.dir.display());
                told = true;
            }
        })?;
        if told {
            eprintln!("took over {}", dir.display());
        }
        Ok(lock)
    };
    match tokio::task::spawn_blocking(waiting).await {
        Ok(outcome) => outcome,
        Err(e) => Err(LockError::Io { path: PathBuf::new(), source: std::io::Error::other(e.to_string()) }),
    }
}

async fn serve(
    mut config: Config,
    listen: &str,
    public_url: Option<PublicUrl>,
    mut lock: Option<InstanceLock>,
) -> Result<ExitCode, Error> {
    let locked_at = Instant::now();
    // Bound before the app opens, so the default public URL can name the port the OS picked;
    // connections wait in the backlog until the app serves them.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::invalid(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(Error::internal)?;
    config.public_url = public_url.unwrap_or_else(|| PublicUrl::for_listener(addr));
    let app = App::open(&config).await?;
    if let Some(credential) = &app.first_admin_credential {
        println!("First start: created {} with an admin credential.", config.data_dir.display());
        println!("Admin credential (shown once; also in {}):", config.data_dir.join("admin.credential").display());
        println!("{credential}");
    }
    if let Some(lock) = lock.as_mut() {
        lock.set_listening(&addr.to_string()).map_err(Error::internal)?;
    }
    let ready_ms = locked_at.elapsed().as_millis();
    // On stdout, so scripts that start tether on port 0 can read where it listens.
    println!("tether listening on http://{addr}");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    tracing::info!(%addr, data_dir = %config.data_dir.display(), workers, ready_ms, "tether listening");
    app.serve(listener, shutdown_signal()).await.map_err(Error::internal)?;
    tracing::info!("tether stopped");
    // Held until here: the directory is released only once nothing more is answered or written.
    drop(app);
    drop(lock);
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
