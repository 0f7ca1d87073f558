//! The application: opens a data directory into an [`App`], serves its router, runs its workers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::cluster::{self, Cluster};
use crate::domain::{self, Actor, Error, PublicUrl, Result, Role};
use crate::events::webhooks::{Deliverer, DeliveryPolicy};
use crate::last_seen::LastSeen;
use crate::ops::{self, Env, Limits};
use crate::store::writer::EffectSink;
use crate::store::{self, Database, ReadPool, Writer};
use crate::tokens::{self, KeyPurpose, KeyRing, Policy};
use crate::views::{self, CredentialState, LiveSession, Views};
use crate::{api, authorize, events, metrics, server};

/// How to run tether.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// A directory holding `agent.datalog`; the shipped policy when absent.
    pub policy_dir: Option<PathBuf>,
    pub limits: Limits,
    pub read_connections: usize,
    /// Memory bound of the verified-token cache, in bytes.
    pub token_cache_bytes: usize,
    pub webhooks: events::webhooks::DeliveryPolicy,
    pub http: server::HttpTimeouts,
    /// Where clients reach tether (`--public-url`; by default the listening address).
    pub public_url: PublicUrl,
    /// PEM certificates outbound https trusts besides the Mozilla roots (`--tls-ca-file`).
    pub tls_ca_file: Option<PathBuf>,
    /// A PostgreSQL URL (`--database`): several nodes share it. Absent: SQLite in the data dir.
    pub database_url: Option<String>,
    /// On PostgreSQL, whether this process joins the cluster as a node (leases, tailing,
    /// confirming revocations). `serve` does; a one-shot command (`tether credential mint
    /// --database`) only writes and leaves, so it must not hold a lease revokers would wait for.
    pub join_cluster: bool,
    /// A PostgreSQL streaming replica of `database_url` (`--read-database`) for listings.
    pub read_database_url: Option<String>,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            policy_dir: None,
            limits: Limits::default(),
            read_connections: 4,
            token_cache_bytes: authorize::DEFAULT_TOKEN_CACHE_BYTES,
            webhooks: Default::default(),
            http: Default::default(),
            public_url: PublicUrl::default(),
            tls_ca_file: None,
            database_url: None,
            join_cluster: true,
            read_database_url: None,
        }
    }
}

/// The parts of an opened tether, shared by the request handlers ([`api::Context`]) and the
/// background workers; each is handed only what it uses.
pub struct Services {
    pub writer: Writer,
    pub readers: Arc<ReadPool>,
    pub views: Arc<Views>,
    pub env: Arc<Env>,
    pub clock: Arc<Clock>,
    pub last_seen: Arc<LastSeen>,
    pub delivery: DeliveryPolicy,
    /// The client of webhook deliveries, Shared Signals pushes and JWKS fetches.
    pub outbound: events::outbound::Outbound,
    /// What request handlers reach: the router's state.
    pub api: Arc<api::Context>,
}

/// An opened tether: database migrated, keys loaded, views filled.
pub struct App {
    pub services: Arc<Services>,
    http: server::HttpTimeouts,
    /// The first admin credential, present only on the start that created the data directory.
    pub first_admin_credential: Option<String>,
}

impl App {
    pub async fn open(config: &Config) -> Result<App> {
        Self::open_with_clock(config, Arc::new(Clock::default())).await
    }

    pub async fn open_with_clock(config: &Config, clock: Arc<Clock>) -> Result<App> {
        // A replica without a primary is a configuration error: refused before anything is created.
        store::replica::check(config.database_url.as_deref(), config.read_database_url.as_deref())?;
        // The policy first: a bad policy stops start-up before anything is created.
        let policy = match &config.policy_dir {
            Some(dir) => Policy::load_dir(dir)?,
            None => Policy::parse(tokens::policy::DEFAULT_AGENT_POLICY, "(built in) policies/agent.datalog")?,
        };
        create_private_dir(&config.data_dir)
            .map_err(|e| Error::internal(format!("create data dir {}: {e}", config.data_dir.display())))?;
        let keys_dir = config.data_dir.join("keys");
        let agent_keys = Arc::new(KeyRing::load_or_create(&keys_dir, KeyPurpose::Agent)?);
        let api_keys = Arc::new(KeyRing::load_or_create(&keys_dir, KeyPurpose::Api)?);
        let set_keys = Arc::new(tokens::SetKeyRing::open(&keys_dir)?);
        let database = match &config.database_url {
            None => {
                let db = store::database_path(&config.data_dir);
                if !db.exists() {
                    // An empty file is a new database to SQLite; created first with mode 0600, it
                    // passes that mode on to the WAL and shared-memory files SQLite creates beside it.
                    write_private_file(&db, b"")?;
                }
                Database::Sqlite(db)
            }
            Some(url) => Database::Postgres(store::postgres::PgTarget::new(url, config.tls_ca_file.as_deref())?),
        };
        let views = Arc::new(Views::default());
        let webhook_master = tokens::keys::load_or_create_secret(&keys_dir, "webhook.key")?;
        let env = Arc::new(Env { agent_keys: agent_keys.clone(), api_keys, limits: config.limits, webhook_master });
        // Blocking: the PostgreSQL client connects and runs on threads of its own making. On a
        // thread of its own rather than the runtime's blocking pool, whose threads answer
        // requests at a lower priority: the writer, tailer, lease and confirmation threads
        // started here inherit its priority (src/priority.rs).
        let (writer, readers, cluster) = {
            let (views, clock, read_connections) = (views.clone(), clock.clone(), config.read_connections);
            let address = config.public_url.to_string();
            let join_cluster = config.join_cluster;
            on_start_up_thread(move || -> Result<(Writer, Arc<ReadPool>, Option<Arc<Cluster>>)> {
                // The node's standing, once it has joined: its writer's batches are recorded there
                // as applied, so its tailer does not read them again.
                let joined = Arc::new(std::sync::OnceLock::new());
                // On a cluster node the tailer publishes committed events, every node's alike.
                let sink: Arc<dyn EffectSink> = match &database {
                    Database::Sqlite(_) => views.clone(),
                    Database::Postgres(_) => {
                        Arc::new(cluster::LocalEffects { views: views.clone(), node: joined.clone() })
                    }
                };
                let writer = Writer::start_on(&database, clock.clone(), sink)?;
                let readers = Arc::new(ReadPool::open(&database, read_connections)?);
                // The head first: whatever commits after it is applied again by the tailer, which
                // is harmless (revocation is terminal), and nothing before it is missed.
                let head = readers.read_now(store::audit::chain_head)?.0;
                load_views(&readers, &views, clock.now())?;
                let cluster = match &database {
                    Database::Sqlite(_) => None,
                    Database::Postgres(_) if !join_cluster => None,
                    Database::Postgres(target) => {
                        let cluster = Arc::new(Cluster::join(target, head, address, views.clone())?);
                        let _ = joined.set(cluster.state.clone());
                        let confirmer = cluster.confirmer.clone();
                        writer.confirm_revocations_with(Arc::new(move |seq| confirmer.confirm(seq)));
                        Some(cluster)
                    }
                };
                Ok((writer, readers, cluster))
            })
            .await?
        };
        for (purpose, ring) in [(KeyPurpose::Agent, &agent_keys), (KeyPurpose::Api, &env.api_keys)] {
            let keys = ring.public_keys();
            writer.execute(move |tx| ops::keys::sync(tx, Actor::system(), purpose, &keys)).await?;
        }
        let replica = match config.read_database_url.clone() {
            None => None,
            Some(url) => {
                let (ca, size) = (config.tls_ca_file.clone(), config.read_connections);
                let open = move || {
                    store::replica::open(&url, ca.as_deref(), size)
                        .map(|pool| Arc::new(store::replica::Replica::new(pool)))
                };
                Some(tokio::task::spawn_blocking(open).await.map_err(|e| Error::internal(format!("replica: {e}")))??)
            }
        };
        let first_admin_credential = bootstrap_admin(&config.data_dir, &readers, &writer, &env).await?;

        let authorizer =
            authorize::Authorizer::new(agent_keys, policy, views.clone(), clock.clone(), config.token_cache_bytes);
        let outbound =
            events::outbound::Outbound::new(config.webhooks.allow_private_addresses, config.tls_ca_file.as_deref())
                .map_err(Error::invalid)?;
        let last_seen = Arc::new(LastSeen::default());
        let api = api::Context {
            writer: writer.clone(),
            readers: readers.clone(),
            replica,
            views: views.clone(),
            authorizer,
            env: env.clone(),
            clock: clock.clone(),
            metrics: metrics::Metrics::default(),
            last_seen: last_seen.clone(),
            allow_private_webhook_urls: config.webhooks.allow_private_addresses,
            signal_keys: crate::signals::jwks::KeyCache::new(&outbound),
            credential_cache: views::Sharded::new(16),
            denials: authorize::DenialLog::default(),
            closing: tokio::sync::watch::channel(false).0,
            public_url: config.public_url.clone(),
            set_keys,
            ssf_tokens: api::oauth_token::AccessTokens::new(&env.webhook_master),
            cluster,
            delegation_links: Default::default(),
        };
        let services = Services {
            writer,
            readers,
            views,
            env,
            clock,
            last_seen,
            delivery: config.webhooks,
            outbound,
            api: Arc::new(api),
        };
        Ok(App { services: Arc::new(services), http: config.http, first_admin_credential })
    }

    pub fn router(&self) -> axum::Router {
        api::router(self.services.api.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then drains requests and flushes
    /// last-seen updates.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let workers = self.start_workers();
        let api = self.services.api.clone();
        server::run(listener, self.router(), self.http, shutdown, move || {
            api.closing.send_replace(true);
        })
        .await;
        workers.stop().await;
        if let Some(cluster) = self.services.api.cluster.clone() {
            // Deletes this node's lease row: revokers stop waiting for it at once.
            let _ = tokio::task::spawn_blocking(move || cluster.leave()).await;
        }
        Ok(())
    }

    /// Starts the background work of a running instance: last-seen flushes, key-file sync and
    /// expiry purges, and webhook delivery. `serve` does this; tests driving the router in-process
    /// call it themselves.
    pub fn start_workers(&self) -> Workers {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let flusher = {
            let last_seen = self.services.last_seen.clone();
            let writer = self.services.writer.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(last_seen.run(writer, Duration::from_secs(1), async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        };
        let maintenance = {
            let services = self.services.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let mut ticks: u64 = 0;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                    ticks += 1;
                    // Key files changed by `tether keys …` take effect within a second.
                    if let Err(e) = services.sync_keys().await {
                        tracing::warn!(error = %e, "key sync failed");
                    }
                    if ticks.is_multiple_of(60) {
                        services.purge_expired().await;
                    }
                }
            })
        };
        let outgoing = match self.services.api.cluster.as_ref().map(|c| c.leading.clone()) {
            None => tokio::spawn(send_outgoing(self.services.clone(), stop_rx)),
            // Several nodes: only the one holding the background-work lock sends.
            Some(leading) => tokio::spawn(send_outgoing_while_leading(self.services.clone(), leading, stop_rx)),
        };
        Workers { stop, tasks: vec![flusher, maintenance, outgoing] }
    }
}

/// Webhook deliveries and Shared Signals pushes, until `stop`.
async fn send_outgoing(services: Arc<Services>, stop: tokio::sync::watch::Receiver<bool>) {
    let deliverer = Deliverer {
        writer: services.writer.clone(),
        readers: services.readers.clone(),
        outbox: services.views.outbox.clone(),
        clock: services.clock.clone(),
        webhook_master: services.env.webhook_master,
    };
    let client = services.outbound.client.clone();
    let deliveries = tokio::spawn(events::webhooks::run(deliverer, services.delivery, client, stop.clone()));
    let pusher = crate::ssf::push::Pusher {
        writer: services.writer.clone(),
        readers: services.readers.clone(),
        clock: services.clock.clone(),
        keys: services.api.set_keys.clone(),
        public_url: services.api.public_url.clone(),
        master: services.env.webhook_master,
        queued: services.views.sets.clone(),
    };
    let pushes = tokio::spawn(crate::ssf::push::run(pusher, services.delivery, services.outbound.client.clone(), stop));
    let _ = deliveries.await;
    let _ = pushes.await;
}

/// [`send_outgoing`] while this node holds the background-work lock (`cluster::leader`): started
/// when it takes the lock, stopped when it loses it, so one node sends at a time.
async fn send_outgoing_while_leading(
    services: Arc<Services>,
    leading: Arc<std::sync::atomic::AtomicBool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let is_leading = || leading.load(std::sync::atomic::Ordering::Acquire);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        while !is_leading() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        let (stop_sending, sending_stop) = tokio::sync::watch::channel(false);
        let sending = tokio::spawn(send_outgoing(services.clone(), sending_stop));
        let stopping = loop {
            tokio::select! {
                _ = tick.tick() => if !is_leading() { break false },
                _ = stop.wait_for(|s| *s) => break true,
            }
        };
        let _ = stop_sending.send(true);
        let _ = sending.await;
        if stopping {
            return;
        }
    }
}

/// Handle on the background tasks of a running instance.
pub struct Workers {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    /// Asks every task to finish (flushing what it holds) and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

impl Services {
    /// The seq of the newest committed audit event.
    pub async fn writer_head_seq(&self) -> Result<i64> {
        self.api.writer_head_seq().await
    }

    /// Re-reads both key rings from their files and audits any key added, retired or reactivated.
    /// The files are compared with what the audit log last recorded, not with the previous read:
    /// a change whose audit write failed (here or in the keys API) is recorded at the next sync.
    pub async fn sync_keys(&self) -> Result<()> {
        // The SET keys: `tether keys rotate|retire --purpose sets` in another process.
        let sets = self.api.set_keys.clone();
        tokio::task::spawn_blocking(move || sets.reload())
            .await
            .map_err(|e| Error::internal(format!("SET key reload: {e}")))??;
        let files = self.api.set_keys.audit_view();
        let recorded = self.readers.read(|conn| store::keys::recorded_signing_keys(conn, "sets")).await?;
        let unrecorded = files
            .iter()
            .any(|(kid, status, _)| !recorded.iter().any(|(k, s)| k == kid && s == ops::keys::status_name(*status)));
        if unrecorded {
            // Read again inside the writer, as for the other rings below.
            let sets = self.api.set_keys.clone();
            self.writer.execute(move |tx| ops::streams::sync_set_keys(tx, Actor::system(), &sets.audit_view())).await?;
        }
        for (purpose, ring) in [(KeyPurpose::Agent, &self.env.agent_keys), (KeyPurpose::Api, &self.env.api_keys)] {
            // Off the runtime's workers: reading the key files waits for the key directory's file
            // lock, which `tether keys …` in another process may hold, and derives each public
            // key; every second, on one of the workers that answer authorize requests.
            let reloading = ring.clone();
            tokio::task::spawn_blocking(move || reloading.reload())
                .await
                .map_err(|e| Error::internal(format!("key reload: {e}")))??;
            let keys = ring.public_keys();
            let name = ops::keys::purpose_name(purpose);
            // A cheap look first, on a read connection: most seconds nothing changed.
            let recorded = self.readers.read(move |conn| store::keys::recorded_signing_keys(conn, name)).await?;
            // Only keys that have files count: a key file deleted by hand has nothing to audit.
            let unrecorded = keys.iter().any(|k| {
                let status = ops::keys::status_name(k.status);
                !recorded.iter().any(|(kid, recorded)| *kid == k.kid && recorded == status)
            });
            if !unrecorded {
                continue;
            }
            // The ring is read again inside the writer: a snapshot from before an admin's change
            // that committed meanwhile would undo it (a retired key recorded as reactivated).
            let ring = ring.clone();
            self.writer.execute(move |tx| ops::keys::sync(tx, Actor::system(), purpose, &ring.public_keys())).await?;
        }
        Ok(())
    }

    /// Drops what expiry made useless: feed entries and token records past their expiry, and
    /// live-view entries of expired sessions.
    pub async fn purge_expired(&self) {
        let purged = self.writer.execute(|tx| store::feed::purge_expired_tokens(tx)).await;
        if let Err(e) = purged {
            tracing::warn!(error = %e, "purging expired tokens failed");
        }
        self.views.sessions.sweep_expired(self.clock.now());
    }
}

/// Fills the live view and the credential view from the database.
fn load_views(readers: &ReadPool, views: &Views, now: domain::Timestamp) -> Result<()> {
    // On a connection of its own with a small page cache: the scan reads every unexpired
    // session's row (its status), which would otherwise stay cached in a pooled connection,
    // tens of MiB for 100k sessions, for as long as the process runs.
    readers.read_own(|conn| {
        if let Some(sqlite) = conn.sqlite() {
            sqlite.execute_batch("PRAGMA cache_size = -2048").map_err(store::db_error)?;
        }
        store::sessions::live_sessions(conn, now, |row| {
            views.sessions.set(row.id, LiveSession { revoked: row.revoked, expires_at: row.expires_at });
        })?;
        for c in store::credentials::all_credentials(conn)? {
            views
                .credentials
                .insert(c.id, CredentialState { revoked: c.revoked_at.is_some(), expires_at: c.expires_at });
        }
        Ok(())
    })
}

/// On the first start (no credential at all), mints the admin credential and writes it to
/// `DIR/admin.credential` (mode 0600).
async fn bootstrap_admin(
    data_dir: &Path,
    readers: &Arc<ReadPool>,
    writer: &Writer,
    env: &Arc<Env>,
) -> Result<Option<String>> {
    let existing = readers.read(store::credentials::credential_count).await?;
    if existing > 0 {
        return Ok(None);
    }
    let env = env.clone();
    // Counted again inside the write: nodes starting together on an empty database mint one.
    let created = writer
        .execute(move |tx| {
            if store::credentials::credential_count(tx.conn())? > 0 {
                return Ok(None);
            }
            ops::credentials::issue_credential(
                tx,
                &env,
                Actor::system(),
                Role::Admin,
                Some("bootstrap admin".into()),
                None,
            )
            .map(Some)
        })
        .await?;
    let Some(created) = created else { return Ok(None) };
    write_private_file(&data_dir.join("admin.credential"), format!("{}\n", created.secret).as_bytes())?;
    Ok(Some(created.secret))
}

/// Writes a new file readable by its owner only. Whatever was at `path` (a stale file, a
/// symlink planted there) is removed first, never followed or reused with its permissions.
fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e: std::io::Error| Error::internal(format!("write {}: {e}", path.display()));
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed(e)),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(failed)?;
    file.write_all(contents).map_err(failed)
}

/// Creates `dir` (and missing parents) readable by its owner only; an existing directory keeps
/// its permissions. The data directory holds the database (user ids, IPs, user agents), the keys
/// and the first admin credential.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Runs `start` on a thread of its own, started from the calling thread (so at its priority),
/// and waits for it without blocking the runtime.
async fn on_start_up_thread<T: Send + 'static>(start: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    if crate::priority::lowered() {
        tracing::warn!("the node starts from a request thread: its lease renewals run at the requests' priority");
    }
    let (answer, answered) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tether-start".into())
        .spawn(move || {
            let _ = answer.send(start());
        })
        .map_err(|e| Error::internal(format!("spawn start-up thread: {e}")))?;
    answered.await.map_err(|_| Error::internal("the start-up thread stopped without an answer"))?
}
