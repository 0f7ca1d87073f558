//! The command line's shape: every subcommand, flag and environment variable (clap derives).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use tether::domain::PublicUrl;

fn parse_public_url(text: &str) -> Result<PublicUrl, String> {
    PublicUrl::parse(text)
}

#[derive(Parser)]
#[command(name = "tether", version, about = "Delegated-session governor for AI agents")]
pub(super) struct Cli {
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Subcommand)]
pub(super) enum Command {
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
pub(super) struct ClusterDatabase {
    /// The PostgreSQL database of a cluster (`postgres://…`) instead of the data directory's;
    /// the data directory then names the keys the nodes share.
    #[arg(long, env = "TETHER_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub(super) database: Option<String>,
    /// PEM certificates trusted for TLS to the database besides the Mozilla roots.
    #[arg(long, env = "TETHER_TLS_CA_FILE")]
    pub(super) tls_ca_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(super) enum AuditCommand {
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
pub(super) enum KeysCommand {
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
pub(super) enum CredentialCommand {
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
