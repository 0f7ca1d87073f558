//! tether: a delegated-session governor for AI agents.
//!
//! Every agent session is bound to its delegating user, its agent, its integration and a scoped
//! biscuit token. When any link dies, every session that depended on it is revoked in one
//! transaction, visible to the next authorize call, and recorded in a hash-chained audit log.
//!
//! # Layout
//! - [`app`]: the application: opens a data directory into [`App`], serves it, runs its workers.
//! - [`domain`]: ids, scopes, objects, callers and errors; no I/O.
//! - [`audit`]: audit records and the hash chain (pure).
//! - [`store`]: SQLite: migrations, the group-commit writer, one module per thing stored, coverage.
//! - [`ops`]: the commands run inside a write transaction, cascades included.
//! - [`tokens`]: key rings, agent tokens, API credentials, the request policy.
//! - [`views`]: in-memory views the writer updates after commit (live sessions, credentials).
//! - [`authorize`]: the hot path.
//! - [`events`]: what relying services receive (CAEP bodies), webhook delivery, and the one
//!   outbound HTTP client (https with rustls, the private-address guard).
//! - [`ssf`]: the Shared Signals transmitter: SET claims and signing, its configuration, push.
//! - [`signals`]: Shared Signals in: SET verification, source keys, subjects, effects.
//! - [`api`]: the HTTP API (axum), one module per resource; SCIM 2.0 under `api::scim`, the
//!   console's pages under `api::console`.
//! - [`server`]: the HTTP/1.1 accept loop (header deadline, graceful shutdown).
//! - [`instance_lock`]: one `tether serve` per data directory.
//! - [`last_seen`], [`metrics`], [`clock`], [`logging`]: supporting pieces.

pub mod api;
pub mod app;
pub mod audit;
pub mod authorize;
pub mod clock;
pub mod cluster;
pub mod domain;
pub mod events;
pub mod instance_lock;
pub mod last_seen;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod priority;
pub mod server;
pub mod signals;
pub mod ssf;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod views;

pub use app::{create_private_dir, App, Config, Services, Workers};
pub use logging::install_log_subscriber;
